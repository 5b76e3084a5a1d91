"""GET /file: past readings of a range of local days as csv/json/xml/yaml, streamed from DynamoDB to S3.

Rows are read lazily (day items page by page, meters merged by time) and written by the streaming
writers of chalicelib/outputs/export_writers.py into a multipart upload, so memory does not grow with the rows.
Before reading anything the request estimates its rows (meters x days x readings a day by SaveEvery):
up to SYNC_MAX_ROWS it writes the file itself (303 to it), beyond it becomes an export job
(chalicelib/outputs/export_jobs.py: 202) written in time slices of about SLICE_ROWS rows by the workers.
A slice's rows come from ROW_SOURCES[request["source"]]: another kind of export (a period's
consumption) adds its source there and is sliced the same way. Bills (bill=1: GET /bill's rows, flat)
are a source whose slices are ranges of meters (every month of each), their columns and frame in
the request.
"""
import heapq
from collections.abc import Iterator
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo

from chalicelib.identity import accounts
from chalicelib.metering import consumption, days, meters, readings
from chalicelib.outputs import downloads, export_jobs, export_writers
from chalicelib.outputs.export_writers import Row
from chalicelib.platform import clock, validation
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


# ---- bills: GET /bill's rows, flat (chalicelib/billing/bills.py) ---------------------------------------

BILL_SLICE_METERS = 100     # meters per part of a bill job (all months of each); jobs past bills.MAX_METER_MONTHS


def _bill_tariffs(meters_of_request: list[list[Any]], stored: dict[str, dict[str, Any]]) -> dict[int, Any]:
    """tariff_of (tariffs.for_meters' shape) of a job's meters, from the tariffs the request kept."""
    return {meter_id: None if tariff_id is None else (tariff_id, stored[str(tariff_id)])
            for meter_id, _name, tariff_id, _save_every in meters_of_request}


def _bill_records(project_id: int, chosen: list[Item], zone: ZoneInfo, first: date, last: date,
                  tariff_of: dict[int, Any], fields: list[str], file_type: str) -> Iterator[dict[str, Any]]:
    from chalicelib.billing import bills

    for bill_row, total in bills.meter_months(project_id, chosen, zone, first, last, tariff_of):
        yield bills.flat(bill_row, fields, total, csv=file_type == "csv")


def bill_rows(project_id: int, request: dict[str, Any], zone: ZoneInfo, start: int,
              end: int) -> Iterator[dict[str, Any]]:
    """The rows source of a bill export: meters start..end (indices) of the request, every month, priced with
    the tariffs the request kept (so every part prices alike)."""
    part = request["meters"][start:end]
    chosen = [{"meter_id": i, "name": n, "SaveEvery": s} for i, n, _t, s in part]
    return _bill_records(project_id, chosen, zone, date.fromisoformat(request["first"]),
                         date.fromisoformat(request["last"]), _bill_tariffs(part, request["tariffs"]),
                         request["fields"], request["type"])


def bill_export(project_id: int, start: object, end: object, file_type: str, meter_name: object = None,
                tariff_id: object = None) -> dict[str, Any]:
    """GET /file?bill=1: GET /bill's rows, one flat line per meter and month (bills.flat_fields' columns), CSV
    with a byte order mark and Total to the cent; past bills.MAX_METER_MONTHS rows (what one request prices),
    a job of BILL_SLICE_METERS meters a part."""
    from chalicelib.billing import bills, tariffs

    zone = accounts.project_zone(project_id)
    first, last, _begin, _finish = days.day_range(days.parse_day("start", start), days.parse_day("end", end), zone)
    chosen = [meters.find(project_id, name=meter_name)] if meter_name is not None else meters.all_meters(project_id)
    chosen = sorted(chosen, key=lambda m: m["meter_id"])
    tariff_of = tariffs.for_meters(project_id, chosen, tariff_id)
    stored = {str(pair[0]): pair[1] for pair in tariff_of.values() if pair is not None}
    fields = bills.flat_fields(stored[key] for key in sorted(stored, key=int))
    media_type, extension = export_writers.EXPORT_FORMATS[file_type]
    label = f"-{chosen[0]['name']}" if meter_name is not None else ""
    filename = f"bills{label}-{first.isoformat()}-to-{last.isoformat()}.{extension}"
    bom = file_type == "csv"
    if len(chosen) * len(bills.months(first, last)) > bills.MAX_METER_MONTHS:
        request = {"source": "bill", "type": file_type, "filename": filename, "media_type": media_type,
                   "zone": zone.key, "first": first.isoformat(), "last": last.isoformat(), "fields": fields,
                   "bom": bom, "tariffs": stored,
                   "meters": [[m["meter_id"], m["name"], None if tariff_of[m["meter_id"]] is None
                               else tariff_of[m["meter_id"]][0], meters.step(m) // 60] for m in chosen]}
        slices = [[at, min(at + BILL_SLICE_METERS, len(chosen))] for at in range(0, len(chosen), BILL_SLICE_METERS)]
        return export_jobs.start(project_id, request, slices)
    records = _bill_records(project_id, chosen, zone, first, last, tariff_of, fields, file_type)
    chunks = export_writers.record_chunks(file_type, fields, records, bom=bom)
    key = downloads.upload_stream(project_id, "exports", filename, media_type, chunks)
    return downloads.link(key, zone)


ROW_SOURCES: dict[str, Any] = {"readings": reading_rows, "bill": bill_rows}


def slice_rows(project_id: int, request: dict[str, Any], zone: ZoneInfo, start: int, end: int) -> Iterator[Any]:
    """The rows of one slice of a job's request (what the workers write): readings' Rows, or a bill's records."""
    return ROW_SOURCES[request.get("source", "readings")](project_id, request, zone, start, end)


def export(project_id: int, start: object, end: object, file_type: object = "csv", meter_name: object = None,
           period: object = None, bill: object = None, tariff: object = None) -> dict[str, Any]:
    """Write the export to S3 and return its download link ({"url", "expires"}), or start a job
    when it is too big for one request (its {"id", "status", "progress"}).

    With a period, the file holds energy used per period (consumption.rows) instead of the readings
    (at most 366 rows per meter: always within the request); with bill, the bills (bill_export).
    """
    fmt = "csv" if file_type is None else file_type
    fmt = fmt.strip().lower() if isinstance(fmt, str) else fmt
    if not isinstance(fmt, str) or fmt not in export_writers.EXPORT_FORMATS:
        raise BadRequest("type must be one of csv, json, xml, yaml")
    if validation.flag("bill", bill):
        if period is not None:
            raise BadRequest("give period (energy per period) or bill=1 (the bills), not both")
        return bill_export(project_id, start, end, fmt, meter_name, tariff)
    if tariff is not None:
        raise BadRequest("tariff goes with bill=1 (the bills priced with that tariff)")
    per = consumption.parse_period(period) if period is not None else None
    zone = accounts.project_zone(project_id)
    first, last, begin, finish = days.day_range(days.parse_day("start", start), days.parse_day("end", end), zone,
                                                max_days=consumption.days_allowed(per) if per else days.MAX_DAYS)
    chosen = [meters.find(project_id, name=meter_name)] if meter_name is not None else meters.all_meters(project_id)
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
