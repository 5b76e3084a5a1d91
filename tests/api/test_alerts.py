"""Alerts (issue 22): rules, their evaluation each minute, signed webhooks and e-mails through queues, the history.

What a person relies on: a meter that stops reporting, an agent that goes quiet or a meter that uses too
much reaches them once when it starts and once when it ends, never in between and never twice, however
runs overlap or AWS fails; a webhook they receive is signed as the integrations they know (checked here by
Stripe's own library, not ours), arrives although another receiver hangs, and is retried for an hour; the
secret is theirs alone. Time is moved with time-machine (the app's clock, moto's queues and TTLs alike).

The schedule, the evaluator's queue and the delivery queue are the whole account's (the schedule pages every
project with rules; a queue holds every project's messages): the tests that run them, drain a queue or read
every item start on an empty moto (fresh_aws); the tests of rules alone share the module's.
"""
import json
import os
import threading
import time
from datetime import datetime, timedelta, timezone
from urllib.parse import urlencode

import boto3
import pytest
import requests
import stripe
from botocore.exceptions import ClientError

from chalicelib.alerts import delivery, evaluator, events, rules, sealing, webhooks
from chalicelib.platform import aws as aws_clients
from chalicelib.platform import clock, db
from chalicelib.tables import accounts_table
from tests.alerts_support import Receiver, drain_deliveries, drain_evaluations, queued, scheduled_event, sqs

pytestmark = pytest.mark.usefixtures("fast_hashing")
HOOK = "https://example.com/hooks/intellimeter"


def iso(epoch):
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def push(account, meter, value, epoch=None):
    """POST /data of one reading stamped now (or at epoch); the whole second it was stamped with."""
    stamped = int(clock.now() if epoch is None else epoch)
    readings = [{"MeterId": meter, "TimeStamping": iso(stamped), "value": value}]
    receipt = account.call("POST", "/data", body={"readings": readings})
    assert receipt["accepted"] + receipt["duplicates"] == 1, receipt
    return stamped


def meters_of(account, *names, save_every=1):
    for name in names:
        account.call("PUT", "/point", body={"MeterId": name, "SaveEvery": save_every})


def evaluate(account):
    """One run over the account's project, as the evaluation worker runs it; the events written."""
    return evaluator.evaluate_projects([account.view["project"]])


def history(account, days_back=2):
    """GET /alerts/events of the last days; start and end are the project's local days, and a project east
    of UTC (Europe/Paris) is already in tomorrow late in the UTC day: end one day past UTC's today."""
    today = datetime.fromtimestamp(clock.now(), timezone.utc).date()
    return account.call("GET", "/alerts/events", {"start": str(today - timedelta(days=days_back)),
                                                   "end": str(today + timedelta(days=1))})


def rule_item(account, alert_id):
    return db.get(accounts_table.NAME, accounts_table.alert_key(account.view["project"], alert_id))


class _Failures(list):
    expected = False


@pytest.fixture(autouse=True)
def evaluation_failures():
    """The evaluator logs a failing project and goes on (the next minute retries it): here any such failure
    fails the test, but in the tests that inject AWS faults (they set evaluation_failures.expected)."""
    import logging

    failures = _Failures()

    class Failures(logging.Handler):
        def emit(self, record):
            if "alert evaluation of projects" in record.getMessage():
                failures.append(record.getMessage())

    handler = Failures(level=logging.WARNING)
    logging.getLogger("intellimeter.alerts").addHandler(handler)
    yield failures
    logging.getLogger("intellimeter.alerts").removeHandler(handler)
    if not failures.expected:
        assert failures == []


@pytest.fixture
def receiver():
    found = Receiver()
    yield found
    found.close()


# ---- rules ---------------------------------------------------------------------------------------------

def test_a_rule_of_each_kind_is_made_listed_and_deleted(client, make_account):
    account = make_account()
    meters_of(account, "hvac")
    made = [account.call("PUT", "/alerts", body=body) for body in (
        {"kind": "meter_silent", "meter": "hvac", "webhook": HOOK},
        {"kind": "agent_silent", "minutes": 15, "email": "Ops@Example.com"},
        {"kind": "usage_above", "kWh": 50, "period": "Hour", "webhook": HOOK})]
    assert [m["secret"] is not None for m in made] == [True, False, True]
    listed = account.call("GET", "/alerts")
    assert [r["id"] for r in listed] == [m["id"] for m in made]
    assert listed[0] == {"id": made[0]["id"], "kind": "meter_silent", "meter": "hvac", "minutes": None, "kWh": None,
                         "period": None, "email": None, "webhook": HOOK, "state": "resolved", "firing": 0,
                         "last_fired": None, "last_error": None, "created": listed[0]["created"]}
    assert (listed[1]["minutes"], listed[1]["email"]) == (15, "ops@example.com")
    assert (listed[2]["kWh"], listed[2]["period"], listed[2]["meter"]) == (50, "hour", None)
    account.call("POST", "/point", body={"name": "hvac", "new": "air handling"})       # a rename keeps the rule
    assert account.call("GET", "/alerts")[0]["meter"] == "air handling"
    assert account.call("DELETE", "/alerts", {"id": made[1]["id"]}) == {}
    assert [r["id"] for r in account.call("GET", "/alerts")] == [made[0]["id"], made[2]["id"]]
    account.call("DELETE", "/alerts", {"id": made[1]["id"]}, status=404)


W = {"webhook": HOOK}


