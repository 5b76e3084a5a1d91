"""GET /graphics: pie, bar and line charts of a project's energy use, rendered to PNG and stored in S3.

What each chart shows (docs/decisions.md, "Charts"):
- line: the energy used per local hour (per local day beyond 7 days) of the project's meters, or of
  a chosen group (meter=a&meter=b);
- one meter (meter=a): its register above its energy used per hour (or day);
- pie and bar: the energy used in the period by the project's meters, or a chosen group.
Pie, bar and line count each kWh once, and count it the same way: a meter that feeds others (Parent)
shows as its children plus "<name> (unmetered)" (its energy less theirs, when positive), and more
than 12 such shares show as the largest 11 and "N others". A period whose energy was interpolated
across a gap in the readings is estimated; one cut by now, or by where a meter's readings begin or
end, is partial: both are drawn apart from measured ones (chart_render).
Energy comes from one function, used(), over consumption.summaries (GET /consumption's definition
and Coverage): per day from the rollups kept at ingest (pie and bar always, the line beyond 7 days),
so a year costs ~13 small items per meter whatever the readings; per hour from the raw day items of
at most 7 days, a chunk of meters at a time. The meter chart's register is reduced to a min/max per
pixel column while it is read. Drawing is chalicelib/outputs/chart_render.py's (matplotlib, imported
only when a chart is drawn).
"""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple, TypedDict
from zoneinfo import ZoneInfo

from chalicelib.identity import accounts
from chalicelib.metering import consumption, days, meters, readings, rollups
from chalicelib.outputs import downloads
from chalicelib.outputs.chart_render import ESTIMATED, MEASURED, PARTIAL   # constants: draws nothing
from chalicelib.platform import clock, validation
from chalicelib.platform.db import Item
from chalicelib.platform.errors import BadRequest, NotFound

if TYPE_CHECKING:   # drawing (matplotlib) is imported when a chart is drawn only
    import numpy as np

    from chalicelib.outputs.chart_render import LineSeries, UseSeries

CHART_TYPES = ("pie", "bar", "line")   # the type parameter of GET /graphics (chart_render.KINDS: what it draws)
MIN_SIZE, MAX_SIZE = 1, 40           # hundreds of pixels; small charts drop text (chart_render.DETAILS)
DEFAULT_DAYS = 7
HOURLY_DAYS = 7                                  # energy per hour up to 7 days, per day beyond
MAX_SERIES = 12                                  # the largest 11 and "others"
MAX_GROUP = 1000                                 # meter names in one request (meter=a&meter=b…)


def _size(field: str, value: object, default: float) -> float:
    if value is None:  # an empty width= is not a number (400), as every other empty argument is
        return default
    number = validation.number(field, value)
    if not MIN_SIZE <= number <= MAX_SIZE:
        raise BadRequest(f"{field} must be from {MIN_SIZE} to {MAX_SIZE} (hundreds of pixels: "
                         f"{MIN_SIZE} is {MIN_SIZE * 100} px, {MAX_SIZE} is {MAX_SIZE * 100} px)")
    return number


def _period(start: object, end: object, zone: ZoneInfo) -> days.DayRange:
    if start is None and end is None:
        today = clock.utcnow().astimezone(zone).date()
        return days.day_range(today - timedelta(days=DEFAULT_DAYS - 1), today, zone)
    first = days.parse_day("start", start if start is not None else end)
    last = days.parse_day("end", end if end is not None else start)
    return days.day_range(first, last, zone)


def _group(meter_name: object) -> list[str] | None:
    """The meter names asked for (None: every meter). Each value is one name, commas included (a
    name may hold one): several meters are several meter= arguments."""
    if meter_name is None:
        return None
    values = list(meter_name) if isinstance(meter_name, (list, tuple)) else [meter_name]
    if len(values) > MAX_GROUP:
        raise BadRequest(f"meter: at most {MAX_GROUP} names in one chart, not {len(values)}")
    return [validation.name("meter", name) for name in values]   # as find checks one, before any lookup


# ---- energy used per bucket ----------------------------------------------------------------------

def bucket_edges(first: date, last: date, zone: ZoneInfo, bucket: str) -> list[int]:
    """Epoch seconds of the local hour ('hour') or day ('day') boundaries from the local midnight
    starting day first to the one after day last: DST days have 23 or 25 hours (GET /consumption's)."""
    if bucket == "hour":
        return days.hour_starts(first, last, zone)
    return [days.midnight(first + timedelta(days=i), zone) for i in range((last - first).days + 2)]


HOUR_CHUNK = 100    # meters read together by hour (raw day items: ~2,000 points a meter-week held at once)
DAY_CHUNK = 500     # meters read together by day (rollups: one small item per meter and month)


