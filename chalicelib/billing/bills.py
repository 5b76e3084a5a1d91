"""GET /bill (and the rows of /file?bill=1, /graphics?bill=1): each meter's charges per local calendar month
under its tariff (chalicelib/billing/tariffs.py), priced from the energy of every local hour.

The hours come from chalicelib/metering/consumption.py (hourly: energy, readings counted and the highest
15-minute energy of each local hour, boundaries interpolated, resets adding nothing), whatever stores
them; the pricing of a meter-month (schedule, then price) is a pure function of those figures.

The rules (docs/billing.md; equal to NREL SAM's Utilityrate5 to the cent on full months):
  - each local hour is priced with the weekday schedule, or the weekend one on Saturdays, Sundays and
    the tariff's holidays, at its hour on the local clock (the 25-hour day's two 01:00 hours both by
    hour 1; the 23-hour day has no 02:00);
  - tiers count the month's kWh across its periods (the periods of a month share their tier limits):
    the month's kWh fill the tiers, and each tier's kWh are shared among the periods in proportion
    to each period's kWh (SAM's rule, not "in time order");
  - TOU demand: $/kW of the month's highest 15-minute demand (4 x the energy of a quarter hour) among
    the hours of each demand period; flat demand: the same over every hour of the month;
  - a month cut by start/end is billed as that share of a month (days billed / days in the month):
    $/month charges, the minimum, demand charges and tier limits scale by it, $/day counts days;
  - mincharge raises a month's total to it; amounts are exact fractions, shown as the nearest float,
    Total rounded to the cent only in CSV files.
"""
import bisect
from calendar import monthrange
from datetime import date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple
from zoneinfo import ZoneInfo

from chalicelib.billing import tariffs
from chalicelib.identity import accounts
from chalicelib.metering import consumption, days, meters
from chalicelib.platform.errors import PayloadTooLarge

MICRO = 10 ** 6                 # µkWh per kWh
CHUNK_METERS = 100              # meters priced together (their hours of one or more months held at once)
HOURS_HELD = 100_000            # meter-hours read at once: a year of 11 meters, a month of 100
# Meter-months one request prices (each reads its meter's hours): GET /bill and /graphics?bill=1 answer 413
# past it, GET /file?bill=1 becomes a job. The hours come from the month rollup items (2 items read a
# meter-month with the request's own): 301 meter-months in 0.61 s on in-process moto (bench/bench_bill.py);
# what bounds a request is its answer (MAX_ANSWER_BYTES), not the reading.
MAX_METER_MONTHS = 600
MAX_ANSWER_BYTES = 5_000_000    # under Lambda's 6 MB answer, in the largest format (XML)
ROW_BYTES, LINE_BYTES = 900, 260   # the XML of a row without its lines, and of one line (bounds, measured)


# ---- a tariff ready to price -------------------------------------------------------------------------

class Rates(NamedTuple):
    """A stored tariff as exact numbers: tiers as (upper limit or None for the last, $ per kWh or kW) per
    period (energy, demand, flat); schedules as [weekday 0 | weekend 1][month 0-11][hour 0-23] → period."""

    tariff_id: int
    currency: str
    energy: list
    energy_schedule: tuple | None
    demand: list
    demand_schedule: tuple | None
    flat: list
    flat_months: list | None
    fixed: Fraction
    fixed_per_day: bool
    minimum: Fraction
    minimum_per_day: bool
    holidays: frozenset
    energy_labels: list


def exact(number: int | float) -> Fraction:
    """A JSON number as the exact decimal it was written as (0.1 is 1/10, not the float's binary value)."""
    return Fraction(number) if isinstance(number, int) else Fraction(Decimal(repr(number)))


def _tiers(periods: list | None) -> list[list[tuple[Fraction | None, Fraction]]]:
    return [[(None if t == len(tiers) - 1 else exact(tier["max"]), exact(tier.get("rate", 0)) + exact(tier.get("adj", 0)))
             for t, tier in enumerate(tiers)] for tiers in periods or ()]


