"""Readings storage: the day items of each meter's readings, how they are packed, and the range reads.

Layout (docs/data-model.md has the measurements behind it): one item per meter per UTC day, key
(meter "<project>#<meter id>", day "YYYY-MM-DD"), its readings packed in one binary attribute v
(seconds into the day, value) in time order, and their count n, which is also the item's version
for optimistic writes. A meter-year is 365 items instead of 105,120, and reading one costs a single
attribute value per day instead of 288. Writing readings (POST /data) is chalicelib/metering/ingest.py's;
the latest reading and interval of each meter live on the meter item (chalicelib/metering/meters.py).
"""
import calendar
import struct
from collections.abc import Collection, Iterable, Iterator, Mapping
from datetime import datetime, timezone
from decimal import Decimal
from typing import NamedTuple, cast

from chalicelib.platform import clock, db
from chalicelib.platform.db import Item
from chalicelib.tables import readings_table

MAX_PER_DAY = 2880          # one reading every 30 s at most: keeps a day item far below 400 KB
FUTURE_TOLERANCE = 600      # seconds a reading may be ahead of the cloud's clock
_ENTRY = struct.Struct("<Id")  # a packed reading: seconds into the UTC day (uint32), value (float64)


class Reading(NamedTuple):
    """One reading: its instant (epoch seconds) and the register's value (kWh).

    The streams of readings (series, around, around_many) yield plain (epoch, value) tuples, which
    unpack the same way: they run to millions of rows, and a tuple costs a tenth of a Reading to make.
    """

    epoch: int
    value: float


Point = tuple[int, float]   # a reading of a stream: (epoch, value), as a Reading unpacks


class DaySlot(NamedTuple):
    """Where a reading lives: its UTC day 'YYYY-MM-DD' (the item) and the seconds into it (its place there)."""

    day: str
    slot: int


def day_slot(epoch: float) -> DaySlot:
    """The DaySlot of an instant."""
    return DaySlot(datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d"), int(epoch) % 86400)


def _day_epoch(day: str) -> int:
    """Epoch seconds of a UTC day's midnight ('YYYY-MM-DD')."""
    return calendar.timegm((int(day[0:4]), int(day[5:7]), int(day[8:10]), 0, 0, 0))


def day_item(series: str, day: str, by_slot: Mapping[int, Decimal | float]) -> Item:
    """The stored item of one meter's UTC day, from its readings {seconds into the day: Decimal}.

    Values are stored as the float64 each reading arrived as (a JSON number, rounded to the µkWh), so
    packing them loses nothing: Decimal(repr(x)) gives back exactly the Decimal ingest compares.
    """
    packed = b"".join(_ENTRY.pack(slot, float(value)) for slot, value in sorted(by_slot.items()))
    return {**readings_table.day_key(series, day), "n": len(by_slot), "v": packed}


def day_readings(item: Item) -> Iterator[tuple[int, float]]:
    """(seconds into the day, value) of a stored day item's readings, in time order."""
    packed = item.get("v", b"")
    raw = cast(bytes, getattr(packed, "value", packed))   # boto3 wraps binary values in Binary
    return _ENTRY.iter_unpack(raw)


def stored_days(keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], dict[int, Decimal] | None]:
    """{(series, day): {seconds into the day: Decimal}, or None where there is no item} of day items by key."""
    keys = list(keys)
    found: dict[tuple[str, str], dict[int, Decimal] | None] = {key: None for key in keys}
    for item in db.batch_get(readings_table.NAME, [readings_table.day_key(s, d) for s, d in keys]):
        found[(item["meter"], item["day"])] = {slot: Decimal(repr(value)) for slot, value in day_readings(item)}
    return found


