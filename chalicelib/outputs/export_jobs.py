"""Export jobs: a GET /file too big for one request, written by queue-fed workers in time slices, joined in S3.

The request (chalicelib/outputs/exports.py) plans the slices and calls start(): the job's request goes to
S3 (request.json: meters and their names as of the request, so every slice writes the same names),
a job item to DynamoDB, one SQS message per slice. Each worker (the export_worker Lambda, or
tools/local_worker.py locally, both through handle_event) writes its slice's rows, without the
file's frame, to an object keyed by the slice number: a retried message rewrites the same object,
so a part is never duplicated or lost. The worker that records the last part queues an "assemble"
message; the assembler joins the parts in S3 (UploadPartCopy) inside the format's frame, so the
file is byte for byte the synchronous export. A job whose message fails MAX_RECEIVES times, or that
is not done by DEADLINE_SECONDS, is failed with a reason. Jobs and their files are kept a day.

The job item lives in AccountsTable under pk "JOB#<id>", sk "JOB"; this module owns its shape:
project_id, status (running|done|failed), parts, done (number set of finished parts), part_info
({"p<k>": [rows, bytes]}), request (S3 key of request.json), file (S3 key of the file), filename,
media_type, created, expires_at (TTL), error.
"""
import json
import secrets
from collections.abc import Callable, Iterable, Iterator
from datetime import tzinfo
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from chalicelib.outputs import downloads, export_writers
from chalicelib.outputs.export_writers import Row
from chalicelib.platform import aws, clock, config, db
from chalicelib.platform.db import Item
from chalicelib.platform.errors import NotFound
from chalicelib.tables import accounts_table

KEEP_SECONDS = 24 * 3600        # jobs and their files are kept a day (the bucket's lifecycle rule)
MAX_RECEIVES = 3                # = the queue's maxReceiveCount (infra/resources.yaml)
DEADLINE_SECONDS = 30 * 60      # longer than MAX_RECEIVES visibility timeouts of the worker


class JobState(NamedTuple):
    """What GET /file/job answers: the HTTP status (202 running, 200 failed, 303 done) and its body (303's
    is the file's link)."""

    status: int
    body: dict


# A slice's rows: rows_of(project_id, job request, zone, begin, end) (exports.slice_rows).
RowsOf = Callable[[int, dict[str, Any], ZoneInfo, int, int], Iterable[Row]]


def _prefix(project_id: int, job_id: str) -> str:
    return f"projects/{project_id}/jobs/{job_id}"


def _part_key(project_id: int, job_id: str, number: int) -> str:
    return f"{_prefix(project_id, job_id)}/parts/{number:05d}"


def view(job_id: str, status: str = "running", progress: float = 0.0) -> dict[str, Any]:
    """The 202 body of a running job."""
    return {"id": job_id, "status": status, "progress": round(progress, 3)}


def start(project_id: int, request: dict[str, Any], slices: list[list[int]]) -> dict[str, Any]:
    """Start a job writing request (exports.job_request's dict) in slices [(begin, end) epochs]; its 202 body."""
    job_id = secrets.token_hex(16)
    request_key = f"{_prefix(project_id, job_id)}/request.json"
    body = json.dumps({**request, "slices": slices}).encode()
    downloads.write_object(request_key, "application/json", [body])
    now = int(clock.now())
    db.put(accounts_table.NAME, {
        **accounts_table.job_key(job_id), "project_id": project_id, "status": "running", "parts": len(slices),
        "done": None, "part_info": {}, "request": request_key,
        "file": f"projects/{project_id}/exports/{job_id}/{downloads.safe_key_part(request['filename'])}",
        "filename": request["filename"], "media_type": request["media_type"],
        "created": now, "expires_at": now + KEEP_SECONDS}, condition="attribute_not_exists(pk)")
    queue = config.resource_name("ExportQueue")
    client = aws.sqs()
    for start_ in range(0, len(slices), 10):
        entries = [{"Id": str(n), "MessageBody": json.dumps({"job": job_id, "part": n})}
                   for n in range(start_, min(start_ + 10, len(slices)))]
        answer = client.send_message_batch(QueueUrl=queue, Entries=entries)
        if answer.get("Failed"):
            raise RuntimeError(f"the queue refused {len(answer['Failed'])} messages of job {job_id}")
    return view(job_id)


def _progress(job: Item) -> float:
    return len(job.get("done") or ()) / (job["parts"] + 1)


def status(project_id: int, job_id: object, zone: tzinfo) -> JobState:
    """GET /file/job: the job's JobState. Another project's job is unknown."""
    unknown = NotFound("no export job with this id in this project (jobs are kept a day)")
    if not isinstance(job_id, str) or not 0 < len(job_id) <= 64:
        raise unknown
    job = db.get(accounts_table.NAME, accounts_table.job_key(job_id))
    if not job or job.get("project_id") != project_id or job.get("expires_at", 0) < clock.now():
        raise unknown
    if job["status"] == "running" and clock.now() > job["created"] + DEADLINE_SECONDS:
        job = (_fail(job_id, f"the export did not finish within {DEADLINE_SECONDS // 60} minutes: "
                             f"ask for fewer days or fewer meters")
               or db.get(accounts_table.NAME, accounts_table.job_key(job_id)))
        if job is None:   # expired meanwhile
            raise unknown
    if job["status"] == "done":
        return JobState(303, downloads.link(job["file"], zone))
    if job["status"] == "failed":
        return JobState(200, {"id": job_id, "status": "failed", "error": job.get("error") or "the export failed"})
    return JobState(202, view(job_id, progress=_progress(job)))


