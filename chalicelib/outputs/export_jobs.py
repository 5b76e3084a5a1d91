"""Export jobs: a GET /file too big for one request, written by queue-fed workers in time slices, joined in S3.

The request (chalicelib/outputs/exports.py) plans the slices and calls start(): the job takes one of its
project's MAX_RUNNING places (else 429), its request goes to S3 (request.json: meters and their names
as of the request, so every slice writes the same names), a job item to DynamoDB, and the messages of
its first WINDOW slices to the queue. Each worker (the export_worker Lambda, or tools/local_worker.py
locally, both through handle_event) writes its slice's rows, without the file's frame, to an object
keyed by the slice number (a retried message rewrites the same object, so a part is never duplicated or
lost), then queues slice number + WINDOW. So a job never has more than WINDOW slices in the queue, a
project never more than MAX_RUNNING x WINDOW, and another project's slices wait behind at most those of
each busy project, never behind a whole burst: fair shares without a queue per project. The worker that
records the last part joins the parts (up to ASSEMBLE_HERE_BYTES), or queues an "assemble" message for
a bigger job; the parts are joined in S3 (UploadPartCopy) inside the format's frame, so the file is byte
for byte the synchronous export. A job whose message fails MAX_RECEIVES times is failed with a reason;
so is a job past DEADLINE_SECONDS, by the next worker that gets one of its messages (and by GET
/file/job), whether or not anyone asks about it. A job that ends gives its place back; a place is also
free once its job's deadline has passed. Jobs and their files are kept a day.

The job item lives in AccountsTable under pk "JOB#<id>", sk "JOB"; this module owns its shape:
project_id, status (running|done|failed), parts, done (number set of finished parts), part_info
({"p<k>": [rows, bytes]}), request (S3 key of request.json), file (S3 key of the file), filename,
media_type, created, expires_at (TTL), error. The project's places are one item, pk "PROJECT#<project>",
sk "JOBS": running ({job id: its deadline}) and version (every change conditional on it).
"""
import json
import secrets
from collections.abc import Callable, Iterable, Iterator
from datetime import tzinfo
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from chalicelib.outputs import downloads, export_writers
from chalicelib.platform import aws, clock, config, db, validation
from chalicelib.platform.db import Item
from chalicelib.platform.errors import BadRequest, NotFound, ServiceUnavailable, TooManyRequests
from chalicelib.tables import accounts_table

KEEP_SECONDS = 24 * 3600        # jobs and their files are kept a day (the bucket's lifecycle rule)
MAX_RECEIVES = 3                # = the queue's maxReceiveCount (infra/resources.yaml)
DEADLINE_SECONDS = 30 * 60      # longer than MAX_RECEIVES visibility timeouts of the worker
MAX_RUNNING = 3                 # export jobs a project may have running at once (429 beyond)
WINDOW = 8                      # slices of a job in the queue at once: a project's share of the workers
BUSY_RETRY_AFTER = 30           # seconds a 429 asks to wait: about a job of a few slices
ASSEMBLE_HERE_BYTES = 64 << 20  # a job's parts up to this size are joined by the worker that writes the last


class JobState(NamedTuple):
    """What GET /file (once it starts a job) and GET /file/job answer: the HTTP status (202 running, 200
    failed, 303 done), its body (303's is the file's link) and, while running, when to ask again (seconds)."""

    status: int
    body: dict
    retry_after: int | None = None


# A slice's rows: rows_of(project_id, job request, zone, begin, end) (exports.slice_rows): readings' Rows, or
# records (dicts of the request's fields) when the request has fields.
RowsOf = Callable[[int, dict[str, Any], ZoneInfo, int, int], Iterable[Any]]


def _prefix(project_id: int, job_id: str) -> str:
    return f"projects/{project_id}/jobs/{job_id}"


def _part_key(project_id: int, job_id: str, number: int) -> str:
    return f"{_prefix(project_id, job_id)}/parts/{number:05d}"


def view(job_id: str, status: str = "running", progress: float = 0.0) -> dict[str, Any]:
    """The 202 body of a running job."""
    return {"id": job_id, "status": status, "progress": round(progress, 3)}


def start(project_id: int, request: dict[str, Any], slices: list[list[int]]) -> JobState:
    """Start a job writing request (exports.export's dict) in slices [(begin, end)]; its 202 JobState.
    TooManyRequests (429) when the project has MAX_RUNNING jobs running."""
    job_id = secrets.token_hex(16)
    now = int(clock.now())
    _take_place(project_id, job_id, now)
    try:
        request_key = f"{_prefix(project_id, job_id)}/request.json"
        body = json.dumps({**request, "slices": slices}).encode()
        downloads.write_object(request_key, "application/json", [body])
        db.put(accounts_table.NAME, {
            **accounts_table.job_key(job_id), "project_id": project_id, "status": "running", "parts": len(slices),
            "done": None, "part_info": {}, "request": request_key,
            "file": f"projects/{project_id}/exports/{job_id}/{downloads.safe_key_part(request['filename'])}",
            "filename": request["filename"], "media_type": request["media_type"],
            "created": now, "expires_at": now + KEEP_SECONDS}, condition="attribute_not_exists(pk)")
        _send(job_id, range(min(WINDOW, len(slices))))
    except BaseException:
        _give_place(project_id, job_id)
        raise
    return JobState(202, view(job_id), retry_after(len(slices)))


def _send(job_id: str, parts: Iterable[int]) -> None:
    """Queue the messages of some parts of a job, ten a call."""
    numbers = list(parts)
    queue = config.resource_name("ExportQueue")
    for at in range(0, len(numbers), 10):
        entries = [{"Id": str(n), "MessageBody": json.dumps({"job": job_id, "part": n})} for n in numbers[at:at + 10]]
        answer = aws.sqs().send_message_batch(QueueUrl=queue, Entries=entries)
        if answer.get("Failed"):
            raise RuntimeError(f"the queue refused {len(answer['Failed'])} messages of job {job_id}")


