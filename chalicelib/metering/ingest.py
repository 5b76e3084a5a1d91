"""POST /data: a batch of readings parsed, checked, stored idempotently per meter and time, with a receipt.

Step by step (docs/data-model.md): each reading is parsed and checked alone; site names are resolved to
meters in one batched read; the items holding the readings and their neighbours (day items, and the hot
items of live hours: chalicelib/metering/readings.py) are read in one batched read; the meters' hot items
that are due are folded into their day items; each reading is classified against what is stored (new,
duplicate, conflict), and the new ones are written an item at a time, the items at once (conditional on
the item's count, retried when another request wrote it meanwhile); then the meters' consumption rollups
(chalicelib/metering/rollups.py) are refreshed where a reading closes or changes a closed hour, and the
meter items record their latest reading and interval when a reading starts a new hour (meters.record).
Every step's DynamoDB calls are batched or made at once (db.in_parallel), so a push of 300 meters costs a
dozen round trips, not 1,500. Storage itself is chalicelib/metering/readings.py's.
"""
import functools
import math
import re
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone, tzinfo
from decimal import Decimal
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from chalicelib.identity import accounts
from chalicelib.metering import meters, readings, rollups
from chalicelib.metering.readings import Entry, Key, Reading, Stored
from chalicelib.platform import clock, db, validation
from chalicelib.platform.db import Item
from chalicelib.platform.errors import BadRequest, PayloadTooLarge
from chalicelib.tables import readings_table

MAX_BATCH = 1000
FOLDS_PER_REQUEST = 100     # hot items a request folds at most (a 300-meter push at the hour: over 3 pushes)
MAX_ABS_VALUE = 1e15        # kWh: beyond any register; keeps numbers inside DynamoDB's range
DECIMALS = 6                # values are stored to the µkWh

# ASCII digits only (\d would take ２０２６ or Arabic-Indic digits); an offset's minutes are 00-59.
_ISO = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})[T ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(\.[0-9]+)?)?"
                  r"(Z|[+-][0-9]{2}:?[0-5][0-9])?", re.ASCII)
# A number as text: decimal ASCII digits, optional fraction and exponent; no "1_000", no ０x, no hex. The
# words nan and inf(inity) are read too, to be refused as not finite rather than as malformed.
_NUMBER = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|[-+]?(?:nan|inf|infinity)",
                     re.ASCII | re.IGNORECASE)


class Invalid(ValueError):
    """A reading that can't be stored, with its receipt code (docs/API.md, POST /data); a plain ValueError
    is `malformed`."""

    def __init__(self, message: str, code: str = "malformed") -> None:
        super().__init__(message)
        self.code = code


def parse_time(text: object, zone: tzinfo) -> int:
    """Epoch seconds of an ISO 8601 time; without an offset it is local time in the project's zone."""
    if not isinstance(text, str):
        raise ValueError("TimeStamping must be an ISO 8601 text such as 2019-10-30T13:15:00Z")
    match = _ISO.fullmatch(text.strip())
    if not match:
        raise ValueError(f"malformed TimeStamping {text[:40]!r}: use ISO 8601 such as 2019-10-30T13:15:00Z")
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    if fraction and int(fraction[1:]) != 0:
        raise ValueError("TimeStamping must be whole seconds")
    try:
        naive = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second or 0))
    except ValueError:
        raise ValueError(f"TimeStamping {text[:40]!r} is not a real date and time") from None
    try:  # years 1 and 9999 overflow when moved to UTC: out of range, not a crash
        epoch = _aware(naive, offset, zone, text).timestamp()
    except OverflowError:
        raise Invalid(f"TimeStamping {text[:40]!r} is out of range", "out_of_range") from None
    if epoch < 0:
        raise ValueError("TimeStamping is before 1970")
    return int(epoch)


