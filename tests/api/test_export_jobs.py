"""Export jobs: GET /file beyond one request's budget answers 202, queue-fed workers write it in slices,
GET /file/job follows it to the same file, byte for byte, as the synchronous export of the request."""
import json
import urllib.parse
from datetime import datetime, timezone

import boto3
import pytest

from chalicelib.metering import meters, readings
from chalicelib.outputs import export_jobs, exports
from chalicelib.platform import db
from chalicelib.tables import accounts_table, readings_table
from tests.aws_faults import app_clients
from tools import local_worker

DAY = 86400
START = datetime(2026, 3, 1, tzinfo=timezone.utc).timestamp()


def seed(project_id, names, days, every=300, first_day=0, value=lambda i, t: 1000.0 + i + t / 3600, from_second=0):
    """Day items of readings for meters (registered here), every `every` seconds, written directly (the first
    day's from from_second seconds into it)."""
    made = [meters.register(project_id, {"MeterId": n}) for n in names]
    for i, meter in enumerate(made):
        series = readings_table.series_key(project_id, meter["id"])
        for d in range(first_day, days):
            midnight = int(START) + d * DAY
            day = datetime.fromtimestamp(midnight, timezone.utc).strftime("%Y-%m-%d")
            db.put(readings_table.NAME, readings.day_item(series, day, {
                s: round(value(i, midnight + s - START), 3)
                for s in range(from_second if d == first_day else 0, DAY, every)}))
    return made


def drain(aws):
    from app import export_worker

    sqs = boto3.client("sqs", region_name="us-east-1")
    return local_worker.drain(sqs, aws["EXPORT_QUEUE_URL"], export_worker)


def download(url):
    """The object behind a presigned link (moto in-process: read it with the client)."""
    parsed = urllib.parse.urlparse(url)
    bucket, key = parsed.netloc.split(".")[0], urllib.parse.unquote(parsed.path.lstrip("/"))
    if not key or bucket == "s3":            # path-style URL
        bucket, key = parsed.path.lstrip("/").split("/", 1)
        key = urllib.parse.unquote(key)
    return boto3.client("s3", region_name="us-east-1").get_object(Bucket=bucket, Key=key)["Body"].read()


def get_file(account, query):
    return account.request("GET", "/file?" + urllib.parse.urlencode(query))


def follow_job(aws, account, response):
    assert response.status_code == 202, response.body
    location = response.headers["Location"]
    assert location.startswith("/file/job?id=")
    body = response.json_body
    assert body["status"] == "running" and body["progress"] == 0.0 and location.endswith(body["id"])
    drain(aws)
    done = account.request("GET", location)
    assert done.status_code == 303, done.body
    assert done.headers["Location"] == done.json_body["url"] and done.json_body["expires"]
    return download(done.json_body["url"])


@pytest.mark.parametrize("file_type", ["csv", "json", "xml", "yaml"])
def test_a_job_writes_the_synchronous_file_byte_for_byte(aws, make_account, monkeypatch, file_type):
    account = make_account()
    project = account.view["project"]
    # day 0 and day 1's morning empty: the plan (day 1's rows spread over its hours) starts with slices without rows
    seed(project, ["m1", "m2", "=odd \"name\"<&>"], days=3, first_day=1, from_second=13 * 3600)
    query = {"start": "2026-03-01", "end": "2026-03-04", "type": file_type}
    sync = get_file(account, query)
    assert sync.status_code == 303
    expected = download(sync.json_body["url"])
    monkeypatch.setattr(exports, "SYNC_MAX_ROWS", 0)
    monkeypatch.setattr(exports, "SLICE_ROWS", 60)        # slices of 4 hours on day 1 (its rows spread), 2 on day 2
    started = get_file(account, query)
    assert follow_job(aws, account, started) == expected
    job = db.get(accounts_table.NAME, {"pk": f"JOB#{started.json_body['id']}", "sk": "JOB"})
    empty = [n for n in range(job["parts"]) if job["part_info"][f"p{n}"][0] == 0]
    assert job["parts"] > 10 and empty[:3] == [0, 1, 2]


@pytest.mark.parametrize("file_type", ["json", "yaml"])
def test_a_job_of_no_readings_is_the_empty_file(aws, make_account, monkeypatch, file_type):
    account = make_account()
    meters.register(account.view["project"], {"MeterId": "m1"})
    query = {"start": "2026-03-01", "end": "2026-03-02", "type": file_type}
    expected = download(get_file(account, query).json_body["url"])
    monkeypatch.setattr(exports, "SYNC_MAX_ROWS", -1)                 # even no row at all: a job
    monkeypatch.setattr(exports, "SLICE_ROWS", 100)
    assert follow_job(aws, account, get_file(account, query)) == expected == (b"[]" if file_type == "json" else b"[]\n")


