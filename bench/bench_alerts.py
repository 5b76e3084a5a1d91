"""Benchmark of one alert evaluation run: P projects × 10 rules, in-process moto, with baselines in the same run.

Each project has 5 meters (SaveEvery 5; readings since yesterday's local midnight, every 30 minutes, the
last hour every 5, with their rollups), an agent's report (PUT /status's item) and 10 rules checked and built
by PUT /alerts's logic (rules.check, rules.build): meter_silent ×3 (every meter; two single meters),
agent_silent ×2, usage_above ×5 (three per hour, two per day; every meter or one). In one project in a
hundred, one meter stopped reporting half an hour ago.

The data is stored in bulk (BatchWriteItem of the items the product builds: readings.day_item, the rule
items of rules.build, the meter and project items in their modules' shapes; rollups by
rollups.refresh_many; agents by status.report): moto copies a whole table for each TransactWriteItems,
so 10,000 transactions over a table of 20,000 items would take hours.

A run is what AWS does each minute: the schedule (app.alert_schedule: pages through the index of projects
with rules, queues them 50 a message), then the evaluation worker on each message (evaluator.handle_event,
app.alert_evaluator's body), timed together. Run 1 fires the silent meters' alerts (writes events, queues
deliveries); the steady runs change nothing (nothing is written). Every AWS call of the clients chalicelib
makes is counted by operation (botocore's before-call event), and the time spent inside them (in moto)
is told apart from the rest (our code and botocore's serialization): moto answers a Query by looking at
every item of the table and copies whole tables for a transaction, which DynamoDB does not.

moto answers a Query by sorting every item of the table (Table.all_items), so a Query's cost grows with the
whole table, never so in DynamoDB (a Query reads its partition). Unless --moto-as-is, the bench lets a
non-index Query see only its partition's items (moto's own code then does the rest: same answers, same
calls), so the figures at 1,000 projects measure the evaluator rather than moto's table sort. moto's copy
of whole tables for each TransactWriteItems stays (run 1 has a few; the time inside moto says how much).

Baselines, same data, same process:
  - floor: the Queries an evaluation cannot do without (each project's meters and agents), bare;
  - GET /status: status.overview for each project (what polling the API per project would cost to learn
    meter and agent states, without usage).

Run: .venv/bin/python bench/bench_alerts.py [--projects 1000] [--repeat 3] [--moto-as-is]
"""
import argparse
import json
import os
import statistics
import sys
import threading
import time
from collections import Counter
from datetime import timedelta

import bench_env

bench_env.in_process_aws()

METERS = 5
HOOK = "https://hooks.example.com/intellimeter"


def _iso(epoch):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _bulk(table_logical_id, items):
    """Store items as they are (BatchWriteItem, 25 a call)."""
    import boto3

    from chalicelib.platform import config, db

    table = boto3.resource("dynamodb", region_name="us-east-1").Table(config.resource_name(table_logical_id))
    with table.batch_writer() as writer:
        for item in items:
            writer.put_item(Item={k: v for k, v in (db._plain_to_ddb_value(item)).items() if v is not None})


RULES: tuple[dict, ...] = ({"kind": "meter_silent"}, {"kind": "meter_silent", "meter": "m0"}, {"kind": "meter_silent", "meter": "m1"},
         {"kind": "agent_silent", "minutes": 10}, {"kind": "agent_silent", "minutes": 60},
         {"kind": "usage_above", "period": "hour", "kWh": 50}, {"kind": "usage_above", "period": "hour", "kWh": 5, "meter": "m2"},
         {"kind": "usage_above", "period": "hour", "kWh": 500}, {"kind": "usage_above", "period": "day", "kWh": 500},
         {"kind": "usage_above", "period": "day", "kWh": 50, "meter": "m3"})


