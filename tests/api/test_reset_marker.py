"""The reset marker of POST /data: `"reset": true` on the first reading of a new register series (a meter
replaced or reset). Nothing is counted from the meter's previous reading to it, whatever the values, in
/interval, /consumption, /file?period= and the charts; counting resumes from it. It is stored with the
reading, so the answers depend on (meter, time), not on the order the readings arrive in.
"""
import csv
import io
import json
import urllib.parse
from datetime import datetime, timezone

import pytest
import requests

T0 = int(datetime(2026, 3, 9, 8, 0, tzinfo=timezone.utc).timestamp())
STEP = 300


def iso(epoch):
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def shown(epoch):
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def reading(epoch, value, meter="sdm630", **extra):
    return {"MeterId": meter, "TimeStamping": iso(epoch), "value": value, **extra}


def push(account, batch):
    answer = account.request("POST", "/data", body={"readings": batch})
    assert answer.status_code == 200, answer.body
    return json.loads(answer.body)


def get(account, path, **params):
    answer = account.request("GET", path + ("?" + urllib.parse.urlencode(params) if params else ""))
    assert answer.status_code == 200, answer.body
    return json.loads(answer.body)


@pytest.fixture
def site(make_account):
    account = make_account()
    for name in ("sdm630", "control"):
        assert account.request("PUT", "/point", body={"MeterId": name, "SaveEvery": 5}).status_code == 200
    return account


# The case: an SDM630 at 1.13 kWh replaced by a used one at 250,000 kWh; the agent sends the new
# meter's first reading with "reset": true.
OLD = [(T0, 1.0), (T0 + STEP, 1.05), (T0 + 2 * STEP, 1.13)]
NEW = [(T0 + 3 * STEP, 250000.0), (T0 + 4 * STEP, 250000.25), (T0 + 5 * STEP, 250000.75)]


def swap(meter="sdm630", marked=True):
    first, *rest = NEW
    return [reading(t, v, meter) for t, v in OLD] + \
        [reading(*first, meter, **({"reset": True} if marked else {}))] + [reading(t, v, meter) for t, v in rest]


def answers(account):
    """What a user sees of the swap day: hourly and daily consumption, the latest interval, the hourly file."""
    hours = get(account, "/consumption", start="2026-03-09", end="2026-03-09", period="hour", meter="sdm630")
    days = get(account, "/consumption", start="2026-03-09", end="2026-03-09", meter="sdm630")
    interval = [r for r in get(account, "/interval") if r["MeterParam"] == "sdm630"]
    link = account.request("GET", "/file?" + urllib.parse.urlencode(
        {"start": "2026-03-09", "end": "2026-03-09", "period": "hour", "meter": "sdm630", "type": "csv"}))
    assert link.status_code == 303, link.body
    rows = list(csv.DictReader(io.StringIO(requests.get(json.loads(link.body)["url"], timeout=30).text)))
    return hours, days, interval, [(r["PeriodStart"], r["value"]) for r in rows]


def test_a_replaced_meter_marked_as_a_new_series_books_no_jump(site):
    assert push(site, swap()) == {"accepted": 6, "duplicates": 0, "rejected": []}
    assert push(site, swap(meter="control", marked=False))["accepted"] == 6
    hours, days, interval, file_rows = answers(site)
    # 0.13 kWh before the swap, 0.75 after it: not 249,998.87
    assert hours[8]["value"] == pytest.approx(0.88) and days[0]["value"] == pytest.approx(0.88)
    assert hours[8]["PeakDemand"] == pytest.approx(4 * 0.13)      # 08:00-08:15: the old meter's last 0.13 kWh
    assert interval == [{"MeterParam": "sdm630", "TimeStamping": shown(T0 + 5 * STEP), "value": 0.5}]
    assert file_rows[8][1] == repr(hours[8]["value"])
    control = get(site, "/consumption", start="2026-03-09", end="2026-03-09", period="hour", meter="control")
    assert control[8]["value"] > 249998                            # unmarked, the step up is consumption


