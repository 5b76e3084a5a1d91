"""GET /graphics: pie, bar and line charts of a project's energy use, rendered to PNG and stored in S3.

What each chart shows (docs/decisions.md, "Charts"):
- line (all meters): each meter's energy used per local hour (per local day beyond 7 days);
- meter: that meter's register above its energy used per hour (or day);
- pie and bar: the energy used in the period, each kWh counted once: a meter that feeds others
  (Parent) shows as its children plus "unmetered" (its energy less theirs, when positive).
Every chart shows at most 12 series: the largest 11 and "others". Energy comes from one function,
used(), over chalicelib/metering/consumption.py (GET /consumption's definition): per day from the rollups
kept at ingest (pie and bar always, the line beyond 7 days), so a year costs ~13 small items per
meter whatever the readings; per hour from the raw day items of at most 7 days, a chunk of meters
at a time. The meter chart's register is reduced to a min/max per pixel column while it is read.
Drawing is chalicelib/outputs/chart_render.py's (matplotlib, imported only when a chart is drawn).
"""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypedDict
from zoneinfo import ZoneInfo

from chalicelib.identity import accounts
from chalicelib.metering import consumption, days, meters, readings
from chalicelib.outputs import downloads
from chalicelib.platform import clock, validation
from chalicelib.platform.db import Item
from chalicelib.platform.errors import BadRequest

if TYPE_CHECKING:   # drawing (matplotlib) is imported when a chart is drawn only
    from chalicelib.outputs.chart_render import LineSeries, UseSeries

CHART_TYPES = ("pie", "bar", "line")   # the type parameter of GET /graphics (chart_render.KINDS: what it draws)
MIN_WIDTH, MIN_HEIGHT, MAX_SIZE = 4, 3, 40     # hundreds of pixels; below 4×3 a chart is not legible
DEFAULT_DAYS = 7
HOURLY_DAYS = 7                                  # energy per hour up to 7 days, per day beyond
MAX_SERIES = 12                                  # the largest 11 and "others"


def _size(field: str, value: object, default: float, minimum: float) -> float:
    if value is None:  # an empty width= is not a number (400), as every other empty argument is
        return default
    number = validation.number(field, value)
    if not minimum <= number <= MAX_SIZE:
        raise BadRequest(f"{field} must be from {minimum} to {MAX_SIZE} (hundreds of pixels): the smallest "
                         f"legible chart is {MIN_WIDTH}×{MIN_HEIGHT} ({MIN_WIDTH * 100}×{MIN_HEIGHT * 100} px)")
    return number


def _period(start: object, end: object, zone: ZoneInfo) -> days.DayRange:
    if start is None and end is None:
        today = clock.utcnow().astimezone(zone).date()
        return days.day_range(today - timedelta(days=DEFAULT_DAYS - 1), today, zone)
    first = days.parse_day("start", start if start is not None else end)
    last = days.parse_day("end", end if end is not None else start)
    return days.day_range(first, last, zone)


# ---- energy used per bucket ----------------------------------------------------------------------

def bucket_edges(first: date, last: date, zone: ZoneInfo, bucket: str) -> list[int]:
    """Epoch seconds of the local hour ('hour') or day ('day') boundaries from the local midnight
    starting day first to the one after day last: DST days have 23 or 25 hours (GET /consumption's)."""
    if bucket == "hour":
        return days.hour_starts(first, last, zone)
    return [days.midnight(first + timedelta(days=i), zone) for i in range((last - first).days + 2)]


HOUR_CHUNK = 100    # meters read together by hour (raw day items: ~2,000 points a meter-week held at once)
DAY_CHUNK = 500     # meters read together by day (rollups: one small item per meter and month)


def used(project_id: int, chosen: Sequence[Item], edges: list[int], bucket: str,
         zone: ZoneInfo) -> Iterator[tuple[Item, list[float]]]:
    """(meter, [kWh between consecutive edges, NaN where nothing is known]) of each chosen meter, in
    order: the one place charts get energy from.

    edges: bucket_edges(..., bucket). The energy is consumption.used's (GET /consumption's definition:
    boundary registers interpolated, resets adding nothing, gaps losing nothing): by day from the
    rollups, by hour from the raw day items of the range and one UTC day each side (by key: one
    BatchGetItem per 100 meter-days, the neighbours without a Query per meter); a chunk of meters at
    a time, which bounds what is held.
    """
    slot = {start: k for k, start in enumerate(edges[:-1])}
    size = HOUR_CHUNK if bucket == "hour" else DAY_CHUNK
    for at in range(0, len(chosen), size):
        part = chosen[at:at + size]
        table = consumption.used(project_id, part, edges[0], edges[-1], bucket, zone,
                                 margin_days=1 if bucket == "hour" else 0)
        for meter in part:
            values = [math.nan] * (len(edges) - 1)
            for start, kwh in table.get(meter["meter_id"], ()):
                if kwh is not None and start in slot:
                    values[slot[start]] = kwh
            yield meter, values


