"""Scoped keys (/keys): an ingest key for the box on site, a read key for a dashboard, and nothing more.

What a user relies on: the secret is shown once and stored only as a digest; an ingest key can push
and a read key can read, and anything else answers 403 with a clear error; a deleted key stops at
once; only the account (its key or a session) manages keys; and one project never sees another's.
"""
import json
import time

import pytest

from chalicelib.platform import clock

PASSWORD = "correct horse battery staple"
JSON = {"Content-Type": "application/json"}
INGEST_ROUTES = [("PUT", "/point"), ("POST", "/data"), ("PUT", "/status")]
READ_ROUTES = [("GET", "/data"), ("GET", "/interval"), ("GET", "/point"), ("GET", "/file"), ("GET", "/graphics"),
               ("GET", "/status")]
ACCOUNT_ROUTES = [("GET", "/session"), ("DELETE", "/session"), ("GET", "/key"), ("POST", "/key"),
                  ("GET", "/user"), ("PUT", "/user"), ("POST", "/user"), ("DELETE", "/user"), ("POST", "/point"),
                  ("GET", "/keys"), ("PUT", "/keys"), ("DELETE", "/keys")]

pytestmark = pytest.mark.usefixtures("fast_hashing")


def make_key(account, scope, label="site A agent"):
    answer = account.request("PUT", "/keys", {"label": label, "scope": scope})
    assert answer.status_code == 200, answer.body
    return answer.json_body


def as_key(account, key, method, path, body=None):
    headers = {"X-API-Key": key}
    if body is not None:
        headers.update(JSON)
        body = json.dumps(body)
    return getattr(account.client.http, method.lower())(path, headers=headers, body=body)


