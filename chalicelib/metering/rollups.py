"""Consumption rollups: per meter and local day, the energy used, the readings counted and the highest
15-minute energy, kept at ingest so GET /consumption never reads a meter's raw history.

The arithmetic (also the reference every rollup must equal: chalicelib/metering/consumption.py computes from
raw readings with it, tests/api/test_consumption.py checks both against a naive model):
  - registers become integer µkWh (they are stored rounded to the µkWh, so this is exact);
  - the energy used up to a reading is the sum of the register's non-negative steps (a reset or a
    replaced meter adds nothing, counting resumes from the new value); between two readings it
    grows linearly, rounded half up to the µkWh; before the first and after the last reading it is
    unknown;
  - a period [start, end] uses E(min(end, last)) - E(max(start, first)), None when that is empty;
    readings counted are those with start <= t < end; demand intervals step 900 s from the
    period's start (local :00/:15/:30/:45) and count when E is known at both ends.

Items (ReadingsTable, their own partition so the readings' queries never see them): key
meter = "ROLLUP#<project>#<meter>", day = local month "YYYY-MM"; r (version, for optimistic writes
as the day items' n), and v: a header (meter id uint64, year uint16, month, bytes per integer w = 8
or 16, the zone's name whose local days these are) and 31 records (day 1..31) of flags (bit 0:
energy known), count (uint32), energy and peak (signed little-endian w-byte integers, µkWh; peak -1
when no demand interval is known). Queries read v alone (a projection): under moto, and in the SDK,
an item costs per attribute value. A meter-year is 12 or 13 items of ~700 bytes.
"""
import bisect
import struct
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from datetime import date, timedelta
from decimal import Decimal
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from chalicelib.metering import readings
from chalicelib.metering.days import each, local_day, midnight
from chalicelib.metering.readings import Point
from chalicelib.platform import db
from chalicelib.platform.errors import Conflict
from chalicelib.tables import readings_table

SLOT = 900                  # seconds in a demand interval
DAYS_PER_ITEM = 31
ATTEMPTS = 8
CLUSTER_GAP = 2 * 86400     # readings of one batch further apart than this are refreshed as separate spans
_HEAD = struct.Struct("<BI")              # a day's flags and count
_RECORD = struct.Struct("<BIqq")          # a day: flags, count, energy, peak (8-byte integers)
_HEADER = struct.Struct("<QHBBB")         # meter id, year, month, integer width, zone name length


class Summary(NamedTuple):
    """What a span of time (a local day, or any [start, end)) holds: the energy used (µkWh, None when
    unknown), the readings counted, and the highest 15-minute energy (µkWh, None when none is known)."""

    energy: int | None
    counted: int
    peak: int | None


NOTHING = Summary(None, 0, None)   # a span with no reading and no known energy


class _Packed(NamedTuple):
    """A rollup item's v attribute, read: whose and which month it is, the zone whose local days it
    keeps, and its days' Summary by day of the month (days with nothing left out)."""

    meter_id: int
    month: str
    zone_name: str
    days: dict[int, Summary]


class _Stored(NamedTuple):
    """A rollup item as read before it is rewritten: its version (None: not stored yet), zone and days."""

    version: int | None
    zone_name: str | None
    days: dict[int, Summary]


def micro(value: float) -> int:
    """A stored register (float, rounded to the µkWh at ingest) as integer µkWh, exactly.

    Below 1e9 kWh the float product is within 0.25 µkWh of the stored decimal, so rounding it is
    exact (and 5x cheaper than Decimal); larger registers go through Decimal.
    """
    if -1e9 < value < 1e9:
        return round(value * 1e6)
    return int(Decimal(repr(value)).scaleb(6))


class Curve:
    """Energy used as a function of time over a meter's readings (sorted (epoch, value) pairs).

    The readings must include the nearest ones outside the span asked about (readings.around), so
    that the first and last here are the meter's first and last wherever history begins or ends.
    """

    def __init__(self, points: Sequence[Point]) -> None:
        self.times = [t for t, _v in points]
        self.cum: list[int] = []
        total, previous = 0, None
        for _t, value in points:
            register = micro(value)
            if previous is not None and register > previous:
                total += register - previous
            self.cum.append(total)
            previous = register

    def at(self, x: int) -> int | None:
        """Energy used up to instant x (µkWh, from an arbitrary origin), or None outside the readings."""
        times = self.times
        if not times or x < times[0] or x > times[-1]:
            return None
        i = bisect.bisect_right(times, x) - 1
        if times[i] == x:
            return self.cum[i]
        t0, t1, used = times[i], times[i + 1], self.cum[i + 1] - self.cum[i]
        return self.cum[i] + (2 * used * (x - t0) + (t1 - t0)) // (2 * (t1 - t0))

    def summary(self, start: int, end: int) -> Summary:
        """The Summary of [start, end): energy used, readings with start <= t < end, peak 15-minute energy."""
        times = self.times
        count = bisect.bisect_left(times, end) - bisect.bisect_left(times, start)
        if not times or max(start, times[0]) > min(end, times[-1]):
            return Summary(None, count, None)
        energy = _known(self.at(min(end, times[-1]))) - _known(self.at(max(start, times[0])))
        peak, previous = None, self.at(start)
        for edge in range(start + SLOT, end + 1, SLOT):
            current = self.at(edge)
            if previous is not None and current is not None and (peak is None or current - previous > peak):
                peak = current - previous
            previous = current
        return Summary(energy, count, peak)


