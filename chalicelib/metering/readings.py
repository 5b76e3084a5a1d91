"""Readings storage: each meter's readings in day items and hot hour items, how they are packed, and the reads.

Layout (docs/data-model.md has the measurements behind it):
  - a **day item** per meter and UTC day, key (meter "<project>#<meter id>", day "YYYY-MM-DD"): the day's
    readings packed in one binary attribute v (seconds into the day as uint32, value as float64), their
    count n (also the item's version for optimistic writes), and x, the seconds of the readings marked as
    the start of a new register series (`"reset": true`), only when there are some;
  - a **hot item** per meter and UTC hour, key (meter, "YYYY-MM-DDTHH"), the same attributes: where a
    reading goes while its hour is live (until HOT_GRACE after the hour's end). A minute's reading then
    rewrites an item of at most 60 readings (≤ 1 KB: 1 write unit) instead of its whole day;
  - once an hour is over by FOLD_DELAY, its hot item is **folded** into the day item (POST /data does it
    for the meters it touches: chalicelib/metering/ingest.py) and deleted. Readings of an hour that is no
    longer live go to the day item directly.
A day's readings are the union of its day item and its hot items (the same reading is in both for the
moment between a fold's write and its delete). Which hours may still have a hot item is kept on the meter
item (attributes "hot:<hour>", added before the hot item is first written, removed after its fold), so
reads by key know which hot items to ask for; a Query of a day range gets both kinds in one go.

A meter-year is 365 day items (plus the hot items of the last hour or two), and reading one costs a
single attribute value per day. Writing readings (POST /data) is chalicelib/metering/ingest.py's; the
latest reading and interval of each meter live on the meter item (chalicelib/metering/meters.py).
"""
import calendar
import functools
import struct
from collections.abc import Collection, Iterable, Iterator, Mapping
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, NamedTuple, cast

from chalicelib.platform import clock, db
from chalicelib.platform.db import Item
from chalicelib.tables import meters_table, readings_table

MAX_PER_DAY = 2880          # one reading every 30 s at most: keeps a day item far below 400 KB
MAX_PER_HOUR = 120          # in a hot item (the same rate): ≤ 1.5 KB, and 24 of them fold into ≤ MAX_PER_DAY
FUTURE_TOLERANCE = 600      # seconds a reading may be ahead of the cloud's clock
HOT_GRACE = 50 * 60         # a reading goes to its hour's hot item until this long after the hour's end
# A hot item is folded from this long after its hour's end: later than any write begun within HOT_GRACE
# can land (a request lasts at most 28 s), so no reading is ever written to a hot item after its fold.
FOLD_DELAY = 55 * 60
HOT_PREFIX = "hot:"         # the meter item's attributes "hot:<UTC hour>": hours that may have a hot item
_ENTRY = struct.Struct("<Id")  # a packed reading: seconds into the UTC day (uint32), value (float64)
_SLOTS = struct.Struct("<I")   # a reset mark: seconds into the UTC day

Key = tuple[str, str]                    # (series, sort key): a day item's or a hot item's
Stored = dict[int, tuple[Decimal, bool]]  # an item's readings: {seconds into the UTC day: (value, reset)}


class Reading(NamedTuple):
    """One reading: its instant (epoch seconds) and the register's value (kWh).

    The streams of readings (series, around, around_many) yield plain tuples, which unpack the same way:
    they run to millions of rows, and a tuple costs a tenth of a Reading to make.
    """

    epoch: int
    value: float


Point = tuple[int, float]        # a reading of a stream: (epoch, value), as a Reading unpacks
Entry = tuple[int, float, bool]  # a reading with its mark: (epoch, value, reset); what consumption counts from


class DaySlot(NamedTuple):
    """Where a reading lives: its UTC day 'YYYY-MM-DD' (the item) and the seconds into it (its place there)."""

    day: str
    slot: int


