"""ReadingsTable: its name and the key of every kind of item it holds (key: meter, day).

| item | meter | day | fields owned by |
|---|---|---|---|
| a meter's readings of one UTC day | `<project>#<meter id>` | `YYYY-MM-DD` | readings (n, v) |
| a meter's live readings of one UTC hour (hot item) | `<project>#<meter id>` | `YYYY-MM-DDTHH` | readings (n, v) |
| a meter's consumption rollup of one local month | `ROLLUP#<project>#<meter id>` | `YYYY-MM` | rollups (r, v, h, o) |

A UTC day's hot items sort right after its day item (`2026-03-02` < `2026-03-02T00` < … < `2026-03-02T23`
< `2026-03-03`), so one Query of a day range (`day BETWEEN first AND last~`) returns both kinds, a day's
items together. Rollups have partitions of their own, so the readings' queries never see them.
"""

from chalicelib.platform.db import Item

NAME = "ReadingsTable"
DAY_END = "~"     # sorts after every hour of a day: a Query's upper bound `<last day>~` includes its hot items


def series_key(project_id: int, meter_id: int) -> str:
    """The partition of a meter's readings."""
    return f"{project_id}#{meter_id}"


def day_key(series: str, day: str) -> Item:
    """The item of a meter's readings (series: series_key) on a UTC day 'YYYY-MM-DD'."""
    return {"meter": series, "day": day}


def hot_key(series: str, hour: str) -> Item:
    """The hot item of a meter's readings (series: series_key) in a UTC hour 'YYYY-MM-DDTHH'."""
    return {"meter": series, "day": hour}


def is_hour(sort_key: str) -> bool:
    """True for a hot item's sort key ('YYYY-MM-DDTHH'), False for a day item's ('YYYY-MM-DD')."""
    return len(sort_key) == 13


def rollup_key(project_id: int, meter_id: int, month: str) -> Item:
    """The item of a meter's consumption rollups of a local month 'YYYY-MM'."""
    return {"meter": f"ROLLUP#{project_id}#{meter_id}", "day": month}


def rollup_project(item: Item) -> int:
    """The project of a rollup item (read with its key attribute `meter`)."""
    return int(item["meter"].split("#")[1])