def _known(energy: int | None) -> int:
    """An energy the curve knows (an instant within its readings)."""
    assert energy is not None
    return energy


def _month(day: date) -> str:
    return f"{day.year:04d}-{day.month:02d}"


def _pack(meter_id: int, month: str, zone_name: str, records: Mapping[int, Summary]) -> bytes:
    """The v attribute: header (meter id, year, month, integer width, zone) and 31 day records."""
    width = 8
    for energy, _count, peak in records.values():
        if max(energy or 0, peak or 0) >= 2 ** 63:
            width = 16
    name = zone_name.encode()
    parts = [_HEADER.pack(meter_id, int(month[:4]), int(month[5:7]), width, len(name)), name]
    for index in range(1, DAYS_PER_ITEM + 1):
        energy, count, peak = records.get(index, NOTHING)
        flags, energy, peak = (1 if energy is not None else 0), energy or 0, -1 if peak is None else peak
        if width == 8:
            parts.append(_RECORD.pack(flags, count, energy, peak))
        else:
            parts.append(_HEAD.pack(flags, count) + energy.to_bytes(width, "little", signed=True)
                         + peak.to_bytes(width, "little", signed=True))
    return b"".join(parts)


def _unpack(value: Any) -> _Packed:
    """The _Packed content of a v attribute."""
    packed = bytes(getattr(value, "value", value))   # boto3 wraps binary values in Binary
    meter_id, year, month, width, length = _HEADER.unpack_from(packed)
    base = _HEADER.size + length
    zone_name = packed[_HEADER.size:base].decode()
    records: Iterable[tuple[Any, ...]]
    if width == 8:
        records = _RECORD.iter_unpack(packed[base:base + DAYS_PER_ITEM * _RECORD.size])
    else:
        size = _HEAD.size + 2 * width
        records = wide = []
        for start in range(base, base + DAYS_PER_ITEM * size, size):
            flags, count = _HEAD.unpack_from(packed, start)
            middle = start + _HEAD.size + width
            wide.append((flags, count, int.from_bytes(packed[start + _HEAD.size:middle], "little", signed=True),
                            int.from_bytes(packed[middle:start + size], "little", signed=True)))
    days = {index: Summary(energy if flags & 1 else None, count, None if peak < 0 else peak)
            for index, (flags, count, energy, peak) in enumerate(records, start=1) if flags or count or peak >= 0}
    return _Packed(meter_id, f"{year:04d}-{month:02d}", zone_name, days)


# ---- maintenance at ingest -------------------------------------------------------------------------

class _Prefetched(NamedTuple):
    """What refresh_many read for a meter's days at once: its month items (_Stored by 'YYYY-MM'), and its
    readings of [start, end) (around_many's: the neighbours outside included)."""

    stored: dict[str, _Stored]
    window: tuple[int, int]
    points: list[Point]


def refresh_many(project_id: int, zone: ZoneInfo, times_by_meter: Mapping[int, Iterable[int]]) -> None:
    """Bring the rollups of the meters of one request up to date after readings at these instants were
    stored (new or not): {meter id: [epoch, ...]}.

    A reading changes the energy between its neighbours (interpolation across a gap, a history
    that now begins or ends elsewhere) and its own day's count, so every local day touching
    [left neighbour, right neighbour] is recomputed from the raw readings. Items are read before
    the readings and written conditionally on their version, so a concurrent refresh of the same
    month makes the write fail and this one reads again (as the day items' writers do). The first
    reads are batched across the meters: one BatchGetItem of every meter's month items, then their
    readings (by key), instead of two calls per meter."""
    plans = {meter_id: _plan(times, zone) for meter_id, times in times_by_meter.items()}
    stored = _stored_months(project_id, plans)
    points = _window_readings(project_id, zone, plans)
    for meter_id, (clusters, days) in sorted(plans.items()):
        _refresh(project_id, zone, meter_id, clusters, days, _Prefetched(stored[meter_id], *points[meter_id]))


