"""Readings layout: one packed item per meter per UTC day (as built) against one item per reading, and
against day items holding a map of readings (the layout built first, replaced by the packed one).

A meter-year of 5-minute readings (105,120) is written in each layout into in-process moto and read
back whole --repeats times; the figures are medians. The built layout is read through the code the
routes use (chalicelib.metering.readings.series); the others from throwaway tables: (meter, ts) → v paged by
1 MB as DynamoDB pages it, and (meter, day) → r {"HHMMSS": value} read as the first build did.

Also printed: item sizes and capacity units by DynamoDB's documented sizing rules (attribute names +
values; a number takes 1 byte per 2 significant digits + 1; a map 3 bytes + 1 per entry; binary its
length), for the
write side (WCU per reading, live and in batches) and the read side (RCU of a meter-year export).

This module also holds the in-process stack the other data benches use (bench_data_calls,
bench_export_route, bench_graphics_route import it).
Usage: .venv/bin/python bench/bench_layout.py [--days 366] [--repeats 3]
"""
import argparse
import contextlib
import math
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
for _name, _value in (("AWS_DEFAULT_REGION", "us-east-1"), ("AWS_ACCESS_KEY_ID", "bench"),
                      ("AWS_SECRET_ACCESS_KEY", "bench")):
    os.environ.setdefault(_name, _value)
os.environ.pop("AWS_ENDPOINT_URL", None)
os.environ.pop("AWS_PROFILE", None)

YEAR_START = int(datetime(2025, 1, 1, tzinfo=timezone.utc).timestamp())
STEP = 300
PER_DAY = 86400 // STEP


# ---- the in-process stack (shared with the other data benches) -----------------------------------

@contextlib.contextmanager
def stack():
    """In-process moto with every resource of infra/resources.yaml, named as the local stage names them."""
    from moto import mock_aws

    from chalicelib.platform import aws
    from tools import provision

    with mock_aws():
        aws.reset_clients()
        os.environ.update(provision.provision_local())
        yield
        aws.reset_clients()


def new_project(name, zone="UTC"):
    """(project id, API key) of a new project with one account."""
    from chalicelib.identity import accounts

    project = accounts.create_project(name, zone)
    _view, key = accounts.create_user(project["project_id"], f"{name}-user", "bench password 123", "b@example.com")
    return project["project_id"], key


def value_at(i):
    """The register after i steps: a plausible cumulative kWh with 2 decimals."""
    return Decimal(28540 + i * 0.37).quantize(Decimal("0.01"))


def reading(meter_name, i, start=YEAR_START):
    return {"MeterId": meter_name, "TimeStamping": datetime.fromtimestamp(start + i * STEP, timezone.utc)
            .strftime("%Y-%m-%dT%H:%M:%SZ"), "value": str(value_at(i))}


def fill_days(project_id, meter_name, days, start=YEAR_START):
    """Write `days` days of 5-minute readings of a meter as ingest lays them out: one PutItem per day item.

    Ingest (1000 readings a call) takes ~80 s for a year under moto; this takes a few. The first day
    goes through chalicelib.metering.ingest.ingest and the item it wrote is checked against the one built
    here, and the last day goes through ingest too, so the meter's latest reading and interval are set.
    """
    from chalicelib.metering import ingest, meters, readings
    from chalicelib.platform import db
    from chalicelib.tables import readings_table

    meter = meters.find(project_id, name=meter_name)
    series = readings_table.series_key(project_id, meter["meter_id"])
    ingest.ingest(project_id, [reading(meter_name, i, start) for i in range(PER_DAY)])

    def day_item(d):
        first = d * PER_DAY
        day = datetime.fromtimestamp(start + first * STEP, timezone.utc).strftime("%Y-%m-%d")
        return readings.day_item(series, day, {(start + i * STEP) % 86400: value_at(i)
                                               for i in range(first, first + PER_DAY)})

    written = db.to_ddb(db.get(readings_table.NAME, {"meter": series, "day": day_item(0)["day"]}) or {})
    assert written == db.to_ddb(day_item(0)), "the bench's day item differs from what ingest writes"
    for d in range(1, days - 1):
        db.put(readings_table.NAME, day_item(d))
    if days > 1:
        last = (days - 1) * PER_DAY
        ingest.ingest(project_id, [reading(meter_name, i, start) for i in range(last, last + PER_DAY)])
    return meter