def valid_request(method, path):
    """A request each route accepts from an account (so a 403 can only come from the scope)."""
    return {
        ("PUT", "/point"): {"MeterId": "m1", "ModbusId": 1},
        ("POST", "/data"): {"readings": [{"MeterId": "m1", "TimeStamping": "2026-01-10T12:00:00Z", "value": 1.0}]},
        ("PUT", "/status"): {"version": "1.2", "backlog": 0, "dead_letters": 0, "failing_meters": [],
                             "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(clock.now()))},
        ("POST", "/point"): {"name": "m1", "new": "m1"},
        ("PUT", "/keys"): {"label": "x", "scope": "read"},
        ("PUT", "/user"): {"username": "someone", "password": "long enough pw", "email": "s@example.com"},
    }.get((method, path)), {("GET", "/file"): "?start=2026-01-10&end=2026-01-10",
                            ("GET", "/graphics"): "?width=4&height=3"}.get((method, path), "")


@pytest.mark.fresh_aws  # reads every stored item
def test_put_keys_shows_the_secret_once_and_stores_only_its_digest(client, make_account):
    from tests.api.test_sessions_security import stored_text

    account = make_account()
    made = make_key(account, "ingest")
    listed = account.request("GET", "/keys").json_body

    assert set(made) == {"id", "label", "scope", "created", "key"}
    assert (made["label"], made["scope"]) == ("site A agent", "ingest")
    assert len(made["key"].split("-")) == 4 and made["key"] != account.key
    assert listed == [{"id": made["id"], "label": "site A agent", "scope": "ingest", "created": made["created"],
                       "last_used": None}]
    text = stored_text() + json.dumps(listed)
    assert made["key"] not in text and made["key"].split("-")[1] not in text
    put = account.request("PUT", "/keys", {"label": "dash", "scope": "read"})
    assert put.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("scope", ["ingest", "read"])
def test_a_scoped_key_calls_its_scopes_routes_and_gets_403_elsewhere(client, make_account, scope):
    account = make_account()
    account.request("PUT", "/point", {"MeterId": "m1"})
    key = make_key(account, scope)["key"]
    allowed = INGEST_ROUTES if scope == "ingest" else READ_ROUTES
    everything = INGEST_ROUTES + READ_ROUTES + ACCOUNT_ROUTES

    for method, path in everything:
        body, query = valid_request(method, path)
        answer = as_key(account, key, method, path + query, body)
        if (method, path) in allowed:
            assert answer.status_code in (200, 303), (method, path, answer.body)
        else:
            assert answer.status_code == 403, (method, path, answer.body)
            error = json.loads(answer.body)["error"]
            assert f"scope ({scope})" in error and path in error
    assert account.request("GET", "/session").status_code == 200  # nothing of the account was touched
    assert [k["scope"] for k in account.request("GET", "/keys").json_body] == [scope]


def test_a_scoped_key_opens_no_session(client, make_account):
    account = make_account()
    key = make_key(account, "ingest")["key"]

    answer = client.http.put("/session", headers=JSON, body=json.dumps({"key": key}))

    assert answer.status_code == 401 and "Set-Cookie" not in answer.headers
    assert "scoped keys" in json.loads(answer.body)["error"]


def test_deleting_a_key_stops_it_at_once(client, make_account):
    account = make_account()
    keep = make_key(account, "read", "dashboard")
    gone = make_key(account, "read", "old dashboard")
    assert as_key(account, gone["key"], "GET", "/data").status_code == 200

    assert account.request("DELETE", f"/keys?id={gone['id']}").json_body == {}

    assert as_key(account, gone["key"], "GET", "/data").status_code == 401
    assert as_key(account, keep["key"], "GET", "/data").status_code == 200
    assert [k["id"] for k in account.request("GET", "/keys").json_body] == [keep["id"]]
    assert account.request("DELETE", f"/keys?id={gone['id']}").status_code == 404


def test_last_used_is_recorded_at_most_once_a_minute(client, make_account, time_travel):
    account = make_account()
    made = make_key(account, "read")
    as_key(account, made["key"], "GET", "/data")
    first = account.request("GET", "/keys").json_body[0]["last_used"]
    assert first is not None

    time_travel.shift(30)
    as_key(account, made["key"], "GET", "/data")
    assert account.request("GET", "/keys").json_body[0]["last_used"] == first   # not rewritten within the minute
    time_travel.shift(31)
    as_key(account, made["key"], "GET", "/data")
    assert account.request("GET", "/keys").json_body[0]["last_used"] > first


def test_keys_are_managed_by_an_account_session_or_key_only(client, make_account):
    account = make_account(username="owner")
    cookie = client.http.put("/session", headers=JSON, body=json.dumps({"username": "owner", "password": PASSWORD}))
    session = {"Cookie": cookie.headers["Set-Cookie"].split(";")[0]}

    by_session = client.http.put("/keys", headers={**session, **JSON}, body=json.dumps({"label": "s", "scope": "read"}))
    assert by_session.status_code == 200
    for scope in ("ingest", "read"):
        key = make_key(account, scope)["key"]
        for method in ("GET", "PUT", "DELETE"):
            assert as_key(account, key, method, f"/keys?id={by_session.json_body['id']}",
                          {"label": "x", "scope": "read"}).status_code == 403
    assert client.http.get("/keys", headers={"X-API-Key": "0" * 10 + "-" + "-".join(["1" * 10] * 3)}).status_code == 401


def test_bad_arguments_are_400(client, make_account):
    account = make_account()
    for body in ({"scope": "read"}, {"label": "x"}, {"label": "x", "scope": "admin"}, {"label": "", "scope": "read"},
                 {"label": ["x"], "scope": "read"}, {"label": "x", "scope": ["read"]}):
        answer = account.request("PUT", "/keys", body)
        assert answer.status_code == 400, (body, answer.body)
    for query in ("", "?id=abc", "?id=0", "?id=%D9%A3"):
        assert account.request("DELETE", f"/keys{query}").status_code == 400, query
    assert account.request("GET", "/keys").json_body == []


def test_a_projects_keys_are_invisible_and_untouchable_to_another(client, make_account):
    a = make_account(project_name="Alpha")
    b = make_account(project_name="Bravo")
    b_key = make_key(b, "ingest", "bravo agent")
    a_key = make_key(a, "read", "alpha dashboard")

    assert [k["label"] for k in a.request("GET", "/keys").json_body] == ["alpha dashboard"]
    theirs = a.request("DELETE", f"/keys?id={b_key['id']}")
    nothing = a.request("DELETE", f"/keys?id={b_key['id'] + 1000}")
    assert theirs.status_code == nothing.status_code == 404
    assert json.loads(theirs.body)["error"].replace(str(b_key["id"]), "X") == \
        json.loads(nothing.body)["error"].replace(str(b_key["id"] + 1000), "X")
    assert as_key(b, b_key["key"], "PUT", "/point", {"MeterId": "b1"}).status_code == 200
    # B's ingest key registers in B only; A's read key sees A only.
    assert [m["MeterId"] for m in as_key(a, a_key["key"], "GET", "/point").json_body] == []
    assert [m["MeterId"] for m in b.request("GET", "/point").json_body] == ["b1"]


def test_scoped_keys_outlive_the_account_that_made_them(client, make_account):
    """Keys are the project's: the site's agent keeps working when the integrator who commissioned it leaves."""
    owner = make_account(username="integrator")
    second = make_account(username="manager", project_id=owner.view["project"])
    key = make_key(owner, "ingest")

    assert owner.request("DELETE", "/user").status_code == 200

    assert as_key(owner, key["key"], "PUT", "/point", {"MeterId": "m1"}).status_code == 200
    assert [k["id"] for k in second.request("GET", "/keys").json_body] == [key["id"]]


# The contract's scopes (docs/API.md, "Scoped keys"): every route the app has is declared accordingly.
CONTRACT_SCOPES = {
    ("PUT", "/point"): ("ingest",), ("POST", "/data"): ("ingest",), ("PUT", "/status"): ("ingest",),
    ("GET", "/data"): ("read",), ("GET", "/interval"): ("read",), ("GET", "/point"): ("read",),
    ("GET", "/file"): ("read",), ("GET", "/file/job"): ("read",), ("GET", "/graphics"): ("read",),
    ("GET", "/consumption"): ("read",), ("GET", "/status"): ("read",),
    # Third round: "read keys may GET" tariffs; a bill is the same rows /file?bill=1 writes for them.
    ("GET", "/tariffs"): ("read",), ("GET", "/bill"): ("read",),
}


def test_every_route_grants_exactly_the_contracts_scopes():
    from app import api

    routed = {(method, path): route.scopes for path, methods in api.routes.items() for method, route in methods.items()}
    for (method, path), scopes in routed.items():
        assert scopes == CONTRACT_SCOPES.get((method, path), ()), f"{method} {path}: scopes {scopes}"


def test_the_access_log_names_the_scoped_key_by_id_never_by_secret(client, make_account, caplog):
    import logging

    account = make_account()
    made = make_key(account, "read")
    with caplog.at_level(logging.INFO, logger="intellimeter.access"):
        as_key(account, made["key"], "GET", "/data")
    line = json.loads(caplog.records[-1].getMessage())
    assert (line["scoped_key"], line["user"], line["project"]) == (made["id"], None, account.view["project"])
    assert made["key"] not in caplog.text and made["key"].split("-")[0] not in caplog.text