def _aware(naive: datetime, offset: str | None, zone: tzinfo, text: str) -> datetime:
    """The time sent (naive, and its offset: 'Z', '+hh:mm', or None for the project's local time) as an
    aware datetime; a local time in a daylight-saving gap, or an offset beyond 14 hours, is refused."""
    if offset is None:
        aware = naive.replace(tzinfo=zone)
        if aware.astimezone(timezone.utc).astimezone(zone).replace(tzinfo=None) != naive:
            raise ValueError(f"TimeStamping {text[:40]!r} does not exist in the project's time zone "
                             f"(daylight-saving gap): send it with an offset")
        return aware
    if offset == "Z":
        return naive.replace(tzinfo=timezone.utc)
    sign = 1 if offset[0] == "+" else -1
    digits = offset[1:].replace(":", "")
    delta = timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    if delta > timedelta(hours=14):
        raise ValueError(f"TimeStamping offset {offset} is out of range")
    return naive.replace(tzinfo=timezone(sign * delta))


def _value(raw: object) -> Decimal:
    """A reading's value as stored (Decimal, 6 decimals), or ValueError saying what is wrong."""
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        raise ValueError("value must be a number")
    if isinstance(raw, str):
        if len(raw) >= 40 or not _NUMBER.fullmatch(raw.strip()):
            raise ValueError(f"value {raw[:40]!r} is not a number: use decimal digits such as 28540.24")
        raw = float(raw)
    try:
        number = float(raw)
    except OverflowError:  # an integer beyond any float
        raise Invalid("value is out of range for an energy register", "out_of_range") from None
    if not math.isfinite(number):
        raise Invalid("value must be a finite number (not NaN or infinity)", "not_finite")
    if abs(number) >= MAX_ABS_VALUE:
        raise Invalid(f"value {number!r} is out of range for an energy register", "out_of_range")
    return Decimal(repr(round(number, DECIMALS)))


class Parsed(NamedTuple):
    """A reading that passed its checks: its meter (the item), instant (epoch seconds), value as stored, and
    whether it starts a new register series ("reset": true)."""

    meter: Item
    epoch: int
    value: Decimal
    reset: bool


_New = dict[Key, dict[int, tuple[tuple[Decimal, bool], list[int]]]]   # item → {slot: ((value, reset), [indexes])}


class _Batch:
    """The state of one POST /data batch: parsed readings, their meters and the items they touch."""

    def __init__(self, project_id: int, zone: ZoneInfo, now: float) -> None:
        self.project_id = project_id
        self.zone = zone
        self.now = now
        self.rejected: dict[int, tuple[str, str]] = {}       # index → (receipt code, message)
        self.duplicates: set[int] = set()
        self.accepted: set[int] = set()
        self.parsed: dict[int, Parsed] = {}
        self.items: dict[Key, Stored | None] = {}            # day and hot items read (and as written); None: none
        self.sort_keys: dict[str, set[str]] = defaultdict(set)   # series → sort keys of its items in items
        self.last_known: dict[int, Reading | None] = {}      # meter id → its latest reading (_last_before)
        self.meters: dict[int, Item] = {}                    # meter id → its item as read
        self.series: dict[str, int] = {}                     # series key → meter id
        self.hot: dict[int, set[str]] = {}                   # meter id → hours that may have a hot item
        self.clean: dict[int, frozenset[str]] = {}           # meter id → hours all of whose readings are hot
        self.folded: dict[int, list[Entry]] = defaultdict(list)   # meter id → readings of the hot items it folded
        self.unmarked: dict[int, set[str]] = defaultdict(set)     # meter id → hours folded (marks to remove)

    def reject(self, index: int, code: str, message: str) -> None:
        self.rejected[index] = (code, message)

    def series_of(self, meter_id: int) -> str:
        return readings_table.series_key(self.project_id, meter_id)


