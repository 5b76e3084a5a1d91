"""Consumption rollups: per meter and local hour (and day), the energy used, the readings counted and the
highest 15-minute energy, kept at ingest so GET /consumption never reads a meter's raw history.

The arithmetic (also the reference every rollup must equal: chalicelib/metering/consumption.py computes from
raw readings with it, tests/api/test_consumption.py checks both against a naive model):
  - registers become integer µkWh (they are stored rounded to the µkWh, so this is exact);
  - the energy used up to a reading is the sum of the register's non-negative steps (a step down, or a
    step into a reading marked as the start of a new register series, adds nothing; counting resumes
    from the new value); between two readings it grows linearly, rounded half up to the µkWh; before
    the first and after the last reading it is unknown;
  - a period [start, end] uses E(min(end, last)) - E(max(start, first)), None when that is empty;
    readings counted are those with start <= t < end; demand intervals step 900 s from the
    period's start (local :00/:15/:30/:45) and count when E is known at both ends.
Local hours start on quarter hours from local midnight (days.hour_starts), so a day's figures are its
hours' combined (energies add, counts add, peaks max), exactly.

Items (ReadingsTable, their own partition so the readings' queries never see them): key
meter = "ROLLUP#<project>#<meter>", day = local month "YYYY-MM";
  - r: the version, for optimistic writes (as the day items' n);
  - v: a header (meter id uint64, year uint16, month, bytes per integer w = 8 or 16, the zone's name whose
    local days these are) and 31 day records (day 1..31) of flags (bit 0: energy known), count (uint32),
    energy and peak (signed little-endian w-byte integers, µkWh; peak -1 when no demand interval is known);
  - h: the month's local hours (days.hour_starts of the month, in order; 743 to 745): a header (w = 4, 8
    or 16, the first hour kept hs, how many follow: uint8, uint16, uint16) and one record per hour from hs
    on: count (uint16), energy and peak (signed w-byte integers, -1: unknown). Absent in items written
    before hours were kept; hs > 0 when such an item was given hours from a day on;
  - o: only in the month of the meter's open hour (below): that hour's start, the reading before it
    (epoch, -1 if none, and value) and whether all of its readings known then were in hot items.
~1 KB at the start of a month, ~8 KB at its end (w = 4); a meter-year is 12 or 13 items.

**The open hour.** A meter's readings arrive minute by minute into the local hour of its last reading;
rewriting its month item for each of them would cost what the readings cost. So the hour records are
written when an hour closes (the first reading of a later hour) or when a reading changes a closed one
(a backfill, a late reading): POST /data refreshes a meter's rollups unless every reading it stored lies
after the meter's latest_time in latest_time's local hour (meters: latest_time is written whenever a
reading starts a new hour, after the rollups). That hour is the **open hour**: its figures are computed at
read time from the readings (the hot items of its UTC hours and the reading before it kept in o: one or
two items read by key per meter), the hours before it come from h, and the hours after it hold nothing.
"""
import bisect
import functools
import struct
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from datetime import date, timedelta
from decimal import Decimal
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from chalicelib.metering import days, readings
from chalicelib.metering.days import each, local_day, midnight
from chalicelib.metering.readings import Entry
from chalicelib.platform import clock, db
from chalicelib.platform.db import Item
from chalicelib.platform.errors import Conflict
from chalicelib.tables import meters_table, readings_table

SLOT = 900                  # seconds in a demand interval
DAYS_PER_ITEM = 31
ATTEMPTS = 8
CLUSTER_GAP = 2 * 86400     # readings of one batch further apart than this are refreshed as separate spans
_HEAD = struct.Struct("<BI")              # a day's flags and count
_RECORD = struct.Struct("<BIqq")          # a day: flags, count, energy, peak (8-byte integers)
_HEADER = struct.Struct("<QHBBB")         # meter id, year, month, integer width, zone name length
_HOURS = struct.Struct("<BHH")            # h: integer width, first hour kept, records
_HOUR = {4: struct.Struct("<Hii"), 8: struct.Struct("<Hqq")}   # an hour: count, energy, peak
_OPEN = struct.Struct("<qqd?")            # o: open hour's start, reading before it (epoch or -1, value), clean


class Summary(NamedTuple):
    """What a span of time (a local hour or day, or any [start, end)) holds: the energy used (µkWh, None when
    unknown), the readings counted, and the highest 15-minute energy (µkWh, None when none is known)."""

    energy: int | None
    counted: int
    peak: int | None


NOTHING = Summary(None, 0, None)   # a span with no reading and no known energy


