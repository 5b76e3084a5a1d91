"""ReadingsTable: its name and the key of every kind of item it holds (key: meter, day).

| item | meter | day | fields owned by |
|---|---|---|---|
| a meter's readings of one UTC day | `<project>#<meter id>` | `YYYY-MM-DD` | readings (n, v) |
| a meter's consumption rollup of one local month | `ROLLUP#<project>#<meter id>` | `YYYY-MM` | rollups (r, v) |

Rollups have partitions of their own, so the readings' queries never see them.
"""

from chalicelib.platform.db import Item

NAME = "ReadingsTable"


def series_key(project_id: int, meter_id: int) -> str:
    """The partition of a meter's readings."""
    return f"{project_id}#{meter_id}"


def day_key(series: str, day: str) -> Item:
    """The item of a meter's readings (series: series_key) on a UTC day 'YYYY-MM-DD'."""
    return {"meter": series, "day": day}


def rollup_key(project_id: int, meter_id: int, month: str) -> Item:
    """The item of a meter's consumption rollups of a local month 'YYYY-MM'."""
    return {"meter": f"ROLLUP#{project_id}#{meter_id}", "day": month}
