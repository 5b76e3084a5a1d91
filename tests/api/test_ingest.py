"""POST /data: receipts, idempotence per (meter, time), rejections one by one, backfill and intervals.

What a site relies on: an agent that retries loses and doubles nothing; a bad reading never sinks its
batch; readings sent late (after an outage) still give the right interval values; a register that
goes down (reset, replacement) never gives a negative or spiking interval.
"""
import json
import math
from datetime import datetime, timezone

import pytest

from chalicelib.platform import clock

T0 = int(datetime(2026, 1, 10, tzinfo=timezone.utc).timestamp())   # a Saturday, long past
STEP = 300


def iso(epoch):
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def reading(epoch, value, meter="m1"):
    return {"MeterId": meter, "TimeStamping": iso(epoch), "value": value}


def register(account, name="m1", **config):
    answer = account.request("PUT", "/point", body={"MeterId": name, **config})
    assert answer.status_code == 200, answer.body
    return json.loads(answer.body)


def push(account, readings):
    answer = account.request("POST", "/data", body={"readings": readings})
    assert answer.status_code == 200, answer.body
    return json.loads(answer.body)


def push_raw(account, text):
    return account.client.http.post("/data", headers={**account.headers, "Content-Type": "application/json"},
                                    body=text)


def latest(account, path):
    answer = account.request("GET", path)
    assert answer.status_code == 200, answer.body
    return {row["MeterParam"]: (row["TimeStamping"], row["value"]) for row in json.loads(answer.body)}


def shown(epoch):
    """How the API shows an instant in a UTC project."""
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def stored(account, meter="m1"):
    """(epoch, value) of everything stored for a meter, straight from the readings table."""
    from chalicelib.metering import meters, readings

    project_id = account.view["project"]
    found = meters.find(project_id, name=meter)
    return list(readings.series(project_id, found["meter_id"], 0, 2 ** 33))


@pytest.fixture
def site(make_account):
    account = make_account()
    register(account)
    return account


# ---- receipts and idempotence -------------------------------------------------------------------

def test_receipt_counts_accepted_duplicates_and_rejected(site):
    first = push(site, [reading(T0, 100.0), reading(T0 + STEP, 101.5)])
    assert first == {"accepted": 2, "duplicates": 0, "rejected": []}
    again = push(site, [reading(T0, 100.0), reading(T0 + STEP, 101.5), reading(T0 + 2 * STEP, 103.0)])
    assert again == {"accepted": 1, "duplicates": 2, "rejected": []}
    assert stored(site) == [(T0, 100.0), (T0 + STEP, 101.5), (T0 + 2 * STEP, 103.0)]


def test_another_value_for_a_stored_time_is_rejected_and_the_stored_value_kept(site):
    push(site, [reading(T0, 100.0)])
    receipt = push(site, [reading(T0, 250.0), reading(T0 + STEP, 101.0)])
    assert receipt["accepted"] == 1 and receipt["duplicates"] == 0
    [rejection] = receipt["rejected"]
    assert rejection["index"] == 0
    assert "already" in rejection["error"] and "100" in rejection["error"]
    assert stored(site) == [(T0, 100.0), (T0 + STEP, 101.0)]
    assert latest(site, "/data") == {"m1": (shown(T0 + STEP), 101.0)}


def test_same_time_twice_in_one_batch_is_one_reading(site):
    receipt = push(site, [reading(T0, 100.0), reading(T0, 100.0), reading(T0, 99.0)])
    assert receipt["accepted"] == 1 and receipt["duplicates"] == 1
    assert [r["index"] for r in receipt["rejected"]] == [2]
    assert stored(site) == [(T0, 100.0)]


def test_same_instant_with_and_without_offset_is_a_duplicate(make_account):
    account = make_account(timezone="America/Toronto")
    register(account)
    first = push(account, [{"MeterId": "m1", "TimeStamping": "2026-01-10T08:00:00", "value": 5}])  # EST, UTC-5
    again = push(account, [{"MeterId": "m1", "TimeStamping": "2026-01-10T13:00:00Z", "value": 5},
                           {"MeterId": "m1", "TimeStamping": "2026-01-10T08:00:00-05:00", "value": 5}])
    assert first["accepted"] == 1 and again == {"accepted": 0, "duplicates": 2, "rejected": []}
    assert stored(account) == [(int(datetime(2026, 1, 10, 13, tzinfo=timezone.utc).timestamp()), 5.0)]