@pytest.mark.parametrize("body, named", [
    ({}, ["kind is required", "a target is required"]),
    ({"kind": "meter_silent"}, ["a target is required"]),
    ({"kind": "bogus", **W}, ["kind must be one of meter_silent, agent_silent, usage_above"]),
    ({"kind": ["meter_silent"], **W}, ["kind must be one of"]),
    ({"kind": "agent_silent", **W}, ["minutes is required for agent_silent rules"]),
    ({"kind": "agent_silent", "minutes": 1, **W}, ["minutes must be between 2 and 10080"]),
    ({"kind": "agent_silent", "minutes": "ten", **W}, ["minutes must be an integer"]),
    ({"kind": "meter_silent", "minutes": 5, **W}, ["minutes: meter_silent rules take no minutes"]),
    ({"kind": "agent_silent", "minutes": 5, "meter": "hvac", **W}, ["meter: agent_silent rules take no meter"]),
    ({"kind": "usage_above", **W}, ["kWh is required", "period is required"]),
    ({"kind": "usage_above", "kWh": 0, "period": "week", **W}, ["kWh must be more than 0", "period must be one of hour, day"]),
    ({"kind": "usage_above", "kWh": "NaN", "period": "day", **W}, ["kWh must be a finite number"]),
    ({"kind": "usage_above", "kwh": 5, "period": "hour", **W}, ["kwh is not a field: the field is kWh", "kWh is required"]),
    ({"kind": "meter_silent", "webhook": "http://example.com/x"}, ["webhook must be https"]),
    ({"kind": "meter_silent", "webhook": "ftp://example.com/x"}, ["webhook must be an https URL"]),
    ({"kind": "meter_silent", "webhook": "https://user:pw@example.com/x"}, ["webhook must not carry credentials"]),
    ({"kind": "meter_silent", "webhook": "https://169.254.169.254/latest/meta-data"}, ["webhook must reach a public address"]),
    ({"kind": "meter_silent", "webhook": "https://10.1.2.3/x"}, ["webhook must reach a public address"]),
    ({"kind": "meter_silent", "webhook": "https://[::1]:8443/x"}, ["webhook must reach a public address"]),
    ({"kind": "meter_silent", "webhook": "https://example.com:99999/x"}, ["webhook is not a URL"]),
    ({"kind": "meter_silent", "webhook": "https://example.com/x#frag"}, ["webhook must not have a #fragment"]),
    ({"kind": "meter_silent", "webhook": "https://exa mple.com/"}, ["webhook must not contain spaces"]),
    ({"kind": "meter_silent", "webhook": "https://example.com/" + "x" * 2100}, ["webhook is too long"]),
    ({"kind": "meter_silent", "email": "not an address"}, ["email must be an address"]),
    ({"kind": "meter_silent", "email": "ops@example.com", **W}, ["one target per rule"]),
    ({"kind": "meter_silent", "meter": "", **W}, ["meter must not be empty"]),
    # everything at once: each problem named in the one answer
    ({"kind": "usage_above", "kWh": -3, "period": "fortnight", "minutes": 4, "email": "x", "webhook": "http://x.org"},
     ["kWh must be", "period must be one of", "minutes: usage_above rules take no minutes", "email must be",
      "webhook must be https", "one target per rule"]),
])
def test_every_problem_of_a_rule_is_a_400_naming_its_field_and_nothing_is_made(client, make_account, body, named):
    account = make_account()
    meters_of(account, "hvac")
    answer = account.request("PUT", "/alerts", body)
    assert answer.status_code == 400, answer.body
    message = json.loads(answer.body)["error"]
    for fragment in named:
        assert fragment in message, (fragment, message)
    assert account.call("GET", "/alerts") == []


def test_an_unknown_meter_is_a_404_naming_the_field(client, make_account):
    account = make_account()
    answer = account.request("PUT", "/alerts", {"kind": "meter_silent", "meter": "ghost", **W})
    assert answer.status_code == 404 and "meter: no meter named 'ghost'" in json.loads(answer.body)["error"]


def test_a_form_body_works_like_json(client, make_account):
    account = make_account()
    answer = account.client.http.put("/alerts", body=urlencode({"kind": "agent_silent", "minutes": "30", "webhook": HOOK}),
                                     headers={**account.headers, "Content-Type": "application/x-www-form-urlencoded"})
    assert answer.status_code == 200, answer.body
    assert json.loads(answer.body)["minutes"] == 30


def test_loopback_webhooks_only_over_http_only_where_the_stage_allows(aws, monkeypatch):
    assert webhooks.check_url("http://127.0.0.1:8123/hook") == "http://127.0.0.1:8123/hook"   # the local stage
    assert webhooks.check_url("http://localhost/hook")
    assert webhooks.check_url("https://hooks.example.com/a?b=c") == "https://hooks.example.com/a?b=c"
    monkeypatch.setenv("ALERT_LOOPBACK_WEBHOOKS", "false")                                    # a deployed stage
    with pytest.raises(Exception, match="local stack only"):
        webhooks.check_url("http://127.0.0.1:8123/hook")


def test_a_webhook_name_resolving_to_a_private_address_is_not_called(aws, receiver):
    """Checked at each delivery, on the address the connection is made to (a name may change what it
    resolves to after the rule is made): https to a name of the loopback is refused before connecting."""
    port = receiver.url.rsplit(":", 1)[1]
    outcome = webhooks.post(f"https://localhost:{port}/ok", b"{}", {})
    assert not outcome.delivered and "no address a webhook may reach" in str(outcome.error)
    assert receiver.posts == []


def test_only_an_account_manages_rules_and_read_keys_see_them_without_credentials(client, make_account):
    account = make_account()
    made = account.call("PUT", "/alerts", body={"kind": "meter_silent", "webhook": HOOK + "/T0KEN?sig=abc"})
    account.call("PUT", "/alerts", body={"kind": "meter_silent", "email": "night.shift@example.com"})
    keys = {scope: account.call("PUT", "/keys", body={"label": scope, "scope": scope})["key"] for scope in ("read", "ingest")}

    def by(scope, method, path, body=None):
        headers = {"X-API-Key": keys[scope], "Content-Type": "application/json"}
        return getattr(client.http, method.lower())(path, headers=headers, body=json.dumps(body) if body else None)

    listed = json.loads(by("read", "GET", "/alerts").body)
    assert [r["webhook"] for r in listed] == ["https://example.com/…", None]
    assert [r["email"] for r in listed] == [None, "…@example.com"]
    assert by("read", "GET", "/alerts/events?start=2026-01-01&end=2026-01-02").status_code == 200
    assert by("read", "PUT", "/alerts", {"kind": "meter_silent", **W}).status_code == 403
    assert by("read", "DELETE", f"/alerts?id={made['id']}").status_code == 403
    assert by("ingest", "GET", "/alerts").status_code == 403
    other = make_account()
    other.call("DELETE", "/alerts", {"id": made["id"]}, status=404)                    # another project's rule
    assert other.call("GET", "/alerts") == []
    assert len(account.call("GET", "/alerts")) == 2


