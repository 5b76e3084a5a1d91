"""The access log: one JSON record per request (route, status, latency, project), never a credential.

Locally the record's message is the JSON line. The deployed function logs in Lambda's JSON format
(infra/resources.yaml, LoggingConfig), whose formatter puts a record's extra attributes at the top of
the event: the record carries the same fields, so CloudWatch Logs Insights can query
`fields route, status, latency_ms, project | filter status >= 500` without parsing.
"""
import json
import logging

import pytest

PASSWORD = "correct horse battery staple"
FIELDS = {"route", "method", "status", "latency_ms", "project", "user", "scoped_key", "request_id"}
# Attributes every LogRecord has: the rest are the extra fields a JSON formatter lifts to the top.
STANDARD = set(vars(logging.LogRecord("n", logging.INFO, "p", 1, "m", None, None))) | {"message", "asctime"}


@pytest.fixture
def records():
    captured = []

    class Capture(logging.Handler):
        def emit(self, record):
            captured.append(record)

    handler = Capture(level=logging.DEBUG)
    logger = logging.getLogger("intellimeter.access")
    logger.addHandler(handler)
    yield captured
    logger.removeHandler(handler)


pytestmark = pytest.mark.usefixtures("fast_hashing")  # small Argon2 costs: hashing is tested in test_sessions_security


def access_lines(records):
    return [r for r in records if "route" in vars(r)]


def lambda_json_event(record):
    """The event Lambda's JSON log format writes for a record (its formatter's shape, keys lifted from extra)."""
    event = {"timestamp": "2026-01-01T00:00:00.000Z", "level": record.levelname, "message": record.getMessage(),
             "logger": record.name, "requestId": "lambda-request-id"}
    event.update((k, v) for k, v in vars(record).items() if k not in STANDARD and k not in event)
    return json.loads(json.dumps({k: v for k, v in event.items() if v is not None}))


def test_one_json_line_per_request_with_route_status_latency_and_project(client, make_account, records):
    account = make_account(password=PASSWORD)
    project = account.view["project"]
    responses = [
        account.request("GET", "/session"),
        account.request("GET", "/point?name=nothing"),
        client.http.get("/session"),
        client.http.patch("/session"),
    ]
    assert [r.status_code for r in responses] == [200, 404, 401, 405]
    lines = access_lines(records)
    assert len(lines) == len(responses)
    parsed = [json.loads(r.getMessage()) for r in lines]
    for line in parsed:
        assert set(line) == FIELDS
        assert isinstance(line["latency_ms"], (int, float)) and line["latency_ms"] >= 0
    assert [(p["method"], p["route"], p["status"], p["project"]) for p in parsed] == [
        ("GET", "/session", 200, project), ("GET", "/point", 404, project),
        ("GET", "/session", 401, None), ("PATCH", "/session", 405, None)]
    assert parsed[0]["user"] == account.view["uuid"]


def test_the_deployed_json_event_has_the_fields_at_the_top(client, make_account, records):
    account = make_account(password=PASSWORD)
    account.request("GET", "/key")
    (record,) = access_lines(records)
    event = lambda_json_event(record)
    assert {k: event[k] for k in FIELDS if k in event} == \
        {k: v for k, v in json.loads(record.getMessage()).items() if v is not None}
    assert event["route"] == "/key" and event["status"] == 200 and event["project"] == account.view["project"]


def test_no_credential_ever_reaches_the_log(client, make_account, records):
    account = make_account(username="logged", password=PASSWORD)
    secrets = {account.key, PASSWORD}
    login = client.http.put("/session", headers={"Content-Type": "application/json"},
                            body=json.dumps({"username": "logged", "password": PASSWORD}))
    assert login.status_code == 200
    token = login.headers["Set-Cookie"].split(";")[0].split("=", 1)[1]
    secrets.add(token)
    client.http.put(f"/session?key={account.key}")                                   # key in the query
    client.http.put("/session", headers={"Content-Type": "application/x-www-form-urlencoded"},
                    body=f"username=logged&password={PASSWORD.replace(' ', '+')}")   # form body
    client.http.put("/session", headers={"Content-Type": "application/json"},
                    body=json.dumps({"username": "logged", "password": "wrong " + PASSWORD}))
    client.http.get("/session", headers={"Cookie": f"session={token}"})
    client.http.get("/key", headers={"Authorization": f"Bearer {account.key}"})
    new_key = client.http.post("/key", headers={"X-API-Key": account.key}).json_body["key"]
    secrets.add(new_key)
    client.http.get("/session", headers={"X-API-Key": new_key})
    client.http.get("/session", headers={"X-API-Key": account.key})                   # the old key, refused
    client.http.post("/user", headers={"X-API-Key": new_key, "Content-Type": "application/json"},
                     body=json.dumps({"password": PASSWORD + " 2"}))
    secrets.add(PASSWORD + " 2")
    assert len(access_lines(records)) == 10
    for record in records:
        text = record.getMessage() + json.dumps(lambda_json_event(record), default=str)
        for secret in secrets:
            assert secret not in text, f"a credential is in the access log: {text}"
            assert secret.replace(" ", "+") not in text and secret.replace(" ", "%20") not in text
        assert "?" not in json.loads(record.getMessage())["route"]
