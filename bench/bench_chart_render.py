"""Benchmark of chalicelib.outputs.chart_render: what min/max reduction saves on a year
of 5-minute readings, what pie and bar charts of 30 meters cost, and what the energy charts cost
(12 meters' hourly week, one meter's chart), with estimated and partial periods and at small sizes.

Run: .venv/bin/python bench/bench_chart_render.py [--repeat 3] [--width 1600 --height 900]
     [--save DIR] [--baseline COMMIT]
The baseline (no reduction) is measured in the same run; times are medians. It is the same
render_png call with chart_render.reduce_minmax swapped for the identity in this process only
(without_reduction below): the chart drawn from every point, everything else unchanged.
The energy charts' baseline is chart_render.py of --baseline (default f813d8d: before estimated
periods and detail levels), loaded from git and run on the same data in the same process (without
the quality marks it does not know).
"""
import argparse
import contextlib
import math
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from chalicelib.outputs import chart_render as cr  # noqa: E402

YEAR_POINTS = 365 * 24 * 12  # 105,120 five-minute readings
TZ = "America/Toronto"


def meter_year(seed=1):
    """A cumulative register over a year: daily load curve, noise, one spike."""
    rng = random.Random(seed)
    t0 = 1704085200.0  # 2024-01-01 00:00 in Toronto
    times, values, total = [], [], 28_540.24
    for i in range(YEAR_POINTS):
        hour = (i % 288) / 12
        total += 0.4 + 0.3 * math.sin((hour - 9) / 24 * 2 * math.pi) + rng.random() * 0.1
        times.append(t0 + 300 * i)
        values.append(total)
    values[20_000] += 2_000.0  # a bad reading: must stay visible
    return cr.LineSeries("meter1", times, values)


@contextlib.contextmanager
def without_reduction():
    """render_png drawing every point: reduce_minmax replaced by the identity while inside."""
    reduce = cr.reduce_minmax
    cr.reduce_minmax = lambda times, values, columns: (list(times), list(values))
    try:
        yield
    finally:
        cr.reduce_minmax = reduce


def unreduced(kind, **kw):
    """The baseline: render_png of the same chart without the min/max reduction."""
    with without_reduction():
        return cr.render_png(kind, **kw)


def _baseline_render(commit):
    """chart_render.py of a commit, loaded from git as a module of its own."""
    import subprocess
    import types

    source = subprocess.run(["git", "show", f"{commit}:chalicelib/outputs/chart_render.py"], cwd=ROOT,
                            check=True, capture_output=True, text=True).stdout
    module = types.ModuleType("baseline_chart_render")
    sys.modules["baseline_chart_render"] = module      # before exec: its dataclasses look themselves up
    exec(compile(source, "baseline_chart_render", "exec"), module.__dict__)
    return module


def energy_week(render, marked):
    """12 meters' energy per hour over a week (UseSeries of render); marked: 8 estimated hours and a
    partial last hour in each (render's quality marks), else all measured."""
    t0 = 1704690000.0   # 2024-01-08 00:00 in Toronto
    edges = [t0 + 3600 * h for h in range(169)]
    out = []
    for i in range(12):
        values = [(12 - i) * (1.5 + math.sin(h / 4)) for h in range(168)]
        if marked:
            quality = [cr.ESTIMATED if 50 <= h < 58 else cr.PARTIAL if h == 167 else cr.MEASURED for h in range(168)]
            out.append(render.UseSeries(f"Suite {i:02d}", edges, values, quality))
        else:
            out.append(render.UseSeries(f"Suite {i:02d}", edges, values))
    return out