def make_meter(project_id, name="meter1"):
    from chalicelib.metering import meters

    return meters.register(project_id, {"MeterId": name, "SaveEvery": 5})


class DynamoCounter:
    """Counts DynamoDB calls by operation, and the items Query/BatchGetItem/GetItem answered."""

    def __init__(self):
        from collections import Counter

        self.calls: Counter = Counter()
        self.items = 0

    def before(self, event_name, **_kwargs):
        self.calls[event_name.rsplit(".", 1)[-1]] += 1

    def after(self, event_name, parsed=None, **_kwargs):
        parsed = parsed or {}
        if "Items" in parsed:
            self.items += len(parsed["Items"])
        elif "Responses" in parsed:
            self.items += sum(len(v) for v in parsed["Responses"].values())
        elif "Item" in parsed:
            self.items += 1

    def __enter__(self):
        from chalicelib.platform import aws

        events = aws.dynamodb().meta.events
        events.register("before-call.dynamodb.*", self.before)
        events.register("after-call.dynamodb.*", self.after)
        return self

    def __exit__(self, *_exc):
        from chalicelib.platform import aws

        events = aws.dynamodb().meta.events
        events.unregister("before-call.dynamodb.*", self.before)
        events.unregister("after-call.dynamodb.*", self.after)


class MotoTimer:
    """Seconds spent inside moto (the stand-in for the AWS services) while the block runs.

    The rest of the wall time is the client's: botocore serialising requests and parsing answers,
    boto3's type conversion and our code, what a Lambda function spends too (network aside).
    """

    def __init__(self):
        self.seconds = 0.0

    def __enter__(self):
        from moto.core import botocore_stubber

        stubber_class: Any = botocore_stubber.BotocoreStubber   # its method is wrapped while the block runs
        self._cls = stubber_class
        self._original = original = self._cls.process_request
        timer = self

        def timed(stubber, request):
            started = time.perf_counter()
            try:
                return original(stubber, request)
            finally:
                timer.seconds += time.perf_counter() - started

        self._cls.process_request = timed
        return self

    def __exit__(self, *_exc):
        self._cls.process_request = self._original


def median_time(fn, repeats):
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


# ---- DynamoDB item sizes (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/CapacityUnitCalculations.html)

def number_size(value):
    digits = Decimal(value).normalize().as_tuple().digits
    return math.ceil(len(digits) / 2) + 1


def value_size(value):
    if isinstance(value, str):
        return len(value.encode())
    if isinstance(value, bytes):
        return len(value)
    if isinstance(value, dict):
        return 3 + sum(1 + len(k.encode()) + value_size(v) for k, v in value.items())
    return number_size(value)


def item_size(item):
    return sum(len(k.encode()) + value_size(v) for k, v in item.items())


def wcu(size):
    return math.ceil(size / 1024)


# ---- the comparison ------------------------------------------------------------------------------

PER_READING_TABLE = "bench-readings-per-reading"
MAP_TABLE = "bench-readings-map-day"