def test_no_interval_across_the_new_series(site):
    push(site, [reading(t, v) for t, v in OLD])
    push(site, [reading(*NEW[0], reset=True)])
    # the latest interval stays the one before the swap: none ends at the first reading of the new series
    assert get(site, "/interval") == [{"MeterParam": "sdm630", "TimeStamping": shown(T0 + 2 * STEP), "value": 0.08}]
    push(site, [reading(*NEW[1])])
    assert get(site, "/interval") == [{"MeterParam": "sdm630", "TimeStamping": shown(NEW[1][0]), "value": 0.25}]


@pytest.mark.parametrize("order", ["the reset reading first", "the reset reading last", "one by one, backwards"])
def test_the_answers_depend_on_meter_and_time_not_on_arrival_order(make_account, site, order):
    push(site, swap())
    expected = answers(site)
    other = make_account()
    assert other.request("PUT", "/point", body={"MeterId": "sdm630", "SaveEvery": 5}).status_code == 200
    batch = swap()
    if order == "the reset reading first":       # before its left neighbour arrives
        push(other, [batch[3]])
        push(other, batch[:3] + batch[4:])
    elif order == "the reset reading last":      # after both its neighbours
        push(other, batch[:3] + batch[4:])
        push(other, [batch[3]])
    else:
        for entry in reversed(batch):
            push(other, [entry])
    assert answers(other) == expected


def test_the_marker_is_stored_with_the_reading_and_resent_as_a_duplicate(site):
    push(site, swap())
    again = push(site, swap())
    assert again == {"accepted": 0, "duplicates": 6, "rejected": []}
    unmarked = push(site, [reading(*NEW[0])])                       # the same value without the mark
    assert unmarked["rejected"][0]["code"] == "conflict" and "reset" in unmarked["rejected"][0]["error"]
    marked = push(site, [reading(*OLD[1], reset=True)])             # a stored reading sent with the mark
    assert marked["rejected"][0]["code"] == "conflict" and "without" in marked["rejected"][0]["error"]
    assert get(site, "/consumption", start="2026-03-09", end="2026-03-09", meter="sdm630")[0]["value"] == \
        pytest.approx(0.88)


@pytest.mark.parametrize("value, accepted", [(True, True), (False, True), ("true", False), (1, False), (None, False),
                                             ([True], False)])
def test_reset_is_true_false_or_absent_anything_else_is_malformed(site, value, accepted):
    receipt = push(site, [reading(T0, 5.0, reset=value)])
    if accepted:
        assert receipt == {"accepted": 1, "duplicates": 0, "rejected": []}
    else:
        [rejected] = receipt["rejected"]
        assert rejected["code"] == "malformed" and "reset" in rejected["error"]


def test_false_is_the_same_as_absent(site):
    push(site, [reading(T0, 5.0, reset=False)])
    assert push(site, [reading(T0, 5.0)]) == {"accepted": 0, "duplicates": 1, "rejected": []}


def test_a_live_reset_reading_in_a_hot_item_counts_the_same(site, time_machine):
    """The same swap pushed live (each reading as it happens: hot items, the open hour, the fold)."""
    for epoch, value in OLD + NEW:
        time_machine.move_to(epoch + 3, tick=False)
        push(site, [reading(epoch, value, **({"reset": True} if (epoch, value) == NEW[0] else {}))])
    time_machine.move_to(NEW[-1][0] + 10, tick=False)
    hours = get(site, "/consumption", start="2026-03-09", end="2026-03-09", period="hour", meter="sdm630")
    assert hours[8]["value"] == pytest.approx(0.88)
    time_machine.move_to(T0 + 4 * 3600, tick=False)                 # hours later: folded into the day item
    push(site, [reading(T0 + 4 * 3600 - STEP, NEW[-1][1])])          # no use since 08:25: hour 8 unchanged
    assert get(site, "/consumption", start="2026-03-09", end="2026-03-09", period="hour", meter="sdm630")[8]["value"] \
        == pytest.approx(0.88)
