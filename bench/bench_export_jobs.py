"""A 300-meter export as a job (queue-fed workers, parts joined in S3) against the synchronous path.

Runs against a moto server (the local stack's embedded AWS), so every process below is measured
alone, as a Lambda invocation would be: its wall time and its peak memory (ru_maxrss: the process,
interpreter and imports included, what Lambda reports as Max Memory Used).
  - sync: one process writes the whole export of the sample as GET /file would without a budget;
  - job: the request's process plans and starts the job (what GET /file does before its 202), then
    each queue message runs in a process of its own through tools/local_worker.py and the handler
    app.export_worker (one slice of about exports.SLICE_ROWS rows, or the assembly).
The sample is --days days of 5-minute readings of --meters meters (default 300 x 30 days: 2.59 M
rows, 3 slices). Every slice of a year is the same size as the sample's full slices (SLICE_ROWS rows),
so the largest worker of a year is the largest worker measured here; a year's wall time with the
workers in parallel (50 at once, the event source's MaximumConcurrency) is: the request + the largest
slice + the assembly, whose UploadPartCopy calls grow with the parts (measured per part, scaled to
the year's parts). The serial sum of the workers is printed too, with rows/s over the whole sample.
The assembled file is checked byte for byte against the synchronous one. "cpu s" is the CPU time of
the measured process itself (the moto server is another process): what a Lambda spends computing;
the rest of its wall time is waiting on the moto server, which answers far slower than DynamoDB
(and shares the machine's 2 CPUs with the process it answers).
Usage: .venv/bin/python bench/bench_export_jobs.py [--meters 300] [--days 30] [--formats csv,json,xml,yaml]
"""
import argparse
import hashlib
import json
import os
import resource
import socket
import subprocess
import sys
import time
from typing import Any
from datetime import date, timedelta

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tools.ports import free_port  # noqa: E402

START = date(2025, 1, 1)
STEP = 300
YEAR_ROWS = 300 * 288 * 365


def aws_env(port):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "bench",
                "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1", "PYTHONPATH": ROOT})
    return env


def seed(meters_count, days):
    """A project with meters_count meters and `days` days of 5-minute readings each (one item a day)."""
    from chalicelib.identity import accounts
    from chalicelib.metering import meters, readings
    from chalicelib.platform import db
    from chalicelib.tables import readings_table

    project = accounts.create_project("bench-jobs", "UTC")["project_id"]
    # meters first: moto copies the tables for each transaction (registration)
    made = [meters.register(project, {"MeterId": f"suite-{i:03d}", "SaveEvery": 5}) for i in range(meters_count)]
    for i, meter in enumerate(made):
        series = readings_table.series_key(project, meter["id"])
        for d in range(days):
            day = START + timedelta(days=d)
            base = 10_000.0 + i * 100 + d * 28.8
            db.put(readings_table.NAME, readings.day_item(series, day.isoformat(), {
                s: round(base + s / 3000, 3) for s in range(0, 86400, STEP)}))
    return project


def child(argv):
    """One measured process: 'sync PROJECT FMT DAYS' or 'start PROJECT FMT DAYS' or 'worker'."""
    from tools.provision import local_stage_environment

    os.environ.update({k: v for k, v in local_stage_environment().items() if k not in ("EXPORT_QUEUE_URL",)})
    os.environ["EXPORT_QUEUE_URL"] = argv[-1]
    import app  # noqa: F401  (the function's imports, as at a cold start)
    from chalicelib.outputs import downloads, exports

    started = time.perf_counter()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_before = usage.ru_utime + usage.ru_stime
    out: dict[str, Any] = {}
    if argv[0] in ("sync", "start"):
        project, fmt, days = int(argv[1]), argv[2], int(argv[3])
        # sync: no budget (the whole sample in one process); start: a job whatever the sample's size
        exports.SYNC_MAX_ROWS = 10 ** 12 if argv[0] == "sync" else 0
        answer = exports.export(project, START.isoformat(), (START + timedelta(days=days - 1)).isoformat(), fmt)
        if isinstance(answer, dict):
            import urllib.parse

            path = urllib.parse.urlparse(answer["url"]).path      # path-style: /bucket/key
            key = urllib.parse.unquote(path.split("/", 2)[2])
            out["key"] = key
            out["sha"], out["bytes"] = digest(downloads, key)
        else:
            out["job"] = answer.body["id"]
    else:
        import boto3

        from app import export_worker
        from tools import local_worker

        sqs = boto3.client("sqs")
        handled, failed = local_worker.receive_once(sqs, os.environ["EXPORT_QUEUE_URL"], export_worker)
        out.update(handled=handled, failed=failed)
    out["seconds"] = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out["cpu"] = usage.ru_utime + usage.ru_stime - cpu_before
    out["peak_mb"] = usage.ru_maxrss / 1024
    print(json.dumps(out))