def build_other_layouts(series_key, days):
    """The throwaway tables: one item per reading, and one item per day with a map of its readings."""
    from boto3.dynamodb.types import TypeSerializer

    from chalicelib.platform import aws

    client = aws.dynamodb()
    for name, keys in ((PER_READING_TABLE, [("meter", "S", "HASH"), ("ts", "N", "RANGE")]),
                       (MAP_TABLE, [("meter", "S", "HASH"), ("day", "S", "RANGE")])):
        client.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                            AttributeDefinitions=[{"AttributeName": a, "AttributeType": t} for a, t, _k in keys],
                            KeySchema=[{"AttributeName": a, "KeyType": k} for a, _t, k in keys])
    ser = TypeSerializer()
    batch = []
    for i in range(days * PER_DAY):
        batch.append({"PutRequest": {"Item": {"meter": {"S": series_key}, "ts": {"N": str(YEAR_START + i * STEP)},
                                              "v": {"N": str(value_at(i))}}}})
        if len(batch) == 25:
            client.batch_write_item(RequestItems={PER_READING_TABLE: batch})
            batch = []
    if batch:
        client.batch_write_item(RequestItems={PER_READING_TABLE: batch})
    for d in range(days):
        day = datetime.fromtimestamp(YEAR_START + d * 86400, timezone.utc).strftime("%Y-%m-%d")
        by_slot = {f"{datetime.fromtimestamp(YEAR_START + i * STEP, timezone.utc):%H%M%S}": value_at(i)
                   for i in range(d * PER_DAY, (d + 1) * PER_DAY)}
        client.put_item(TableName=MAP_TABLE, Item={"meter": ser.serialize(series_key), "day": ser.serialize(day),
                                                   "r": ser.serialize(by_slot)})


