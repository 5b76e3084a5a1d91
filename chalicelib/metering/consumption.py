"""GET /consumption (and /file?period=…): energy used per meter per hour, day, week, month or year of
the project's local calendar, with Coverage and 15-minute PeakDemand.

Every period comes from the rollups (chalicelib/metering/rollups.py: one item per meter and local month
holding its hours and days, whatever the history, and each meter's open hour from its latest readings);
from_readings computes the same from the raw readings, for meters whose rollups were kept for another
zone or before they kept hours. Both use the arithmetic of rollups.Curve, so the answers are the same to
the µkWh (tests/api/test_consumption.py checks it on random histories).
"""
import urllib.parse
from collections.abc import Callable, Collection, Hashable, Iterator, Sequence
from datetime import date, datetime, timedelta
from fractions import Fraction
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from chalicelib.identity import accounts
from chalicelib.metering import days, meters, readings, rollups
from chalicelib.platform import answers
from chalicelib.platform.db import Item
from chalicelib.platform.errors import BadRequest

PERIODS = ("hour", "day", "week", "month", "year")
MAX_HOUR_DAYS = 31
FIELDS = ("MeterParam", "PeriodStart", "PeriodEnd", "value", "Coverage", "PeakDemand")
_GROUP: dict[str, Callable[[date], Hashable]] = {"day": lambda d: d, "week": lambda d: d - timedelta(days=d.weekday()),
          "month": lambda d: (d.year, d.month), "year": lambda d: d.year}


class Use(NamedTuple):
    """Energy used in a period, for charts: the period's start (epoch seconds) and its kWh (None: unknown)."""

    start: int
    kwh: float | None


def parse_period(period: object, default: str = "day") -> str:
    """The period asked for (case-insensitive), or BadRequest saying which ones exist."""
    if period is None:
        return default
    if not isinstance(period, str) or period.strip().lower() not in PERIODS:
        raise BadRequest(f"period must be one of {', '.join(PERIODS)}, not {str(period)[:40]!r}")
    return period.strip().lower()


def days_allowed(period: str) -> int:
    """The most days a request of this period may span."""
    return MAX_HOUR_DAYS if period == "hour" else days.MAX_DAYS


# Seconds one row costs to compute, reading included (bench/bench_answer_bounds.py, in-process moto, 5-minute
# readings): an hour as measured from the raw day items of its days (hours come from the rollups now: an upper
# bound), longer periods from the rollups.
SECONDS_PER_ROW = {"hour": 2.5e-4, "day": 6e-5}


def consumption(project_id: int, start: object, end: object, period: object = None,
                meter_name: object = None) -> answers.Bounded:
    """GET /consumption: one row per meter and period, in order of period then meter id; checked against
    the answer's bounds (periods x meters) before any reading is read."""
    chosen_period = parse_period(period)
    zone = accounts.project_zone(project_id)
    first, last, _begin, _finish = days.day_range(days.parse_day("start", start), days.parse_day("end", end),
                                                  zone, max_days=days_allowed(chosen_period))
    chosen = ([meters.find(project_id, name=meter_name, field="meter")] if meter_name is not None
              else meters.all_meters(project_id))
    spans = periods(first, last, zone, chosen_period)
    one = f"&meter={urllib.parse.quote(chosen[0]['name'])}" if meter_name is not None else ""
    return answers.Bounded(
        rows=len(spans) * len(chosen), sample=sample_row(chosen, spans, zone),
        build=lambda: list(rows(project_id, chosen, zone, first, last, chosen_period)),
        instead=f"ask for fewer days{' or one meter (meter=)' if not one else ''}, or for the same rows as a file: "
                f"GET /file?start={first.isoformat()}&end={last.isoformat()}&period={chosen_period}{one}&type={{type}}",
        seconds_per_row=seconds_per_row(chosen_period))


def seconds_per_row(period: str) -> float:
    """What one row of this period costs to compute (SECONDS_PER_ROW)."""
    return SECONDS_PER_ROW["hour" if period == "hour" else "day"]


def sample_row(chosen: Sequence[Item], spans: Sequence[tuple[int, int]], zone: ZoneInfo) -> dict[str, Any]:
    """A row at least as big as any of the chosen meters' rows over spans, in every format: the widest
    name, the stamps of a period (all the same length), numbers as long as any float's repr."""
    start, end = spans[0] if spans else (0, 0)
    return {"MeterParam": answers.widest([m["name"] for m in chosen]),
            "PeriodStart": datetime.fromtimestamp(start, zone).isoformat(),
            "PeriodEnd": datetime.fromtimestamp(end, zone).isoformat(),
            "value": answers.WIDEST_FLOAT, "Coverage": 0.998, "PeakDemand": answers.WIDEST_FLOAT}


def periods(first: date, last: date, zone: ZoneInfo, period: str) -> list[tuple[int, int]]:
    """[(start epoch, end epoch)] of the periods of local days first..last, cut to them."""
    if period == "hour":
        starts = days.hour_starts(first, last, zone)
        return list(zip(starts, starts[1:]))
    return [(days.midnight(group[0], zone), days.midnight(group[-1] + timedelta(days=1), zone))
            for group in _groups(first, last, period)]


def period_days(first: date, last: date, period: str) -> list[list[date]]:
    """The local days first..last of each period (each day its own for hours), in order: a range starting
    at one of them gives the same periods, and the same rows, as the whole."""
    return [[day] for day in days.each(first, last)] if period == "hour" else _groups(first, last, period)


def _groups(first: date, last: date, period: str) -> list[list[date]]:
    """The local days first..last grouped by period (consecutive days with the same key)."""
    key = _GROUP[period]
    groups: list[list[date]] = []
    for day in days.each(first, last):
        if groups and key(groups[-1][-1]) == key(day):
            groups[-1].append(day)
        else:
            groups.append([day])
    return groups


