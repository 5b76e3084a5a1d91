"""Tests of chalicelib.chart_render: PNG sizes, no-data charts, min/max reduction,
time zones, legends, literal (non-mathtext) names and the light import."""
import io
import math
import os
import random
import re
import struct
import subprocess
import sys
import tempfile
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from chalicelib.outputs import chart_render as cr  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TORONTO = "America/Toronto"
T0 = datetime(2024, 1, 8, 5, tzinfo=timezone.utc)  # 2024-01-08 00:00 in Toronto
WEEK = (T0, T0 + timedelta(days=7))


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from the PNG's IHDR chunk (bytes 16..24)."""
    assert data[:8] == PNG_SIGNATURE, "not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def week_series(name, base=1000.0, step_s=300, rate=0.05):
    n = 7 * 86400 // step_s
    t0 = T0.timestamp()
    return cr.LineSeries(name, [t0 + step_s * i for i in range(n)],
                         [base + rate * i + math.sin(i / 40) for i in range(n)])


ENERGY = [("meter1", 120.5), ("meter2", 80.25), ("meter3", 33.0)]
SERIES = [week_series("meter1"), week_series("meter2", base=5000.0)]


def _defaults(kind, kw):
    """The chart's arguments with the test data where a test gives none."""
    kw.setdefault("title", "Energy")
    kw.setdefault("tz_name", TORONTO)
    kw.setdefault(*(("series", SERIES) if kind == "line" else ("energy", ENERGY)))
    return kw


def render(kind, w=1600, h=900, **kw):
    return cr.render_png(kind, width_px=w, height_px=h, **_defaults(kind, kw))


def build(kind, w=1600, h=900, **kw):
    """The Figure render_png would save, drawn (so tick labels exist)."""
    fig = cr.figure(kind, width_px=w, height_px=h, **_defaults(kind, kw))
    fig.canvas.draw()
    return fig


def all_texts(fig):
    from matplotlib.text import Text
    return [t for t in fig.findobj(Text) if t.get_text()]


def the_legend(fig):
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend() is not None)]
    assert len(legends) == 1
    return legends[0]


def legend_texts(fig):
    return [t.get_text() for t in the_legend(fig).get_texts()]


def subtitle(fig):
    """The period line under the title."""
    texts = [t.get_text() for t in fig.texts if t is not fig._suptitle and t.get_text()]
    assert len(texts) == 1, texts
    return texts[0]


# ----------------------------------------------------------------------------- sizes

SIZES = [(1600, 900), (450, 300), (4000, 2250), (333, 257), (100, 100), (1000, 4000)]


@pytest.mark.parametrize("kind", cr.KINDS)
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_each_kind_renders_a_png_of_the_asked_size(kind, size):
    w, h = size
    data = render(kind, w, h, period=WEEK)
    assert png_size(data) == (w, h)


@pytest.mark.parametrize("kind", cr.KINDS)
def test_png_decodes_to_a_non_blank_image(kind):
    import matplotlib.image as mpimg
    import numpy as np

    img = mpimg.imread(io.BytesIO(render(kind, 450, 300)), format="png")
    assert img.shape[:2] == (300, 450)
    assert np.ptp(img[..., :3]) > 0.5  # something dark drawn on white


def test_sizes_that_float_arithmetic_could_round_down():
    # 0.29 * 100 == 28.999999999999996: the size must still be 29 px, etc.
    for w in (29, 57, 113, 201, 203):
        assert png_size(render("bar", w, 100)) == (w, 100)


@pytest.mark.parametrize("bad", [dict(kind="donut"), dict(w=0), dict(h=-5), dict(w=4.5),
                                 dict(w="wide"), dict(h=20_000)])
def test_bad_kind_or_size_is_a_value_error(bad):
    kind = bad.pop("kind", "pie")
    with pytest.raises(ValueError):
        render(kind, bad.get("w", 450), bad.get("h", 300))


# ----------------------------------------------------------------------------- no data

NO_DATA = [
    ("pie", dict(energy=[]), cr.NO_READINGS),
    ("bar", dict(energy=[]), cr.NO_READINGS),
    ("pie", dict(energy=[("a", 0.0), ("b", 0)]), cr.NO_ENERGY),
    ("bar", dict(energy=[("a", 0.0), ("b", 0.0)]), cr.NO_ENERGY),
    ("pie", dict(energy=[("a", -3.0), ("b", float("nan"))]), cr.NO_ENERGY),
    ("line", dict(series=[]), cr.NO_READINGS),
    ("line", dict(series=[cr.LineSeries("a", [], []), cr.LineSeries("b", (), ())]),
     cr.NO_READINGS),
]


@pytest.mark.parametrize("kind,data,message", NO_DATA)
@pytest.mark.parametrize("size", [(1600, 900), (450, 300), (400, 300)],
                         ids=lambda s: f"{s[0]}x{s[1]}")