def read_per_reading(series_key, start, end):
    """(epoch, value) of a meter's readings from the one-item-per-reading table, paged by 1 MB."""
    from chalicelib.platform import aws, db

    args = {"TableName": PER_READING_TABLE, "KeyConditionExpression": "meter = :m AND ts BETWEEN :a AND :b",
            "ExpressionAttributeValues": db.values({":m": series_key, ":a": start, ":b": end - 1})}
    while True:
        page = aws.dynamodb().query(**args)
        for item in page["Items"]:
            plain = db.from_ddb(item)
            yield plain["ts"], float(plain["v"])
        if "LastEvaluatedKey" not in page:
            return
        args["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def read_map_days(series_key, first_day, last_day):
    """(epoch, value) of a meter's readings from day items holding a map, as the first build read them."""
    from chalicelib.platform import aws, db

    args = {"TableName": MAP_TABLE, "Limit": 32, "KeyConditionExpression": "meter = :m AND #d BETWEEN :a AND :b",
            "ExpressionAttributeNames": {"#d": "day"},
            "ExpressionAttributeValues": db.values({":m": series_key, ":a": first_day, ":b": last_day})}
    while True:
        page = aws.dynamodb().query(**args)
        for item in page["Items"]:
            plain = db.from_ddb(item)
            base = int(datetime.strptime(plain["day"], "%Y-%m-%d").replace(tzinfo=timezone.utc).timestamp())
            for slot in sorted(plain["r"]):
                yield base + int(slot[:2]) * 3600 + int(slot[2:4]) * 60 + int(slot[4:]), float(plain["r"][slot])
        if "LastEvaluatedKey" not in page:
            return
        args["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def capacity_figures(series_key):
    """Sizes and capacity units of the three layouts, by the documented rules."""
    from chalicelib.metering import readings

    slots = [f"{(i * STEP) // 3600:02d}{(i * STEP) % 3600 // 60:02d}00" for i in range(PER_DAY)]   # the map's keys
    packed_day = item_size(readings.day_item(series_key, "2025-01-01", {i * STEP: value_at(i) for i in range(PER_DAY)}))
    packed_base = item_size(readings.day_item(series_key, "2025-01-01", {}))
    map_day = item_size({"meter": series_key, "day": "2025-01-01", "r": {s: value_at(i) for i, s in enumerate(slots)}})
    map_base = item_size({"meter": series_key, "day": "2025-01-01", "r": {}})
    one = item_size({"meter": series_key, "ts": YEAR_START, "v": value_at(1)})
    packed_entry, map_entry = (packed_day - packed_base) / PER_DAY, (map_day - map_base) / PER_DAY
    # A write is billed on the larger of the item before and after it: the after, as a day only grows.
    # Live pushes, one reading per request: the i-th write of a day.
    live = {"packed day": sum(wcu(packed_base + packed_entry * i) for i in range(1, PER_DAY + 1)),
            "map day": sum(wcu(map_base + map_entry * i) for i in range(1, PER_DAY + 1)),
            "item per reading": PER_DAY * wcu(one)}
    # Batches of 1000 new readings (an agent catching up): one PutItem per new day item.
    days_per_1000 = math.ceil(1000 / PER_DAY)
    batch_new = {"packed day": days_per_1000 * wcu(packed_day), "map day": days_per_1000 * wcu(map_day),
                 "item per reading": 1000 * wcu(one)}
    # A day of readings into an existing day item: the packed day is rewritten once; the map day took
    # UpdateItems of at most 80 entries (the expression size limit).
    into_existing = {"packed day": wcu(packed_day),
                     "map day": sum(wcu(map_base + map_entry * min(PER_DAY, (k + 1) * 80))
                                    for k in range(math.ceil(PER_DAY / 80))),
                     "item per reading": PER_DAY * wcu(one)}
    year = {"packed day": packed_day * 366, "map day": map_day * 366, "item per reading": one * 366 * PER_DAY}
    return {
        "item_bytes": {"packed day": packed_day, "map day": map_day, "item per reading": one},
        "wcu_full_day_or_reading_item": {"packed day": wcu(packed_day), "map day": wcu(map_day),
                                         "item per reading": wcu(one)},
        "live_wcu_per_day": live, "batch_1000_new_wcu": batch_new,
        "batch_one_day_into_existing_item_wcu": into_existing,
        "year_query_bytes": year,
        "year_query_rcu_eventual": {k: math.ceil(v / 4096 / 2) for k, v in year.items()},
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=366)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from chalicelib.metering import readings
    from chalicelib.tables import readings_table

    with stack():
        project_id, _key = new_project("layout")
        make_meter(project_id)
        started = time.perf_counter()
        meter = fill_days(project_id, "meter1", args.days)
        series_key = readings_table.series_key(project_id, meter["meter_id"])
        build_other_layouts(series_key, args.days)
        print(f"python {platform.python_version()}, moto in-process, {args.days} days x {PER_DAY} readings "
              f"= {args.days * PER_DAY:,} readings of one meter (setup {time.perf_counter() - started:.0f} s), "
              f"median of {args.repeats} reads\n")
        end = YEAR_START + args.days * 86400
        last_day = datetime.fromtimestamp(end - 1, timezone.utc).strftime("%Y-%m-%d")
        layouts = [
            ("packed day items (built)", lambda: list(readings.series(project_id, meter["meter_id"], YEAR_START, end))),
            ("item per reading", lambda: list(read_per_reading(series_key, YEAR_START, end))),
            ("day items with a map (first build)", lambda: list(read_map_days(series_key, "2025-01-01", last_day))),
        ]
        results = []
        reference = None
        for name, read in layouts:
            walls, clients = [], []
            with DynamoCounter() as counter:
                for _ in range(args.repeats):
                    with MotoTimer() as in_moto:
                        began = time.perf_counter()
                        rows = read()
                        walls.append(time.perf_counter() - began)
                    clients.append(walls[-1] - in_moto.seconds)
            reference = reference or rows
            assert rows == reference, f"{name} read other readings"
            results.append((name, statistics.median(walls), statistics.median(clients),
                            counter.items // args.repeats, counter.calls["Query"] // args.repeats, len(rows)))
        base_seconds, base_client = results[0][1], results[0][2]
        print("| layout | readings | items read | Query calls | items per reading | wall (s) | of which client (s) "
              "| readings/s | wall vs packed days | client vs packed days |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for name, seconds, client, items, calls, n in results:
            print(f"| {name} | {n:,} | {items:,} | {calls} | {items / n:.4f} | {seconds:.2f} | {client:.2f} "
                  f"| {n / seconds:,.0f} | {seconds / base_seconds:.2f}x | {client / base_client:.2f}x |")
        print()
        figures = capacity_figures(series_key)
        for key, value in figures.items():
            print(f"{key}: {value}")


if __name__ == "__main__":
    main()