def summaries(project_id: int, chosen: Sequence[Item], zone: ZoneInfo, first: date, last: date, period: str,
              margin_days: int = 0, read: rollups.MonthItems | None = None) -> dict[int, list[rollups.Summary]]:
    """{meter id: [rollups.Summary per period]} for the chosen meters (their items: meters.all_meters or
    meters.find), from the rollups; from the raw readings for a meter whose rollups do not hold the range
    right. margin_days: passed to readings.around_many for the raw readings; read: the chosen meters' month
    items of these days, read already (rollups.read_months_across)."""
    result: dict[int, list[rollups.Summary]] = {}
    if period == "hour":
        for meter_id, hours in rollups.hour_summaries(project_id, chosen, first, last, zone, read).items():
            if hours is not None:
                result[meter_id] = hours
    else:
        by_day = rollups.day_summaries(project_id, chosen, first, last, zone, read)
        groups = _groups(first, last, period)
        for meter in chosen:
            known = by_day.get(meter["meter_id"])
            if known is not None:
                result[meter["meter_id"]] = [rollups.combine(known.get(day, rollups.NOTHING) for day in group)
                                             for group in groups]
    missing = [m["meter_id"] for m in chosen if m["meter_id"] not in result]
    if missing:
        result.update(from_readings(project_id, missing, zone, first, last, period, margin_days))
    return result


def hourly(project_id: int, chosen: Sequence[Item], zone: ZoneInfo, first: date,
           last: date) -> tuple[list[int], dict[int, list[rollups.Summary]]]:
    """(the epoch each local hour of local days first..last starts, {meter id: [Summary per hour]}) of the
    chosen meters: the energy, readings and highest 15-minute energy of every local hour (DST days have
    23 or 25), as GET /consumption?period=hour gives them. What bills are priced from (chalicelib/billing)."""
    return days.hour_starts(first, last, zone)[:-1], summaries(project_id, chosen, zone, first, last, "hour")


def from_readings(project_id: int, meter_ids: Collection[int], zone: ZoneInfo, first: date, last: date, period: str,
                  margin_days: int = 0) -> dict[int, list[rollups.Summary]]:
    """{meter id: summaries as summaries() gives them} computed from the raw readings: the path of a meter
    whose rollups were kept for another zone or before they kept hours, and the reference the rollups must
    equal. margin_days: passed to readings.around_many."""
    spans = periods(first, last, zone, period)
    points = readings.around_many(project_id, meter_ids, spans[0][0], spans[-1][1], margin_days)
    return {meter_id: _summaries(rollups.Curve(points[meter_id]), zone, first, last, period, spans)
            for meter_id in meter_ids}


def _summaries(curve: rollups.Curve, zone: ZoneInfo, first: date, last: date, period: str,
               spans: list[tuple[int, int]]) -> list[rollups.Summary]:
    if period == "hour":
        return [curve.summary(start, end) for start, end in spans]
    return [rollups.combine(curve.summary(days.midnight(day, zone), days.midnight(day + timedelta(days=1), zone))
                            for day in group) for group in _groups(first, last, period)]


def coverage(count: int, seconds: int, step: int) -> float:
    """Readings present / readings expected (seconds / step, the seconds between readings), at most 1,
    three decimals."""
    if count == 0 or seconds <= 0:
        return 0.0
    return float(round(min(Fraction(1), Fraction(count * step, seconds)), 3))


def rows(project_id: int, chosen: Sequence[Item], zone: ZoneInfo, first: date, last: date,
         period: str) -> Iterator[dict[str, Any]]:
    """Row dicts (FIELDS) of the chosen meters over local days first..last, in order of period then meter id."""
    spans = periods(first, last, zone, period)
    chosen = sorted(chosen, key=lambda m: m["meter_id"])
    table = summaries(project_id, chosen, zone, first, last, period)
    stamps = [(datetime.fromtimestamp(s, zone).isoformat(), datetime.fromtimestamp(e, zone).isoformat())
              for s, e in spans]
    for index, (start, end) in enumerate(spans):
        for meter in chosen:
            energy, count, peak = table[meter["meter_id"]][index]
            yield {"MeterParam": meter["name"], "PeriodStart": stamps[index][0], "PeriodEnd": stamps[index][1],
                   "value": None if energy is None else energy / 10 ** 6,
                   "Coverage": coverage(count, end - start, meters.step(meter)),
                   "PeakDemand": None if peak is None else 4 * peak / 10 ** 6}


def used(project_id: int, chosen: Sequence[Item], begin: int, finish: int, period: str, zone: ZoneInfo,
         margin_days: int = 0) -> dict[int, list[Use]]:
    """Energy used per meter and period, for charts: {meter id: [Use per period]}.

    chosen: meter items (meters.all_meters / meters.find); begin, finish: the local midnights
    days.day_range returns (finish is the midnight after the last day); period: 'hour', 'day',
    'week', 'month' or 'year'. Every period reads the rollups (≤ 13 items per meter-year, and the open
    hour's hot items); margin_days: see readings.around_many (the raw readings, where read). Same values
    as GET /consumption.
    """
    first = days.local_day(begin, zone)
    last = days.local_day(finish - 1, zone)
    spans = periods(first, last, zone, period)
    table = summaries(project_id, chosen, zone, first, last, period, margin_days)
    return {meter_id: [Use(spans[i][0], None if energy is None else energy / 10 ** 6)
                       for i, (energy, _count, _peak) in enumerate(values)]
            for meter_id, values in table.items()}