# ---- hierarchy and the 12-series bound -----------------------------------------------------------

def shares(chosen: Sequence[Item], energy: Mapping[int, float | None]) -> list[tuple[str, float]]:
    """(label, kWh) of the energy used, each kWh counted once: a meter without children as itself,
    a meter feeding others (Parent) as "<name> (unmetered)", its energy less its children's when
    positive (its children appear on their own). energy: meter id → kWh (None: unknown)."""
    children: defaultdict[int, list[int]] = defaultdict(list)
    ids = {m["meter_id"] for m in chosen}
    for meter in chosen:
        if meter.get("parent_id") in ids:
            children[meter["parent_id"]].append(meter["meter_id"])
    out: list[tuple[str, float]] = []
    for meter in chosen:
        own = energy.get(meter["meter_id"])
        kids = children.get(meter["meter_id"])
        if not kids:
            if own is not None:
                out.append((meter["name"], own))
            continue
        rest = (own or 0.0) - sum(energy.get(k) or 0.0 for k in kids)
        if rest > 0:
            out.append((f"{meter['name']} (unmetered)", rest))
    return out


def largest(items: Iterable[tuple[str, float]], limit: int = MAX_SERIES) -> list[tuple[str, float]]:
    """(label, kWh) sorted largest first, at most limit: the largest limit-1 and "N others" summed."""
    items = sorted(items, key=lambda item: -item[1])
    if len(items) <= limit:
        return items
    rest = items[limit - 1:]
    return items[:limit - 1] + [(f"{len(rest)} others", sum(kwh for _, kwh in rest))]


def counted_once(chosen: Sequence[Item], ids: Collection[int]) -> list[int]:
    """The meters of ids none of whose parents (up the chain) are also in ids: summing their energy
    counts each kWh once."""
    parent = {m["meter_id"]: m.get("parent_id") for m in chosen}
    out = []
    for meter_id in ids:
        above = parent.get(meter_id)
        seen: set[int] = set()
        while above is not None and above not in ids and above not in seen:
            seen.add(above)
            above = parent.get(above)
        if above is None or above not in ids:
            out.append(meter_id)
    return out


# ---- the route -----------------------------------------------------------------------------------

class _Common(TypedDict):
    """What every drawing of one request is given (chart_render.render_png's keywords)."""

    width_px: int
    height_px: int
    tz_name: str
    bucket: str
    period: tuple[datetime, datetime]


def chart(project_id: int, kind: object = None, meter_name: object = None, width: object = None,
          height: object = None, start: object = None, end: object = None, bill: object = None) -> dict[str, Any]:
    """Render the chart asked for, store it, and return its download link ({"url", "expires"})."""
    from chalicelib.outputs import chart_render

    kind_given = kind is not None
    asked = "pie" if kind is None else kind
    asked = asked.strip().lower() if isinstance(asked, str) else asked
    if not isinstance(asked, str) or asked not in CHART_TYPES:
        raise BadRequest("type must be pie, bar or line")
    kind = asked
    width_px = int(round(_size("width", width, 16, MIN_WIDTH) * 100))
    height_px = int(round(_size("height", height, 9, MIN_HEIGHT) * 100))
    if _bill_asked(bill, kind if kind_given else None):
        return bill_chart(project_id, meter_name, width_px, height_px, start, end)
    project = accounts.get_project(project_id)
    zone = clock.zone(project.get("timezone", "UTC"))
    first, last, begin, finish = _period(start, end, zone)
    bucket = "hour" if (last - first).days + 1 <= HOURLY_DAYS else "day"
    edges = bucket_edges(first, last, zone, bucket)
    common: _Common = {"width_px": width_px, "height_px": height_px, "tz_name": zone.key, "bucket": bucket,
                       "period": (clock.local(begin, zone), clock.local(finish, zone))}
    if meter_name is not None:
        meter = meters.find(project_id, name=meter_name, field="meter")
        kind = "line"
        use = chart_render.UseSeries(meter["name"], edges, _one(used(project_id, [meter], edges, bucket, zone)))
        png = chart_render.render_png("meter", title=f"{meter['name']}: register and energy used",
                                      series=[_register(project_id, meter, begin, finish, width_px)], use=use,
                                      **common)
    elif kind == "line":
        png = chart_render.render_png("line", title=f"{project['name']}: energy used per {bucket}",
                                      series=_use_lines(project_id, meters.all_meters(project_id), edges, bucket, zone),
                                      **common)
    else:
        chosen = meters.all_meters(project_id)
        energy: dict[int, float | None] = {}   # the period's total: by day from the rollups whatever the line's bucket
        for meter, values in used(project_id, chosen, bucket_edges(first, last, zone, "day"), "day", zone):
            known = [v for v in values if not math.isnan(v)]
            energy[meter["meter_id"]] = sum(known) if known else None
        what = "share of energy used" if kind == "pie" else "energy used per meter"
        png = chart_render.render_png(kind, title=f"{project['name']}: {what}",
                                      energy=largest(shares(chosen, energy)),
                                      legend_title="Energy used, each kWh once", **common)
    key = downloads.upload_stream(project_id, "charts", f"{kind}-{first.isoformat()}-to-{last.isoformat()}.png",
                                  "image/png", [png])
    return downloads.link(key, zone)


