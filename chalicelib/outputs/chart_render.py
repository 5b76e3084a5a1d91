"""PNG rendering of the ``GET /graphics`` charts: pie, bar, line (registers or energy used) and one
meter's register above its energy used.

Pure rendering: the caller reads the data, reduces it and uploads the bytes; nothing here touches
AWS. matplotlib and numpy are imported inside functions only, so importing this module keeps the
Lambda's cold start light (routes that never draw never pay for matplotlib).

Charts are drawn on ``matplotlib.figure.Figure`` objects with the Agg canvas (never pyplot's global
figure registry), so repeated or concurrent calls leak nothing. Every piece of text that may come
from a user (title, meter names) is drawn literally: ``$...$`` is never parsed as mathtext and a
leading ``_`` does not hide a legend entry.

Layout: the title and the period are drawn at the top, each fitted to the width (smaller type, then
cut with "…"), and a note (what hatched or lighter parts mean) at the bottom; the plot and its legend
share the rest under matplotlib's constrained layout, the legend beside the plot on a landscape image
and under it on a portrait one. A chart whose drawn extent still leaves the image is rebuilt tighter
(shorter names, smaller type).

Small images: what a chart of a given size shows is decided in one place, ``DETAILS`` (read by
``detail_level``), for every kind of chart: below the first level's size the title, period, notes
and legends go, then the axis titles, then the tick labels and values written on the plot (a
sparkline). ``figure`` removes them from whatever a drawing function drew (``_drop``), so a kind of
chart added later obeys the same rule; a chart that still does not fit drops to the next level.

Energy that is not measured in full is drawn apart: a period whose energy was interpolated across a
gap in the readings (``ESTIMATED``) hatched or dashed, a period cut by now or by where a meter's
readings begin or end (``PARTIAL``) lighter or dotted, with a note saying so.
"""
from __future__ import annotations

import io
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone, tzinfo
from typing import TYPE_CHECKING, Any, Literal, cast

from chalicelib.platform import clock

if TYPE_CHECKING:   # matplotlib and numpy are imported when a chart is drawn only
    import numpy as np
    from matplotlib.artist import Artist
    from matplotlib.axes import Axes
    from matplotlib.backend_bases import RendererBase
    from matplotlib.figure import Figure
    from matplotlib.layout_engine import ConstrainedLayoutEngine
    from matplotlib.legend import Legend
    from matplotlib.text import Text
    from matplotlib.ticker import Formatter

__all__ = ["LineSeries", "UseSeries", "MinMaxReducer", "Detail", "DETAILS", "detail_level", "figure", "render_png",
           "render_bill_png", "bill_figure", "reduce_minmax", "KINDS", "NO_READINGS", "NO_ENERGY", "NO_CHARGES", "NO_DATA",
           "MEASURED", "ESTIMATED", "PARTIAL", "ESTIMATED_NOTE", "PARTIAL_NOTE"]

KINDS = ("pie", "bar", "line", "meter")   # the drawings render_png makes (charts.CHART_TYPES: what the API asks for)
NO_READINGS = "No readings for this period"
NO_ENERGY = "No energy used in this period"
NO_CHARGES = "No bill for this period (no tariff, or no energy known)"
NO_DATA = "No data"                       # the no-data message of a sparkline

# How a period's energy is known (UseSeries.quality): in full, interpolated across a gap in the
# readings, or for part of the period only (cut by now, or by where the meter's readings begin or end).
MEASURED, ESTIMATED, PARTIAL = 0, 1, 2
ESTIMATED_NOTE = "estimated across a gap in the readings"
PARTIAL_NOTE = "partial period (until now, or where readings begin or end)"

_DPI = 100
_MAX_PX = 10_000        # the API allows 40 hundreds (4000 px); this only stops absurd sizes
_MAX_TICK_LABEL = 24    # longer meter names are shortened on the bar chart's axis...
_MAX_LEGEND_NAME = 40   # ...and in legends
_MESSAGE = "message"     # gid of the no-data message: the one figure text a small chart keeps
_PAD_PX = 6             # around the edges
_MIN_FONT = 6.5         # points: type is never made smaller than this to fit


@dataclass
class LineSeries:
    """One meter's readings for the line chart (registers)."""
    name: str
    times: Sequence[float]   # epoch seconds (UTC), ascending
    values: Sequence[float]  # cumulative register, kWh


@dataclass
class UseSeries:
    """One meter's energy used per period: values[i] is the kWh between edges[i] and edges[i + 1]."""
    name: str
    edges: Sequence[float]   # epoch seconds (UTC), ascending, one more than values
    values: Sequence[float]  # kWh; NaN where nothing is known
    quality: Sequence[int] = ()   # MEASURED, ESTIMATED or PARTIAL per value; empty: all measured


@dataclass(frozen=True)
class Detail:
    """What a chart of a given size shows (DETAILS, from the most to the least)."""
    name: str
    header: bool   # the title, the period under it and the note at the bottom
    legend: bool   # legends
    labels: bool   # axis titles ("Energy used (kWh)", "Time (…)")
    ticks: bool    # tick labels, values written on bars and pie slices, a no-data message's details
    min_px: tuple[int, int]   # the smallest (width, height) in pixels drawn at this level
    squeezes: tuple[int, ...]  # the tighter styles tried before the next level (_Style: type, names, titles)


# The one place that decides what a small chart drops, for every kind (thresholds chosen by looking
# at each kind rendered from 100×100 to 400×300 px: docs/decisions.md, "Charts").
DETAILS = (
    Detail("full", header=True, legend=True, labels=True, ticks=True, min_px=(300, 200), squeezes=(0, 1, 2, 3)),
    Detail("plot", header=False, legend=False, labels=True, ticks=True, min_px=(200, 150), squeezes=(0, 2)),
    Detail("axes", header=False, legend=False, labels=False, ticks=True, min_px=(150, 100), squeezes=(0,)),
    Detail("sparkline", header=False, legend=False, labels=False, ticks=False, min_px=(1, 1), squeezes=(0,)),
)


def detail_level(width_px: int, height_px: int) -> int:
    """The index in DETAILS of the most a chart of this size shows."""
    return next(i for i, d in enumerate(DETAILS) if width_px >= d.min_px[0] and height_px >= d.min_px[1])


