"""POST /data: a batch of readings parsed, checked, stored idempotently per meter and time, with a receipt.

Step by step (docs/data-model.md): each reading is parsed and checked alone; site names are resolved
to meters in one batched read; the day items holding the readings and their neighbours are read;
each reading is classified against what is stored (new, duplicate, conflict) and the new ones are
written a day item at a time (chalicelib/metering/readings.py: conditional on the item's count, retried when
another request wrote the day meanwhile); then the meters' consumption rollups (chalicelib/metering/rollups.py)
and their latest reading and interval move forward. Storage itself is chalicelib/metering/readings.py's.
"""
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
from chalicelib.platform import clock, db, validation
from chalicelib.platform.db import Item
from chalicelib.platform.errors import BadRequest, PayloadTooLarge
from chalicelib.tables import readings_table

MAX_BATCH = 1000
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
    """A reading that passed its checks: its meter (the item), instant (epoch seconds) and value as stored."""

    meter: Item
    epoch: int
    value: Decimal


class _Batch:
    """The state of one POST /data batch: parsed readings, their meters and the day items they touch."""

    def __init__(self, project_id: int, zone: ZoneInfo) -> None:
        self.project_id = project_id
        self.zone = zone
        self.rejected: dict[int, tuple[str, str]] = {}       # index → (receipt code, message)
        self.duplicates: set[int] = set()
        self.accepted: set[int] = set()
        self.parsed: dict[int, Parsed] = {}
        # (series, day) → {seconds into the day: Decimal}; None when no item
        self.days: dict[tuple[str, str], dict[int, Decimal] | None] = {}

    def reject(self, index: int, code: str, message: str) -> None:
        self.rejected[index] = (code, message)


def ingest(project_id: int, sent: object) -> dict[str, Any]:
    """POST /data: store a batch of readings (sent: the request's readings); the receipt says how each one fared."""
    if not isinstance(sent, list):
        raise BadRequest('readings must be a JSON array: {"readings": [{"MeterId": …, "TimeStamping": …, "value": …}]}')
    if len(sent) > MAX_BATCH:
        raise PayloadTooLarge(f"too many readings in one request: at most {MAX_BATCH}, split the batch")
    batch = _Batch(project_id, accounts.project_zone(project_id))
    _parse(batch, sent)
    _load_days(batch)
    pending = {i for i in batch.parsed}
    for _attempt in range(5):
        pending = _classify_and_write(batch, pending)
        if not pending:
            break
        _load_days(batch, only={(readings_table.series_key(project_id, batch.parsed[i].meter["meter_id"]),
                                 readings.day_slot(batch.parsed[i].epoch).day) for i in pending})
    for index in pending:
        batch.reject(index, "busy", "the meter's day was being written by other requests: send it again")
    _refresh_rollups(batch)
    _update_latest(batch)
    return {"accepted": len(batch.accepted), "duplicates": len(batch.duplicates),
            "rejected": [{"index": i, "code": batch.rejected[i][0], "error": batch.rejected[i][1]}
                         for i in sorted(batch.rejected)]}


def _parse(batch: _Batch, sent: list) -> None:
    """Check each reading alone; resolve site names to meters (unknown ones are rejected)."""
    now = clock.now()
    candidates: dict[int, tuple[str, int, Decimal]] = {}
    for index, reading in enumerate(sent):
        try:
            if not isinstance(reading, dict):
                raise ValueError("a reading must be an object with MeterId, TimeStamping and value")
            name = reading.get("MeterId", reading.get("MeterParam"))
            if not isinstance(name, str) or not name.strip():
                raise ValueError("MeterId is required (the meter's name on site)")
            epoch = parse_time(reading.get("TimeStamping"), batch.zone)
            if epoch > now + readings.FUTURE_TOLERANCE:
                raise Invalid("TimeStamping is more than 10 minutes in the future: check the agent's clock", "future")
            value = _value(reading.get("value"))
        except ValueError as error:
            batch.reject(index, getattr(error, "code", "malformed"), str(error))
            continue
        candidates[index] = (name.strip(), epoch, value)
    site_names: dict[str, str] = {}   # as sent → as stored (trimmed, NFC)
    for name in {c[0] for c in candidates.values()}:
        try:
            site_names[name] = validation.name("MeterId", name)
        except BadRequest:  # a malformed name is an unknown meter; a failing lookup is a 503 of the whole request
            pass
    by_site_name = meters.find_by_site_names(batch.project_id, sorted(set(site_names.values())))
    found = {name: by_site_name[site_name] for name, site_name in site_names.items()}
    for index, (name, epoch, value) in candidates.items():
        meter = found.get(name)
        if meter is None:
            batch.reject(index, "unknown_meter", f"unknown meter {name[:64]!r}: register it with PUT /point first")
        else:
            batch.parsed[index] = Parsed(meter, epoch, value)


