"""GET /bill against NREL SAM (PySAM.Utilityrate5, the reference bill calculator that reads URDB rates).

A year of hourly readings of several load shapes goes in through POST /data (the whole path: ingest,
storage, hourly energy and 15-minute demand, pricing) in a UTC project, for 2018 (not a leap year, and
it starts on a Monday as SAM's year 1 does). Power is uniform within each hour (readings on the hour,
interpolated in between), so the highest 15-minute demand equals SAM's hourly demand. Each tariff is
given to SAM converted from its URDB fields (SAM's periods and tiers are 1-based, URDB's 0-based), and
every month's energy, TOU demand, flat demand, fixed, minimum and total charges must equal SAM's to
the cent, as must every period and tier's kWh and charge (SAM's energy_w_sys_ec_<month>_tp and
charge_w_sys_ec_<month>_tp tables). SAM knows no holidays, DST or partial months: tests/api/test_bills.py
checks those by arithmetic.
"""
import math
import random
from datetime import datetime, timedelta, timezone

import pytest

from tests.module_stack import module_stack

Utilityrate5 = pytest.importorskip("PySAM.Utilityrate5", reason="nrel-pysam (requirements-dev.txt) is the reference")

YEAR_START = datetime(2018, 1, 1, tzinfo=timezone.utc)
HOURS = 8760
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
SUMMER = range(4, 10)   # May to October (0-based months)
CENT = 0.005


def _schedule(weekday_of, weekend_of):
    return ([[weekday_of(m, h) for h in range(24)] for m in range(12)],
            [[weekend_of(m, h) for h in range(24)] for m in range(12)])


def _tou_tariff():
    """Time of use with summer and winter schedules, TOU demand (tiered), flat demand by season, fixed $/month."""
    def energy_weekday(m, h):
        if m in SUMMER:
            return 2 if 14 <= h < 19 else 1 if 9 <= h < 22 else 0
        return 1 if 7 <= h < 11 or 17 <= h < 19 else 0

    weekday, weekend = _schedule(energy_weekday, lambda m, h: 0)
    demand_weekday, demand_weekend = _schedule(lambda m, h: 1 if 12 <= h < 20 else 0, lambda m, h: 0)
    return {
        "label": "TOU with demand", "currency": "USD",
        "energyratestructure": [[{"rate": 0.07345, "adj": 0.0041, "unit": "kWh"}], [{"rate": 0.1123}],
                                [{"rate": 0.2311, "adj": -0.0123}]],
        "energyweekdayschedule": weekday, "energyweekendschedule": weekend,
        "demandratestructure": [[{"rate": 1.5, "max": 6}, {"rate": 2.75}], [{"rate": 8.31, "max": 6}, {"rate": 12.04}]],
        "demandweekdayschedule": demand_weekday, "demandweekendschedule": demand_weekend,
        "flatdemandstructure": [[{"rate": 4.25}], [{"rate": 3.1, "max": 5}, {"rate": 6.4}]],
        "flatdemandmonths": [1 if m in SUMMER else 0 for m in range(12)],
        "fixedchargefirstmeter": 23.75, "fixedchargeunits": "$/month",
    }


def _tiered_tariff():
    """Tiers counted across two TOU periods (SAM's rule: the month's kWh fill the tiers, shared among the
    periods by their kWh), a minimum charge and a fixed charge."""
    weekday, weekend = _schedule(lambda m, h: 1 if 8 <= h < 20 else 0, lambda m, h: 0)
    return {
        "label": "tiered TOU", "currency": "USD",
        "energyratestructure": [
            [{"rate": 0.061, "max": 350}, {"rate": 0.0835, "max": 900}, {"rate": 0.1047, "adj": 0.0021}],
            [{"rate": 0.092, "max": 350}, {"rate": 0.1302, "max": 900}, {"rate": 0.1619}]],
        "energyweekdayschedule": weekday, "energyweekendschedule": weekend,
        "fixedchargefirstmeter": 9.5, "fixedchargeunits": "$/month",
        "mincharge": 95, "minchargeunits": "$/month",
    }


TARIFFS = {"tou": _tou_tariff(), "tiered": _tiered_tariff()}


