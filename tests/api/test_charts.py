"""What the charts show: energy used per local hour/day (not registers), the hierarchy counted once in
pie and bar, at most 12 series, data reduced while read, and layouts where nothing leaves the image."""
import json
import math
import random
import urllib.parse
from datetime import date, datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from chalicelib.outputs import chart_render, charts

TORONTO = ZoneInfo("America/Toronto")
UTC = ZoneInfo("UTC")


def iso(epoch):
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---- buckets ------------------------------------------------------------------------------------

def test_hour_edges_follow_the_local_clock_on_dst_days():
    spring = charts.bucket_edges(date(2026, 3, 8), date(2026, 3, 8), TORONTO, "hour")
    autumn = charts.bucket_edges(date(2026, 11, 1), date(2026, 11, 1), TORONTO, "hour")
    assert (len(spring) - 1, len(autumn) - 1) == (23, 25)
    assert all(b - a == 3600 for a, b in zip(spring, spring[1:]))
    kolkata = charts.bucket_edges(date(2026, 1, 1), date(2026, 1, 1), ZoneInfo("Asia/Kolkata"), "hour")
    assert len(kolkata) == 25 and all(datetime.fromtimestamp(e, ZoneInfo("Asia/Kolkata")).minute == 0 for e in kolkata)
    days = charts.bucket_edges(date(2026, 10, 31), date(2026, 11, 2), TORONTO, "day")
    assert [b - a for a, b in zip(days, days[1:])] == [86400, 90000, 86400]


def test_a_charts_hours_are_the_consumption_hours_on_a_30_minute_dst_day():
    """Lord Howe moves its clocks 30 minutes: the 02:00 hour starts at 02:30, and every boundary is
    local :00 but that one. The chart buckets by GET /consumption's hours, or its values would not land."""
    from chalicelib.metering import consumption

    lord_howe = ZoneInfo("Australia/Lord_Howe")
    day = date(2026, 10, 4)
    edges = charts.bucket_edges(day, day, lord_howe, "hour")
    assert list(zip(edges, edges[1:])) == consumption.periods(day, day, lord_howe, "hour")
    local = [datetime.fromtimestamp(e, lord_howe) for e in edges]
    assert [(t.hour, t.minute) for t in local[:4]] == [(0, 0), (1, 0), (2, 30), (3, 0)]
    assert len(edges) - 1 == 24 and edges[-1] - edges[0] == 23 * 3600 + 1800


# ---- hierarchy and the bound ----------------------------------------------------------------------

def meter(i, parent=None, name=None):
    return {"meter_id": i, "name": name or f"m{i}", **({"parent_id": parent} if parent else {})}


def energy_of(*values, quality=None):
    """charts.Energy of these kWh per bucket (all measured unless quality says)."""
    return charts.Energy([float(v) for v in values], list(quality or [chart_render.MEASURED] * len(values)))


def totals_of(shares):
    return {share.label: float(sum(v for v in share.values if v == v)) for share in shares}


def test_shares_count_each_kwh_once_through_two_levels():
    chosen = [meter(1, name="main"), meter(2, 1, "floor1"), meter(3, 2, "suite1"), meter(4, 2, "suite2"),
              meter(5, 1, "hvac"), meter(6, name="solo")]
    energy = {1: energy_of(100), 2: energy_of(60), 3: energy_of(30), 4: energy_of(20), 5: energy_of(25), 6: energy_of(7)}
    got = totals_of(charts.shares(chosen, energy))
    assert got == {"main (unmetered)": 15.0, "floor1 (unmetered)": 10.0, "suite1": 30.0, "suite2": 20.0,
                   "hvac": 25.0, "solo": 7.0}
    assert sum(got.values()) == pytest.approx(100.0 + 7.0)          # the roots' energy, no more
    # children using more than their parent: no negative unmetered share
    assert totals_of(charts.shares(chosen[:2], {1: energy_of(50), 2: energy_of(60)})) == {"floor1": 60.0}


def test_unmetered_is_per_bucket_and_as_estimated_as_its_worst_meter():
    chosen = [meter(1, name="main"), meter(2, 1, "a")]
    E, M = chart_render.ESTIMATED, chart_render.MEASURED
    energy = {1: energy_of(10, 10, math.nan, 10), 2: energy_of(4, 12, 3, 4, quality=[M, M, M, E])}
    unmetered, a = charts.shares(chosen, energy)
    assert unmetered.label == "main (unmetered)"
    assert unmetered.values.tolist() == pytest.approx([6, 0, math.nan, 6], nan_ok=True)   # never below 0
    assert unmetered.quality.tolist() == [M, M, M, E]


