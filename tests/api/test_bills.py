"""GET /bill, /file?bill=1 and /graphics?bill=1: what NREL SAM cannot check (tests/api/test_bills_sam.py does the
rest), by the contract's arithmetic written out here.

A Toronto project with 15-minute readings of constant power (so every local hour's energy is known
exactly) in March and October-November 2025: the 23-hour day (March 9) and the 25-hour day (November 2,
a Sunday), a holiday, a month cut by start/end, a gap, a meter with nothing, a meter with no tariff.
The expected kWh of each (weekday or weekend, local hour) is counted here by walking the UTC quarter
hours and converting each to local time, independently of chalicelib's local hours.
"""
import csv
import io
import json
from collections import Counter
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction
from zoneinfo import ZoneInfo

import pytest
import yaml

from chalicelib.billing import bills
from chalicelib.outputs import charts, exports
from tests.module_stack import module_stack
from tests.api.test_export_jobs import download

TORONTO = ZoneInfo("America/Toronto")
RANGES = ((datetime(2025, 3, 1, tzinfo=TORONTO), datetime(2025, 4, 1, tzinfo=TORONTO)),
          (datetime(2025, 10, 1, tzinfo=TORONTO), datetime(2025, 12, 1, tzinfo=TORONTO)))
GAP = (datetime(2025, 11, 15, tzinfo=TORONTO), datetime(2025, 11, 17, tzinfo=TORONTO))   # m2 has no reading inside
KW = {"m1": Fraction(1), "m2": Fraction(2)}                                         # constant power


def quarters(start, end):
    moment = start.astimezone(timezone.utc)
    while moment <= end.astimezone(timezone.utc):
        yield moment
        moment += timedelta(minutes=15)


def readings(name):
    points, register = [], 1000.0
    for first, last in RANGES:
        for moment in quarters(first, last):
            if name == "m2" and GAP[0] < moment < GAP[1]:
                register += float(KW[name]) / 4
                continue
            points.append({"MeterId": name, "TimeStamping": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
                           "value": round(register, 6)})
            register += float(KW[name]) / 4
    return points


def hours_by_slot(first, last, holidays=()):
    """{(weekend or holiday, local clock hour): local hours} of local days first..last, counted from UTC."""
    counted: Counter = Counter()
    start = datetime(first.year, first.month, first.day, tzinfo=TORONTO)
    end = datetime(last.year, last.month, last.day, tzinfo=TORONTO) + timedelta(days=1)
    moment = start.astimezone(timezone.utc)
    while moment < end.astimezone(timezone.utc):
        local = moment.astimezone(TORONTO)
        counted[(local.weekday() >= 5 or local.date().isoformat() in holidays, local.hour)] += 1
        moment += timedelta(hours=1)
    return counted


HOURLY = {   # 48 periods: weekday hour h is period h, weekend hour h is period 24 + h; rate (period + 1) cents
    "label": "one period per hour",
    "energyratestructure": [[{"rate": (p + 1) / 100}] for p in range(48)],
    "energyweekdayschedule": [list(range(24))] * 12,
    "energyweekendschedule": [list(range(24, 48))] * 12,
}


@pytest.fixture(scope="module")
def site():
    with module_stack("billing", "America/Toronto") as (aws, account):
        for name in ("m1", "m2", "m3"):
            account.call("PUT", "/point", body={"MeterId": name, "SaveEvery": 15})
        account.push(readings("m1") + readings("m2"))
        account.aws = aws
        yield account


def tariff(site, body):
    return site.call("PUT", "/tariffs", body=body)["id"]


def bill(site, **params):
    return site.call("GET", "/bill", params)


# ---- local time: DST and holidays -----------------------------------------------------------------------

@pytest.mark.parametrize("month, holidays", [(3, ()), (11, ()), (11, ("2025-11-11",))],
                         ids=["23-hour day", "25-hour day", "a holiday"])
