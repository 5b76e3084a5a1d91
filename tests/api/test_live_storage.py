"""Live readings: hot hour items, their fold into day items, the meter item written once an hour, the open
hour's consumption, and data written in the layout before hot items and hourly rollups.

What a site relies on: a reading pushed a minute ago is what GET /data shows, its interval what GET
/interval shows, its energy in GET /consumption; nothing is lost or counted twice when an hour's items are
folded; and each live reading costs about one small write. The cloud's clock is moved with the readings
(time-machine), as a live agent's pushes arrive.
"""
import json
import math
import urllib.parse
from collections import Counter
from datetime import date, datetime, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

T0 = int(datetime(2026, 6, 1, 10, 0, tzinfo=timezone.utc).timestamp())   # a Monday, 10:00 UTC


def iso(epoch):
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def shown(epoch, zone="UTC"):
    return datetime.fromtimestamp(epoch, ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M:%S")


def push(account, readings):
    answer = account.request("POST", "/data", body={"readings": readings})
    assert answer.status_code == 200, answer.body
    return json.loads(answer.body)


def reading(epoch, value, meter="m1", reset=None):
    body = {"MeterId": meter, "TimeStamping": iso(epoch), "value": value}
    if reset is not None:
        body["reset"] = reset
    return body


def latest(account, path):
    answer = account.request("GET", path)
    assert answer.status_code == 200, answer.body
    return {row["MeterParam"]: (row["TimeStamping"], row["value"]) for row in json.loads(answer.body)}


def consumption(account, **params):
    answer = account.request("GET", "/consumption?" + urllib.parse.urlencode(params))
    assert answer.status_code == 200, answer.body
    return json.loads(answer.body)


def register(account, name="m1", save_every=1):
    answer = account.request("PUT", "/point", body={"MeterId": name, "SaveEvery": save_every})
    assert answer.status_code == 200, answer.body
    return json.loads(answer.body)["id"]


def item_size(item):
    """DynamoDB's size of a typed item: attribute names and values (a number: 1 byte per 2 digits + 1)."""
    total = 0
    for name, typed in item.items():
        (kind, raw), = typed.items()
        total += len(name.encode())
        if kind == "S":
            total += len(raw.encode())
        elif kind == "N":
            total += math.ceil(len(Decimal(raw).normalize().as_tuple().digits) / 2) + 1
        elif kind == "B":
            total += len(raw)
        else:
            total += 1
    return total


class Writes:
    """The write calls made while the block runs, by what they write, with each PutItem's size."""

    def __init__(self):
        self.calls: Counter = Counter()
        self.put_sizes: dict[str, list[int]] = {"hot": [], "day": [], "rollup": []}

    def hook(self, params, event_name, **_kwargs):
        operation = event_name.rsplit(".", 1)[-1]
        if operation == "PutItem":
            meter, day = params["Item"]["meter"]["S"], params["Item"]["day"]["S"]
            kind = "rollup" if meter.startswith("ROLLUP#") else "hot" if len(day) == 13 else "day"
            self.put_sizes[kind].append(item_size(params["Item"]))
            self.calls[f"PutItem {kind}"] += 1
        elif operation == "BatchWriteItem":
            self.calls["deleted"] += sum(len(requests) for requests in params["RequestItems"].values())
        elif operation in ("UpdateItem", "DeleteItem", "TransactWriteItems"):
            self.calls[operation] += 1

    def __enter__(self):
        from chalicelib.platform import aws

        aws.dynamodb().meta.events.register("before-parameter-build.dynamodb.*", self.hook)
        return self

    def __exit__(self, *_exc):
        from chalicelib.platform import aws

        aws.dynamodb().meta.events.unregister("before-parameter-build.dynamodb.*", self.hook)


def stored_items(project_id, meter_id):
    """Sort keys of every ReadingsTable item of a meter's readings (day and hot items)."""
    from chalicelib.platform import db
    from chalicelib.tables import readings_table

    return [item["day"] for item in db.query(readings_table.NAME, "meter = :m",
                                             {":m": readings_table.series_key(project_id, meter_id)})]


def marks(project_id, meter_id):
    from chalicelib.platform import db
    from chalicelib.tables import meters_table

    return sorted(name for name in db.get(meters_table.NAME, meters_table.meter_key(project_id, meter_id))
                  if name.startswith("hot:"))


@pytest.fixture
def site(make_account, time_machine):
    time_machine.move_to(T0, tick=False)
    account = make_account()
    account.meter_id = register(account)
    return account


def test_minute_readings_cost_one_small_write_each_and_every_read_sees_the_last_one(site, time_machine):
    """Two hours of live one-minute readings: each is one PutItem of a hot item under 1 KB (1 write unit);
    the meter item is written about once an hour, the rollups once an hour, the day item once an hour (the
    fold); and after every push GET /data, /interval and /consumption show that push's reading."""
    project_id = site.view["project"]
    with Writes() as writes:
        for minute in range(125):
            now = T0 + 60 * minute
            time_machine.move_to(now + 5, tick=False)
            assert push(site, [reading(now, 1000 + minute * 0.25)])["accepted"] == 1
            if minute % 7 == 0 or minute in (59, 60, 61, 119, 120):
                assert latest(site, "/data") == {"m1": (shown(now), 1000 + minute * 0.25)}
                assert latest(site, "/interval") == ({"m1": (shown(now), 0.25)} if minute else {})
    assert writes.calls["PutItem hot"] == 125
    assert max(writes.put_sizes["hot"]) <= 1024                     # 60 readings: one write unit
    assert writes.calls["UpdateItem"] <= 2 * 3                      # the meter item: about once an hour
    assert writes.calls["PutItem rollup"] <= 3 * 2                  # the rollups: when an hour closes
    assert writes.calls["PutItem day"] <= 2                         # the hot items folded into the day item
    units = sum(math.ceil(size / 1024) for sizes in writes.put_sizes.values() for size in sizes) \
        + writes.calls["UpdateItem"] + writes.calls["deleted"]
    assert units / 125 <= 1.5, writes.calls
    # the hour 10:00 was folded (at 11:55, FOLD_DELAY after it ended), 11:00 and 12:00 are live
    assert stored_items(project_id, site.meter_id) == ["2026-06-01", "2026-06-01T11", "2026-06-01T12"]
    assert [m for m in marks(project_id, site.meter_id) if "T10" in m] == []
    from chalicelib.metering import readings

    assert list(readings.series(project_id, site.meter_id, 0, 2 ** 33)) == \
        [(T0 + 60 * m, 1000 + m * 0.25) for m in range(125)]


def test_the_open_hour_comes_from_the_hot_items_and_no_day_item_is_read(site, time_machine):
    """GET /consumption?period=hour during a live hour: the closed hours from the rollups, the open one
    (the last reading's) from its hot item and the reading before it kept in the rollup, without reading a
    single day item; values as the raw readings give them."""
    from chalicelib.metering import consumption as figures, meters
    from chalicelib.platform import aws

    for minute in range(0, 150, 5):
        time_machine.move_to(T0 + 60 * minute + 5, tick=False)
        push(site, [reading(T0 + 60 * minute, 500 + minute * 0.5)])
    keys: list = []

    def note(params, **_kwargs):
        for table in params["RequestItems"].values():
            keys.extend((k["meter"]["S"], k["day"]["S"]) for k in table["Keys"])

    aws.dynamodb().meta.events.register("before-parameter-build.dynamodb.BatchGetItem", note)
    try:
        rows = consumption(site, start="2026-06-01", end="2026-06-01", period="hour")
    finally:
        aws.dynamodb().meta.events.unregister("before-parameter-build.dynamodb.BatchGetItem", note)
    assert [r["value"] for r in rows[10:13]] == [30.0, 30.0, 12.5]       # 12:00-12:25 so far, open
    assert [r["value"] for r in rows[13:]] == [None] * 11
    day_items = [k for k in keys if not k[0].startswith("ROLLUP#") and len(k[1]) == 10]
    assert day_items == []
    assert any(len(k[1]) == 13 for k in keys)                          # the open hour's hot item
    project_id = site.view["project"]
    meter = meters.find(project_id, name="m1")
    zone = ZoneInfo("UTC")
    day = date(2026, 6, 1)
    raw = figures.from_readings(project_id, [meter["meter_id"]], zone, day, day, "hour")[meter["meter_id"]]
    assert figures.summaries(project_id, [meter], zone, day, day, "hour")[meter["meter_id"]] == raw
    assert consumption(site, start="2026-06-01", end="2026-06-01")[0]["value"] == 72.5


def test_a_reading_late_by_more_than_the_grace_goes_to_the_day_item_and_counts(site, time_machine):
    for minute in range(0, 180, 10):
        time_machine.move_to(T0 + 60 * minute + 5, tick=False)
        if minute != 30:
            push(site, [reading(T0 + 60 * minute, 100 + minute)])
    time_machine.move_to(T0 + 3 * 3600 + 5, tick=False)
    with Writes() as writes:
        assert push(site, [reading(T0 + 30 * 60, 130.0)]) == {"accepted": 1, "duplicates": 0, "rejected": []}
    assert writes.calls["PutItem hot"] == 0 and writes.calls["PutItem day"] >= 1   # (and 11:00's fold, due now)
    assert push(site, [reading(T0 + 30 * 60, 130.0)])["duplicates"] == 1
    assert push(site, [reading(T0 + 30 * 60, 131.0)])["rejected"][0]["code"] == "conflict"
    rows = consumption(site, start="2026-06-01", end="2026-06-01", period="hour")
    assert rows[10]["Coverage"] == round(6 / 60, 3) and rows[10]["value"] == 60.0


def test_a_meter_silent_after_a_live_hour_keeps_its_readings_and_its_latest(site, time_machine):
    """A meter stops at 10:35: its hot item stays (nobody folds it) and every read finds it; when a backfill
    arrives much later, the hour is folded and the latest reading moved to the item before the hot one goes."""
    project_id = site.view["project"]
    for minute in range(36):
        time_machine.move_to(T0 + 60 * minute + 5, tick=False)
        push(site, [reading(T0 + 60 * minute, 10 + minute)])
    time_machine.move_to(T0 + 86400 * 3, tick=False)
    assert latest(site, "/data") == {"m1": (shown(T0 + 35 * 60), 45.0)}
    assert latest(site, "/interval") == {"m1": (shown(T0 + 35 * 60), 1.0)}
    assert consumption(site, start="2026-06-01", end="2026-06-01")[0]["value"] == 35.0
    push(site, [reading(T0 - 3600, 5.0)])       # a backfill three days later: the hot item is folded
    assert stored_items(project_id, site.meter_id) == ["2026-06-01"]
    assert marks(project_id, site.meter_id) == []
    assert latest(site, "/data") == {"m1": (shown(T0 + 35 * 60), 45.0)}
    assert latest(site, "/interval") == {"m1": (shown(T0 + 35 * 60), 1.0)}
    assert consumption(site, start="2026-06-01", end="2026-06-01")[0]["value"] == 40.0


def test_status_shows_the_last_minute_reading_and_counts_hot_and_folded_readings(site, time_machine):
    """GET /status of a meter pushing every minute: LastReading is the last push (not the meter item's
    hourly copy) and State ok; Coverage24h counts the readings folded into the day item and those still in
    hot items, each once."""
    for minute in range(130):
        time_machine.move_to(T0 + 60 * minute + 5, tick=False)
        push(site, [reading(T0 + 60 * minute, 7 + minute)])
    status = site.request("GET", "/status").json_body
    [row] = status["meters"]
    assert (row["LastReading"], row["State"]) == (shown(T0 + 129 * 60), "ok")
    assert row["Coverage24h"] == round(130 / 1440, 3)
    from chalicelib.metering import readings

    project_id = site.view["project"]
    assert readings.counts(project_id, [site.meter_id], T0 + 30 * 60, T0 + 125 * 60) == {site.meter_id: 95}