def test_a_group_without_all_of_a_parents_sub_meters_shows_its_rest():
    family = [meter(1, name="main"), meter(2, 1, "a"), meter(3, 1, "b"), meter(4, name="c")]
    energy = {1: energy_of(10), 2: energy_of(4), 3: energy_of(3), 4: energy_of(2)}
    assert totals_of(charts.shares([family[0], family[1]], energy, family)) == {"main (rest)": 6.0, "a": 4.0}
    assert totals_of(charts.shares(family[:3], energy, family)) == {"main (unmetered)": 3.0, "a": 4.0, "b": 3.0}
    assert totals_of(charts.shares([family[0], family[3]], energy, family)) == {"main": 10.0, "c": 2.0}


def share(label, *values, quality=None):
    import numpy as np

    return charts.Share(label, np.array(values, dtype=float),
                        np.array(quality or [chart_render.MEASURED] * len(values)))


def test_at_most_12_series_the_largest_11_and_others():
    items = [share(f"m{i}", float(i)) for i in range(1, 31)]
    top = charts.largest(items)
    assert len(top) == 12
    assert [s.label for s in top[:11]] == [f"m{i}" for i in range(30, 19, -1)]
    assert top[-1].label == "19 others" and top[-1].values.tolist() == [sum(range(1, 20))]
    assert [s.label for s in charts.largest(items[:12])] == [f"m{i}" for i in range(12, 0, -1)]


def test_others_sum_per_bucket_unknown_only_where_none_is_known():
    E, M, P = chart_render.ESTIMATED, chart_render.MEASURED, chart_render.PARTIAL
    items = [share(f"big{i}", 100, 100, 100) for i in range(11)]
    items += [share("x", 1, math.nan, math.nan, quality=[E, M, M]), share("y", 2, math.nan, 5, quality=[M, E, P])]
    others = charts.largest(items)[-1]
    assert others.label == "2 others"
    assert others.values.tolist() == pytest.approx([3, math.nan, 5], nan_ok=True)
    assert others.quality.tolist() == [E, M, P]     # the worst of those known in each bucket
    energy, estimated = charts.totals([share("z", 1, 2, 4, quality=[E, M, E])])
    assert energy == [("z", 7.0)] and estimated == [5.0]


def test_min_max_reducer_keeps_each_columns_extremes_and_the_spike():
    rng = random.Random(3)
    times = list(range(0, 1_000_000, 10))
    values = [rng.gauss(0, 1) for _ in times]
    values[54_321] = 99.0
    reducer = chart_render.MinMaxReducer(0, 1_000_000, 400)
    for t, v in zip(times, values):
        reducer.add(t, v)
    got_t, got_v = reducer.points()
    assert len(got_t) <= 800 and got_t == sorted(got_t) and 99.0 in got_v
    ref_t, ref_v = chart_render.reduce_minmax(times, values, 400)
    # the same extremes per column as the reference reduction
    for column in range(0, 400, 37):
        lo, hi = column * 2500, (column + 1) * 2500
        mine = [v for t, v in zip(got_t, got_v) if lo <= t < hi]
        theirs = [v for t, v in zip(ref_t, ref_v) if lo <= t < hi]
        assert (min(mine), max(mine)) == (min(theirs), max(theirs))


# ---- through the route -----------------------------------------------------------------------------

@pytest.fixture
def drawn(monkeypatch):
    """What the route hands to the renderer (the real renderer still draws)."""
    calls = []
    real = chart_render.render_png

    def record(kind, **kwargs):
        calls.append((kind, kwargs))
        return real(kind, **kwargs)

    monkeypatch.setattr(chart_render, "render_png", record)
    return calls


def get_chart(account, **params):
    answer = account.request("GET", "/graphics?" + urllib.parse.urlencode(params))
    assert answer.status_code == 303, answer.body
    return json.loads(answer.body)


def push(account, readings):
    for i in range(0, len(readings), 1000):
        answer = json.loads(account.request("POST", "/data", body={"readings": readings[i:i + 1000]}).body)
        assert not answer["rejected"], answer["rejected"][:3]


START = int(datetime(2026, 1, 10, tzinfo=timezone.utc).timestamp())
DAYS = {"start": "2026-01-10", "end": "2026-01-11"}


