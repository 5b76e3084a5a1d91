"""Every route under failing AWS calls: a 503 with Retry-After (never a 500, never a misleading 4xx), and
afterwards every store consistent and every 503'd request completed by sending it again.

The faults come from botocore's own event hooks on the clients chalicelib.aws hands out
(tests/aws_faults.py): throttling, 500s, timeouts before the call, and answers lost after the call was
carried out. The routes are walked from the app's route table, so a route added later is walked too.
"""
import json
import random
import re
from datetime import datetime, timezone

import pytest
import yaml

from chalicelib.apidocs import openapi
from chalicelib.identity import accounts, apikeys
from chalicelib.metering import consumption, meters, readings
from chalicelib.platform import aws, config, validation
from chalicelib.metering.days import local_day
from tests.aws_faults import AwsFaults

pytestmark = pytest.mark.fresh_aws  # the project "faulty", and assert_consistent checks every item of every store

SEEDS = (1, 2, 3)
RATE = 0.3
ROUNDS = 4            # requests per route and method per seed
T0 = int(datetime(2026, 3, 2, tzinfo=timezone.utc).timestamp())
NOT_RETRIED = {("POST", "/key"), ("DELETE", "/user"), ("DELETE", "/session")}   # see _walk


def _iso(epoch):
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class World:
    """The project the walk works in, and what the client was told was stored."""

    def __init__(self, client, make_account):
        self.client = client
        self.owner = make_account(project_name="faulty")
        self.project_id = self.owner.view["project"]
        self.make_account = make_account
        self.rng = random.Random(7)
        self.counter = 0
        self.told_stored = {}        # (meter, epoch) → value a 200 receipt accepted or called duplicate
        for name in ("m1", "m2"):
            assert self.owner.request("PUT", "/point", body={"MeterId": name, "SaveEvery": 5}).status_code == 200
        self.next_epoch = T0

    def fresh(self):
        self.counter += 1
        return self.counter

    def user(self):
        """A new account of the project (made with faults off)."""
        return self.make_account(project_id=self.project_id, username=f"u{self.fresh()}")

    def refresh_owner_key(self):
        from chalicelib.identity import accounts

        self.owner.key = accounts.current_key(self.project_id, self.owner.view["uuid"])["key"]

    def readings(self):
        batch = []
        for _ in range(5):
            self.next_epoch += 300
            batch.append({"MeterId": self.rng.choice(["m1", "m2", "ghost"]), "TimeStamping": _iso(self.next_epoch),
                          "value": round(self.next_epoch / 1000 - T0 / 1000, 3)})
        return batch


def _request_for(world, method, path):  # noqa: C901  # one branch per route of the API: a table written as code
    """(headers, body, after) of one request to the route; after(answer) notes what the client learns."""
    key_headers = {"X-API-Key": world.owner.key}
    if (method, path) == ("POST", "/data"):
        batch = world.readings()

        def note(answer):
            if answer.status_code == 200:
                rejected = {r["index"] for r in json.loads(answer.body)["rejected"]}
                for i, r in enumerate(batch):
                    if i not in rejected:
                        world.told_stored[(r["MeterId"], r["TimeStamping"])] = r["value"]
        return key_headers, {"readings": batch}, note
    if (method, path) == ("PUT", "/point"):
        return key_headers, {"MeterId": f"meter{world.fresh()}", "SaveEvery": 5, "ModbusId": 3}, None
    if (method, path) == ("POST", "/point"):
        return key_headers, {"name": "m2", "new": "m2"} if world.rng.random() < 0.2 else \
            {"id": _meter_id(world, "m1"), "new": f"display{world.fresh()}"}, None
    if (method, path) == ("GET", "/file"):
        kind = world.rng.choice(["csv", "json"])
        return key_headers, {"start": "2026-03-02", "end": "2026-03-03", "type": kind}, None
    if (method, path) == ("GET", "/graphics"):
        return key_headers, {"type": "bar", "start": "2026-03-02", "end": "2026-03-02", "width": 4, "height": 3}, None
    if (method, path) == ("PUT", "/user"):
        n = world.fresh()
        return key_headers, {"username": f"new{n}", "password": "correct horse battery staple",
                             "email": f"new{n}@example.com"}, None
    if (method, path) == ("POST", "/user"):
        actor = world.user()
        new_password = f"another horse battery staple {world.fresh()}"

        def note(answer):
            if answer.status_code == 200:
                actor.password = new_password
        return actor.headers, {"username": f"renamed{world.fresh()}", "email": "x@example.com",
                               "password": new_password, "current_password": actor.password}, note
    if (method, path) == ("DELETE", "/user"):
        return world.user().headers, None, None
    if (method, path) == ("POST", "/key"):
        actor = world.user()
        return actor.headers, None, None
    if path == "/session" and method in ("PUT", "DELETE"):
        actor = world.user()
        if method == "PUT":
            return {}, {"username": actor.view["username"], "password": actor.password}, None
        login = world.client.http.put("/session", headers={"Content-Type": "application/json"},
                                      body=json.dumps({"username": actor.view["username"],
                                                       "password": actor.password}))
        cookie = login.headers["Set-Cookie"].split(";")[0]
        return {"Cookie": cookie}, None, None
    return key_headers, None, None     # GET routes, and routes added later: asked with no arguments