def _fail(job_id: str, reason: str) -> Item | None:
    """Mark a running job failed; the item as updated, or None when it was no longer running."""
    try:
        return db.update(accounts_table.NAME, accounts_table.job_key(job_id), "SET #s = :f, #e = :e",
                         names={"#s": "status", "#e": "error"},
                         expression_values={":f": "failed", ":e": reason, ":r": "running"},
                         condition="#s = :r", return_values="ALL_NEW")
    except db.ConditionFailed:
        return None


# ---- the worker ------------------------------------------------------------------------------

def handle_event(event: Iterable[Any], rows_of: RowsOf) -> None:
    """The worker's entry (Lambda's SQS event, or the local worker's): run each message's step.

    rows_of(project_id, request, zone, begin, end) gives a slice's rows (chalicelib/outputs/exports.py).
    An exception leaves the message to the queue, which delivers it again (up to MAX_RECEIVES);
    on its last delivery the job is failed with the reason instead.
    """
    for record in event:
        message = json.loads(record.body)
        receives = int(record.to_dict().get("attributes", {}).get("ApproximateReceiveCount", 1))
        try:
            run(message, rows_of)
        except Exception as error:
            if receives < MAX_RECEIVES:
                raise
            _fail(message.get("job"), f"a part of the export failed {receives} times: {type(error).__name__}")


def run(message: dict[str, Any], rows_of: RowsOf) -> None:
    """One step of a job: write part message['part'], or join the parts (message['assemble'])."""
    job = db.get(accounts_table.NAME, accounts_table.job_key(message["job"]))
    if not job or job["status"] != "running":
        return                                  # failed, done or expired: nothing left to do
    if message.get("assemble"):
        _assemble(message["job"], job)
        return
    number = int(message["part"])
    request = _request(job)
    begin, end = request["slices"][number]
    zone = clock.zone(request["zone"])
    rows = rows_of(job["project_id"], request, zone, begin, end)
    counted = _Counter(rows)
    key = _part_key(job["project_id"], message["job"], number)
    first, last = number == 0, number == job["parts"] - 1
    if request.get("fields"):   # records (a bill export): its columns and frame travel in the request
        chunks = export_writers.record_slice_chunks(request["type"], request["fields"], counted, first, last,
                                                    bom=request.get("bom", False))
    else:
        chunks = export_writers.slice_chunks(request["type"], counted, first, last)
    size = _written(key, chunks)
    updated = db.update(accounts_table.NAME, accounts_table.job_key(message["job"]),
                        "SET part_info.#p = :info ADD done :n", names={"#p": f"p{number}", "#s": "status"},
                        expression_values={":info": [counted.count, size], ":n": {number}, ":r": "running"},
                        condition="#s = :r", return_values="ALL_NEW")
    if len(updated.get("done") or ()) == updated["parts"]:
        aws.sqs().send_message(QueueUrl=config.resource_name("ExportQueue"),
                               MessageBody=json.dumps({"job": message["job"], "assemble": True}))


def _written(key: str, chunks: Iterable[bytes]) -> int:
    """Write a part object; its size in bytes."""
    size = 0

    def counting() -> Iterator[bytes]:
        nonlocal size
        for chunk in chunks:
            size += len(chunk)
            yield chunk

    downloads.write_object(key, "application/octet-stream", counting())
    return size


class _Counter:
    """Rows passed through, counted."""

    def __init__(self, rows: Iterable[Any]) -> None:   # readings' Rows, or a bill's records
        self.rows = iter(rows)
        self.count = 0

    def __iter__(self) -> Iterator[Any]:
        for row in self.rows:
            self.count += 1
            yield row


def _request(job: Item) -> dict[str, Any]:
    return json.loads(downloads.read_range(job["request"], 0, 1 << 26))


def _assemble(job_id: str, job: Item) -> None:
    """Join the parts into the file (export_writers.slice_chunks says how); mark the job done."""
    request = _request(job)
    frame = (export_writers.record_frame(request["type"], request["fields"], request.get("bom", False))
             if request.get("fields") else export_writers.FRAMES[request["type"]])
    segments: list[downloads.Segment | bytes] = []
    seen_rows = False
    for number in range(job["parts"]):
        rows, size = job["part_info"][f"p{number}"]
        skip = frame.lead if rows and not seen_rows and number > 0 else 0
        seen_rows = seen_rows or rows > 0
        if size > skip:
            segments.append(downloads.Segment(_part_key(job["project_id"], job_id, number), skip, size - skip))
    if not seen_rows:
        segments = [frame.empty.encode()]
    downloads.assemble(job["file"], job["media_type"], job["filename"], segments)
    try:
        db.update(accounts_table.NAME, accounts_table.job_key(job_id), "SET #s = :d", names={"#s": "status"},
                  expression_values={":d": "done", ":r": "running"}, condition="#s = :r")
    except db.ConditionFailed:
        pass                                    # another delivery of the message finished first