class MinMaxReducer:
    """reduce_minmax while reading: fed (epoch, value) one at a time, it keeps at most the first,
    the minimum and the maximum of each of ``columns`` equal slices of [start, end), so a
    meter-year is reduced without ever being held. points() gives them in time order."""

    def __init__(self, start: float, end: float, columns: int) -> None:
        self.start = float(start)
        self.columns = max(1, int(columns))
        self.scale = self.columns / max(1e-9, float(end) - float(start))
        self.slots: dict[int, list[tuple[float, float]]] = {}   # column → [min (t, v), max (t, v)]
        self.count = 0

    def add(self, epoch: float, value: float) -> None:
        if not (math.isfinite(epoch) and math.isfinite(value)):
            return
        self.count += 1
        column = min(self.columns - 1, max(0, int((epoch - self.start) * self.scale)))
        slot = self.slots.get(column)
        if slot is None:
            self.slots[column] = [(epoch, value), (epoch, value)]
        elif value < slot[0][1]:
            slot[0] = (epoch, value)
        elif value > slot[1][1]:
            slot[1] = (epoch, value)

    def points(self) -> tuple[list[float], list[float]]:
        out = sorted({p for column in self.slots.values() for p in column})
        return [float(t) for t, _v in out], [float(v) for _t, v in out]


# --------------------------------------------------------------------------- public API

def render_png(kind: str, *, width_px: int, height_px: int, title: str, tz_name: str,
               energy: Sequence[tuple[str, float]] = (), estimated: Sequence[float] = (),
               series: Sequence[LineSeries | UseSeries] = (), use: UseSeries | None = None,
               period: tuple[datetime, datetime] | None = None, bucket: str = "hour",
               legend_title: str | None = None) -> bytes:
    """Render one chart and return PNG bytes of exactly ``width_px`` x ``height_px``.

    ``kind`` 'pie' or 'bar' uses ``energy`` (name, kWh used in the period) and ``estimated`` (of
    each one's kWh, how much was estimated across gaps in the readings: drawn hatched; empty: none);
    'line' uses ``series``:
    LineSeries (cumulative registers) or UseSeries (energy used per ``bucket``, 'hour' or 'day');
    'meter' draws one meter's register (``series[0]``, a LineSeries) above its energy used
    (``use``). Times are shown in ``tz_name`` (IANA, looked up by clock.zone). ``period`` (start,
    end) is shown under the title and bounds the time axis; naive datetimes are local times of
    ``tz_name``. No data gives a chart with a centred message, never an exception; a bad ``kind``,
    size or zone is a ValueError (the route validates those first: a project's zone is checked
    when it is stored). Any size from 1×1 px draws: small ones drop text as DETAILS says.
    """
    fig = figure(kind, width_px=width_px, height_px=height_px, title=title, tz_name=tz_name, energy=energy,
                 estimated=estimated, series=series, use=use, period=period, bucket=bucket,
                 legend_title=legend_title)
    return _png(fig)


def reduce_minmax(times: Sequence[float], values: Sequence[float], columns: int) -> tuple[list[float], list[float]]:
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


def figure(kind: str, *, width_px: int, height_px: int, title: str | None, tz_name: str,
           energy: Sequence[tuple[str, float]] = (), estimated: Sequence[float] = (),
           series: Sequence[LineSeries | UseSeries] = (), use: UseSeries | None = None,
           period: tuple[datetime, datetime] | None = None, bucket: str = "hour",
           legend_title: str | None = None) -> Figure:
    """The drawn matplotlib Figure that render_png encodes (same arguments): to look at what a chart
    holds (its texts, legends, artists) without decoding pixels.

    Built at the detail level of its size (detail_level), tighter each time it does not fit (smaller
    type, shorter names), then at the next level down (_fitted).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown chart kind {kind!r}: expected one of {', '.join(KINDS)}")
    width_px, height_px = _check_size(width_px, height_px)
    _ensure_mplconfigdir()  # before anything below imports matplotlib
    tz, tz_label = clock.zone(tz_name), tz_name
    title = "" if title is None else str(title)
    series = list(series)

    def draw(style: _Style) -> Figure:
        subtitle = _period_text(period, tz, tz_label, short=style.short)
        if kind in ("line", "meter"):
            return _line(kind, series, use, width_px, height_px, title, subtitle, tz, tz_label, period, style, bucket)
        if kind == "pie":
            return _pie(energy, width_px, height_px, title, subtitle, style, legend_title, estimated)
        return _bar(energy, width_px, height_px, title, subtitle, style, legend_title, estimated)

    return _fitted(width_px, height_px, draw)


def render_bill_png(*, width_px: int, height_px: int, title: str, tz_name: str, months: Sequence[str],
                    stacks: Sequence[tuple[str, Sequence[float]]], currency: str,
                    period: tuple[datetime, datetime] | None = None) -> bytes:
    """A bar chart of charges per month (GET /graphics?bill=1): one bar per month (``months``, its label),
    stacked by ``stacks`` (name, amount per month; drawn bottom-up in order), in ``currency``, with each
    month's total above its bar. No charge at all gives the centred NO_CHARGES message. Any size from
    1×1 px draws: small ones drop text as DETAILS says, as every chart does (_fitted)."""
    return _png(bill_figure(width_px=width_px, height_px=height_px, title=title, tz_name=tz_name, months=months,
                            stacks=stacks, currency=currency, period=period))


def bill_figure(*, width_px: int, height_px: int, title: str, tz_name: str, months: Sequence[str],
                stacks: Sequence[tuple[str, Sequence[float]]], currency: str,
                period: tuple[datetime, datetime] | None = None) -> Figure:
    """The drawn Figure render_bill_png encodes (same arguments), as figure() is render_png's."""
    width_px, height_px = _check_size(width_px, height_px)
    _ensure_mplconfigdir()
    tz = clock.zone(tz_name)
    return _fitted(width_px, height_px, lambda style: _bill_bars(
        months, stacks, currency, width_px, height_px, title, _period_text(period, tz, tz_name, short=style.short),
        style))