def _one(pairs: Iterable[tuple[Item, list[float]]]) -> list[float]:
    (_meter, values), = pairs
    return values


def _register(project_id: int, meter: Item, begin: int, finish: int, width_px: int) -> LineSeries:
    """The meter's register over the period, reduced to a min and max per pixel column as it is read."""
    from chalicelib.outputs import chart_render

    reducer = chart_render.MinMaxReducer(begin, finish, width_px)
    for epoch, value in readings.series(project_id, meter["meter_id"], begin, finish):
        reducer.add(epoch, value)
    times, values = reducer.points()
    return chart_render.LineSeries(meter["name"], times, values)


def _use_lines(project_id: int, chosen: Sequence[Item], edges: list[int], bucket: str,
               zone: ZoneInfo) -> list[UseSeries]:
    """UseSeries of the largest 11 meters by energy used and one of the others (each kWh once)."""
    import numpy as np

    from chalicelib.outputs import chart_render

    rows = np.full((len(chosen), len(edges) - 1), np.nan)
    for i, (_meter, values) in enumerate(used(project_id, chosen, edges, bucket, zone)):
        rows[i] = values
    totals = np.nansum(rows, axis=1) if len(chosen) else np.zeros(0)
    order = sorted(range(len(chosen)), key=lambda i: (-totals[i], i))
    shown = order if len(order) <= MAX_SERIES else order[:MAX_SERIES - 1]
    series = [chart_render.UseSeries(chosen[i]["name"], edges, rows[i].tolist()) for i in shown
              if not np.isnan(rows[i]).all()]
    rest = order[len(shown):]
    if rest:
        once = set(counted_once(chosen, {chosen[i]["meter_id"] for i in rest}))
        picked = rows[[i for i in rest if chosen[i]["meter_id"] in once]]
        summed = np.where(np.isnan(picked).all(axis=0), np.nan, np.nansum(picked, axis=0))
        series.append(chart_render.UseSeries(f"{len(rest)} others", edges, summed.tolist()))
    return series


# ---- bills: charges per month, stacked by time-of-use period (GET /graphics?bill=1) -------------------

BILL_MONTHS = 12                     # months shown by default: this one and the 11 before


def _bill_asked(bill: object, kind: str | None) -> bool:
    """True when bill=1 asks for the bill chart (a bar chart: 400 for another type)."""
    if not validation.flag("bill", bill):
        return False
    if kind not in (None, "bar"):
        raise BadRequest("bill=1 draws bars (type=bar): charges per month stacked by time-of-use period")
    return True