def digest(downloads, key):
    from chalicelib.platform import aws, config

    body = aws.s3().get_object(Bucket=config.resource_name("FilesBucket"), Key=key)["Body"]
    sha, size = hashlib.sha256(), 0
    for chunk in iter(lambda: body.read(1 << 20), b""):
        sha.update(chunk)
        size += len(chunk)
    return sha.hexdigest(), size


def run(env, *args):
    answer = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", *args], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if answer.returncode != 0:
        raise RuntimeError(answer.stderr[-3000:])
    return json.loads(answer.stdout.strip().splitlines()[-1])


def start_moto(attempts=3):
    """A moto server process on a port outside the ephemeral range (tools/ports.py), on another one if a
    server of another session took it first (moto's server then exits); (process, its AWS environment)."""
    for _attempt in range(attempts):
        port = free_port()
        env = aws_env(port)
        server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        for _ in range(300):
            if server.poll() is not None:
                break
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return server, env
            except OSError:
                time.sleep(0.1)
        server.kill()
        server.wait()
    raise RuntimeError("the moto server did not start")


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=300)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--formats", default="csv,json,xml,yaml")
    args = parser.parse_args()
    server, env = start_moto()
    try:
        os.environ.update(env)
        from chalicelib.outputs import export_jobs, exports
        from chalicelib.platform import aws
        from tools import provision

        aws.reset_clients()
        os.environ.update(provision.provision_local())
        queue = os.environ["EXPORT_QUEUE_URL"]
        started = time.perf_counter()
        project = seed(args.meters, args.days)
        rows = args.meters * args.days * 288
        print(f"export jobs: {args.meters} meters x {args.days} days of 5-minute readings = {rows:,} rows "
              f"(seeded in {time.perf_counter() - started:.0f} s), moto server, slices of ~{exports.SLICE_ROWS:,} rows, "
              f"Python {sys.version.split()[0]}")
        year_parts = -(-YEAR_ROWS // exports.SLICE_ROWS)
        print(f"{'format':<6}{'sync s':>8}{'cpu s':>7}{'sync MB':>8}{'sync rows/s':>12} | {'start s':>8}{'parts':>6}"
              f"{'max part s':>11}{'cpu s':>7}{'max MB':>7}{'assemble s':>11}{'serial s':>9}{'rows/s':>9}"
              f"{'same':>5} | {'year: parts':>11}{'wall s':>8}{'sync s':>8}")
        for fmt in args.formats.split(","):
            sync = run(env, "sync", str(project), fmt, str(args.days), queue)
            start = run(env, "start", str(project), fmt, str(args.days), queue)
            job_id = start["job"]
            parts: list[dict] = []
            assembly: Any = None
            while True:
                step = run(env, "worker", queue)
                if not step["handled"]:
                    break
                job = _job(export_jobs, job_id)
                if job["status"] == "done" and assembly is None and len(parts) >= job["parts"]:
                    assembly = step
                else:
                    parts.append(step)
            job = _job(export_jobs, job_id)
            assert job["status"] == "done", job
            from chalicelib.outputs import downloads

            sha, size = digest(downloads, job["file"])
            same = sha == sync["sha"] and size == sync["bytes"]
            largest = max(parts, key=lambda p: p["seconds"])
            serial = start["seconds"] + sum(p["seconds"] for p in parts) + assembly["seconds"]
            per_part = assembly["seconds"] / job["parts"]
            year_wall = start["seconds"] + largest["seconds"] + per_part * year_parts
            year_sync = sync["seconds"] * YEAR_ROWS / rows
            print(f"{fmt:<6}{sync['seconds']:>8.1f}{sync['cpu']:>7.1f}{sync['peak_mb']:>8.0f}"
                  f"{rows / sync['seconds']:>12,.0f} | "
                  f"{start['seconds']:>8.2f}{job['parts']:>6}{largest['seconds']:>11.1f}{largest['cpu']:>7.1f}"
                  f"{max(p['peak_mb'] for p in parts + [assembly]):>7.0f}{assembly['seconds']:>11.2f}{serial:>9.1f}"
                  f"{rows / serial:>9,.0f}{'yes' if same else 'NO':>5} | {year_parts:>11}{year_wall:>8.1f}{year_sync:>8.0f}"
                  f"   ({size / 2**20:.0f} MiB)")
    finally:
        server.terminate()
        server.wait()


def _job(export_jobs, job_id) -> Any:
    from chalicelib.platform import db
    from chalicelib.tables import accounts_table

    return db.get(accounts_table.NAME, {"pk": f"JOB#{job_id}", "sk": "JOB"})


if __name__ == "__main__":
    main()