def ingest(project_id: int, sent: object) -> dict[str, Any]:
    """POST /data: store a batch of readings (sent: the request's readings); the receipt says how each one fared."""
    if not isinstance(sent, list):
        raise BadRequest('readings must be a JSON array: {"readings": [{"MeterId": …, "TimeStamping": …, "value": …}]}')
    if len(sent) > MAX_BATCH:
        raise PayloadTooLarge(f"too many readings in one request: at most {MAX_BATCH}, split the batch")
    batch = _Batch(project_id, accounts.project_zone(project_id), clock.now())
    _parse(batch, sent)
    if batch.parsed:
        _store(batch)
        _refresh_rollups(batch)
        _record_meters(batch)
    return {"accepted": len(batch.accepted), "duplicates": len(batch.duplicates),
            "rejected": [{"index": i, "code": batch.rejected[i][0], "error": batch.rejected[i][1]}
                         for i in sorted(batch.rejected)]}


def _store(batch: _Batch) -> None:
    """Read the items the readings need, fold the hot items due, then classify and write (5 rounds when
    other requests keep writing the same items; what is left is `busy`)."""
    _load(batch, {key for index in batch.parsed for key in _keys_of(batch, index)} | _fold_keys(batch))
    _fold(batch)
    pending = set(batch.parsed)
    for _attempt in range(5):
        pending = _write(batch, _classify(batch, pending))
        if not pending:
            break
        _load(batch, {key for index in pending for key in _keys_of(batch, index)})
    for index in pending:
        batch.reject(index, "busy", "the meter's readings were being written by other requests: send it again")


def _parse(batch: _Batch, sent: list) -> None:
    """Check each reading alone; resolve site names to meters (unknown ones are rejected)."""
    candidates: dict[int, tuple[str, int, Decimal, bool]] = {}
    for index, reading in enumerate(sent):
        try:
            candidates[index] = _check(reading, batch.zone, batch.now)
        except ValueError as error:
            batch.reject(index, getattr(error, "code", "malformed"), str(error))
    site_names: dict[str, str] = {}   # as sent → as stored (trimmed, NFC)
    for name in {c[0] for c in candidates.values()}:
        try:
            site_names[name] = validation.name("MeterId", name)
        except BadRequest:  # a malformed name is an unknown meter; a failing lookup is a 503 of the whole request
            pass
    by_site_name = meters.find_by_site_names(batch.project_id, sorted(set(site_names.values())))
    found = {name: by_site_name[site_name] for name, site_name in site_names.items()}
    for index, (name, epoch, value, reset) in candidates.items():
        meter = found.get(name)
        if meter is None:
            batch.reject(index, "unknown_meter", f"unknown meter {name[:64]!r}: register it with PUT /point first")
            continue
        batch.parsed[index] = Parsed(meter, epoch, value, reset)
        if meter["meter_id"] not in batch.meters:
            batch.meters[meter["meter_id"]] = meter
            batch.series[batch.series_of(meter["meter_id"])] = meter["meter_id"]
            batch.hot[meter["meter_id"]] = set(readings.hot_hours(meter))
            batch.clean[meter["meter_id"]] = readings.clean_hours(meter, batch.now)


def _check(reading: object, zone: tzinfo, now: float) -> tuple[str, int, Decimal, bool]:
    """(site name as sent, epoch, value, reset) of one reading, or ValueError (Invalid) saying what is wrong."""
    if not isinstance(reading, dict):
        raise ValueError("a reading must be an object with MeterId, TimeStamping and value")
    name = reading.get("MeterId", reading.get("MeterParam"))
    if not isinstance(name, str) or not name.strip():
        raise ValueError("MeterId is required (the meter's name on site)")
    epoch = parse_time(reading.get("TimeStamping"), zone)
    if epoch > now + readings.FUTURE_TOLERANCE:
        raise Invalid("TimeStamping is more than 10 minutes in the future: check the agent's clock", "future")
    value = _value(reading.get("value"))
    reset = reading.get("reset", False)
    if reset is None or not isinstance(reset, bool):
        raise ValueError('reset must be true (the first reading of a new register series) or false, or left out')
    return name.strip(), epoch, value, reset


# ---- reading what is stored -----------------------------------------------------------------------------