def setup(projects, now):
    """The projects, their meters and readings (and rollups), agents and rules; the project ids."""
    from chalicelib.alerts import rules
    from chalicelib.identity import auth
    from chalicelib.metering import days, readings, rollups, status
    from chalicelib.platform import clock
    from chalicelib.tables import accounts_table, meters_table, readings_table

    zone_name = "America/Toronto"
    zone = clock.zone(zone_name)
    # From yesterday's local midnight (a reading on it: no Query for what came before), every 30 minutes,
    # the last hour every 5.
    start = days.midnight(days.local_day(now, zone) - timedelta(days=1), zone)
    times = sorted(set(range(start, now - 3600, 1800)) | set(range(now - 3600, now + 1, 300)))
    project_items, meter_items, day_items, rule_items, index_items = [], [], [], [], []
    ids = []
    for p in range(projects):
        pid = 1 + p
        ids.append(pid)
        project_items.append({**accounts_table.project_key(pid), "project_id": pid, "name": f"bench{p}",
                              "timezone": zone_name, "created": clock.iso_utc(timespec="auto")})
        meters_of: list[dict] = []
        for m in range(METERS):
            meter_id = pid * 100 + m
            stopped = p % 100 == 0 and m == 0
            kept = [t for t in times if not (stopped and t > now - 1800)]
            values = {t: 1000.0 + 0.1 * i * (m + 1) for i, t in enumerate(kept)}
            meter = {**meters_table.meter_key(pid, meter_id), "meter_id": meter_id, "project_id": pid,
                     "site_name": f"m{m}", "name": f"m{m}", "SaveEvery": 5, "latest_time": kept[-1],
                     "latest_value": values[kept[-1]]}
            meter_items.append(meter)
            meters_of.append(meter)
            series = readings_table.series_key(pid, meter_id)
            by_day: dict = {}
            for t, v in values.items():
                day, slot = readings.day_slot(t)
                by_day.setdefault(day, {})[slot] = v
            day_items += [readings.day_item(series, day, slots) for day, slots in by_day.items()]
        ids_of = []
        for n, body in enumerate(RULES):
            draft = rules.check({**body, "webhook": HOOK})
            watched = next((m for m in meters_of if m["name"] == draft.meter), None)
            item, _secret = rules.build(pid, pid * 100 + n, draft, watched)
            rule_items.append(item)
            ids_of.append(item["alert_id"])
        index_items.append({**accounts_table.alerting_key(pid), "alert_ids": set(ids_of)})
    for logical_id, items in (("AccountsTable", project_items), ("MetersTable", meter_items),
                              ("ReadingsTable", day_items), ("AccountsTable", rule_items),
                              ("AccountsTable", index_items)):
        _bulk(logical_id, items)
    for n, pid in enumerate(ids):
        plans = {pid * 100 + m: rollups.Plan(times, None, max(times)) for m in range(METERS)}
        rollups.refresh_many(pid, zone, plans, {meter_id: () for meter_id in plans})
        status.report(auth.Caller(pid, scope="ingest", key_id=pid, label="site agent"), {"time": _iso(now)})
        if (n + 1) % 100 == 0:
            print(f"  set up {n + 1}/{projects} projects", file=sys.stderr, flush=True)
    return ids


class Calls:
    """AWS calls by service and operation, counted on every client chalicelib's aws module hands out, and the
    seconds spent inside them (moto's own work, in process)."""

    def __init__(self):
        from chalicelib.platform import aws

        self.counts: Counter[str] = Counter()
        self.inside = 0.0
        self.inside_cpu = 0.0
        self._started = self._started_cpu = 0.0
        self._active = 0                  # calls inside moto now: chunks of one BatchGetItem run at once (db.in_parallel)
        self._lock = threading.Lock()
        for client in (aws.dynamodb(), aws.sqs(), aws.kms(), aws.sns(), aws.s3()):
            client.meta.events.register("before-call", self._count)
            client.meta.events.register_first("before-send", self._send)       # before moto answers it
            client.meta.events.register_last("before-send", self._sent)        # after

    def _count(self, event_name, **_kwargs):
        _, service, operation = event_name.split(".")
        self.counts[f"{service}.{operation}"] += 1

    def _send(self, **_kwargs):
        """Time inside moto is counted while at least one call is in it (calls made at once overlap: summing
        each call's time would count the process's CPU once per thread)."""
        with self._lock:
            if self._active == 0:
                self._started, self._started_cpu = time.perf_counter(), time.process_time()
            self._active += 1

    def _sent(self, **_kwargs):
        with self._lock:
            self._active -= 1
            if self._active == 0:
                self.inside += time.perf_counter() - self._started
                self.inside_cpu += time.process_time() - self._started_cpu

    def take(self):
        """(calls by operation, seconds inside moto, CPU seconds inside moto) since the last take."""
        taken, inside, inside_cpu = dict(sorted(self.counts.items())), self.inside, self.inside_cpu
        self.counts.clear()
        self.inside = self.inside_cpu = 0.0
        return taken, inside, inside_cpu


class _Record:
    def __init__(self, body):
        self.body = body


def one_run():
    """The schedule and every evaluation message it queued; (seconds, events written, CPU seconds)."""
    from app import alert_schedule
    from chalicelib.alerts import evaluator
    from chalicelib.platform import aws, config

    sqs = aws.sqs()
    queue = config.resource_name("AlertEvaluationQueue")
    started, cpu = time.perf_counter(), time.process_time()
    alert_schedule({"version": "0", "account": "123456789012", "region": "us-east-1", "detail": {},
                    "detail-type": "Scheduled Event", "source": "aws.events", "time": "", "id": "bench",
                    "resources": []}, None)
    written = 0
    while True:
        got = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
        if not got:
            break
        for message in got:
            written += evaluator.handle_event([_Record(message["Body"])])
            sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
    return time.perf_counter() - started, written, time.process_time() - cpu