def test_each_local_hour_is_priced_by_its_clock_hour_weekday_weekend_or_holiday(site, month, holidays):
    tariff_id = tariff(site, {**HOURLY, "label": f"hourly {month} {holidays}", "holidays": list(holidays)})
    first, last = date(2025, month, 1), date(2025, month + 1, 1) - timedelta(days=1)
    row, = bill(site, start=first.isoformat(), end=last.isoformat(), meter="m1", tariff=tariff_id)
    expected = hours_by_slot(first, last, holidays)
    assert sum(expected.values()) == (743 if month == 3 else 721)    # 31 days - 1 hour; 30 days + 1 hour
    lines = {line["period"]: line for line in row["Energy"]}
    assert set(lines) == set(range(48))
    for (weekend, hour), count in expected.items():
        line = lines[24 * weekend + hour]
        assert line["kWh"] == pytest.approx(count, abs=1e-9), (weekend, hour)
        assert line["rate"] == (24 * weekend + hour + 1) / 100
        assert line["amount"] == pytest.approx(count * line["rate"], abs=1e-9)
    if month == 3:   # Sunday March 9 has no 02:00: five Sundays, four 02:00 weekend hours
        assert expected[(True, 2)] == expected[(True, 1)] - 1
    elif not holidays:   # Sunday November 2 has two 01:00 hours
        assert expected[(True, 1)] == expected[(True, 0)] + 1
    else:   # Tuesday November 11 is priced as a weekend day
        assert expected[(True, 10)] == 11 and expected[(False, 10)] == 19
    total = sum(Fraction(count) * Fraction(24 * w + h + 1, 100) for (w, h), count in expected.items())
    assert row["Total"] == pytest.approx(float(total), abs=1e-9)
    assert row["kWh"] == sum(expected.values())


def test_demand_is_the_highest_15_minute_demand_in_each_periods_local_hours(site):
    body = {"label": "demand", "energyratestructure": [[{"rate": 0.1}]],
            "energyweekdayschedule": [[0] * 24] * 12, "energyweekendschedule": [[0] * 24] * 12,
            "demandratestructure": [[{"rate": 3}], [{"rate": 7.5}]],
            "demandweekdayschedule": [[0] * 17 + [1] * 4 + [0] * 3] * 12, "demandweekendschedule": [[0] * 24] * 12,
            "flatdemandstructure": [[{"rate": 2, "max": 1.5}, {"rate": 4}]], "flatdemandmonths": [0] * 12}
    row, = bill(site, start="2025-10-01", end="2025-10-31", meter="m2", tariff=tariff(site, body))
    assert row["Demand"] == [
        {"kind": "tou", "period": 0, "tier": 0, "kW": 2.0, "rate": 3.0, "amount": 6.0},
        {"kind": "tou", "period": 1, "tier": 0, "kW": 2.0, "rate": 7.5, "amount": 15.0},
        {"kind": "flat", "period": 0, "tier": 0, "kW": 1.5, "rate": 2.0, "amount": 3.0},
        {"kind": "flat", "period": 0, "tier": 1, "kW": 0.5, "rate": 4.0, "amount": 2.0}]
    assert row["Total"] == pytest.approx(row["kWh"] * 0.1 + 26.0)


# ---- months cut by start and end ------------------------------------------------------------------------