def _keys_of(batch: _Batch, index: int) -> set[Key]:
    """The items holding a reading and every reading up to one SaveEvery away: the hot items of those hours
    the meter item marks (and the reading's own hour's while live), and the day items of those days, but
    for days whose hours there are clean (readings.clean_hours: all in hot items, the steady state)."""
    meter, epoch, _value_, _reset = batch.parsed[index]
    meter_id, step = meter["meter_id"], meters.step(meter)
    series = batch.series_of(meter_id)
    low, high = epoch - step, min(epoch + step, int(batch.now) + readings.FUTURE_TOLERANCE)
    hours = [readings.hour_of(moment) for moment in range(low - low % 3600, max(low, high) + 1, 3600)]
    keys = {(series, hour) for hour in hours if hour in batch.hot[meter_id]}
    keys |= {(series, hour[:10]) for hour in hours if hour not in batch.clean[meter_id]}
    own = readings.hour_of(epoch)
    if readings.live(own, batch.now):
        keys.add((series, own))
    return keys


def _load(batch: _Batch, keys: Iterable[Key]) -> None:
    found = readings.load(keys)
    batch.items.update(found)
    for series, sort_key in found:
        batch.sort_keys[series].add(sort_key)


# ---- folding the hot items that are due -------------------------------------------------------------

def _fold_plan(batch: _Batch) -> dict[Key, list[str]]:
    """{(series, day): its hours due for folding} of the request's meters, FOLDS_PER_REQUEST hours at most."""
    due = sorted((hour, meter_id) for meter_id, hours in batch.hot.items() for hour in hours
                 if readings.foldable(hour, batch.now))[:FOLDS_PER_REQUEST]
    plan: dict[Key, list[str]] = defaultdict(list)
    for hour, meter_id in due:
        plan[(batch.series_of(meter_id), hour[:10])].append(hour)
    return plan


def _fold_keys(batch: _Batch) -> set[Key]:
    return {key for (series, day), hours in _fold_plan(batch).items() for key in [(series, day)]
            + [(series, hour) for hour in hours]}


def _fold(batch: _Batch) -> None:
    """Fold the hot items due into their day items (conditional on the day item as read; a day another request
    wrote meanwhile is read again, up to 3 times, else left for a later request), then delete them."""
    plan = _fold_plan(batch)
    done: list[Key] = []
    for _attempt in range(3):
        tasks = list(plan.items())
        outcomes = db.in_parallel([functools.partial(_fold_day, batch, key, hours) for key, hours in tasks])
        db.raise_first(o for o in outcomes if not isinstance(o, db.ConditionFailed))
        done += [key for (key, _h), outcome in zip(tasks, outcomes) if not isinstance(outcome, db.ConditionFailed)]
        plan = {key: hours for (key, hours), outcome in zip(tasks, outcomes) if isinstance(outcome, db.ConditionFailed)}
        if not plan:
            break
        _load(batch, {k for (series, day), hours in plan.items() for k in [(series, day)] + [(series, h) for h in hours]})
    folded = [(series, hour) for series, day in done for hour in _fold_plan_hours(batch, series, day)]
    readings.drop_hot(folded)
    for series, hour in folded:
        meter_id = batch.series[series]
        midnight = readings.hour_start(hour[:10] + "T00")
        batch.folded[meter_id].extend((midnight + slot, float(value), reset)
                                      for slot, (value, reset) in (batch.items.get((series, hour)) or {}).items())
        batch.items[(series, hour)] = None
        batch.hot[meter_id].discard(hour)
        batch.unmarked[meter_id].add(hour)


def _fold_plan_hours(batch: _Batch, series: str, day: str) -> list[str]:
    return [hour for hour in batch.hot[batch.series[series]] if hour[:10] == day and readings.foldable(hour, batch.now)]


def _fold_day(batch: _Batch, key: Key, hours: list[str]) -> None:
    """Write a day item holding its hot items' readings of hours (nothing when it holds them already)."""
    series, day = key
    stored = batch.items.get(key)
    entries = {slot: entry for hour in hours for slot, entry in (batch.items.get((series, hour)) or {}).items()
               if slot not in (stored or {})}
    if entries:
        batch.items[key] = readings.write(series, day, stored, entries)