def test_big_parts_are_copied_by_s3_and_small_ones_gathered(aws, make_account, monkeypatch, recorder):
    """Slices over 5 MiB go in by UploadPartCopy (S3 copies them); the file is still the synchronous one."""
    account = make_account()
    seed(account.view["project"], ["m1", "m2", "m3", "m4"], days=10, every=60)   # 57,600 rows, ~150 B each
    query = {"start": "2026-03-01", "end": "2026-03-10", "type": "xml"}
    expected = download(get_file(account, query).json_body["url"])
    monkeypatch.setattr(exports, "SYNC_MAX_ROWS", 0)
    monkeypatch.setattr(exports, "SLICE_ROWS", 45_000)    # a slice of ~6.7 MB (copied) and one of ~1.9 MB
    monkeypatch.setattr(export_jobs, "ASSEMBLE_HERE_BYTES", 0)   # joined by a message of its own, as a big job
    recorder.calls.clear()
    assert follow_job(aws, account, get_file(account, query)) == expected
    operations = [c["operation"] for c in recorder.calls]
    assert operations.count("UploadPartCopy") == 1                  # the ~6.7 MB slice, copied by S3
    assert operations.count("UploadPart") >= 1                      # the small one, read and sent


@pytest.fixture
def recorder(aws):
    """Every S3/SQS/DynamoDB/KMS call the app's clients make (botocore's before-parameter-build event)."""

    class Calls:
        calls = []

    for client in app_clients():
        client.meta.events.register("before-parameter-build",
                                    lambda model, **_: Calls.calls.append({"operation": model.name}))
    return Calls


def test_a_worker_that_dies_is_retried_without_losing_or_duplicating_a_part(aws, make_account, monkeypatch):
    account = make_account()
    seed(account.view["project"], ["m1", "m2"], days=2)
    query = {"start": "2026-03-01", "end": "2026-03-02", "type": "csv"}
    expected = download(get_file(account, query).json_body["url"])
    monkeypatch.setattr(exports, "SYNC_MAX_ROWS", 0)
    monkeypatch.setattr(exports, "SLICE_ROWS", 200)
    from app import export_worker

    sqs = boto3.client("sqs", region_name="us-east-1")
    started = get_file(account, query)
    deaths: list = []

    def dies_after_writing_part(params, **_):
        if "ADD done" in params.get("UpdateExpression", "") and not deaths:   # the part is in S3, the job item not told yet
            deaths.append(params["Key"])
            raise RuntimeError("the worker was stopped")

    dynamodb = app_clients()[0]
    dynamodb.meta.events.register("before-parameter-build.dynamodb.UpdateItem", dies_after_writing_part)
    handled, failed = local_worker.drain(sqs, aws["EXPORT_QUEUE_URL"], export_worker)
    assert failed == 1 and deaths
    job = db.get(accounts_table.NAME, {"pk": f"JOB#{started.json_body['id']}", "sk": "JOB"})
    assert sorted(job["done"]) == list(range(job["parts"]))
    done = account.request("GET", started.headers["Location"])
    assert done.status_code == 303
    assert download(done.json_body["url"]) == expected
    # a late duplicate of a part message changes nothing
    sqs.send_message(QueueUrl=aws["EXPORT_QUEUE_URL"], MessageBody=json.dumps({"job": job["pk"][4:], "part": 0}))
    drain(aws)
    assert download(account.request("GET", started.headers["Location"]).json_body["url"]) == expected


def test_a_part_that_keeps_failing_fails_the_job_with_a_reason(aws, make_account, monkeypatch):
    account = make_account()
    seed(account.view["project"], ["m1"], days=1)
    monkeypatch.setattr(exports, "SYNC_MAX_ROWS", 0)
    started = get_file(account, {"start": "2026-03-01", "end": "2026-03-01", "type": "json"})
    assert started.status_code == 202

    def broken(*_args):
        raise OSError("the readings can't be read")

    monkeypatch.setitem(exports.ROW_SOURCES, "readings", broken)
    handled, failed = drain(aws)
    assert failed == export_jobs.MAX_RECEIVES - 1        # the last delivery fails the job instead of raising
    answer = account.request("GET", started.headers["Location"])
    assert answer.status_code == 200
    assert answer.json_body == {"id": started.json_body["id"], "status": "failed",
                                "error": "a part of the export failed 3 times: OSError"}


def test_a_job_not_done_by_its_deadline_is_failed(aws, make_account, monkeypatch, time_travel):
    account = make_account()
    seed(account.view["project"], ["m1"], days=1)
    monkeypatch.setattr(exports, "SYNC_MAX_ROWS", 0)
    started = get_file(account, {"start": "2026-03-01", "end": "2026-03-01"})
    running = account.request("GET", started.headers["Location"])
    assert running.status_code == 202 and running.json_body["status"] == "running"
    time_travel.shift(export_jobs.DEADLINE_SECONDS + 1)
    answer = account.request("GET", started.headers["Location"])
    assert answer.status_code == 200 and answer.json_body["status"] == "failed"
    assert "did not finish within 30 minutes" in answer.json_body["error"]
    drain(aws)                                           # late workers don't revive it
    assert account.request("GET", started.headers["Location"]).json_body["status"] == "failed"


