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
A slice's rows come from ROW_SOURCES[request["source"]]: another kind of export adds its source there; an
export of records (dicts, not readings) puts its fields in the request. Bills (bill=1: GET /bill's rows,
flat) are a source whose slices are ranges of meters (every month of each): their file goes meter by
meter, where consumption's goes period by period.
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
from chalicelib.platform import clock, validation
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
                tariff_id: object = None) -> dict[str, Any] | export_jobs.JobState:
    """GET /file?bill=1: GET /bill's rows, one flat line per meter and month (bills.flat_fields' columns), CSV
    with a byte order mark and Total to the cent; past bills.MAX_METER_MONTHS rows (what one request prices),
    a job of BILL_SLICE_METERS meters a part."""
    from chalicelib.billing import bills, tariffs

    zone = accounts.project_zone(project_id)
    first, last, _begin, _finish = days.day_range(days.parse_day("start", start), days.parse_day("end", end), zone)
    chosen = ([meters.find(project_id, name=meter_name, field="meter")] if meter_name is not None
              else meters.all_meters(project_id))
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


ROW_SOURCES: dict[str, Any] = {"readings": reading_rows, "consumption": consumption_rows, "bill": bill_rows}


def slice_rows(project_id: int, request: dict[str, Any], zone: ZoneInfo, start: int, end: int) -> Iterator[Any]:
    """The rows of one slice of a job's request (what the workers write): readings' Rows, or records."""
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
           period: object = None, bill: object = None, tariff: object = None) -> dict[str, Any] | export_jobs.JobState:
    """Write the export to S3 and return its download link ({"url", "expires"}), or start a job when it is
    too big for one request (its JobState: 202, {"id", "status", "progress"}, Retry-After).

    With a period, the file holds energy used per period (consumption.rows) instead of the readings; with
    bill, the bills (bill_export).
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