# ---- classifying and writing ------------------------------------------------------------------------------

def _stored_at(batch: _Batch, series: str, epoch: int) -> tuple[Decimal, bool] | None:
    """The stored (value, reset) of a meter's reading at epoch, from its day item or its hour's hot item."""
    day, slot = readings.day_slot(epoch)
    found = (batch.items.get((series, day)) or {}).get(slot)
    return found if found is not None else (batch.items.get((series, readings.hour_of(epoch))) or {}).get(slot)


def _classify(batch: _Batch, indexes: Iterable[int]) -> _New:
    """The new readings of indexes by the item they go to and slot (several sending one reading: the first is
    new, the others duplicates); a reading stored already is a duplicate, another value or mark a conflict."""
    new: _New = defaultdict(dict)
    for index in sorted(indexes):
        meter, epoch, value, reset = batch.parsed[index]
        series = batch.series_of(meter["meter_id"])
        slot = readings.day_slot(epoch).slot
        target = (series, readings.home(epoch, batch.now))
        stored = _stored_at(batch, series, epoch)
        pending = new[target].get(slot)
        known = stored if stored is not None else (pending[0] if pending else None)
        if known is None:
            new[target][slot] = ((value, reset), [index])
        elif known == (value, reset):
            if pending and stored is None:
                pending[1].append(index)
            else:
                batch.duplicates.add(index)
        else:
            batch.reject(index, "conflict", _conflict(meter, known, reset))
    return new


def _conflict(meter: Item, known: tuple[Decimal, bool], reset: bool) -> str:
    value, stored_reset = known
    if stored_reset != reset:
        marked = "with" if stored_reset else "without"
        return (f"meter {meter['site_name'][:64]!r} already has the value {value} at this time {marked} the mark "
                f"of a new register series (\"reset\": true); the stored reading is kept")
    return f"meter {meter['site_name'][:64]!r} already has the value {value} at this time; the stored value is kept"


def _day_count(batch: _Batch, series: str, day: str) -> int:
    """Readings stored for a meter's UTC day as read: its day item's and its hot items' (each once)."""
    slots = set(batch.items.get((series, day)) or {})
    for sort_key in batch.sort_keys[series]:
        if sort_key[:10] == day and readings_table.is_hour(sort_key):
            slots.update(batch.items.get((series, sort_key)) or {})
    return len(slots)


def _too_many(batch: _Batch, key: Key, count: int) -> str | None:
    """Why count new readings do not fit in an item, or None: a live hour's hot item takes MAX_PER_HOUR, a
    day item MAX_PER_DAY besides the day's hot items the batch read (at most 2 × 2,880 readings, 69 KB,
    however they came: far below DynamoDB's 400 KB)."""
    series, sort_key = key
    if readings_table.is_hour(sort_key):
        if len(batch.items.get(key) or {}) + count > readings.MAX_PER_HOUR:
            return (f"too many readings for this meter in the hour from {sort_key}:00Z: at most "
                    f"{readings.MAX_PER_HOUR} an hour while the hour is live")
    elif _day_count(batch, series, sort_key) + count > readings.MAX_PER_DAY:
        return f"too many readings for this meter on {sort_key}: at most {readings.MAX_PER_DAY} a day"
    return None


def _register(batch: _Batch, new: _New) -> None:
    """Mark on the meter items the hours about to get a hot item (and the next one), before it is written:
    a read by key then always finds it."""
    marks: dict[int, set[str]] = defaultdict(set)
    for (series, sort_key), slots in new.items():
        meter_id = batch.series[series]
        if slots and readings_table.is_hour(sort_key) and sort_key not in batch.hot[meter_id]:
            marks[meter_id] |= {sort_key, readings.hour_of(readings.hour_start(sort_key) + 3600)}
    outcomes = db.in_parallel([functools.partial(meters.record, batch.project_id, batch.meters[m], hot_add=hours)
                               for m, hours in marks.items()])
    db.raise_first(outcomes)
    for meter_id, hours in marks.items():
        batch.hot[meter_id] |= hours


