"""POST /data under parallel writers and failing calls: each reading stored once per (meter, time), a
conflict or busy where writers disagree, a 503 with nothing half-done when a call fails mid-batch, and
afterwards every store consistent (readings, hot-item marks, latest reading and interval, rollups).

In-process moto carries out one call at a time (tests/conftest.py); a small delay before each call (a
botocore hook) lets the writers' calls interleave, as concurrent Lambdas' do.
"""
import json
import random
import threading
import time
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from chalicelib.platform import aws as aws_clients
from tests.aws_faults import AwsFaults

T0 = int(datetime(2026, 9, 14, 12, 0, tzinfo=timezone.utc).timestamp())   # a Monday
ZONE = ZoneInfo("Asia/Kolkata")     # +05:30: local hours end at UTC :30


def iso(epoch):
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def reading(meter, epoch, value, reset=False):
    return {"MeterId": meter, "TimeStamping": iso(epoch), "value": value, **({"reset": True} if reset else {})}


@pytest.fixture
def jitter(serialized_aws):
    """A few milliseconds before each DynamoDB call, outside the lock: the writers' calls interleave."""
    rng = random.Random(5)
    hook = lambda **_kwargs: time.sleep(rng.random() * 0.004)   # noqa: E731
    aws_clients.dynamodb().meta.events.register_first("before-call", hook)
    yield
    aws_clients.dynamodb().meta.events.unregister("before-call", hook)


def project(make_account, meters=1, save_every=1):
    from chalicelib.metering import meters as meter_items

    account = make_account(timezone=ZONE.key)
    names = [f"m{i}" for i in range(meters)]
    for name in names:
        meter_items.register(account.view["project"], {"MeterId": name, "SaveEvery": save_every})
    return account.view["project"], names


def race(calls):
    """Run the calls at once (a barrier), each in its thread: their results or exceptions."""
    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def run(i, call):
        barrier.wait()
        try:
            results[i] = call()
        except Exception as error:  # noqa: BLE001 - what the writer got is what the test checks
            results[i] = error

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def assert_consistent(project_id):
    """Every store agrees: each hot item's hour marked on its meter, every meter's latest reading and interval
    as its readings give them, and its rollups equal to its readings, hour by hour and day by day."""
    from chalicelib.metering import consumption, meters, readings
    from chalicelib.platform import db
    from chalicelib.tables import readings_table

    for meter in meters.current(project_id, meters.all_meters(project_id)):
        series = readings_table.series_key(project_id, meter["meter_id"])
        items = list(db.query(readings_table.NAME, "meter = :m", {":m": series}))
        hot = {item["day"] for item in items if readings_table.is_hour(item["day"])}
        assert hot <= readings.hot_hours(meter), "a hot item whose hour the meter item does not mark"
        entries = sorted({e for item in items for e in readings.any_item(item)["entries"]})
        assert len({t for t, _v, _r in entries}) == len(entries), "a reading stored twice with other values"
        if not entries:
            continue
        assert (meter["latest_time"], meter["latest_value"]) == entries[-1][:2]
        best = meters.interval_in(entries, meters.step(meter))
        assert (meter.get("interval_time"), meter.get("interval_value")) == \
            ((best.epoch, best.value) if best else (None, None))
        first = datetime.fromtimestamp(entries[0][0], ZONE).date() - timedelta(days=1)
        last = datetime.fromtimestamp(entries[-1][0], ZONE).date() + timedelta(days=1)
        for period in ("hour", "day"):
            raw = consumption.from_readings(project_id, [meter["meter_id"]], ZONE, first, last, period)
            assert consumption.summaries(project_id, [meter], ZONE, first, last, period) == raw, period
    return True


def test_writers_racing_one_meter_store_each_reading_once(make_account, jitter, time_machine):
    """Six writers push one meter's last 40 minutes and 10 readings of yesterday at once; two of them send
    other values (or another reset mark) for a few times. Each time is stored once, with one writer's value;
    every writer that sent another value for it got a conflict (or busy), the others accepted or duplicates."""
    from chalicelib.metering import ingest, meters, readings

    time_machine.move_to(T0 + 40 * 60 + 20, tick=False)
    project_id, _names = project(make_account)
    times = [T0 + 60 * m for m in range(40)] + [T0 - 86400 + 300 * k for k in range(10)]
    batches = []
    for writer in range(6):
        batch = [reading("m0", t, 100 + (t - T0) / 60) for t in times]
        if writer >= 4:
            for k in (3, 17, 39, 44):
                batch[k]["value"] += writer
            batch[20]["reset"] = True
        random.Random(writer).shuffle(batch)
        batches.append(batch)
    receipts = race([lambda b=b: ingest.ingest(project_id, b) for b in batches])
    assert not [r for r in receipts if isinstance(r, Exception)], receipts
    assert sum(r["accepted"] for r in receipts) == len(times)          # each time accepted by one writer
    meter = meters.find(project_id, name="m0")
    stored = {t: (v, r) for t, v, r in readings.around_many(project_id, [meter["meter_id"]], times[-10],
                                                                 times[39])[meter["meter_id"]]}
    assert len(stored) == len(times)
    for batch, receipt in zip(batches, receipts):
        rejected = {r["index"]: r["code"] for r in receipt["rejected"]}
        assert set(rejected.values()) <= {"conflict", "busy"}
        for index, sent in enumerate(batch):
            epoch = int(datetime.strptime(sent["TimeStamping"], "%Y-%m-%dT%H:%M:%SZ")
                        .replace(tzinfo=timezone.utc).timestamp())
            same = stored[epoch] == (sent["value"], bool(sent.get("reset")))
            assert (index in rejected) == (not same) or rejected.get(index) == "busy", (sent, stored[epoch])
    assert assert_consistent(project_id)