def write_day(series: str, day: str, stored: Mapping[int, Decimal] | None, entries: Mapping[int, Decimal]) -> None:
    """Add entries to a day item in one write; conditional on the item being as read (its count n, which
    only grows), so a concurrent writer of the same day makes it fail (db.ConditionFailed): the caller
    reloads and retries."""
    item = day_item(series, day, {**(stored or {}), **entries})
    if stored is None:
        db.put(readings_table.NAME, item, condition="attribute_not_exists(meter)")
    else:
        db.put(readings_table.NAME, item, condition="#n = :n", names={"#n": "n"}, expression_values={":n": len(stored)})


def series(project_id: int, meter_id: int, start: int, end: int) -> Iterator[Point]:
    """(epoch, value) of one meter's readings with start <= epoch < end, in time order, read lazily."""
    key = readings_table.series_key(project_id, meter_id)
    first, last = day_slot(start).day, day_slot(max(start, end - 1)).day
    items = db.query(readings_table.NAME, "meter = :m AND #d BETWEEN :a AND :b", {":m": key, ":a": first, ":b": last},
                     names={"#d": "day"}, page_size=32)
    for item in items:
        midnight = _day_epoch(item["day"])
        for slot, value in day_readings(item):
            epoch = midnight + slot
            if start <= epoch < end:
                yield epoch, value


def before(project_id: int, meter_id: int, epoch: int) -> Reading | None:
    """The meter's last Reading before epoch, or None: the left neighbour across any gap."""
    key = readings_table.series_key(project_id, meter_id)
    items = db.query(readings_table.NAME, "meter = :m AND #d <= :d", {":m": key, ":d": day_slot(epoch).day},
                     names={"#d": "day"}, forward=False, page_size=2)
    for item in items:   # only the first item (epoch's own day) can hold readings at or after epoch
        midnight = _day_epoch(item["day"])
        for slot, value in reversed(list(day_readings(item))):
            if midnight + slot < epoch:
                return Reading(midnight + slot, value)
    return None


def after(project_id: int, meter_id: int, epoch: int) -> Reading | None:
    """The meter's first Reading after epoch, or None: the right neighbour across any gap."""
    key = readings_table.series_key(project_id, meter_id)
    items = db.query(readings_table.NAME, "meter = :m AND #d BETWEEN :d AND :z",
                     {":m": key, ":d": day_slot(epoch).day, ":z": "9999-12-31"}, names={"#d": "day"}, page_size=2)
    for item in items:
        midnight = _day_epoch(item["day"])
        for slot, value in day_readings(item):
            if midnight + slot > epoch:
                return Reading(midnight + slot, value)
    return None


def around(project_id: int, meter_id: int, start: int, end: int) -> list[Point]:
    """(epoch, value) of the readings with start <= epoch <= end, plus the nearest one before start and
    after end when none falls exactly on them: what interpolating at start and end needs."""
    return around_many(project_id, [meter_id], start, end)[meter_id]


AROUND_BATCH_DAYS = 4   # up to this many UTC days a meter, day items are fetched by key (BatchGetItem), beyond by Query


def around_many(project_id: int, meter_ids: Collection[int], start: int, end: int,
                margin_days: int = 0) -> dict[int, list[Point]]:
    """{meter id: around(...)} for several meters: short spans by BatchGetItem of the day items by key
    (one call per 100 meter-days, whatever the table holds), long ones by one Query per meter.

    The day items read by key also give the neighbours before start and after end when they hold
    them; a Query per meter only for a meter with none there (a longer gap, history's end).
    margin_days > 0 (a caller whose span is bounded, such as the hourly charts' 7 days): always by
    key, with that many UTC days more on each side.
    """
    first, last = _day_epoch(day_slot(start).day), _day_epoch(day_slot(end).day)
    days = [day_slot(midnight).day
            for midnight in range(first - margin_days * 86400, last + margin_days * 86400 + 1, 86400)]
    left: dict[int, Point] = {}
    right: dict[int, Point] = {}
    if margin_days or len(days) <= AROUND_BATCH_DAYS:
        found = _read_days(project_id, meter_ids, start, end, days, left, right)
    else:
        found = {meter_id: list(series(project_id, meter_id, start, end + 1)) for meter_id in meter_ids}
    for meter_id, points in found.items():
        _add_neighbours(project_id, meter_id, points, start, end, left.get(meter_id), right.get(meter_id))
    return found