def day_slot(epoch: float) -> DaySlot:
    """The DaySlot of an instant."""
    return DaySlot(datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d"), int(epoch) % 86400)


def hour_of(epoch: float) -> str:
    """The UTC hour 'YYYY-MM-DDTHH' of an instant (a hot item's sort key)."""
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H")


def hour_start(hour: str) -> int:
    """Epoch seconds at which a UTC hour 'YYYY-MM-DDTHH' starts."""
    return _day_epoch(hour) + 3600 * int(hour[11:13])


def _day_epoch(day: str) -> int:
    """Epoch seconds of a UTC day's midnight ('YYYY-MM-DD', or an hour's sort key)."""
    return calendar.timegm((int(day[0:4]), int(day[5:7]), int(day[8:10]), 0, 0, 0))


def live(hour: str, now: float) -> bool:
    """True while a reading of this UTC hour goes to its hot item (until HOT_GRACE after the hour's end)."""
    return now < hour_start(hour) + 3600 + HOT_GRACE


def foldable(hour: str, now: float) -> bool:
    """True once an hour's hot item may be folded into its day item (no write can reach it any more)."""
    return now >= hour_start(hour) + 3600 + FOLD_DELAY


def home(epoch: int, now: float) -> str:
    """The sort key of the item a new reading at epoch is written to: its UTC hour while live, else its day."""
    hour = hour_of(epoch)
    return hour if live(hour, now) else hour[:10]


def hot_hours(meter: Item) -> frozenset[str]:
    """The UTC hours the meter item says may have a hot item."""
    return frozenset(name[len(HOT_PREFIX):] for name in meter if name.startswith(HOT_PREFIX))


def clean_hours(meter: Item, now: float) -> frozenset[str]:
    """The UTC hours whose readings are all in their hot items (no day item holds one): marked on the meter
    item before they started (so none was written before the mark: not by this code, which marks an hour
    before its first hot write, nor by the layout before it) and still live (so none was written late into
    the day item, and none folded)."""
    return frozenset(hour for name, marked in meter.items() if name.startswith(HOT_PREFIX)
                     for hour in [name[len(HOT_PREFIX):]] if marked <= hour_start(hour) and live(hour, now))


def hot_attribute(hour: str) -> str:
    """The meter item's attribute marking that an hour may have a hot item."""
    return HOT_PREFIX + hour


# ---- packing ------------------------------------------------------------------------------------------

def pack(series: str, sort_key: str, entries: Mapping[int, tuple[Decimal | float, bool]]) -> Item:
    """The stored item (day or hot, by its sort key) of readings {seconds into the UTC day: (value, reset)}.

    Values are stored as the float64 each reading arrived as (a JSON number, rounded to the µkWh), so
    packing them loses nothing: Decimal(repr(x)) gives back exactly the Decimal ingest compares.
    """
    ordered = sorted(entries.items())
    item: Item = {"meter": series, "day": sort_key, "n": len(ordered),
                  "v": b"".join(_ENTRY.pack(slot, float(value)) for slot, (value, _r) in ordered)}
    resets = [slot for slot, (_v, reset) in ordered if reset]
    if resets:
        item["x"] = b"".join(_SLOTS.pack(slot) for slot in resets)
    return item


def day_item(series: str, day: str, by_slot: Mapping[int, Decimal | float], resets: Collection[int] = ()) -> Item:
    """The stored item of one meter's UTC day, from its readings {seconds into the day: value}; resets: the
    seconds of the readings that start a new register series."""
    return pack(series, day, {slot: (value, slot in resets) for slot, value in by_slot.items()})


def _raw(item: Item, name: str) -> bytes:
    packed = item.get(name, b"")
    return cast(bytes, getattr(packed, "value", packed))   # boto3 wraps binary values in Binary


def day_readings(item: Item) -> Iterator[tuple[int, float]]:
    """(seconds into the UTC day, value) of a stored item's readings (day or hot), in time order."""
    return _ENTRY.iter_unpack(_raw(item, "v"))


def resets_of(item: Item) -> frozenset[int]:
    """The seconds into the UTC day of a stored item's readings that start a new register series."""
    return frozenset(slot for (slot,) in _SLOTS.iter_unpack(_raw(item, "x")))


def item_entries(item: Item) -> list[tuple[int, float, bool]]:
    """(seconds into the UTC day, value, reset) of a stored item's readings, in time order."""
    resets = resets_of(item)
    return [(slot, value, slot in resets) for slot, value in day_readings(item)]


def stored_of(item: Item) -> Stored:
    """A stored item's readings as ingest compares them: {seconds into the day: (Decimal, reset)}."""
    resets = resets_of(item)
    return {slot: (Decimal(repr(value)), slot in resets) for slot, value in day_readings(item)}


# ---- what POST /data reads and writes ----------------------------------------------------------------

def load(keys: Iterable[Key]) -> dict[Key, Stored | None]:
    """{(series, sort key): Stored, or None where there is no item} of day and hot items by key (strongly
    consistent: the versions of the optimistic writes)."""
    keys = list(dict.fromkeys(keys))
    found: dict[Key, Stored | None] = {key: None for key in keys}
    for item in db.batch_get(readings_table.NAME, [{"meter": s, "day": k} for s, k in keys]):
        found[(item["meter"], item["day"])] = stored_of(item)
    return found


def write(series: str, sort_key: str, stored: Stored | None, entries: Mapping[int, tuple[Decimal, bool]]) -> Stored:
    """Add entries to an item (day or hot) in one write, conditional on the item being as read (its count n,
    which only grows), so a concurrent writer makes it fail (db.ConditionFailed): the caller reloads and
    retries. Returns the item's readings as written."""
    merged: Stored = {**(stored or {}), **entries}
    item = pack(series, sort_key, merged)
    if stored is None:
        db.put(readings_table.NAME, item, condition="attribute_not_exists(meter)")
    else:
        db.put(readings_table.NAME, item, condition="#n = :n", names={"#n": "n"}, expression_values={":n": len(stored)})
    return merged


def drop_hot(keys: Iterable[Key]) -> None:
    """Delete folded hot items (their readings are in their day items). Unconditional: nothing writes an
    hour's hot item once it is foldable."""
    db.batch_write(readings_table.NAME, deletes=[readings_table.hot_key(s, h) for s, h in keys])


# ---- reading ----------------------------------------------------------------------------------------

def hot_sets(project_id: int, meter_ids: Collection[int]) -> dict[int, frozenset[str]]:
    """{meter id: the hours that may have a hot item} from the meter items (one BatchGetItem per 100)."""
    keys = [meters_table.meter_key(project_id, meter_id) for meter_id in meter_ids]
    found = {meter_id: frozenset[str]() for meter_id in meter_ids}
    for meter in db.batch_get(meters_table.NAME, keys, consistent=False):
        found[meter["meter_id"]] = hot_hours(meter)
    return found


def _groups(items: Iterable[Item]) -> Iterator[tuple[str, list[Item]]]:
    """(UTC day, its items) of a stream of items in key order (either way): a day's items come together."""
    day, group = "", list[Item]()
    for item in items:
        if item["day"][:10] != day:
            if group:
                yield day, group
            day, group = item["day"][:10], []
        group.append(item)
    if group:
        yield day, group


def _day_groups(items: Iterable[Item]) -> Iterator[tuple[int, list[tuple[int, float, bool]]]]:
    """(UTC midnight, [(seconds into the day, value, reset)] in time order) of each day of a stream of items
    in key order: a day's day item and hot items merged."""
    for day, group in _groups(items):
        yield _day_epoch(day), _merged(group)


def _merged(items: list[Item]) -> list[tuple[int, float, bool]]:
    """The readings of one day's items (its day item, hot items), each once, in time order."""
    if len(items) == 1:
        return item_entries(items[0])
    merged: dict[int, tuple[float, bool]] = {}
    for item in items:
        for slot, value, reset in item_entries(item):
            merged.setdefault(slot, (value, reset))
    return [(slot, value, reset) for slot, (value, reset) in sorted(merged.items())]


def _query(series: str, first_day: str, last_day: str, page_size: int = 32, forward: bool = True) -> Iterator[Item]:
    """The day and hot items of a meter's UTC days first_day..last_day, in key order."""
    return db.query(readings_table.NAME, "meter = :m AND #d BETWEEN :a AND :b",
                    {":m": series, ":a": first_day, ":b": last_day + readings_table.DAY_END},
                    names={"#d": "day"}, page_size=page_size, forward=forward)


def entries(project_id: int, meter_id: int, start: int, end: int) -> Iterator[Entry]:
    """(epoch, value, reset) of one meter's readings with start <= epoch < end, in time order, read lazily."""
    key = readings_table.series_key(project_id, meter_id)
    first, last = day_slot(start).day, day_slot(max(start, end - 1)).day
    for midnight, day in _day_groups(_query(key, first, last)):
        for slot, value, reset in day:
            epoch = midnight + slot
            if start <= epoch < end:
                yield epoch, value, reset


def series(project_id: int, meter_id: int, start: int, end: int) -> Iterator[Point]:
    """(epoch, value) of one meter's readings with start <= epoch < end, in time order, read lazily."""
    key = readings_table.series_key(project_id, meter_id)
    first, last = day_slot(start).day, day_slot(max(start, end - 1)).day
    for day, group in _groups(_query(key, first, last)):
        midnight = _day_epoch(day)
        if len(group) == 1:   # most days: one item, unpacked as stored
            for slot, value in day_readings(group[0]):
                epoch = midnight + slot
                if start <= epoch < end:
                    yield epoch, value
        else:
            for slot, value, _reset in _merged(group):
                epoch = midnight + slot
                if start <= epoch < end:
                    yield epoch, value


def _before(series_key: str, epoch: int) -> Entry | None:
    """The meter's last reading before epoch, or None: the left neighbour across any gap."""
    items = db.query(readings_table.NAME, "meter = :m AND #d <= :d",
                     {":m": series_key, ":d": hour_of(epoch)}, names={"#d": "day"}, forward=False, page_size=4)
    for midnight, day in _day_groups(items):
        earlier = [(midnight + s, v, r) for s, v, r in day if midnight + s < epoch]
        if earlier:
            return earlier[-1]
    return None


def _after(series_key: str, epoch: int) -> Entry | None:
    """The meter's first reading after epoch, or None: the right neighbour across any gap."""
    items = db.query(readings_table.NAME, "meter = :m AND #d BETWEEN :d AND :z",
                     {":m": series_key, ":d": day_slot(epoch).day, ":z": "9999-12-31" + readings_table.DAY_END},
                     names={"#d": "day"}, page_size=4)
    for midnight, day in _day_groups(items):
        for slot, value, reset in day:
            if midnight + slot > epoch:
                return midnight + slot, value, reset
    return None


def before(project_id: int, meter_id: int, epoch: int) -> Reading | None:
    """The meter's last Reading before epoch, or None."""
    found = _before(readings_table.series_key(project_id, meter_id), epoch)
    return None if found is None else Reading(found[0], found[1])


def after(project_id: int, meter_id: int, epoch: int) -> Reading | None:
    """The meter's first Reading after epoch, or None."""
    found = _after(readings_table.series_key(project_id, meter_id), epoch)
    return None if found is None else Reading(found[0], found[1])


def around(project_id: int, meter_id: int, start: int, end: int) -> list[Entry]:
    """(epoch, value, reset) of the readings with start <= epoch <= end, plus the nearest one before start
    and after end when none falls exactly on them: what interpolating at start and end needs."""
    return around_many(project_id, [meter_id], start, end)[meter_id]


AROUND_BATCH_DAYS = 4   # up to this many UTC days a meter, items are fetched by key (BatchGetItem), beyond by Query


def around_many(project_id: int, meter_ids: Collection[int], start: int, end: int, margin_days: int = 0,
                hot: Mapping[int, Collection[str]] | None = None,
                in_days: dict[int, set[int]] | None = None) -> dict[int, list[Entry]]:
    """{meter id: around(...)} for several meters: short spans by BatchGetItem of the day items and hot items
    by key (one call per 100 items, whatever the table holds), long ones by one Query per meter.

    The items read by key also give the neighbours before start and after end when they hold them; a Query
    per meter only for a meter with none there (a longer gap, history's end). margin_days > 0 (a caller whose
    span is bounded, such as the hourly charts' 7 days): always by key, with that many UTC days more on each
    side. hot: {meter id: hours that may have a hot item} when the caller has the meter items (else read).
    in_days, when given, gets {meter id: instants of the readings found in day items} (by Query: all of them).
    """
    first, last = _day_epoch(day_slot(start).day), _day_epoch(day_slot(end).day)
    days = [day_slot(midnight).day
            for midnight in range(first - margin_days * 86400, last + margin_days * 86400 + 1, 86400)]
    left: dict[int, Entry] = {}
    right: dict[int, Entry] = {}
    if margin_days or len(days) <= AROUND_BATCH_DAYS:
        hours = hot if hot is not None else hot_sets(project_id, meter_ids)
        found = _read_by_key(project_id, meter_ids, start, end, days, hours, (left, right), in_days)
    else:
        found = {meter_id: list(entries(project_id, meter_id, start, end + 1)) for meter_id in meter_ids}
        if in_days is not None:
            in_days.update({meter_id: {t for t, _v, _r in points} for meter_id, points in found.items()})
    queried = []
    for meter_id, points in found.items():
        call = functools.partial(_add_neighbours, project_id, meter_id, points, start, end,
                                 left.get(meter_id), right.get(meter_id))
        if _needs_query(points, start, end, left.get(meter_id), right.get(meter_id)):
            queried.append(call)   # a neighbour to look for by Query: those Queries made at once
        else:
            call()
    db.raise_first(db.in_parallel(queried))
    return found


def _needs_query(points: list[Entry], start: int, end: int, left: Entry | None, right: Entry | None) -> bool:
    """True when _add_neighbours will look for a neighbour by Query."""
    return (left is None and (not points or points[0][0] != start)) or \
        (right is None and (not points or points[-1][0] != end) and end <= clock.now() + FUTURE_TOLERANCE)


def _read_by_key(project_id: int, meter_ids: Collection[int], start: int, end: int, days: list[str],
                 hot: Mapping[int, Collection[str]], sides: tuple[dict[int, Entry], dict[int, Entry]],
                 in_days: dict[int, set[int]] | None) -> dict[int, list[Entry]]:
    """{meter id: its readings with start <= epoch <= end} from its day items of days and its hot items of
    those days, read by key; the nearest reading before start and after end that those items hold go into
    sides (left, right); in_days (when given) gets the instants of those found in day items."""
    by_series = {readings_table.series_key(project_id, m): m for m in meter_ids}
    wanted = set(days)
    keys = [(s, d) for s in by_series for d in days] + \
           [(s, h) for s, m in by_series.items() for h in hot.get(m, ()) if h[:10] in wanted]
    merged: dict[int, dict[int, tuple[float, bool]]] = {m: {} for m in meter_ids}
    for (s, sort_key), readings in load(keys).items():
        if readings:
            midnight, target = _day_epoch(sort_key), merged[by_series[s]]
            for slot, (value, reset) in readings.items():
                target.setdefault(midnight + slot, (float(value), reset))
            if in_days is not None and not readings_table.is_hour(sort_key):
                in_days.setdefault(by_series[s], set()).update(midnight + slot for slot in readings)
    left, right = sides
    found: dict[int, list[Entry]] = {}
    for meter_id, by_epoch in merged.items():
        found[meter_id] = [(t, v, r) for t, (v, r) in sorted(by_epoch.items()) if start <= t <= end]
        earlier = [t for t in by_epoch if t < start]
        later = [t for t in by_epoch if t > end]
        if earlier:
            t = max(earlier)
            left[meter_id] = (t, *by_epoch[t])
        if later:
            t = min(later)
            right[meter_id] = (t, *by_epoch[t])
    return found


def _add_neighbours(project_id: int, meter_id: int, points: list[Entry], start: int, end: int,
                    left: Entry | None, right: Entry | None) -> None:
    """Put the nearest reading before start (left, else by Query) first in points, unless one falls on
    start, and the nearest one after end (right, else by Query) last, unless one falls on end."""
    key = readings_table.series_key(project_id, meter_id)
    if not points or points[0][0] != start:
        neighbour = left or _before(key, start)
        if neighbour:
            points.insert(0, neighbour)
    if (not points or points[-1][0] != end) and end <= clock.now() + FUTURE_TOLERANCE:  # none can be later
        neighbour = right or _after(key, end)
        if neighbour:
            points.append(neighbour)


def hot_entries(project_id: int, wanted: Mapping[int, Collection[str]], consistent: bool = False) -> dict[int, list[Entry]]:
    """{meter id: (epoch, value, reset) of its hot items of some hours, in time order} for {meter id: hours},
    by key (hot items that do not exist add nothing)."""
    by_series = {readings_table.series_key(project_id, m): m for m in wanted}
    found: dict[int, list[Entry]] = {m: [] for m in wanted}
    keys = [readings_table.hot_key(s, hour) for s, m in by_series.items() for hour in wanted[m]]
    for item in db.batch_get(readings_table.NAME, keys, consistent=consistent):
        midnight = _day_epoch(item["day"])
        found[by_series[item["meter"]]].extend((midnight + s, v, r) for s, v, r in item_entries(item))
    for points in found.values():
        points.sort()
    return found


def stored_per_day(project_id: int, meter_id: int, start: int, end: int) -> Iterator[tuple[int, int]]:
    """(midnight epoch of a UTC day, readings the meter has stored that day) for each UTC day overlapping
    [start, end) that holds any, in time order, read lazily.

    Counted from the stored items' counts (n: the day item's and its hot items', which sort after it and
    before the next day), never by reading the readings: the size of an export before it is written
    (GET /file's choice between writing it at once and a job). Whole UTC days are counted, so a range cut
    inside a day counts all of that day's readings; while a hot item is being folded its readings are in
    both items for a moment, and are counted twice (at most an hour's readings: an estimate, not a count).
    """
    key = readings_table.series_key(project_id, meter_id)
    first, last = day_slot(start).day, day_slot(max(start, end - 1)).day
    day, count = None, 0
    for item in db.query(readings_table.NAME, "meter = :m AND #d BETWEEN :a AND :b",
                         {":m": key, ":a": first, ":b": last + "~"},   # "~" sorts after a day's hours ("T")
                         names={"#d": "day", "#n": "n"}, projection="#d, #n"):
        if item["day"][:10] != day:
            if day is not None:
                yield _day_epoch(day), count
            day, count = item["day"][:10], 0
        count += int(item.get("n", 0))
    if day is not None:
        yield _day_epoch(day), count


def counts(project_id: int, meter_ids: Collection[int], start: int, end: int) -> dict[int, int]:
    """{meter id: how many readings it has with start <= epoch < end}, for many meters at once.

    Reads the meters' day items of the range and their hot items there by key (BatchGetItem, 100 keys a
    call) instead of one Query per meter. A day item wholly inside the range is counted by its n (read
    alone, without its readings); a day cut by the range, or with hot items too (whose readings may be in
    both for a moment), by its readings.
    """
    first = _day_epoch(day_slot(start).day)
    days = [day_slot(moment).day for moment in range(first, max(start, end - 1) + 1, 86400)]
    hot = hot_sets(project_id, meter_ids)
    by_series = {readings_table.series_key(project_id, m): m for m in meter_ids}
    with_hot = {(s, h[:10]) for s, m in by_series.items() for h in hot[m] if start < hour_start(h) + 3600
                and hour_start(h) < end}
    whole = [(s, d) for s in by_series for d in days
             if (s, d) not in with_hot and start <= _day_epoch(d) and _day_epoch(d) + 86400 <= end]
    found = {meter_id: 0 for meter_id in meter_ids}
    for item in db.batch_get(readings_table.NAME, [readings_table.day_key(s, d) for s, d in whole],
                             consistent=False, projection="meter, n"):
        found[by_series[item["meter"]]] += item["n"]
    counted = set(whole)
    cut = [readings_table.day_key(s, d) for s in by_series for d in days if (s, d) not in counted]
    cut += [readings_table.hot_key(s, h) for s, m in by_series.items() for h in hot[m] if (s, h[:10]) in with_hot]
    present: dict[str, set[int]] = {s: set() for s in by_series}
    for item in db.batch_get(readings_table.NAME, cut, consistent=False):
        midnight = _day_epoch(item["day"])
        present[item["meter"]].update(midnight + slot for slot, _v in day_readings(item))
    for s, epochs in present.items():
        found[by_series[s]] += sum(1 for epoch in epochs if start <= epoch < end)
    return found


def any_item(item: Item) -> dict[str, Any]:
    """What a stored ReadingsTable item of readings is, for checks over the whole table: its series, its
    UTC midnight, whether it is a hot item, and its readings [(epoch, value, reset)]."""
    midnight = _day_epoch(item["day"])
    return {"series": item["meter"], "hot": readings_table.is_hour(item["day"]), "n": item["n"],
            "entries": [(midnight + s, v, r) for s, v, r in item_entries(item)]}
