"""DynamoDB calls of GET /data and GET /interval with 1 day against 1 year of history: must be equal.

Two projects of --meters meters each, one with a day of 5-minute readings per meter, the other with a
year; each route is called through the Chalice test client and every DynamoDB call it makes is
counted by operation (botocore event hooks on the client chalicelib uses), with the items answered
and the wall time (median of --repeats). Exits 1 when a count differs or a Scan appears.
Usage: .venv/bin/python bench/bench_data_calls.py [--meters 3] [--repeats 5]
"""
import argparse
import json
import platform
import sys
import time

from bench_layout import DynamoCounter, fill_days, make_meter, median_time, new_project, stack


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from chalice.test import Client

    from app import app

    with stack(), Client(app, stage_name="local") as client:
        started = time.perf_counter()
        keys = {}
        for label, days in (("1 day", 1), ("1 year", 366)):
            project_id, key = new_project(f"history-{days}")
            for m in range(args.meters):
                make_meter(project_id, f"meter{m + 1}")
                fill_days(project_id, f"meter{m + 1}", days)
            keys[label] = key
        print(f"python {platform.python_version()}, moto in-process, {args.meters} meters per project "
              f"(setup {time.perf_counter() - started:.0f} s), median of {args.repeats} calls\n")
        print("| route | history | DynamoDB calls | by operation | items read | rows | wall (ms) |")
        print("|---|---|---|---|---|---|---|")
        failed = False
        for path in ("/data", "/interval"):
            seen = {}
            for label, key in keys.items():
                def call():
                    answer = client.http.get(path, headers={"X-API-Key": key})
                    assert answer.status_code == 200, answer.body
                    return json.loads(answer.body)

                with DynamoCounter() as counter:
                    rows = call()
                seconds, _rows = median_time(call, args.repeats)
                calls = dict(sorted(counter.calls.items()))
                seen[label] = calls
                failed |= "Scan" in calls or len(rows) != args.meters
                print(f"| GET {path} | {label} | {sum(calls.values())} | {calls} | {counter.items} | {len(rows)} "
                      f"| {seconds * 1000:.1f} |")
            equal = len({json.dumps(c) for c in seen.values()}) == 1
            failed |= not equal
            print(f"| GET {path} | equal | {'yes' if equal else 'NO'} | | | | |")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