@pytest.mark.parametrize("units", ["$/month", "$/day"])
def test_a_month_cut_by_start_and_end_is_billed_as_its_share_of_the_month(site, units):
    body = {"label": f"cut {units}", "currency": "CAD",
            "energyratestructure": [[{"rate": 0.1, "max": 300}, {"rate": 0.25}]],
            "energyweekdayschedule": [[0] * 24] * 12, "energyweekendschedule": [[0] * 24] * 12,
            "flatdemandstructure": [[{"rate": 10}]], "flatdemandmonths": [0] * 12,
            "fixedchargefirstmeter": 30 if units == "$/month" else 2, "fixedchargeunits": units,
            "mincharge": 1000 if units == "$/month" else 40, "minchargeunits": units}
    row, = bill(site, start="2025-11-24", end="2025-11-10", meter="m1", tariff=tariff(site, body))
    share = Fraction(15, 30)
    assert (row["PeriodStart"], row["PeriodEnd"]) == ("2025-11-10T00:00:00-05:00", "2025-11-25T00:00:00-05:00")
    assert row["kWh"] == 360 and row["Currency"] == "CAD"
    assert [(line["tier"], line["kWh"]) for line in row["Energy"]] == [(0, 150.0), (1, 210.0)]   # 300 kWh x 15/30
    energy = Fraction(150) * Fraction(1, 10) + 210 * Fraction(1, 4)
    assert row["Demand"] == [{"kind": "flat", "period": 0, "tier": 0, "kW": 1.0, "rate": 10.0, "amount": 5.0}]
    fixed = 30 * share if units == "$/month" else Fraction(2 * 15)
    floor = 1000 * share if units == "$/month" else Fraction(40 * 15)
    assert row["Fixed"] == float(fixed)
    assert row["Minimum"] == float(floor - (energy + 5 + fixed))
    assert row["Total"] == float(floor)


def test_rows_go_by_meter_then_month_and_cut_months_end_at_end(site):
    rows = bill(site, start="2025-10-20", end="2025-11-05", tariff=tariff(site, {**HOURLY, "label": "order"}))
    assert [(r["MeterParam"], r["PeriodStart"], r["PeriodEnd"]) for r in rows] == [
        (m, start, end) for m in ("m1", "m2", "m3") for start, end in (
            ("2025-10-20T00:00:00-04:00", "2025-11-01T00:00:00-04:00"),
            ("2025-11-01T00:00:00-04:00", "2025-11-06T00:00:00-05:00"))]
    assert [r["kWh"] for r in rows[:2]] == [12 * 24, 5 * 24 + 1]


# ---- what is not known ---------------------------------------------------------------------------------

def test_a_gap_is_estimated_a_meter_without_readings_is_null(site):
    tariff_id = tariff(site, {**HOURLY, "label": "gaps", "fixedchargefirstmeter": 5})
    rows = {r["MeterParam"]: r for r in bill(site, start="2025-11-01", end="2025-11-30", tariff=tariff_id)}
    whole, gap, nothing = rows["m1"], rows["m2"], rows["m3"]
    assert whole["Estimated"] is False and whole["Coverage"] == 1.0
    assert gap["Estimated"] is True and gap["Coverage"] < 1
    assert gap["kWh"] == pytest.approx(2 * 721)           # interpolated across the gap: no energy lost
    assert nothing == {**nothing, "Tariff": tariff_id, "Energy": [], "Demand": [], "Fixed": None, "Minimum": None,
                       "Total": None, "kWh": None, "Coverage": 0.0, "Estimated": None}


def test_a_meter_without_tariff_has_null_amounts_and_the_default_prices_it(site):
    account = site.new_project("no-tariff", "America/Toronto")
    account.call("PUT", "/point", body={"MeterId": "m1", "SaveEvery": 15})
    account.push(readings("m1")[:743 * 4 + 1])    # March 2025: 743 hours
    row, = account.call("GET", "/bill", {"start": "2025-03-01", "end": "2025-03-31"})
    assert (row["Tariff"], row["Currency"], row["Total"], row["Energy"]) == (None, None, None, [])
    assert row["kWh"] == 743
    default = account.call("PUT", "/tariffs", body={**HOURLY, "default": True, "currency": "EUR"})
    row, = account.call("GET", "/bill", {"start": "2025-03-01", "end": "2025-03-31"})
    assert (row["Tariff"], row["Currency"]) == (default["id"], "EUR") and row["Total"] > 0
    own = account.call("PUT", "/tariffs", body={"label": "own", "fixedchargefirstmeter": 12})
    account.call("POST", "/point", body={"name": "m1", "Tariff": own["id"]})
    row, = account.call("GET", "/bill", {"start": "2025-03-01", "end": "2025-03-31"})
    assert (row["Tariff"], row["Total"], row["Energy"]) == (own["id"], 12.0, [])