def micro(value: float) -> int:
    """A stored register (float, rounded to the µkWh at ingest) as integer µkWh, exactly.

    Below 1e9 kWh the float product is within 0.25 µkWh of the stored decimal, so rounding it is
    exact (and 5x cheaper than Decimal); larger registers go through Decimal.
    """
    if -1e9 < value < 1e9:
        return round(value * 1e6)
    return int(Decimal(repr(value)).scaleb(6))


class Curve:
    """Energy used as a function of time over a meter's readings (sorted (epoch, value, reset) entries).

    The readings must include the nearest ones outside the span asked about (readings.around), so
    that the first and last here are the meter's first and last wherever history begins or ends.
    """

    def __init__(self, points: Sequence[Entry]) -> None:
        self.times = [t for t, _v, _r in points]
        self.values = [v for _t, v, _r in points]
        self.cum: list[int] = []
        total, previous = 0, None
        for _t, value, reset in points:
            register = micro(value)
            if previous is not None and register > previous and not reset:
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


def combine(summaries: Iterable[Summary]) -> Summary:
    """A span's Summary from its parts' (hours of a day, days of a month): energies add (None when none is
    known), counts add, peaks max."""
    energy: int | None = None
    peak: int | None = None
    count = 0
    for part_energy, part_count, part_peak in summaries:
        if part_energy is not None:
            energy = part_energy if energy is None else energy + part_energy
        count += part_count
        if part_peak is not None and (peak is None or part_peak > peak):
            peak = part_peak
    return Summary(energy, count, peak)


# ---- local hours --------------------------------------------------------------------------------------

def _month(day: date) -> str:
    return f"{day.year:04d}-{day.month:02d}"


