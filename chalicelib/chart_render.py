"""PNG rendering of the ``GET /graphics`` charts: pie, bar and line.

Pure rendering: the caller fetches readings, computes energy per meter and
uploads the bytes; nothing here touches AWS. matplotlib and numpy are imported
inside functions only, so importing this module keeps the Lambda's cold start
light (routes that never draw never pay for matplotlib).

Charts are drawn on ``matplotlib.figure.Figure`` objects with the Agg canvas
(never pyplot's global figure registry), so repeated or concurrent calls leak
nothing. Every piece of text that may come from a user (title, meter names) is
drawn literally: ``$...$`` is never parsed as mathtext and a leading ``_`` does
not hide a legend entry.
"""
from __future__ import annotations

import io
import math
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone, tzinfo
from typing import Sequence
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["LineSeries", "render_png", "reduce_minmax", "KINDS",
           "NO_READINGS", "NO_ENERGY"]

KINDS = ("pie", "bar", "line")
NO_READINGS = "No readings for this period"
NO_ENERGY = "No energy used in this period"

_DPI = 100
_MAX_PX = 10_000        # the API allows 40 hundreds (4000 px); this only stops absurd sizes
_MAX_TICK_LABEL = 24    # longer meter names are shortened on the bar chart's axis...
_MAX_LEGEND_NAME = 40   # ...and in legends
_MIN_LAYOUT_PX = (300, 200)  # below this, fixed margins instead of the constrained layout


@dataclass
class LineSeries:
    """One meter's readings for the line chart."""
    name: str
    times: Sequence[float]   # epoch seconds (UTC), ascending
    values: Sequence[float]  # cumulative register, kWh


# --------------------------------------------------------------------------- public API

def render_png(kind: str, *, width_px: int, height_px: int, title: str, tz_name: str,
               energy: Sequence[tuple[str, float]] = (), series: Sequence[LineSeries] = (),
               period: tuple[datetime, datetime] | None = None) -> bytes:
    """Render one chart and return PNG bytes of exactly ``width_px`` x ``height_px``.

    ``kind`` 'pie' or 'bar' uses ``energy`` (meter name, kWh used in the period);
    'line' uses ``series``. Times are shown in ``tz_name`` (IANA; an unknown name
    falls back to UTC, and the axis label says so). ``period`` (start, end) is
    shown under the title and bounds the line chart's time axis; naive datetimes
    are taken as local times of ``tz_name``. No data gives a chart with a
    centred message, never an exception; a bad ``kind`` or size is a ValueError
    (the route validates those first).
    """
    return _render_png(kind, width_px=width_px, height_px=height_px, title=title,
                       tz_name=tz_name, energy=energy, series=series, period=period)


def reduce_minmax(times, values, columns: int) -> tuple[list[float], list[float]]:
    """Reduce a long series to at most ``2 * columns`` points, keeping its peaks.

    The series' time span is cut into ``columns`` equal buckets (one per pixel
    column); each bucket keeps its minimum and its maximum, in time order. A plot
    of the result is visually the same as the full series (every spike stays),
    at a fraction of the drawing cost. Series of at most ``2 * columns`` points
    come back unchanged (as lists). In a reduced series, non-finite values are
    ignored; times out of order are sorted first.
    """
    n = len(times)
    if n != len(values):
        raise ValueError(f"times and values differ in length ({n} != {len(values)})")
    columns = max(1, int(columns))
    if n <= 2 * columns:
        return [float(t) for t in times], [float(v) for v in values]

    import numpy as np

    t = np.asarray(times, dtype=float)
    v = np.asarray(values, dtype=float)
    keep = np.isfinite(t) & np.isfinite(v)
    if not keep.all():
        t, v = t[keep], v[keep]
    if t.size and np.any(np.diff(t) < 0):
        order = np.argsort(t, kind="stable")
        t, v = t[order], v[order]
    if t.size <= 2 * columns:
        return t.tolist(), v.tolist()

    span = t[-1] - t[0]
    if span > 0:
        bucket = np.minimum(((t - t[0]) * (columns / span)).astype(np.int64), columns - 1)
    else:
        bucket = np.zeros(t.size, dtype=np.int64)
    # Sort by (bucket, value): within each bucket the first index is its
    # minimum and the last its maximum (lexsort is stable: ties keep time order).
    order = np.lexsort((v, bucket))
    sorted_buckets = bucket[order]
    starts = np.flatnonzero(np.r_[True, sorted_buckets[1:] != sorted_buckets[:-1]])
    ends = np.r_[starts[1:], order.size] - 1
    idx = np.unique(np.concatenate((order[starts], order[ends])))  # sorted = time order
    return t[idx].tolist(), v[idx].tolist()


