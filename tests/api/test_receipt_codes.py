"""POST /data receipts: each rejection carries a machine-readable code beside its English error, and a
failing DynamoDB lookup is a 503 of the whole request, never "unknown meter" rejections."""
import json
from datetime import datetime, timezone

import pytest

from chalicelib.metering import readings
from chalicelib.platform import aws as aws_clients, clock
from tests.aws_faults import AwsFaults

T0 = int(datetime(2026, 1, 10, tzinfo=timezone.utc).timestamp())


def iso(epoch):
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def good(minute, value, meter="m1"):
    return {"MeterId": meter, "TimeStamping": iso(T0 + 60 * minute), "value": value}


@pytest.fixture
def site(make_account):
    account = make_account(timezone="America/Toronto")   # local year 9999 overflows UTC: out of range
    assert account.request("PUT", "/point", body={"MeterId": "m1", "SaveEvery": 1}).status_code == 200
    return account


def push(account, batch):
    answer = account.request("POST", "/data", body={"readings": batch})
    assert answer.status_code == 200, answer.body
    return json.loads(answer.body)


CASES = [
    ("unknown_meter", {"MeterId": "ghost", "TimeStamping": iso(T0), "value": 1}, "unknown meter"),
    ("unknown_meter", {"MeterId": "bad\x00name", "TimeStamping": iso(T0), "value": 1}, "unknown meter"),
    ("malformed", {"MeterId": "m1", "TimeStamping": "yesterday", "value": 1}, "malformed"),
    ("malformed", {"MeterId": "m1", "TimeStamping": iso(T0), "value": "abc"}, "not a number"),
    ("malformed", {"MeterId": "m1", "TimeStamping": iso(T0)}, "number"),
    ("malformed", ["m1", iso(T0), 1], "object"),
    ("malformed", {"TimeStamping": iso(T0), "value": 1}, "MeterId"),
    ("not_finite", {"MeterId": "m1", "TimeStamping": iso(T0), "value": "NaN"}, "finite"),
    ("out_of_range", {"MeterId": "m1", "TimeStamping": iso(T0), "value": 1e300}, "range"),
    ("out_of_range", {"MeterId": "m1", "TimeStamping": iso(T0), "value": 10 ** 400}, "range"),
    ("out_of_range", {"MeterId": "m1", "TimeStamping": "9999-12-31T23:00:00", "value": 1}, "range"),
]


def test_every_rejection_has_its_code_and_keeps_its_english_error(site):
    batch = [case for _code, case, _text in CASES]
    batch.append({"MeterId": "m1", "TimeStamping": iso(int(clock.now()) + 3600), "value": 1})
    receipt = push(site, batch)
    got = [(r["index"], r["code"], r["error"]) for r in receipt["rejected"]]
    expected = [(i, code, text) for i, (code, _case, text) in enumerate(CASES)] + [(len(CASES), "future", "future")]
    assert [(i, code) for i, code, _e in got] == [(i, code) for i, code, _t in expected]
    assert all(text.lower() in error.lower() for (_i, _c, error), (_j, _d, text) in zip(got, expected))


def test_conflict_and_day_full_codes(site, monkeypatch):
    assert push(site, [good(1, 5.0)])["accepted"] == 1
    [conflict] = push(site, [good(1, 6.0)])["rejected"]
    assert conflict["code"] == "conflict" and "already has the value" in conflict["error"]
    monkeypatch.setattr(readings, "MAX_PER_DAY", 2)
    receipt = push(site, [good(2, 7.0), good(3, 8.0)])
    assert {r["code"] for r in receipt["rejected"]} == {"day_full"} and receipt["accepted"] == 0


def test_busy_code_when_the_day_keeps_being_written_by_others(site):
    # Every conditional write of the day fails, as when other requests keep writing it first.
    AwsFaults.planned([aws_clients.dynamodb()], {("PutItem", n): "condition_failed" for n in range(1, 6)})
    receipt = push(site, [good(4, 9.0)])
    assert [r["code"] for r in receipt["rejected"]] == ["busy"] and "send it again" in receipt["rejected"][0]["error"]


@pytest.mark.parametrize("kind", ["throttle", "server_error", "timeout"])
def test_a_failing_meter_lookup_is_a_503_of_the_whole_request_not_unknown_meter(site, kind):
    # The first BatchGetItem of a POST /data is the site names' SITE# aliases (meters.find_by_site_names).
    faults = AwsFaults.planned([aws_clients.dynamodb()], {("BatchGetItem", 1): kind})
    answer = site.request("POST", "/data", body={"readings": [good(5, 10.0)]})
    assert faults.failed[kind] == 1
    assert answer.status_code == 503, answer.body
    assert int(answer.headers["Retry-After"]) > 0 and "unknown meter" not in answer.body.decode()
    assert push(site, [good(5, 10.0)]) == {"accepted": 1, "duplicates": 0, "rejected": []}