def _write(batch: _Batch, new: _New) -> set[int]:
    """Write each item's new readings (a full day or hour is refused), the items at once; the indexes of the
    items another request wrote meanwhile, to classify again."""
    tasks = []
    for key, slots in new.items():
        if not slots:  # every reading of this item was a duplicate or a conflict: nothing to write
            continue
        why = _too_many(batch, key, len(slots))
        if why:
            for _entry, idx in slots.values():
                for i in idx:
                    batch.reject(i, "day_full", why)
            continue
        tasks.append((key, slots))
    _register(batch, {key: slots for key, slots in tasks})
    outcomes = db.in_parallel([functools.partial(readings.write, key[0], key[1], batch.items.get(key),
                                                 {slot: entry for slot, (entry, _i) in slots.items()})
                               for key, slots in tasks])
    retry: set[int] = set()
    for (key, slots), outcome in zip(tasks, outcomes):
        if isinstance(outcome, db.ConditionFailed):
            retry.update(i for _e, idx in slots.values() for i in idx)
        elif not isinstance(outcome, Exception):
            batch.items[key] = outcome
            for _entry, idx in slots.values():
                batch.accepted.add(idx[0])
                batch.duplicates.update(idx[1:])
    db.raise_first(o for o in outcomes if not isinstance(o, db.ConditionFailed))
    return retry


# ---- after the readings: rollups, then the meter items ------------------------------------------------------

def _stored_times(batch: _Batch) -> dict[int, list[int]]:
    """{meter id: instants of this batch's readings that are stored (new or duplicates)}."""
    by_meter: dict[int, list[int]] = defaultdict(list)
    for index in batch.accepted | batch.duplicates:
        meter, epoch, _v, _r = batch.parsed[index]
        by_meter[meter["meter_id"]].append(epoch)
    return by_meter


def _last_before(batch: _Batch, meter_id: int) -> Reading | None:
    """The meter's latest reading as its item keeps it, or for a meter whose item has none (its readings
    were stored otherwise: a bench, a restore), the last one stored (a Query, once per request)."""
    if meter_id not in batch.last_known:
        known = meters.last(batch.meters[meter_id], meters.LATEST)
        if known is None:
            known = readings.before(batch.project_id, meter_id, int(batch.now) + readings.FUTURE_TOLERANCE + 1)
        batch.last_known[meter_id] = known
    return batch.last_known[meter_id]


def _refresh_rollups(batch: _Batch) -> None:
    """Bring each meter's consumption rollups up to date with this batch's stored readings, where they close
    an hour or change a closed one (rollups.needs_refresh)."""
    plans = {}
    stored = _stored_times(batch)
    unknown = [m for m in stored if batch.meters[m].get("latest_time") is None and m not in batch.last_known]
    db.raise_first(db.in_parallel([functools.partial(_last_before, batch, m) for m in unknown]))
    for meter_id, times in stored.items():
        latest = batch.meters[meter_id].get("latest_time")
        if rollups.needs_refresh(latest, times, batch.zone):
            last = _last_before(batch, meter_id)
            plans[meter_id] = rollups.Plan(times, latest, max([*times, *([] if last is None else [last.epoch])]))
    if plans:
        rollups.refresh_many(batch.project_id, batch.zone, plans, {m: batch.hot[m] for m in plans})


def _entries_between(batch: _Batch, series: str, low: int, high: int) -> list[Entry]:
    """(epoch, value, reset) of a meter's readings with low <= epoch <= high among the items the batch has
    read or written, each once, in time order."""
    found: dict[int, Entry] = {}
    for sort_key in batch.sort_keys[series]:
        midnight = readings.hour_start(sort_key[:10] + "T00")
        if midnight > high or midnight + 86400 <= low:
            continue
        for slot, (value, reset) in (batch.items.get((series, sort_key)) or {}).items():
            if low <= midnight + slot <= high:
                found.setdefault(midnight + slot, (midnight + slot, float(value), reset))
    return [found[t] for t in sorted(found)]


