"""GET /file: past readings of a range of local days as csv/json/xml/yaml, streamed from DynamoDB to S3.

Rows are read lazily (day items page by page, meters merged by time) and written by the streaming
writers of chalicelib/outputs/export_writers.py into a multipart upload, so memory does not grow with the rows.
Before reading anything the request estimates its rows (meters x days x readings a day by SaveEvery):
up to SYNC_MAX_ROWS it writes the file itself (303 to it), beyond it becomes an export job
(chalicelib/outputs/export_jobs.py: 202) written in time slices of about SLICE_ROWS rows by the workers.
A slice's rows come from ROW_SOURCES[request["source"]]: another kind of export (a period's
consumption) adds its source there and is sliced the same way.
"""
import heapq
from collections.abc import Iterator
from typing import Any
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


def rows(project_id: int, chosen: list[Item], zone: ZoneInfo, start: int, end: int) -> Iterator[Row]:
    """(MeterParam, local time, value) of the chosen meters' readings, in time order (then meter id)."""
    def one(meter: Item) -> Iterator[tuple[int, int, str, float]]:
        for epoch, value in readings.series(project_id, meter["meter_id"], start, end):
            yield epoch, meter["meter_id"], meter["name"], value

    for epoch, _id, name, value in heapq.merge(*(one(m) for m in chosen)):
        yield name, clock.local(epoch, zone), value


def _rows_per_second(chosen: list[Item]) -> float:
    """Readings the chosen meters take per second together, from their SaveEvery."""
    return sum(1 / meters.step(m) for m in chosen)


def estimate_rows(chosen: list[Item], begin: int, finish: int) -> int:
    """Rows an export of the chosen meters over [begin, finish) will have, from their SaveEvery."""
    return int(_rows_per_second(chosen) * (finish - begin))


def plan_slices(chosen: list[Item], begin: int, finish: int, slice_rows: int | None = None) -> list[list[int]]:
    """[(start, end)] epochs covering [begin, finish) in order, each of about slice_rows rows
    (default SLICE_ROWS), on whole hours."""
    per_second = _rows_per_second(chosen) or 1e-9
    step = max(SLICE_STEP, int((slice_rows or SLICE_ROWS) / per_second) // SLICE_STEP * SLICE_STEP)
    edges = list(range(begin, finish, step)) + [finish]
    return [[a, b] for a, b in zip(edges, edges[1:])]


def reading_rows(project_id: int, request: dict[str, Any], zone: ZoneInfo, start: int, end: int) -> Iterator[Row]:
    """The rows source of a readings export: the request's meters, as named when it was made."""
    chosen = [{"meter_id": i, "name": n} for i, n in request["meters"]]
    return rows(project_id, chosen, zone, start, end)


ROW_SOURCES = {"readings": reading_rows}


def slice_rows(project_id: int, request: dict[str, Any], zone: ZoneInfo, start: int, end: int) -> Iterator[Row]:
    """The rows of one slice of a job's request (what the workers write)."""
    return ROW_SOURCES[request.get("source", "readings")](project_id, request, zone, start, end)


def export(project_id: int, start: object, end: object, file_type: object = "csv", meter_name: object = None,
           period: object = None) -> dict[str, Any]:
    """Write the export to S3 and return its download link ({"url", "expires"}), or start a job
    when it is too big for one request (its {"id", "status", "progress"}).

    With a period, the file holds energy used per period (consumption.rows) instead of the readings
    (at most 366 rows per meter: always within the request).
    """
    fmt = "csv" if file_type is None else file_type
    fmt = fmt.strip().lower() if isinstance(fmt, str) else fmt
    if not isinstance(fmt, str) or fmt not in export_writers.EXPORT_FORMATS:
        raise BadRequest("type must be one of csv, json, xml, yaml")
    per = consumption.parse_period(period) if period is not None else None
    zone = accounts.project_zone(project_id)
    first, last, begin, finish = days.day_range(days.parse_day("start", start), days.parse_day("end", end), zone,
                                                max_days=consumption.days_allowed(per) if per else days.MAX_DAYS)
    chosen = [meters.find(project_id, name=meter_name, field="meter")] if meter_name is not None else meters.all_meters(project_id)
    media_type, extension = export_writers.EXPORT_FORMATS[fmt]
    label = f"-{chosen[0]['name']}" if meter_name is not None else ""
    filename = f"readings{label}-{first.isoformat()}-to-{last.isoformat()}.{extension}"
    if per is not None:
        filename = f"consumption-{per}{label}-{first.isoformat()}-to-{last.isoformat()}.{extension}"
        chunks = export_writers.record_chunks(fmt, consumption.FIELDS,
                                              consumption.rows(project_id, chosen, zone, first, last, per))
        key = downloads.upload_stream(project_id, "exports", filename, media_type, chunks)
        return downloads.link(key, zone)
    if estimate_rows(chosen, begin, finish) > SYNC_MAX_ROWS:
        request = {"source": "readings", "type": fmt, "filename": filename, "media_type": media_type,
                   "zone": zone.key, "meters": [[m["meter_id"], m["name"]] for m in chosen]}
        return export_jobs.start(project_id, request, plan_slices(chosen, begin, finish))
    chunks = export_writers.export_chunks(fmt, rows(project_id, chosen, zone, begin, finish))
    key = downloads.upload_stream(project_id, "exports", filename, media_type, chunks)
    return downloads.link(key, zone)