# ---- arguments and answers -----------------------------------------------------------------------------

@pytest.mark.parametrize("params, status, words", [
    ({"end": "2025-11-01"}, 400, "start"),
    ({"start": "2025-11-01", "end": "2025-13-01"}, 400, "end"),
    ({"start": "2024-01-01", "end": "2025-11-01"}, 400, "366"),
    ({"start": "2025-11-01", "end": "2025-11-02", "meter": "nope"}, 404, "nope"),
    ({"start": "2025-11-01", "end": "2025-11-02", "tariff": "x"}, 400, "tariff"),
    ({"start": "2025-11-01", "end": "2025-11-02", "tariff": "777"}, 404, "tariff"),
])
def test_bad_arguments_say_what_is_wrong(site, params, status, words):
    assert words in site.call("GET", "/bill", params, status=status)["error"]


def test_past_what_one_answer_holds_a_413_names_the_file(site, monkeypatch):
    monkeypatch.setattr(bills, "MAX_METER_MONTHS", 5)
    error = site.call("GET", "/bill", {"start": "2025-10-01", "end": "2025-11-30"}, status=413)["error"]
    assert "6 rows" in error and "GET /file?start=2025-10-01&end=2025-11-30&bill=1" in error


def test_xml_and_yaml_carry_the_same_rows(site):
    params = {"start": "2025-11-01", "end": "2025-11-30", "meter": "m1",
              "tariff": tariff(site, {**HOURLY, "label": "formats"})}
    rows = bill(site, **params)
    as_yaml = site.request("GET", "/bill", params={**params, "responseType": "yaml"})
    assert yaml.safe_load(as_yaml.body) == rows
    from tests.api.test_fuzz import xml_to_data

    as_xml = site.request("GET", "/bill", params={**params, "responseType": "xml"})
    assert as_xml.headers["Content-Type"] == "application/xml"
    assert xml_to_data(as_xml.body, ("GET", "/bill"), 200) == rows


# ---- /file?bill=1 ---------------------------------------------------------------------------------------

def _file(site, params):
    answer = site.request("GET", "/file", params=params)
    assert answer.status_code == 303, answer.body
    return download(json.loads(answer.body)["url"])


def _flat_of(rows):
    fields = list(bills.LEAD)
    for row in rows:
        for line in row["Energy"]:
            fields += [f"kWh_p{line['period']}_t{line['tier']}", f"amount_p{line['period']}_t{line['tier']}"]
    return fields