class Energy(NamedTuple):
    """A meter's (or a share's) energy used per bucket: kWh (NaN where nothing is known) and how
    each is known (chart_render.MEASURED, ESTIMATED or PARTIAL)."""

    values: list[float]
    quality: list[int]


def used(project_id: int, chosen: Sequence[Item], edges: list[int], bucket: str,
         zone: ZoneInfo, now: int) -> Iterator[tuple[Item, Energy]]:
    """(meter, Energy between consecutive edges) of each chosen meter, in order: the one place
    charts get energy from.

    edges: bucket_edges(..., bucket); now: epoch seconds. The energy is consumption.summaries'
    (GET /consumption's definition: boundary registers interpolated, resets adding nothing, gaps
    losing nothing): by day from the rollups, by hour from the raw day items of the range and one
    UTC day each side (by key: one BatchGetItem per 100 meter-days, the neighbours without a Query
    per meter); a chunk of meters at a time, which bounds what is held.
    """
    first, last = days.local_day(edges[0], zone), days.local_day(edges[-1] - 1, zone)
    spans = consumption.periods(first, last, zone, bucket)
    slot = {start: k for k, start in enumerate(edges[:-1])}
    size = HOUR_CHUNK if bucket == "hour" else DAY_CHUNK
    for at in range(0, len(chosen), size):
        part = chosen[at:at + size]
        table = consumption.summaries(project_id, part, zone, first, last, bucket,
                                      margin_days=1 if bucket == "hour" else 0)
        for meter in part:
            values, quality = [math.nan] * (len(edges) - 1), [MEASURED] * (len(edges) - 1)
            known = _known(meter, spans, table.get(meter["meter_id"], []), now)
            for (start, _end), (kwh, how) in zip(spans, known):
                if kwh is not None and start in slot:
                    values[slot[start]], quality[slot[start]] = kwh, how
            yield meter, Energy(values, quality)


def _known(meter: Item, spans: Sequence[tuple[int, int]], summaries: Sequence[rollups.Summary],
           now: int) -> Iterator[tuple[float | None, int]]:
    """(kWh or None, how it is known) of each span: PARTIAL when cut by now, or by where the meter's
    readings end (its latest reading inside) or begin (nothing known in the span before, and not
    every reading there); ESTIMATED when Coverage < 1 (energy interpolated across a gap); else
    MEASURED. A span that meets the readings at one instant only (they begin at its end or end at
    its start) knows nothing: None, not 0. (The first span has no span before: a history beginning
    inside it shows as ESTIMATED.)"""
    step = meters.step(meter)
    latest = meters.last(meter, meters.LATEST)
    before_known: bool | None = None       # whether the span before had energy (None: no span before)
    for (start, end), (energy, counted, _peak) in zip(spans, summaries):
        if energy is None or (before_known is False and counted == 0) or (latest is not None and latest.epoch == start):
            before_known = before_known if energy is not None else False
            yield None, MEASURED
            continue
        full = consumption.coverage(counted, end - start, step) >= 1
        if end > now or (latest is not None and start <= latest.epoch < end) or (before_known is False and not full):
            how = PARTIAL
        else:
            how = MEASURED if full else ESTIMATED
        before_known = True
        yield energy / 10 ** 6, how


# ---- hierarchy and the 12-series bound -----------------------------------------------------------

class Share(NamedTuple):
    """What one label of a chart counts, per bucket: kWh (NaN: unknown) and how each is known."""

    label: str
    values: np.ndarray
    quality: np.ndarray


def shares(chosen: Sequence[Item], energy: Mapping[int, Energy], family: Sequence[Item] = ()) -> list[Share]:
    """The energy used per bucket, each kWh counted once: a meter none of whose sub-meters (Parent)
    is chosen as itself; a meter feeding chosen ones as "<name> (unmetered)", its energy less theirs,
    when positive, per bucket (they appear on their own), or "<name> (rest)" when some of its
    sub-meters in family (the project's meters; default: chosen) are not chosen (their energy is in
    the rest). A share is as partial or estimated as the worst of its meters, per bucket.
    energy: meter id → Energy."""
    import numpy as np

    ids = {m["meter_id"] for m in chosen}
    children: defaultdict[int, list[int]] = defaultdict(list)
    for meter in family or chosen:
        children[meter.get("parent_id", -1)].append(meter["meter_id"])
    out: list[Share] = []
    for meter in chosen:
        own = energy.get(meter["meter_id"])
        if own is None:
            continue
        values, quality = np.asarray(own.values, dtype=float), np.asarray(own.quality, dtype=int)
        kids = [energy[k] for k in children.get(meter["meter_id"], ()) if k in ids and k in energy]
        if not kids:
            if np.isfinite(values).any():
                out.append(Share(meter["name"], values, quality))
            continue
        rest = np.maximum(values - np.nansum([kid.values for kid in kids], axis=0), 0.0)   # NaN stays NaN
        if np.nansum(rest) > 0:
            worst = np.max([quality, *(np.asarray(kid.quality, dtype=int) for kid in kids)], axis=0)
            what = "unmetered" if len(kids) == len(children[meter["meter_id"]]) else "rest"
            out.append(Share(f"{meter['name']} ({what})", rest, worst))
    return out