def test_no_data_is_a_png_with_a_message_and_the_title(kind, data, message, size):
    w, h = size
    assert png_size(render(kind, w, h, title="Site $A$ energy", period=WEEK, **data)) == (w, h)
    fig = build(kind, w, h, title="Site $A$ energy", period=WEEK, **data)
    texts = [t.get_text() for t in all_texts(fig)]
    assert "Site $A$ energy" in texts
    centred = [t for t in all_texts(fig) if t.get_text().startswith(message)]
    assert len(centred) == 1
    assert centred[0].get_position() == (0.5, 0.5)
    assert "2024-01-08 00:00 – 2024-01-15 00:00 (America/Toronto)" in centred[0].get_text()
    assert fig.axes == []


# ----------------------------------------------------------------------------- chart content

def test_pie_legend_has_names_kwh_and_percent_and_the_title():
    fig = build("pie", period=WEEK)
    assert fig._suptitle.get_text() == "Energy"
    labels = legend_texts(fig)
    total = 120.5 + 80.25 + 33.0
    assert labels == [f"meter1: 120 kWh ({100 * 120.5 / total:.1f}%)",
                      f"meter2: 80.2 kWh ({100 * 80.25 / total:.1f}%)",
                      f"meter3: 33.0 kWh ({100 * 33 / total:.1f}%)"]
    assert "total 234 kWh" in the_legend(fig).get_title().get_text()
    # The period, in the project's time zone, under the title.
    assert subtitle(fig) == "2024-01-08 00:00 – 2024-01-15 00:00 (America/Toronto)"


def test_pie_drops_zero_and_negative_meters_and_says_so():
    energy = [("a", 10.0), ("zero", 0.0), ("neg", -5.0), ("nan", float("nan")), ("b", 30.0)]
    assert png_size(render("pie", energy=energy)) == (1600, 900)
    fig = build("pie", energy=energy)
    labels = legend_texts(fig)
    assert [label.split(":")[0] for label in labels] == ["b", "a"]  # largest first
    assert "2 with no energy used not shown" in the_legend(fig).get_title().get_text()


def test_bar_has_labelled_axes_with_units_and_a_legend():
    fig = build("bar")
    ax = fig.axes[0]
    assert ax.get_ylabel() == "Energy used (kWh)"
    assert ax.get_xlabel() == "Meter"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["meter1", "meter2", "meter3"]
    assert [round(p.get_height(), 6) for p in ax.patches] == [120.5, 80.25, 33.0]
    assert legend_texts(fig) == ["Energy used in the period (total 234 kWh)"]


def test_bar_with_a_negative_value_still_renders():
    data = render("bar", energy=[("a", 5.0), ("b", -2.0)])
    assert png_size(data) == (1600, 900)


def test_line_axes_labels_and_legend():
    fig = build("line", period=WEEK)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "Time (America/Toronto)"
    assert ax.get_ylabel() == "Meter reading, cumulative (kWh)"
    assert legend_texts(fig) == ["meter1", "meter2"]
    # The period bounds the time axis.
    import matplotlib.dates as mdates
    assert ax.get_xlim() == pytest.approx((mdates.date2num(WEEK[0]), mdates.date2num(WEEK[1])))


def test_kwh_ticks_are_plain_numbers_not_offsets():
    # A register near 28,540 kWh moving by a few kWh: matplotlib's default
    # would print "+2.854e4" offsets; ours prints the readings.
    t0 = T0.timestamp()
    s = cr.LineSeries("m", [t0 + 300 * i for i in range(100)],
                      [28540.24 + 0.05 * i for i in range(100)])
    fig = build("line", series=[s])
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels() if t.get_text()]
    assert len(labels) >= 3 and all(re.fullmatch(r"28,5\d\d(\.\d+)?", x) for x in labels), labels
    assert fig.axes[0].yaxis.get_offset_text().get_text() == ""


def test_line_ticks_are_in_the_project_time_zone():
    import matplotlib.dates as mdates

    # Kolkata is UTC+5:30: local whole hours fall at UTC hh:30, so ticks drawn
    # in UTC (the bug) would land on minute 0.
    tz = ZoneInfo("Asia/Kolkata")
    start = datetime(2024, 3, 5, 10, 0, tzinfo=tz)
    t0 = start.timestamp()
    s = cr.LineSeries("m", [t0 + 300 * i for i in range(73)], [float(i) for i in range(73)])
    fig = build("line", series=[s], tz_name="Asia/Kolkata")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "Time (Asia/Kolkata)"
    locs = [loc for loc in ax.get_xticks() if ax.get_xlim()[0] <= loc <= ax.get_xlim()[1]]
    assert len(locs) >= 3
    labels = ax.xaxis.get_major_formatter().format_ticks(locs)
    for loc, label in zip(locs, labels):
        utc = mdates.num2date(loc, tz=timezone.utc)
        assert utc.minute == 30, utc
        assert label == utc.astimezone(tz).strftime("%H:%M")