# --------------------------------------------------------------------------- internals

def _render_png(kind, *, width_px, height_px, title, tz_name, energy=(), series=(),
                period=None, reduce_points=True) -> bytes:
    """render_png, plus a switch to skip the line reduction (for the benchmark)."""
    fig = _build_figure(kind, width_px=width_px, height_px=height_px, title=title,
                        tz_name=tz_name, energy=energy, series=series, period=period,
                        reduce_points=reduce_points)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, facecolor="white")
    return buf.getvalue()


def _build_figure(kind, *, width_px, height_px, title, tz_name, energy=(), series=(),
                  period=None, reduce_points=True):
    """Build (not draw) the chart's Figure; tests inspect it directly."""
    if kind not in KINDS:
        raise ValueError(f"unknown chart kind {kind!r}: expected one of {', '.join(KINDS)}")
    width_px, height_px = _check_size(width_px, height_px)
    _ensure_mplconfigdir()  # before anything below imports matplotlib
    tz, tz_label = _zone(tz_name)
    style = _Style(width_px, height_px)
    title = "" if title is None else str(title)
    subtitle = _period_text(period, tz, tz_label)
    if kind == "line":
        return _line(series, width_px, height_px, title, subtitle, tz, tz_label, period,
                     style, reduce_points)
    return (_pie if kind == "pie" else _bar)(energy, width_px, height_px, title, subtitle, style)


def _check_size(width_px, height_px):
    """Sizes are whole pixels, 1 to _MAX_PX (a float like 450.0 is fine)."""
    out = []
    for name, px in (("width_px", width_px), ("height_px", height_px)):
        try:
            as_int = int(px)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a whole number of pixels, not {px!r}") from None
        if as_int != px or not 1 <= as_int <= _MAX_PX:
            raise ValueError(f"{name} must be a whole number from 1 to {_MAX_PX}, not {px!r}")
        out.append(as_int)
    return out


def _zone(tz_name) -> tuple[tzinfo, str]:
    """The project's zone and its label; an unknown or empty name is UTC (labelled so)."""
    try:
        return ZoneInfo(str(tz_name)), str(tz_name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return timezone.utc, "UTC"


def _local(dt: datetime, tz: tzinfo) -> datetime:
    """An aware datetime in ``tz`` (naive ones are local times of ``tz``)."""
    if dt.tzinfo is None:
        return dt.replace(tzinfo=tz)
    return dt.astimezone(tz)


def _period_text(period, tz, tz_label) -> str:
    if not period:
        return ""
    start, end = (_local(d, tz) for d in period)
    return f"{start:%Y-%m-%d %H:%M} – {end:%Y-%m-%d %H:%M} ({tz_label})"


def _fmt_kwh(x: float) -> str:
    """kWh with as many decimals as its size deserves, thousands separated."""
    ax = abs(x)
    if ax >= 100:
        return f"{x:,.0f}"
    if ax >= 1:
        return f"{x:,.1f}"
    if ax >= 0.01:
        return f"{x:.2f}"
    return f"{x:.3g}"


def _short(name: str, limit: int = _MAX_TICK_LABEL) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


class _Style:
    """Font sizes and line widths scaled with the image, so a 4000 px chart
    looks like a 1600 px one enlarged and a 450 px one stays legible."""

    def __init__(self, width_px, height_px):
        s = min(width_px / 1600, height_px / 900)
        self.scale = s = min(3.0, max(0.6, s))
        self.title = 15 * s
        self.subtitle = 10 * s
        self.label = 11 * s
        self.tick = 9 * s
        self.legend = 9 * s
        self.message = 16 * s
        self.line = 1.3 * s

    @staticmethod
    def px(points: float) -> float:
        return points * _DPI / 72


def _literal(*texts):
    """Draw these Text artists as plain text: no mathtext, no TeX."""
    for text in texts:
        if text is not None:
            text.set_parse_math(False)
            text.set_usetex(False)


def _ensure_mplconfigdir() -> str:
    """Point MPLCONFIGDIR at a writable directory before matplotlib is imported.

    On Lambda only /tmp is writable, and matplotlib otherwise tries ~/.config
    (and warns, or builds its font cache on every start).
    """
    current = os.environ.get("MPLCONFIGDIR")
    if current:
        try:
            os.makedirs(current, exist_ok=True)
            if os.access(current, os.W_OK | os.X_OK):
                return current
        except OSError:
            pass
    uid = getattr(os, "getuid", lambda: "user")()
    path = os.path.join(tempfile.gettempdir(), f"matplotlib-{uid}")
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        if not (os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK)):
            raise PermissionError(path)
    except OSError:
        path = tempfile.mkdtemp(prefix="matplotlib-")
    os.environ["MPLCONFIGDIR"] = path
    return path