def _needed_days(batch: _Batch) -> set[tuple[str, str]]:
    """The day items holding each reading and its neighbours one SaveEvery away."""
    needed = set()
    for meter, epoch, _value_ in batch.parsed.values():
        step = meters.step(meter)
        series = readings_table.series_key(batch.project_id, meter["meter_id"])
        for moment in (epoch - step, epoch, epoch + step):
            needed.add((series, readings.day_slot(moment).day))
    return needed


def _load_days(batch: _Batch, only: set[tuple[str, str]] | None = None) -> None:
    batch.days.update(readings.stored_days(only or _needed_days(batch)))


def _classify_and_write(batch: _Batch, indexes: Iterable[int]) -> set[int]:
    """Sort readings into duplicates, conflicts and new ones; write the new ones. Returns those to retry."""
    return _write(batch, _classify(batch, indexes))


_New = dict[tuple[str, str], dict[int, tuple[Decimal, list[int]]]]   # (series, day) → {slot: (value, [indexes])}


def _classify(batch: _Batch, indexes: Iterable[int]) -> _New:
    """The new readings of indexes by day item and slot (several sending one value: the first is new, the
    others duplicates); a reading the stored day already has is a duplicate, another value a conflict."""
    new: _New = defaultdict(dict)
    for index in sorted(indexes):
        meter, epoch, value = batch.parsed[index]
        series = readings_table.series_key(batch.project_id, meter["meter_id"])
        day, slot = readings.day_slot(epoch)
        stored = (batch.days.get((series, day)) or {}).get(slot)
        pending = new[(series, day)].get(slot)
        known = stored if stored is not None else (pending[0] if pending else None)
        if known is None:
            new[(series, day)][slot] = (value, [index])
        elif known == value:
            if pending and stored is None:
                pending[1].append(index)
            else:
                batch.duplicates.add(index)
        else:
            batch.reject(index, "conflict", f"meter {meter['site_name'][:64]!r} already has the value {known} "
                                            f"at this time; the stored value is kept")
    return new


def _write(batch: _Batch, new: _New) -> set[int]:
    """Write each day's new readings into its item (a full day is refused); the indexes of the days another
    request wrote meanwhile, to classify again."""
    retry: set[int] = set()
    for (series, day), slots in new.items():
        if not slots:  # every reading of this day was a duplicate or a conflict: nothing to write
            continue
        stored = batch.days.get((series, day))
        if len(stored or {}) + len(slots) > readings.MAX_PER_DAY:
            for _value_, idx in slots.values():
                for i in idx:
                    batch.reject(i, "day_full",
                                 f"too many readings for this meter on {day}: at most {readings.MAX_PER_DAY} a day")
            continue
        try:
            readings.write_day(series, day, stored, {slot: v for slot, (v, _i) in slots.items()})
        except db.ConditionFailed:
            retry.update(i for _v, idx in slots.values() for i in idx)
            continue
        merged = dict(stored or {})
        for slot, (value, idx) in slots.items():
            merged[slot] = value
            batch.accepted.add(idx[0])
            batch.duplicates.update(idx[1:])
        batch.days[(series, day)] = merged
    return retry


def _refresh_rollups(batch: _Batch) -> None:
    """Bring each meter's consumption rollups up to date with the readings of this batch that are stored."""
    by_meter = defaultdict(list)
    for index in batch.accepted | batch.duplicates:
        meter, epoch, _v = batch.parsed[index]
        by_meter[meter["meter_id"]].append(epoch)
    if by_meter:
        rollups.refresh_many(batch.project_id, batch.zone, by_meter)


def _stored_value(batch: _Batch, series: str, epoch: int) -> Decimal | None:
    day, slot = readings.day_slot(epoch)
    return (batch.days.get((series, day)) or {}).get(slot)


def _update_latest(batch: _Batch) -> None:
    """Move each meter's latest reading and latest interval forward (never back) from this batch."""
    by_meter = defaultdict(list)
    for index in batch.accepted | batch.duplicates:
        by_meter[batch.parsed[index].meter["meter_id"]].append(batch.parsed[index])
    for meter_id, entries in by_meter.items():
        meter = entries[0].meter
        series = readings_table.series_key(batch.project_id, meter_id)
        step = meters.step(meter)
        latest = max(entry.epoch for entry in entries)
        meters.advance(batch.project_id, meter, meters.LATEST, latest, _stored_value(batch, series, latest))
        best = None
        for entry in entries:
            for end in (entry.epoch, entry.epoch + step):
                used = interval_value(_stored_value(batch, series, end - step), _stored_value(batch, series, end))
                if used is not None and (best is None or end > best[0]):
                    best = (end, used)
        if best:
            meters.advance(batch.project_id, meter, meters.INTERVAL, *best)


def interval_value(before: Decimal | None, after: Decimal | None) -> Decimal | None:
    """Energy used between two register readings, or None when one is missing or the register went down."""
    if before is None or after is None or after < before:
        return None
    return after - before