def test_readings_of_a_time_inside_a_daylight_saving_gap_are_rejected(make_account):
    account = make_account(timezone="America/Toronto")
    register(account)
    receipt = push(account, [{"MeterId": "m1", "TimeStamping": "2026-03-08T02:30:00", "value": 5}])
    assert receipt["accepted"] == 0
    assert "daylight" in receipt["rejected"][0]["error"]


# ---- batch bounds --------------------------------------------------------------------------------

def test_a_batch_of_1000_is_accepted_whole(site):
    receipt = push(site, [reading(T0 + i * STEP, 1000 + i * 0.25) for i in range(1000)])
    assert receipt == {"accepted": 1000, "duplicates": 0, "rejected": []}
    rows = stored(site)
    assert len(rows) == 1000 and rows[-1] == (T0 + 999 * STEP, 1000 + 999 * 0.25)


def test_a_batch_of_1001_is_413_and_stores_nothing(site):
    answer = site.request("POST", "/data", body={"readings": [reading(T0 + i * STEP, i) for i in range(1001)]})
    assert answer.status_code == 413
    assert "1000" in json.loads(answer.body)["error"]
    assert stored(site) == []


def test_readings_that_are_not_a_list_are_400(site):
    for body in [{"readings": {"MeterId": "m1"}}, {"readings": "m1"}, {"readings": None}, {}]:
        answer = site.request("POST", "/data", body=body)
        assert answer.status_code == 400, body
        assert "readings" in json.loads(answer.body)["error"]


def test_a_body_that_is_not_a_json_object_is_400(site):
    for text in ['{"readings": [', "readings=1&x", "[1, 2]", '"just text"', '{"readings": [1,]}']:
        answer = push_raw(site, text)
        assert answer.status_code == 400, text
        assert json.loads(answer.body)["error"]


# ---- each bad reading rejected alone -------------------------------------------------------------

BAD_READINGS = [
    ("unknown meter", {"MeterId": "nope", "TimeStamping": iso(T0), "value": 1}, "unknown meter"),
    ("non-numeric text", {"MeterId": "m1", "TimeStamping": iso(T0), "value": "abc"}, "not a number"),
    ("NaN as text", {"MeterId": "m1", "TimeStamping": iso(T0), "value": "NaN"}, "finite"),
    ("Infinity as text", {"MeterId": "m1", "TimeStamping": iso(T0), "value": "Infinity"}, "finite"),
    ("-inf as text", {"MeterId": "m1", "TimeStamping": iso(T0), "value": "-inf"}, "finite"),
    ("1e400 as text", {"MeterId": "m1", "TimeStamping": iso(T0), "value": "1e400"}, "finite"),
    ("a list", {"MeterId": "m1", "TimeStamping": iso(T0), "value": [1]}, "number"),
    ("an object", {"MeterId": "m1", "TimeStamping": iso(T0), "value": {"kWh": 1}}, "number"),
    ("a bool", {"MeterId": "m1", "TimeStamping": iso(T0), "value": True}, "number"),
    ("null", {"MeterId": "m1", "TimeStamping": iso(T0), "value": None}, "number"),
    ("no value", {"MeterId": "m1", "TimeStamping": iso(T0)}, "number"),
    ("an integer beyond any float", {"MeterId": "m1", "TimeStamping": iso(T0), "value": 10 ** 400}, "range"),
    ("beyond a register", {"MeterId": "m1", "TimeStamping": iso(T0), "value": 1e300}, "range"),
    ("malformed time", {"MeterId": "m1", "TimeStamping": "yesterday", "value": 1}, "malformed"),
    ("time without a date", {"MeterId": "m1", "TimeStamping": "13:15:00", "value": 1}, "malformed"),
    ("impossible date", {"MeterId": "m1", "TimeStamping": "2026-02-30T00:00:00Z", "value": 1}, "not a real"),
    ("time as a number", {"MeterId": "m1", "TimeStamping": T0, "value": 1}, "ISO 8601"),
    ("no time", {"MeterId": "m1", "value": 1}, "ISO 8601"),
    ("year 9999 local time", {"MeterId": "m1", "TimeStamping": "9999-12-31T23:00:00", "value": 1}, "range"),
    ("before 1970", {"MeterId": "m1", "TimeStamping": "1969-12-31T23:55:00Z", "value": 1}, "1970"),
    ("no meter", {"TimeStamping": iso(T0), "value": 1}, "MeterId"),
    ("meter not text", {"MeterId": 7, "TimeStamping": iso(T0), "value": 1}, "MeterId"),
    ("not an object", ["m1", iso(T0), 1], "object"),
]


