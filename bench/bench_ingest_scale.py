"""POST /data at building scale, through the route (Chalice test client) over in-process moto.

Two loads of a 300-meter site:
  - live: the agent pushes every minute one request of 300 readings (one per meter). Measured at three
    moments of the UTC day (its first minutes, midday, the last minutes), because each push rewrites
    every meter's day item, which grows through the day (12 bytes a reading): its write units grow too.
  - catch-up: a 1-week outage of 300 meters at 5 minutes (604,800 readings) sent in batches of 1000.
    The order the readings are batched in decides how many day items each batch rewrites: time-major
    (every meter's next readings, as an outbox drained by time gives them) rewrites ~300 day items per
    batch; meter-major (one meter's readings, then the next) rewrites 4-5. Both are measured on a
    sample of --sample-batches batches (of the week's 605) and scaled to the week.
For each: requests, time per request (median) and in total, DynamoDB calls, write units (WCU) and
read units (RCU) computed from the sizes of the items written and read (DynamoDB's rules: 1 WCU per
KB written, rounded up, also for a failed conditional write; 1 RCU per 4 KB strongly consistent).
The baseline of the same run is the first minutes of the day (the smallest items).
Usage: .venv/bin/python bench/bench_ingest_scale.py [--meters 300] [--sample-batches 6] [--minutes 2]
"""
import argparse
import json
import math
import os
import statistics
import sys
import time
from datetime import datetime, timezone

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_layout import new_project, number_size, stack  # noqa: E402

DAY0 = int(datetime(2026, 3, 2, tzinfo=timezone.utc).timestamp())


def typed_size(item):
    """DynamoDB's size of a typed item (names + values)."""
    total = 0
    for name, value in item.items():
        (kind, raw), = value.items()
        total += len(name.encode())
        if kind == "S":
            total += len(raw.encode())
        elif kind == "N":
            total += number_size(raw)
        elif kind == "B":
            total += len(raw)
        elif kind == "M":
            total += 3 + typed_size(raw)
        else:
            total += 1
    return total


class Units:
    """DynamoDB calls and the capacity units their items cost (from the request and answer sizes)."""

    def __init__(self):
        self.calls, self.wcu, self.rcu, self.items_written = {}, 0, 0.0, 0

    def before(self, params, model, **_):
        self.calls[model.name] = self.calls.get(model.name, 0) + 1
        if model.name == "PutItem":
            self.wcu += max(1, math.ceil(typed_size(params["Item"]) / 1024))
            self.items_written += 1
        elif model.name == "UpdateItem":
            self.wcu += 1           # the meter item (latest reading, interval) is under 1 KB

    def after(self, parsed=None, model=None, **_):
        if model is not None and model.name == "BatchGetItem":
            for items in (parsed or {}).get("Responses", {}).values():
                self.rcu += sum(max(1, math.ceil(typed_size(i) / 4096)) for i in items)

    def attach(self):
        from chalicelib.platform import aws

        events = aws.dynamodb().meta.events
        events.register("before-parameter-build.dynamodb.*", self.before)
        events.register("after-call.dynamodb.*", self.after)
        return self


def post(client, key, batch):
    answer = client.http.post("/data", headers={"X-API-Key": key, "Content-Type": "application/json"},
                              body=json.dumps({"readings": batch}))
    assert answer.status_code == 200, answer.body
    receipt = json.loads(answer.body)
    assert receipt["accepted"] == len(batch) and not receipt["rejected"], receipt
    return answer


def stamp(epoch):
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def seed_day(project_id, names, upto, step):
    """Readings of the UTC day of DAY0 before `upto`, written as ingest lays them out (one item per meter)."""
    from chalicelib.metering import meters, readings
    from chalicelib.platform import db
    from chalicelib.tables import readings_table

    for name in names:
        meter = meters.find(project_id, name=name)
        series = readings_table.series_key(project_id, meter["meter_id"])
        slots = {s: 1000.0 + s / 3600 for s in range(0, upto - DAY0, step)}
        if slots:
            db.put(readings_table.NAME, readings.day_item(series, "2026-03-02", slots))


def live(client, project_id, key, names, minutes, at):
    """`minutes` pushes of one reading per meter at minute `at` of the day onward: (times, units)."""
    from chalicelib.platform import aws

    seed_day(project_id, names, DAY0 + at * 60, 60)
    units = Units().attach()
    times = []
    for m in range(at, at + minutes):
        batch = [{"MeterId": n, "TimeStamping": stamp(DAY0 + m * 60), "value": 1000.0 + m / 60} for n in names]
        started = time.perf_counter()
        post(client, key, batch)
        times.append(time.perf_counter() - started)
    aws.dynamodb().meta.events.unregister("before-parameter-build.dynamodb.*", units.before)
    aws.dynamodb().meta.events.unregister("after-call.dynamodb.*", units.after)
    return times, units