def rates(tariff_id: int, tariff: dict) -> Rates:
    """The Rates of a stored tariff (tariffs.build's dict)."""
    def schedule(weekday: str, weekend: str) -> tuple | None:
        return None if tariff.get(weekday) is None else (tariff[weekday], tariff[weekend])

    return Rates(tariff_id, tariff["currency"],
                 _tiers(tariff.get("energyratestructure")), schedule("energyweekdayschedule", "energyweekendschedule"),
                 _tiers(tariff.get("demandratestructure")), schedule("demandweekdayschedule", "demandweekendschedule"),
                 _tiers(tariff.get("flatdemandstructure")), tariff.get("flatdemandmonths"),
                 exact(tariff.get("fixedchargefirstmeter", 0)), tariff.get("fixedchargeunits") == "$/day",
                 exact(tariff.get("mincharge", 0)), tariff.get("minchargeunits") == "$/day",
                 frozenset(date.fromisoformat(d) for d in tariff.get("holidays", ())),
                 list(tariff.get("energytoulabels") or ()))


# ---- the pricing of a meter-month: pure functions of the hours' figures ------------------------------------

class Slot(NamedTuple):
    """Where a local hour falls: its local date and clock hour (0-23)."""

    day: date
    hour: int


class Plan(NamedTuple):
    """A tariff's schedules applied to a month's hours: the energy and demand period of each hour (None
    without such charges), the periods present, the month (0-11) and the local days the hours cover."""

    month: int
    days: int
    energy: list | None
    demand: list | None
    energy_present: list
    demand_present: list


def schedule(r: Rates, slots: Sequence[Slot]) -> Plan:
    """The Plan of a tariff over the local hours (Slots) of one calendar month."""
    month = slots[0].day.month - 1

    def periods(table: tuple | None) -> list[int] | None:
        if table is None:
            return None
        weekday, weekend = table[0][month], table[1][month]
        return [(weekend if s.day.weekday() >= 5 or s.day in r.holidays else weekday)[s.hour] for s in slots]

    energy, demand = periods(r.energy_schedule), periods(r.demand_schedule)
    return Plan(month, len({s.day for s in slots}), energy, demand, sorted(set(energy or ())), sorted(set(demand or ())))


class EnergyLine(NamedTuple):
    period: int
    tier: int
    kwh: Fraction
    rate: Fraction
    amount: Fraction


class DemandLine(NamedTuple):
    kind: str            # "tou" or "flat"
    period: int
    tier: int
    kw: Fraction | None  # None: no 15-minute demand known in the period's hours
    rate: Fraction
    amount: Fraction | None


class Charges(NamedTuple):
    """A meter-month's bill: its lines, fixed and minimum charges and total (exact)."""

    energy: list
    demand: list
    fixed: Fraction
    minimum: Fraction
    total: Fraction


def _split(amount: Fraction, tiers: list[tuple[Fraction | None, Fraction]]) -> list[tuple[Fraction, Fraction]]:
    """How much of amount (kWh or kW) falls in each tier: [(part, rate)] (limits already scaled)."""
    parts, below = [], Fraction(0)
    for limit, rate in tiers:
        top = amount if limit is None else min(amount, limit)
        parts.append((max(Fraction(0), top - below), rate))
        if limit is not None:
            below = max(below, limit)
    return parts


def price(r: Rates, plan: Plan, energies: Sequence[int | None], peaks: Sequence[int | None],
          share: Fraction = Fraction(1)) -> Charges | None:
    """The Charges of one meter-month, or None when no energy of it is known.

    energies, peaks: per local hour of the plan, the energy used and the highest 15-minute energy (µkWh,
    None where unknown); share: the part of the month billed (days billed / days in the month), which
    scales $/month charges, the minimum, demand charges and tier limits ($/day charges count plan.days).
    """
    if all(e is None for e in energies):
        return None
    energy_lines = _energy_lines(r, plan, energies, share)
    demand_lines = _demand_lines(r, plan, peaks, share)
    fixed = r.fixed * (plan.days if r.fixed_per_day else share)
    subtotal = sum((line.amount for line in energy_lines), Fraction(0)) + fixed \
        + sum((line.amount for line in demand_lines if line.amount is not None), Fraction(0))
    floor = r.minimum * (plan.days if r.minimum_per_day else share)
    minimum = max(Fraction(0), floor - subtotal)
    return Charges(energy_lines, demand_lines, fixed, minimum, subtotal + minimum)