def largest(items: Iterable[Share], limit: int = MAX_SERIES) -> list[Share]:
    """Shares sorted by energy, largest first, at most limit: the largest limit-1 and "N others",
    their sum per bucket (NaN where none is known; as partial or estimated as the worst of them)."""
    import numpy as np

    items = sorted(items, key=lambda share: -float(np.nansum(share.values)))
    if len(items) <= limit:
        return items
    rest = items[limit - 1:]
    values = np.array([share.values for share in rest])
    known = np.isfinite(values)
    summed = np.where(known.any(axis=0), np.nansum(values, axis=0), np.nan)
    worst = np.max(np.where(known, np.array([share.quality for share in rest]), MEASURED), axis=0)
    return items[:limit - 1] + [Share(f"{len(rest)} others", summed, worst)]


def totals(items: Iterable[Share]) -> tuple[list[tuple[str, float]], list[float]]:
    """(label, kWh in the period) of each share, and the kWh of each that was estimated (the buckets
    interpolated across a gap: a partial bucket's energy is measured, over part of it)."""
    import numpy as np

    energy, estimated = [], []
    for share in items:
        energy.append((share.label, float(np.nansum(share.values))))
        estimated.append(float(np.nansum(np.where(share.quality == ESTIMATED, share.values, 0.0))))
    return energy, estimated


# ---- the route -----------------------------------------------------------------------------------

class _Common(TypedDict):
    """What every drawing of one request is given (chart_render.render_png's keywords)."""

    width_px: int
    height_px: int
    tz_name: str
    bucket: str
    period: tuple[datetime, datetime]


class _Request(NamedTuple):
    """A chart request's range, read and checked: local days, their bounds, buckets and now."""

    first: date
    last: date
    begin: int
    finish: int
    zone: ZoneInfo
    bucket: str
    edges: list[int]
    now: int


def chart(project_id: int, kind: object = None, meter_name: object = None, width: object = None,
          height: object = None, start: object = None, end: object = None, bill: object = None) -> dict[str, Any]:
    """Render the chart asked for, store it, and return its download link ({"url", "expires"}).

    meter_name: a name, or a list of them (meter=a&meter=b): one meter draws its own chart whatever
    the type, several draw the type's chart of that group (and bill=1 their bills)."""
    from chalicelib.outputs import chart_render

    kind_given = kind is not None
    asked = "pie" if kind is None else kind
    asked = asked.strip().lower() if isinstance(asked, str) else asked
    if not isinstance(asked, str) or asked not in CHART_TYPES:
        raise BadRequest("type must be pie, bar or line")
    kind = asked
    width_px = int(round(_size("width", width, 16) * 100))
    height_px = int(round(_size("height", height, 9) * 100))
    names = _group(meter_name)
    if _bill_asked(bill, kind if kind_given else None):
        return bill_chart(project_id, names, width_px, height_px, start, end)
    project = accounts.get_project(project_id)
    zone = clock.zone(project.get("timezone", "UTC"))
    first, last, begin, finish = _period(start, end, zone)
    bucket = "hour" if (last - first).days + 1 <= HOURLY_DAYS else "day"
    now = int(clock.utcnow().timestamp())
    asked_range = _Request(first, last, begin, finish, zone, bucket, bucket_edges(first, last, zone, bucket), now)
    shown_end = now if begin < now < finish else finish   # the period so far: today is not over
    common: _Common = {"width_px": width_px, "height_px": height_px, "tz_name": zone.key, "bucket": bucket,
                       "period": (clock.local(begin, zone), clock.local(shown_end, zone))}
    chosen, family = _chosen(project_id, names)
    if len(chosen) == 1 and names is not None:
        kind = "line"
        png = _meter_chart(project_id, chosen[0], asked_range, common)
    else:
        label = _label(project["name"], chosen if names is not None else None)
        if kind == "line":
            png = chart_render.render_png("line", title=f"{label}: energy used per {bucket}",
                                          series=_use_lines(project_id, chosen, family, asked_range), **common)
        else:
            energy, estimated = totals(largest(_day_shares(project_id, chosen, family, asked_range)))
            what = "share of energy used" if kind == "pie" else "energy used per meter"
            png = chart_render.render_png(kind, title=f"{label}: {what}", energy=energy, estimated=estimated,
                                          legend_title="Energy used, each kWh once", **common)
    key = downloads.upload_stream(project_id, "charts", f"{kind}-{first.isoformat()}-to-{last.isoformat()}.png",
                                  "image/png", [png])
    return downloads.link(key, zone)


