"""GET /consumption and /file?period=: energy used per local period, from rollups kept at ingest.

What a user relies on: kWh per meter and hour/day/week/month/year of the project's local calendar,
DST days of 23 and 25 hours, boundaries interpolated, resets adding nothing, gaps losing nothing,
Coverage and 15-minute PeakDemand, null where nothing is known, clear 400s; and that the figures
from the rollups are exactly (to the µkWh) what the raw readings give, whatever order and batches
the readings arrived in. The reference here is written from the contract's words, independently of
chalicelib (Fractions, a linear scan, no bisect, no rollups).
"""
import csv
import io
import json
import random
import urllib.parse
import xml.etree.ElementTree as ET
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction
from zoneinfo import ZoneInfo

import pytest
import requests
import yaml

TORONTO = ZoneInfo("America/Toronto")


def iso(epoch):
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def at(day, hour=0, minute=0, zone=TORONTO):
    return int(datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone).timestamp())


def push(account, meter, points):
    """POST /data of (epoch, value) or (epoch, value, reset) points, 1000 a request."""
    for start in range(0, len(points), 1000):
        answer = account.request("POST", "/data", body={"readings": [
            {"MeterId": meter, "TimeStamping": iso(p[0]), "value": p[1], **({"reset": True} if p[2:] and p[2] else {})}
            for p in points[start:start + 1000]]})
        assert answer.status_code == 200, answer.body
        assert not json.loads(answer.body)["rejected"], answer.body


def get(account, status=200, **params):
    answer = account.request("GET", "/consumption?" + urllib.parse.urlencode(params))
    assert answer.status_code == status, answer.body
    return json.loads(answer.body) if params.get("responseType", "json") == "json" else answer


def register(account, name, save_every=5):
    answer = account.request("PUT", "/point", body={"MeterId": name, "SaveEvery": save_every})
    assert answer.status_code == 200, answer.body
    return json.loads(answer.body)["id"]


# ---- the reference: the contract's words, computed the slow and obvious way ---------------------------

def _hour_of(epoch, zone):
    local = datetime.fromtimestamp(epoch, zone)
    return local.hour, local.utcoffset()


def reference(points, zone, first, last, period, save_every=5, name="m"):  # noqa: C901  # the naive reference model, deliberately one linear reading of the definition
    """Rows of one meter, from its whole history (every reading, any order; (epoch, value) or (epoch, value,
    reset): a reading marked reset starts a new register series, the step into it counts nothing)."""
    points = sorted(points)
    regs = [(p[0], Fraction(Decimal(repr(p[1]))), bool(p[2:] and p[2])) for p in points]

    def used_up_to(x):   # energy used from the first reading to x: non-negative steps, linear between
        if not regs or x < regs[0][0] or x > regs[-1][0]:
            return None
        total = Fraction(0)
        for (t0, v0, _r0), (t1, v1, marked) in zip(regs, regs[1:]):
            step = Fraction(0) if marked else max(Fraction(0), v1 - v0)
            if x >= t1:
                total += step
            elif x > t0:
                part = step * 10 ** 6 * (x - t0) / (t1 - t0)      # µkWh, rounded half up
                return total + Fraction(int(part + Fraction(1, 2)), 10 ** 6)
            else:
                break
        return total

    def midnight(day):
        return int(datetime(day.year, day.month, day.day, tzinfo=zone).timestamp())

    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    if period == "hour":
        spans, demand = [], []
        for day in days:
            start, end = midnight(day), midnight(day + timedelta(days=1))
            starts = [m for m in range(start, end, 60)   # a local hour: the clock's hour and offset unchanged
                      if m == start or _hour_of(m - 60, zone) != _hour_of(m, zone)]
            for h, e in zip(starts, starts[1:] + [end]):
                spans.append((h, e))
                demand.append([(h, e)])
    else:
        key = {"day": lambda d: d, "week": lambda d: d.isocalendar()[:2], "month": lambda d: (d.year, d.month),
               "year": lambda d: d.year}[period]
        groups: list = []
        for day in days:
            if groups and key(groups[-1][-1]) == key(day):
                groups[-1].append(day)
            else:
                groups.append([day])
        spans = [(midnight(g[0]), midnight(g[-1] + timedelta(days=1))) for g in groups]
        demand = [[(midnight(d), midnight(d + timedelta(days=1))) for d in g] for g in groups]
    rows = []
    for (start, end), pieces in zip(spans, demand):
        value = None
        if regs:
            a, b = max(start, regs[0][0]), min(end, regs[-1][0])
            if a <= b:
                value = float(used_up_to(b) - used_up_to(a))
        count = sum(1 for t, _v, _r in regs if start <= t < end)
        expected = Fraction(end - start, save_every * 60)
        cov = float(round(min(Fraction(1), count / expected), 3)) if count else 0.0
        peak = None
        for piece_start, piece_end in pieces:
            edge = piece_start
            while edge + 900 <= piece_end:
                e0, e1 = used_up_to(edge), used_up_to(edge + 900)
                if e0 is not None and e1 is not None and (peak is None or (e1 - e0) * 4 > peak):
                    peak = (e1 - e0) * 4
                edge += 900
        rows.append({"MeterParam": name,
                     "PeriodStart": datetime.fromtimestamp(start, zone).isoformat(),
                     "PeriodEnd": datetime.fromtimestamp(end, zone).isoformat(),
                     "value": value, "Coverage": cov, "PeakDemand": None if peak is None else float(peak)})
    return rows