def energy_cases(render, marked, size):
    """(name, kind, keywords) of the energy charts, drawn by render (the module)."""
    week = energy_week(render, marked)
    register = render.LineSeries("Suite 00", list(week[0].edges), [1e5 + 3 * h for h in range(169)])
    energy = [(s.name, float(sum(s.values))) for s in week]
    estimated = {"estimated": [30.0 * (i % 3) for i in range(12)]} if marked else {}
    return [("line, 12 meters' hourly week", "line", dict(series=week, bucket="hour", **size)),
            ("meter chart, hourly week", "meter", dict(series=[register], use=week[0], bucket="hour", **size)),
            ("pie, 12 meters", "pie", dict(energy=energy, **estimated, **size)),
            ("bar, 12 meters", "bar", dict(energy=energy, **estimated, **size))]


SMALL = [(450, 250), (200, 150), (100, 100)]


def energy_rows(args, base, year, energy):
    """Rows (case, baseline (wall, CPU), this (wall, CPU), this marked (wall, CPU)) of the energy charts,
    and at the first size the cases above (a meter-year's register, 30 meters' pie and bar)."""
    rows = []
    for width, height in [(args.width, args.height), *SMALL]:
        size = dict(width_px=width, height_px=height, tz_name=TZ, title="Energy")
        plain, old, marked = (energy_cases(cr, False, size), energy_cases(base, False, size),
                              energy_cases(cr, True, size))
        if (width, height) == (args.width, args.height):
            for cases, render in ((plain, cr), (old, base), (marked, cr)):
                register = render.LineSeries(year.name, year.times, year.values)
                cases += [("line, 1 meter-year, reduced", "line", dict(series=[register], **size)),
                          ("pie, 30 meters", "pie", dict(energy=energy, **size)),
                          ("bar, 30 meters", "bar", dict(energy=energy, **size))]
        for (name, kind, new_kw), (_n, _k, old_kw), (_m, _j, marked_kw) in zip(plain, old, marked):
            t_old, _ = timed(lambda: base.render_png(kind, **old_kw), args.repeat)
            t_new, _ = timed(lambda: cr.render_png(kind, **new_kw), args.repeat)
            t_marked, png = timed(lambda: cr.render_png(kind, **marked_kw), args.repeat)
            rows.append((f"{name}, {width}x{height}", t_old, t_new, t_marked, png))
    return rows


def timed(fn, repeat):
    """Median wall time and median CPU time of `repeat` calls, and the last result.
    (CPU time is the steadier figure on a busy machine.)"""
    wall, cpu, out = [], [], None
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        out = fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return (statistics.median(wall), statistics.median(cpu)), out