def _shapes():
    """kW of each hour of the year per meter (multiples of 0.004 kW: a quarter hour is a whole µkWh)."""
    rng = random.Random(2018)

    def snap(kw):
        return max(0, round(kw / 0.004)) * 0.004

    def at(h):
        moment = YEAR_START + timedelta(hours=h)
        return moment.month - 1, moment.weekday(), moment.hour

    office, home, spiky, noisy, small = [], [], [], [], []
    for h in range(HOURS):
        month, weekday, hour = at(h)
        season = 1.0 + 0.6 * math.cos((month - 6.5) / 12 * 2 * math.pi)
        working = weekday < 5 and 8 <= hour < 18
        office.append(snap((7.5 if working else 1.2) * season + rng.uniform(0, 0.8)))
        evening = 17 <= hour < 23
        home.append(snap(0.4 + (2.6 if evening else 0.3) * (1.8 if month in SUMMER else 1.0) + rng.uniform(0, 0.3)))
        spiky.append(snap(rng.choice((0.2, 0.3, 0.5)) if rng.random() > 0.02 else rng.uniform(8, 19)))
        noisy.append(snap(rng.uniform(0, 12)))
        small.append(snap(rng.uniform(0, 0.05) if month != 2 else rng.uniform(0, 4)))   # under the minimum most months
    return {"office": office, "home": home, "spiky": spiky, "noisy": noisy, "small": small}


SHAPES = _shapes()


# ---- the project: a year of readings through POST /data, once for the module --------------------------

@pytest.fixture(scope="module")
def billed():
    """{tariff name: {meter name: [12 GET /bill rows]}} over 2018, every meter priced with every tariff."""
    with module_stack("sam", "UTC") as (_aws, account):
        ids = {name: account.call("PUT", "/tariffs", body=tariff)["id"] for name, tariff in TARIFFS.items()}
        for name, kw in SHAPES.items():
            account.call("PUT", "/point", body={"MeterId": name, "SaveEvery": 60})
            register, points = 5000.0, []
            for h in range(HOURS + 1):
                moment = YEAR_START + timedelta(hours=h)
                points.append({"MeterId": name, "TimeStamping": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
                               "value": round(register, 6)})
                register += kw[h] if h < HOURS else 0.0
            account.push(points)
        result = {}
        for name, tariff_id in ids.items():
            rows = account.call("GET", "/bill", {"start": "2018-01-01", "end": "2018-12-31", "tariff": tariff_id})
            result[name] = {meter: [r for r in rows if r["MeterParam"] == meter] for meter in SHAPES}
        yield result


# ---- SAM, given the same tariff and loads --------------------------------------------------------------

BIG = 1e38   # SAM's "no upper limit"


def _rate(tier):
    return tier.get("rate", 0) + tier.get("adj", 0)


def _limit(tiers, t):
    return tiers[t]["max"] if t < len(tiers) - 1 else BIG


def sam(tariff, kw):
    """The SAM Utilityrate5 run of a URDB tariff over a year of hourly kW (its outputs, read while it lives)."""
    model = Utilityrate5.default("PVWattsCommercial")
    model.Lifetime.analysis_period = 1
    model.Lifetime.inflation_rate = 0
    model.SystemOutput.gen = [0.0] * HOURS
    model.SystemOutput.degradation = [0]
    model.Load.load = list(kw)
    model.Load.load_escalation = [0]
    rates = model.ElectricityRates
    rates.rate_escalation = [0]
    rates.ur_metering_option = 0
    rates.en_electricity_rates = 1
    rates.ur_enable_billing_demand = 0
    rates.TOU_demand_single_peak = 0
    rates.ur_annual_min_charge = 0
    rates.ur_monthly_fixed_charge = tariff.get("fixedchargefirstmeter", 0)
    rates.ur_monthly_min_charge = tariff.get("mincharge", 0)
    one_based = lambda schedule: [[p + 1 for p in row] for row in schedule]   # noqa: E731
    rates.ur_ec_sched_weekday = one_based(tariff["energyweekdayschedule"])
    rates.ur_ec_sched_weekend = one_based(tariff["energyweekendschedule"])
    rates.ur_ec_tou_mat = [[p + 1, t + 1, _limit(tiers, t), 0, _rate(tier), 0]
                           for p, tiers in enumerate(tariff["energyratestructure"]) for t, tier in enumerate(tiers)]
    demand, flat = tariff.get("demandratestructure"), tariff.get("flatdemandstructure")
    rates.ur_dc_enable = 1 if demand or flat else 0
    if demand or flat:
        rates.ur_dc_sched_weekday = one_based(tariff.get("demandweekdayschedule") or [[0] * 24] * 12)
        rates.ur_dc_sched_weekend = one_based(tariff.get("demandweekendschedule") or [[0] * 24] * 12)
        rates.ur_dc_tou_mat = [[p + 1, t + 1, _limit(tiers, t), _rate(tier)]
                               for p, tiers in enumerate(demand or [[{"rate": 0}]]) for t, tier in enumerate(tiers)]
        months = tariff.get("flatdemandmonths") or [0] * 12
        rates.ur_dc_flat_mat = [[m, t + 1, _limit(tiers, t), _rate(tier)]
                                for m in range(12) for tiers in [(flat or [[{"rate": 0}]])[months[m]]]
                                for t, tier in enumerate(tiers)]
    model.execute(0)
    out = model.Outputs
    return {
        "energy": list(out.year1_monthly_ec_charge_with_system),
        "tou": list(out.year1_monthly_dc_tou_with_system),
        "flat": list(out.year1_monthly_dc_fixed_with_system),
        "fixed": list(out.year1_monthly_fixed_with_system),
        "minimum": list(out.year1_monthly_minimum_with_system),
        "total": list(out.year1_monthly_utility_bill_w_sys),
        "lines": [(getattr(out, f"energy_w_sys_ec_{m}_tp"), getattr(out, f"charge_w_sys_ec_{m}_tp")) for m in MONTHS],
    }


