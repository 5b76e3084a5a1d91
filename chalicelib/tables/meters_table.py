"""MetersTable: its name and the key of every kind of item it holds.

| item | pk | sk | fields owned by |
|---|---|---|---|
| meter | `PROJECT#<project>` | `METER#<meter id, 10 digits>` | meters |
| site name (unique in the project) | `PROJECT#<project>` | `SITE#<site name>` | meters (meter_id) |
| display name (unique in the project) | `PROJECT#<project>` | `NAME#<display name>` | meters (meter_id) |
| meter count | `PROJECT#<project>` | `COUNT#meters` | meters (n) |
"""

from chalicelib.platform.db import Item

NAME = "MetersTable"
METER = "METER"          # the sort key's prefix of meter items (all_meters queries it)
_SITE = "SITE"


def project_pk(project_id: int) -> str:
    """The partition of a project's meters."""
    return f"PROJECT#{project_id}"


def meter_key(project_id: int, meter_id: int) -> Item:
    return {"pk": project_pk(project_id), "sk": f"{METER}#{meter_id:010d}"}


def site_name_key(project_id: int, site_name: str) -> Item:
    """The item mapping a site name (MeterId, what the edge agent calls the meter) to the meter's id."""
    return {"pk": project_pk(project_id), "sk": f"{_SITE}#{site_name}"}


def site_name_of(alias: Item) -> str:
    """The site name a site-name item maps (its sort key's tail)."""
    return alias["sk"].split("#", 1)[1]


def display_name_key(project_id: int, name: str) -> Item:
    """The item mapping a display name (what users see) to the meter's id."""
    return {"pk": project_pk(project_id), "sk": f"NAME#{name}"}


def meter_count_key(project_id: int) -> Item:
    """The item counting the project's meters (meters.MAX_METERS)."""
    return {"pk": project_pk(project_id), "sk": "COUNT#meters"}