def _new_figure(width_px, height_px, layout="constrained"):
    """A Figure of exactly width_px x height_px on an Agg canvas (no pyplot).

    Thumbnails get matplotlib's fixed margins: the constrained layout cannot
    fit a chart's decorations into them (and warns).
    """
    _ensure_mplconfigdir()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if width_px < _MIN_LAYOUT_PX[0] or height_px < _MIN_LAYOUT_PX[1]:
        layout = None
    fig = Figure(figsize=(width_px / _DPI, height_px / _DPI), dpi=_DPI,
                 facecolor="white", layout=layout)
    FigureCanvasAgg(fig)
    if layout == "constrained":
        pad = 6 / _DPI  # inches: a few pixels around the edges
        fig.get_layout_engine().set(w_pad=pad, h_pad=pad)
    return fig


def _suptitle(fig, title, style):
    _literal(fig.suptitle(title, fontsize=style.title, fontweight="bold"))


def _message(width_px, height_px, title, subtitle, message, style):
    """The no-data chart: the title at the top and a centred message."""
    fig = _new_figure(width_px, height_px, layout=None)
    _suptitle(fig, title, style)
    text = message + (f"\n{subtitle}" if subtitle else "")
    _literal(fig.text(0.5, 0.5, text, ha="center", va="center", fontsize=style.message,
                      color="0.25", linespacing=1.6))
    return fig


def _palette(n):
    """n distinct colours (up to 60 before repeating); dark ones first."""
    import matplotlib

    cm = matplotlib.colormaps
    colors = (list(cm["tab10"].colors) + list(cm["tab20"].colors[1::2])
              + list(cm["tab20b"].colors) + list(cm["tab20c"].colors))
    return [colors[i % len(colors)] for i in range(n)]


def _kwh_formatter():
    """Tick labels in kWh: plain numbers with thousands separators (no offset or
    scientific notation, which hide a register's real value), with just
    enough decimals for the tick step."""
    from matplotlib.ticker import Formatter

    class KwhFormatter(Formatter):
        tick_locs: list = []

        def set_locs(self, locs):
            self.tick_locs = list(locs)

        def __call__(self, x, pos=None):
            decimals = 0
            if len(self.tick_locs) >= 2:
                step = abs(self.tick_locs[1] - self.tick_locs[0])
                while decimals < 6:
                    scaled = step * 10 ** decimals
                    if abs(scaled - round(scaled)) <= 1e-6 * max(1.0, scaled):
                        break
                    decimals += 1
            if abs(x) < 0.5 * 10 ** -decimals:
                x = 0.0  # no "-0"
            return f"{x:,.{decimals}f}"

    return KwhFormatter()


