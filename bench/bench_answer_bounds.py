"""Answers within Lambda's limits: what a row costs in each format, and the hourly month of 300 meters before
and after the bound (GET /consumption, GET /file?period=hour).

In-process moto (the stack of bench_layout). Prints:
  1. bytes per row in each format, as Lambda counts them (the body's share of the proxy answer's JSON), for
     the rows of each listing route with a typical name ("suite-101") and the widest one (64 characters
     with quotes, <, & and a non-ASCII letter), and the most rows answers.most_rows lets through;
  2. rendering seconds per value of each format (answers.RENDER_SECONDS_PER_VALUE), median of --repeats;
  3. the building: --meters meters with the month of March 2026 of 5-minute readings (tests/building.py:
     the first meter through ingest, copies of its items for the others), then
     - before: what GET /consumption?period=hour did without a bound: consumption.rows of the month and
       rendering.render in each format (time and size), and the seconds per row it took
       (consumption.SECONDS_PER_ROW["hour"]); the same of period=day from rollups rebuilt for
       --rollup-meters meters (SECONDS_PER_ROW["day"]);
     - after: the route's 413 in each format (median of --repeats), GET /file?period=hour's 202, and the
       job run to its end by tools/local_worker.py's loop in this process (its time, messages, file
       size), checked byte for byte against the synchronous file (exports.SYNC_SECONDS lifted).
Usage: .venv/bin/python bench/bench_answer_bounds.py [--meters 300] [--repeats 3] [--rollup-meters 30]
"""
import argparse
import hashlib
import json
import os
import statistics
import time
import urllib.parse
from datetime import date

import bench_env

bench_env.in_process_aws()

FORMATS = ("json", "xml", "yaml")
MARCH = 1772323200                 # 2026-03-01T00:00:00Z
TYPICAL = "suite-101"
WIDEST = 'Suite "A" <east> & café ' + "x" * 40      # 64 characters, escaped in every format


def shapes(name):
    """A row of each listing route's answer, with a meter (or user, key) named name."""
    from datetime import datetime

    stamp = datetime(2026, 3, 1, 12, 5)
    return {
        "GET /consumption": {"MeterParam": name, "PeriodStart": "2026-03-01T00:00:00-05:00",
                             "PeriodEnd": "2026-03-01T01:00:00-05:00", "value": 12.345678, "Coverage": 1.0,
                             "PeakDemand": 51.2},
        "GET /point": {"id": 1234, "MeterId": name, "ModbusId": 17, "Port": "USB0", "NoPhases": "3",
                       "MeterType": "I-45/MFX/636", "ModbusMap": "Priority.ici", "SaveEvery": 5,
                       "startAddress": 1100, "Parent": "main-incomer"},
        "GET /data": {"MeterParam": name, "TimeStamping": stamp, "value": 28540.24},
        "GET /user": {"uuid": 12, "username": name, "email": "someone@example.com", "joined": stamp},
        "GET /status (meter)": {"MeterParam": name, "LastReading": stamp, "State": "ok", "Coverage24h": 0.998},
    }


def row_sizes():
    from chalicelib.metering import consumption
    from chalicelib.platform import answers

    print("\n== 1. Bytes per row as Lambda counts them, and the most rows one answer holds "
          f"(bound {answers.ANSWER_MAX_BYTES:,} bytes, ~{answers.WORK_MAX_SECONDS:g} s)")
    print(f"{'rows of':<22}{'name':<9}" + "".join(f"{fmt + ' B/row':>12}{'rows':>9}" for fmt in FORMATS))
    for label in shapes(TYPICAL):
        for kind, name in (("typical", TYPICAL), ("widest", WIDEST)):
            row = shapes(name)[label]
            cost = consumption.seconds_per_row("hour") if label == "GET /consumption" else 0.0
            cells = ""
            for fmt in FORMATS:
                _empty, per_row = answers.row_cost(row, fmt)
                cells += f"{per_row:>12,}{answers.most_rows(row, fmt, cost):>9,}"
            print(f"{label:<22}{kind:<9}{cells}")
    print("(GET /consumption's rows also cost consumption.SECONDS_PER_ROW['hour'] each to compute: its "
          "limits are those of hourly rows)")