@pytest.mark.parametrize("days", [1, 2, 3, 4, 5, 7, 14])
def test_no_span_or_width_makes_matplotlib_warn_about_the_time_axis(days):
    """3-4 days on a narrow chart had no tick step (matplotlib warned "AutoDateLocator was unable to pick
    an appropriate interval" into the Lambda log, and crowded 12-hourly ticks); now ticks fall at local
    midnights there."""
    import warnings

    import matplotlib.dates as mdates

    n = days * 288
    s = cr.LineSeries("m", [T0.timestamp() + 300 * i for i in range(n)], [1000 + 0.05 * i for i in range(n)])
    for width in (300, 400, 500, 600, 800, 1600, 2400):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fig = build("line", w=width, h=300, series=[s], period=(T0, T0 + timedelta(days=days)))
        assert not [str(w.message) for w in caught if "AutoDateLocator" in str(w.message)], (days, width)
        ax = fig.axes[0]
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert 2 <= len(ticks) <= max(5, width // 100) + 1, (days, width, len(ticks))
        if days in (3, 4) and width <= 600:
            local = [mdates.num2date(t, tz=ZoneInfo(TORONTO)) for t in ticks]
            assert all((d.hour, d.minute) == (0, 0) for d in local), local


def test_an_unknown_time_zone_is_a_value_error_never_utc():
    """clock.zone's lookup: a chart is never silently drawn in UTC for a zone that does not exist
    (a project's zone is checked when it is stored, so the route never meets one)."""
    for name in ("Mars/Olympus_Mons", "", "../etc/passwd"):
        with pytest.raises(ValueError, match="unknown time zone"):
            render("line", tz_name=name)
    assert build("line", tz_name="UTC").axes[0].get_xlabel() == "Time (UTC)"


def test_naive_period_is_local_time():
    fig = build("bar", period=(datetime(2024, 1, 8), datetime(2024, 1, 15)))
    assert subtitle(fig) == "2024-01-08 00:00 – 2024-01-15 00:00 (America/Toronto)"


# ----------------------------------------------------------------------------- many meters

def thirty():
    names = [f"Building {i} — panel {i}" for i in range(30)]
    energy = [(name, 5.0 + 3.3 * i) for i, name in enumerate(names)]
    series = [week_series(name, base=100.0 * i, step_s=3600) for i, name in enumerate(names)]
    return names, energy, series


@pytest.mark.parametrize("kind", ["pie", "bar", "line"])
def test_thirty_meters(kind):
    names, energy, series = thirty()
    for w, h in [(1600, 900), (450, 300), (4000, 2250)]:
        assert png_size(render(kind, w, h, energy=energy, series=series)) == (w, h)
    fig = build(kind, energy=energy, series=series)
    labels = legend_texts(fig)
    if kind == "line":
        assert labels == names
        assert len(fig.axes[0].get_lines()) == 30
    elif kind == "pie":
        assert len(labels) == 30
        assert {label.split(":")[0] for label in labels} == set(names)
    else:
        assert len(fig.axes[0].patches) == 30


@pytest.mark.parametrize("kind", ["pie", "line"])
def test_legend_that_cannot_fit_ends_with_a_more_line(kind):
    names, energy, series = thirty()
    fig = build(kind, 450, 300, energy=energy, series=series)
    labels = legend_texts(fig)
    assert 1 < len(labels) < 30
    assert labels[-1].startswith(f"+ {30 - (len(labels) - 1)} more")


# ----------------------------------------------------------------------------- literal names

ODD_NAMES = [
    "$x^2$ meter",
    r"$\undefinedcommand$ feeder",  # mathtext would raise on this
    "cost_$_total",
    "_hidden",                      # a legend would drop labels starting with "_"
    "été Ω №3 — µ",
    r"50% load & {braces} #1 \n",
]


def test_mathtext_would_really_fail_on_these_names():
    # Guard for the test below: with mathtext on, drawing the name raises.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure()
    FigureCanvasAgg(fig)
    fig.text(0.5, 0.5, ODD_NAMES[1])
    with pytest.raises(ValueError):
        fig.canvas.draw()


@pytest.mark.parametrize("kind", cr.KINDS)
def test_odd_names_render_literally(kind):
    energy = [(name, 10.0 * (i + 1)) for i, name in enumerate(ODD_NAMES)]
    series = [week_series(name, base=100.0 * i) for i, name in enumerate(ODD_NAMES)]
    title = "Energy in $ by meter_name $y$"
    assert png_size(render(kind, title=title, energy=energy, series=series)) == (1600, 900)
    fig = build(kind, title=title, energy=energy, series=series)
    texts = all_texts(fig)
    assert any(t.get_text() == title for t in texts)
    for t in texts:
        if "$" in t.get_text():
            assert not t.get_parse_math(), t.get_text()
            assert not t.get_usetex(), t.get_text()
    if kind == "line":
        assert legend_texts(fig) == ODD_NAMES
    elif kind == "pie":
        assert {label.rsplit(": ", 1)[0] for label in legend_texts(fig)} == set(ODD_NAMES)
    elif kind == "bar":
        assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == \
            [cr._short(n, cr._MAX_TICK_LABEL) for n in ODD_NAMES]


# ----------------------------------------------------------------------------- reduce_minmax

def reference_reduce(times, values, columns):
    """Brute-force reading of the contract: per equal time bucket, the first
    minimum and the last maximum, in time order."""
    span = times[-1] - times[0]
    buckets: dict = {}
    for i, t in enumerate(times):
        b = min(int((t - times[0]) * (columns / span)), columns - 1) if span > 0 else 0
        buckets.setdefault(b, []).append(i)
    keep = set()
    for idx in buckets.values():
        lo = min(values[i] for i in idx)
        hi = max(values[i] for i in idx)
        keep.add(next(i for i in idx if values[i] == lo))
        keep.add([i for i in idx if values[i] == hi][-1])
    kept = sorted(keep)
    return [times[i] for i in kept], [values[i] for i in kept]


@pytest.mark.parametrize("n,columns", [(1000, 7), (10_000, 450), (5001, 2500), (999, 1)])
def test_reduce_matches_the_reference(n, columns):
    rng = random.Random(n + columns)
    times = sorted(rng.uniform(0, 1e6) for _ in range(n))
    values = [rng.choice([rng.gauss(0, 1), float(rng.randint(0, 3))]) for _ in range(n)]
    assert cr.reduce_minmax(times, values, columns) == reference_reduce(times, values, columns)


@pytest.mark.parametrize("columns", [1, 2, 10, 333, 1600])
def test_reduce_properties(columns):
    rng = random.Random(columns)
    n = 20_000
    times = [1.7e9 + 300 * i for i in range(n)]
    values = [rng.gauss(0, 10) for _ in range(n)]
    t, v = cr.reduce_minmax(times, values, columns)
    assert len(t) == len(v) <= 2 * columns
    assert min(v) == min(values) and max(v) == max(values)
    assert all(a < b for a, b in zip(t, t[1:]))  # time order, no duplicates
    pairs = dict(zip(times, values))
    assert all(pairs[a] == b for a, b in zip(t, v))  # real points, not averages
    # Every pixel column that has points keeps at least one.
    assert len(t) >= min(columns, n)


def test_reduce_keeps_a_spike_in_100000_points():
    n = 100_000
    times = [1.7e9 + 300 * i for i in range(n)]
    values = [1000.0 + 0.01 * i for i in range(n)]
    values[61_803] += 500.0   # one reading spikes up...
    values[27_182] -= 400.0   # ...one dips
    t, v = cr.reduce_minmax(times, values, 1600)
    assert len(t) <= 3200
    assert (times[61_803], values[61_803]) in zip(t, v)
    assert (times[27_182], values[27_182]) in zip(t, v)


@pytest.mark.parametrize("n", [0, 1, 2, 19, 20])
def test_short_series_come_back_unchanged(n):
    times = [float(i * 60) for i in range(n)]
    values = [float((i * 7) % 5) for i in range(n)]
    assert cr.reduce_minmax(times, values, 10) == (times, values)
    assert cr.reduce_minmax(tuple(times), tuple(values), 10) == (times, values)


def test_reduce_edge_cases():
    # All readings at one instant: one bucket, its min and max.
    t, v = cr.reduce_minmax([5.0] * 10, [3, 1, 4, 1, 5, 9, 2, 6, 5, 3], 2)
    assert t == [5.0, 5.0] and v == [1, 9]
    # Out-of-order input is sorted; non-finite values are skipped in a reduction.
    times = [float(i) for i in range(100)][::-1]
    values = [float(i) for i in range(100)][::-1]
    values[10] = float("nan")
    t, v = cr.reduce_minmax(times, values, 5)
    assert t == sorted(t) and not any(math.isnan(x) for x in v)
    assert min(v) == 0.0 and max(v) == 99.0
    with pytest.raises(ValueError):
        cr.reduce_minmax([1.0, 2.0], [1.0], 10)


def test_line_chart_draws_reduced_series_and_keeps_the_spike(monkeypatch):
    n = 100_000
    t0 = T0.timestamp()
    times = [t0 + 300 * i for i in range(n)]
    values = [28_000.0 + 0.02 * i for i in range(n)]
    values[70_000] = 40_000.0
    s = cr.LineSeries("big", times, values)
    fig = build("line", 800, 450, series=[s])
    (line,) = fig.axes[0].get_lines()
    assert len(line.get_ydata()) <= 2 * 800
    assert max(line.get_ydata()) == 40_000.0
    # The benchmark's baseline (bench/bench_chart_render.py: reduce_minmax swapped for the identity)
    # really draws everything.
    monkeypatch.setattr(cr, "reduce_minmax", lambda times, values, columns: (times, values))
    fig = build("line", 800, 450, series=[s])
    assert len(fig.axes[0].get_lines()[0].get_ydata()) == n


# ----------------------------------------------------------------------------- cold start

def run_python(code, **env):
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT), **env},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_import_does_not_load_matplotlib_or_numpy():
    out = run_python("""
        import sys
        import chalicelib.outputs.chart_render
        heavy = sorted(m for m in sys.modules
                       if m.split(".")[0] in ("matplotlib", "numpy", "PIL"))
        print(heavy)
    """)
    assert out.strip() == "[]"