def _ours(row):
    energy = sum(line["amount"] for line in row["Energy"])
    tou = sum(line["amount"] for line in row["Demand"] if line["kind"] == "tou")
    flat = sum(line["amount"] for line in row["Demand"] if line["kind"] == "flat")
    return {"energy": energy, "tou": tou, "flat": flat, "fixed": row["Fixed"], "minimum": row["Minimum"],
            "total": row["Total"]}


def _sam_lines(tables):
    """{(period, tier) 0-based: (kWh, charge)} from SAM's month tables (row 0: tier numbers, column 0: period
    numbers, the last row and column: totals)."""
    energy, charge = tables
    tiers = [int(t) for t in energy[0][1:-1]]
    return {(int(energy[r][0]) - 1, tiers[c - 1] - 1): (energy[r][c], charge[r][c])
            for r in range(1, len(energy) - 1) for c in range(1, len(energy[0]) - 1)}


@pytest.mark.parametrize("meter", sorted(SHAPES))
@pytest.mark.parametrize("tariff", sorted(TARIFFS))
def test_every_month_equals_sam_to_the_cent(billed, tariff, meter):
    reference = sam(TARIFFS[tariff], SHAPES[meter])
    rows = billed[tariff][meter]
    assert [r["PeriodStart"][:7] for r in rows] == [f"2018-{m:02d}" for m in range(1, 13)]
    for month, row in enumerate(rows):
        assert row["Coverage"] == 1.0 and row["Estimated"] is False
        for part, value in _ours(row).items():
            assert abs(value - reference[part][month]) < CENT, (tariff, meter, MONTHS[month], part, value,
                                                                 reference[part][month])
        lines = _sam_lines(reference["lines"][month])
        assert {(line["period"], line["tier"]) for line in row["Energy"]} == set(lines)
        for line in row["Energy"]:
            kwh, charge = lines[(line["period"], line["tier"])]
            assert abs(line["kWh"] - kwh) < 1e-6 and abs(line["amount"] - charge) < CENT, (tariff, meter, month, line)
        assert abs(row["kWh"] - sum(SHAPES[meter][h] for h in range(HOURS)
                                    if (YEAR_START + timedelta(hours=h)).month == month + 1)) < 1e-6


def test_the_largest_difference_from_sam_over_every_meter_tariff_and_month(billed):
    """The figures of the report: meter-months compared, and the largest difference of any charge in cents."""
    worst, compared = 0.0, 0
    for tariff, by_meter in billed.items():
        for meter, rows in by_meter.items():
            reference = sam(TARIFFS[tariff], SHAPES[meter])
            for month, row in enumerate(rows):
                compared += 1
                worst = max([worst] + [abs(value - reference[part][month]) for part, value in _ours(row).items()])
    print(f"\nSAM comparison: {len(SHAPES)} meters x {len(TARIFFS)} tariffs x 12 months = {compared} meter-months; "
          f"largest difference of any monthly charge: {worst * 100:.2g} cents")
    assert compared == len(SHAPES) * len(TARIFFS) * 12
    assert worst < CENT
    minimums = sum(1 for m in range(12) if billed["tiered"]["small"][m]["Minimum"] > 0)
    assert minimums >= 6                              # the minimum charge was exercised...
    assert billed["tiered"]["small"][2]["Minimum"] == 0   # ...and not where use was above it