def floor_run(ids):
    from chalicelib.metering import meters
    from chalicelib.tables import accounts_table

    started = time.perf_counter()
    for pid in ids:
        meters.all_meters(pid)
        list(accounts_table.project_items(pid, accounts_table.AGENT))
    return time.perf_counter() - started


def status_run(ids):
    from chalicelib.metering import status

    started = time.perf_counter()
    for pid in ids:
        status.overview(pid)
    return time.perf_counter() - started


def partition_scoped_queries():
    """Make moto's non-index Query look at its partition only (its all_items otherwise sorts the whole table)."""
    from moto.dynamodb.models.dynamo_type import DynamoType
    from moto.dynamodb.models.table import Table

    whole_table, query = Table.all_items, Table.query

    def scoped_query(self, hash_key, *args, **kwargs):
        if kwargs.get("index_name", args[6] if len(args) > 6 else None) or hash_key is None:
            return query(self, hash_key, *args, **kwargs)
        self.bench_partition = hash_key
        try:
            return query(self, hash_key, *args, **kwargs)
        finally:
            del self.bench_partition

    def all_items(self):
        partition = getattr(self, "bench_partition", None)
        if partition is None:
            return whole_table(self)
        found = self.items.get(partition if isinstance(partition, DynamoType) else DynamoType(partition)) or {}
        return sorted(found.values(), key=lambda item: item.range_key) if self.range_key_attr else [found]

    Table.query = scoped_query          # type: ignore[method-assign]  # moto's, for this process only
    Table.all_items = all_items         # type: ignore[method-assign]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--projects", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--moto-as-is", action="store_true", help="leave moto's whole-table Query as it is")
    args = parser.parse_args()

    from moto import mock_aws

    if not args.moto_as_is:
        partition_scoped_queries()

    with mock_aws():
        from chalicelib.platform import aws, clock
        from tools import provision

        aws.reset_clients()
        os.environ.update(provision.provision_local())
        now = int(clock.now()) // 300 * 300
        began = time.perf_counter()
        ids = setup(args.projects, now)
        print(f"setup: {args.projects} projects in {time.perf_counter() - began:.0f} s", file=sys.stderr)
        calls = Calls()
        first = one_run()
        first_calls, first_inside, first_inside_cpu = calls.take()
        steady, floors, statuses = [], [], []
        for _ in range(args.repeat):
            seconds, written, cpu = one_run()
            assert written == 0, "a steady run writes nothing"
            steady_calls, inside, inside_cpu = calls.take()
            steady.append((seconds, cpu, inside, inside_cpu))
            floor = floor_run(ids)
            floors.append((floor, *calls.take()))
            status = status_run(ids)
            statuses.append((status, *calls.take()))
    median = statistics.median
    run, cpu, inside, inside_cpu = (median(row[n] for row in steady) for n in range(4))
    floor, floor_inside = median(row[0] for row in floors), median(row[2] for row in floors)
    status, status_inside = median(row[0] for row in statuses), median(row[2] for row in statuses)
    dynamodb = sum(v for k, v in steady_calls.items() if k.startswith("dynamodb."))
    print(f"alert evaluation, {args.projects} projects x {len(RULES)} rules ({len(RULES) * args.projects} rules, "
          f"{METERS} meters each), in-process moto; "
          + ("moto's Query as it is (whole-table sort)" if args.moto_as_is else
             "moto's non-index Query scoped to its partition") + f"; load average {os.getloadavg()[0]:.1f}")
    print(f"  run 1 (fires {first[1]} events): {first[0]:7.2f} s, {first[2]:.2f} s CPU ({first_inside_cpu:.2f} s CPU "
          f"inside moto); AWS calls {json.dumps(first_calls)}")
    print(f"  steady run, median of {args.repeat}: {run:7.2f} s, {cpu:.2f} s CPU: {inside_cpu:.2f} s inside moto, "
          f"{cpu - inside_cpu:.2f} s outside (the evaluator and botocore); AWS calls {json.dumps(steady_calls)}")
    print(f"    {dynamodb / args.projects:.2f} DynamoDB calls a project; {cpu / args.projects * 1000:.2f} ms CPU a project, "
          f"{(cpu - inside_cpu) / args.projects * 1000:.2f} ms of it outside moto")
    print(f"  baseline floor (each project's meters and agents queried bare): {floor:7.2f} s ({floor_inside:.2f} s "
          f"inside moto); {json.dumps(floors[-1][1])}")
    print(f"  baseline GET /status's logic for each project:                 {status:7.2f} s ({status_inside:.2f} s "
          f"inside moto); {json.dumps(statuses[-1][1])}")
    print(f"  steady run / floor: {run / floor:.2f}x; steady run / GET /status for each project: {run / status:.2f}x "
          f"(wall-clock medians of the same run)")


if __name__ == "__main__":
    main()
