"""Benchmark of GET /status (every meter's state and 24-hour coverage) against GET /data, same run, same project.

A project of N meters with a day of 5-minute readings each (two UTC day items per meter), in-process
moto, through the Chalice test client with a key. GET /data reads the meters only (one Query);
GET /status adds one Query per meter that reported in the last 24 hours. Prints medians and the
ratio, and the DynamoDB calls of each route (counted with a botocore event hook).

Run: .venv/bin/python bench/bench_status.py [--meters 100] [--repeat 5]
"""
import argparse
import os
import statistics
import time

import bench_env

bench_env.in_process_aws()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--meters", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    from chalice.test import Client
    from moto import mock_aws

    with mock_aws():
        from chalicelib.identity import accounts
        from chalicelib.metering import ingest, meters
        from chalicelib.platform import aws, clock
        from tools import provision

        aws.reset_clients()
        os.environ.update(provision.provision_local())
        project = accounts.create_project("bench", "UTC")
        _view, key = accounts.create_user(project["project_id"], "bench", "bench password 1", "b@example.com")
        now = int(clock.now()) // 300 * 300
        for m in range(args.meters):
            meters.register(project["project_id"], {"MeterId": f"m{m}", "SaveEvery": 5})
            batch = [{"MeterId": f"m{m}", "TimeStamping": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 300 * i)), "value": 10000.0 - i}
                     for i in range(288)]
            assert not ingest.ingest(project["project_id"], batch)["rejected"]

        calls: dict[str, int] = {}

        def count(event_name, **_kwargs):
            operation = event_name.split(".")[-1]
            calls[operation] = calls.get(operation, 0) + 1

        from app import app

        with Client(app, stage_name="local") as client:
            aws.dynamodb().meta.events.register("before-call.dynamodb", count)
            results = {}
            for path in ("/data", "/status"):
                times = []
                for _ in range(args.repeat):
                    calls.clear()
                    started = time.perf_counter()
                    answer = client.http.get(path, headers={"X-API-Key": key})
                    times.append(time.perf_counter() - started)
                    assert answer.status_code == 200, answer.body
                results[path] = (statistics.median(times), dict(calls))
            body = client.http.get("/status", headers={"X-API-Key": key}).json_body
            assert len(body["meters"]) == args.meters and all(m["Coverage24h"] == 1.0 for m in body["meters"])
    for path, (median, per_call) in results.items():
        print(f"GET {path:8} {args.meters} meters: median {median * 1000:7.1f} ms  DynamoDB calls {per_call}")
    print(f"GET /status / GET /data: {results['/status'][0] / results['/data'][0]:.1f}x")


if __name__ == "__main__":
    main()
