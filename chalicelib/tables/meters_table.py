"""MetersTable: its name and the key of every kind of item it holds.

| item | pk | sk | fields owned by |
|---|---|---|---|
| meter | `PROJECT#<project>` | `METER#<meter id, 10 digits>` | meters |
| site name (unique in the project) | `PROJECT#<project>` | `SITE#<site name>` | meters (meter_id) |
| display name (unique in the project) | `PROJECT#<project>` | `NAME#<display name>` | meters (meter_id) |
| meter count | `PROJECT#<project>` | `COUNT#meters` | meters (n) |
| meters naming a tariff | `PROJECT#<project>` | `TARIFFUSES#<tariff id, 10 digits>` | meters (n) |
| tariff | `PROJECT#<project>` | `TARIFF#<tariff id, 10 digits>` | tariffs |
| tariff label (unique in the project) | `PROJECT#<project>` | `TARIFFLABEL#<label>` | tariffs (tariff_id) |
| the project's default tariff | `PROJECT#<project>` | `TARIFFDEFAULT` | tariffs (tariff_id) |
| tariff count | `PROJECT#<project>` | `COUNT#tariffs` | tariffs (n) |

A meter's tariff is its `tariff_id` (meters, POST /point); `TARIFFUSES#` counts the meters naming each
tariff, changed in the same transaction, so a tariff a meter names cannot be deleted (tariffs).
"""

from chalicelib.platform.db import Item

NAME = "MetersTable"
METER = "METER"          # the sort key's prefix of meter items (all_meters queries it)
TARIFF = "TARIFF"        # the sort key's prefix of every tariff item (tariffs.listing queries it)
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


def tariff_key(project_id: int, tariff_id: int) -> dict[str, str]:
    """The item of one tariff (chalicelib/billing/tariffs.py)."""
    return {"pk": project_pk(project_id), "sk": f"{TARIFF}#{tariff_id:010d}"}


def tariff_label_key(project_id: int, label: str) -> dict[str, str]:
    """The item keeping a tariff's label unique in the project (maps it to the tariff's id)."""
    return {"pk": project_pk(project_id), "sk": f"{TARIFF}LABEL#{label}"}


def default_tariff_key(project_id: int) -> dict[str, str]:
    """The item naming the project's default tariff (the tariff of every meter that names none)."""
    return {"pk": project_pk(project_id), "sk": f"{TARIFF}DEFAULT"}


def tariff_count_key(project_id: int) -> dict[str, str]:
    """The item counting the project's tariffs (tariffs.MAX_TARIFFS)."""
    return {"pk": project_pk(project_id), "sk": "COUNT#tariffs"}


def tariff_uses_key(project_id: int, tariff_id: int) -> dict[str, str]:
    """The item counting the meters that name a tariff (meters.py keeps it; a tariff in use can't be deleted)."""
    return {"pk": project_pk(project_id), "sk": f"{TARIFF}USES#{tariff_id:010d}"}