# ---- the contract's examples ---------------------------------------------------------------------------

@pytest.fixture
def toronto(make_account):
    account = make_account(timezone="America/Toronto")
    register(account, "meter1")
    return account


def test_a_fall_back_day_has_25_hours_and_offsets_in_period_bounds(toronto):
    day = date(2026, 11, 1)
    start, end = at(day), at(day + timedelta(days=1))
    points = [(t, round(1000 + (t - start) / 300 * 1.0, 6)) for t in range(start, end + 1, 300)]   # 1 kWh / 5 min
    push(toronto, "meter1", points)
    [row] = get(toronto, start="2026-11-01", end="2026-11-01")
    assert row == {"MeterParam": "meter1", "PeriodStart": "2026-11-01T00:00:00-04:00",
                   "PeriodEnd": "2026-11-02T00:00:00-05:00", "value": 300.0, "Coverage": 1.0, "PeakDemand": 12.0}
    hours = get(toronto, start="2026-11-01", end="2026-11-01", period="hour")
    assert len(hours) == 25
    assert [h["PeriodStart"] for h in hours[1:3]] == ["2026-11-01T01:00:00-04:00", "2026-11-01T01:00:00-05:00"]
    assert all(h["value"] == 12.0 and h["Coverage"] == 1.0 and h["PeakDemand"] == 12.0 for h in hours)