def test_writers_racing_one_project_at_the_hour_keep_every_store_consistent(make_account, jitter, time_machine):
    """Eight writers, each with 25 of a project's 60 meters (they overlap), push live readings across an hour
    change: marks, meter items, rollups and folds all race."""
    from chalicelib.metering import ingest

    project_id, names = project(make_account, meters=60)
    rng = random.Random(3)
    for minute in range(50, 71, 10):
        now = T0 + 60 * minute
        time_machine.move_to(now + 30, tick=False)
        batches = []
        for _writer in range(8):
            chosen = rng.sample(names, 25)
            batches.append([reading(name, now, 10 * int(name[1:]) + minute * 0.5) for name in chosen])
        receipts = race([lambda b=b: ingest.ingest(project_id, b) for b in batches])
        assert not [r for r in receipts if isinstance(r, Exception)], receipts
        assert all(r["rejected"] == [] or {x["code"] for x in r["rejected"]} <= {"busy"} for r in receipts)
    time_machine.move_to(T0 + 3 * 3600, tick=False)                # later: the 12:00 UTC hour is due for folding
    ingest.ingest(project_id, [reading(name, T0 + 3 * 3600 - 60, 10 * int(name[1:]) + 90) for name in names])
    assert assert_consistent(project_id)


# The push's PutItems, in order: 40 day items (the fold of 10:00 UTC), 40 hot items (12:00 UTC), 40 rollups.
PLANS = [
    {("PutItem", 17): "throttle"},            # a fold's day item
    {("BatchWriteItem", 1): "throttle"},      # deleting the folded hot items
    {("BatchGetItem", 3): "server_error"},    # the readings' items (after the aliases and the meters)
    {("PutItem", 57): "throttle"},            # a hot item among the parallel writes
    {("PutItem", 57): "lost_answer"},         # a hot item written, its answer lost
    {("PutItem", 97): "throttle"},            # a rollup month item (the local hour of 11:25 UTC, 16:55 IST, closes)
    {("UpdateItem", 2): "timeout"},           # a meter item's latest, after the readings
]


@pytest.mark.parametrize("plan", PLANS, ids=lambda p: "-".join(f"{op}{n}-{kind}" for (op, n), kind in p.items()))
def test_a_fault_mid_batch_is_a_503_with_nothing_half_done(client, make_account, time_machine, plan):
    """40 meters push their 12:00 UTC reading (it starts a UTC hour and a local one, and folds 10:00 UTC): one
    call of the push fails. The push is a 503 with Retry-After; every store stays consistent; sent again it
    completes."""
    account = make_account(timezone=ZONE.key)
    project_id = account.view["project"]
    names = [f"m{i}" for i in range(40)]
    for name in names:
        assert account.request("PUT", "/point", body={"MeterId": name, "SaveEvery": 1}).status_code == 200
    for minute in (-130, -70, -35):
        time_machine.move_to(T0 + 60 * minute + 5, tick=False)
        assert account.request("POST", "/data", body={"readings": [
            reading(n, T0 + 60 * minute, i + minute / 60) for i, n in enumerate(names)]}).status_code == 200
    time_machine.move_to(T0 + 5, tick=False)
    batch = [reading(n, T0, i + 0.5) for i, n in enumerate(names)]
    faults = AwsFaults.planned([aws_clients.dynamodb()], plan)
    answer = account.request("POST", "/data", body={"readings": batch})
    faults.enabled = False
    assert sum(faults.failed.values()) == 1, faults.seen
    assert answer.status_code == 503 and int(answer.headers["Retry-After"]) > 0, answer.body
    assert assert_consistent_after_retry(account, project_id, batch)


def assert_consistent_after_retry(account, project_id, batch):
    again = account.request("POST", "/data", body={"readings": batch})
    assert again.status_code == 200, again.body
    receipt = json.loads(again.body)
    assert receipt["accepted"] + receipt["duplicates"] == len(batch) and receipt["rejected"] == []
    return assert_consistent(project_id)


def test_a_live_push_of_many_meters_costs_a_few_batched_calls(make_account, time_machine):
    """Mid-hour, a push of one reading per meter for 120 meters: the meters in 2 BatchGetItem calls of 100
    keys (aliases, then meters), their items in 3 (day and hot item of each), 120 PutItem (made at once), and
    nothing else: no meter item, no rollup. Counted at botocore's events."""
    from collections import Counter

    from chalicelib.metering import ingest

    project_id, names = project(make_account, meters=120)
    for minute in (20, 21):
        time_machine.move_to(T0 + 60 * minute + 5, tick=False)
        calls: Counter = Counter()
        count = lambda event_name, **_k: calls.update([event_name.rsplit(".", 1)[-1]])   # noqa: E731
        aws_clients.dynamodb().meta.events.register("before-call.dynamodb", count)
        try:
            receipt = ingest.ingest(project_id, [reading(n, T0 + 60 * minute, minute) for n in names])
        finally:
            aws_clients.dynamodb().meta.events.unregister("before-call.dynamodb", count)
        assert receipt["accepted"] == 120
    assert dict(calls) == {"GetItem": 1, "BatchGetItem": 2 * 2 + 3, "PutItem": 120}, calls   # GetItem: the zone