def _energy_lines(r: Rates, plan: Plan, energies: Sequence[int | None], share: Fraction) -> list[EnergyLine]:
    """The EnergyLines of a month: its kWh fill the tiers (limits scaled by share), each tier's kWh shared
    among the periods present in proportion to each period's kWh (NREL SAM's rule)."""
    if plan.energy is None or not plan.energy_present:
        return []
    used: dict[int, int] = {}
    for period, energy in zip(plan.energy, energies):
        if energy is not None:
            used[period] = used.get(period, 0) + energy
    total = sum(used.values())
    limits = [(None if limit is None else limit * share * MICRO, rate) for limit, rate in r.energy[plan.energy_present[0]]]
    in_tier = [part for part, _rate in _split(Fraction(total), limits)]
    lines = []
    for period in plan.energy_present:
        mine = Fraction(used.get(period, 0), total) if total else Fraction(0)
        for tier, (_limit, rate) in enumerate(r.energy[period]):
            kwh = in_tier[tier] * mine / MICRO
            lines.append(EnergyLine(period, tier, kwh, rate, kwh * rate))
    return lines


def _demand_lines(r: Rates, plan: Plan, peaks: Sequence[int | None], share: Fraction) -> list[DemandLine]:
    """The DemandLines of a month: each TOU demand period present, then the month's flat demand."""
    lines = []
    if plan.demand is not None:
        highest: dict[int, int] = {}
        for period, peak in zip(plan.demand, peaks):
            if peak is not None and peak > highest.get(period, -1):
                highest[period] = peak
        for period in plan.demand_present:
            lines += _demand("tou", period, r.demand[period], highest.get(period), share)
    if r.flat_months is not None:
        known_peaks = [p for p in peaks if p is not None]
        index = r.flat_months[plan.month]
        lines += _demand("flat", index, r.flat[index], max(known_peaks) if known_peaks else None, share)
    return lines


def _demand(kind: str, period: int, tiers: list[tuple[Fraction | None, Fraction]], peak: int | None,
            share: Fraction) -> list[DemandLine]:
    """The DemandLines of one period's tiers for its highest 15-minute energy (µkWh, None: unknown)."""
    if peak is None:
        return [DemandLine(kind, period, tier, None, rate, None) for tier, (_limit, rate) in enumerate(tiers)]
    kw = Fraction(4 * peak, MICRO)
    return [DemandLine(kind, period, tier, part, rate, part * rate * share)
            for tier, (part, rate) in enumerate(_split(kw, tiers))]


# ---- months, meters and rows -----------------------------------------------------------------------------

def months(first: date, last: date) -> list[tuple[date, date]]:
    """[(first day, last day)] of each calendar month overlapping local days first..last, cut to them."""
    spans, day = [], first
    while day <= last:
        end = min(last, date(day.year, day.month, monthrange(day.year, day.month)[1]))
        spans.append((day, end))
        day = end + timedelta(days=1)
    return spans


def _number(value: Fraction | None) -> float | None:
    return None if value is None else float(value)


def row(meter: dict, start: str, end: str, tariff_id: int | None, r: Rates | None, charges: Charges | None,
        figures: tuple) -> dict:
    """The GET /bill row of one meter-month. figures: (kWh known or None, Coverage, Estimated)."""
    kwh, coverage, estimated = figures
    shown = {"MeterParam": meter["name"], "PeriodStart": start, "PeriodEnd": end, "Tariff": tariff_id,
             "Currency": None if r is None else r.currency, "Energy": [], "Demand": [], "Fixed": None,
             "Minimum": None, "Total": None, "kWh": kwh, "Coverage": coverage, "Estimated": estimated}
    if charges is not None:
        shown["Energy"] = [{"period": line.period, "tier": line.tier, "kWh": float(line.kwh), "rate": float(line.rate),
                            "amount": float(line.amount)} for line in charges.energy]
        shown["Demand"] = [{"kind": line.kind, "period": line.period, "tier": line.tier, "kW": _number(line.kw),
                            "rate": float(line.rate), "amount": _number(line.amount)} for line in charges.demand]
        shown.update(Fixed=float(charges.fixed), Minimum=float(charges.minimum), Total=float(charges.total))
    return shown


