"""GET /file: past readings of a range of local days as csv/json/xml/yaml, streamed from DynamoDB to S3.

Rows are read lazily (day items page by page, meters merged by time) and written by the streaming
writers of chalicelib/outputs/export_writers.py into a multipart upload, so memory does not grow with the rows.
Before reading a reading, the request decides from the rows it will write whether it writes the file
itself (303 to it) or starts an export job (chalicelib/outputs/export_jobs.py: 202, written by the workers):
- readings: counted from the stored items (readings.stored_per_day: each day item's count), meter by
  meter, stopping once past SYNC_MAX_ROWS, never from SaveEvery alone (a meter may send more often than
  it says); beyond SYNC_MAX_ROWS, a job in time slices of about SLICE_ROWS rows, planned from the rows
  counted per day;
- consumption (period=…): periods x meters, each row costing consumption.seconds_per_row; beyond
  SYNC_SECONDS of them, a job in slices of whole periods (whole days for hours) of about SLICE_SECONDS.
A slice's rows come from ROW_SOURCES[request["source"]]: another kind of export (bills) adds its source
there; an export of records (dicts, not readings) puts its fields in the request.
"""
import heapq
from collections import Counter
from collections.abc import Iterator
from datetime import date
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from chalicelib.identity import accounts
from chalicelib.metering import consumption, days, meters, readings
from chalicelib.outputs import downloads, export_jobs, export_writers
from chalicelib.outputs.export_writers import Row
from chalicelib.platform import clock
from chalicelib.platform.db import Item
from chalicelib.platform.errors import BadRequest

SYNC_MAX_ROWS = 1_000_000   # ~6-8 s of writing (about 130-170k rows/s) plus reading: well under 28 s
SLICE_ROWS = 1_000_000      # rows a worker writes per part: under 20 s, over S3's 5 MiB part minimum
SLICE_STEP = 3600           # slices start on whole hours
SYNC_SECONDS = 10.0         # consumption rows one request computes (consumption.SECONDS_PER_ROW): a third of 28 s
SLICE_SECONDS = 20.0        # consumption rows one worker computes, of its 60 s
DAY = 86400


def rows(project_id: int, chosen: list[Item], zone: ZoneInfo, start: int, end: int) -> Iterator[Row]:
    """(MeterParam, local time, value) of the chosen meters' readings, in time order (then meter id)."""
    def one(meter: Item) -> Iterator[tuple[int, int, str, float]]:
        for epoch, value in readings.series(project_id, meter["meter_id"], start, end):
            yield epoch, meter["meter_id"], meter["name"], value

    for epoch, _id, name, value in heapq.merge(*(one(m) for m in chosen)):
        yield name, clock.local(epoch, zone), value


class Estimate(NamedTuple):
    """The rows a readings export will write, from the stored items' counts."""

    rows: int                   # past SYNC_MAX_ROWS when counting stopped there: scaled from the meters counted
    per_day: dict[int, float]   # rows per UTC day (its midnight epoch), to plan slices: {} when not counted


def estimate(project_id: int, chosen: list[Item], begin: int, finish: int) -> Estimate:
    """The rows an export of the chosen meters over [begin, finish) will write, counted from the stored items
    (whole UTC days: a little more at the range's ends), never from SaveEvery.

    Nothing is read when even MAX_PER_DAY readings a day could not pass SYNC_MAX_ROWS. Counting goes meter
    by meter and stops once past SYNC_MAX_ROWS: the rest is scaled from the meters counted.
    """
    utc_days = (finish - 1) // DAY - begin // DAY + 1
    if len(chosen) * utc_days * readings.MAX_PER_DAY <= SYNC_MAX_ROWS:
        return Estimate(len(chosen) * utc_days * readings.MAX_PER_DAY, {})
    per_day: Counter[int] = Counter()
    total = 0
    for counted, meter in enumerate(chosen, 1):
        for midnight, stored in readings.stored_per_day(project_id, meter["meter_id"], begin, finish):
            per_day[midnight] += stored
            total += stored
        if total > SYNC_MAX_ROWS:
            scale = len(chosen) / counted
            return Estimate(int(total * scale), {d: n * scale for d, n in per_day.items()})
    return Estimate(total, dict(per_day))


def plan_slices(per_day: dict[int, float], begin: int, finish: int, slice_rows: int | None = None) -> list[list[int]]:
    """[(start, end)] epochs covering [begin, finish) in order, each of about slice_rows rows (default
    SLICE_ROWS) by the rows per UTC day (spread evenly over its hours), cut every SLICE_STEP from begin."""
    target = slice_rows or SLICE_ROWS
    edges, held = [begin], 0.0
    for hour in range(begin, finish, SLICE_STEP):
        held += per_day.get(hour - hour % DAY, 0.0) * SLICE_STEP / DAY
        if held >= target and hour + SLICE_STEP < finish:
            edges.append(hour + SLICE_STEP)
            held = 0.0
    edges.append(finish)
    return [[a, b] for a, b in zip(edges, edges[1:])]