def _read_days(project_id: int, meter_ids: Collection[int], start: int, end: int, days: list[str],
               left: dict[int, Point], right: dict[int, Point]) -> dict[int, list[Point]]:
    """{meter id: its readings with start <= epoch <= end} from its day items of days, read by key; the
    nearest reading before start and after end that those items hold go into left and right."""
    found: dict[int, list[Point]] = {meter_id: [] for meter_id in meter_ids}
    keys = {readings_table.series_key(project_id, m): m for m in meter_ids}
    for item in db.batch_get(readings_table.NAME, [readings_table.day_key(k, d) for k in keys for d in days]):
        midnight, meter_id = _day_epoch(item["day"]), keys[item["meter"]]
        for slot, value in day_readings(item):
            epoch = midnight + slot
            if start <= epoch <= end:
                found[meter_id].append((epoch, value))
            elif epoch < start and (meter_id not in left or epoch > left[meter_id][0]):
                left[meter_id] = (epoch, value)
            elif epoch > end and (meter_id not in right or epoch < right[meter_id][0]):
                right[meter_id] = (epoch, value)
    for points in found.values():
        points.sort()
    return found


def _add_neighbours(project_id: int, meter_id: int, points: list[Point], start: int, end: int,
                    left: Point | None, right: Point | None) -> None:
    """Put the nearest reading before start (left, else by Query) first in points, unless one falls on
    start, and the nearest one after end (right, else by Query) last, unless one falls on end."""
    if not points or points[0][0] != start:
        neighbour = left or before(project_id, meter_id, start)
        if neighbour:
            points.insert(0, neighbour)
    if (not points or points[-1][0] != end) and end <= clock.now() + FUTURE_TOLERANCE:  # none can be later
        neighbour = right or after(project_id, meter_id, end)
        if neighbour:
            points.append(neighbour)


def stored_per_day(project_id: int, meter_id: int, start: int, end: int) -> Iterator[tuple[int, int]]:
    """(midnight epoch of a UTC day, readings the meter has stored that day) for each UTC day overlapping
    [start, end) that holds any, in time order, read lazily.

    Counted from the stored items' counts (a day item's n), never by reading the readings: the size of
    an export before it is written (GET /file's choice between writing it at once and a job). Whole
    UTC days are counted, so a range cut inside a day counts all of that day's readings.
    """
    key = readings_table.series_key(project_id, meter_id)
    first, last = day_slot(start).day, day_slot(max(start, end - 1)).day
    for item in db.query(readings_table.NAME, "meter = :m AND #d BETWEEN :a AND :b", {":m": key, ":a": first, ":b": last},
                         names={"#d": "day", "#n": "n"}, projection="#d, #n"):
        yield _day_epoch(item["day"]), int(item.get("n", 0))


def counts(project_id: int, meter_ids: Collection[int], start: int, end: int) -> dict[int, int]:
    """{meter id: how many readings it has with start <= epoch < end}, for many meters at once.

    Reads the meters' day items of the range by BatchGetItem (100 keys a call) instead of one Query
    per meter: meant for short ranges over many meters (GET /status's last 24 hours: two day items
    per meter, so 300 meters are 6 calls).
    """
    first = _day_epoch(day_slot(start).day)
    days = [day_slot(moment).day for moment in range(first, max(start, end - 1) + 1, 86400)]
    by_series = {readings_table.series_key(project_id, meter_id): meter_id for meter_id in meter_ids}
    found = {meter_id: 0 for meter_id in meter_ids}
    keys = [readings_table.day_key(series, day) for series in by_series for day in days]
    for item in db.batch_get(readings_table.NAME, keys, consistent=False):
        midnight = _day_epoch(item["day"])
        found[by_series[item["meter"]]] += sum(1 for slot, _v in day_readings(item) if start <= midnight + slot < end)
    return found