def meter_months(project_id: int, chosen: list[dict], zone: ZoneInfo, first: date, last: date,
                 tariff_of: dict) -> Iterator[tuple[dict, Fraction | None]]:
    """(row, exact Total or None) of the chosen meters over local days first..last, in meter order then month:
    the GET /bill rows, and each one's Total as an exact fraction (for rounding it to the cent).

    tariff_of: {meter id: (tariff id, stored tariff) or None} (tariffs.for_meters). The hours of a chunk
    of meters are read a month at a time (consumption.hourly), so what is held stays bounded.
    """
    chosen = sorted(chosen, key=lambda m: m["meter_id"])
    compiled = {}
    for pair in tariff_of.values():
        if pair is not None and pair[0] not in compiled:
            compiled[pair[0]] = rates(*pair)
    spans = months(first, last)
    for at in range(0, len(chosen), CHUNK_METERS):
        part = chosen[at:at + CHUNK_METERS]
        table: dict[int, list] = {m["meter_id"]: [] for m in part}
        together = max(1, HOURS_HELD // (len(part) * 744))   # months whose hours are read in one go
        for group in range(0, len(spans), together):
            spanned = spans[group:group + together]
            starts, hours = consumption.hourly(project_id, part, zone, spanned[0][0], spanned[-1][1])
            for month_first, month_last in spanned:
                low = bisect.bisect_left(starts, days.midnight(month_first, zone))
                high = bisect.bisect_left(starts, days.midnight(month_last + timedelta(days=1), zone))
                month_hours = {meter_id: figures[low:high] for meter_id, figures in hours.items()}
                for meter_id, pair in _month_rows(part, zone, month_first, month_last, starts[low:high], month_hours,
                                                  tariff_of, compiled):
                    table[meter_id].append(pair)
        for meter in part:
            yield from table[meter["meter_id"]]


def _month_rows(part: list[dict], zone: ZoneInfo, first: date, last: date, starts: list[int],
                hours: dict[int, list], tariff_of: dict, compiled: dict[int, Rates]) -> Iterator[tuple[int, tuple]]:
    """(meter id, (row, exact Total or None)) of each meter of part for local days first..last of one month,
    from the hours (consumption.hourly) of those days: their starts, and each meter's Summaries."""
    begin, finish = days.midnight(first, zone), days.midnight(last + timedelta(days=1), zone)
    slots = [Slot(local.date(), local.hour) for local in (datetime.fromtimestamp(s, zone) for s in starts)]
    share = Fraction((last - first).days + 1, monthrange(first.year, first.month)[1])
    stamps = datetime.fromtimestamp(begin, zone).isoformat(), datetime.fromtimestamp(finish, zone).isoformat()
    plans = {}
    for meter in part:
        figures = hours[meter["meter_id"]]
        pair = tariff_of.get(meter["meter_id"])
        energies = [f.energy for f in figures]
        peaks = [f.peak for f in figures]
        charges, r = None, None
        if pair is not None:
            r = compiled[pair[0]]
            if r.tariff_id not in plans:
                plans[r.tariff_id] = schedule(r, slots)
            charges = price(r, plans[r.tariff_id], energies, peaks, share)
        known = [e for e in energies if e is not None]
        kwh = sum(known) / MICRO if known else None
        counted = sum(f.counted for f in figures)
        step = meters.step(meter)
        estimated = None if kwh is None else counted * step < finish - begin
        shown = row(meter, stamps[0], stamps[1], None if pair is None else pair[0], r, charges,
                    (kwh, consumption.coverage(counted, finish - begin, step), estimated))
        yield meter["meter_id"], (shown, None if charges is None else charges.total)


def lines_per_row(stored: dict) -> int:
    """At most how many lines (energy and demand) a row priced with this stored tariff has."""
    return sum(len(tiers) for key in ("energyratestructure", "demandratestructure") for tiers in stored.get(key) or ()) \
        + max((len(tiers) for tiers in stored.get("flatdemandstructure") or ()), default=0)


def check_bound(chosen: list[dict], first: date, last: date, tariff_of: dict) -> None:
    """413 before anything is read when the answer would be past what one answer holds."""
    rows = len(chosen) * len(months(first, last))
    lines = max((lines_per_row(pair[1]) for pair in tariff_of.values() if pair is not None), default=0)
    size = rows * (ROW_BYTES + LINE_BYTES * lines)
    if rows > MAX_METER_MONTHS or size > MAX_ANSWER_BYTES:
        raise PayloadTooLarge(
            f"the bill has {rows} rows (meters x months), more than one answer holds (at most {MAX_METER_MONTHS} "
            f"rows and {MAX_ANSWER_BYTES // 1_000_000} MB): GET /file?start={first.isoformat()}&end={last.isoformat()}"
            f"&bill=1 writes the same rows to a file, or ask for fewer meters or months")


def bill(project_id: int, start: object, end: object, meter_name: object = None,
         tariff_id: object = None) -> list[dict]:
    """GET /bill: one row per meter and local calendar month overlapping start..end, in meter order then month."""
    zone = accounts.project_zone(project_id)
    first, last, _begin, _finish = days.day_range(days.parse_day("start", start), days.parse_day("end", end), zone)
    chosen = ([meters.find(project_id, name=meter_name, field="meter")] if meter_name is not None
              else meters.all_meters(project_id))
    tariff_of = tariffs.for_meters(project_id, chosen, tariff_id)
    check_bound(chosen, first, last, tariff_of)
    return [bill_row for bill_row, _total in meter_months(project_id, chosen, zone, first, last, tariff_of)]


# ---- flat rows: /file?bill=1 -------------------------------------------------------------------------------

LEAD = ("MeterParam", "PeriodStart", "PeriodEnd", "Tariff", "Currency")
TAIL = ("Fixed", "Minimum", "Total", "kWh", "Coverage", "Estimated")


def flat_fields(stored_tariffs: Iterable[dict]) -> list[str]:
    """The columns of a flat bill file priced with these stored tariffs: each energy period and tier's kWh and
    amount, each demand period and tier's kW and amount (tou, then flat), then Fixed, Minimum, Total, kWh..."""
    energy: set[tuple[int, int]] = set()
    tou: set[tuple[int, int]] = set()
    flat: set[tuple[int, int]] = set()
    for stored in stored_tariffs:
        for key, into in (("energyratestructure", energy), ("demandratestructure", tou), ("flatdemandstructure", flat)):
            for p, tiers in enumerate(stored.get(key) or ()):
                into.update((p, t) for t in range(len(tiers)))
    fields = list(LEAD)
    for p, t in sorted(energy):
        fields += [f"kWh_p{p}_t{t}", f"amount_p{p}_t{t}"]
    for kind, pairs in (("tou", tou), ("flat", flat)):
        for p, t in sorted(pairs):
            fields += [f"kW_{kind}_p{p}_t{t}", f"amount_{kind}_p{p}_t{t}"]
    return fields + list(TAIL)


def cents(total: Fraction | None) -> Decimal | None:
    """An exact Total (a Fraction, amounts are never negative) rounded to the cent, half up, for CSV."""
    return None if total is None else Decimal((total * 100 + Fraction(1, 2)).__floor__()).scaleb(-2)


def flat(bill_row: dict, fields: list[str], total: Fraction | None = None, csv: bool = False) -> dict:
    """A GET /bill row as one flat record of fields (missing lines empty); csv: Total is the exact total
    rounded to the cent."""
    record = dict.fromkeys(fields)
    for key in LEAD + TAIL:
        record[key] = bill_row[key]
    for line in bill_row["Energy"]:
        record[f"kWh_p{line['period']}_t{line['tier']}"] = line["kWh"]
        record[f"amount_p{line['period']}_t{line['tier']}"] = line["amount"]
    for line in bill_row["Demand"]:
        name = f"{line['kind']}_p{line['period']}_t{line['tier']}"
        record[f"kW_{name}"] = line["kW"]
        record[f"amount_{name}"] = line["amount"]
    if csv:
        record["Total"] = cents(total)
    return record
