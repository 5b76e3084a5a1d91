"""Tenancy of meter data: with project A's credentials nothing of project B is readable or changeable.

A meter id or name of project B answers, to A, exactly as an id or name that exists nowhere: same
status, same message (up to the id or name itself), and B's data is left as it was.
"""
import json
import urllib.parse
from datetime import datetime, timezone

import pytest
import requests

pytestmark = pytest.mark.fresh_aws  # each test makes the projects "Site A" and "Site B"

T0 = int(datetime(2026, 1, 10, 12, tzinfo=timezone.utc).timestamp())
DAYS = {"start": "2026-01-10", "end": "2026-01-10"}


def iso(epoch):
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def call(account, method, path, params=None, body=None):
    answer = account.request(method, path + ("?" + urllib.parse.urlencode(params) if params else ""), body=body)
    return answer.status_code, json.loads(answer.body)


def same_answer(first, second, first_token, second_token):
    """The two answers are the same once each names its own token (id or name) the same way."""
    status_a, body_a = first
    status_b, body_b = second
    text_a = json.dumps(body_a).replace(str(first_token), "<X>")
    text_b = json.dumps(body_b).replace(str(second_token), "<X>")
    return status_a == status_b and text_a == text_b


@pytest.fixture
def projects(make_account):
    a = make_account(project_name="Site A")
    b = make_account(project_name="Site B")
    a_meter = json.loads(a.request("PUT", "/point", body={"MeterId": "a-main", "ModbusId": 1}).body)
    b_meter = json.loads(b.request("PUT", "/point", body={"MeterId": "b-main", "ModbusId": 2}).body)
    for account, name in ((a, "a-main"), (b, "b-main")):
        answer = account.request("POST", "/data", body={"readings": [
            {"MeterId": name, "TimeStamping": iso(T0), "value": 10.0},
            {"MeterId": name, "TimeStamping": iso(T0 + 300), "value": 11.0}]})
        assert json.loads(answer.body)["accepted"] == 2
    b_before = {path: call(b, "GET", path) for path in ("/point", "/data", "/interval")}
    return a, b, a_meter, b_meter, b_before


def assert_b_unchanged(b, b_before):
    assert {path: call(b, "GET", path) for path in b_before} == b_before


def missing_id(b_meter):
    return b_meter["id"] + 1000


def test_point_by_id_or_name_of_another_project_is_not_found(projects):
    a, b, _a_meter, b_meter, b_before = projects
    by_id = call(a, "GET", "/point", {"id": b_meter["id"]})
    assert by_id[0] == 404
    assert same_answer(by_id, call(a, "GET", "/point", {"id": missing_id(b_meter)}), b_meter["id"], missing_id(b_meter))
    by_name = call(a, "GET", "/point", {"name": "b-main"})
    assert by_name[0] == 404
    assert same_answer(by_name, call(a, "GET", "/point", {"name": "nowhere"}), "b-main", "nowhere")
    # id wins over name: B's id with A's own name is still B's id, so still not found.
    assert call(a, "GET", "/point", {"id": b_meter["id"], "name": "a-main"})[0] == 404
    listed = call(a, "GET", "/point")[1]
    assert [m["MeterId"] for m in listed] == ["a-main"]
    assert_b_unchanged(b, b_before)


def test_renaming_a_meter_of_another_project_is_not_found_and_changes_nothing(projects):
    a, b, _a_meter, b_meter, b_before = projects
    by_id = call(a, "POST", "/point", body={"id": b_meter["id"], "new": "stolen"})
    assert by_id[0] == 404
    assert same_answer(by_id, call(a, "POST", "/point", body={"id": missing_id(b_meter), "new": "stolen"}),
                       b_meter["id"], missing_id(b_meter))
    by_name = call(a, "POST", "/point", body={"name": "b-main", "new": "stolen"})
    assert same_answer(by_name, call(a, "POST", "/point", body={"name": "nowhere", "new": "stolen"}),
                       "b-main", "nowhere")
    assert_b_unchanged(b, b_before)
    # Names are per project: A may use B's names for its own meters, and B's meter is not touched.
    assert call(a, "POST", "/point", body={"name": "a-main", "new": "b-main"})[0] == 200
    assert_b_unchanged(b, b_before)