def _bill_bars(months: Sequence[str], stacks: Sequence[tuple[str, Sequence[float]]], currency: str, width_px: int,
               height_px: int, title: str, subtitle: str, style: _Style) -> Figure:
    """Charges per month stacked by part (energy per TOU period, demand, fixed, minimum); totals on top."""
    stacks = [(str(name), [float(v) if v is not None and math.isfinite(float(v)) else 0.0 for v in values])
              for name, values in stacks]
    stacks = [(name, values) for name, values in stacks if any(v > 0 for v in values)]
    if not stacks or not months:
        return _message(width_px, height_px, title, subtitle, NO_CHARGES, style)
    totals = [sum(values[i] for _name, values in stacks) for i in range(len(months))]
    fig = _new_figure(width_px, height_px)
    _header(fig, title, subtitle, style)
    ax = fig.add_subplot()
    x = list(range(len(months)))
    bottom = [0.0] * len(months)
    handles: list[Any] = []
    for (_name, values), color in zip(stacks, _palette(len(stacks))):
        handles.append(ax.bar(x, values, bottom=bottom, color=color, width=0.7, zorder=2,
                              edgecolor="white", linewidth=max(0.3, 0.5 * style.scale)))
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.grid(axis="y", color="0.88", zorder=0)
    ax.set_axisbelow(True)
    ax.tick_params(labelsize=style.tick)
    ax.set_xlim(-0.6, len(months) - 0.4)
    # Month labels on two lines ("Nov" over "2026"), every k-th one when even those would overlap (the
    # plot shares a landscape image with the legend beside it).
    font_px = style.px(style.tick)
    labels = [str(month).replace(" ", "\n", 1) for month in months]
    slot_px = width_px * (0.85 if style.portrait else 0.5) / len(months)
    widest = max(len(part) for label in labels for part in label.split("\n"))
    every = max(1, math.ceil(font_px * 0.62 * widest / (slot_px * 0.9)))
    ax.set_xticks(x[::every], labels[::every])
    for tick in ax.xaxis.get_major_ticks():
        _literal(tick.label1, tick.label2)
    if slot_px >= font_px * 0.62 * 7:
        for i, total in enumerate(totals):
            _literal(ax.annotate(f"{total:,.2f}", (i, total), xytext=(0, 2), textcoords="offset points",
                                 ha="center", va="bottom", fontsize=style.tick))
    _literal(ax.set_xlabel("Month", fontsize=style.label),
             ax.set_ylabel(f"Charges ({currency})", fontsize=style.label))
    ax.margins(y=0.12)
    labels = _names([name for name, _values in stacks], style, width_px)
    labels = [f"{label}: {sum(values):,.2f}" for label, (_name, values) in zip(labels, stacks)]
    _legend(fig, list(reversed(handles)), list(reversed(labels)), style,
            f"{currency}, total {sum(totals):,.2f}")
    return fig


# --------------------------------------------------------------------------- internals

def _fitted(width_px: int, height_px: int, draw: Callable[[_Style], Figure]) -> Figure:
    """The drawn Figure of draw(style) that fits: the one loop every kind of chart goes through.

    From the size's detail level (DETAILS), each try a tighter style, then the levels below; what a
    level leaves out is removed from whatever draw() drew (_drop), before the figure is laid out and
    drawn. A chart whose axis titles alone do not fit goes straight to the short ones.
    """
    import warnings

    fig: Figure | None = None
    long_titles = True   # False once the axis titles alone did not fit: tries with them are skipped
    for level, squeeze in _attempts(detail_level(width_px, height_px)):
        style = _Style(width_px, height_px, squeeze, DETAILS[level])
        if not long_titles and style.detail.labels and not style.short:
            continue
        fig = draw(style)
        _drop(fig, style.detail)
        with warnings.catch_warnings():   # a layout that cannot fit says so: overflow() sees it too
            warnings.filterwarnings("ignore", "constrained_layout not applied")
            fig.canvas.draw()
        parts = overflow(fig)
        if not parts:
            break
        titles = [title for ax in fig.axes for title in (ax.xaxis.label, ax.yaxis.label)]
        long_titles = long_titles and not all(any(part is title for title in titles) for part in parts)
    assert fig is not None   # _attempts is never empty
    return fig


def _png(fig: Figure) -> bytes:
    """The PNG of a drawn figure: the pixels it was drawn to (to check it fits), not drawn again."""
    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(cast(Any, fig.canvas).buffer_rgba())).convert("RGB").save(buf, format="png")
    return buf.getvalue()


def _attempts(level: int) -> list[tuple[int, int]]:
    """(detail level, squeeze) of each try: the size's level ever tighter, then the levels below."""
    return [(lower, squeeze) for lower in range(level, len(DETAILS)) for squeeze in DETAILS[lower].squeezes]


def _drop(fig: Figure, detail: Detail) -> None:
    """Remove from a drawn chart what its detail level leaves out, whatever kind drew it."""
    if not detail.header:
        for text in [t for t in fig.texts if t.get_gid() != _MESSAGE]:
            text.remove()
    if not detail.legend:
        for legend in [*fig.legends, *(ax.get_legend() for ax in fig.axes)]:
            if legend is not None:
                legend.remove()
    for ax in fig.axes:
        _drop_from_axes(ax, detail)
    engine = fig.get_layout_engine()
    if not detail.ticks and engine is not None:   # a sparkline: the plot fills the image
        cast("ConstrainedLayoutEngine", engine).set(w_pad=2 / _DPI, h_pad=2 / _DPI, rect=(0, 0, 1, 1))


def _drop_from_axes(ax: Axes, detail: Detail) -> None:
    """_drop's part in one plot: its axis titles, then its tick labels and the values written on it."""
    if not detail.labels:
        ax.set_xlabel("")
        ax.set_ylabel("")
    if not detail.ticks:
        ax.tick_params(which="both", length=0, labelbottom=False, labeltop=False, labelleft=False,
                       labelright=False)
        for text in list(ax.texts):
            text.remove()


