"""One project's burst of export jobs against another project's export: fair shares of the queue, and before.

In-process moto, the app's own handler run by tools/local_worker.py's loop one message at a time (one
worker: the queue's order decides who is served), the clock moved on by --slice-seconds after each message
(time-machine; a slice's work on a busy worker), so the 30-minute deadline is a number of slices. Project A
starts export_jobs.MAX_RUNNING jobs of --slices slices each; then project B starts one job of one slice.
Printed for the fair queue (export_jobs.WINDOW slices of a job queued at once, each worker queueing the
next) and for every slice queued at once (the way before, WINDOW lifted): the messages run and the
clock's minutes until B's job ended, how it ended, how A's jobs ended, and the wall time of the run.
Usage: .venv/bin/python bench/bench_job_fairness.py [--slices 48] [--slice-seconds 30]
"""
import argparse
import os
import time

import bench_env

bench_env.in_process_aws()


def scenario(window, slices, slice_seconds):
    import boto3
    import time_machine
    from chalice.test import Client

    from app import app, export_worker
    from bench_layout import new_project, stack
    from chalicelib.outputs import export_jobs, exports
    from chalicelib.platform import db
    from chalicelib.tables import accounts_table
    from tests.building import build
    from tools import local_worker

    def job(job_id):
        return db.get(accounts_table.NAME, accounts_table.job_key(job_id))

    with stack(), time_machine.travel(time.time(), tick=True) as traveller:
        export_jobs.WINDOW = window
        exports.SYNC_MAX_ROWS = -1
        a_project, a_key = new_project("a")
        b_project, b_key = new_project("b")
        hours = slices
        build(a_project, 1, 1772323200, -(-hours // 24), every=300)
        build(b_project, 1, 1772323200, 1, every=43200)
        exports.SLICE_ROWS = 12            # an hour of 5-minute readings: a slice an hour
        with Client(app, stage_name="local") as client:
            a_jobs = []
            for _ in range(export_jobs.MAX_RUNNING):
                answer = client.http.get("/file?start=2026-03-01&end=2026-03-02", headers={"X-API-Key": a_key})
                a_jobs.append(answer.json_body["id"])
            refused = client.http.get("/file?start=2026-03-01&end=2026-03-02", headers={"X-API-Key": a_key})
            b_id = client.http.get("/file?start=2026-03-01&end=2026-03-01", headers={"X-API-Key": b_key}).json_body["id"]
            sqs = boto3.client("sqs", region_name="us-east-1")
            queue = os.environ["EXPORT_QUEUE_URL"]
            started, ran, b_at = time.perf_counter(), 0, None
            while True:
                if b_at is None and job(b_id)["status"] != "running":
                    b_at = ran
                handled, _failed = local_worker.receive_once(sqs, queue, export_worker, visibility=0)
                if not handled:
                    break
                ran += 1
                traveller.shift(slice_seconds)
            wall = time.perf_counter() - started
            a_parts = job(a_jobs[0])["parts"]
            a_end = [job(j)["status"] for j in a_jobs]
            return {"b": job(b_id)["status"], "b_at": b_at, "a_parts": a_parts, "a": a_end, "ran": ran,
                    "wall": wall, "refused": refused.status_code}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=48)
    parser.add_argument("--slice-seconds", type=int, default=30)
    args = parser.parse_args()
    from chalicelib.outputs import export_jobs

    print(f"A: {export_jobs.MAX_RUNNING} jobs (its most) of ~{args.slices} slices; B: 1 job of 1 slice; "
          f"one worker, {args.slice_seconds} s of clock a message; deadline {export_jobs.DEADLINE_SECONDS // 60} min")
    print(f"{'queue':<34}{'A 4th job':>10}{'B ended after':>16}{'clock':>9}{'B':>8}   A's jobs{'':<18}"
          f"{'messages':>9}{'wall s':>8}")
    for label, window in ((f"fair (WINDOW {export_jobs.WINDOW})", export_jobs.WINDOW),
                          ("every slice queued at once", 10 ** 6)):
        r = scenario(window, args.slices, args.slice_seconds)
        print(f"{label:<34}{r['refused']:>10}{r['b_at']:>10} msgs{r['b_at'] * args.slice_seconds / 60:>8.1f}m"
              f"{r['b']:>8}   {', '.join(r['a']):<26}{r['ran']:>9}{r['wall']:>8.1f}")


if __name__ == "__main__":
    main()