def test_a_spring_forward_day_has_23_hours(toronto):
    day = date(2026, 3, 8)
    start, end = at(day), at(day + timedelta(days=1))
    push(toronto, "meter1", [(t, float((t - start) // 300)) for t in range(start, end + 1, 300)])
    hours = get(toronto, start="2026-03-08", end="2026-03-08", period="hour")
    assert len(hours) == 23
    assert hours[2]["PeriodStart"] == "2026-03-08T03:00:00-04:00"
    [row] = get(toronto, start="2026-03-08", end="2026-03-08")
    assert row["value"] == 276.0 and row["Coverage"] == 1.0


def test_boundaries_are_interpolated_and_resets_add_nothing(toronto):
    day = date(2026, 5, 10)
    # 22:00 -> 02:00 across local midnight: 40 kWh over 4 h, 20 of them before midnight.
    push(toronto, "meter1", [(at(day, 22), 100.0), (at(day + timedelta(days=1), 2), 140.0),
                             # a reset on the 11th: 140 -> 5, then 5 -> 15 counts 10
                             (at(day + timedelta(days=1), 3), 5.0), (at(day + timedelta(days=1), 4), 15.0)])
    first, second = get(toronto, start="2026-05-10", end="2026-05-11")
    assert first["value"] == 20.0 and second["value"] == 30.0
    # 15-minute demand: 40 kWh over 4 h is 2.5 kWh a quarter (10 kW); 10 kWh over 3:00-4:00 is 10 kW too
    assert first["PeakDemand"] == 10.0 and second["PeakDemand"] == 10.0
    assert first["Coverage"] == round(1 / 288, 3)


def test_nothing_known_is_null_and_partial_history_counts_what_it_covers(toronto):
    day = date(2026, 6, 15)
    push(toronto, "meter1", [(at(day, 12), 10.0), (at(day, 12, 10), 12.0)])
    rows = get(toronto, start="2026-06-14", end="2026-06-16")
    assert [r["value"] for r in rows] == [None, 2.0, None]
    assert [r["Coverage"] for r in rows] == [0.0, round(2 / 288, 3), 0.0]
    assert [r["PeakDemand"] for r in rows] == [None, None, None]   # no whole quarter inside the history


def test_rows_by_period_then_meter_and_meter_filter(toronto):
    register(toronto, "meter2")
    day = date(2026, 7, 1)
    for name, rate in (("meter1", 1.0), ("meter2", 2.0)):
        push(toronto, name, [(t, rate * (t - at(day)) / 3600) for t in range(at(day), at(day, 3) + 1, 900)])
    rows = get(toronto, start="2026-07-01", end="2026-07-01", period="hour")
    assert [(r["PeriodStart"][11:13], r["MeterParam"]) for r in rows[:4]] == \
        [("00", "meter1"), ("00", "meter2"), ("01", "meter1"), ("01", "meter2")]
    only = get(toronto, start="2026-07-01", end="2026-07-01", period="hour", meter="meter2")
    assert [r["value"] for r in only[:3]] == [2.0, 2.0, 2.0] and {r["MeterParam"] for r in only} == {"meter2"}


def test_week_month_and_year_periods_are_cut_to_the_range(toronto):
    rows = get(toronto, start="2026-01-01", end="2026-12-31", period="week")
    assert rows[0]["PeriodStart"] == "2026-01-01T00:00:00-05:00" and rows[0]["PeriodEnd"] == "2026-01-05T00:00:00-05:00"
    assert rows[-1]["PeriodStart"] == "2026-12-28T00:00:00-05:00" and rows[-1]["PeriodEnd"] == "2027-01-01T00:00:00-05:00"
    assert len(get(toronto, start="2026-01-15", end="2026-03-02", period="month")) == 3
    assert len(get(toronto, start="2025-12-31", end="2026-01-01", period="year")) == 2


@pytest.mark.parametrize("params, words", [
    ({"start": "2026-01-01", "end": "2026-01-02", "period": "fortnight"}, "period must be one of"),
    ({"start": "2025-01-01", "end": "2026-01-02"}, "at most 366 days"),
    ({"start": "2026-01-01", "end": "2026-02-01", "period": "hour"}, "at most 31 days"),
    ({"start": "2026-02-30", "end": "2026-03-01"}, "start must be a day"),
    ({"start": "2026-01-01", "end": "01/02/2026"}, "end must be a day"),
    ({"end": "2026-01-01"}, "start is required"),
])
def test_bad_arguments_are_400_saying_what_is_wrong(toronto, params, words):
    assert words in get(toronto, status=400, **params)["error"]


def test_an_unknown_meter_is_404(toronto):
    get(toronto, status=404, start="2026-01-01", end="2026-01-01", meter="nope")


def test_xml_and_yaml_carry_the_same_rows(toronto):
    day = date(2026, 8, 3)
    push(toronto, "meter1", [(at(day, h), 10.0 * h) for h in range(0, 6)])
    rows = get(toronto, start="2026-08-03", end="2026-08-04")
    answer = get(toronto, start="2026-08-03", end="2026-08-04", responseType="yaml")
    assert answer.headers["Content-Type"] == "application/yaml" and yaml.safe_load(answer.body) == rows
    answer = get(toronto, start="2026-08-03", end="2026-08-04", responseType="xml")
    items = ET.fromstring(answer.body)
    assert items[0].find("PeriodStart").text == "2026-08-03T00:00:00-04:00"
    assert items[1].find("value").get("type") == "null" and items[0].find("value").text == "50.0"


@pytest.mark.parametrize("file_type", ["csv", "json", "xml", "yaml"])
def test_file_with_a_period_holds_the_same_rows(toronto, file_type):
    day = date(2026, 9, 1)
    push(toronto, "meter1", [(at(day) + 3600 * h, 3.0 * h + 0.123456) for h in range(0, 30)])
    rows = get(toronto, start="2026-09-01", end="2026-09-03", period="day")
    answer = toronto.request("GET", "/file?" + urllib.parse.urlencode(
        {"start": "2026-09-01", "end": "2026-09-03", "period": "day", "type": file_type}))
    assert answer.status_code == 303, answer.body
    content = requests.get(json.loads(answer.body)["url"], timeout=30).content.decode()
    if file_type == "csv":
        lines = list(csv.reader(io.StringIO(content, newline="")))
        assert lines[0] == ["MeterParam", "PeriodStart", "PeriodEnd", "value", "Coverage", "PeakDemand"]
        assert lines[1:] == [[r["MeterParam"], r["PeriodStart"], r["PeriodEnd"],
                              "" if r["value"] is None else repr(r["value"]), repr(r["Coverage"]),
                              "" if r["PeakDemand"] is None else repr(r["PeakDemand"])] for r in rows]
    elif file_type == "json":
        assert json.loads(content) == rows
    elif file_type == "yaml":
        assert yaml.safe_load(content) == rows
    else:
        items = ET.fromstring(content.encode())
        assert [(i.find("PeriodEnd").text, i.find("Coverage").text) for i in items] == \
            [(r["PeriodEnd"], repr(r["Coverage"])) for r in rows]


def test_file_rejects_a_bad_period(toronto):
    answer = toronto.request("GET", "/file?start=2026-01-01&end=2026-01-02&period=decade")
    assert answer.status_code == 400 and "period must be one of" in json.loads(answer.body)["error"]


# ---- rollups equal the raw readings, whatever order the readings came in -------------------------

def random_history(rng, start, days, outage=True):
    """Readings every 5 minutes (some at odd seconds), with gaps of minutes to hours, one outage of a day
    or two (whole local days without a reading), resets (the register going down), and meters replaced:
    a reading marked as the start of a new register series, its value anywhere (up included)."""
    points, t, value = [], start - rng.randrange(0, 3600), rng.uniform(0, 5000)
    down = start + rng.randrange(0, days * 86400 // 2) if outage else None
    marked = False
    while t < start + days * 86400:
        points.append((t, round(value, 6), marked))
        if down is not None and t >= down:
            t, down = t + rng.randrange(26 * 3600, 50 * 3600), None
        else:
            t += 300 if rng.random() < 0.85 else rng.choice([7, 31, 600, 3 * 3600])
        marked = rng.random() < 0.01
        if marked:
            value = rng.uniform(0, 300000)                                             # another meter's register
        else:
            value += rng.uniform(0, 3) if rng.random() > 0.02 else -value * rng.random()   # a reset now and then
    return points


def deliver_out_of_order(account, meter, points, rng):
    """Live readings first, then the older ones backfilled: a sparse sample one by one (neighbours hours
    apart, across midnights and gaps), then the rest in runs of readings, the runs in shuffled order
    (as an agent draining an outbox after an outage)."""
    cut = rng.randrange(len(points) // 3, len(points))
    late = points[:cut]
    push(account, meter, points[cut:])
    sparse = rng.sample(range(len(late)), max(1, len(late) // 40))
    for i in sparse:
        push(account, meter, [late[i]])
    rest = [p for i, p in enumerate(late) if i not in set(sparse)]
    runs = []
    while rest:
        size = rng.randrange(20, 100)
        runs.append(rest[:size])
        rest = rest[size:]
    rng.shuffle(runs)
    for run in runs:
        push(account, meter, run)


@pytest.mark.parametrize("seed, zone, first", [
    (1, "America/Toronto", date(2026, 10, 30)),      # across the fall-back day, 2026-11-01
    (2, "America/Toronto", date(2026, 3, 6)),        # across the spring-forward day, 2026-03-08
    (3, "Australia/Adelaide", date(2026, 4, 3)),     # +10:30 -> +09:30 on 2026-04-05
    (5, "Asia/Kathmandu", date(2026, 6, 1)),          # +05:45
    (7, "Australia/Lord_Howe", date(2026, 10, 2)),   # +10:30 -> +11:00 on 2026-10-04: a 30-minute change
])
def test_rollups_equal_the_raw_readings_over_random_histories(make_account, seed, zone, first):
    from chalicelib.metering import consumption, meters

    rng = random.Random(seed)
    tz = ZoneInfo(zone)
    account = make_account(timezone=zone)
    register(account, "m")
    points = random_history(rng, at(first, zone=tz), 5)
    deliver_out_of_order(account, "m", points, rng)
    project = account.view["project"]
    meter = meters.find(project, name="m")
    for period, days in (("day", 6), ("week", 11), ("month", 33), ("hour", 4)):
        last = first + timedelta(days=days)
        got = get(account, start=first.isoformat(), end=last.isoformat(), period=period)
        assert got == reference(points, tz, first, last, period), period
        raw = consumption.from_readings(project, [meter["meter_id"]], tz, first, last, period)[meter["meter_id"]]
        assert consumption.summaries(project, [meter], tz, first, last, period)[meter["meter_id"]] == raw


@pytest.mark.parametrize("seed, zone, first", [
    (11, "Australia/Lord_Howe", date(2026, 10, 3)),  # +10:30 -> +11:00 at 02:00 on 2026-10-04: a 30-minute change
    (12, "Asia/Kathmandu", date(2026, 6, 1)),         # +05:45: local hours end at UTC :15
    (13, "America/Toronto", date(2026, 10, 31)),     # across the fall-back day, 2026-11-01
])
def test_rollups_equal_the_raw_readings_when_delivered_live(make_account, time_machine, seed, zone, first):
    """The readings pushed as they happen (the cloud's clock moving with them: hot items, open hours, folds),
    some late by up to 90 minutes and some in small out-of-order runs: at each checkpoint, every hour and day
    from the rollups equals the raw readings delivered so far, and GET /consumption equals the reference."""
    from chalicelib.metering import consumption, meters

    rng = random.Random(seed)
    tz = ZoneInfo(zone)
    start = at(first, 12, zone=tz)
    time_machine.move_to(start - 7200, tick=False)
    account = make_account(timezone=zone)
    register(account, "m")
    points = random_history(rng, start, 1, outage=False)
    arrivals = sorted((t + (rng.choice([600, 2400, 3600, 5400]) if rng.random() < 0.08 else rng.randrange(1, 30)), i)
                      for i, (t, _v, _r) in enumerate(points))
    project = account.view["project"]
    delivered: list = []
    checkpoints = {arrivals[len(arrivals) * k // 4][0] for k in (1, 2, 3)} | {arrivals[-1][0]}
    for arrival, i in arrivals:
        time_machine.move_to(arrival, tick=False)
        push(account, "m", [points[i]])
        delivered.append(points[i])
        if arrival in checkpoints:
            meter = meters.find(project, name="m")
            last = first + timedelta(days=2)
            for period in ("hour", "day"):
                got = get(account, start=first.isoformat(), end=last.isoformat(), period=period)
                assert got == reference(delivered, tz, first, last, period), (period, arrival)
                raw = consumption.from_readings(project, [meter["meter_id"]], tz, first, last, period)[meter["meter_id"]]
                assert consumption.summaries(project, [meter], tz, first, last, period)[meter["meter_id"]] == raw


def test_a_backfill_into_a_long_gap_updates_every_day_it_spans(toronto):
    push(toronto, "meter1", [(at(date(2026, 1, 1)), 0.0), (at(date(2026, 3, 1)), 590.0)])   # 59 days
    push(toronto, "meter1", [(at(date(2026, 1, 31)), 300.0)])                               # arrives late
    rows = get(toronto, start="2026-01-01", end="2026-03-01", period="month")
    assert [r["value"] for r in rows] == [310.0, 280.0, 0.0]     # 10 kWh a day on either side of Jan 31
    days = get(toronto, start="2026-01-01", end="2026-03-01")
    assert reference([(at(date(2026, 1, 1)), 0.0), (at(date(2026, 1, 31)), 300.0), (at(date(2026, 3, 1)), 590.0)],
                     TORONTO, date(2026, 1, 1), date(2026, 3, 1), "day", name="meter1") == days


def test_a_refresh_racing_another_rereads_and_both_readings_count(toronto):
    """A second request's readings land between this refresh's reads and its write: the conditional write
    fails, the refresh reads again, and the rollups end up as the raw readings say."""
    from chalicelib.platform import aws

    day = date(2026, 4, 2)
    push(toronto, "meter1", [(at(day, 0), 0.0), (at(day, 1), 10.0)])
    client = aws.dynamodb()
    fired: list = []

    def interleave(params, **_kwargs):
        item = params.get("Item", {})
        if not fired and item.get("meter", {}).get("S", "").startswith("ROLLUP#"):
            fired.append(1)
            push(toronto, "meter1", [(at(day, 3), 50.0)])    # another request, complete, in between

    client.meta.events.register("before-parameter-build.dynamodb.PutItem", interleave)
    try:
        push(toronto, "meter1", [(at(day, 2), 20.0)])
    finally:
        client.meta.events.unregister("before-parameter-build.dynamodb.PutItem", interleave)
    assert fired
    [row] = get(toronto, start="2026-04-02", end="2026-04-02")
    assert row["value"] == 50.0 and row["PeakDemand"] == 30.0   # 30 kWh over 2:00-3:00: 7.5 kWh a quarter


def test_a_retried_batch_writes_no_rollup(toronto):
    from chalicelib.platform import aws

    day = date(2026, 4, 20)
    points = [(at(day, 0, 5 * i), float(i)) for i in range(12)]
    push(toronto, "meter1", points)
    calls = []
    client = aws.dynamodb()
    handler = lambda params, **_k: calls.append(params.get("Item", {}).get("meter", {}).get("S", ""))  # noqa: E731
    client.meta.events.register("before-parameter-build.dynamodb.PutItem", handler)
    try:
        push(toronto, "meter1", points)
    finally:
        client.meta.events.unregister("before-parameter-build.dynamodb.PutItem", handler)
    assert calls == []


def test_rebuild_computes_the_rollups_of_history_stored_before_them(toronto):
    """A meter whose readings were stored before rollups existed: rebuild gives what ingest would have."""
    from chalicelib.metering import meters, rollups
    from chalicelib.platform import db
    from chalicelib.tables import readings_table

    push(toronto, "meter1", [(at(date(2026, 1, 30)) + 3600 * h, 2.0 * h) for h in range(0, 24 * 5, 5)])
    expected = get(toronto, start="2026-01-29", end="2026-02-05")
    project = toronto.view["project"]
    meter = meters.find(project, name="meter1")
    for month in ("2026-01", "2026-02"):
        db.delete(readings_table.NAME, readings_table.rollup_key(project, meter["meter_id"], month))
    # Without rollups, every day reads as nothing, but the day of the last reading (its open hour's), computed
    # whole from the readings: the day's figure, never the open hour's alone.
    known = [r for r in get(toronto, start="2026-01-29", end="2026-02-05") if r["value"] is not None]
    assert len(known) == 1 and known[0] in expected and known[0]["value"] > 0
    rollups.rebuild(project, TORONTO, meter["meter_id"])
    assert get(toronto, start="2026-01-29", end="2026-02-05") == expected


def test_used_gives_the_charts_the_same_energy_per_period(toronto):
    from chalicelib.metering import consumption, days, meters

    day = date(2026, 11, 1)
    push(toronto, "meter1", [(at(day) + 600 * i, 1.5 * i) for i in range(0, 200)])
    project = toronto.view["project"]
    chosen = meters.all_meters(project)
    first, last, begin, finish = days.day_range(date(2026, 10, 31), date(2026, 11, 2), TORONTO)
    for period in ("hour", "day"):
        rows = get(toronto, start="2026-10-31", end="2026-11-02", period=period)
        [(meter_id, series)] = consumption.used(project, chosen, begin, finish, period, TORONTO).items()
        assert meter_id == chosen[0]["meter_id"]
        assert [v for _t, v in series] == [r["value"] for r in rows]
        assert [datetime.fromtimestamp(t, TORONTO).isoformat() for t, _v in series] == [r["PeriodStart"] for r in rows]


def test_one_request_with_several_meters_refreshes_each_of_them(toronto):
    register(toronto, "meter2")
    register(toronto, "meter3")
    day = date(2026, 2, 10)
    histories = {name: [(at(day) - 7200 + 900 * i, round(rate * i, 6)) for i in range(0, 110)]
                 for name, rate in (("meter1", 1.25), ("meter2", 0.5), ("meter3", 3.0))}
    answer = toronto.request("POST", "/data", body={"readings": [
        {"MeterId": name, "TimeStamping": iso(t), "value": v} for name, points in histories.items() for t, v in points]})
    assert json.loads(answer.body)["accepted"] == 330
    rows = get(toronto, start="2026-02-09", end="2026-02-11")
    for name, points in histories.items():
        assert [r for r in rows if r["MeterParam"] == name] == \
            reference(points, TORONTO, date(2026, 2, 9), date(2026, 2, 11), "day", name=name)


def test_registers_become_exact_micro_kwh():
    """The float fast path of rollups.micro gives the stored decimal exactly (the µkWh identity rests on it)."""
    from chalicelib.metering.rollups import micro

    rng = random.Random(7)
    values = [0.0, 0.000001, 28540.24, 4294967.295, 999999999.999999, 123456789.123456, -12.5, 1e12 + 0.5, 9.99e14]
    values += [round(rng.randrange(-10 ** digits, 10 ** digits) / 10 ** 6, 6)
               for digits in (4, 8, 12, 15) for _ in range(20000)]
    for value in values:
        assert micro(value) == int(Decimal(repr(value)).scaleb(6)), value