def _chosen(project_id: int, names: Sequence[str] | None) -> tuple[list[Item], list[Item]]:
    """The meters asked for (every meter of the project, one, or a group) and the project's meters
    (whose Parent links say which sub-meters each has; for one meter, just it)."""
    if names is None:
        everything = meters.all_meters(project_id)
        return everything, everything
    if len(names) > 1:
        everything = meters.all_meters(project_id)
        return meters.named(everything, names), everything
    try:
        one = [meters.find(project_id, name=names[0], field="meter")]
    except NotFound as missing:
        if "," not in names[0]:
            raise
        raise NotFound(f"{missing.message} (several meters are several meter= arguments)") from None
    return one, one


def _label(project_name: str, group: Sequence[Item] | None) -> str:
    """The title's subject: the project, and the chosen group (names when a few, else how many)."""
    if group is None:
        return project_name
    if len(group) <= 3:
        return f"{project_name} ({', '.join(m['name'] for m in group)})"
    return f"{project_name} ({len(group)} meters)"


def _meter_chart(project_id: int, meter: Item, asked: _Request, common: _Common) -> bytes:
    """One meter's register above its energy used per bucket."""
    from chalicelib.outputs import chart_render

    (_meter, energy), = used(project_id, [meter], asked.edges, asked.bucket, asked.zone, asked.now)
    use = chart_render.UseSeries(meter["name"], asked.edges, energy.values, energy.quality)
    return chart_render.render_png("meter", title=f"{meter['name']}: register and energy used",
                                   series=[_register(project_id, meter, asked.begin, asked.finish,
                                                     common["width_px"])],
                                   use=use, **common)


def _register(project_id: int, meter: Item, begin: int, finish: int, width_px: int) -> LineSeries:
    """The meter's register over the period, reduced to a min and max per pixel column as it is read."""
    from chalicelib.outputs import chart_render

    reducer = chart_render.MinMaxReducer(begin, finish, width_px)
    for epoch, value in readings.series(project_id, meter["meter_id"], begin, finish):
        reducer.add(epoch, value)
    times, values = reducer.points()
    return chart_render.LineSeries(meter["name"], times, values)


def _day_shares(project_id: int, chosen: Sequence[Item], family: Sequence[Item], asked: _Request) -> list[Share]:
    """shares() per local day of the period (pie and bar total by day from the rollups, whatever the
    line's bucket)."""
    edges = bucket_edges(asked.first, asked.last, asked.zone, "day")
    energy = {meter["meter_id"]: use for meter, use in used(project_id, chosen, edges, "day", asked.zone, asked.now)}
    return shares(chosen, energy, family)


def _use_lines(project_id: int, chosen: Sequence[Item], family: Sequence[Item], asked: _Request) -> list[UseSeries]:
    """UseSeries of the shares (each kWh once, as pie and bar count them): the largest 11 and "N others"."""
    from chalicelib.outputs import chart_render

    energy = {meter["meter_id"]: use
              for meter, use in used(project_id, chosen, asked.edges, asked.bucket, asked.zone, asked.now)}
    return [chart_render.UseSeries(share.label, asked.edges, share.values.tolist(), share.quality.tolist())
            for share in largest(shares(chosen, energy, family))]


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


def bill_chart(project_id: int, meter_names: Sequence[str] | None, width_px: int, height_px: int, start: object,
               end: object) -> dict[str, Any]:
    """GET /graphics?bill=1: a meter's charges per month (or the sum of those of the project's meters, or
    of a chosen group's, that feed no other among them), stacked by time-of-use period, from GET /bill's
    rows; stored, its download link returned. meter_names: as _chosen takes them."""
    from chalicelib.billing import bills, tariffs
    from chalicelib.outputs import chart_render
    from chalicelib.platform.errors import PayloadTooLarge

    project = accounts.get_project(project_id)
    zone = clock.zone(project.get("timezone", "UTC"))
    first, last, begin, finish = _bill_period(start, end, zone)
    asked, _family = _chosen(project_id, meter_names)
    chosen = asked if len(asked) == 1 and meter_names is not None else _feeding_none(asked)
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
    who = asked[0]["name"] if len(asked) == 1 and meter_names is not None else \
        _label(project["name"], asked if meter_names is not None else None)
    png = chart_render.render_bill_png(width_px=width_px, height_px=height_px, title=f"{who}: charges per month",
                                       tz_name=zone.key, months=months, stacks=stacks, currency=currency,
                                       period=(clock.local(begin, zone), clock.local(finish, zone)))
    key = downloads.upload_stream(project_id, "charts", f"bill-{first.isoformat()}-to-{last.isoformat()}.png",
                                  "image/png", [png])
    return downloads.link(key, zone)