def test_registering_a_name_of_another_project_makes_a_meter_of_ones_own(projects):
    a, b, _a_meter, b_meter, b_before = projects
    status, mine = call(a, "PUT", "/point", body={"MeterId": "b-main", "ModbusId": 9, "Port": "USB7"})
    assert status == 200 and mine["id"] != b_meter["id"] and mine["ModbusId"] == 9
    assert_b_unchanged(b, b_before)


def test_pushing_under_a_meter_name_of_another_project_is_an_unknown_meter(projects):
    a, b, _a_meter, _b_meter, b_before = projects
    for name in ("b-main", "nowhere"):
        status, receipt = call(a, "POST", "/data", body={"readings": [
            {"MeterId": name, "TimeStamping": iso(T0 + 600), "value": 99.0},
            {"MeterId": name, "TimeStamping": iso(T0), "value": 5.0}]})            # B has another value there
        assert status == 200 and receipt["accepted"] == 0 and receipt["duplicates"] == 0
        assert [r["error"].replace(name, "<X>") for r in receipt["rejected"]] == \
            ["unknown meter '<X>': register it with PUT /point first"] * 2
    assert_b_unchanged(b, b_before)


def test_latest_readings_and_intervals_show_only_ones_own_meters(projects):
    a, _b, _a_meter, _b_meter, _b_before = projects
    for path in ("/data", "/interval"):
        status, rows = call(a, "GET", path)
        assert status == 200 and [r["MeterParam"] for r in rows] == ["a-main"]


def test_exports_of_another_projects_meter_are_not_found(projects):
    a, _b, _a_meter, _b_meter, _b_before = projects
    theirs = call(a, "GET", "/file", {**DAYS, "meter": "b-main"})
    assert theirs[0] == 404
    assert same_answer(theirs, call(a, "GET", "/file", {**DAYS, "meter": "nowhere"}), "b-main", "nowhere")
    answer = a.request("GET", "/file?" + urllib.parse.urlencode({**DAYS, "type": "json"}))
    assert answer.status_code == 303
    rows = requests.get(answer.headers["Location"], timeout=30).json()
    assert {r["MeterParam"] for r in rows} == {"a-main"} and len(rows) == 2
    assert "/projects/%d/" % a.view["project"] in answer.headers["Location"]


def test_consumption_of_another_projects_meter_is_not_found(projects):
    a, _b, _a_meter, _b_meter, _b_before = projects
    for period in ("hour", "day", "month"):
        theirs = call(a, "GET", "/consumption", {**DAYS, "meter": "b-main", "period": period})
        assert theirs[0] == 404
        assert same_answer(theirs, call(a, "GET", "/consumption", {**DAYS, "meter": "nowhere", "period": period}),
                           "b-main", "nowhere")
        status, rows = call(a, "GET", "/consumption", {**DAYS, "period": period})
        assert status == 200 and {r["MeterParam"] for r in rows} == {"a-main"}
        assert sum(r["value"] or 0 for r in rows) == 1.0
    answer = a.request("GET", "/file?" + urllib.parse.urlencode({**DAYS, "type": "json", "period": "day"}))
    rows = requests.get(answer.headers["Location"], timeout=30).json()
    assert [(r["MeterParam"], r["value"]) for r in rows] == [("a-main", 1.0)]


def test_charts_of_another_projects_meter_are_not_found(projects):
    a, _b, _a_meter, _b_meter, _b_before = projects
    theirs = call(a, "GET", "/graphics", {**DAYS, "meter": "b-main", "width": 4, "height": 3})
    assert theirs[0] == 404
    assert same_answer(theirs, call(a, "GET", "/graphics", {**DAYS, "meter": "nowhere", "width": 4, "height": 3}),
                       "b-main", "nowhere")