def _fit_legend(handles, labels, width_px, height_px, style, more=None):
    """Entries and columns for a legend beside the plot that fits the figure.

    Columns as the height requires, up to about 45% of the width; when even
    that is too small (many meters on a small image) the last entries give way
    to one "+ K more" line, ``more(k_kept)`` when given.
    """
    from matplotlib.patches import Patch

    font_px = style.px(style.legend)
    free_px = height_px * 0.85 - style.px(style.title) * 1.5 - font_px * 3  # titles
    rows = max(1, int(free_px / (font_px * 1.75)))
    col_px = font_px * (0.6 * max(map(len, labels), default=1) + 4.5)
    capacity = rows * max(1, int(width_px * 0.45 // col_px))
    handles, labels = list(handles), list(labels)
    if len(labels) > capacity:
        keep = max(1, capacity - 1)
        text = more(keep) if more else f"+ {len(labels) - keep} more"
        handles = handles[:keep] + [Patch(facecolor="none", edgecolor="none")]
        labels = labels[:keep] + [text]
    return handles, labels, max(1, math.ceil(len(labels) / rows))


def _clean_energy(energy):
    """(name, kWh) pairs with finite values; names as str."""
    out = []
    for name, kwh in energy:
        try:
            value = float(kwh)
        except (TypeError, ValueError):
            continue
        if math.isfinite(value):
            out.append(("" if name is None else str(name), value))
    return out


def _pie(energy, width_px, height_px, title, subtitle, style):
    """Each meter's share of the energy used; legend: name, kWh and %."""
    items = _clean_energy(energy)
    colors = _palette(len(items))  # by position in the caller's order
    shown = [(i, name, kwh) for i, (name, kwh) in enumerate(items) if kwh > 0]
    if not shown:
        msg = NO_ENERGY if items else NO_READINGS
        return _message(width_px, height_px, title, subtitle, msg, style)
    shown.sort(key=lambda item: -item[2])  # largest slice first, from 12 o'clock
    total = sum(kwh for _, _, kwh in shown)

    from matplotlib.colors import to_rgb

    fig = _new_figure(width_px, height_px)
    _suptitle(fig, title, style)
    ax = fig.add_subplot()
    wedge_colors = [colors[i] for i, _, _ in shown]
    wedges, _texts, autotexts = ax.pie(
        [kwh for _, _, kwh in shown], colors=wedge_colors, startangle=90,
        counterclock=False, autopct=lambda pct: f"{pct:.0f}%" if pct >= 4 else "",
        pctdistance=0.72, textprops={"fontsize": style.legend},
        wedgeprops={"linewidth": max(0.5, 0.8 * style.scale), "edgecolor": "white"})
    for text, color in zip(autotexts, wedge_colors):
        r, g, b = to_rgb(color)
        text.set_color("black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.55 else "white")
        _literal(text)
    ax.set_aspect("equal")
    if subtitle:
        _literal(ax.set_title(subtitle, fontsize=style.subtitle, color="0.35"))

    labels = [f"{_short(name, _MAX_LEGEND_NAME)}: {_fmt_kwh(kwh)} kWh ({100 * kwh / total:.1f}%)"
              for _, name, kwh in shown]

    def more(kept):
        rest = sum(kwh for _, _, kwh in shown[kept:])
        return (f"+ {len(shown) - kept} more meters: {_fmt_kwh(rest)} kWh "
                f"({100 * rest / total:.1f}%)")

    handles, labels, ncols = _fit_legend(wedges, labels, width_px, height_px, style, more)
    legend_title = f"Meter: energy used (total {_fmt_kwh(total)} kWh)"
    dropped = len(items) - len(shown)
    if dropped:
        legend_title += f"\n{dropped} meter{'s' if dropped > 1 else ''} with no energy used not shown"
    # Handles and labels passed explicitly: a name starting with "_" stays listed.
    legend = ax.legend(handles, labels, loc="center left", bbox_to_anchor=(1.02, 0.5),
                       fontsize=style.legend, title=legend_title,
                       title_fontsize=style.legend, frameon=False, ncols=ncols)
    _literal(legend.get_title(), *legend.get_texts())
    return fig


def _bar(energy, width_px, height_px, title, subtitle, style):
    """Energy used per meter, in the caller's order."""
    items = _clean_energy(energy)
    if not items or all(kwh == 0 for _, kwh in items):
        msg = NO_ENERGY if items else NO_READINGS
        return _message(width_px, height_px, title, subtitle, msg, style)
    names = [name for name, _ in items]
    values = [kwh for _, kwh in items]
    total = sum(values)

    fig = _new_figure(width_px, height_px)
    _suptitle(fig, title, style)
    ax = fig.add_subplot()
    x = list(range(len(items)))
    bars = ax.bar(x, values, color=_palette(1)[0], width=0.7, zorder=2)
    ax.axhline(0, color="0.3", linewidth=max(0.5, 0.8 * style.scale), zorder=3)
    ax.grid(axis="y", color="0.88", zorder=0)
    ax.set_axisbelow(True)
    ax.yaxis.set_major_formatter(_kwh_formatter())
    ax.tick_params(labelsize=style.tick)
    ax.set_xlim(-0.6, len(items) - 0.4)

    # Meter names on the x axis: turned when they would overlap, and only
    # every k-th one when even turned names cannot fit (many meters, small image).
    font_px = style.px(style.tick)
    limit = min(_MAX_TICK_LABEL, max(6, int(height_px * 0.25 / (font_px * 0.45))))
    tick_labels = [_short(name, limit) for name in names]
    slot_px = width_px * 0.85 / len(items)
    widest_px = max(len(label) for label in tick_labels) * font_px * 0.62
    turn = widest_px > slot_px * 0.9
    every = max(1, math.ceil(font_px * 1.4 / slot_px)) if turn else 1
    ax.set_xticks(x[::every], tick_labels[::every], rotation=45 if turn else 0,
                  ha="right" if turn else "center", rotation_mode="anchor")
    for tick in ax.xaxis.get_major_ticks():
        _literal(tick.label1, tick.label2)

    # Values on the bars, while there is room for them.
    if slot_px >= style.px(style.tick) * 4:
        _literal(*ax.bar_label(bars, labels=[_fmt_kwh(v) for v in values],
                               fontsize=style.tick, padding=2))

    _literal(ax.set_xlabel("Meter", fontsize=style.label),
             ax.set_ylabel("Energy used (kWh)", fontsize=style.label))
    if subtitle:
        _literal(ax.set_title(subtitle, fontsize=style.subtitle, color="0.35"))
    ax.margins(y=0.1)
    legend = ax.legend([bars], [f"Energy used in the period (total {_fmt_kwh(total)} kWh)"],
                       loc="best", fontsize=style.legend, framealpha=0.9)
    _literal(*legend.get_texts())
    return fig


def _line(series, width_px, height_px, title, subtitle, tz, tz_label, period, style,
          reduce_points):
    """The meters' cumulative readings over time, in the project's time zone."""
    series = list(series)
    present = [(i, s) for i, s in enumerate(series) if len(s.times) and len(s.values)]
    if not present:
        return _message(width_px, height_px, title, subtitle, NO_READINGS, style)

    import matplotlib.dates as mdates
    import numpy as np

    fig = _new_figure(width_px, height_px)
    _suptitle(fig, title, style)
    ax = fig.add_subplot()
    # One reduced point pair per pixel column of the plot (an upper bound: the
    # layout only makes the axes narrower).
    columns = max(1, int(width_px * ax.get_position().width))
    epoch = mdates.date2num(datetime(1970, 1, 1, tzinfo=timezone.utc))
    colors = _palette(len(series))
    handles, labels = [], []
    for i, s in present:
        if reduce_points:
            times, values = reduce_minmax(s.times, s.values, columns)
        else:
            if len(s.times) != len(s.values):
                raise ValueError(f"series {s.name!r}: times and values differ in length")
            times, values = s.times, s.values
        x = np.asarray(times, dtype=float) / 86400.0 + epoch
        few = len(times) <= 60
        (handle,) = ax.plot(x, np.asarray(values, dtype=float), color=colors[i],
                            linewidth=style.line, marker="o" if few else None,
                            markersize=3 * style.scale)
        handles.append(handle)
        labels.append(_short("" if s.name is None else str(s.name), _MAX_LEGEND_NAME))

    if period:
        start, end = (mdates.date2num(_local(d, tz)) for d in period)
        if end > start:
            ax.set_xlim(start, end)
    locator = mdates.AutoDateLocator(tz=tz)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=tz))
    ax.yaxis.set_major_formatter(_kwh_formatter())
    ax.tick_params(labelsize=style.tick)
    ax.xaxis.get_offset_text().set_fontsize(style.tick)
    ax.grid(color="0.9")
    _literal(ax.set_xlabel(f"Time ({tz_label})", fontsize=style.label),
             ax.set_ylabel("Meter reading, cumulative (kWh)", fontsize=style.label))
    if subtitle:
        _literal(ax.set_title(subtitle, fontsize=style.subtitle, color="0.35"))
    handles, labels, ncols = _fit_legend(handles, labels, width_px, height_px, style)
    legend = ax.legend(handles, labels, loc="center left", bbox_to_anchor=(1.01, 0.5),
                       fontsize=style.legend, title="Meter", title_fontsize=style.legend,
                       frameon=False, ncols=ncols)
    _literal(legend.get_title(), *legend.get_texts())
    return fig