def test_unwritable_mplconfigdir_is_replaced_and_pyplot_never_loaded(tmp_path):
    not_a_dir = tmp_path / "a-file"
    not_a_dir.write_text("x")
    out = run_python("""
        import os, sys, tempfile
        from chalicelib.outputs.chart_render import render_png, LineSeries
        for kind in ("pie", "bar", "line"):
            png = render_png(kind, width_px=300, height_px=200, title="t", tz_name="UTC",
                             energy=[("a", 1.0)], series=[LineSeries("a", [0.0, 60.0], [1.0, 2.0])])
            assert png[:4] == b"\\x89PNG"
        print(os.environ["MPLCONFIGDIR"])
        print("matplotlib.pyplot" in sys.modules)
    """, MPLCONFIGDIR=str(not_a_dir))
    config_dir, pyplot_loaded = out.split()
    assert config_dir != str(not_a_dir)
    assert Path(config_dir).is_dir() and os.access(config_dir, os.W_OK)
    assert Path(config_dir).resolve().is_relative_to(Path(tempfile.gettempdir()).resolve())
    assert pyplot_loaded == "False"


# ----------------------------------------------------------------------------- small sizes

def case(kind):
    """Twelve long-named meters (pie, bar, line of energy used) or one meter's register and use."""
    names = [f"Suite {i:02d} — north wing" for i in range(11)] + ["9 others"]
    edges = [T0.timestamp() + 3600 * h for h in range(169)]
    if kind in ("pie", "bar"):
        return {"energy": [(name, 400.0 - 30 * i) for i, name in enumerate(names)]}
    uses = [cr.UseSeries(name, edges, [(12 - i) * (1.5 + math.sin(h / 4)) for h in range(168)])
            for i, name in enumerate(names)]
    if kind == "line":
        return {"series": uses}
    return {"series": [cr.LineSeries("m", edges, [1e5 + 3 * h for h in range(169)])], "use": uses[0]}