def _bill_period(start: object, end: object, zone: ZoneInfo) -> days.DayRange:
    if start is None and end is None:
        today = clock.utcnow().astimezone(zone).date()
        back = today.year * 12 + today.month - BILL_MONTHS
        return days.day_range(date(back // 12, back % 12 + 1, 1), today, zone)
    return _period(start, end, zone)


def _feeding_none(every: list[Item]) -> list[Item]:
    """The meters that feed no other (no meter names them as Parent): summing their bills counts each kWh once."""
    parents = {m.get("parent_id") for m in every}
    return [m for m in every if m["meter_id"] not in parents]


def period_names(stored_tariffs: Iterable[dict]) -> dict[int, str]:
    """{energy period: its name}: the tariffs' energytoulabels where every tariff that has the period agrees."""
    seen: dict[int, set[str | None]] = {}
    for stored in stored_tariffs:
        labels = stored.get("energytoulabels") or []
        for period in range(len(stored.get("energyratestructure") or ())):
            seen.setdefault(period, set()).add(labels[period] if period < len(labels) and labels[period] else None)
    return {period: f"Energy: {names.pop()}" if len(names) == 1 and None not in names else f"Energy: period {period}"
            for period, names in seen.items()}


def bill_stacks(bill_rows: list[dict], spans: list[tuple[date, date]],
                names: dict[int, str]) -> tuple[list[str], list[tuple[str, list[float]]], str]:
    """(month labels, [(part, amount per month)], currency) of GET /bill rows summed by month: energy per
    period (names: period_names), TOU demand, flat demand, fixed, minimum; 400 for several currencies."""
    index = {first.strftime("%Y-%m"): i for i, (first, _last) in enumerate(spans)}
    parts: dict[tuple[str, int], list[float]] = {}
    currencies: set[str] = set()
    for bill_row in bill_rows:
        if bill_row["Total"] is None:
            continue
        currencies.add(bill_row["Currency"])
        month = index[bill_row["PeriodStart"][:7]]
        for line in bill_row["Energy"]:
            parts.setdefault(("energy", line["period"]), [0.0] * len(spans))[month] += line["amount"]
        for line in bill_row["Demand"]:
            if line["amount"] is not None:
                parts.setdefault((line["kind"], 0), [0.0] * len(spans))[month] += line["amount"]
        for key, field in (("fixed", "Fixed"), ("minimum", "Minimum")):
            parts.setdefault((key, 0), [0.0] * len(spans))[month] += bill_row[field]
    if len(currencies) > 1:
        raise BadRequest(f"these meters are billed in {len(currencies)} currencies ({', '.join(sorted(currencies))}): "
                         f"chart one meter (meter=) or meters of one currency")
    others = {"tou": "Demand (time of use)", "flat": "Demand (flat)", "fixed": "Fixed", "minimum": "Minimum"}
    order = {"energy": 0, "tou": 1, "flat": 2, "fixed": 3, "minimum": 4}
    stacks = [(names.get(key[1], f"Energy: period {key[1]}") if key[0] == "energy" else others[key[0]], values)
              for key, values in sorted(parts.items(), key=lambda item: (order[item[0][0]], item[0][1]))]
    return [first.strftime("%b %Y") for first, _last in spans], stacks, currencies.pop() if currencies else ""


def bill_chart(project_id: int, meter_name: object, width_px: int, height_px: int, start: object,
               end: object) -> dict[str, Any]:
    """GET /graphics?bill=1: a meter's charges per month (or the sum of the meters that feed no other),
    stacked by time-of-use period, from GET /bill's rows; stored, its download link returned."""
    from chalicelib.billing import bills, tariffs
    from chalicelib.outputs import chart_render
    from chalicelib.platform.errors import PayloadTooLarge

    project = accounts.get_project(project_id)
    zone = clock.zone(project.get("timezone", "UTC"))
    first, last, begin, finish = _bill_period(start, end, zone)
    chosen = [meters.find(project_id, name=meter_name, field="meter")] if meter_name is not None else \
        _feeding_none(meters.all_meters(project_id))
    spans = bills.months(first, last)
    if len(chosen) * len(spans) > bills.MAX_METER_MONTHS:
        raise PayloadTooLarge(f"a chart prices at most {bills.MAX_METER_MONTHS} meter-months, and this one "
                              f"has {len(chosen) * len(spans)} ({len(chosen)} meters x {len(spans)} months): chart "
                              f"one meter (meter=) or fewer months, or get the bills as a file "
                              f"(GET /file?start={first.isoformat()}&end={last.isoformat()}&bill=1)")
    tariff_of = tariffs.for_meters(project_id, chosen)
    rows = [bill_row for bill_row, _total in bills.meter_months(project_id, chosen, zone, first, last, tariff_of)]
    names = period_names(pair[1] for pair in tariff_of.values() if pair is not None)
    months, stacks, currency = bill_stacks(rows, spans, names)
    who = chosen[0]["name"] if meter_name is not None else project["name"]
    png = chart_render.render_bill_png(width_px=width_px, height_px=height_px, title=f"{who}: charges per month",
                                       tz_name=zone.key, months=months, stacks=stacks, currency=currency,
                                       period=(clock.local(begin, zone), clock.local(finish, zone)))
    key = downloads.upload_stream(project_id, "charts", f"bill-{first.isoformat()}-to-{last.isoformat()}.png",
                                  "image/png", [png])
    return downloads.link(key, zone)