WEEK_BATCHES = 605   # 604,800 readings in batches of 1000


def catch_up(client, project_id, key, names, order, batches):
    """`batches` batches of 1000 of a 1-week backfill of 5-minute readings, in an order (see the docstring).

    time-major: the batches from 12:00 of the outage's first day, the day items already holding the
    morning (so they are of a day's average size); meter-major: the first batches (each is one meter's
    next 3.5 days, every batch alike)."""
    from chalicelib.platform import aws

    week = range(0, 7 * 86400, 300)
    if order == "time":
        seed_day(project_id, names, DAY0 + 43200, 300)
        readings = [(DAY0 + s, n) for s in week if s >= 43200 for n in names]
    else:
        readings = [(DAY0 + s, n) for n in names for s in week]
    readings = readings[:batches * 1000]
    units = Units().attach()
    times = []
    for i in range(0, len(readings), 1000):
        batch = [{"MeterId": n, "TimeStamping": stamp(t), "value": 5000.0 + (t - DAY0) / 3600}
                 for t, n in readings[i:i + 1000]]
        started = time.perf_counter()
        post(client, key, batch)
        times.append(time.perf_counter() - started)
    aws.dynamodb().meta.events.unregister("before-parameter-build.dynamodb.*", units.before)
    aws.dynamodb().meta.events.unregister("after-call.dynamodb.*", units.after)
    return times, units, len(readings)


def project_with_meters(label, count, save_every):
    from chalicelib.metering import meters

    project_id, key = new_project(label)
    names = [f"suite-{i:03d}" for i in range(count)]
    for n in names:
        meters.register(project_id, {"MeterId": n, "SaveEvery": save_every})
    return project_id, key, names


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=300)
    parser.add_argument("--sample-batches", type=int, default=6, help="catch-up batches measured of the 605")
    parser.add_argument("--minutes", type=int, default=2, help="pushes measured at each moment of the day")
    parser.add_argument("--parts", default="live,time,meter", help="live, time (-major catch-up), meter (-major)")
    args = parser.parse_args()
    parts = args.parts.split(",")
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ.pop("AWS_ENDPOINT_URL", None)
    import time_machine
    from chalice.test import Client

    from app import app

    print(f"ingest at building scale: {args.meters} meters, in-process moto, Python {sys.version.split()[0]}")
    # the system's clock, which the cloud reads: a month after the readings (and running on)
    with time_machine.travel(DAY0 + 30 * 86400, tick=True), stack():
        # every project and meter first: moto copies the tables for each transaction (registration),
        # which grows slow once they hold readings
        moments = (("first minutes (00:00)", 0), ("midday (12:00)", 720), ("last minutes (23:50)", 1430))
        live_projects = [project_with_meters(f"live{at}", args.meters, 1) for _l, at in moments] \
            if "live" in parts else []
        orders = [o for o in ("time", "meter") if o in parts]
        catch_projects = [project_with_meters(f"catchup-{o}", args.meters, 5) for o in orders]
        with Client(app, stage_name="local") as client:
            if live_projects:
                print("\nlive: one POST /data a minute with one reading of every meter")
                print(f"{'moment of the UTC day':<24}{'requests':>9}{'median s':>10}{'WCU/req':>9}{'RCU/req':>9}"
                      f"{'calls/req':>10}")
            baseline = None
            for (label, at), (project_id, key, names) in zip(moments, live_projects):
                times, units = live(client, project_id, key, names, args.minutes, at)
                median = statistics.median(times)
                baseline = baseline or median
                print(f"{label:<24}{len(times):>9}{median:>10.3f}{units.wcu / len(times):>9.0f}"
                      f"{units.rcu / len(times):>9.0f}{sum(units.calls.values()) / len(times):>10.0f}"
                      f"   x{median / baseline:.2f} time of the first minutes")
            scale = WEEK_BATCHES / args.sample_batches
            if orders:
                print(f"\ncatch-up of a 1-week outage ({args.meters} meters x 2016 readings), batches of 1000: "
                      f"{args.sample_batches} batches measured, scaled x{scale:g} to the week's {WEEK_BATCHES}")
                print(f"{'batch order':<14}{'requests':>9}{'median s':>10}{'total s':>9}{'items written':>14}"
                      f"{'WCU':>11}{'RCU':>10}{'readings/s':>11}")
            for order, (project_id, key, names) in zip(orders, catch_projects):
                times, units, count = catch_up(client, project_id, key, names, order, args.sample_batches)
                print(f"{order + '-major':<14}{len(times) * scale:>9.0f}{statistics.median(times):>10.3f}"
                      f"{sum(times) * scale:>9.0f}{units.items_written * scale:>14,.0f}{units.wcu * scale:>11,.0f}"
                      f"{units.rcu * scale:>10,.0f}{count / sum(times):>11,.0f}")


if __name__ == "__main__":
    main()