def chart_args(kind, w, h):
    return dict(width_px=w, height_px=h, title="A building with a long name: energy used per hour",
                tz_name=TORONTO, period=WEEK, **case(kind))


def seen_texts(fig):
    """The texts a person sees: figure texts, legends, axis titles, values written on plots, and the
    tick labels of ticks inside the axes' limits (Text artists, visible and not empty)."""
    out = [*fig.texts]
    for legend in [*fig.legends, *(ax.get_legend() for ax in fig.axes)]:
        if legend is not None:
            out += [legend.get_title(), *legend.get_texts()]
    for ax in fig.axes:
        out += [ax.xaxis.label, ax.yaxis.label, *ax.texts]
        for axis, (low, high) in ((ax.xaxis, sorted(ax.get_xlim())), (ax.yaxis, sorted(ax.get_ylim()))):
            out += [tick.label1 for tick in axis.get_major_ticks() if low <= tick.get_loc() <= high]
    return [t for t in out if t.get_visible() and t.get_text()]


def what_shows(fig):
    """Which kinds of text a chart shows: header (title, period, note), legend, axis titles, ticks."""
    texts = seen_texts(fig)
    axis_titles = {id(a.xaxis.label) for a in fig.axes} | {id(a.yaxis.label) for a in fig.axes}
    return {"header": any(t in fig.texts for t in texts),
            "legend": any(legend is not None for legend in [*fig.legends, *(a.get_legend() for a in fig.axes)]),
            "labels": any(id(t) in axis_titles for t in texts),
            "ticks": any(t not in fig.texts and id(t) not in axis_titles for t in texts
                         if not any(t in (lg.get_texts() + [lg.get_title()]) for lg in fig.legends))}


