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


def test_shares_count_each_kwh_once_through_two_levels():
    chosen = [meter(1, name="main"), meter(2, 1, "floor1"), meter(3, 2, "suite1"), meter(4, 2, "suite2"),
              meter(5, 1, "hvac"), meter(6, name="solo")]
    energy = {1: 100.0, 2: 60.0, 3: 30.0, 4: 20.0, 5: 25.0, 6: 7.0}
    got = dict(charts.shares(chosen, energy))
    assert got == {"main (unmetered)": 15.0, "floor1 (unmetered)": 10.0, "suite1": 30.0, "suite2": 20.0,
                   "hvac": 25.0, "solo": 7.0}
    assert sum(got.values()) == pytest.approx(100.0 + 7.0)          # the roots' energy, no more
    # children using more than their parent: no negative unmetered share
    assert dict(charts.shares(chosen[:2], {1: 50.0, 2: 60.0})) == {"floor1": 60.0}


def test_at_most_12_series_the_largest_11_and_others():
    items = [(f"m{i}", float(i)) for i in range(1, 31)]
    top = charts.largest(items)
    assert len(top) == 12
    assert [name for name, _ in top[:11]] == [f"m{i}" for i in range(30, 19, -1)]
    assert top[-1] == ("19 others", sum(range(1, 20)))
    assert charts.largest(items[:12]) == sorted(items[:12], key=lambda x: -x[1])


def test_others_count_a_parent_and_its_child_once():
    chosen = [meter(1), meter(2, 1), meter(3, 2), meter(4)]
    assert sorted(charts.counted_once(chosen, {1, 2, 3, 4})) == [1, 4]
    assert sorted(charts.counted_once(chosen, {2, 3})) == [2]
    assert sorted(charts.counted_once(chosen, {3, 4})) == [3, 4]


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
    assert set(by_name) == {"main", "a", "b", "c"}
    main = by_name["main"]
    assert len(main.edges) == 49 and len(main.values) == 48
    assert main.values[1:-1] == pytest.approx([10.0] * 46)       # kWh per hour at 10 kW, not a register


def test_beyond_7_days_the_line_chart_is_per_day(building, drawn):
    get_chart(building, type="line", start="2026-01-01", end="2026-01-20")
    (_kind, args), = drawn
    assert args["bucket"] == "day"
    main = next(s for s in args["series"] if s.name == "main")
    assert len(main.values) == 20 and main.values[9] == pytest.approx(10.0 * 24)


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
        assert series.values == pytest.approx(hourly, nan_ok=True), name
    assert dict(pie["energy"]) == {"m": pytest.approx(144 + 100 - 103),   # from the interpolated 103 kWh
                                   "gap": pytest.approx(1 + 2 * 47)}


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
    fig = chart_render._build_figure(kind, width_px=width, height_px=height, title=title,
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