def test_each_bad_reading_is_rejected_alone_with_its_reason(make_account):
    account = make_account(timezone="America/Toronto")   # the year-9999 local time overflowed here (a 500)
    register(account)
    batch, expected = [], {}
    for i, (name, bad, reason) in enumerate(BAD_READINGS):
        batch.append(reading(T0 + i * STEP, 10.0 + i))        # a good reading between each bad one
        expected[len(batch)] = (name, reason)
        batch.append(bad)
    receipt = push(account, batch)
    assert receipt["accepted"] == len(BAD_READINGS) and receipt["duplicates"] == 0
    got = {r["index"]: r["error"] for r in receipt["rejected"]}
    assert sorted(got) == sorted(expected)
    wrong = [(name, got[i]) for i, (name, reason) in expected.items() if reason.lower() not in got[i].lower()]
    assert wrong == []
    assert stored(account) == [(T0 + i * STEP, 10.0 + i) for i in range(len(BAD_READINGS))]


def test_raw_nan_and_infinity_tokens_are_rejected_one_by_one_not_a_500(site):
    # Python's json.dumps writes NaN/Infinity bare, and some agents do too.
    body = json.dumps({"readings": [reading(T0, math.nan), reading(T0 + STEP, 10.0), reading(T0 + 2 * STEP, math.inf),
                                    reading(T0 + 3 * STEP, -math.inf)]})
    assert "NaN" in body and "Infinity" in body
    answer = push_raw(site, body)
    assert answer.status_code == 200, answer.body
    receipt = json.loads(answer.body)
    assert receipt["accepted"] == 1
    assert [r["index"] for r in receipt["rejected"]] == [0, 2, 3]
    assert all("finite" in r["error"] for r in receipt["rejected"])
    assert stored(site) == [(T0 + STEP, 10.0)]


def test_a_reading_more_than_10_minutes_ahead_is_rejected_and_less_is_accepted(site):
    now = int(clock.now())
    soon, too_far = now + 8 * 60, now + 12 * 60
    receipt = push(site, [reading(soon, 1.0), reading(too_far, 2.0)])
    assert receipt["accepted"] == 1
    [rejection] = receipt["rejected"]
    assert rejection["index"] == 1 and "future" in rejection["error"]
    assert stored(site) == [(soon, 1.0)]


def test_backfill_of_old_readings_is_accepted(site):
    weeks_ago = int(clock.now()) - 60 * 86400
    assert push(site, [reading(weeks_ago, 5.0)])["accepted"] == 1


def test_values_are_stored_as_sent_numbers_in_text_included(site):
    receipt = push(site, [reading(T0, "28540.24"), reading(T0 + STEP, 28540.74), reading(T0 + 2 * STEP, 28541)])
    assert receipt["accepted"] == 3
    assert stored(site) == [(T0, 28540.24), (T0 + STEP, 28540.74), (T0 + 2 * STEP, 28541.0)]


# ---- intervals: exact, never negative, never a spike ---------------------------------------------

def test_interval_is_the_exact_difference_in_every_format(site):
    push(site, [reading(T0, 28540.24), reading(T0 + STEP, 28540.74)])
    raw = site.request("GET", "/interval").body.decode()
    assert json.loads(raw) == [{"MeterParam": "m1", "TimeStamping": shown(T0 + STEP), "value": 0.5}]
    assert '"value": 0.5}' in raw
    xml = site.request("GET", "/interval?responseType=xml").body.decode()
    assert '<value type="float">0.5</value>' in xml