def reading_rows(project_id: int, request: dict[str, Any], zone: ZoneInfo, start: int, end: int) -> Iterator[Row]:
    """The rows source of a readings export: the request's meters, as named when it was made."""
    chosen = [{"meter_id": i, "name": n} for i, n in request["meters"]]
    return rows(project_id, chosen, zone, start, end)


def consumption_rows(project_id: int, request: dict[str, Any], zone: ZoneInfo, start: int,
                     end: int) -> Iterator[dict[str, Any]]:
    """The rows source of a consumption export (period=): every meter of the request (as named when it was
    made), the periods of local days start..end (ordinals: a slice is whole periods)."""
    chosen = [{"meter_id": i, "name": n, "SaveEvery": every} for i, n, every in request["meters"]]
    return consumption.rows(project_id, chosen, zone, date.fromordinal(start), date.fromordinal(end),
                            request["period"])


ROW_SOURCES = {"readings": reading_rows, "consumption": consumption_rows}


def slice_rows(project_id: int, request: dict[str, Any], zone: ZoneInfo, start: int, end: int) -> Iterator[Any]:
    """The rows of one slice of a job's request (what the workers write)."""
    return ROW_SOURCES[request.get("source", "readings")](project_id, request, zone, start, end)


def period_slices(first: date, last: date, period: str, meter_count: int, slice_rows: int) -> list[list[int]]:
    """[(first, last)] day ordinals covering first..last, each whole periods (whole days for hours) of about
    slice_rows rows of meter_count meters."""
    slices: list[list[int]] = []
    held = 0
    for group in consumption.period_days(first, last, period):
        if slices and held < slice_rows:
            slices[-1][1] = group[-1].toordinal()
        else:
            slices.append([group[0].toordinal(), group[-1].toordinal()])
            held = 0
        held += (24 * len(group) if period == "hour" else 1) * meter_count
    return slices


def export(project_id: int, start: object, end: object, file_type: object = "csv", meter_name: object = None,
           period: object = None) -> dict[str, Any] | export_jobs.JobState:
    """Write the export to S3 and return its download link ({"url", "expires"}), or start a job when it is
    too big for one request (its JobState: 202, {"id", "status", "progress"}, Retry-After).

    With a period, the file holds energy used per period (consumption.rows) instead of the readings.
    """
    fmt = "csv" if file_type is None else file_type
    fmt = fmt.strip().lower() if isinstance(fmt, str) else fmt
    if not isinstance(fmt, str) or fmt not in export_writers.EXPORT_FORMATS:
        raise BadRequest("type must be one of csv, json, xml, yaml")
    per = consumption.parse_period(period) if period is not None else None
    zone = accounts.project_zone(project_id)
    first, last, begin, finish = days.day_range(days.parse_day("start", start), days.parse_day("end", end), zone,
                                                max_days=consumption.days_allowed(per) if per else days.MAX_DAYS)
    chosen = ([meters.find(project_id, name=meter_name, field="meter")] if meter_name is not None
              else meters.all_meters(project_id))
    media_type, extension = export_writers.EXPORT_FORMATS[fmt]
    label = f"-{chosen[0]['name']}" if meter_name is not None else ""
    request: dict[str, Any] = {"type": fmt, "media_type": media_type, "zone": zone.key}
    if per is not None:
        request["filename"] = f"consumption-{per}{label}-{first.isoformat()}-to-{last.isoformat()}.{extension}"
        return _consumption_export(project_id, chosen, zone, first, last, per, request)
    request["filename"] = f"readings{label}-{first.isoformat()}-to-{last.isoformat()}.{extension}"
    counted = estimate(project_id, chosen, begin, finish)
    if counted.rows > SYNC_MAX_ROWS:
        request.update(source="readings", meters=[[m["meter_id"], m["name"]] for m in chosen])
        return export_jobs.start(project_id, request, plan_slices(counted.per_day, begin, finish))
    chunks = export_writers.export_chunks(fmt, rows(project_id, chosen, zone, begin, finish))
    key = downloads.upload_stream(project_id, "exports", request["filename"], media_type, chunks)
    return downloads.link(key, zone)


def _consumption_export(project_id: int, chosen: list[Item], zone: ZoneInfo, first: date, last: date, per: str,
                        request: dict[str, Any]) -> dict[str, Any] | export_jobs.JobState:
    """A consumption file (period=): written at once up to SYNC_SECONDS of rows (periods x meters), else a job
    of whole periods, its rows as records (consumption.FIELDS)."""
    chosen = sorted(chosen, key=lambda m: m["meter_id"])
    cost = consumption.seconds_per_row(per)
    if len(consumption.periods(first, last, zone, per)) * len(chosen) * cost > SYNC_SECONDS:
        request.update(source="consumption", period=per, fields=list(consumption.FIELDS), bom=False,
                       meters=[[m["meter_id"], m["name"], meters.step(m) // 60] for m in chosen])
        slices = period_slices(first, last, per, len(chosen), max(1, int(SLICE_SECONDS / cost)))
        return export_jobs.start(project_id, request, slices)
    chunks = export_writers.record_chunks(request["type"], consumption.FIELDS,
                                          consumption.rows(project_id, chosen, zone, first, last, per))
    key = downloads.upload_stream(project_id, "exports", request["filename"], request["media_type"], chunks)
    return downloads.link(key, zone)
