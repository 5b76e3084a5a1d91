"""GET /graphics: pie, bar and line charts of a project's readings, rendered to PNG and stored in S3.

The data comes from chalicelib/readings.py; drawing is chalicelib/chart_render.py's (matplotlib,
imported only when a chart is drawn).
"""
from datetime import timedelta

from chalicelib import accounts, clock, downloads, exports, meters, readings, validation
from chalicelib.errors import BadRequest

KINDS = ("pie", "bar", "line")
MIN_SIZE, MAX_SIZE = 1, 40          # hundreds of pixels
DEFAULT_DAYS = 7


def _size(field, value, default):
    if value is None:  # an empty width= is not a number (400), as every other empty argument is
        return default
    return validation.number(field, value, MIN_SIZE, MAX_SIZE)


def _period(start, end, zone):
    if start is None and end is None:
        today = clock.utcnow().astimezone(zone).date()
        return exports.day_range(today - timedelta(days=DEFAULT_DAYS - 1), today, zone)
    first = exports.parse_day("start", start if start is not None else end)
    last = exports.parse_day("end", end if end is not None else start)
    return exports.day_range(first, last, zone)


def chart(project_id, kind=None, meter_name=None, width=None, height=None, start=None, end=None):
    """Render the chart asked for, store it, and return its download link ({"url", "expires"})."""
    from chalicelib import chart_render

    kind = "pie" if kind is None else kind
    kind = kind.strip().lower() if isinstance(kind, str) else kind
    if kind not in KINDS:
        raise BadRequest("type must be pie, bar or line")
    width_px = int(round(_size("width", width, 16) * 100))
    height_px = int(round(_size("height", height, 9) * 100))
    project = accounts.get_project(project_id)
    zone = clock.zone(project.get("timezone", "UTC"))
    first, last, begin, finish = _period(start, end, zone)
    if meter_name is not None:
        chosen, kind = [meters.find(project_id, name=meter_name)], "line"
    else:
        chosen = meters.all_meters(project_id)
    common = dict(width_px=width_px, height_px=height_px, tz_name=zone.key,
                  period=(clock.local(begin, zone), clock.local(finish, zone)))
    if kind == "line":
        title = (f"{chosen[0]['name']}: readings" if meter_name is not None else f"{project['name']}: readings")
        series = []
        for meter in chosen:
            points = list(readings.series(project_id, meter["meter_id"], begin, finish))
            series.append(chart_render.LineSeries(meter["name"], [p[0] for p in points], [p[1] for p in points]))
        png = chart_render.render_png("line", title=title, series=series, **common)
    else:
        energy = [(m["name"], readings.energy_used(readings.series(project_id, m["meter_id"], begin, finish)))
                  for m in chosen]
        what = "share of energy used" if kind == "pie" else "energy used per meter"
        png = chart_render.render_png(kind, title=f"{project['name']}: {what}", energy=energy,
                                      **common)
    key = downloads.upload_stream(project_id, "charts", f"{kind}-{first.isoformat()}-to-{last.isoformat()}.png",
                                  "image/png", [png])
    return downloads.link(key, zone)