def pixel_diff(png_a, png_b):
    """Share of pixels that differ visibly (> 10% on a channel) between two PNGs."""
    import io

    import matplotlib.image as mpimg
    import numpy as np

    a, b = (mpimg.imread(io.BytesIO(p), format="png")[..., :3] for p in (png_a, png_b))
    return f"{(np.abs(a - b).max(axis=2) > 0.1).mean():.4%}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--width", type=int, default=1600)
    parser.add_argument("--height", type=int, default=900)
    parser.add_argument("--save", type=Path, metavar="DIR", help="also write the PNGs there")
    parser.add_argument("--baseline", default="f813d8d", help="the commit whose chart_render the energy charts race")
    args = parser.parse_args()
    size = dict(width_px=args.width, height_px=args.height, tz_name=TZ)

    year = meter_year()
    names = [f"meter{i:02d}" for i in range(30)]
    energy = [(name, 50.0 + 37.0 * ((i * 7) % 30)) for i, name in enumerate(names)]

    start = time.perf_counter()
    cr.render_png("bar", title="warm-up", energy=energy[:2], **size)
    first = time.perf_counter() - start

    columns = args.width  # an upper bound of the plot's pixel columns
    t_reduce, (rt, _rv) = timed(lambda: cr.reduce_minmax(year.times, year.values, columns),
                                args.repeat)
    t_line, png_line = timed(lambda: cr.render_png(
        "line", title="meter1, one year", series=[year], **size), args.repeat)
    t_full, png_full = timed(lambda: unreduced("line", title="meter1, one year", series=[year], **size),
                             args.repeat)
    rng = random.Random(2)  # the same year with +-30 kWh noise: a worst case for Agg
    noisy = cr.LineSeries("noisy", year.times, [v + rng.gauss(0, 30) for v in year.values])
    t_noisy, _ = timed(lambda: cr.render_png(
        "line", title="noisy", series=[noisy], **size), args.repeat)
    t_noisy_full, _ = timed(lambda: unreduced("line", title="noisy", series=[noisy], **size), args.repeat)
    t_pie, png_pie = timed(lambda: cr.render_png(
        "pie", title="30 meters", energy=energy, **size), args.repeat)
    t_bar, png_bar = timed(lambda: cr.render_png(
        "bar", title="30 meters", energy=energy, **size), args.repeat)

    print(f"chart_render benchmark: {args.width}x{args.height} px, median of {args.repeat}")
    print(f"first call (imports matplotlib, fonts): {first:.3f} s\n")
    rows = [
        ("reduce_minmax only", f"{YEAR_POINTS:,} -> {len(rt):,}", t_reduce, None),
        ("line, 1 meter-year, reduced", f"{len(rt):,}", t_line, png_line),
        ("line, 1 meter-year, NOT reduced", f"{YEAR_POINTS:,}", t_full, png_full),
        ("line, noisy year, reduced", f"{len(rt):,}", t_noisy, None),
        ("line, noisy year, NOT reduced", f"{YEAR_POINTS:,}", t_noisy_full, None),
        ("pie, 30 meters", "30 wedges", t_pie, png_pie),
        ("bar, 30 meters", "30 bars", t_bar, png_bar),
    ]
    print(f"{'case':34} {'points drawn':>20} {'wall s':>8} {'CPU s':>8} {'PNG KiB':>8}")
    for name, points, (wall, cpu), png in rows:
        kib = f"{len(png) / 1024:.0f}" if png else "-"
        print(f"{name:34} {points:>20} {wall:8.3f} {cpu:8.3f} {kib:>8}")
    print(f"\nline without reduction / with reduction, wall (CPU): "
          f"{t_full[0] / t_line[0]:.2f}x ({t_full[1] / t_line[1]:.2f}x); noisy year: "
          f"{t_noisy_full[0] / t_noisy[0]:.2f}x ({t_noisy_full[1] / t_noisy[1]:.2f}x)")
    print(f"pixels that differ between the two meter-year PNGs: {pixel_diff(png_line, png_full)}")

    base = _baseline_render(args.baseline)
    base.render_png("bar", title="warm-up", energy=energy[:2], **size)
    print(f"\ncharts: chart_render of {args.baseline} (baseline) against this one, all measured and with "
          f"estimated and partial periods (energy charts); median of {args.repeat}, wall s (CPU s)")
    print(f"{'case':44} {'baseline':>15} {'this':>15} {'this, marked':>15} {'this/baseline':>14}")
    for name, t_old, t_new, t_marked, png in energy_rows(args, base, year, energy):
        print(f"{name:44} {t_old[0]:7.3f} ({t_old[1]:.3f}) {t_new[0]:7.3f} ({t_new[1]:.3f}) "
              f"{t_marked[0]:7.3f} ({t_marked[1]:.3f}) {t_new[1] / t_old[1]:13.2f}x")
        if args.save:
            args.save.mkdir(parents=True, exist_ok=True)
            (args.save / (name.replace(" ", "_").replace(",", "").replace("'", "") + ".png")).write_bytes(png)
    if args.save:
        args.save.mkdir(parents=True, exist_ok=True)
        for name, png in [("line", png_line), ("line_full", png_full), ("pie", png_pie),
                          ("bar", png_bar)]:
            (args.save / f"{name}.png").write_bytes(png)
        print(f"PNGs written to {args.save}")

if __name__ == "__main__":
    main()
