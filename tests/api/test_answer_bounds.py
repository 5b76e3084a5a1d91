"""No answer over the bound (issue 20 item 3): what the estimate lets through is within the bound as Lambda
counts it (the proxy answer's JSON), and every list is a 413 past it. The building-scale case is
tests/api/test_answer_bounds_building.py.
"""
import json
import urllib.parse
import xml.etree.ElementTree as ElementTree
from zoneinfo import ZoneInfo

import pytest
import yaml

from chalicelib.metering import consumption, meters
from chalicelib.platform import answers
from tests.building import DAY, build, ingest_all, stamp

MARCH = 1772323200          # 2026-03-01T00:00:00Z
FORMATS = ("json", "xml", "yaml")


@pytest.fixture(scope="module")
def stack():
    from tests.module_aws import module_stack

    with module_stack() as made:
        yield made


class TableCalls:
    """DynamoDB calls per table (physical name), through botocore's events on the app's client."""

    def __init__(self):
        from chalicelib.platform import aws

        self.by_table: dict[str, int] = {}
        self.events = aws.dynamodb().meta.events
        self.events.register("before-parameter-build.dynamodb.*", self.count)

    def count(self, params, **_kwargs):
        for table in [params.get("TableName")] + list(params.get("RequestItems", {})):
            if table:
                self.by_table[table] = self.by_table.get(table, 0) + 1

    def close(self):
        self.events.unregister("before-parameter-build.dynamodb.*", self.count)


def payload(answer) -> int:
    """The body's size in the payload Lambda returns: the proxy answer is JSON written with ensure_ascii=False
    (python3.12's runtime), the body a JSON string in it; measured here without the product's function."""
    body = answer.body.decode() if isinstance(answer.body, bytes) else answer.body
    return len(json.dumps({"body": body}, ensure_ascii=False).encode()) - len('{"body": ""}')


def error_of(answer, fmt):
    """The error text of an answer in a format (the error body is rendered in the format asked for)."""
    body = answer.body.decode()
    if fmt == "xml":
        return ElementTree.fromstring(body).findtext("error")
    return (yaml.safe_load(body) if fmt == "yaml" else json.loads(body))["error"]


NAME = 'a "quoted" <b>&amp; café ' + "x" * 39        # 64 characters, escaped in every format


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_answer_the_estimate_lets_through_is_within_the_bound(stack, monkeypatch, fmt):
    """Near a (lowered) bound: the most rows the estimate allows answer 200 within the bound, measured as
    Lambda counts them; one day more is a 413. The sample row bounds every row: names escaped in every
    format, the widest floats."""
    account = stack.account()
    project = account.view["project"]
    build(project, 2, MARCH, 10, every=900, prefix=NAME[:-3])
    monkeypatch.setattr(answers, "ANSWER_MAX_BYTES", 60_000)
    sample = consumption.sample_row(meters.all_meters(project), [(MARCH, MARCH + 3600)], ZoneInfo("UTC"))
    limit = answers.most_rows(sample, fmt, consumption.seconds_per_row("hour"))
    days = limit // (24 * 2)
    assert 1 <= days < 10
    fitting = account.request("GET", "/consumption?" + urllib.parse.urlencode(
        {"start": "2026-03-01", "end": f"2026-03-{days:02d}", "period": "hour", "responseType": fmt}))
    assert fitting.status_code == 200
    assert payload(fitting) <= 60_000
    over = account.request("GET", "/consumption?" + urllib.parse.urlencode(
        {"start": "2026-03-01", "end": f"2026-03-{days + 1:02d}", "period": "hour", "responseType": fmt}))
    assert over.status_code == 413 if 24 * 2 * (days + 1) > limit else over.status_code == 200


@pytest.fixture(scope="module")
def listed(stack):
    """A project with something in every list: 12 meters with a latest reading and interval, 4 accounts,
    3 scoped keys, an agent's report."""
    account = stack.account()
    project = account.view["project"]
    made = build(project, 12, MARCH, 1, every=3600)
    ingest_all(project, [{"MeterId": m["MeterId"], "TimeStamping": stamp(MARCH + DAY + s), "value": 2000.0 + s / 60}
                         for m in made for s in (0, 300)])     # a latest reading and interval for every meter
    for n in range(3):
        stack.account(project)
        account.call("PUT", "/keys", body={"label": f"box {n}", "scope": "ingest"})
    account.call("PUT", "/status", body={"time": stamp(MARCH + DAY), "failing_meters": ["suite-001"]})
    return account


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("path", ["/point", "/data", "/interval", "/user", "/status", "/keys"])
def test_every_list_is_413_past_the_bound_and_answers_within_it(listed, monkeypatch, path, fmt):
    query = "?" + urllib.parse.urlencode({"responseType": fmt})
    whole = listed.request("GET", path + query)
    assert whole.status_code == 200
    monkeypatch.setattr(answers, "ANSWER_MAX_BYTES", payload(whole) // 2)
    refused = listed.request("GET", path + query)
    assert refused.status_code == 413, refused.body[:200]
    assert "at most" in error_of(refused, fmt)
    assert payload(refused) < 1000