def overflow(fig: Figure) -> list[Artist]:
    """The drawn parts of a figure (axes with their ticks, labels and legends, figure texts and
    legends) that reach outside it, the plots that collapsed, and the axis titles longer than their
    plot's side (they would run into the next plot's); [] when everything fits."""
    renderer = cast(Any, fig.canvas).get_renderer()   # the Agg canvas's
    width, height = fig.bbox.width, fig.bbox.height
    out: list[Artist] = []
    parts: list[Any] = [*fig.axes, *fig.texts, *fig.legends]
    for part in parts:
        if not part.get_visible() or (hasattr(part, "get_text") and not part.get_text()):
            continue
        box = (part.get_tightbbox(renderer) if hasattr(part, "get_tightbbox")
               else part.get_window_extent(renderer))
        if box is None:
            continue
        if box.x0 < -1 or box.y0 < -1 or box.x1 > width + 1 or box.y1 > height + 1:
            out.append(part)
    for ax in fig.axes:
        position = ax.get_position()
        if position.width * width < 40 or position.height * height < 30:
            out.append(ax)
        for label, side in ((ax.yaxis.label, position.height * height), (ax.xaxis.label, position.width * width)):
            extent = label.get_window_extent(renderer)
            if label.get_text() and max(extent.width, extent.height) > side + 2:
                out.append(label)
    return out


def _check_size(width_px: object, height_px: object) -> list[int]:
    """Sizes are whole pixels, 1 to _MAX_PX (a float like 450.0 is fine)."""
    out = []
    for name, px in (("width_px", width_px), ("height_px", height_px)):
        try:
            as_int = int(px)   # type: ignore[call-overload]  # any object: int() says whether it is a number
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a whole number of pixels, not {px!r}") from None
        if as_int != px or not 1 <= as_int <= _MAX_PX:
            raise ValueError(f"{name} must be a whole number from 1 to {_MAX_PX}, not {px!r}")
        out.append(as_int)
    return out


def _local(dt: datetime, tz: tzinfo) -> datetime:
    """An aware datetime in ``tz`` (naive ones are local times of ``tz``)."""
    if dt.tzinfo is None:
        return dt.replace(tzinfo=tz)
    return dt.astimezone(tz)


def _period_text(period: tuple[datetime, datetime] | None, tz: tzinfo, tz_label: str, short: bool = False) -> str:
    if not period:
        return ""
    start, end = (_local(d, tz) for d in period)
    if short:
        return f"{start:%Y-%m-%d %H:%M} – {end:%Y-%m-%d %H:%M}"
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
    """Font sizes and line widths scaled with the image, so a 4000 px chart looks like a 1600 px
    one enlarged and a 450 px one stays legible; each squeeze makes type and names smaller."""

    def __init__(self, width_px: float, height_px: float, squeeze: int = 0, detail: Detail = DETAILS[0]) -> None:
        self.detail = detail
        s = min(width_px / 1600, height_px / 900)
        self.scale = s = min(3.0, max(0.6, s))
        shrink = (1.0, 0.9, 0.8, 0.72)[min(squeeze, 3)]
        self.squeeze = squeeze
        self.portrait = width_px < height_px
        self.title = max(_MIN_FONT + 2, 15 * s * shrink)
        self.subtitle = max(_MIN_FONT, 10 * s * shrink)
        self.label = max(_MIN_FONT, 11 * s * shrink)
        self.tick = max(_MIN_FONT, 9 * s * shrink)
        self.legend = max(_MIN_FONT, 9 * s * shrink)
        self.message = max(_MIN_FONT + 2, 16 * s * shrink)
        self.line = 1.3 * s
        self.legend_name = (_MAX_LEGEND_NAME, 28, 20, 14)[min(squeeze, 3)]
        self.short = squeeze >= 2    # short axis titles and period

    @staticmethod
    def px(points: float) -> float:
        return points * _DPI / 72


def _literal(*texts: Text | None) -> None:
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


def _new_figure(width_px: int, height_px: int, layout: Literal["constrained"] | None = "constrained") -> Figure:
    """A Figure of exactly width_px x height_px on an Agg canvas (no pyplot); a sparkline's margins
    are set when its text is dropped (_drop)."""
    _ensure_mplconfigdir()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_px / _DPI, height_px / _DPI), dpi=_DPI,
                 facecolor="white", layout=layout)
    FigureCanvasAgg(fig)
    if layout == "constrained":
        pad = _PAD_PX / _DPI  # inches: a few pixels around the edges
        cast("ConstrainedLayoutEngine", fig.get_layout_engine()).set(w_pad=pad, h_pad=pad)
    return fig


def _fit_text(text: Text, max_px: float, renderer: RendererBase, min_size: float = _MIN_FONT) -> None:
    """Make a Text at most max_px wide: smaller type down to min_size, then cut with "…"."""
    full = text.get_text()
    while text.get_window_extent(renderer).width > max_px and cast(float, text.get_fontsize()) > min_size:
        text.set_fontsize(max(min_size, cast(float, text.get_fontsize()) * 0.9))
    keep = len(full)
    while text.get_window_extent(renderer).width > max_px and keep > 1:
        keep = max(1, int(keep * 0.9) if keep > 20 else keep - 1)
        text.set_text(full[:keep].rstrip() + "…")


def _header(fig: Figure, title: str, subtitle: str, style: _Style) -> float:
    """The title and the period at the top, each fitted to the width; the layout gets the rest
    (all of it at a detail level without a header)."""
    if not style.detail.header:
        return 1.0
    renderer = cast(Any, fig.canvas).get_renderer()
    width_px, height_px = fig.bbox.width, fig.bbox.height
    y = height_px - _PAD_PX
    if title:
        text = fig.suptitle(title, x=0.5, y=y / height_px, ha="center", va="top",
                            fontsize=style.title, fontweight="bold")
        text.set_in_layout(False)
        _literal(text)
        _fit_text(text, width_px - 2 * _PAD_PX, renderer, min_size=_MIN_FONT + 1)
        y -= text.get_window_extent(renderer).height + 2
    if subtitle:
        text = fig.text(0.5, y / height_px, subtitle, ha="center", va="top",
                        fontsize=style.subtitle, color="0.35")
        _literal(text)
        _fit_text(text, width_px - 2 * _PAD_PX, renderer)
        y -= text.get_window_extent(renderer).height + 2
    engine = fig.get_layout_engine()
    if engine is not None:   # the constrained layout (_new_figure)
        cast("ConstrainedLayoutEngine", engine).set(rect=(0, 0, 1, max(0.3, y / height_px)))
    return y / height_px