def _plan(times: Iterable[int], zone: ZoneInfo) -> tuple[list[list[int]], set[date]]:
    """The clusters of a meter's new instants, and the local days they touch."""
    clusters = list(_clusters(sorted(set(times))))
    days: set[date] = set()
    for cluster in clusters:
        days |= _touching(cluster[0], cluster[-1], zone)
    return clusters, days


def _stored_months(project_id: int, plans: Mapping[int, tuple[list[list[int]], set[date]]]) -> dict[int, dict[str, _Stored]]:
    """{meter id: {month: _Stored}} of the month items the plans touch (those stored), in one BatchGetItem."""
    stored: dict[int, dict[str, _Stored]] = {meter_id: {} for meter_id in plans}
    keys = [readings_table.rollup_key(project_id, meter_id, month) for meter_id, (_c, days) in plans.items()
            for month in sorted({_month(day) for day in days})]
    for item in db.batch_get(readings_table.NAME, keys):   # the versions first, then the readings
        packed = _unpack(item["v"])
        stored[packed.meter_id][packed.month] = _Stored(item["r"], packed.zone_name, packed.days)
    return stored


def _window_readings(project_id: int, zone: ZoneInfo, plans: Mapping[int, tuple[list[list[int]], set[date]]],
                     ) -> dict[int, tuple[tuple[int, int], list[Point]]]:
    """{meter id: ((start, end), its readings there)} over the local days of each plan: the meters with
    the same days read together (readings.around_many)."""
    windows: dict[tuple[int, int], list[int]] = {}
    for meter_id, (_c, days) in plans.items():
        window = (midnight(min(days), zone), midnight(max(days) + timedelta(days=1), zone))
        windows.setdefault(window, []).append(meter_id)
    points = {}
    for (start, end), meter_ids in windows.items():
        for meter_id, found in readings.around_many(project_id, meter_ids, start, end).items():
            points[meter_id] = ((start, end), found)
    return points


def _refresh(project_id: int, zone: ZoneInfo, meter_id: int, clusters: list[list[int]], days: set[date],
             prefetched: _Prefetched | None) -> None:
    """Recompute one meter's days, reading again (and more days) until its writes hold; 409 after ATTEMPTS."""
    for _attempt in range(ATTEMPTS):
        try:
            wider = _recompute(project_id, zone, meter_id, days, clusters, prefetched)
        except db.ConditionFailed:
            prefetched = None
            continue
        if not wider:
            return
        days |= wider   # a neighbour lies beyond the days read: read them too (before any write)
        prefetched = None
    raise Conflict("the meter's consumption totals were being updated by other requests: send the batch "
                   "again (the readings are stored; they will come back as duplicates)")


def _touching(low: int, high: int, zone: ZoneInfo) -> set[date]:
    """The local days touching [low, high] (an instant on midnight also ends the day before)."""
    first = local_day(low, zone)
    if midnight(first, zone) == low:
        first -= timedelta(days=1)
    return set(each(first, local_day(high, zone)))


def _clusters(times: list[int]) -> Iterator[list[int]]:
    cluster = [times[0]]
    for epoch in times[1:]:
        if epoch - cluster[-1] > CLUSTER_GAP:
            yield cluster
            cluster = []
        cluster.append(epoch)
    yield cluster


def _recompute(project_id: int, zone: ZoneInfo, meter_id: int, days: set[date], clusters: Iterable[list[int]] = (),
               prefetched: _Prefetched | None = None) -> set[date]:
    """Recompute and write the given local days; with clusters of new readings, first check that every
    day between each cluster and its neighbours is among them, else return the missing days unwritten.
    prefetched: what refresh_many read for exactly these days."""
    by_month: dict[str, set[date]] = {}
    for day in days:
        by_month.setdefault(_month(day), set()).add(day)
    stored = prefetched.stored if prefetched is not None else _stored_of(project_id, meter_id, by_month)
    for month, known in stored.items():
        if known.zone_name != zone.key:   # another zone's days: this month is recomputed whole
            first = date(int(month[:4]), int(month[5:7]), 1)
            by_month[month].update(d for d in each(first, first + timedelta(days=30)) if d.month == first.month)
    every = sorted(d for month_days in by_month.values() for d in month_days)
    start, end = midnight(every[0], zone), midnight(every[-1] + timedelta(days=1), zone)
    if prefetched is not None and prefetched.window == (start, end):
        curve = Curve(prefetched.points)
    else:
        curve = Curve(readings.around(project_id, meter_id, start, end))
    wider = _neighbours_days(curve, clusters, zone)
    if not wider <= set(every):
        return wider - set(every)
    for month, month_days in sorted(by_month.items()):
        _write_month(project_id, zone, meter_id, month, month_days, stored.get(month, _Stored(None, None, {})), curve)
    return set()