@pytest.fixture
def building(make_account):
    """main feeds a and b; c stands alone; 15-minute readings over two days at constant power."""
    account = make_account()
    power = {"main": 10.0, "a": 4.0, "b": 3.0, "c": 2.0}      # kW: main's unmetered share is 3 kW
    for name in power:
        account.request("PUT", "/point", body={"MeterId": name, "SaveEvery": 15})
    for name in ("a", "b"):
        account.request("POST", "/point", body={"name": name, "Parent": "main"})
    push(account, [{"MeterId": name, "TimeStamping": iso(START + i * 900), "value": round(100 + kw * i / 4, 3)}
                   for i in range(192) for name, kw in power.items()])
    return account


def test_pie_and_bar_show_the_parent_as_children_plus_unmetered(building, drawn):
    for kind in ("pie", "bar"):
        get_chart(building, type=kind, **DAYS)
    for kind, args in drawn:
        got = dict(args["energy"])
        hours = 191 / 4        # from the first reading to the last of the two days
        assert got == pytest.approx({"a": 4 * hours, "main (unmetered)": 3 * hours, "b": 3 * hours,
                                     "c": 2 * hours}), kind
        assert sum(got.values()) == pytest.approx((10 + 2) * hours)  # main and c: nothing counted twice


def test_the_line_chart_shows_energy_used_per_local_hour(building, drawn):
    get_chart(building, type="line", **DAYS)
    (kind, args), = drawn
    assert kind == "line" and args["bucket"] == "hour"
    by_name = {s.name: s for s in args["series"]}
    assert set(by_name) == {"main (unmetered)", "a", "b", "c"}   # each kWh once, as pie and bar count it
    main = by_name["main (unmetered)"]
    assert len(main.edges) == 49 and len(main.values) == 48
    assert main.values[1:-1] == pytest.approx([3.0] * 46)        # kWh per hour at 10 - 4 - 3 kW, not a register
    assert by_name["a"].values[1:-1] == pytest.approx([4.0] * 46)


def test_beyond_7_days_the_line_chart_is_per_day(building, drawn):
    get_chart(building, type="line", start="2026-01-01", end="2026-01-20")
    (_kind, args), = drawn
    assert args["bucket"] == "day"
    main = next(s for s in args["series"] if s.name == "main (unmetered)")
    assert len(main.values) == 20 and main.values[9] == pytest.approx(3.0 * 24)


def test_the_meter_chart_shows_its_register_and_its_use(building, drawn):
    get_chart(building, meter="a", **DAYS)
    (kind, args), = drawn
    assert kind == "meter"
    (register,) = args["series"]
    assert register.values[0] == 100.0 and register.values[-1] == pytest.approx(100 + 4 * 191 / 4)
    assert args["use"].values[5] == pytest.approx(4.0)


def test_many_meters_give_12_series(make_account, drawn):
    account = make_account()
    names = [f"suite {i:02d}" for i in range(20)]
    for name in names:
        account.request("PUT", "/point", body={"MeterId": name, "SaveEvery": 60})
    push(account, [{"MeterId": name, "TimeStamping": iso(START + h * 3600), "value": float(h * (k + 1))}
                   for h in range(24) for k, name in enumerate(names)])
    for kind in ("line", "pie", "bar"):
        get_chart(account, type=kind, start="2026-01-10")
    line, pie, bar = (args for _kind, args in drawn)
    assert [s.name for s in line["series"]] == [f"suite {i:02d}" for i in range(19, 8, -1)] + ["9 others"]
    assert line["series"][-1].values[3] == pytest.approx(sum(range(1, 10)))
    for args in (pie, bar):
        assert len(args["energy"]) == 12 and args["energy"][-1] == ("9 others", pytest.approx(23 * 45))