@pytest.mark.parametrize("hundreds", range(1, 41))
def test_every_width_and_height_from_1_to_40_hundreds_is_a_png_of_that_size(hundreds):
    """Each of 1..40 as a width and (paired with 41 - it) as a height, the kinds in turn."""
    kind = cr.KINDS[hundreds % len(cr.KINDS)]
    w, h = 100 * hundreds, 100 * (41 - hundreds)
    assert png_size(cr.render_png(kind, **chart_args(kind, w, h))) == (w, h)


@pytest.mark.parametrize("kind", cr.KINDS)
def test_decimal_sizes_of_the_guide(kind):
    for w, h in [(150, 100), (450, 250), (250, 450), (150, 150)]:
        assert png_size(cr.render_png(kind, **chart_args(kind, w, h))) == (w, h)


SMALL = [(w, h) for w in (100, 150, 200, 250, 300, 400) for h in (100, 150, 200, 300)]


@pytest.mark.parametrize("kind", cr.KINDS)
def test_small_charts_drop_the_title_and_legend_first_then_axis_titles_then_ticks(kind):
    shown = {}
    for w, h in SMALL:
        fig = cr.figure(kind, **chart_args(kind, w, h))
        shows = shown[w, h] = what_shows(fig)
        if not shows["ticks"]:
            assert not shows["labels"], (w, h)
        if not shows["labels"] and kind != "pie":     # a pie has no axis titles
            assert not (shows["header"] or shows["legend"]), (w, h)
        if w < 300 or h < 200:
            assert not (shows["header"] or shows["legend"]), (w, h)
        assert cr.overflow(fig) == [], (w, h)
    assert shown[400, 300] == {"header": True, "legend": kind != "meter", "labels": kind != "pie", "ticks": True}
    assert shown[100, 100] == {"header": False, "legend": False, "labels": False, "ticks": False}   # a sparkline
    assert shown[250, 150]["ticks"]
    if kind != "pie":   # a size between: axis titles without the title and legend
        assert any(shows["labels"] and not shows["header"] for shows in shown.values())


@pytest.mark.parametrize("kind", cr.KINDS)
def test_no_two_texts_overlap_at_any_size(kind):
    """Never an unreadable mess: whatever a chart keeps, its texts do not run into each other."""
    for w, h in [*SMALL, (450, 250), (1600, 900), (4000, 300), (400, 4000)]:
        fig = cr.figure(kind, **chart_args(kind, w, h))
        texts, renderer = seen_texts(fig), fig.canvas.get_renderer()  # type: ignore[attr-defined]  # Agg's
        for i, a in enumerate(texts):
            for b in texts[i + 1:]:
                assert not overlapping(a, b, renderer), (w, h, a.get_text(), b.get_text())


def overlapping(a, b, renderer):
    """Whether two drawn texts run into each other: their boxes overlap by more than 2 px, or, turned
    alike (a bar chart's names), lie closer across their direction than their type is high."""
    box_a, box_b = a.get_window_extent(renderer), b.get_window_extent(renderer)
    if min(box_a.x1, box_b.x1) - max(box_a.x0, box_b.x0) <= 2 or min(box_a.y1, box_b.y1) - max(box_a.y0, box_b.y0) <= 2:
        return False
    angle = a.get_rotation()
    if angle and angle == b.get_rotation():
        (xa, ya), (xb, yb) = (t.get_transform().transform(t.get_position()) for t in (a, b))
        across = abs(math.cos(math.radians(angle)) * (yb - ya) - math.sin(math.radians(angle)) * (xb - xa))
        return across < 0.9 * a.get_fontsize() * 100 / 72
    return True


@pytest.mark.parametrize("kind", cr.KINDS)
def test_a_sparkline_still_draws_the_data(kind):
    import matplotlib.image as mpimg

    img = mpimg.imread(io.BytesIO(cr.render_png(kind, **chart_args(kind, 100, 100))), format="png")[..., :3]
    coloured = (img.max(axis=2) - img.min(axis=2)) > 0.2          # not white, grey or black
    assert coloured.mean() > 0.05


def test_a_no_data_sparkline_says_no_data():
    fig = cr.figure("line", width_px=100, height_px=100, title="t", tz_name=TORONTO, series=[], period=WEEK)
    assert [t.get_text() for t in seen_texts(fig)] == [cr.NO_DATA]


# ----------------------------------------------------------------------------- estimated and partial periods

M, E, P = cr.MEASURED, cr.ESTIMATED, cr.PARTIAL
HOURS = [T0.timestamp() + 3600 * h for h in range(49)]
GAP, LAST = range(20, 24), 47                    # hours estimated across a gap; the partial last hour