def _stored_of(project_id: int, meter_id: int, months: Iterable[str]) -> dict[str, _Stored]:
    """{month: _Stored} of a meter's month items (those stored)."""
    stored = {}
    keys = [readings_table.rollup_key(project_id, meter_id, month) for month in months]
    for item in db.batch_get(readings_table.NAME, keys):
        packed = _unpack(item["v"])
        stored[item["day"]] = _Stored(item["r"], packed.zone_name, packed.days)
    return stored


def _neighbours_days(curve: Curve, clusters: Iterable[list[int]], zone: ZoneInfo) -> set[date]:
    """The local days from each cluster's left neighbour to its right one (the readings read include
    each cluster's neighbours, however far)."""
    wider: set[date] = set()
    for cluster in clusters:
        left = bisect.bisect_left(curve.times, cluster[0])
        right = bisect.bisect_right(curve.times, cluster[-1])
        wider |= _touching(curve.times[left - 1] if left > 0 else cluster[0],
                           curve.times[right] if right < len(curve.times) else cluster[-1], zone)
    return wider


def _write_month(project_id: int, zone: ZoneInfo, meter_id: int, month: str, month_days: Iterable[date],
                 known: _Stored, curve: Curve) -> None:
    """Write a month item with its days recomputed from curve: conditional on the version read (a new
    item on its absence); no write when nothing changed (a retried batch)."""
    version, zone_name, records = known
    old = _pack(meter_id, month, zone.key, records) if zone_name == zone.key else None
    if zone_name != zone.key:
        records = {}
    for day in month_days:
        summary = curve.summary(midnight(day, zone), midnight(day + timedelta(days=1), zone))
        if summary == NOTHING:
            records.pop(day.day, None)
        else:
            records[day.day] = summary
    packed = _pack(meter_id, month, zone.key, records)
    if packed == old:
        return   # nothing changed (a retried batch): no write
    new = {**readings_table.rollup_key(project_id, meter_id, month), "v": packed,
           "r": 1 if version is None else version + 1}
    if version is None:
        db.put(readings_table.NAME, new, condition="attribute_not_exists(meter)")
    else:
        db.put(readings_table.NAME, new, condition="#r = :r", names={"#r": "r"}, expression_values={":r": version})


# ---- reading ----------------------------------------------------------------------------------------

def day_summaries(project_id: int, meter_ids: Collection[int], first: date, last: date,
                  zone: ZoneInfo) -> dict[int, dict[date, Summary] | None]:
    """{meter id: {local day: Summary}} for days first..last from the rollups.

    One BatchGetItem key per meter and local month (at most 13 a meter-year). A meter whose items
    were kept for another zone maps to None: the caller computes it from the raw readings.
    """
    months = sorted({_month(day) for day in each(first, last)})
    keys = [readings_table.rollup_key(project_id, meter_id, month) for meter_id in meter_ids for month in months]
    result: dict[int, dict[date, Summary] | None] = {meter_id: {} for meter_id in meter_ids}
    for item in db.batch_get(readings_table.NAME, keys, consistent=False, projection="v"):   # one attribute: cheapest
        meter_id, month, zone_name, records = _unpack(item["v"])
        by_day = result.get(meter_id)
        if by_day is None:
            continue
        if zone_name != zone.key:
            result[meter_id] = None
            continue
        year, month_number = int(month[:4]), int(month[5:7])
        for index, record in records.items():
            day = date(year, month_number, index)
            if first <= day <= last:
                by_day[day] = record
    return result


def rebuild(project_id: int, zone: ZoneInfo, meter_id: int) -> None:
    """Compute a meter's rollups over its whole history from the raw readings, a month at a time.

    For history stored before rollups existed (and to repair them after the project's zone changed):
    ingest keeps them current afterwards. Cost: one pass over the meter's day items.
    """
    first = readings.after(project_id, meter_id, -1)
    last = readings.before(project_id, meter_id, 2 ** 37)
    if first is None or last is None:
        return
    day, end = local_day(first.epoch, zone) - timedelta(days=1), local_day(last.epoch, zone)
    while day <= end:
        month_end = min(end, date(day.year + day.month // 12, day.month % 12 + 1, 1) - timedelta(days=1))
        for _attempt in range(ATTEMPTS):
            try:
                _recompute(project_id, zone, meter_id, set(each(day, month_end)))
                break
            except db.ConditionFailed:
                continue
        day = month_end + timedelta(days=1)