def test_charts_show_what_get_consumption_answers_boundaries_interpolated(make_account, drawn):
    """The charts' energy is GET /consumption's: a step that straddles the range's start counts for the
    part inside it (the raw-reading charts before rollups counted nothing before the first reading),
    whether the reading before lies in the day before (read by key) or days earlier (a gap)."""
    account = make_account()
    for name in ("m", "gap"):
        account.request("PUT", "/point", body={"MeterId": name, "SaveEvery": 60})
    # m: a reading every 2 hours from 1 hour before the range, 6 kWh a step (3 kW)
    push(account, [{"MeterId": "m", "TimeStamping": iso(START - 3600 + i * 7200), "value": 100.0 + 6 * i}
                   for i in range(25)])
    # gap: a reading 3 days before the range, the next 1 hour into it, and on after the range's end
    push(account, [{"MeterId": "gap", "TimeStamping": iso(t), "value": v}
                   for t, v in [(START - 3 * 86400, 0.0), (START + 3600, 73.0), (START + 3 * 86400, 73.0 + 71 * 2)]])
    for kind in ("line", "pie"):
        get_chart(account, type=kind, **DAYS)
    (_line, line), (_pie, pie) = drawn
    by_name = {s.name: s for s in line["series"]}
    assert by_name["m"].values[0] == pytest.approx(3.0)            # half of the straddling step
    assert by_name["m"].values[:47] == pytest.approx([3.0] * 47)
    assert by_name["gap"].values[0] == pytest.approx(1.0)          # 73 kWh over 73 hours: 1 in the first
    assert by_name["gap"].values[1:] == pytest.approx([2.0] * 47)  # 142 kWh over 71 hours
    answer = account.request("GET", "/consumption?" + urllib.parse.urlencode({**DAYS, "period": "hour"}))
    body = json.loads(answer.body)
    rows = body if isinstance(body, list) else next(v for v in body.values() if isinstance(v, list))
    for name, series in by_name.items():
        hourly = [math.nan if row["value"] is None else row["value"] for row in rows if row["MeterParam"] == name]
        if name == "m":   # its last reading is at the last hour's start: 0.0 over no time there, blank in a chart
            assert hourly[47] == 0.0 and math.isnan(series.values[47])
            hourly[47] = math.nan
        assert series.values == pytest.approx(hourly, nan_ok=True), name
    assert dict(pie["energy"]) == {"m": pytest.approx(144 + 100 - 103),   # from the interpolated 103 kWh
                                   "gap": pytest.approx(1 + 2 * 47)}


# ---- estimated and partial periods -------------------------------------------------------------------

def quarter_hours(name, first, last, kw=4.0, skip=()):
    """Readings every 15 minutes from epoch first to last (included) at constant power, but those in skip."""
    return [{"MeterId": name, "TimeStamping": iso(t), "value": round(100 + kw * (t - first) / 3600, 3)}
            for t in range(first, last + 1, 900) if not any(a <= t < b for a, b in skip)]


def test_a_gap_in_the_readings_is_estimated_the_rest_measured(make_account, drawn):
    """Hours with fewer readings than SaveEvery asks (GET /consumption's Coverage < 1) are estimated;
    pie and bar count, of each meter, the energy of its days with a gap as estimated."""
    account = make_account()
    account.request("PUT", "/point", body={"MeterId": "m", "SaveEvery": 15})
    gap = (START + 10 * 3600, START + 13 * 3600)           # no reading from 10:00 to 12:45 on the first day
    push(account, quarter_hours("m", START, START + 3 * 86400, skip=[gap]))
    get_chart(account, type="line", **DAYS)
    get_chart(account, type="pie", **DAYS)
    (_line, line), (_pie, pie) = drawn
    (series,) = line["series"]
    assert [h for h, how in enumerate(series.quality) if how != chart_render.MEASURED] == [10, 11, 12]
    assert {series.quality[h] for h in (10, 11, 12)} == {chart_render.ESTIMATED}
    assert series.values[10:13] == pytest.approx([4.0] * 3)          # the gap loses no energy
    rows = account.call("GET", "/consumption", {**DAYS, "period": "hour"})
    assert [h for h, row in enumerate(rows) if row["Coverage"] < 1] == [10, 11, 12]   # its Coverage says the same
    assert pie["energy"] == [("m", pytest.approx(4.0 * 48))]
    assert pie["estimated"] == [pytest.approx(4.0 * 24)]            # the first day's energy: it has the gap