def test_a_session_of_project_a_sees_no_more_than_its_key(projects):
    a, _b, _a_meter, b_meter, _b_before = projects
    login = a.client.http.put("/session", headers={"Content-Type": "application/json"},
                              body=json.dumps({"key": a.key}))
    cookie = login.headers["Set-Cookie"].split(";")[0]
    answer = a.client.http.get(f"/point?id={b_meter['id']}", headers={"Cookie": cookie})
    assert answer.status_code == 404
    answer = a.client.http.get("/data", headers={"Cookie": cookie})
    assert [r["MeterParam"] for r in json.loads(answer.body)] == ["a-main"]


def _scoped_key(account, scope, label):
    status, made = call(account, "PUT", "/keys", body={"label": label, "scope": scope})
    assert status == 200
    return made


def _as_key(account, key, method, path, params=None, body=None):
    headers = {"X-API-Key": key, "Content-Type": "application/json"}
    answer = getattr(account.client.http, method.lower())(
        path + ("?" + urllib.parse.urlencode(params) if params else ""), headers=headers,
        body=json.dumps(body) if body is not None else None)
    return answer.status_code, json.loads(answer.body)


def test_scoped_keys_of_another_project_are_invisible_and_not_found(projects):
    a, b, _a_meter, _b_meter, b_before = projects
    b_key = _scoped_key(b, "ingest", "b agent")
    _scoped_key(a, "read", "a dashboard")

    assert [k["label"] for k in call(a, "GET", "/keys")[1]] == ["a dashboard"]
    theirs = call(a, "DELETE", "/keys", {"id": b_key["id"]})
    assert theirs[0] == 404
    assert same_answer(theirs, call(a, "DELETE", "/keys", {"id": b_key["id"] + 1000}), b_key["id"], b_key["id"] + 1000)
    assert [k["id"] for k in call(b, "GET", "/keys")[1]] == [b_key["id"]]
    assert _as_key(b, b_key["key"], "POST", "/data", body={"readings": []})[0] == 200   # B's key still works
    assert_b_unchanged(b, b_before)


def test_a_scoped_key_reads_and_pushes_only_in_its_own_project(projects):
    a, b, _a_meter, b_meter, b_before = projects
    a_read = _scoped_key(a, "read", "a dashboard")["key"]
    a_ingest = _scoped_key(a, "ingest", "a agent")["key"]

    assert [r["MeterParam"] for r in _as_key(a, a_read, "GET", "/data")[1]] == ["a-main"]
    assert _as_key(a, a_read, "GET", "/point", {"id": b_meter["id"]})[0] == 404
    assert _as_key(a, a_read, "GET", "/file", {**DAYS, "meter": "b-main"})[0] == 404
    status, receipt = _as_key(a, a_ingest, "POST", "/data", body={"readings": [
        {"MeterId": "b-main", "TimeStamping": iso(T0 + 900), "value": 99.0}]})
    assert status == 200 and receipt["accepted"] == 0 and len(receipt["rejected"]) == 1
    assert _as_key(a, a_ingest, "PUT", "/point", body={"MeterId": "b-main"})[1]["id"] != b_meter["id"]
    assert_b_unchanged(b, b_before)


def test_status_shows_only_ones_own_agents_and_meters(projects):
    a, b, _a_meter, _b_meter, b_before = projects
    b_agent = _scoped_key(b, "ingest", "b agent")["key"]
    assert _as_key(b, b_agent, "PUT", "/status", body={"version": "b-version", "failing_meters": ["b-main"],
                                                       "time": iso(T0)})[0] == 200
    a_agent = _scoped_key(a, "ingest", "a agent")["key"]
    _as_key(a, a_agent, "PUT", "/status", body={"version": "a-version", "time": iso(T0)})

    status, seen = call(a, "GET", "/status")

    assert status == 200
    assert [(x["agent"], x["version"]) for x in seen["agents"]] == [("a agent", "a-version")]
    assert [m["MeterParam"] for m in seen["meters"]] == ["a-main"]
    assert "b-" not in json.dumps(seen)
    assert [x["agent"] for x in call(b, "GET", "/status")[1]["agents"]] == ["b agent"]
    assert_b_unchanged(b, b_before)