def test_interval_spans_save_every_minutes_not_the_previous_reading(make_account):
    account = make_account()
    register(account, SaveEvery=15)
    # Readings every 5 minutes; SaveEvery 15: the interval ends at the latest reading and starts 15 min before.
    push(account, [reading(T0 + i * STEP, 100 + i * 1.25) for i in range(7)])
    assert latest(account, "/interval") == {"m1": (shown(T0 + 6 * STEP), 3.75)}


def test_a_register_that_goes_down_gives_no_interval_for_that_step(site):
    push(site, [reading(T0, 100.0), reading(T0 + STEP, 105.0)])
    push(site, [reading(T0 + 2 * STEP, 3.0)])             # meter replaced: register restarts low
    # No -102 and no spike of 3: the latest interval is still the one before the reset.
    assert latest(site, "/interval") == {"m1": (shown(T0 + STEP), 5.0)}
    assert latest(site, "/data") == {"m1": (shown(T0 + 2 * STEP), 3.0)}
    push(site, [reading(T0 + 3 * STEP, 4.5)])              # counting again from the new register
    assert latest(site, "/interval") == {"m1": (shown(T0 + 3 * STEP), 1.5)}


def test_a_reset_inside_one_batch_gives_no_negative_interval(site):
    push(site, [reading(T0, 500.0), reading(T0 + STEP, 501.0), reading(T0 + 2 * STEP, 0.25)])
    assert latest(site, "/interval") == {"m1": (shown(T0 + STEP), 1.0)}


def test_no_interval_without_the_reading_one_save_every_before(site):
    push(site, [reading(T0, 100.0), reading(T0 + 3 * STEP, 110.0)])
    assert latest(site, "/interval") == {}
    assert latest(site, "/data") == {"m1": (shown(T0 + 3 * STEP), 110.0)}


# ---- backfill: readings out of order -------------------------------------------------------------

def test_a_backfilled_reading_creates_the_interval_after_it(site):
    push(site, [reading(T0, 100.0), reading(T0 + STEP, 101.0), reading(T0 + 3 * STEP, 104.0)])
    assert latest(site, "/interval") == {"m1": (shown(T0 + STEP), 1.0)}
    push(site, [reading(T0 + 2 * STEP, 102.5)])            # the reading lost in the outage
    assert latest(site, "/interval") == {"m1": (shown(T0 + 3 * STEP), 1.5)}
    assert latest(site, "/data") == {"m1": (shown(T0 + 3 * STEP), 104.0)}


def test_a_backfilled_reading_creates_the_interval_before_it(site):
    push(site, [reading(T0, 100.0), reading(T0 + 3 * STEP, 104.0)])
    assert latest(site, "/interval") == {}
    push(site, [reading(T0 + STEP, 100.75)])               # only the interval ending at it can exist
    assert latest(site, "/interval") == {"m1": (shown(T0 + STEP), 0.75)}
    push(site, [reading(T0 + 2 * STEP, 102.0)])            # fills the gap: intervals on both sides
    assert latest(site, "/interval") == {"m1": (shown(T0 + 3 * STEP), 2.0)}


def test_backfill_never_moves_the_latest_reading_or_interval_back(site):
    push(site, [reading(T0 + 10 * STEP, 200.0), reading(T0 + 11 * STEP, 203.0)])
    push(site, [reading(T0, 100.0), reading(T0 + STEP, 150.0)])   # much older, bigger interval
    assert latest(site, "/data") == {"m1": (shown(T0 + 11 * STEP), 203.0)}
    assert latest(site, "/interval") == {"m1": (shown(T0 + 11 * STEP), 3.0)}


def test_a_batch_in_reverse_order_gives_the_same_result(site):
    push(site, [reading(T0 + i * STEP, 10 + i * 0.1) for i in reversed(range(6))])
    assert latest(site, "/data") == {"m1": (shown(T0 + 5 * STEP), 10.5)}
    assert latest(site, "/interval") == {"m1": (shown(T0 + 5 * STEP), 0.1)}
    assert [t for t, _v in stored(site)] == [T0 + i * STEP for i in range(6)]