def test_today_is_partial_and_the_chart_ends_now(make_account, drawn, time_travel):
    now = START + 2 * 86400 + 14 * 3600                    # 2026-01-12 14:00 UTC
    time_travel.move_to(now, tick=False)
    account = make_account()
    account.request("PUT", "/point", body={"MeterId": "m", "SaveEvery": 15})
    push(account, quarter_hours("m", START, now))
    get_chart(account, type="line", start="2026-01-03", end="2026-01-12")
    (_kind, args), = drawn
    assert args["bucket"] == "day" and args["period"][1] == datetime(2026, 1, 12, 14)   # local (UTC here)
    (series,) = args["series"]
    assert series.values[-3:] == pytest.approx([96.0, 96.0, 56.0])  # 10th, 11th, and today until 14:00
    assert series.quality[-3:] == [chart_render.MEASURED, chart_render.MEASURED, chart_render.PARTIAL]
    # drawn: the solid line stops at the last full day; today is its own dotted step, not a drop of it
    import numpy as np

    fig = chart_render.figure("line", **args)
    drawn_y = {style: [y for line in fig.axes[0].get_lines() if line.get_linestyle() == style
                       for y in np.asarray(line.get_ydata(), dtype=float).tolist() if y == y]
               for style in ("-", ":")}
    assert min(drawn_y["-"]) == pytest.approx(96.0)
    assert drawn_y[":"] == pytest.approx([56.0, 56.0])


def test_where_a_meters_readings_begin_and_end_its_days_are_partial(make_account, drawn):
    account = make_account()
    account.request("PUT", "/point", body={"MeterId": "m", "SaveEvery": 15})
    push(account, quarter_hours("m", START + 12 * 3600, START + 2 * 86400 + 12 * 3600))   # noon to noon
    get_chart(account, type="line", start="2026-01-08", end="2026-01-16")
    (_kind, args), = drawn
    (series,) = args["series"]
    known = [(round(v, 3), how) for v, how in zip(series.values, series.quality) if v == v]
    assert known == [(48.0, chart_render.PARTIAL), (96.0, chart_render.MEASURED), (48.0, chart_render.PARTIAL)]


# ---- a chosen group of meters -------------------------------------------------------------------------

def get_group(account, names, status=303, **params):
    query = urllib.parse.urlencode([("meter", name) for name in names] + list(params.items()))
    answer = account.request("GET", "/graphics?" + query)
    assert answer.status_code == status, answer.body
    return json.loads(answer.body)


def test_a_chosen_group_of_meters(building, drawn):
    hours = 191 / 4
    get_group(building, ["a", "b"], type="pie", **DAYS)
    get_group(building, ["main", "a"], type="bar", **DAYS)        # main's rest holds b's energy too
    get_group(building, ["a", "c"], type="line", **DAYS)
    get_group(building, ["c", "main", "a", "b"], **DAYS)         # the type's default: pie
    (pie_kind, pie), (bar_kind, bar), (line_kind, line), (_default, everything) = drawn
    assert (pie_kind, bar_kind, line_kind) == ("pie", "bar", "line")
    assert dict(pie["energy"]) == pytest.approx({"a": 4 * hours, "b": 3 * hours})
    assert "(a, b)" in pie["title"]
    assert dict(bar["energy"]) == pytest.approx({"main (rest)": 6 * hours, "a": 4 * hours})
    assert {s.name for s in line["series"]} == {"a", "c"}
    assert dict(everything["energy"]) == pytest.approx({"main (unmetered)": 3 * hours, "a": 4 * hours,
                                                        "b": 3 * hours, "c": 2 * hours})
    assert "(4 meters)" in everything["title"]


def test_a_group_of_one_meter_is_its_own_chart_and_unknown_names_are_404(building, drawn):
    get_group(building, ["a", "a"], type="pie", **DAYS)
    assert drawn[-1][0] == "meter"
    assert "'nope'" in get_group(building, ["a", "nope"], status=404, **DAYS)["error"]
    assert "'B' (did you mean 'b'?)" in get_group(building, ["a", "B"], status=404, **DAYS)["error"]
    answer = get_group(building, ["a,b"], status=404, **DAYS)
    assert "no meter named 'a,b'" in answer["error"] and "several meter= arguments" in answer["error"]
    assert "at most 1000" in get_group(building, ["a"] * 1001, status=400, **DAYS)["error"]
    assert get_group(building, ["a", ""], status=400, **DAYS)["error"] == "meter must not be empty"
    # Each name of a group goes through the check every name does (validation.name) before any lookup.
    error = get_group(building, ["a", "z" * 5000], status=400, **DAYS)["error"]
    assert error.startswith("meter is too long: 5000 characters, at most 64 ('zzz") and len(error) < 120
    get_group(building, [" a ", "b\u0020"], type="bar", **DAYS)     # trimmed as stored names are
    assert {name for name, _kwh in drawn[-1][1]["energy"]} == {"a", "b"}