def _month_days(month: str) -> tuple[date, date]:
    first = date(int(month[:4]), int(month[5:7]), 1)
    return first, date(first.year + first.month // 12, first.month % 12 + 1, 1) - timedelta(days=1)


@functools.lru_cache(maxsize=1024)
def month_hours(month: str, zone_name: str) -> tuple[int, ...]:
    """Epochs at which each local hour of a local month starts (days.hour_starts), then the month's end."""
    return tuple(days.hour_starts(*_month_days(month), ZoneInfo(zone_name)))


def _index(month: str, zone: ZoneInfo, start: int) -> int:
    """The position of the local hour starting at start among its month's hours."""
    return bisect.bisect_left(month_hours(month, zone.key), start)


def _hour_end(start: int, zone: ZoneInfo) -> int:
    hours = month_hours(_month(local_day(start, zone)), zone.key)
    return hours[bisect.bisect_right(hours, start)]


def hours_touching(low: int, high: int, zone: ZoneInfo) -> set[int]:
    """The starts of the local hours touching [low, high] (an instant on an hour's start also ends the hour
    before)."""
    found: set[int] = set()
    day = local_day(low, zone) - timedelta(days=1)
    while day <= local_day(high, zone):
        month = _month(day)
        hours = month_hours(month, zone.key)
        first = max(0, bisect.bisect_left(hours, low) - 1)
        for i in range(first, len(hours) - 1):
            if hours[i] > high:
                break
            if hours[i + 1] >= low:
                found.add(hours[i])
        day = _month_days(month)[1] + timedelta(days=1)
    return found


def open_hour(meter: Item, zone: ZoneInfo) -> tuple[int, int] | None:
    """(start, end) of the meter's open hour: the local hour of the latest_time its item keeps, or None."""
    latest = meter.get("latest_time")
    if latest is None:
        return None
    return _containing(int(latest), zone)


def _containing(epoch: int, zone: ZoneInfo) -> tuple[int, int]:
    hours = month_hours(_month(local_day(epoch, zone)), zone.key)
    i = bisect.bisect_right(hours, epoch) - 1
    return hours[i], hours[i + 1]


# ---- the stored month items -----------------------------------------------------------------------------

class _Open(NamedTuple):
    """o: the open hour's start, the reading before it (None: none), and whether every reading of the hour
    known when it was written was in hot items (then its readings are read from the hot items alone)."""

    start: int
    anchor: tuple[int, float] | None
    clean: bool


class _Month:
    """A month item as read: whose and which month, its zone, version (None: not stored), day records, and
    its hour records (hs: the first hour kept; None when the item has no hours)."""

    def __init__(self, meter_id: int, month: str, zone_name: str, version: int | None,
                 day_records: dict[int, Summary], hours_raw: bytes | None, opened: _Open | None) -> None:
        self.meter_id, self.month, self.zone_name, self.version = meter_id, month, zone_name, version
        self.days = day_records
        self._hours_raw = hours_raw
        self._hours: dict[int, Summary] | None = None
        self.hs: int | None = None if hours_raw is None else _HOURS.unpack_from(hours_raw)[1]
        self.opened = opened

    @property
    def hours(self) -> dict[int, Summary]:
        if self._hours is None:
            self._hours = _unpack_hours(self._hours_raw) if self._hours_raw is not None else {}
        return self._hours

    def covers(self, index: int, zone: ZoneInfo) -> bool:
        """True when this item's hour records are right for the hour at index (else: from the readings)."""
        return self.zone_name == zone.key and self.hs is not None and index >= self.hs


def _bytes(value: Any) -> bytes:
    return bytes(getattr(value, "value", value))   # boto3 wraps binary values in Binary


def _parse(item: Item) -> _Month:
    meter_id, month, zone_name, day_records = _unpack_days(item["v"])
    hours_raw = _bytes(item["h"]) if "h" in item else None
    opened = None
    if "o" in item:
        start, anchor_t, anchor_v, clean = _OPEN.unpack(_bytes(item["o"]))
        opened = _Open(start, None if anchor_t < 0 else (anchor_t, anchor_v), clean)
    return _Month(meter_id, month, zone_name, item.get("r"), day_records, hours_raw, opened)


def _pack_open(opened: _Open) -> bytes:
    anchor = opened.anchor or (-1, 0.0)
    return _OPEN.pack(opened.start, anchor[0], anchor[1], opened.clean)


def _width(values: Iterable[int]) -> int:
    top = max(values, default=0)
    return 4 if top < 2 ** 31 else 8 if top < 2 ** 63 else 16


def _pack_days(meter_id: int, month: str, zone_name: str, records: Mapping[int, Summary]) -> bytes:
    """v: header (meter id, year, month, integer width, zone) and 31 day records."""
    width = 8 if _width(max(e or 0, p or 0) for e, _c, p in records.values()) <= 8 else 16
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


def _unpack_days(value: Any) -> tuple[int, str, str, dict[int, Summary]]:
    """(meter id, month, zone name, {day of the month: Summary}) of a v attribute (days with nothing left out)."""
    packed = _bytes(value)
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
    day_records = {index: Summary(energy if flags & 1 else None, count, None if peak < 0 else peak)
                   for index, (flags, count, energy, peak) in enumerate(records, start=1) if flags or count or peak >= 0}
    return meter_id, f"{year:04d}-{month:02d}", zone_name, day_records


def _pack_hours(hs: int, records: Mapping[int, Summary]) -> bytes:
    """h: header (integer width, first hour kept, records) and a record per hour from hs to the last kept."""
    top = max(records, default=hs - 1)
    width = _width(max(e or 0, p or 0) for e, _c, p in records.values())
    parts = [_HOURS.pack(width, hs, top - hs + 1)]
    for index in range(hs, top + 1):
        energy, count, peak = records.get(index, NOTHING)
        energy, peak = -1 if energy is None else energy, -1 if peak is None else peak
        if width in _HOUR:
            parts.append(_HOUR[width].pack(count, energy, peak))
        else:
            parts.append(count.to_bytes(2, "little") + energy.to_bytes(width, "little", signed=True)
                         + peak.to_bytes(width, "little", signed=True))
    return b"".join(parts)


def _unpack_hours(packed: bytes) -> dict[int, Summary]:
    width, hs, length = _HOURS.unpack_from(packed)
    if width in _HOUR:
        rows: Iterable[tuple[int, int, int]] = _HOUR[width].iter_unpack(
            packed[_HOURS.size:_HOURS.size + length * _HOUR[width].size])
    else:
        size = 2 + 2 * width
        rows = [(int.from_bytes(packed[at:at + 2], "little"),
                 int.from_bytes(packed[at + 2:at + 2 + width], "little", signed=True),
                 int.from_bytes(packed[at + 2 + width:at + size], "little", signed=True))
                for at in range(_HOURS.size, _HOURS.size + length * size, size)]
    return {index: Summary(None if energy < 0 else energy, count, None if peak < 0 else peak)
            for index, (count, energy, peak) in enumerate(rows, start=hs) if count or energy >= 0}


MonthItems = dict[int, dict[str, "_Month"]]     # {meter id: {local month 'YYYY-MM': its item as read}}


def _read_months(project_id: int, meter_ids: Collection[int], months: Iterable[str],
                 consistent: bool = False) -> MonthItems:
    """{meter id: {month: _Month}} of the month items stored (one BatchGetItem key per meter and month)."""
    return _read({project_id: meter_ids}, months, consistent)[project_id]


def read_months_across(wanted: Mapping[int, Collection[int]], months: Iterable[str]) -> dict[int, MonthItems]:
    """{project id: MonthItems} of many projects' meters {project id: meter ids} at once: one BatchGetItem
    per 100 keys whatever the projects (the alert evaluator's read of a message's projects), to be passed
    to hour_summaries / day_summaries (through consumption.summaries) as what they would read."""
    return _read(wanted, months, consistent=False)


def _read(wanted: Mapping[int, Collection[int]], months: Iterable[str], consistent: bool) -> dict[int, MonthItems]:
    months = list(months)
    keys = [readings_table.rollup_key(project_id, meter_id, month)
            for project_id, meter_ids in wanted.items() for meter_id in meter_ids for month in months]
    found: dict[int, MonthItems] = {project_id: {meter_id: {} for meter_id in meter_ids}
                                    for project_id, meter_ids in wanted.items()}
    projection = "#k, r, v, h, o" if consistent else "#k, v, h, o"
    for item in db.batch_get(readings_table.NAME, keys, consistent=consistent, projection=projection,
                             names={"#k": "meter"}):
        month = _parse(item)
        mine = found.get(readings_table.rollup_project(item), {})
        if month.meter_id in mine:
            mine[month.meter_id][month.month] = month
    return found


# ---- reading ------------------------------------------------------------------------------------------

class _Unknown(Exception):
    """An hour or day the rollups do not hold right (kept for another zone, before hours were kept)."""


def hour_summaries(project_id: int, chosen: Sequence[Item], first: date, last: date,
                   zone: ZoneInfo, read: MonthItems | None = None) -> dict[int, list[Summary] | None]:
    """{meter id: [Summary per local hour of days first..last]} from the rollups: the hours before each
    meter's open hour from its month items (one BatchGetItem key per meter and local month), the open hour
    from its readings, the hours after it empty. A meter whose items do not hold its hours right (kept for
    another zone, or written before hours were kept) maps to None: the caller computes it from the readings.
    read: the chosen meters' month items of these days as read_months_across gave them (else read here).
    """
    starts = days.hour_starts(first, last, zone)
    places = [(_month(local_day(start, zone)), start) for start in starts[:-1]]
    places_at = [(month, _index(month, zone, start)) for month, start in places]
    items = _read_months(project_id, [m["meter_id"] for m in chosen], months_of(first, last)) if read is None else read
    result: dict[int, list[Summary] | None] = {}
    needed: dict[int, tuple[Item, tuple[int, int]]] = {}
    for meter in chosen:
        opened = open_hour(meter, zone)
        cut = len(starts) - 1 if opened is None else bisect.bisect_left(starts, opened[0], hi=len(starts) - 1)
        try:
            result[meter["meter_id"]] = _records(items[meter["meter_id"]], places_at[:cut], zone) + \
                [NOTHING] * (len(starts) - 1 - cut)
        except _Unknown:
            result[meter["meter_id"]] = None
            continue
        if opened is not None and cut < len(starts) - 1 and starts[cut] == opened[0]:
            needed[meter["meter_id"]] = (meter, opened)
    for meter_id, summary in open_summaries(project_id, needed, items, zone).items():
        hours = result[meter_id]
        assert hours is not None
        hours[bisect.bisect_left(starts, needed[meter_id][1][0])] = summary
    return result


def _records(items: Mapping[str, _Month], places: Sequence[tuple[str, int]], zone: ZoneInfo) -> list[Summary]:
    """The Summary of each hour at places [(month, position)] from a meter's month items (none: NOTHING)."""
    found = []
    for month, index in places:
        item = items.get(month)
        if item is None:
            found.append(NOTHING)
        elif not item.covers(index, zone):
            raise _Unknown
        else:
            found.append(item.hours.get(index, NOTHING))
    return found


def _hour(items: Mapping[str, _Month], start: int, zone: ZoneInfo, opened: tuple[int, int] | None) -> Summary:
    """The Summary of the hour starting at start from a meter's month items (NOTHING from its open hour on)."""
    if opened is not None and start >= opened[0]:
        return NOTHING
    month = _month(local_day(start, zone))
    return _records(items, [(month, _index(month, zone, start))], zone)[0]


def months_of(first: date, last: date) -> list[str]:
    """The local months 'YYYY-MM' of days first..last: the month items a span's summaries read."""
    return sorted({_month(day) for day in each(first, last)})


def day_summaries(project_id: int, chosen: Sequence[Item], first: date, last: date,
                  zone: ZoneInfo, read: MonthItems | None = None) -> dict[int, dict[date, Summary] | None]:
    """{meter id: {local day: Summary}} for days first..last from the rollups (one BatchGetItem key per meter
    and local month, at most 13 a meter-year): the days before the open hour's from the day records, the
    open hour's day from the hour records before it and the open hour from the readings. A meter whose
    items were kept for another zone maps to None: the caller computes it from the raw readings. read: as
    for hour_summaries."""
    items = _read_months(project_id, [m["meter_id"] for m in chosen], months_of(first, last)) if read is None else read
    result: dict[int, dict[date, Summary] | None] = {}
    open_days: dict[int, tuple[Item, tuple[int, int]]] = {}
    for meter in chosen:
        mine = items[meter["meter_id"]]
        if any(item.zone_name != zone.key for item in mine.values()):
            result[meter["meter_id"]] = None
            continue
        opened = open_hour(meter, zone)
        open_day = None if opened is None else local_day(opened[0], zone)
        by_day: dict[date, Summary] = {}
        for day in each(first, last):
            item = mine.get(_month(day))
            if item is not None and (open_day is None or day < open_day) and day.day in item.days:
                by_day[day] = item.days[day.day]
        result[meter["meter_id"]] = by_day
        if opened is not None and open_day is not None and first <= open_day <= last:
            open_days[meter["meter_id"]] = (meter, opened)
    for meter_id, summary in _open_days(project_id, open_days, items, zone).items():
        known = result[meter_id]
        assert known is not None
        known[local_day(open_days[meter_id][1][0], zone)] = summary
    return result


def _open_days(project_id: int, wanted: Mapping[int, tuple[Item, tuple[int, int]]],
               items: Mapping[int, Mapping[str, _Month]], zone: ZoneInfo) -> dict[int, Summary]:
    """{meter id: the Summary of the day of its open hour}: the hours before the open hour from the hour
    records and the open hour from the readings, or the whole day from the readings where the records do
    not hold those hours (an item written before hours were kept, or none: history from before rollups),
    never the open hour alone as if it were the day."""
    result: dict[int, Summary] = {}
    from_hours: dict[int, list[Summary]] = {}
    raw: dict[date, list[int]] = {}
    for meter_id, (_meter, (start, _end)) in wanted.items():
        day = local_day(start, zone)
        try:
            if _month(day) not in items[meter_id]:
                raise _Unknown   # no month item (history from before rollups): the whole day from the readings
            from_hours[meter_id] = [_hour(items[meter_id], hour, zone, (start, _end))
                                    for hour in days.hour_starts(day, day, zone)[:-1] if hour < start]
        except _Unknown:
            raw.setdefault(day, []).append(meter_id)
    for meter_id, summary in open_summaries(
            project_id, {m: wanted[m] for m in from_hours}, items, zone).items():
        result[meter_id] = combine([*from_hours[meter_id], summary])
    for day, meter_ids in raw.items():
        begin, finish = midnight(day, zone), midnight(day + timedelta(days=1), zone)
        hot = {m: readings.hot_hours(wanted[m][0]) for m in meter_ids}
        for meter_id, points in readings.around_many(project_id, meter_ids, begin, finish, hot=hot).items():
            result[meter_id] = Curve(points).summary(begin, finish)
    return result


def open_summaries(project_id: int, wanted: Mapping[int, tuple[Item, tuple[int, int]]],
                   items: Mapping[int, Mapping[str, _Month]], zone: ZoneInfo) -> dict[int, Summary]:
    """{meter id: the Summary of its open hour} for {meter id: (meter item, (start, end))}, from the readings.

    Where the month item's o is this hour's and the hour's readings can only be in hot items (every UTC
    hour it overlaps is marked on the meter item and still live, and o says none was elsewhere), they are
    its hot items and the reading o keeps before it: one BatchGetItem key per UTC hour. Otherwise the
    readings of the hour and its neighbours are read as any span's (day items and hot items by key)."""
    now = clock.now()
    clean: dict[int, tuple[_Open, list[str]]] = {}
    for meter_id, (meter, (start, end)) in wanted.items():
        item = items[meter_id].get(_month(local_day(start, zone)))
        hours = _utc_hours(start, end, now)
        marked = readings.hot_hours(meter)
        if item is not None and item.opened is not None and item.opened.start == start \
                and item.opened.clean and all(h in marked and readings.live(h, now) for h in hours):
            clean[meter_id] = (item.opened, hours)
    result: dict[int, Summary] = {}
    hot = readings.hot_entries(project_id, {m: hours for m, (_o, hours) in clean.items()})
    for meter_id, (opened, _hours) in clean.items():
        anchor = [] if opened.anchor is None else [(*opened.anchor, False)]
        start, end = wanted[meter_id][1]
        result[meter_id] = Curve([*anchor, *hot[meter_id]]).summary(start, end)
    by_span: dict[tuple[int, int], list[int]] = {}
    for meter_id, (_meter, span) in wanted.items():
        if meter_id not in clean:
            by_span.setdefault(span, []).append(meter_id)
    for (start, end), meter_ids in by_span.items():
        hot_marks = {m: readings.hot_hours(wanted[m][0]) for m in meter_ids}
        for meter_id, points in readings.around_many(project_id, meter_ids, start, end, hot=hot_marks).items():
            result[meter_id] = Curve(points).summary(start, end)
    return result


def _utc_hours(start: int, end: int, now: float) -> list[str]:
    """The UTC hours (sort keys) overlapping [start, end) that may hold readings by now (a reading may be
    FUTURE_TOLERANCE ahead)."""
    limit = min(end, int(now) + readings.FUTURE_TOLERANCE + 1)
    return [readings.hour_of(moment) for moment in range(start - start % 3600, limit, 3600)]


# ---- maintenance at ingest ----------------------------------------------------------------------------

class Plan(NamedTuple):
    """What a POST /data stored of one meter: its readings' instants (new or duplicates), the meter item's
    latest_time before it (None: none), and its latest reading after it."""

    times: list[int]
    latest: int | None
    newest: int


def needs_refresh(latest: int | None, times: Iterable[int], zone: ZoneInfo) -> bool:
    """False when every instant lies after latest in latest's local hour (the open hour, whose figures come
    from the readings at read time): the steady state, one reading a minute, writes no rollup."""
    if latest is None:
        return True
    start, end = _containing(latest, zone)
    return not all(latest < t < end for t in times)


class _Readings(NamedTuple):
    """What a refresh read of a meter's readings: over the window (start, end) of its hours, with the
    neighbours outside, and the instants of those found in day items (not hot items)."""

    window: tuple[int, int]
    points: list[Entry]
    in_days: set[int]


def refresh_many(project_id: int, zone: ZoneInfo, plans: Mapping[int, Plan], hot: Mapping[int, Collection[str]]) -> None:
    """Bring the rollups of the meters of one request up to date after readings were stored (new or not).

    A reading changes the energy between its neighbours (interpolation across a gap, a history that now
    begins or ends elsewhere) and its own hour's count, so every local hour touching [left neighbour, right
    neighbour] is recomputed from the readings, and so are the hours from the open hour before the request
    to the one after it (they close). Items are read before the readings and written conditionally on their
    version, so a concurrent refresh of the same month makes the write fail and this one reads again (as
    the day items' writers do: the readings are read after the versions, never taken from what the request
    read before, which another request may have changed since). The first reads are batched across the
    meters: one BatchGetItem of every meter's month items, then their readings by key; the meters are then
    written at once (db.in_parallel). hot: {meter id: hours that may have a hot item}.
    """
    hours = {meter_id: _planned(plan, zone) for meter_id, plan in plans.items()}
    months = {_month(local_day(h, zone)) for planned in hours.values() for h in planned}
    stored = _read_months(project_id, list(plans), sorted(months), consistent=True)
    points = _window_readings(project_id, zone, hours, hot)
    outcomes = db.in_parallel([
        functools.partial(_refresh, project_id, zone, m, plans[m], hours[m], hot[m], (stored[m], points[m]))
        for m in sorted(plans)])
    db.raise_first(outcomes)


def _planned(plan: Plan, zone: ZoneInfo) -> set[int]:
    """The local hours a plan touches: each cluster's, those from the open hour before to the one after, and
    the open hour itself when it moves or its o may (a reading in the hour before it)."""
    hours: set[int] = set()
    for cluster in _clusters(sorted(set(plan.times))):
        hours |= hours_touching(cluster[0], cluster[-1], zone)
    opened = _containing(plan.newest, zone)[0]
    moved = plan.latest is None or _containing(plan.latest, zone)[0] != opened
    if plan.latest is not None and moved:
        hours |= hours_touching(plan.latest, plan.newest, zone)
    if moved or any(h >= _containing(opened - 1, zone)[0] for h in hours):
        hours.add(opened)
    return hours


def _clusters(times: list[int]) -> Iterator[list[int]]:
    if not times:
        return
    cluster = [times[0]]
    for epoch in times[1:]:
        if epoch - cluster[-1] > CLUSTER_GAP:
            yield cluster
            cluster = []
        cluster.append(epoch)
    yield cluster


def _window(hours: Collection[int], zone: ZoneInfo) -> tuple[int, int]:
    return min(hours), _hour_end(max(hours), zone)


def _window_readings(project_id: int, zone: ZoneInfo, hours: Mapping[int, set[int]],
                     hot: Mapping[int, Collection[str]]) -> dict[int, _Readings]:
    """{meter id: its readings over the window of its hours}: the meters with the same window read together."""
    windows: dict[tuple[int, int], list[int]] = {}
    for meter_id, planned in hours.items():
        windows.setdefault(_window(planned, zone), []).append(meter_id)
    found = {}
    for (start, end), meter_ids in windows.items():
        marks, in_days = {m: hot[m] for m in meter_ids}, dict[int, set[int]]()
        for meter_id, points in readings.around_many(project_id, meter_ids, start, end, hot=marks,
                                                     in_days=in_days).items():
            found[meter_id] = _Readings((start, end), points, in_days.get(meter_id, set()))
    return found


def _refresh(project_id: int, zone: ZoneInfo, meter_id: int, plan: Plan, hours: set[int], hot: Collection[str],
             prefetched: tuple[dict[str, _Month], _Readings] | None) -> None:
    """Recompute one meter's hours, reading again (and more hours) until its writes hold; 409 after ATTEMPTS."""
    for _attempt in range(ATTEMPTS):
        try:
            wider = _recompute(project_id, zone, meter_id, hours, plan, hot, prefetched)
        except db.ConditionFailed:
            prefetched = None
            continue
        if not wider:
            return
        hours = hours | wider   # a neighbour lies beyond the hours read, or an item needs more: read them too
        prefetched = None
    raise Conflict("the meter's consumption totals were being updated by other requests: send the batch "
                   "again (the readings are stored; they will come back as duplicates)")


def _recompute(project_id: int, zone: ZoneInfo, meter_id: int, hours: set[int], plan: Plan,
               hot: Collection[str], prefetched: tuple[dict[str, _Month], _Readings] | None) -> set[int]:
    """Recompute and write the given local hours (and the days they fall in); first check that every hour
    between each cluster and its neighbours, and every hour its month items need, is among them, else
    return the missing hours unwritten. prefetched: what refresh_many read (its window may be another)."""
    months = sorted({_month(local_day(h, zone)) for h in hours})
    if prefetched is not None:
        stored = prefetched[0]
    else:
        stored = _read_months(project_id, [meter_id], months, consistent=True)[meter_id]
    opened = _containing(plan.newest, zone)
    needed = _needed_hours(stored, hours, zone, opened)
    if not needed <= hours:
        return needed - hours
    window = _window(hours, zone)
    if prefetched is not None and prefetched[1].window == window:
        points, in_days = prefetched[1].points, prefetched[1].in_days
    else:
        found: dict[int, set[int]] = {}
        points = readings.around_many(project_id, [meter_id], *window, hot={meter_id: hot}, in_days=found)[meter_id]
        in_days = found.get(meter_id, set())
    curve = Curve(points)
    wider = _neighbour_hours(curve, _clusters(sorted(set(plan.times))), zone)
    if not wider <= hours:
        return wider - hours
    open_month = _month(local_day(opened[0], zone))
    state: _Open | None
    if opened[0] in hours:   # the window covers the open hour: its o as it is now
        state = _Open(opened[0], _anchor(curve, opened[0]), not any(opened[0] <= t < opened[1] for t in in_days))
    else:                    # a backfill elsewhere: the open hour's o stays as it was
        state = stored[open_month].opened if open_month in stored else None
    by_month = _by_month(hours, zone)
    outcomes = db.in_parallel([
        functools.partial(_write_month, project_id, zone, meter_id, month, by_month[month], stored.get(month), curve,
                          state if month == open_month else None)
        for month in months])
    db.raise_first(outcomes)
    return set()


def _by_month(hours: Iterable[int], zone: ZoneInfo) -> dict[str, list[int]]:
    """{local month: its hours among hours, in order}: grouped once, as a backfill across a long gap (a box
    whose clock read 1970) touches hundreds of thousands of hours in hundreds of months."""
    grouped: dict[str, list[int]] = {}
    for hour in sorted(hours):
        grouped.setdefault(_month(local_day(hour, zone)), []).append(hour)
    return grouped


def _needed_hours(stored: Mapping[str, _Month], hours: set[int], zone: ZoneInfo, opened: tuple[int, int]) -> set[int]:
    """The hours to recompute so that every month item written holds right hour records from its first
    kept hour on: a month kept for another zone whole; one written before hours were kept, from the first
    day touched to the open hour (or the month's end); one kept from hs, from the first day touched to hs."""
    needed = set(hours)
    by_month = _by_month(hours, zone)
    for month, item in stored.items():
        mine = by_month.get(month)
        if not mine:
            continue
        all_hours = month_hours(month, zone.key)
        day_start = midnight(local_day(min(mine), zone), zone)
        if item.zone_name != zone.key:
            needed.update(all_hours[:-1])
        elif item.hs is None:
            needed.update(h for h in all_hours[:-1] if day_start <= h <= opened[0])
        elif _index(month, zone, min(mine)) < item.hs:
            needed.update(h for h in all_hours[:item.hs] if h >= day_start)
    return needed


def _neighbour_hours(curve: Curve, clusters: Iterable[list[int]], zone: ZoneInfo) -> set[int]:
    """The local hours from each cluster's left neighbour to its right one (the readings read include
    each cluster's neighbours, however far)."""
    wider: set[int] = set()
    for cluster in clusters:
        left = bisect.bisect_left(curve.times, cluster[0])
        right = bisect.bisect_right(curve.times, cluster[-1])
        wider |= hours_touching(curve.times[left - 1] if left > 0 else cluster[0],
                                curve.times[right] if right < len(curve.times) else cluster[-1], zone)
    return wider


def _anchor(curve: Curve, start: int) -> tuple[int, float] | None:
    """The reading before start (epoch, register), for the open hour's o."""
    i = bisect.bisect_left(curve.times, start)
    return None if i == 0 else (curve.times[i - 1], curve.values[i - 1])


def _write_month(project_id: int, zone: ZoneInfo, meter_id: int, month: str, mine: list[int],
                 known: _Month | None, curve: Curve, opened: _Open | None) -> None:
    """Write a month item with its hours (mine, in order) recomputed from curve, the days they fall in combined
    from the hour records, and o (opened: only in the open hour's month); conditional on the version read
    (a new item on its absence); no write when nothing changed (a retried batch)."""
    all_hours = month_hours(month, zone.key)
    same_zone = known is not None and known.zone_name == zone.key
    records = dict(known.hours) if same_zone and known is not None and known.hs is not None else {}
    day_records = dict(known.days) if same_zone and known is not None else {}
    hs = 0 if known is None or not same_zone else known.hs if known.hs is not None else len(all_hours)
    for start in mine:
        index = _index(month, zone, start)
        summary = curve.summary(start, all_hours[index + 1])
        hs = min(hs, index)
        if summary == NOTHING:
            records.pop(index, None)
        else:
            records[index] = summary
    for day in sorted({local_day(h, zone) for h in mine}):
        combined = combine(records.get(i, NOTHING) for i in _day_indexes(month, zone.key, day))
        if combined == NOTHING:
            day_records.pop(day.day, None)
        else:
            day_records[day.day] = combined
    attributes = {"v": _pack_days(meter_id, month, zone.key, day_records), "h": _pack_hours(hs, records)}
    if opened is not None:
        attributes["o"] = _pack_open(opened)
    if known is not None and _unchanged(known, attributes, zone):
        return   # nothing changed (a retried batch): no write
    item = {**readings_table.rollup_key(project_id, meter_id, month), **attributes,
            "r": 1 if known is None or known.version is None else known.version + 1}
    if known is None or known.version is None:
        db.put(readings_table.NAME, item, condition="attribute_not_exists(meter)")
    else:
        db.put(readings_table.NAME, item, condition="#r = :r", names={"#r": "r"},
               expression_values={":r": known.version})


def _unchanged(known: _Month, attributes: Mapping[str, bytes], zone: ZoneInfo) -> bool:
    """True when the item as read already holds these attributes (its o included, or its lack)."""
    if known.zone_name != zone.key or known.hs is None:
        return False
    was_open = None if known.opened is None else _pack_open(known.opened)
    return (attributes["v"] == _pack_days(known.meter_id, known.month, known.zone_name, known.days)
            and _unpack_hours(attributes["h"]) == known.hours
            and _HOURS.unpack_from(attributes["h"])[1] == known.hs and attributes.get("o") == was_open)


@functools.lru_cache(maxsize=4096)
def _day_indexes(month: str, zone_name: str, day: date) -> range:
    """The positions of a local day's hours among its month's."""
    hours = month_hours(month, zone_name)
    zone = ZoneInfo(zone_name)
    start = bisect.bisect_left(hours, midnight(day, zone))
    return range(start, bisect.bisect_left(hours, midnight(day + timedelta(days=1), zone)))


def rebuild(project_id: int, zone: ZoneInfo, meter_id: int) -> None:
    """Compute a meter's rollups over its whole history from the raw readings, a month at a time.

    For history stored before rollups existed, or before they kept hours (and to repair them after the
    project's zone changed): ingest keeps them current afterwards. Cost: one pass over the meter's day items.
    """
    first = readings.after(project_id, meter_id, -1)
    last = readings.before(project_id, meter_id, 2 ** 37)
    if first is None or last is None:
        return
    meter = db.get(meters_table.NAME, meters_table.meter_key(project_id, meter_id)) or {}
    newest = max(last.epoch, int(meter.get("latest_time") or 0))
    plan = Plan([], None, newest)
    hot = readings.hot_hours(meter)
    day, end = local_day(first.epoch, zone) - timedelta(days=1), local_day(last.epoch, zone)
    day = _month_days(_month(day))[0]   # the first month whole: its hours before the history hold nothing
    while day <= end:
        month_end = min(end, _month_days(_month(day))[1])
        hours = {h for h in month_hours(_month(day), zone.key)[:-1]
                 if midnight(day, zone) <= h < midnight(month_end + timedelta(days=1), zone)}
        if _month(local_day(newest, zone)) == _month(day):
            hours.add(_containing(newest, zone)[0])
        _refresh(project_id, zone, meter_id, plan, hours, hot, None)
        day = month_end + timedelta(days=1)