KNOWN = {("POST", "/data"), ("PUT", "/point"), ("POST", "/point"), ("GET", "/file"), ("GET", "/graphics"),
         ("PUT", "/user"), ("POST", "/user"), ("DELETE", "/user"), ("POST", "/key"), ("PUT", "/session"),
         ("DELETE", "/session"), ("GET", "/session"), ("GET", "/key"), ("GET", "/user"), ("GET", "/point"),
         ("GET", "/data"), ("GET", "/interval"), ("GET", "/openapi.yaml")}


def _meter_id(world, site_name):
    from chalicelib.metering import meters

    return meters.find_by_site_name(world.project_id, site_name)["meter_id"]


def _send(world, method, path, headers, body):
    headers = dict(headers)
    payload = None
    if body is not None:
        headers["Content-Type"] = "application/json"
        payload = json.dumps(body)
    return getattr(world.client.http, method.lower())(path, headers=headers, body=payload)


def _walk(world, faults):
    """Every route and method of the app, ROUNDS times, with faults on; returns the statuses seen."""
    from app import api

    statuses = []
    for route in sorted(api.routes):
        path = re.sub(r"\{[^}]*\}", "1", route)     # a path parameter: some id
        for method in sorted(api.routes[route]):
            for _ in range(ROUNDS):
                faults.enabled = False
                headers, body, note = _request_for(world, method, route)
                # A route this walk does not know (added later) is asked with no arguments: whatever it
                # answers without faults (a 400 for a missing argument, say) it answers with them, or 503.
                expected = None if (method, route) in KNOWN else _send(world, method, path, headers, body).status_code
                faults.enabled = True
                answer = _send(world, method, path, headers, body)
                faults.enabled = False
                statuses.append((method, route, answer.status_code))
                assert answer.status_code != 500, (method, path, answer.body)
                if answer.status_code == 503:
                    assert int(answer.headers["Retry-After"]) > 0, (method, path)
                    assert "error" in json.loads(answer.body)
                    # 503 means "send it again": sent again (no faults) it does what it would have done.
                    # (Not for a key rotation or a delete whose lost answer already did it: the old
                    # key or session no longer authenticates, which is what those requests are for.)
                    if (method, route) not in NOT_RETRIED:
                        again = _send(world, method, path, headers, body)
                        assert again.status_code == expected if expected else again.status_code < 400, \
                            (method, route, again.status_code, again.body)
                        answer = again
                elif expected is not None:
                    assert answer.status_code == expected, (method, route, answer.status_code, answer.body)
                elif answer.status_code >= 400:
                    raise AssertionError(f"{method} {path} answered {answer.status_code} under faults: {answer.body}")
                if note:
                    note(answer)
                world.refresh_owner_key()
    return statuses


def _scan(logical_id):
    pages = aws.dynamodb().get_paginator("scan").paginate(TableName=config.resource_name(logical_id))
    from chalicelib.platform import db

    return [db.from_ddb(item) for page in pages for item in page["Items"]]