def _in_hot(batch: _Batch, series: str, epoch: int) -> bool:
    """True when the reading at epoch is in its hour's hot item (as the batch knows it, fold included)."""
    day, slot = readings.day_slot(epoch)
    return slot in (batch.items.get((series, readings.hour_of(epoch))) or {})


def _same_hour(a: int, b: int, zone: ZoneInfo) -> bool:
    """True when two instants are in one UTC hour and one local hour (the meter item moves at either change)."""
    return readings.hour_of(a) == readings.hour_of(b) and rollups.open_hour({"latest_time": a}, zone) == \
        rollups.open_hour({"latest_time": b}, zone)


def _record_meters(batch: _Batch) -> None:
    """Move each meter's latest reading and interval forward (never back) where a reader of the hot item of
    latest_time's hour would not find them, and mark or unmark its hot items: one UpdateItem per meter, at once."""
    stored = _stored_times(batch)
    touched = set(stored) | set(batch.unmarked)
    outcomes = db.in_parallel([functools.partial(_record, batch, m, stored.get(m, [])) for m in sorted(touched)])
    db.raise_first(outcomes)


def _record(batch: _Batch, meter_id: int, times: list[int]) -> None:
    meter, series = batch.meters[meter_id], batch.series_of(meter_id)
    folded = batch.folded[meter_id]
    known = _last_before(batch, meter_id)
    candidates: list[tuple[int, float]] = [(t, v) for t, v, _r in folded]
    if known is not None:
        candidates.append((known.epoch, float(known.value)))
    if times:
        candidates += [(e[0], e[1]) for e in _entries_between(batch, series, max(times), max(times))]
    newest = max(candidates, default=None)
    latest = None
    if newest is not None and (meter.get("latest_time") is None or newest[0] > meter["latest_time"]):
        keep = (meter.get("latest_time") is not None and _same_hour(meter["latest_time"], newest[0], batch.zone)
                and _in_hot(batch, series, newest[0]))
        latest = None if keep else Reading(int(newest[0]), float(newest[1]))
    final = latest.epoch if latest is not None else meter.get("latest_time")
    interval = _interval(batch, meter, times, final)
    hot_add: set[str] = set()
    if latest is not None and readings.live(readings.hour_of(latest.epoch), batch.now):
        hot_add.add(readings.hour_of(latest.epoch + 3600))   # the next hour marked ahead: no mark before its first write
    meters.record(batch.project_id, meter, latest=latest, interval=interval,
                  hot_add=hot_add - batch.hot[meter_id], hot_remove=batch.unmarked[meter_id])


def _interval(batch: _Batch, meter: Item, times: list[int], final: int | None) -> Reading | None:
    """The latest interval to write: the best one ending at a reading of the batch or one SaveEvery after it,
    or in the hot items folded or left behind by latest_time's move to another hour, unless a reader finds
    it in the hot item of final's hour (both its ends there: meters.current)."""
    step, series, meter_id = meters.step(meter), batch.series_of(meter["meter_id"]), meter["meter_id"]
    ends = {t for epoch in times for t in (epoch, epoch + step)} | {t for t, _v, _r in batch.folded[meter_id]}
    old = meter.get("latest_time")
    if old is not None and final != old:
        start = readings.hour_start(readings.hour_of(old))
        ends.update(t for t, _v, _r in _entries_between(batch, series, start, start + 3599))
    if not ends:
        return None
    points = _entries_between(batch, series, min(ends) - step, max(ends))
    best = meters.interval_in(points, step, ends)
    if best is None or final is None:
        return best
    hour = readings.hour_of(final)
    if readings.hour_of(best.epoch - step) == readings.hour_of(best.epoch) == hour and \
            _in_hot(batch, series, best.epoch) and _in_hot(batch, series, best.epoch - step):
        return None   # derivable from the hot item: meters.current finds it there
    return best