def test_the_file_holds_the_same_rows_flat_csv_with_a_bom_and_total_to_the_cent(site):
    tariff_id = tariff(site, {**HOURLY, "label": "file", "currency": "CAD",
                              "demandratestructure": [[{"rate": 1.25}]], "demandweekdayschedule": [[0] * 24] * 12,
                              "demandweekendschedule": [[0] * 24] * 12, "fixedchargefirstmeter": 9.999})
    params = {"start": "2025-10-15", "end": "2025-11-30", "tariff": tariff_id}
    rows = bill(site, **params)
    as_json = json.loads(_file(site, {**params, "bill": "1", "type": "json"}))
    raw = _file(site, {**params, "bill": "true", "type": "csv"})
    assert raw.startswith(b"\xef\xbb\xbf")                              # UTF-8 byte order mark
    table = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"), newline="")))
    header = raw.decode("utf-8-sig").split("\r\n")[0].split(",")
    assert header[:5] == ["MeterParam", "PeriodStart", "PeriodEnd", "Tariff", "Currency"]
    assert header[5:9] == ["kWh_p0_t0", "amount_p0_t0", "kWh_p1_t0", "amount_p1_t0"]
    assert header[-8:] == ["kW_tou_p0_t0", "amount_tou_p0_t0", "Fixed", "Minimum", "Total", "kWh", "Coverage",
                           "Estimated"]
    assert len(as_json) == len(table) == len(rows) == 6
    for row, flat, line in zip(rows, as_json, table):
        assert list(flat) == header
        assert flat["Total"] == row["Total"] and flat["kWh"] == row["kWh"] and flat["Currency"] == "CAD"
        for energy in row["Energy"]:
            assert flat[f"kWh_p{energy['period']}_t{energy['tier']}"] == energy["kWh"]
            assert flat[f"amount_p{energy['period']}_t{energy['tier']}"] == energy["amount"]
        if row["Total"] is None:
            assert line["Total"] == "" and line["kWh"] == ""
        else:
            assert line["Total"] == str(Decimal(repr(row["Total"])).quantize(Decimal("0.01")))
            assert Decimal(line["Total"]) == round(Decimal(row["Total"]), 2)
            assert float(line["amount_p0_t0"]) == flat["amount_p0_t0"]     # other amounts exact
    as_xml = _file(site, {**params, "bill": "1", "type": "xml"})
    as_yaml = yaml.safe_load(_file(site, {**params, "bill": "1", "type": "yaml"}))
    assert as_yaml == as_json
    from tests.api.test_fuzz import xml_to_data

    assert xml_to_data(as_xml, ("GET", "/file"), 200) == as_json


@pytest.mark.parametrize("file_type", ["csv", "json", "xml", "yaml"])
def test_past_the_inline_bound_the_file_is_a_job_and_the_same_bytes(site, monkeypatch, file_type):
    from tests.api.test_export_jobs import follow_job

    params = {"start": "2025-10-01", "end": "2025-11-30", "bill": "1", "type": file_type,
              "tariff": tariff(site, {**HOURLY, "label": f"job {file_type}"})}
    expected = _file(site, params)
    monkeypatch.setattr(bills, "MAX_METER_MONTHS", 0)
    monkeypatch.setattr(exports, "BILL_SLICE_METERS", 1)        # a part per meter: the last one without energy
    assert follow_job(site.aws, site, site.request("GET", "/file", params=params)) == expected


def test_file_arguments(site):
    assert "not both" in site.call("GET", "/file", {"start": "2025-11-01", "end": "2025-11-02", "bill": "1",
                                                     "period": "day"}, status=400)["error"]
    assert "bill" in site.call("GET", "/file", {"start": "2025-11-01", "end": "2025-11-02", "bill": "yes"},
                               status=400)["error"]
    assert "tariff goes with bill=1" in site.call("GET", "/file", {"start": "2025-11-01", "end": "2025-11-02",
                                                                   "tariff": "1"}, status=400)["error"]


# ---- /graphics?bill=1 ----------------------------------------------------------------------------------

