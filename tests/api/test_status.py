"""Fleet status: PUT /status from each agent, GET /status for people (agents, and every meter's state).

A silent meter must be visible without anyone reading logs; an agent's clock drift must be measurable
(clock_offset = the cloud's time minus the agent's).
"""
import json
from datetime import datetime, timezone

import pytest

from chalicelib.platform import clock

pytestmark = pytest.mark.usefixtures("fast_hashing")


def iso(epoch):
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def make_key(account, scope, label):
    return account.request("PUT", "/keys", {"label": label, "scope": scope}).json_body["key"]


def by_key(account, key, method, path, body=None):
    headers = {"X-API-Key": key, "Content-Type": "application/json"}
    return getattr(account.client.http, method.lower())(path, headers=headers,
                                                         body=json.dumps(body) if body is not None else None)


def test_put_status_answers_the_clock_offset_and_get_status_shows_the_agent(client, make_account):
    account = make_account(username="owner", timezone="America/Toronto")
    agent_key = make_key(account, "ingest", "site A agent")
    agent_time = clock.now() - 42.5          # the agent's clock is 42.5 s behind
    stamp = datetime.fromtimestamp(agent_time, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"

    answer = by_key(account, agent_key, "PUT", "/status", {"version": "2.1.0", "backlog": 120, "dead_letters": 1,
                                                           "failing_meters": ["m3"], "time": stamp})

    assert answer.status_code == 200
    assert 42.4 <= answer.json_body["clock_offset"] <= 44.0
    assert account.request("PUT", "/status", {"time": iso(clock.now())}).status_code == 200   # the account too
    status = account.request("GET", "/status").json_body
    agents = {a["agent"]: a for a in status["agents"]}
    assert set(agents) == {"site A agent", "owner"}
    site = agents["site A agent"]
    assert (site["version"], site["backlog"], site["dead_letters"], site["failing_meters"]) == ("2.1.0", 120, 1, ["m3"])
    assert site["clock_offset"] == answer.json_body["clock_offset"]
    shown = datetime.strptime(site["last_contact"], "%Y-%m-%d %H:%M:%S")
    local_now = clock.utcnow().astimezone(__import__("zoneinfo").ZoneInfo("America/Toronto")).replace(tzinfo=None)
    assert abs((local_now - shown).total_seconds()) < 60   # shown in the project's time zone


def test_a_second_report_replaces_the_first_and_agents_stay_apart(client, make_account):
    account = make_account()
    one, two = make_key(account, "ingest", "one"), make_key(account, "ingest", "two")
    by_key(account, one, "PUT", "/status", {"backlog": 5, "time": iso(clock.now())})
    by_key(account, one, "PUT", "/status", {"backlog": 0, "time": iso(clock.now())})
    by_key(account, two, "PUT", "/status", {"backlog": 9, "time": iso(clock.now())})

    agents = account.request("GET", "/status").json_body["agents"]

    assert [(a["agent"], a["backlog"]) for a in agents] == [("one", 0), ("two", 9)]


def test_every_meter_has_its_state_and_24_hour_coverage(client, make_account, time_travel):
    account = make_account()
    now = int(clock.now()) // 300 * 300
    time_travel.move_to(now + 60)   # a minute into the 5-minute slot: the test's seconds don't reach the next one
    for name in ("ok", "late", "silent", "never", "half"):
        account.request("PUT", "/point", {"MeterId": name, "SaveEvery": 5})
    readings = [{"MeterId": "ok", "TimeStamping": iso(now - 300 * i), "value": 1000.0 - i} for i in range(288)]
    readings += [{"MeterId": "late", "TimeStamping": iso(now - 3 * 3600), "value": 5.0}]
    readings += [{"MeterId": "silent", "TimeStamping": iso(now - 2 * 86400), "value": 5.0}]
    readings += [{"MeterId": "half", "TimeStamping": iso(now - 600 * i), "value": 500.0 - i} for i in range(144)]
    assert account.request("POST", "/data", {"readings": readings}).json_body["rejected"] == []

    meters = {m["MeterParam"]: m for m in account.request("GET", "/status").json_body["meters"]}

    assert {name: m["State"] for name, m in meters.items()} == {
        "ok": "ok", "late": "late", "silent": "silent", "never": "never", "half": "ok"}
    assert {name: m["Coverage24h"] for name, m in meters.items()} == {
        "ok": 1.0, "late": round(1 / 288, 3), "silent": 0.0, "never": 0.0, "half": 0.5}
    assert meters["never"]["LastReading"] is None
    assert meters["silent"]["LastReading"] is not None
    time_travel.move_to(now + 15 * 60 + 1)   # 2 × SaveEvery + 5 minutes after its last reading: late
    assert {m["MeterParam"]: m["State"] for m in account.request("GET", "/status").json_body["meters"]}["ok"] == "late"


def test_a_read_key_sees_the_status_and_the_projects_time_zone_and_cannot_report(client, make_account):
    """A dashboard holding a read key learns the zone its times are shown in (GET /session is the account's)."""
    account = make_account(timezone="Europe/Paris")
    read = make_key(account, "read", "dashboard")
    seen = by_key(account, read, "GET", "/status")
    assert seen.status_code == 200 and seen.json_body["timezone"] == "Europe/Paris"
    assert by_key(account, read, "GET", "/session").status_code == 403
    assert by_key(account, read, "PUT", "/status", {"time": iso(clock.now())}).status_code == 403


def test_each_agent_shows_its_key_id_and_whether_its_key_was_deleted(client, make_account):
    """Two agents, two keys: each shown with its key's id (GET /keys'); once a key is deleted its agent is
    shown as deleted (it can report no more), the other not; the account's own report shows its uuid."""
    account = make_account(username="keeper")
    old, new = make_key(account, "ingest", "box"), make_key(account, "ingest", "box")   # a box re-keyed
    ids = sorted(k["id"] for k in account.request("GET", "/keys").json_body)
    by_key(account, old, "PUT", "/status", {"time": iso(clock.now())})
    by_key(account, new, "PUT", "/status", {"time": iso(clock.now())})
    account.request("PUT", "/status", {"time": iso(clock.now())})
    assert account.request("DELETE", f"/keys?id={ids[0]}").status_code == 200

    agents = account.request("GET", "/status").json_body["agents"]

    shown = sorted((a["agent"], a["key_id"], a["uuid"], a["deleted"]) for a in agents)
    assert shown == [("box", ids[0], None, True), ("box", ids[1], None, False),
                     ("keeper", None, account.view["uuid"], False)]
    assert by_key(account, old, "PUT", "/status", {"time": iso(clock.now())}).status_code == 401


@pytest.mark.parametrize("body", [
    {}, {"time": "yesterday"}, {"time": "2026-11-29T10:00:00+05:75"}, {"time": 5}, {"time": "2026-11-29T10:00:00Z", "backlog": -1},
    {"time": "2026-11-29T10:00:00Z", "backlog": "lots"}, {"time": "2026-11-29T10:00:00Z", "failing_meters": "m3"},
    {"time": "2026-11-29T10:00:00Z", "failing_meters": [3]}, {"time": "2026-11-29T10:00:00Z", "version": ["1"]},
    {"time": "2026-11-29T10:00:00Z", "dead_letters": 1.5}])
def test_a_malformed_report_is_400_and_stores_nothing(client, make_account, body):
    account = make_account()
    answer = account.request("PUT", "/status", body)
    assert answer.status_code == 400, answer.body
    assert "error" in answer.json_body
    assert account.request("GET", "/status").json_body["agents"] == []


def test_status_is_per_project(client, make_account):
    a = make_account(project_name="Alpha")
    b = make_account(project_name="Bravo")
    b.request("PUT", "/point", {"MeterId": "b-meter"})
    b.request("PUT", "/status", {"time": iso(clock.now()), "version": "b-version"})

    assert a.request("GET", "/status").json_body == {"timezone": "UTC", "agents": [], "meters": []}