@pytest.mark.fresh_aws
def test_the_secret_is_shown_once_never_stored_in_clear_nor_logged(client, make_account, receiver, caplog,
                                                                   time_travel):
    import logging

    caplog.set_level(logging.DEBUG)
    account = make_account()
    meters_of(account, "hvac")
    push(account, "hvac", 10)
    answer = account.request("PUT", "/alerts", {"kind": "meter_silent", "webhook": receiver.to("/ok")})
    assert answer.headers["Cache-Control"] == "no-store"
    made = json.loads(answer.body)
    secret = made["secret"]
    assert secret.startswith("whsec_") and len(secret) > 40
    assert "secret" not in account.call("GET", "/alerts")[0]
    time_travel.shift(10 * 60)
    assert evaluate(account) == 1
    receiver.secrets["/ok"] = secret
    assert drain_deliveries() == 1
    assert receiver.at("/ok")[0]["verified"] is True
    stored = [item for page in boto3.client("dynamodb", region_name="us-east-1").get_paginator("scan").paginate(
        TableName=os.environ["ACCOUNTS_TABLE"]) for item in page["Items"]]
    assert stored and secret not in json.dumps(stored, default=str)
    for name, value in os.environ.items():
        assert secret not in value, name
    assert all(secret not in record.getMessage() for record in caplog.records)
    assert all(secret not in json.dumps(m) for m in sqs().receive_message(
        QueueUrl=os.environ["ALERT_DELIVERY_QUEUE_URL"], MaxNumberOfMessages=10).get("Messages", []))
    sealed = rule_item(account, made["id"])["secret"]
    assert sealing.unseal(sealed, account.view["project"], made["id"]) == secret
    with pytest.raises(ClientError, match="InvalidCiphertext"):     # its encryption context binds it to its rule
        sealing.unseal(sealed, account.view["project"], made["id"] + 1)