def test_the_bill_chart_stacks_each_months_charges_by_period(site, tmp_path):
    labels = ["Off-peak", "Mid-peak", "On-peak"]
    weekday = [[0] * 7 + [2] * 4 + [1] * 6 + [2] * 2 + [0] * 5] * 12
    tariff_id = tariff(site, {"label": "chart", "currency": "CAD", "energytoulabels": labels,
                              "energyratestructure": [[{"rate": 0.098}], [{"rate": 0.157}], [{"rate": 0.203}]],
                              "energyweekdayschedule": weekday, "energyweekendschedule": [[0] * 24] * 12,
                              "fixedchargefirstmeter": 25})
    site.call("POST", "/point", body={"name": "m1", "Tariff": tariff_id})
    site.call("POST", "/point", body={"name": "m2", "Tariff": tariff_id})
    try:
        rows = bill(site, start="2025-03-01", end="2025-11-30")
        months, stacks, currency = charts.bill_stacks(rows, bills.months(date(2025, 3, 1), date(2025, 11, 30)),
                                                      charts.period_names([{"energytoulabels": labels,
                                                                            "energyratestructure": [[]] * 3}]))
        assert currency == "CAD" and months[0] == "Mar 2025" and len(months) == 9
        assert [name for name, _values in stacks] == ["Energy: Off-peak", "Energy: Mid-peak", "Energy: On-peak",
                                                      "Fixed", "Minimum"]
        by_month = [sum(values[i] for _name, values in stacks) for i in range(9)]
        assert by_month[8] == pytest.approx(sum(r["Total"] for r in rows if r["PeriodStart"].startswith("2025-11")
                                                and r["Total"] is not None))
        answer = site.request("GET", "/graphics", params={"type": "bar", "bill": "1", "start": "2025-03-01",
                                                         "end": "2025-11-30", "width": 10, "height": 6})
        assert answer.status_code == 303, answer.body
        png = download(json.loads(answer.body)["url"])
        assert png.startswith(b"\x89PNG")
        (tmp_path / "bill.png").write_bytes(png)
        from PIL import Image

        assert Image.open(tmp_path / "bill.png").size == (1000, 600)
        one = site.request("GET", "/graphics", params={"bill": "1", "meter": "m1", "start": "2025-10-01",
                                                      "end": "2025-11-30"})
        assert one.status_code == 303
        assert site.request("GET", "/graphics", params={"bill": "1", "type": "pie"}).status_code == 400
    finally:
        site.call("POST", "/point", body={"name": "m1", "Tariff": ""})
        site.call("POST", "/point", body={"name": "m2", "Tariff": ""})


# ---- the demo's tariff (make run) ----------------------------------------------------------------------

def test_the_demo_tariff_is_ontarios_rpp_tou_with_its_holidays(site):
    from tools import demo_tariff

    published_2017 = ["2017-01-02", "2017-02-20", "2017-04-14", "2017-05-22", "2017-07-03", "2017-08-07",
                      "2017-09-04", "2017-10-09", "2017-12-25", "2017-12-26"]   # a utility's copy of the OEB's list
    assert [d.isoformat() for d in demo_tariff.holidays(2017)] == published_2017
    assert [d.isoformat() for d in demo_tariff.holidays(2021)][-2:] == ["2021-12-27", "2021-12-28"]
    project = site.new_project("demo-like", "America/Toronto")
    demo_tariff.ensure(project.project_id, date(2025, 11, 20))
    demo_tariff.ensure(project.project_id, date(2025, 11, 20))      # a kept state: not stored twice
    stored, = project.call("GET", "/tariffs")
    assert stored["default"] and stored["currency"] == "CAD" and stored["ignored"] == []
    assert "2025-12-26" in stored["holidays"] and "2026-12-28" in stored["holidays"]
    row, = bill(site, start="2025-10-01", end="2025-10-31", meter="m1", tariff=tariff(site, demo_tariff.tariff([2025])))
    expected = hours_by_slot(date(2025, 10, 1), date(2025, 10, 31), holidays=("2025-10-13",))   # Thanksgiving
    kwh: Counter = Counter()
    for (weekend, hour), count in expected.items():   # October is summer: on-peak 11-17, mid-peak 7-11 and 17-19
        kwh["Off-peak" if weekend or hour < 7 or hour >= 19 else "On-peak" if 11 <= hour < 17 else "Mid-peak"] += count
    names = ["Off-peak", "Mid-peak", "On-peak"]
    assert {names[line["period"]]: line["kWh"] for line in row["Energy"]} == kwh
    assert row["Total"] == pytest.approx(kwh["Off-peak"] * 0.098 + kwh["Mid-peak"] * 0.157 + kwh["On-peak"] * 0.203)