def _note(fig: Figure, notes: Sequence[str], style: _Style) -> None:
    """A note at the bottom of the chart (what its hatched or lighter parts mean), on one line or
    one line per note when that is too wide, fitted to the width; the layout gets what is above."""
    if not notes or not style.detail.header:
        return
    renderer = cast(Any, fig.canvas).get_renderer()
    width_px, height_px = fig.bbox.width, fig.bbox.height
    text = fig.text(0.5, _PAD_PX / height_px, " · ".join(notes), ha="center", va="bottom",
                    fontsize=style.subtitle, color="0.3", fontstyle="italic")
    text.set_in_layout(False)
    _literal(text)
    if text.get_window_extent(renderer).width > width_px - 2 * _PAD_PX:
        text.set_text("\n".join(notes))
    _fit_text(text, width_px - 2 * _PAD_PX, renderer)
    engine = fig.get_layout_engine()
    if engine is not None:   # the constrained layout: the plot and legends above the note
        bottom = (text.get_window_extent(renderer).y1 + 2) / height_px
        left, low, width, height = cast("ConstrainedLayoutEngine", engine).get()["rect"]
        cast("ConstrainedLayoutEngine", engine).set(rect=(left, bottom, width, max(0.2, low + height - bottom)))


def _lighter(color: Any, amount: float = 0.55) -> tuple[float, float, float]:
    """A colour mixed with white: how partial and estimated energy is filled."""
    from matplotlib.colors import to_rgb

    return cast(tuple[float, float, float], tuple(c + (1 - c) * amount for c in to_rgb(color)))


def _message(width_px: int, height_px: int, title: str, subtitle: str, message: str, style: _Style) -> Figure:
    """The no-data chart: the title at the top and a centred message (a sparkline's says "No data")."""
    fig = _new_figure(width_px, height_px, layout=None)
    _header(fig, title, "", style)
    text = message + (f"\n{subtitle}" if subtitle and style.detail.header else "")
    label = fig.text(0.5, 0.5, text if style.detail.ticks else NO_DATA, ha="center", va="center",
                     fontsize=style.message, color="0.25", linespacing=1.6)
    label.set_gid(_MESSAGE)
    _literal(label)
    _fit_text(label, width_px - 2 * _PAD_PX, cast(Any, fig.canvas).get_renderer())
    return fig


def _palette(n: int) -> list[Any]:
    """n distinct colours (up to 60 before repeating); dark ones first."""
    import matplotlib

    def listed(name: str) -> list[Any]:
        return list(cast(Any, matplotlib.colormaps[name]).colors)   # the tab* maps are ListedColormaps

    colors = listed("tab10") + listed("tab20")[1::2] + listed("tab20b") + listed("tab20c")
    return [colors[i % len(colors)] for i in range(n)]


def _kwh_formatter() -> Formatter:
    """Tick labels in kWh: plain numbers with thousands separators (no offset or
    scientific notation, which hide a register's real value), with just
    enough decimals for the tick step."""
    from matplotlib.ticker import Formatter

    class KwhFormatter(Formatter):
        tick_locs: list[float] = []

        def set_locs(self, locs: Iterable[float]) -> None:
            self.tick_locs = list(locs)

        def __call__(self, x: float, pos: int | None = None) -> str:
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