def test_backfill_across_a_utc_midnight(site):
    midnight = T0 + 86400
    push(site, [reading(midnight - STEP, 50.0), reading(midnight + STEP, 51.0)])
    push(site, [reading(midnight, 50.5)])                  # first reading of the next day's item
    assert latest(site, "/interval") == {"m1": (shown(midnight + STEP), 0.5)}
    assert stored(site) == [(midnight - STEP, 50.0), (midnight, 50.5), (midnight + STEP, 51.0)]


# ---- cost ------------------------------------------------------------------------------------------

def _writes_during(action):
    """DynamoDB write calls (by operation) made while action runs."""
    from collections import Counter

    from chalicelib.platform import aws

    writes: Counter = Counter()

    def count(event_name, **_kwargs):
        operation = event_name.rsplit(".", 1)[-1]
        if operation in ("PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"):
            writes[operation] += 1

    events = aws.dynamodb().meta.events
    events.register("before-call.dynamodb.*", count)
    try:
        action()
    finally:
        events.unregister("before-call.dynamodb.*", count)
    return dict(writes)


def test_a_retried_batch_writes_nothing_and_a_backfill_only_its_readings(site):
    batch = [reading(T0 + 10 * STEP + i * STEP, 100 + i) for i in range(12)]
    assert _writes_during(lambda: push(site, batch)) == {"PutItem": 2, "UpdateItem": 1}    # day item, rollup, meter (latest and interval)
    assert _writes_during(lambda: push(site, batch)) == {}                                 # the agent's retry
    assert _writes_during(lambda: push(site, [reading(T0, 90.0), reading(T0 + STEP, 91.0)])) == {"PutItem": 2}  # day item, rollup
    assert latest(site, "/data") == {"m1": (shown(T0 + 21 * STEP), 111.0)}
    assert latest(site, "/interval") == {"m1": (shown(T0 + 21 * STEP), 1.0)}


# ---- concurrent writers of one day ---------------------------------------------------------------

def test_a_concurrent_write_of_the_same_day_loses_nothing_and_keeps_the_first_value(site):
    """Another request writes the day between this one's read and its write: the write is refused by
    its condition, the day is read again, and each reading is classified against what is now stored."""
    from chalicelib.platform import aws, config

    push(site, [reading(T0, 100.0)])
    raced: list = []

    def mark_day_reads(params, context, **_):
        context["reads_days"] = config.resource_name("ReadingsTable") in params.get("RequestItems", {})

    def race_after_the_read(context, **_):   # botocore's after-call: this request has read the day items
        if context.get("reads_days") and not raced:
            raced.append(True)
            other = push(site, [reading(T0 + STEP, 101.0), reading(T0 + 2 * STEP, 102.0)])
            assert other == {"accepted": 2, "duplicates": 0, "rejected": []}

    events = aws.dynamodb().meta.events
    events.register("before-parameter-build.dynamodb.BatchGetItem", mark_day_reads)
    events.register("after-call.dynamodb.BatchGetItem", race_after_the_read)
    receipt = push(site, [reading(T0 + STEP, 101.0), reading(T0 + 2 * STEP, 999.0), reading(T0 + 3 * STEP, 103.0)])
    assert raced
    assert receipt["accepted"] == 1 and receipt["duplicates"] == 1
    assert [r["index"] for r in receipt["rejected"]] == [1] and "already has the value 102" in receipt["rejected"][0]["error"]
    assert stored(site) == [(T0, 100.0), (T0 + STEP, 101.0), (T0 + 2 * STEP, 102.0), (T0 + 3 * STEP, 103.0)]


def test_values_come_back_exactly_as_sent(site):
    """The packed day keeps each value as the number it arrived as (to the µkWh)."""
    values = [0.0, 0.000001, 28540.24, 123456789.123456, 999999999.999999, 4294967.295, -12.5]
    push(site, [reading(T0 + i * STEP, v) for i, v in enumerate(values)])
    assert [v for _t, v in stored(site)] == values
    assert push(site, [reading(T0 + i * STEP, v) for i, v in enumerate(values)])["duplicates"] == len(values)
