"""Fair export jobs (issue 20 item 4): at most MAX_RUNNING running jobs a project (429 with Retry-After past
it, also under parallel requests), the deadline enforced by the workers themselves, and one project's
burst never makes another project's job fail.

The workers are tools/local_worker.py's loop around the Lambda's own handler, one message at a time, with
the clock moved on by a slice's time after each (time-machine moves moto's clock too), so "30 minutes"
is 60 slices of work and the queue's order decides who is served when.
"""
import threading
from datetime import datetime, timezone

import boto3
import pytest
import requests

from chalicelib.outputs import export_jobs, exports
from chalicelib.platform import db
from chalicelib.tables import accounts_table
from tests.api.test_export_jobs import seed
from tools import local_worker

SLICE_TIME = 30          # seconds of the clock each message's work stands for


def job(job_id):
    return db.get(accounts_table.NAME, accounts_table.job_key(job_id))


def start(account, **query):
    return account.request("GET", "/file?" + "&".join(f"{k}={v}" for k, v in query.items()))


def serve(aws, time_travel, until, most=2000):
    """Run queued messages one at a time, the clock moving SLICE_TIME after each, until until() is true or
    the queue is empty; the number of messages run."""
    from app import export_worker

    sqs = boto3.client("sqs", region_name="us-east-1")
    for ran in range(most):
        if until():
            return ran
        handled, _failed = local_worker.receive_once(sqs, aws["EXPORT_QUEUE_URL"], export_worker, visibility=0)
        if not handled:
            return ran
        time_travel.shift(SLICE_TIME)
    raise AssertionError("the queue never emptied")


@pytest.fixture
def projects(aws, make_account, monkeypatch):
    """Project A with a meter of 2 days of 5-minute readings, B with one of 2 readings a day; every export a
    job, slices of about 7 rows: A's exports have 48 slices, B's 1."""
    a, b = make_account(), make_account()
    seed(a.view["project"], ["a1"], days=2)
    seed(b.view["project"], ["b1"], days=1, every=43200)
    monkeypatch.setattr(exports, "SYNC_MAX_ROWS", -1)
    monkeypatch.setattr(exports, "SLICE_ROWS", 7)
    return a, b


@pytest.mark.parametrize("window, b_finishes", [(export_jobs.WINDOW, True), (10 ** 6, False)],
                         ids=["fair", "every slice queued at once (the old way)"])
def test_project_as_maximum_of_jobs_never_makes_project_bs_export_fail(aws, projects, monkeypatch, time_travel,
                                                                         window, b_finishes):
    a, b = projects
    monkeypatch.setattr(export_jobs, "WINDOW", window)
    a_jobs = []
    for _ in range(export_jobs.MAX_RUNNING):
        started = start(a, start="2026-03-01", end="2026-03-02")
        assert started.status_code == 202, started.body
        a_jobs.append(started.json_body["id"])
    assert all(job(j)["parts"] == 48 for j in a_jobs)
    refused = start(a, start="2026-03-01", end="2026-03-02")
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1
    assert all(f"/file/job?id={j}" in refused.json_body["error"] for j in a_jobs)
    b_started = start(b, start="2026-03-01", end="2026-03-01")
    assert b_started.status_code == 202
    b_id = b_started.json_body["id"]
    ran = serve(aws, time_travel, until=lambda: job(b_id)["status"] != "running")
    if not b_finishes:       # the control: B's slices behind all of A's 144, past B's deadline
        assert job(b_id)["status"] == "failed"
        return
    assert job(b_id)["status"] == "done"
    # B waited behind at most A's share of the queue, MAX_RUNNING x WINDOW of A's slices, not A's 144
    # (its small file is joined by the worker of its last part, not queued behind another share)
    assert ran <= export_jobs.MAX_RUNNING * export_jobs.WINDOW + job(b_id)["parts"]
    assert b.request("GET", b_started.headers["Location"]).status_code == 303
    # Nobody asks about A's jobs: the workers fail them at their deadline, and their places are free again
    serve(aws, time_travel, until=lambda: False)
    for j in a_jobs:
        assert job(j)["status"] == "failed" and "did not finish within 30 minutes" in job(j)["error"]
    assert start(a, start="2026-03-01", end="2026-03-01").status_code == 202


def test_a_job_past_its_deadline_stops_at_its_next_slice_unasked(aws, projects, time_travel):
    a, _b = projects
    started = start(a, start="2026-03-01", end="2026-03-02")
    job_id = started.json_body["id"]
    serve(aws, time_travel, until=lambda: len(job(job_id).get("done") or ()) >= 3)
    time_travel.shift(export_jobs.DEADLINE_SECONDS)
    ran = serve(aws, time_travel, until=lambda: False)
    assert job(job_id)["status"] == "failed"
    assert len(job(job_id).get("done") or ()) == 3            # no slice written after the deadline
    assert ran <= export_jobs.WINDOW                           # the queued ones were dropped, none queued after


def test_parallel_requests_never_run_more_than_max_jobs(live_api, serialized_aws, monkeypatch):
    from chalicelib.metering import meters

    meters.register(live_api.project_id, {"MeterId": "m1"})
    monkeypatch.setattr(exports, "SYNC_MAX_ROWS", -1)
    barrier = threading.Barrier(8)
    answers: list = [None] * 8

    def one(i):
        barrier.wait()
        answers[i] = requests.get(f"{live_api.url}/file", params={"start": "2026-03-01", "end": "2026-03-01"},
                                  headers={"X-API-Key": live_api.key}, timeout=60)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [202] * export_jobs.MAX_RUNNING + [429] * (8 - export_jobs.MAX_RUNNING), statuses
    places = db.get(accounts_table.NAME, accounts_table.project_jobs_key(live_api.project_id))
    assert len(places["running"]) == export_jobs.MAX_RUNNING
    assert datetime.now(timezone.utc).timestamp() < min(places["running"].values())