def hourly_use(quality=True):
    values = [10.0 + 5 * math.sin(h / 3) for h in range(48)]
    marks = [E if h in GAP else P if h == LAST else M for h in range(48)] if quality else []
    return cr.UseSeries("hvac", HOURS, values, marks)


def meter_args(quality=True, **kw):
    register = cr.LineSeries("hvac", HOURS, [1000.0 + 10 * h for h in range(49)])
    return dict(width_px=1600, height_px=900, title="hvac", tz_name=TORONTO, series=[register],
                use=hourly_use(quality), period=(T0, T0 + timedelta(days=2)), **kw)


def pixels(png):
    import matplotlib.image as mpimg

    return (mpimg.imread(io.BytesIO(png), format="png")[..., :3] * 255).round()


def columns_of(png, fig, ax, colour):
    """The pixel columns (x) of the plot ax where the PNG shows this colour (to 3 levels of 255)."""
    import numpy as np

    img = pixels(png)
    box = ax.get_window_extent()
    rows = slice(int(fig.bbox.height - box.y1) + 2, int(fig.bbox.height - box.y0) - 2)  # image rows run down
    inside = img[rows, int(box.x0) + 2:int(box.x1) - 2]
    hit = (np.abs(inside - np.asarray(colour) * 255) <= 3).all(axis=2).any(axis=0)
    return set((np.flatnonzero(hit) + int(box.x0) + 2).tolist())


def light_pixels(png, fig, patch):
    """Pixels of the PNG in the patch's fill colour: inside its box, and elsewhere."""
    import numpy as np
    from matplotlib.colors import to_rgb

    img = pixels(png)
    hit = (np.abs(img - np.asarray(to_rgb(patch.get_facecolor())) * 255) <= 3).all(axis=2)
    box = patch.get_window_extent()
    rows = slice(int(fig.bbox.height - box.y1), int(math.ceil(fig.bbox.height - box.y0)))
    inside = int(hit[rows, int(box.x0):int(math.ceil(box.x1))].sum())
    return inside, int(hit.sum()) - inside


def hour_columns(ax, hours):
    """The pixel columns inside the given hours (one pixel in from their edges)."""
    import matplotlib.dates as mdates

    out = set()
    for h in hours:
        x0, x1 = (ax.transData.transform((mdates.date2num(datetime.fromtimestamp(t, timezone.utc)), 0))[0]
                  for t in (HOURS[h], HOURS[h + 1]))
        out |= set(range(math.ceil(x0) - 1, math.floor(x1) + 2))
    return out


def test_estimated_hours_are_hatched_and_lighter_exactly_where_the_gap_is():
    """One meter's chart: the lighter fill of estimated hours shows in the gap's columns only, the
    lighter fill of the partial hour in its column only; a note says what each means."""
    from matplotlib.colors import to_rgb

    args = meter_args()
    png, fig = cr.render_png("meter", **args), cr.figure("meter", **args)
    use_ax = fig.axes[1]
    steps = {tuple(to_rgb(p.get_facecolor())): p for p in use_ax.patches}
    hatched = [colour for colour, patch in steps.items() if patch.get_hatch()]
    assert len(steps) == 3 and len(hatched) == 1            # measured, estimated (hatched), partial
    measured = next(c for c, p in steps.items() if not p.get_hatch() and min(c) < 0.2)   # the full colour
    partial = next(c for c in steps if c not in (measured, hatched[0]))
    gap_columns = columns_of(png, fig, use_ax, hatched[0])
    assert gap_columns and gap_columns <= hour_columns(use_ax, GAP)
    last_columns = columns_of(png, fig, use_ax, partial)
    assert last_columns and last_columns <= hour_columns(use_ax, [LAST])
    assert columns_of(png, fig, use_ax, measured) & hour_columns(use_ax, [5, 30])
    notes = [t.get_text() for t in fig.texts if cr.ESTIMATED_NOTE in t.get_text()]
    assert notes and cr.PARTIAL_NOTE in notes[0]


def test_all_measured_hours_draw_no_lighter_fill_and_no_note():
    args = meter_args(quality=False)
    fig = cr.figure("meter", **args)
    assert len(fig.axes[1].patches) == 1 and not fig.axes[1].patches[0].get_hatch()
    assert not any(cr.ESTIMATED_NOTE in t.get_text() for t in fig.texts)