def test_a_name_with_a_comma_is_one_meter(make_account, drawn):
    """Meter names may hold commas: each meter= is one name, so a group is several meter= arguments."""
    account = make_account()
    for name in ("Suite 3, north", "b"):
        account.request("PUT", "/point", body={"MeterId": name, "SaveEvery": 15})
        push(account, quarter_hours(name, START, START + 86400))
    get_group(account, ["Suite 3, north"], **DAYS)
    get_group(account, ["Suite 3, north", "b"], type="bar", **DAYS)
    (one, _args), (_bar, bar) = drawn
    assert one == "meter" and {name for name, _kwh in bar["energy"]} == {"Suite 3, north", "b"}


def test_others_are_counted_the_same_way_in_pie_bar_and_line(make_account, drawn):
    """The same shares (a parent as its sub-meters and its unmetered rest), the same largest 11 and
    the same "N others", with the same energy, in the three charts."""
    account = make_account()
    power = {"main": 60.0, **{f"sub{i}": 5.0 + i for i in range(4)}, **{f"m{i:02d}": 1.0 + i for i in range(14)}}
    for name in power:
        account.request("PUT", "/point", body={"MeterId": name, "SaveEvery": 60})
    for i in range(4):
        account.request("POST", "/point", body={"name": f"sub{i}", "Parent": "main"})
    push(account, [{"MeterId": name, "TimeStamping": iso(START + h * 3600), "value": 10.0 + kw * h}
                   for h in range(25) for name, kw in power.items()])
    for kind in ("pie", "bar", "line"):
        get_chart(account, type=kind, start="2026-01-10")
    (_p, pie), (_b, bar), (_l, line) = drawn
    labels = [name for name, _kwh in pie["energy"]]
    assert labels == [name for name, _kwh in bar["energy"]] == [s.name for s in line["series"]]
    assert labels[0] == "main (unmetered)" and labels[-1] == "8 others"
    line_totals = [sum(v for v in s.values if v == v) for s in line["series"]]
    assert line_totals == pytest.approx([kwh for _name, kwh in pie["energy"]])
    assert sum(line_totals) == pytest.approx(24 * (60 + sum(1.0 + i for i in range(14))))   # each kWh once


# ---- layout -----------------------------------------------------------------------------------------

LONG = [f"Suite {i:03d} — a tenant with a very long name indeed" for i in range(11)] + ["288 others"]
T0 = datetime(2026, 1, 5, tzinfo=TORONTO).timestamp()


def layout_case(kind):
    edges = [T0 + 3600 * h for h in range(169)]
    if kind in ("pie", "bar"):
        return {"energy": [(name, 100.0 + 50 * i) for i, name in enumerate(LONG)]}
    if kind == "line":
        return {"series": [chart_render.UseSeries(name, edges, [1.0 + i + math.sin(h / 5) for h in range(168)])
                           for i, name in enumerate(LONG)]}
    return {"series": [chart_render.LineSeries(LONG[0], edges, [1e5 + h for h in range(169)])],
            "use": chart_render.UseSeries(LONG[0], edges, [1.0] * 168)}


@pytest.mark.parametrize("size", [(400, 300), (450, 300), (1600, 900), (4000, 4000), (4000, 300), (400, 4000)],
                         ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("kind", ["pie", "bar", "line", "meter"])
def test_nothing_is_cut_off(kind, size):
    width, height = size
    title = "A condominium with a long name: energy used by every suite of the building"
    fig = chart_render.figure(kind, width_px=width, height_px=height, title=title,
                                     tz_name="America/Toronto", period=(datetime(2026, 1, 5), datetime(2026, 1, 12)),
                                     **layout_case(kind))
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]  # the Agg canvas's
    box = fig.get_tightbbox(renderer)     # inches: everything drawn, legends and titles included
    assert box.x0 >= -0.01 and box.y0 >= -0.01, box
    assert box.x1 <= width / 100 + 0.01 and box.y1 <= height / 100 + 0.01, box
    for legend in fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend()]:
        extent = legend.get_window_extent(renderer)
        assert extent.x0 >= 0 and extent.x1 <= width and extent.y0 >= 0 and extent.y1 <= height
        # and every entry is there (names may be shortened, never dropped at 12 series)
        assert len(legend.get_texts()) == (1 if kind == "bar" else 12)
    for ax in fig.axes:                   # the plot keeps a usable area
        position = ax.get_position()
        assert position.width * width >= 60 and position.height * height >= 40
    suptitle = fig._suptitle.get_window_extent(renderer)  # type: ignore[attr-defined]
    assert suptitle.x0 >= 0 and suptitle.x1 <= width and suptitle.y1 <= height