def assert_consistent(world):
    """Users, login names, keys, sessions, meters, aliases, day items and uploads all agree."""
    accounts_items = _scan("AccountsTable")
    users = {(i["project_id"], i["user_id"]): i for i in accounts_items if i["sk"].startswith("USER#")}
    logins = {i["pk"]: i for i in accounts_items if i["sk"] == "LOGIN"}
    keys = {i["pk"]: i for i in accounts_items if i["sk"] == "KEY"}
    for (project_id, user_id), user in users.items():
        login = logins.get("LOGIN#" + validation.login_key(user["username"]))
        assert login and (login["project_id"], login["user_id"]) == (project_id, user_id), user["username"]
        key = keys.get("KEY#" + user["key_digest"])
        assert key and (key["project_id"], key["user_id"]) == (project_id, user_id), user["username"]
        clear = apikeys.decrypt(user["key_ciphertext"], user_id)   # the key rotated in both stores, or neither
        assert apikeys.digest(clear) == user["key_digest"]
    assert len(logins) == len(users) and len(keys) == len(users), "a login name or key of no account"
    user_ids = {user_id for _p, user_id in users}
    orphans = [s for s in _scan("SessionsTable") if s["user_id"] not in user_ids]
    assert orphans == [], "sessions of deleted accounts"

    meter_items = _scan("MetersTable")
    meters_by_id = {(i["pk"], i["meter_id"]): i for i in meter_items if i["sk"].startswith("METER#")}
    aliases = {(i["pk"], i["sk"]): i["meter_id"] for i in meter_items if i["sk"].split("#")[0] in ("SITE", "NAME")}
    for (pk, meter_id), meter in meters_by_id.items():
        assert aliases.get((pk, "SITE#" + meter["site_name"])) == meter_id
        assert aliases.get((pk, "NAME#" + meter["name"])) == meter_id, meter
    assert len(aliases) == 2 * len(meters_by_id), "an alias of no meter (a rename half-applied)"

    stored: dict[tuple[int, int], float] = {}
    for item in _scan("ReadingsTable"):
        if item["meter"].startswith("ROLLUP#"):     # a meter-month of rollups: checked against the raw readings below
            continue
        found = readings.any_item(item)             # a day item or an hour's hot item
        assert found["n"] == len(found["entries"]), item["day"]
        times = [t for t, _v, _r in found["entries"]]
        assert times == sorted(set(times))
        _project_id, meter_id = item["meter"].split("#")
        for epoch, value, _reset in found["entries"]:
            assert stored.setdefault((int(meter_id), epoch), value) == value   # a day's items agree
    for (site_name, when), value in world.told_stored.items():
        meter_id = _meter_id(world, site_name)
        epoch = int(datetime.strptime(when, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp())
        assert stored.get((meter_id, epoch)) == value, (site_name, when)

    # The rollups that /consumption reads agree with the raw readings, day by day (a batch answered 503 after
    # its day items were written was sent again, which refreshes them).
    zone = accounts.project_zone(world.project_id)
    for meter_id in sorted({m for m, _e in stored}):
        days = sorted({local_day(e, zone) for m, e in stored if m == meter_id})
        meter = meters.find(world.project_id, meter_id=meter_id)   # the item: its latest_time says its open hour
        from_rollups = consumption.summaries(world.project_id, [meter], zone, days[0], days[-1], "day")[meter_id]
        raw = consumption.from_readings(world.project_id, [meter_id], zone, days[0], days[-1], "day")[meter_id]
        assert from_rollups == raw, f"meter {meter_id}: rollups disagree with the raw readings"

    uploads = aws.s3().list_multipart_uploads(Bucket=config.resource_name("FilesBucket"))
    assert uploads.get("Uploads", []) == [], "a multipart upload left open"


@pytest.mark.parametrize("seed", SEEDS)
def test_every_route_answers_503_with_retry_after_and_leaves_every_store_consistent(client, make_account,
                                                                                     fast_hashing, seed):
    world = World(client, make_account)
    faults = AwsFaults([aws.dynamodb(), aws.s3(), aws.kms()], RATE, seed)
    statuses = _walk(world, faults)
    unavailable = sum(1 for *_r, status in statuses if status == 503)
    print(f"seed {seed}: {len(statuses)} requests, {faults.calls} AWS calls, {faults.failed_share:.0%} failed "
          f"({dict(faults.failed)}), {unavailable} answered 503, 0 answered 500")
    assert unavailable > 0 and sum(faults.failed.values()) > 0      # the faults did reach the routes
    assert_consistent(world)
    document = yaml.safe_load(openapi.document())
    undocumented = {(m, p) for m, p, status in statuses if status == 503
                    and "503" not in document["paths"][p][m.lower()]["responses"]}
    assert undocumented == set(), "routes answering 503 that the OpenAPI document does not list it for"


def test_a_request_aws_refuses_as_invalid_is_a_logged_500_not_a_503_to_retry_for_ever(client, make_account,
                                                                                       caplog):
    account = make_account()
    AwsFaults.planned([aws.dynamodb()], {("Query", 1): "validation"})
    answer = account.request("GET", "/point")
    assert answer.status_code == 500 and "Retry-After" not in answer.headers
    assert json.loads(answer.body) == {"error": "internal error: the request could not be completed"}
    assert "ValidationException" in caplog.text and "unhandled error on GET /point" in caplog.text
    assert account.request("GET", "/point").status_code == 200


def _client_error(code, status=400, reasons=None):
    from botocore.exceptions import ClientError

    response: dict = {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}
    if reasons:
        response["CancellationReasons"] = [{"Code": r} for r in reasons]
    return ClientError(response, "Op")


def test_which_aws_failures_are_a_503():
    from botocore.exceptions import (ConnectionClosedError, EndpointConnectionError, NoCredentialsError,
                                     ParamValidationError, ReadTimeoutError)

    transient = [_client_error("ProvisionedThroughputExceededException"), _client_error("ThrottlingException"),
                 _client_error("SlowDown", 503), _client_error("InternalServerError", 500),
                 _client_error("Whatever", 502), _client_error("KMSInternalException", 500),
                 _client_error("TransactionCanceledException", reasons=["None", "TransactionConflict"]),
                 ReadTimeoutError(endpoint_url="u"), EndpointConnectionError(endpoint_url="u"),
                 ConnectionClosedError(endpoint_url="u")]
    ours = [_client_error("ValidationException"), _client_error("AccessDeniedException"),
            _client_error("ResourceNotFoundException"), _client_error("ConditionalCheckFailedException"),
            _client_error("TransactionCanceledException", reasons=["ConditionalCheckFailed", "ThrottlingError"]),
            _client_error("TransactionCanceledException", reasons=["ValidationError"]),
            ParamValidationError(report="bad"), NoCredentialsError(), ValueError("x")]
    assert [aws.unavailable(e) is not None for e in transient] == [True] * len(transient)
    assert [aws.unavailable(e) for e in ours] == [None] * len(ours)
    answer = aws.unavailable(transient[0])
    assert answer.status == 503 and int(answer.headers["Retry-After"]) > 0