def test_line_chart_draws_each_kind_of_period_in_its_own_line_style():
    """Measured hours solid, estimated dashed, partial dotted; between measured and estimated hours the
    riser is in the later one's style, so the line has no break there; today's partial hour is a step of
    its own, never a drop of the line (test_charts.py::test_today_is_partial_and_the_chart_ends_now)."""
    import numpy as np

    other = cr.UseSeries("lighting", HOURS, [3.0] * 48)
    fig = cr.figure("line", width_px=1600, height_px=900, title="t", tz_name=TORONTO, series=[hourly_use(), other],
                    period=(T0, T0 + timedelta(days=2)))
    by_style = {}
    for line in fig.axes[0].get_lines():
        if line.get_color() == fig.axes[0].get_lines()[0].get_color():   # hvac's
            x, y = np.asarray(line.get_xdata())[::2], np.asarray(line.get_ydata())[::2]   # each step's start
            edges = [mdates_num(t) for t in HOURS]
            by_style[line.get_linestyle()] = {edges.index(xv) for xv, yv in zip(x, y) if np.isfinite(yv)}
    assert by_style["-"] == set(range(48)) - set(GAP) - {LAST}
    assert by_style["--"] == set(GAP)
    assert by_style[":"] == {LAST}
    # Unbroken: where measured and estimated hours meet, a line of the later kind rises from the earlier value.
    values, kinds = hourly_use().values, ["-" if h not in GAP and h != LAST else "--" if h in GAP else ":"
                                          for h in range(48)]
    for h in range(1, 48):
        if kinds[h] != kinds[h - 1] and ":" not in (kinds[h], kinds[h - 1]):
            later = [line for line in fig.axes[0].get_lines() if line.get_linestyle() == kinds[h]
                     and line.get_color() == fig.axes[0].get_lines()[0].get_color()][0]
            points = list(zip(np.asarray(later.get_xdata()), np.asarray(later.get_ydata())))
            edge = mdates_num(HOURS[h])
            rise = points.index((edge, values[h - 1]))
            assert points[rise + 1] == (edge, values[h]), h
    notes = " ".join(t.get_text() for t in fig.texts)
    assert "Dashed: " + cr.ESTIMATED_NOTE in notes and "Dotted: " + cr.PARTIAL_NOTE in notes


def mdates_num(epoch):
    import matplotlib.dates as mdates

    return mdates.date2num(datetime.fromtimestamp(epoch, timezone.utc))


@pytest.mark.parametrize("kind", ["pie", "bar"])
def test_estimated_energy_is_hatched_in_pie_and_bar_only_for_the_meter_that_has_it(kind):

    energy = [("main (unmetered)", 500.0), ("hvac", 300.0), ("lighting", 100.0)]
    args: dict = dict(width_px=1600, height_px=900, title="t", tz_name=TORONTO, energy=energy, estimated=[0.0, 60.0, 0.0])
    fig, png = cr.figure(kind, **args), cr.render_png(kind, **args)
    ax = fig.axes[0]
    hatched: list = [p for p in ax.patches if p.get_hatch()]
    assert len(hatched) == (1 if kind == "pie" else 3)   # bar: one stacked part per bar (zero high but hvac's)
    part = max(hatched, key=lambda p: p.get_window_extent().width * p.get_window_extent().height)
    inside, outside = light_pixels(png, fig, part)
    assert inside > 500 and outside < inside / 20      # outside: where anti-aliased edges blend to it
    if kind == "bar":
        assert part.get_height() == pytest.approx(60.0) and part.get_y() == pytest.approx(240.0)
    assert any("60.0 kWh (6.7%) " + cr.ESTIMATED_NOTE in t.get_text() for t in fig.texts)
    plain = cr.figure(kind, **{**args, "estimated": []})
    assert not [p for p in plain.axes[0].patches if p.get_hatch()]
    assert not any(cr.ESTIMATED_NOTE in t.get_text() for t in plain.texts)


def bill_args(w, h):
    months = ["Mar 2025", "Apr 2025", "May 2025", "Jun 2025", "Jul 2025", "Aug 2025"]
    stacks = [("Energy: Off-peak", [40.0, 38, 35, 30, 45, 47]), ("Energy: On-peak", [20.0, 18, 25, 40, 50, 44]),
              ("Fixed", [25.0] * 6)]
    return dict(width_px=w, height_px=h, title="A building: charges per month", tz_name=TORONTO, months=months,
                stacks=stacks, currency="CAD", period=WEEK)


def test_the_bill_chart_follows_the_same_size_rules():
    """Billing's chart (drawn by its own function) drops text by the one rule every chart follows."""
    for w, h in [(1600, 900), (450, 250), (250, 150), (150, 100), (100, 100), (4000, 100)]:
        assert png_size(cr.render_bill_png(**bill_args(w, h))) == (w, h)
        fig = cr.bill_figure(**bill_args(w, h))
        shows = what_shows(fig)
        assert cr.overflow(fig) == [], (w, h)
        if w < 300 or h < 200:
            assert not (shows["header"] or shows["legend"]), (w, h)
    assert what_shows(cr.bill_figure(**bill_args(450, 250))) == {"header": True, "legend": True, "labels": True,
                                                                 "ticks": True}
    assert seen_texts(cr.bill_figure(**bill_args(100, 100))) == []