def _take_place(project_id: int, job_id: str, now: int) -> None:
    """Record job_id among the project's running jobs (with its deadline), dropping those past theirs;
    TooManyRequests when MAX_RUNNING are running. Conditional on the item's version: parallel requests
    never take more places than there are."""
    key = accounts_table.project_jobs_key(project_id)
    for _attempt in range(5):
        item = db.get(accounts_table.NAME, key) or {}
        running = {j: d for j, d in (item.get("running") or {}).items() if d > now}
        if len(running) >= MAX_RUNNING:
            follow = ", ".join(f"/file/job?id={j}" for j in sorted(running, key=running.__getitem__))
            raise TooManyRequests(f"the project has {MAX_RUNNING} export jobs running, the most at once: ask again "
                                  f"when one is done ({follow})", BUSY_RETRY_AFTER)
        version = item.get("version", 0)
        try:
            db.put(accounts_table.NAME, {**key, "running": {**running, job_id: now + DEADLINE_SECONDS},
                                         "version": version + 1},
                   condition="attribute_not_exists(pk) OR #v = :v", names={"#v": "version"},
                   expression_values={":v": version})
            return
        except db.ConditionFailed:
            continue   # another request took or gave a place meanwhile: read again
    raise ServiceUnavailable("the project's export jobs were being started by many requests at once: "
                             "send the request again", 2)


def _give_place(project_id: int, job_id: str) -> None:
    """Free the place of a job that ended (done, failed, or not started)."""
    try:
        db.update(accounts_table.NAME, accounts_table.project_jobs_key(project_id), "REMOVE running.#j ADD #v :one",
                  names={"#j": job_id, "#v": "version"}, expression_values={":one": 1},
                  condition="attribute_exists(running.#j)")
    except db.ConditionFailed:
        pass   # freed already, or expired and dropped


SLICE_SECONDS = 10              # about what a worker takes for a slice (docs/benchmarks.md: ~5.5 s of CPU)


def retry_after(parts_left: int) -> int:
    """Seconds until a job with parts_left parts to write is worth asking about again: 2 to 30."""
    return max(2, min(30, SLICE_SECONDS * parts_left))


def _progress(job: Item) -> float:
    return len(job.get("done") or ()) / (job["parts"] + 1)


def status(project_id: int, job_id: object, zone: tzinfo) -> JobState:
    """GET /file/job: the job's JobState. Another project's job is unknown."""
    unknown = NotFound("no export job with this id in this project (jobs are kept a day)")
    if job_id is None or job_id == "":
        raise BadRequest("id is required: the job's id, as in the Location GET /file answered with its 202")
    job_id = validation.name("id", job_id)
    job = db.get(accounts_table.NAME, accounts_table.job_key(job_id))
    if not job or job.get("project_id") != project_id or job.get("expires_at", 0) < clock.now():
        raise unknown
    if _late(job):
        job = _fail(job_id, LATE) or db.get(accounts_table.NAME, accounts_table.job_key(job_id))
        if job is None:   # expired meanwhile
            raise unknown
    if job["status"] == "done":
        return JobState(303, downloads.link(job["file"], zone))
    if job["status"] == "failed":
        return JobState(200, {"id": job_id, "status": "failed", "error": job.get("error") or "the export failed"})
    return JobState(202, view(job_id, progress=_progress(job)), retry_after(job["parts"] - len(job.get("done") or ())))


def _fail(job_id: str, reason: str) -> Item | None:
    """Mark a running job failed and free its place; the item as updated, or None when it was no longer running."""
    try:
        failed = db.update(accounts_table.NAME, accounts_table.job_key(job_id), "SET #s = :f, #e = :e",
                           names={"#s": "status", "#e": "error"},
                           expression_values={":f": "failed", ":e": reason, ":r": "running"},
                           condition="#s = :r", return_values="ALL_NEW")
    except db.ConditionFailed:
        return None
    _give_place(failed["project_id"], job_id)
    return failed


def _late(job: Item) -> bool:
    return job["status"] == "running" and clock.now() > job["created"] + DEADLINE_SECONDS


LATE = f"the export did not finish within {DEADLINE_SECONDS // 60} minutes: ask for fewer days or fewer meters"


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
    if _late(job):                              # past its deadline: it stops here, asked about or not
        _fail(message["job"], LATE)
        return
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
    if request.get("fields"):   # records (consumption, bills): their columns and frame travel in the request
        chunks = export_writers.record_slice_chunks(request["type"], request["fields"], counted, first, last,
                                                    bom=request.get("bom", False))
    else:
        chunks = export_writers.slice_chunks(request["type"], counted, first, last)
    size = _written(key, chunks)
    updated = db.update(accounts_table.NAME, accounts_table.job_key(message["job"]),
                        "SET part_info.#p = :info ADD done :n", names={"#p": f"p{number}", "#s": "status"},
                        expression_values={":info": [counted.count, size], ":n": {number}, ":r": "running"},
                        condition="#s = :r", return_values="ALL_NEW")
    if number + WINDOW < updated["parts"]:
        _send(message["job"], [number + WINDOW])   # the job's next slice takes this one's place in the queue
    if len(updated.get("done") or ()) == updated["parts"]:
        if sum(size for _rows, size in updated["part_info"].values()) <= ASSEMBLE_HERE_BYTES:
            _assemble(message["job"], updated)  # a small file: joined now, not behind the queue's other shares
        else:
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

    def __init__(self, rows: Iterable[Any]) -> None:   # readings' Rows, or records (consumption, bills)
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
    _give_place(job["project_id"], job_id)