def test_at_most_50_rules_a_project_even_when_created_in_parallel(live_api, serialized_aws):
    headers = {"X-API-Key": live_api.key}
    for _ in range(rules.MAX_RULES - 5):
        assert requests.put(live_api.url + "/alerts", json={"kind": "meter_silent", **W}, headers=headers,
                            timeout=60).status_code == 200
    answers = []

    def create():
        answers.append(requests.put(live_api.url + "/alerts", json={"kind": "meter_silent", **W}, headers=headers,
                                    timeout=60))

    threads = [threading.Thread(target=create) for _ in range(15)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(a.status_code for a in answers) == [200] * 5 + [409] * 10
    assert all("50 alert rules" in a.json()["error"] for a in answers if a.status_code == 409)
    listed = requests.get(live_api.url + "/alerts", headers=headers, timeout=60).json()
    assert len(listed) == rules.MAX_RULES
    entry = db.get(accounts_table.NAME, accounts_table.alerting_key(live_api.project_id))
    assert entry["alert_ids"] == {rule["id"] for rule in listed}
    requests.delete(live_api.url + f"/alerts?id={listed[0]['id']}", headers=headers, timeout=60).raise_for_status()
    assert requests.put(live_api.url + "/alerts", json={"kind": "meter_silent", **W}, headers=headers,
                        timeout=60).status_code == 200


# ---- evaluation ----------------------------------------------------------------------------------------

@pytest.mark.fresh_aws
def test_meter_silent_fires_once_when_a_meter_leaves_ok_and_resolves_once_when_it_is_back(client, make_account,
                                                                                          time_travel):
    account = make_account()
    meters_of(account, "hvac", "lighting")
    made = account.call("PUT", "/alerts", body={"kind": "meter_silent", "meter": "hvac", **W})
    value = 100.0
    for _ in range(5):                                 # both report each minute: nothing fires
        value += 1
        last_hvac = push(account, "hvac", value)
        push(account, "lighting", value)
        assert evaluate(account) == 0
        time_travel.shift(60)
    fired = []
    for _ in range(30):                                # hvac stops, lighting goes on: one firing, when it turns late
        value += 1
        push(account, "lighting", value)
        fired.append(evaluate(account))
        time_travel.shift(60)
    assert sum(fired) == 1
    assert fired.index(1) in (6, 7)                    # 2 × SaveEvery + 5 minutes after its last reading
    status = {m["MeterParam"]: m["State"] for m in account.call("GET", "/status")["meters"]}
    assert status == {"hvac": "late", "lighting": "ok"}
    listed = account.call("GET", "/alerts")[0]
    assert (listed["state"], listed["firing"]) == ("firing", 1) and listed["last_fired"] is not None
    push(account, "hvac", value)                       # it reports again: resolved once
    assert [evaluate(account) for _ in range(5)] == [1, 0, 0, 0, 0]
    assert account.call("GET", "/alerts")[0]["state"] == "resolved"
    firing, resolved = history(account)
    assert firing == {**firing, "alert": made["id"], "kind": "meter_silent", "state": "firing", "meter": "hvac",
                      "agent": None, "project": account.view["project"]}
    assert datetime.fromisoformat(firing["since"]).timestamp() == last_hvac + 2 * 60 + 300
    assert firing["value"] >= 7
    assert (resolved["state"], resolved["meter"]) == ("resolved", "hvac") and resolved["value"] < 1
    assert firing["id"] != resolved["id"]


@pytest.mark.fresh_aws
def test_a_rule_without_meter_watches_each_meter_on_its_own(client, make_account, time_travel):
    account = make_account()
    meters_of(account, "a", "b", "c")
    account.call("PUT", "/alerts", body={"kind": "meter_silent", **W})
    for name in "abc":
        push(account, name, 1)
    time_travel.shift(10 * 60)
    push(account, "c", 2)
    assert evaluate(account) == 2
    assert account.call("GET", "/alerts")[0]["firing"] == 2
    assert sorted(e["meter"] for e in history(account)) == ["a", "b"]
    push(account, "a", 3)
    assert evaluate(account) == 1
    assert [(e["meter"], e["state"]) for e in history(account)][-1] == ("a", "resolved")
    assert account.call("GET", "/alerts")[0]["firing"] == 1


@pytest.mark.fresh_aws
def test_a_meter_that_never_reported_is_not_silent(client, make_account, time_travel):
    account = make_account()
    meters_of(account, "new")
    account.call("PUT", "/alerts", body={"kind": "meter_silent", **W})
    time_travel.shift(3600)
    assert evaluate(account) == 0


@pytest.mark.fresh_aws
def test_agent_silent_fires_after_minutes_without_put_status_and_resolves_at_its_next_report(client, make_account,
                                                                                            time_travel):
    account = make_account()
    key = account.call("PUT", "/keys", body={"label": "site A agent", "scope": "ingest"})["key"]

    def report():
        answer = client.http.put("/status", body=json.dumps({"time": iso(clock.now())}),
                                 headers={"X-API-Key": key, "Content-Type": "application/json"})
        assert answer.status_code == 200

    report()
    account.call("PUT", "/alerts", body={"kind": "agent_silent", "minutes": 5, **W})
    fired = []
    for _ in range(10):
        time_travel.shift(60)
        fired.append(evaluate(account))
    assert fired == [0, 0, 0, 0, 1, 0, 0, 0, 0, 0]       # 5 minutes after its last report
    report()
    assert [evaluate(account), evaluate(account)] == [1, 0]
    firing, resolved = history(account)
    assert (firing["agent"], firing["meter"], firing["state"]) == ("site A agent", None, "firing")
    assert resolved["state"] == "resolved" and resolved["value"] < 1


@pytest.mark.fresh_aws
def test_usage_above_an_hour_fires_while_over_and_resolves_after_a_whole_hour_within(client, make_account,
                                                                                     time_travel):
    account = make_account(timezone="America/Toronto")
    meters_of(account, "hvac", save_every=5)
    hour = (int(clock.now()) // 3600 - 5) * 3600          # a whole local hour (Toronto is a whole-hour zone)
    time_travel.move_to(hour, tick=False)
    account.call("PUT", "/alerts", body={"kind": "usage_above", "period": "hour", "kWh": 10, "meter": "hvac", **W})
    value, written = 1000.0, []
    push(account, "hvac", value)
    for step in range(36):                                 # 1 kWh per 5 minutes for an hour, then 0.5, then 0.5
        time_travel.move_to(hour + 300 * (step + 1), tick=False)
        value += 1.0 if step < 12 else 0.5
        push(account, "hvac", value)
        written.append(evaluate(account))
    # 11 kWh so far in the first hour: over 10. The next hour (6 kWh) follows an hour over: still firing. At
    # the end of that whole hour within the bound, resolved; the third hour (6 kWh) fires nothing.
    assert written == [0] * 10 + [1] + [0] * 12 + [1] + [0] * 12
    firing, resolved = history(account)
    assert firing["value"] == pytest.approx(11) and firing["since"].startswith(
        datetime.fromtimestamp(hour, clock.zone("America/Toronto")).isoformat())
    assert resolved["state"] == "resolved" and resolved["value"] == pytest.approx(6)
    assert datetime.fromisoformat(resolved["since"]).timestamp() == hour + 3600


@pytest.mark.fresh_aws
def test_usage_above_a_day(client, make_account, time_travel):
    account = make_account()
    meters_of(account, "main", save_every=60)
    day = (int(clock.now()) // 86400 - 4) * 86400
    time_travel.move_to(day, tick=False)
    account.call("PUT", "/alerts", body={"kind": "usage_above", "period": "day", "kWh": 100, **W})
    value, written = 0.0, []
    push(account, "main", value)
    for step in range(72):                                 # 10 kWh an hour for a day, then 2
        time_travel.move_to(day + 3600 * (step + 1), tick=False)
        value += 10 if step < 24 else 2
        push(account, "main", value)
        written.append(evaluate(account))
    assert written.index(1) == 10                          # 110 kWh by 11:00
    assert sum(written) == 2 and written.index(1, 11) == 47   # resolved when a whole day (48 kWh) is over
    firing, resolved = history(account, 4)
    assert (firing["state"], firing["value"]) == ("firing", pytest.approx(110))        # the day so far
    assert (resolved["state"], resolved["value"]) == ("resolved", pytest.approx(48))   # the whole day within


def test_the_usage_of_a_messages_projects_is_read_at_once_and_each_judged_on_its_own(client, make_account,
                                                                                       time_travel):
    """Three projects in three zones, each with a meter "m" and the same hourly bound, evaluated as one
    message: the month items of all their meters come in one BatchGetItem, and each project fires on its
    own meter's use (20, 5 and 20 kWh this hour against 10), never on another's."""
    zones = ["UTC", "America/Toronto", "Europe/Paris"]            # whole-hour zones: one local hour for all
    accounts = [make_account(timezone=zone) for zone in zones]
    hour = (int(clock.now()) // 3600 - 3) * 3600
    time_travel.move_to(hour, tick=False)
    for account in accounts:
        meters_of(account, "m", save_every=5)
        account.call("PUT", "/alerts", body={"kind": "usage_above", "period": "hour", "kWh": 10, "meter": "m", **W})
        push(account, "m", 1000.0)
    time_travel.move_to(hour + 1800, tick=False)
    for account, used in zip(accounts, (20, 5, 20)):
        push(account, "m", 1000.0 + used)
    time_travel.move_to(hour + 2400, tick=False)
    rollup_reads = []

    def note(params, **_kwargs):
        keys = [k for request in params["RequestItems"].values() for k in request["Keys"]]
        if any(k.get("meter", {}).get("S", "").startswith("ROLLUP#") for k in keys):
            rollup_reads.append(len(keys))

    aws_clients.dynamodb().meta.events.register("before-parameter-build.dynamodb.BatchGetItem", note)
    try:
        written = evaluator.evaluate_projects([a.view["project"] for a in accounts])
    finally:
        aws_clients.dynamodb().meta.events.unregister("before-parameter-build.dynamodb.BatchGetItem", note)
    assert written == 2
    assert len(rollup_reads) == 1 and rollup_reads[0] >= 3, rollup_reads
    fired = [[(e["state"], e["meter"], e["value"]) for e in history(account)] for account in accounts]
    assert fired == [[("firing", "m", pytest.approx(20))], [], [("firing", "m", pytest.approx(20))]]


@pytest.mark.fresh_aws
def test_two_overlapping_runs_write_and_send_each_event_once(client, make_account, time_travel, serialized_aws,
                                                            receiver):
    account = make_account()
    meters_of(account, "hvac")
    push(account, "hvac", 5)
    made = account.call("PUT", "/alerts", body={"kind": "meter_silent", "webhook": receiver.to("/ok")})
    receiver.secrets["/ok"] = made["secret"]
    time_travel.shift(10 * 60)
    both_read = threading.Barrier(2)

    def overlap(**_kwargs):          # each run has read the rule's state before either writes
        both_read.wait(timeout=20)

    aws_clients.dynamodb().meta.events.register_first("before-call.dynamodb.TransactWriteItems", overlap)
    results = []
    runs = [threading.Thread(target=lambda: results.append(evaluate(account))) for _ in range(2)]
    for run in runs:
        run.start()
    for run in runs:
        run.join()
    aws_clients.dynamodb().meta.events.unregister("before-call.dynamodb.TransactWriteItems", overlap)
    assert sorted(results) == [0, 1]
    assert len(history(account)) == 1
    assert rule_item(account, made["id"])["version"] == 1
    assert drain_deliveries() == 1
    assert [p["verified"] for p in receiver.posts] == [True]


@pytest.mark.fresh_aws
def test_the_schedule_queues_each_project_with_rules_once_in_batches(aws, make_account, monkeypatch, time_travel):
    from app import alert_schedule

    monkeypatch.setattr(evaluator, "BATCH", 4)
    monkeypatch.setattr(evaluator, "INDEX_PAGE", 3)
    zone = clock.zone("UTC")
    projects = []
    for _ in range(10):
        account = make_account()
        rules.create(account.view["project"], {"kind": "meter_silent", **W}, zone)
        projects.append(account.view["project"])
    emptied = make_account().view["project"]
    gone = rules.create(emptied, {"kind": "meter_silent", **W}, zone)
    rules.delete(emptied, gone["id"])
    alert_schedule(scheduled_event(), None)
    bodies = []
    while True:
        got = sqs().receive_message(QueueUrl=os.environ["ALERT_EVALUATION_QUEUE_URL"], MaxNumberOfMessages=10)
        if not got.get("Messages"):
            break
        for message in got["Messages"]:
            bodies.append(json.loads(message["Body"]))
            sqs().delete_message(QueueUrl=os.environ["ALERT_EVALUATION_QUEUE_URL"], ReceiptHandle=message["ReceiptHandle"])
    assert sorted(len(b["projects"]) for b in bodies) == [2, 4, 4]
    assert sorted(p for b in bodies for p, _ids in b["projects"]) == projects
    assert all(len(ids) == 1 for b in bodies for _p, ids in b["projects"])     # with the ids of their rules
    assert db.get(accounts_table.NAME, accounts_table.alerting_key(emptied)) is None     # forgotten


@pytest.mark.fresh_aws
def test_no_new_round_is_queued_while_the_last_one_waits_for_workers(client, make_account, time_travel):
    """More projects than the workers take in a minute: the rounds grow longer, none is dropped or piled up."""
    from app import alert_schedule

    account = make_account()
    meters_of(account, "hvac")
    push(account, "hvac", 1)
    account.call("PUT", "/alerts", body={"kind": "meter_silent", **W})
    time_travel.shift(10 * 60)
    alert_schedule(scheduled_event(), None)
    time_travel.shift(60)
    alert_schedule(scheduled_event(), None)                # the workers have not taken the first round yet
    assert queued("ALERT_EVALUATION_QUEUE_URL") == 1
    assert drain_evaluations() == 1
    assert len(history(account)) == 1
    alert_schedule(scheduled_event(), None)
    assert queued("ALERT_EVALUATION_QUEUE_URL") == 1


@pytest.mark.fresh_aws
@pytest.mark.parametrize("fault", ["throttle", "lost_answer"])
def test_events_committed_but_not_queued_are_queued_by_a_later_run_and_sent_once(client, make_account, time_travel,
                                                                                 receiver, fault):
    """The delivery queue refuses the events (or takes them but the answer is lost): they stay in the rule's
    unsent set, a run REDRIVE_SECONDS later queues them, and the receiver gets each once."""
    from tests.aws_faults import AwsFaults, app_clients

    account = make_account()
    meters_of(account, "hvac")
    push(account, "hvac", 1)
    made = account.call("PUT", "/alerts", body={"kind": "meter_silent", "webhook": receiver.to("/ok")})
    time_travel.shift(10 * 60)
    faults = AwsFaults.planned(app_clients(), {("SendMessageBatch", 1): fault})
    assert evaluate(account) == 1
    assert rule_item(account, made["id"])["unsent"]
    assert evaluate(account) == 0                         # too soon: the first run may still be queueing them
    time_travel.shift(evaluator.REDRIVE_SECONDS)
    assert evaluate(account) == 0
    faults.enabled = False
    assert "unsent" not in rule_item(account, made["id"])
    drain_deliveries()
    assert len(receiver.posts) == 1 and len(history(account)) == 1


@pytest.mark.fresh_aws
def test_evaluation_under_random_aws_faults_loses_and_repeats_no_event(client, make_account, time_travel, receiver,
                                                                      evaluation_failures):
    """Meters go silent and come back while a third of the evaluator's AWS calls fail (throttled, 5xx,
    timeouts, answers lost after the call was carried out, transactions cancelled): once the faults stop,
    each meter's history is firing, resolved, firing, … with no event lost or repeated, and each event is
    delivered (Stripe-verified) exactly once."""
    from tests.aws_faults import AwsFaults, app_clients

    account = make_account()
    names = ["m1", "m2", "m3"]
    meters_of(account, *names)
    made = account.call("PUT", "/alerts", body={"kind": "meter_silent", "webhook": receiver.to("/ok")})
    receiver.secrets["/ok"] = made["secret"]
    plan = {"m1": range(0, 40, 1), "m2": [*range(0, 12), *range(25, 40)], "m3": [*range(0, 5), *range(20, 28)]}
    evaluation_failures.expected = True
    faults = AwsFaults(app_clients(), rate=0.2, seed=22, kinds=("throttle", "server_error", "timeout", "lost_answer",
                                                               "cancelled"))
    faults.enabled = False
    for minute in range(40):
        for name in names:
            if minute in plan[name]:
                push(account, name, minute + 1.0)
        faults.enabled = True
        evaluator.evaluate_projects([account.view["project"]])
        faults.enabled = False
        time_travel.shift(60)
    assert faults.failed_share > 0.1
    for minute in range(3):                               # the faults are over, every meter reports: runs catch up
        for name in names:
            push(account, name, 100.0 + minute)
        evaluator.evaluate_projects([account.view["project"]])
        time_travel.shift(evaluator.REDRIVE_SECONDS // 3)
    evaluator.evaluate_projects([account.view["project"]])
    events_seen = history(account)
    assert [e["state"] for e in events_seen if e["meter"] == "m2"] == ["firing", "resolved"]
    assert [e["state"] for e in events_seen if e["meter"] == "m3"] == ["firing", "resolved", "firing", "resolved"]
    assert not any(e["meter"] == "m1" for e in events_seen)
    drain_deliveries()
    delivered = [p["body"]["id"] for p in receiver.posts]
    assert sorted(delivered) == sorted(e["id"] for e in events_seen)
    assert all(p["verified"] for p in receiver.posts)


@pytest.mark.parametrize("operation, kind, body", [
    ("Encrypt", "throttle", W),
    ("Encrypt", "lost_answer", W),
    ("Subscribe", "throttle", {"email": "ops@example.com"}),
    ("CreateTopic", "server_error", {"email": "ops@example.com"}),
    ("TransactWriteItems", "cancelled", W),
    ("TransactWriteItems", "lost_answer", W),
    ("UpdateItem", "timeout", W),                # the id counter
    ("GetItem", "throttle", W),
])
@pytest.mark.fresh_aws
def test_failing_aws_calls_answer_503_with_retry_after_and_leave_no_rule_half_made(client, make_account, operation,
                                                                                   kind, body):
    from tests.aws_faults import AwsFaults, app_clients

    account = make_account()
    plan = {(operation, n): kind for n in range(1, 20)} if kind != "lost_answer" else {(operation, 1): kind}
    faults = AwsFaults.planned(app_clients(), plan)
    answer = account.request("PUT", "/alerts", {"kind": "meter_silent", **body})
    faults.enabled = False
    assert answer.status_code == 503, answer.body
    assert int(answer.headers["Retry-After"]) >= 1
    listed = account.call("GET", "/alerts")
    entry = db.get(accounts_table.NAME, accounts_table.alerting_key(account.view["project"]))
    assert {r["id"] for r in listed} == set((entry or {}).get("alert_ids", ()))   # whole (with its index entry) or not there
    assert all(r["email"] or r["webhook"] for r in listed)
    assert account.call("PUT", "/alerts", body={"kind": "meter_silent", **body})     # the same request again


@pytest.mark.parametrize("operation, kind", [("TransactWriteItems", "throttle"), ("TransactWriteItems", "lost_answer"),
                                             ("Query", "server_error")])
@pytest.mark.fresh_aws
def test_failing_aws_calls_on_delete_and_list_answer_503_and_keep_the_count(client, make_account, operation, kind):
    from tests.aws_faults import AwsFaults, app_clients

    account = make_account()
    made = account.call("PUT", "/alerts", body={"kind": "meter_silent", **W})
    faults = AwsFaults.planned(app_clients(), {(operation, 1): kind})
    path = "/alerts" if operation == "Query" else f"/alerts?id={made['id']}"
    answer = account.request("GET" if operation == "Query" else "DELETE", path)
    faults.enabled = False
    assert answer.status_code == 503 and answer.headers["Retry-After"]
    listed = account.call("GET", "/alerts")
    entry = db.get(accounts_table.NAME, accounts_table.alerting_key(account.view["project"]))
    assert {r["id"] for r in listed} == set((entry or {}).get("alert_ids", ()))


@pytest.mark.fresh_aws
@pytest.mark.parametrize("code, status", [("InvalidParameter", 400), ("TopicLimitExceeded", 409)])
def test_an_address_or_a_quota_sns_refuses_is_a_4xx_and_no_rule(client, make_account, code, status):
    def refuse(**_kwargs):
        from botocore.awsrequest import AWSResponse

        return AWSResponse("https://sns.invalid/", 400, {}, None), {
            "Error": {"Code": code, "Message": "refused"}, "ResponseMetadata": {"HTTPStatusCode": 400}}

    account = make_account()
    aws_clients.sns().meta.events.register_first("before-call.sns.CreateTopic", refuse)
    try:
        answer = account.request("PUT", "/alerts", {"kind": "meter_silent", "email": "ops@example.com"})
    finally:
        aws_clients.sns().meta.events.unregister("before-call.sns.CreateTopic", refuse)
    assert answer.status_code == status, answer.body
    assert account.call("GET", "/alerts") == []


@pytest.mark.fresh_aws
def test_a_topic_that_cannot_be_deleted_leaves_the_rule_deleted(client, make_account):
    from tests.aws_faults import AwsFaults, app_clients

    account = make_account()
    made = account.call("PUT", "/alerts", body={"kind": "meter_silent", "email": "ops@example.com"})
    faults = AwsFaults.planned(app_clients(), {("DeleteTopic", n): "throttle" for n in range(1, 10)})
    assert account.call("DELETE", "/alerts", {"id": made["id"]}) == {}
    faults.enabled = False
    assert account.call("GET", "/alerts") == []
    assert account.call("PUT", "/alerts", body={"kind": "meter_silent", "email": "ops@example.com"})   # reuses it


# ---- delivery ------------------------------------------------------------------------------------------

def _silent(account, target, time_travel):
    """A meter that reported once, a meter_silent rule to target, and the time moved on so it fires."""
    meters_of(account, "hvac")
    push(account, "hvac", 1)
    made = account.call("PUT", "/alerts", body={"kind": "meter_silent", **target})
    time_travel.shift(10 * 60)
    return made


@pytest.mark.fresh_aws
def test_a_webhook_is_json_signed_as_stripe_checks_its_webhooks(client, make_account, time_travel, receiver):
    account = make_account(timezone="Europe/Paris")
    made = _silent(account, {"webhook": receiver.to("/ok")}, time_travel)
    receiver.secrets["/ok"] = made["secret"]
    assert evaluate(account) == 1
    assert drain_deliveries() == 1
    (post,) = receiver.posts
    assert post["verified"] is True
    timestamp = int(post["header"].split(",")[0].split("=")[1])
    assert abs(timestamp - clock.now()) < 60
    assert list(post["body"]) == ["id", "alert", "kind", "state", "meter", "agent", "since", "value", "project"]
    assert post["body"] == history(account)[0] and post["event"] == post["body"]["id"]
    assert post["body"]["since"].endswith("+01:00") or post["body"]["since"].endswith("+02:00")
    with pytest.raises(stripe.SignatureVerificationError):     # the check can fail: a changed body
        stripe.WebhookSignature.verify_header(post["raw"].replace(b"firing", b"resolvd"), post["header"],
                                              made["secret"], tolerance=300)
    with pytest.raises(stripe.SignatureVerificationError):     # or another rule's secret
        stripe.WebhookSignature.verify_header(post["raw"], post["header"], sealing.new_secret(), tolerance=300)
    assert account.call("GET", "/alerts")[0]["last_error"] is None
    assert "last_delivered" in rule_item(account, made["id"])


@pytest.mark.fresh_aws
def test_the_documented_recipe_verifies_a_delivery_and_refuses_a_changed_or_old_one(client, make_account, time_travel,
                                                                                    receiver):
    """docs/alerts.md's ten lines of Python, run as written, on a webhook as it was received."""
    import re

    with open(os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "docs", "alerts.md"),
              encoding="utf-8") as handle:
        (recipe,) = re.findall(r"```python\n(.*?)```", handle.read(), re.S)
    assert len(recipe.strip().splitlines()) <= 12
    scope: dict = {}
    exec(compile(recipe, "docs/alerts.md", "exec"), scope)   # noqa: S102 - the documentation's own code
    verify = scope["verify"]
    account = make_account()
    made = _silent(account, {"webhook": receiver.to("/ok")}, time_travel)
    evaluate(account)
    drain_deliveries()
    (post,) = receiver.posts
    assert verify(post["raw"], post["header"], made["secret"]) == post["body"]
    with pytest.raises(ValueError, match="does not match"):
        verify(post["raw"].replace(b'"firing"', b'"resolved"'), post["header"], made["secret"])
    with pytest.raises(ValueError, match="does not match"):
        verify(post["raw"], post["header"], sealing.new_secret())
    time_travel.shift(600)
    with pytest.raises(ValueError, match="too long ago"):
        verify(post["raw"], post["header"], made["secret"])


@pytest.mark.fresh_aws
def test_a_failing_receiver_is_retried_with_backoff_for_an_hour_then_dead_lettered(client, make_account, time_travel,
                                                                                   receiver):
    account = make_account()
    made = _silent(account, {"webhook": receiver.to("/fail")}, time_travel)
    assert evaluate(account) == 1
    started = clock.now()
    for _ in range(2 * 60 * 2):                          # two hours in 30-second steps
        drain_deliveries()
        if not queued("ALERT_DELIVERY_QUEUE_URL"):
            break
        time_travel.shift(30)
    attempts = [p["clock"] for p in receiver.posts]
    assert len(attempts) == delivery.ATTEMPTS
    gaps = [later - earlier for earlier, later in zip(attempts, attempts[1:])]
    for gap, wanted in zip(gaps, delivery.BACKOFF):
        assert wanted <= gap <= wanted + 31, (gaps, delivery.BACKOFF)
    assert 3600 <= attempts[-1] - started <= 3600 + 31 * delivery.ATTEMPTS
    assert len({p["body"]["id"] for p in receiver.posts}) == 1      # the same event each time
    dead = sqs().receive_message(QueueUrl=os.environ["ALERT_DEAD_LETTERS_URL"], MaxNumberOfMessages=10)["Messages"]
    assert [json.loads(m["Body"])["attempt"] for m in dead] == [delivery.ATTEMPTS]
    shown = account.call("GET", "/alerts")[0]["last_error"]
    assert shown == {**shown, "attempt": delivery.ATTEMPTS, "retrying": False, "error": "the receiver answered 500",
                     "event": receiver.posts[0]["body"]["id"]}
    assert rule_item(account, made["id"])["last_error"]["retrying"] is False


@pytest.mark.fresh_aws
def test_a_receiver_that_recovers_is_delivered_and_its_error_cleared(client, make_account, time_travel, receiver):
    account = make_account()
    _silent(account, {"webhook": receiver.to("/flaky")}, time_travel)
    receiver.codes["/flaky"] = 503
    evaluate(account)
    drain_deliveries()
    assert account.call("GET", "/alerts")[0]["last_error"]["retrying"] is True
    receiver.codes["/flaky"] = 204
    time_travel.shift(delivery.BACKOFF[0] + 1)
    assert drain_deliveries() == 1
    assert account.call("GET", "/alerts")[0]["last_error"] is None
    assert [p["path"] for p in receiver.posts] == ["/flaky", "/flaky"]


@pytest.mark.fresh_aws
def test_a_hanging_receiver_delays_neither_the_evaluator_nor_other_deliveries(client, make_account, time_travel,
                                                                             receiver, serialized_aws):
    from app import alert_delivery
    from tools import local_worker

    account = make_account()
    meters_of(account, "hvac")
    push(account, "hvac", 1)
    for path in ("/hang", "/fail", "/ok"):
        account.call("PUT", "/alerts", body={"kind": "meter_silent", "webhook": receiver.to(path)})
    time_travel.shift(10 * 60)
    assert evaluate(account) == 3
    assert receiver.posts == []                       # the evaluator only queues: it never waits on a receiver
    assert queued("ALERT_DELIVERY_QUEUE_URL") == 3
    outcomes, ended = [], {}

    def invocation():                                  # Lambda runs each message in an invocation of its own
        outcomes.append(local_worker.receive_once(sqs(), os.environ["ALERT_DELIVERY_QUEUE_URL"], alert_delivery,
                                                  visibility=120))
        ended[threading.current_thread().name] = time.monotonic()

    def start(name):
        thread = threading.Thread(target=invocation, name=name)
        thread.start()
        return thread

    workers: list[threading.Thread] = []
    while not receiver.at("/hang"):                   # until the hanging receiver holds a delivery open
        workers.append(start(f"invocation {len(workers)}"))
        deadline = time.monotonic() + 20
        while len(receiver.posts) < len(workers) and time.monotonic() < deadline:
            time.sleep(0.01)
    hanging = workers[-1].name
    workers += [start(f"invocation {n}") for n in range(len(workers), 3)]
    for worker in workers:
        worker.join(timeout=webhooks.ANSWER_SECONDS + 20)
    # /ok was delivered, and /fail failed, before the delivery held by /hang gave up
    assert receiver.at("/ok")[0]["at"] < ended[hanging] and receiver.at("/fail")[0]["at"] < ended[hanging]
    errors = {r["webhook"].rsplit("/", 1)[1]: r["last_error"] for r in account.call("GET", "/alerts")}
    assert errors["ok"] is None
    assert errors["fail"]["error"] == "the receiver answered 500" and errors["fail"]["retrying"]
    assert errors["hang"]["error"] == f"no answer within {webhooks.ANSWER_SECONDS:g} s" and errors["hang"]["retrying"]
    assert outcomes == [(1, 0)] * 3


@pytest.mark.fresh_aws
def test_a_deleted_rules_queued_deliveries_are_dropped(client, make_account, time_travel, receiver):
    account = make_account()
    made = _silent(account, {"webhook": receiver.to("/ok")}, time_travel)
    assert evaluate(account) == 1
    account.call("DELETE", "/alerts", {"id": made["id"]})
    assert drain_deliveries() == 1
    assert receiver.posts == []
    assert len(history(account)) == 1                 # its history stays


@pytest.mark.fresh_aws
def test_email_alerts_reach_their_own_address_only_through_its_topic(client, make_account, time_travel, caplog):
    """Each address of a project has a topic of its own with the address its only subscriber (SNS e-mails
    it a link to confirm). Here an SQS queue subscribed beside each address stands in for its mailbox
    (moto's SNS delivers to it): each receives its own rule's e-mail only. Deleting the last rule to an
    address deletes its topic, and the subscription with it."""
    import logging

    caplog.set_level(logging.INFO)
    account = make_account()
    meters_of(account, "hvac", "lighting")
    push(account, "hvac", 1)
    push(account, "lighting", 1)
    first = account.call("PUT", "/alerts", body={"kind": "meter_silent", "meter": "hvac", "email": "day@example.com"})
    night = account.call("PUT", "/alerts", body={"kind": "meter_silent", "meter": "lighting", "email": "Night@example.com"})
    second = account.call("PUT", "/alerts", body={"kind": "agent_silent", "minutes": 5, "email": "day@example.com"})
    sns = boto3.client("sns", region_name="us-east-1")
    topics = sorted(t["TopicArn"] for t in sns.list_topics()["Topics"])
    assert len(topics) == 2 and all(f":intellimeter-local-alerts-{account.view['project']}-" in t for t in topics)
    assert not any("example" in t for t in topics)                          # a topic's name never shows the address
    mailboxes = {}
    for topic in topics:
        (subscription,) = sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]   # one, however many rules
        assert subscription["Protocol"] == "email"
        url = sqs().create_queue(QueueName="mailbox-" + subscription["Endpoint"].split("@")[0])["QueueUrl"]
        arn = sqs().get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"})
        mailboxes[subscription["Endpoint"]] = url
    assert sorted(mailboxes) == ["day@example.com", "night@example.com"]
    time_travel.shift(10 * 60)
    push(account, "lighting", 2)
    assert evaluate(account) == 1                     # hvac is silent (no agent ever reported: none to watch)
    assert drain_deliveries() == 1
    day = sqs().receive_message(QueueUrl=mailboxes["day@example.com"], MaxNumberOfMessages=10).get("Messages", [])
    nights = sqs().receive_message(QueueUrl=mailboxes["night@example.com"], MaxNumberOfMessages=10).get("Messages", [])
    assert len(day) == 1 and nights == []
    assert "Meter hvac is not reporting" in day[0]["Body"]
    assert any("alert e-mail published" in r.getMessage() and "hvac" in r.getMessage() for r in caplog.records)
    account.call("DELETE", "/alerts", {"id": first["id"]})         # day@ still has a rule: its topic stays
    assert len(sns.list_topics()["Topics"]) == 2
    account.call("DELETE", "/alerts", {"id": second["id"]})
    account.call("DELETE", "/alerts", {"id": night["id"]})
    assert sns.list_topics()["Topics"] == []


# ---- history ---------------------------------------------------------------------------------------------

@pytest.mark.fresh_aws
def test_history_is_kept_90_days_bounded_and_the_projects_own(client, make_account, time_travel, monkeypatch):
    account = make_account()
    _silent(account, W, time_travel)
    assert evaluate(account) == 1
    (item,) = db.query(accounts_table.NAME, "pk = :p", {":p": accounts_table.alert_log_pk(account.view["project"])})
    assert item["expires_at"] - item["at"] == 90 * 86400                     # DynamoDB's TTL removes it then
    assert make_account().call("GET", "/alerts/events", {"start": "2020-01-01", "end": "2030-01-01"}, status=400)
    assert len(history(account)) == 1
    other = make_account()
    today = str(datetime.fromtimestamp(clock.now(), timezone.utc).date())
    assert other.call("GET", "/alerts/events", {"start": today, "end": today}) == []
    push(account, "hvac", 2)
    assert evaluate(account) == 1
    monkeypatch.setattr(events, "MAX_EVENTS", 1)
    answer = account.request("GET", f"/alerts/events?start={today}&end={today}")
    assert answer.status_code == 413 and "more than 1 events" in json.loads(answer.body)["error"]
    monkeypatch.setattr(events, "MAX_EVENTS", 5000)
    time_travel.shift(90 * 86400 + 60)                # past its TTL, before DynamoDB gets to it: not shown
    assert account.call("GET", "/alerts/events", {"start": today, "end": today}) == []