def _fit_legend(handles: Iterable[Artist], labels: Iterable[str], width_px: float, height_px: float, style: _Style,
                more: Callable[[int], str] | None = None) -> tuple[list[Artist], list[str], int]:
    """Entries and columns for a legend that fits the figure.

    Beside the plot (landscape): columns as the height requires, up to about 45% of the width.
    Under it (portrait): as many columns as the width holds, rows up to about 35% of the height.
    When even that is too small the last entries give way to one "+ K more" line,
    ``more(k_kept)`` when given.
    """
    from matplotlib.patches import Patch

    handles, labels = list(handles), list(labels)
    font_px = style.px(style.legend)
    col_px = font_px * (0.6 * max(map(len, labels), default=1) + 4.5)
    if style.portrait:
        columns = max(1, int((width_px - 2 * _PAD_PX) // col_px))
        rows = max(1, int(height_px * 0.35 / (font_px * 1.75)) - 1)
    else:
        free_px = height_px * 0.85 - style.px(style.title) * 1.5 - font_px * 3  # titles
        rows = max(1, int(free_px / (font_px * 1.75)))
        columns = max(1, int(width_px * 0.45 // col_px))
    capacity = rows * columns
    if len(labels) > capacity:
        keep = max(1, capacity - 1)
        text = more(keep) if more else f"+ {len(labels) - keep} more"
        handles = handles[:keep] + [Patch(facecolor="none", edgecolor="none")]
        labels = labels[:keep] + [text]
    if style.portrait:
        return handles, labels, min(columns, len(labels))
    return handles, labels, max(1, math.ceil(len(labels) / rows))


def _legend(fig: Figure, handles: Iterable[Artist], labels: Iterable[str], style: _Style, title: str | None = None,
            more: Callable[[int], str] | None = None) -> Legend:
    """The figure's legend, beside the plot (landscape) or under it (portrait), fitted."""
    width_px, height_px = fig.bbox.width, fig.bbox.height
    handles, labels, ncols = _fit_legend(handles, labels, width_px, height_px, style, more)
    # Handles and labels passed explicitly: a name starting with "_" stays listed.
    loc: Any = "lower center" if style.portrait else "center right"
    if fig.get_layout_engine() is not None:   # outside the plot, in the space the layout makes
        loc = "outside " + loc
    legend = fig.legend(handles, labels, loc=loc,
                        fontsize=style.legend, title=title, title_fontsize=style.legend,
                        frameon=False, ncols=ncols)
    _literal(legend.get_title(), *legend.get_texts())
    return legend


def _names(names: Iterable[object], style: _Style, width_px: float, suffix: int = 0, share: float = 0.5) -> list[str]:
    """Names for a legend, shortened to what its share of the width holds (suffix: characters
    each entry adds after the name; share: of the width, beside the plot)."""
    room_px = (width_px - 2 * _PAD_PX) if style.portrait else width_px * share
    chars = int(room_px / (style.px(style.legend) * 0.6)) - 5 - suffix
    limit = max(8, min(style.legend_name, chars))
    return [_short("" if name is None else str(name), limit) for name in names]


def _clean_energy(energy: Iterable[tuple[object, object]],
                  estimated: Sequence[object] = ()) -> list[tuple[str, float, float]]:
    """(name, kWh, kWh of it estimated) of the pairs with finite values; names as str. estimated: in
    the order of energy (empty: none); kept within [0, kWh]."""
    out = []
    for index, (name, kwh) in enumerate(energy):
        try:
            value = float(kwh)   # type: ignore[arg-type]  # any object: float() says whether it is a number
            guessed = float(estimated[index]) if index < len(estimated) else 0.0   # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
        if math.isfinite(value):
            guessed = min(max(0.0, guessed), value) if math.isfinite(guessed) else 0.0
            out.append(("" if name is None else str(name), value, guessed))
    return out


def _estimated_note(guessed: float, total: float) -> list[str]:
    """The note of a pie or bar chart whose energy was partly estimated ([] when none was)."""
    if guessed <= 0 or total <= 0:
        return []
    return [f"Hatched: {_fmt_kwh(guessed)} kWh ({100 * guessed / total:.1f}%) {ESTIMATED_NOTE}"]


def _pie(energy: Sequence[tuple[str, float]], width_px: int, height_px: int, title: str, subtitle: str, style: _Style,
         legend_title: str | None = None, estimated: Sequence[float] = ()) -> Figure:
    """Each meter's share of the energy used, its estimated part a hatched, lighter slice beside it;
    legend: name, kWh and %."""
    items = _clean_energy(energy, estimated)
    colors = _palette(len(items))  # by position in the caller's order
    shown = [(i, name, kwh, guessed) for i, (name, kwh, guessed) in enumerate(items) if kwh > 0]
    if not shown:
        msg = NO_ENERGY if items else NO_READINGS
        return _message(width_px, height_px, title, subtitle, msg, style)
    shown.sort(key=lambda item: -item[2])  # largest slice first, from 12 o'clock
    total = sum(kwh for _, _, kwh, _ in shown)

    fig = _new_figure(width_px, height_px)
    _header(fig, title, subtitle, style)
    _note(fig, _estimated_note(sum(guessed for *_, guessed in shown), total), style)
    ax = fig.add_subplot()
    sizes: list[float] = []
    faces: list[Any] = []
    hatched: list[Any] = []   # the hatch colour of each wedge, None: not hatched
    for i, _name, kwh, guessed in shown:
        sizes.append(kwh - guessed)
        faces.append(colors[i])
        hatched.append(None)
        if guessed > 0:
            sizes.append(guessed)
            faces.append(_lighter(colors[i]))
            hatched.append(colors[i])
    wedges, _texts = ax.pie(sizes, colors=faces, startangle=90, counterclock=False,
                            wedgeprops={"linewidth": max(0.5, 0.8 * style.scale), "edgecolor": "white"})
    for wedge, color in zip(wedges, hatched):
        if color is not None:
            wedge.set_hatch("////")
            wedge.set_hatchcolor(color)
    firsts = [wedge for wedge, color in zip(wedges, hatched) if color is None]
    radius_px = 0.45 * (min(width_px * (1.0 if style.portrait else 0.5), height_px * (0.6 if style.portrait else 0.8))
                        if style.detail.legend else min(width_px, height_px))
    _percentages(ax, [(kwh, colors[i]) for i, _, kwh, _ in shown], total, style, radius_px)
    ax.set_aspect("equal")

    suffixes = [f": {_fmt_kwh(kwh)} kWh ({100 * kwh / total:.1f}%)" for _, _, kwh, _ in shown]
    names = _names([name for _, name, _, _ in shown], style, width_px, max(map(len, suffixes)))
    labels = [name + suffix for name, suffix in zip(names, suffixes)]

    def more(kept: int) -> str:
        rest = sum(kwh for _, _, kwh, _ in shown[kept:])
        return (f"+ {len(shown) - kept} more: {_fmt_kwh(rest)} kWh "
                f"({100 * rest / total:.1f}%)")

    heading = f"{legend_title or 'Energy used'} (total {_fmt_kwh(total)} kWh)"
    dropped = len(items) - len(shown)
    if dropped:
        heading += f"\n{dropped} with no energy used not shown"
    _legend(fig, firsts, labels, style, heading, more)
    return fig


def _percentages(ax: Axes, slices: Sequence[tuple[float, Any]], total: float, style: _Style,
                 radius_px: float) -> None:
    """Each slice's percentage on it (from 12 o'clock, clockwise), when it is 4% or more and its arc
    holds the text (radius_px: about the pie's radius in pixels)."""
    from matplotlib.colors import to_rgb

    if radius_px < 60:   # a thumbnail: the slices alone
        return
    done = 0.0
    room = 2 * math.pi * 0.72 * radius_px / (style.px(style.legend) * 3)   # "12%"s on the whole circle
    for kwh, color in slices:
        share = kwh / total
        if share >= max(0.04, 1 / room):
            angle = math.radians(90 - 360 * (done + share / 2))
            r, g, b = to_rgb(color)
            _literal(ax.text(0.72 * math.cos(angle), 0.72 * math.sin(angle), f"{100 * share:.0f}%",
                             ha="center", va="center", fontsize=style.legend,
                             color="black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.55 else "white"))
        done += share


def _bar(energy: Sequence[tuple[str, float]], width_px: int, height_px: int, title: str, subtitle: str, style: _Style,
         legend_title: str | None = None, estimated: Sequence[float] = ()) -> Figure:
    """Energy used per meter, in the caller's order; the estimated part of each bar hatched and lighter."""
    items = _clean_energy(energy, estimated)
    if not items or all(kwh == 0 for _, kwh, _ in items):
        msg = NO_ENERGY if items else NO_READINGS
        return _message(width_px, height_px, title, subtitle, msg, style)
    names = [name for name, _, _ in items]
    values = [kwh for _, kwh, _ in items]
    guessed = [part for _, _, part in items]
    total = sum(values)

    fig = _new_figure(width_px, height_px)
    _header(fig, title, subtitle, style)
    _note(fig, _estimated_note(sum(guessed), total), style)
    ax = fig.add_subplot()
    x = list(range(len(items)))
    color = _palette(1)[0]
    bars = ax.bar(x, [kwh - part for kwh, part in zip(values, guessed)], color=color, width=0.7, zorder=2)
    top = bars
    if any(guessed):
        top = ax.bar(x, guessed, bottom=[kwh - part for kwh, part in zip(values, guessed)], width=0.7, zorder=2,
                     color=_lighter(color), hatch="////", hatchcolor=color, linewidth=0)
        for patch in top:   # stacked: their bottoms are no limit of the axis (the margin above stays)
            patch.sticky_edges.y.clear()
    ax.axhline(0, color="0.3", linewidth=max(0.5, 0.8 * style.scale), zorder=3)
    ax.grid(axis="y", color="0.88", zorder=0)
    ax.set_axisbelow(True)
    ax.yaxis.set_major_formatter(_kwh_formatter())
    ax.tick_params(labelsize=style.tick)
    ax.set_xlim(-0.6, len(items) - 0.4)
    slot_px = _meter_ticks(ax, names, width_px, height_px, style)

    # Values on the bars, while there is room for them.
    if slot_px >= style.px(style.tick) * 4:
        _literal(*ax.bar_label(top, labels=[_fmt_kwh(v) for v in values],
                               fontsize=style.tick, padding=2))

    _literal(ax.set_xlabel("Meter", fontsize=style.label),
             ax.set_ylabel("Energy used (kWh)", fontsize=style.label))
    ax.margins(y=0.25 if style.detail.legend else 0.1)   # room for the legend above the tallest bars
    legend = ax.legend([bars], [f"{legend_title or 'Energy used in the period'} "
                                f"(total {_fmt_kwh(total)} kWh)"],
                       loc="best", fontsize=style.legend, framealpha=0.9)
    _literal(*legend.get_texts())
    return fig


def _meter_ticks(ax: Axes, names: Sequence[str], width_px: int, height_px: int, style: _Style) -> float:
    """Meter names on the x axis: turned when they would overlap, and only every k-th one when even
    turned names cannot fit (many meters, small image). Returns the pixels each bar's slot has."""
    x = list(range(len(names)))
    font_px = style.px(style.tick)
    slot_px = width_px * 0.85 / len(names)
    tick_labels = [_short(name, min(_MAX_TICK_LABEL, style.legend_name)) for name in names]
    turn = max(len(label) for label in tick_labels) * font_px * 0.62 > slot_px * 0.9
    if turn:  # turned names take height: as long as about a fifth of it allows
        limit = min(_MAX_TICK_LABEL, style.legend_name, max(6, int(height_px * 0.22 / (font_px * 0.62))))
        tick_labels = [_short(name, limit) for name in names]
    every = max(1, math.ceil(font_px * 1.4 / slot_px)) if turn else 1
    ax.set_xticks(x[::every], tick_labels[::every], rotation=45 if turn else 0,
                  ha="right" if turn else "center", rotation_mode="anchor")
    for tick in ax.xaxis.get_major_ticks():
        _literal(tick.label1, tick.label2)
    return slot_px


def _time_axis(ax: Axes, tz: tzinfo, tz_label: str, period: tuple[datetime, datetime] | None, style: _Style,
               label: bool = True) -> None:
    import matplotlib.dates as mdates

    if period:
        start, end = (mdates.date2num(_local(d, tz)) for d in period)
        if end > start:
            ax.set_xlim(start, end)
    locator = mdates.AutoDateLocator(tz=tz, maxticks=max(5, int(ax.figure.bbox.width / 100)))
    # 3-4 days on a narrow chart: too few days for daily ticks (minticks), too many hours for 12-hourly ones;
    # matplotlib then warns and crowds the axis. Every 24 hours (local midnights) is the step it lacks.
    locator.intervald[mdates.HOURLY] = [*locator.intervald[mdates.HOURLY], 24]
    ax.xaxis.set_major_locator(locator)
    # No offset text ("2024-Jan"): the period under the title gives the dates in full.
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=tz, show_offset=False))
    ax.tick_params(labelsize=style.tick)
    ax.xaxis.get_offset_text().set_fontsize(style.tick)
    ax.grid(color="0.9")
    if label:
        _literal(ax.set_xlabel(f"Time ({tz_label})", fontsize=style.label))


def _epoch_days(times: Sequence[float]) -> np.ndarray:
    import matplotlib.dates as mdates
    import numpy as np

    epoch = mdates.date2num(datetime(1970, 1, 1, tzinfo=timezone.utc))
    return np.asarray(times, dtype=float) / 86400.0 + epoch


_PER = {"hour": "per hour", "day": "per day"}


def _line(kind: str, series: Sequence[LineSeries | UseSeries], use: UseSeries | None, width_px: int, height_px: int,
          title: str, subtitle: str, tz: tzinfo, tz_label: str, period: tuple[datetime, datetime] | None,
          style: _Style, bucket: str) -> Figure:
    """Meters over time: registers (LineSeries), energy used per hour or day (UseSeries), or
    for kind 'meter' one meter's register above its energy used."""
    import numpy as np

    present = [(i, s) for i, s in enumerate(series) if len(s.values)]
    has_use = use is not None and np.isfinite(np.asarray(use.values, dtype=float)).any()
    if not present and not has_use:
        return _message(width_px, height_px, title, subtitle, NO_READINGS, style)

    fig = _new_figure(width_px, height_px)
    _header(fig, title, subtitle, style)
    per = _PER.get(bucket, f"per {bucket}")
    if kind == "meter":
        _meter(fig, present, use if has_use else None, len(series), tz, tz_label, period, style, per)
        return fig

    ax = fig.add_subplot()
    colors = _palette(len(series))
    handles: list[Artist] = []
    names: list[str] = []
    if series and isinstance(series[0], UseSeries):
        from matplotlib.lines import Line2D

        kinds: set[int] = set()
        for i, s in present:
            kinds |= _use_steps(ax, cast(UseSeries, s), colors[i], style)   # the series are all of one kind
            handles.append(Line2D([], [], color=colors[i], linewidth=style.line))
            names.append(s.name)
        _note(fig, [note for quality, note in _STEP_NOTES if quality in kinds], style)
        ylabel = f"Energy used {per} (kWh)" if not style.short else f"kWh {per}"
        ax.set_ylim(bottom=0)
    else:
        handles = _register_lines(ax, present, style, width_px, len(series))
        names = [s.name for _, s in present]
        ylabel = "Meter reading, cumulative (kWh)"
    ax.yaxis.set_major_formatter(_kwh_formatter())
    _time_axis(ax, tz, tz_label, period, style)
    _literal(ax.set_ylabel(ylabel, fontsize=style.label))
    _legend(fig, handles, _names(names, style, width_px, share=0.35), style, "Meter")
    return fig


# How energy per period is drawn by how it is known: steps (line chart), bars (one meter's chart).
_STEP_STYLES: tuple[tuple[int, dict[str, Any]], ...] = (
    (MEASURED, {}),
    (ESTIMATED, {"linestyle": "--", "alpha": 0.75}),
    (PARTIAL, {"linestyle": ":", "alpha": 0.6}),
)
_STEP_NOTES = ((ESTIMATED, f"Dashed: {ESTIMATED_NOTE}"), (PARTIAL, f"Dotted: {PARTIAL_NOTE}"))
_BAR_NOTES = ((ESTIMATED, f"Hatched: {ESTIMATED_NOTE}"), (PARTIAL, f"Light: {PARTIAL_NOTE}"))


def _quality(use: UseSeries) -> np.ndarray:
    """MEASURED, ESTIMATED or PARTIAL per value of a UseSeries (all MEASURED when it says nothing)."""
    import numpy as np

    if not len(use.quality):
        return np.full(len(use.values), MEASURED)
    if len(use.quality) != len(use.values):
        raise ValueError(f"{use.name!r}: {len(use.quality)} qualities for {len(use.values)} values")
    return np.asarray(use.quality, dtype=int)


def _use_steps(ax: Axes, use: UseSeries, color: Any, style: _Style) -> set[int]:
    """A meter's energy per period as steps, each kind of period in its own line style (_STEP_STYLES).
    Between measured and estimated periods (whole periods both) the riser is drawn in the later one's
    style, so the line runs on unbroken (into an estimated hour dashed, back to measured solid); a partial
    period (today so far) is a step of its own, never a drop of the line. Returns the kinds drawn."""
    import numpy as np

    x = np.repeat(_epoch_days(use.edges), 2)[1:-1]    # (e0, e1, e1, e2, e2, …): period i from 2i to 2i + 1
    values = np.asarray(use.values, dtype=float)
    quality = _quality(use)
    drawn = set()
    for kind, line_style in _STEP_STYLES:
        mine = quality == kind
        if not np.isfinite(values[mine]).any():
            continue
        y = np.repeat(np.where(mine, values, np.nan), 2)
        # Point 2i - 1 is (start of period i, value of period i - 1): the riser's foot, kept for a whole
        # period of this kind after a whole one of another.
        if kind != PARTIAL:
            entered = np.flatnonzero(mine[1:] & ~mine[:-1] & (quality[:-1] != PARTIAL)) + 1
            y[2 * entered - 1] = values[entered - 1]
        ax.plot(x, y, color=color, linewidth=style.line, **line_style)
        drawn.add(kind)
    return drawn


def _meter(fig: Figure, present: Sequence[tuple[int, LineSeries | UseSeries]], use: UseSeries | None, count: int,
           tz: tzinfo, tz_label: str, period: tuple[datetime, datetime] | None, style: _Style, per: str) -> None:
    """One meter's register above its energy used per period as bars: estimated ones hatched and
    lighter, partial ones lighter."""
    import numpy as np

    register_ax, use_ax = fig.subplots(2, 1, sharex=True, height_ratios=(1, 1))
    _register_lines(register_ax, present, style, int(fig.bbox.width), count)
    _literal(register_ax.set_ylabel("Register (kWh)" if not style.short else "kWh", fontsize=style.label))
    _time_axis(register_ax, tz, tz_label, period, style, label=False)
    if use is not None:   # steps filled as bars (one artist per kind of period: cheap to draw and lay out)
        edges = _epoch_days(use.edges)
        values = np.asarray(use.values, dtype=float)
        quality = _quality(use)
        color = _palette(2)[1]
        looks = {MEASURED: {"color": color}, ESTIMATED: {"color": _lighter(color), "hatch": "////", "hatchcolor": color},
                 PARTIAL: {"color": _lighter(color, 0.6)}}
        for kind, look in looks.items():
            chosen = (quality == kind) & np.isfinite(values)
            if chosen.any():
                use_ax.stairs(np.where(chosen, values, np.nan), edges, fill=True, linewidth=0, zorder=2, **look)
        if fig.bbox.width / len(values) >= 5:   # wide enough: a thin white line between bars
            tops = np.fmax(np.nan_to_num(values[:-1]), np.nan_to_num(values[1:]))
            use_ax.vlines(edges[1:-1], 0, tops, colors="white", linewidth=0.3, zorder=3)
        use_ax.set_ylim(bottom=0)
        _note(fig, [note for kind, note in _BAR_NOTES if (quality == kind).any()], style)
    use_ax.yaxis.set_major_formatter(_kwh_formatter())
    _literal(use_ax.set_ylabel(f"Used {per} (kWh)" if not style.short else "kWh used", fontsize=style.label))
    _time_axis(use_ax, tz, tz_label, period, style)


def _register_lines(ax: Axes, present: Sequence[tuple[int, LineSeries | UseSeries]], style: _Style,
                    width_px: int, count: int) -> list[Artist]:
    """Plot cumulative registers (reduced to 2 points per pixel column); returns the lines."""
    import numpy as np

    # One reduced point pair per pixel column of the plot (an upper bound: the
    # layout only makes the axes narrower).
    columns = max(1, int(width_px * ax.get_position().width))
    colors = _palette(count)
    handles: list[Artist] = []
    for i, s in present:
        s = cast(LineSeries, s)   # registers: the series are all of one kind
        times, values = reduce_minmax(s.times, s.values, columns)
        few = len(times) <= 60
        (handle,) = ax.plot(_epoch_days(times), np.asarray(values, dtype=float), color=colors[i],
                            linewidth=style.line, marker="o" if few else None,
                            markersize=3 * style.scale)
        handles.append(handle)
    ax.yaxis.set_major_formatter(_kwh_formatter())
    return handles