def render_costs(repeats):
    from chalicelib.platform import rendering

    print(f"\n== 2. Rendering seconds per value (median of {repeats}; answers.RENDER_SECONDS_PER_VALUE)")
    for label, rows in (("GET /consumption", 20_000), ("GET /point", 10_000)):
        sample = shapes(TYPICAL)[label]
        data = [dict(sample) for _ in range(rows)]
        values = rows * len(sample)
        cells = []
        for fmt in FORMATS:
            n = data if fmt != "yaml" else data[:rows // 5]
            times = []
            for _ in range(repeats):
                started = time.perf_counter()
                rendering.render(n, fmt)
                times.append(time.perf_counter() - started)
            cells.append(f"{fmt} {statistics.median(times) / (len(n) * len(sample)) * 1e6:.2f} µs")
        print(f"{label:<22} ({values:,} values): " + ", ".join(cells))


def payload(body):
    from chalicelib.platform import answers

    return answers.payload_bytes(body.decode() if isinstance(body, bytes) else body)


def build(meters_count):
    from chalicelib.identity import accounts
    from tests.building import build as build_building

    project = accounts.create_project("building", "UTC")["project_id"]
    _view, key = accounts.create_user(project, "bench-user", "bench password 123", "b@example.com")
    started = time.perf_counter()
    made = build_building(project, meters_count, MARCH, 31)
    print(f"\n== 3. The building: {meters_count} meters x 31 days of 5-minute readings "
          f"({meters_count * 31 * 288:,} readings), built in {time.perf_counter() - started:.0f} s")
    return project, key, made


def before(project, rollup_meters):
    from zoneinfo import ZoneInfo

    from chalicelib.identity import accounts
    from chalicelib.metering import consumption, meters, rollups
    from chalicelib.platform import rendering

    zone = ZoneInfo("UTC")
    chosen = meters.all_meters(project)
    started = time.perf_counter()
    rows = list(consumption.rows(project, chosen, zone, date(2026, 3, 1), date(2026, 3, 31), "hour"))
    computed = time.perf_counter() - started
    print(f"before: GET /consumption?period=hour, 2026-03-01..31, all meters, unbounded: {len(rows):,} rows "
          f"computed in {computed:.1f} s ({computed / len(rows) * 1e6:.0f} µs a row)")
    for fmt in FORMATS:
        started = time.perf_counter()
        body, _media = rendering.render(rows, fmt)
        rendered = time.perf_counter() - started
        print(f"  {fmt:<5} rendered in {rendered:6.1f} s: {payload(body) / 1e6:6.1f} MB as Lambda counts it "
              f"({payload(body) / len(rows):.0f} B a row); the route's total {computed + rendered:.1f} s")
    zone_name = accounts.project_zone(project)
    some = chosen[:rollup_meters]
    for meter in some:
        rollups.rebuild(project, zone_name, meter["meter_id"])
    started = time.perf_counter()
    day_rows = list(consumption.rows(project, some, zone, date(2026, 3, 1), date(2026, 3, 31), "day"))
    spent = time.perf_counter() - started
    print(f"period=day from rollups, {len(some)} meters: {len(day_rows):,} rows in {spent:.2f} s "
          f"({spent / len(day_rows) * 1e6:.0f} µs a row)")


def after(client, key, repeats, env):
    import boto3

    from app import export_worker
    from chalicelib.outputs import exports
    from tools import local_worker

    headers = {"X-API-Key": key}
    query = {"start": "2026-03-01", "end": "2026-03-31", "period": "hour"}
    for fmt in FORMATS:
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            answer = client.http.get("/consumption?" + urllib.parse.urlencode({**query, "responseType": fmt}),
                                     headers=headers)
            times.append(time.perf_counter() - started)
        print(f"after: GET /consumption {fmt:<5} {answer.status_code} in {statistics.median(times) * 1000:.0f} ms, "
              f"{payload(answer.body):,} bytes")
        if fmt == "json" and answer.status_code == 413:
            print(f"  its error: {json.loads(answer.body)['error']}")
    started = time.perf_counter()
    answer = client.http.get("/file?" + urllib.parse.urlencode({**query, "type": "csv"}), headers=headers)
    print(f"after: GET /file?period=hour&type=csv {answer.status_code} in {time.perf_counter() - started:.2f} s, "
          f"Retry-After {answer.headers.get('Retry-After')}")
    if answer.status_code != 202:
        return
    location = answer.headers["Location"]
    sqs = boto3.client("sqs", region_name="us-east-1")
    started = time.perf_counter()
    handled, failed = local_worker.drain(sqs, env["EXPORT_QUEUE_URL"], export_worker)
    spent = time.perf_counter() - started
    done = client.http.get(location, headers=headers)
    job_file = download(json.loads(done.body)["url"])
    print(f"  the job: {handled} messages ({failed} failed) in {spent:.1f} s one after the other (the workers run "
          f"side by side in AWS); {done.status_code}, a {len(job_file) / 1e6:.1f} MB file")
    exports.SYNC_SECONDS = 10 ** 9
    started = time.perf_counter()
    sync = client.http.get("/file?" + urllib.parse.urlencode({**query, "type": "csv"}), headers=headers)
    sync_file = download(json.loads(sync.body)["url"])
    print(f"  the synchronous file (no bound) in {time.perf_counter() - started:.1f} s: same bytes: "
          f"{hashlib.sha256(sync_file).hexdigest() == hashlib.sha256(job_file).hexdigest()}")


def download(url):
    import boto3

    parsed = urllib.parse.urlparse(url)
    bucket, key = parsed.path.lstrip("/").split("/", 1) if parsed.netloc.startswith("s3") else \
        (parsed.netloc.split(".")[0], parsed.path.lstrip("/"))
    return boto3.client("s3", region_name="us-east-1").get_object(Bucket=bucket, Key=urllib.parse.unquote(key))["Body"].read()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rollup-meters", type=int, default=30)
    args = parser.parse_args()
    from chalice.test import Client

    from bench_layout import stack

    row_sizes()
    render_costs(args.repeats)
    with stack():
        from app import app

        env = {k: v for k, v in os.environ.items() if k.endswith(("_TABLE", "_URL"))}
        project, key, _made = build(args.meters)
        before(project, args.rollup_meters)
        with Client(app, stage_name="local") as client:
            after(client, key, args.repeats, env)


if __name__ == "__main__":
    main()