def test_another_projects_job_and_unknown_ids_are_404_and_a_missing_id_400(aws, make_account, monkeypatch):
    owner, other = make_account(), make_account()
    seed(owner.view["project"], ["m1"], days=1)
    monkeypatch.setattr(exports, "SYNC_MAX_ROWS", 0)
    started = get_file(owner, {"start": "2026-03-01", "end": "2026-03-01"})
    assert other.request("GET", started.headers["Location"]).status_code == 404
    assert owner.request("GET", "/file/job?id=nope").status_code == 404
    missing = owner.request("GET", "/file/job")
    assert missing.status_code == 400 and "id is required" in missing.json_body["error"]
    assert owner.request("GET", "/file/job?id=" + "f" * 65).status_code == 400     # longer than any id: not looked up
    drain(aws)
    assert other.request("GET", started.headers["Location"]).status_code == 404
    assert owner.request("GET", started.headers["Location"]).status_code == 303


def test_the_request_counts_before_reading_and_stays_synchronous_under_its_budget(aws, make_account, monkeypatch):
    account = make_account()
    project = account.view["project"]
    seed(project, ["m1"], days=1)
    assert get_file(account, {"start": "2026-03-01", "end": "2026-03-01"}).status_code == 303
    # 300 meters at 5 minutes for a year: 31.5 M rows, sliced in parts of ~SLICE_ROWS on whole hours
    begin = int(START)
    per_day = {begin + d * DAY: 300 * 288.0 for d in range(365)}
    slices = exports.plan_slices(per_day, begin, begin + 365 * DAY)
    assert slices[0][0] == begin and slices[-1][1] == begin + 365 * DAY
    assert all(a[1] == b[0] for a, b in zip(slices, slices[1:]))
    assert all((b - a) % 3600 == 0 for a, b in slices[:-1])
    assert 30 <= len(slices) <= 33


def test_a_project_has_at_most_max_meters(aws, make_account, monkeypatch):
    account = make_account()
    monkeypatch.setattr(meters, "MAX_METERS", 3)
    for name in ("m1", "m2", "m3"):
        assert account.request("PUT", "/point", {"MeterId": name}).status_code == 200
    refused = account.request("PUT", "/point", {"MeterId": "m4"})
    assert refused.status_code == 409
    assert refused.json_body == {"error": "the project has 3 meters, the most a project can have: "
                                          "split the site into projects"}
    assert [m["MeterId"] for m in account.request("GET", "/point").json_body] == ["m1", "m2", "m3"]
    # the known meters can still be registered again and reconfigured; another project is not counted
    assert account.request("PUT", "/point", {"MeterId": "m2", "SaveEvery": 1}).json_body["SaveEvery"] == 1
    assert make_account().request("PUT", "/point", {"MeterId": "m4"}).status_code == 200


def _gateway_event(path, stage_path, key, query):
    """A REST API proxy event as API Gateway sends it for a call of <stage_path> (the stage in it)."""
    return {"resource": path, "path": path, "httpMethod": "GET",
            "headers": {"Authorization": f"Bearer {key}", "Accept": "application/json"},
            "multiValueHeaders": {"Authorization": [f"Bearer {key}"], "Accept": ["application/json"]},
            "queryStringParameters": query, "multiValueQueryStringParameters": {k: [v] for k, v in query.items()},
            "pathParameters": None, "stageVariables": None, "body": None, "isBase64Encoded": False,
            "requestContext": {"resourcePath": path, "path": stage_path, "httpMethod": "GET",
                               "requestId": "staged", "stage": "api"}}


def test_on_a_stage_the_202s_location_is_under_the_stage_the_client_called(aws, make_account, monkeypatch):
    """Deployed, the client calls https://…/api/file: the job's Location keeps /api (the stage-less
    /file/job would be API Gateway's 403), and polling it there follows the job to its file."""
    from app import app

    account = make_account()
    seed(account.view["project"], ["m1"], days=1)
    monkeypatch.setattr(exports, "SYNC_MAX_ROWS", 0)
    query = {"start": "2026-03-01", "end": "2026-03-01", "type": "csv"}
    started = app(_gateway_event("/file", "/api/file", account.key, query), None)
    assert started["statusCode"] == 202, started["body"]
    job = json.loads(started["body"])["id"]
    location = started["headers"]["Location"]
    assert location == f"/api/file/job?id={job}"
    drain(aws)
    path, _, polled = location.partition("?")
    done = app(_gateway_event("/file/job", path, account.key, dict(urllib.parse.parse_qsl(polled))), None)
    assert done["statusCode"] == 303 and download(done["headers"]["Location"]).count(b"\n") == 289
