"""The API fuzzed against docs/openapi.yaml over real HTTP, and object-level authorization over every route.

One stack per module: moto in process (every resource of infra/resources.yaml) and the app on Chalice's
local server in a thread (tools/local_api.py, what `make run` serves), with two projects:

- project A (the caller): user `test` with a meter `meter1` and readings of the last days and of the
  document's example days;
- project B (the victim): a meter also named `meter1`, a meter and a user only B has, their readings.
  B is seeded first, so B's ids are the small ones the fuzzer tries first.

test_fuzz_by_key and test_fuzz_by_cookie run schemathesis over every operation of the document (its
examples, coverage and fuzzing phases, positive and negative data), as A, with the checks
not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance and
negative_data_rejection, plus `no_data_of_project_b` (nothing of B in any answer). XML answers are
schema-checked too (a deserializer of the vendor's dicttoxml shape below).

The key run sends A's key as X-API-Key and as Authorization: Bearer, every other request. Credentials
stay valid whatever the fuzzer does: each example gets A's current key, or a new session of A (POST /key,
DELETE /session, POST /user with a new password end the old ones). DELETE /user is fuzzed
too, but as a throwaway account of A created for each example (deleting A's own account would end the
run); PUT /session and GET /openapi.yaml need no credentials and run in the key run only.

The number of examples per operation is FUZZ_EXAMPLES (default 6: `make test`); `make fuzz` sets more.
Runs are derandomized (same seed, same cases), so a failure reproduces.
"""
import json
import os
import re
import threading
import time
import xml.etree.ElementTree as ElementTree

import pytest
import requests
import yaml

DOC_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "docs", "openapi.yaml")
FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "6"))
STAGE = "local"
PASSWORD = "correct horse battery staple"     # A's `test` account: the document's login example
B_MARK = "bsecret"                            # in every name of project B, so a leak is easy to spot

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, settings  # noqa: E402  (after the importorskip)

# ---- the stack --------------------------------------------------------------------------------

class Stack:
    """The live API and what the tests know of its two projects."""

    def __init__(self, url):
        self.url = url
        self.a = {}
        self.b = {}
        self.throwaways = 0
        self.requests = 0

    # -- credentials of A, fresh for each example --
    def key(self):
        from chalicelib.identity import accounts

        return accounts.current_key(self.a["project_id"], self.a["user_id"])["key"]

    def session(self, user_id=None):
        from chalicelib.identity import sessions

        return sessions.create(self.a["project_id"], user_id or self.a["user_id"])

    def throwaway(self):
        """(user id, key) of a new account of A (for DELETE /user)."""
        from chalicelib.identity import accounts

        self.throwaways += 1
        view, key = accounts.create_user(self.a["project_id"], f"throwaway{self.throwaways}", PASSWORD,
                                         f"throwaway{self.throwaways}@example.com")
        return view["uuid"], key

    # -- project B as stored --
    def snapshot_b(self):
        """Everything of project B: project, accounts (with key digests, hashes), meters, readings, sessions."""
        from chalicelib.metering import meters, readings
        from chalicelib.platform import db

        pid = self.b["project_id"]
        accounts_items = sorted(db.query("AccountsTable", "pk = :p", {":p": f"PROJECT#{pid}"}),
                                key=lambda item: item["sk"])
        meter_items = sorted(db.query("MetersTable", "pk = :p", {":p": f"PROJECT#{pid}"}), key=lambda item: item["sk"])
        series = {m["meter_id"]: list(readings.series(pid, m["meter_id"], 0, 2 ** 33))
                  for m in meters.all_meters(pid)}
        logins = {u["username"]: db.get("AccountsTable", {"pk": "LOGIN#" + u["username"].casefold(), "sk": "LOGIN"})
                  for u in accounts_items if u["sk"].startswith("USER#")}
        return {"accounts": accounts_items, "meters": meter_items, "series": series, "logins": logins}


def _seed_readings(project_id, meter_name, days, start_value, step_minutes=60):
    """Hourly readings of a meter over the last `days` days, and on the document's example days."""
    from datetime import datetime, timedelta, timezone

    from chalicelib.metering import ingest

    now = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    times = [now - timedelta(minutes=step_minutes * i) for i in range(days * 24 * 60 // step_minutes)]
    times += [datetime(2019, 10, 30, h, 15, tzinfo=timezone.utc) for h in range(24)]
    times += [datetime(2019, 10, 31, h, 15, tzinfo=timezone.utc) for h in range(24)]
    times.sort()
    batch = [{"MeterId": meter_name, "TimeStamping": t.isoformat(), "value": start_value + 1.25 * i}
             for i, t in enumerate(times)]
    for i in range(0, len(batch), 1000):
        receipt = ingest.ingest(project_id, batch[i:i + 1000])
        assert not receipt["rejected"], receipt


def _seed(stack):
    from chalicelib.identity import accounts
    from chalicelib.metering import meters

    # B first: its ids are 1, 2, … the values a fuzzer tries first.
    project_b = accounts.create_project(f"{B_MARK}-project", "America/New_York")
    view_b, key_b = accounts.create_user(project_b["project_id"], f"{B_MARK}-user", PASSWORD, f"{B_MARK}@example.com")
    shared_b = meters.register(project_b["project_id"], {"MeterId": "meter1", "ModbusId": 7, "Port": "USB1"})
    only_b = meters.register(project_b["project_id"], {"MeterId": f"{B_MARK}-meter", "ModbusId": 8})
    _seed_readings(project_b["project_id"], "meter1", 3, 900000.5)
    _seed_readings(project_b["project_id"], f"{B_MARK}-meter", 3, 700000.5)
    from chalicelib.identity import auth, scoped_keys
    from chalicelib.metering import status
    from chalicelib.platform import clock

    scoped_b = scoped_keys.create(project_b["project_id"], f"{B_MARK}-agent", "ingest", clock.zone("UTC"))
    status.report(auth.Caller(project_b["project_id"], scope="ingest", key_id=scoped_b["id"], label=f"{B_MARK}-agent"),
                  {"version": f"{B_MARK}-1", "backlog": 3, "failing_meters": [f"{B_MARK}-meter"], "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(clock.now()))})
    from chalicelib.billing import tariffs

    tariff_b = tariffs.save(project_b["project_id"], {"label": f"{B_MARK}-tariff", "default": True,
                                                      "energyratestructure": [[{"rate": 0.1}]],
                                                      "energyweekdayschedule": [[0] * 24] * 12,
                                                      "energyweekendschedule": [[0] * 24] * 12})
    stack.b.update(project_id=project_b["project_id"], user_id=view_b["uuid"], key=key_b,
                   scoped_key=scoped_b["key"], scoped_key_id=scoped_b["id"], tariff_ids=[tariff_b["id"]],
                   username=view_b["username"], email=view_b["email"],
                   meter_ids=[shared_b["id"], only_b["id"]], only_meter=only_b["MeterId"])

    project_a = accounts.create_project("fuzz-project", "Europe/Paris")
    view_a, _key_a = accounts.create_user(project_a["project_id"], "test", PASSWORD, "test@example.com")
    meter_a = meters.register(project_a["project_id"], {"MeterId": "meter1", "ModbusId": 1, "Port": "USB0",
                                                        "NoPhases": 3, "MeterType": "I-45/MFX/636",
                                                        "ModbusMap": "Priority.ici", "SaveEvery": 60,
                                                        "startAddress": 1100})
    _seed_readings(project_a["project_id"], "meter1", 10, 28540.25)
    stack.a.update(project_id=project_a["project_id"], user_id=view_a["uuid"], meter_id=meter_a["id"])


@pytest.fixture(scope="module")
def stack():
    """The live API over moto, seeded with projects A and B; B's state is checked at the end of the module."""
    from moto import mock_aws

    from chalicelib.platform import aws as aws_clients
    from tools import provision
    from tools.local_api import make_server

    stage_env = provision.local_stage_environment()
    saved = {k: os.environ.get(k) for k in [*stage_env, "AWS_ENDPOINT_URL"]}
    os.environ.pop("AWS_ENDPOINT_URL", None)
    with mock_aws():
        aws_clients.reset_clients()
        os.environ.update(provision.provision_local())
        server = make_server("127.0.0.1", 0, STAGE)          # the port it binds, not one probed before
        thread = threading.Thread(target=server.server.serve_forever, daemon=True)
        thread.start()
        try:
            live = Stack(f"http://127.0.0.1:{server.port}")
            _seed(live)
            live.b["before"] = live.snapshot_b()
            yield live
        finally:
            server.shutdown()
            server.server.server_close()
            thread.join(timeout=10)
            aws_clients.reset_clients()
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


# ---- schemathesis -----------------------------------------------------------------------------

# Operations whose 200 answer is a list: an empty list and an empty object are both <Response></Response>.
_LIST_RESULTS = {("GET", "/data"), ("GET", "/interval"), ("GET", "/user"), ("GET", "/point"), ("GET", "/keys")}


def _xml_value(element):
    kind = element.get("type")
    text = element.text or ""
    if kind == "dict":
        return {_xml_key(child): _xml_value(child) for child in element}
    if kind == "list":
        return [_xml_value(child) for child in element]
    if kind == "str":
        return text
    if kind == "int":
        return int(text)
    if kind in ("float", "number"):
        return float(text)
    if kind == "bool":
        return {"true": True, "false": False}[text]
    if kind == "null":
        return None
    raise ValueError(f"element <{element.tag}> has no known type attribute: {kind!r}")


def _xml_key(element):
    return element.get("name", element.tag) if element.tag == "key" else element.tag


def xml_to_data(content, operation_key, status):
    """The data of a dicttoxml document (type attributes say each value's type)."""
    root = ElementTree.fromstring(content)
    if root.tag != "Response" or root.attrib:
        raise ValueError(f"the root element must be a bare <Response>, not <{root.tag}>")
    children = list(root)
    if not children:
        return [] if status == 200 and operation_key in _LIST_RESULTS else {}
    if all(child.tag == "item" for child in children):
        return [_xml_value(child) for child in children]
    return {_xml_key(child): _xml_value(child) for child in children}


@schemathesis.deserializer("application/xml")
def _deserialize_xml(ctx, response):
    return xml_to_data(response.content, (ctx.operation.method.upper(), ctx.operation.path), response.status_code)


def no_data_of_project_b(stack):
    """The check: nothing of project B (names, e-mail, key, meter ids) in an answer to project A."""

    def no_data_of_project_b(ctx, response, case):
        text = response.content.decode("utf-8", "replace")
        assert B_MARK not in text, f"project B's data in an answer to project A: {text[:300]}"
        assert stack.b["key"] not in text, "project B's API key in an answer to project A"
        assert stack.b["scoped_key"] not in text, "project B's scoped key in an answer to project A"
        if _media_type(response) == "application/json" and response.status_code == 200:
            leaked = _ids(json.loads(text)) & set(stack.b["meter_ids"])
            assert not leaked, f"project B's meter ids {sorted(leaked)} in an answer to project A: {text[:300]}"

    return no_data_of_project_b


def _media_type(response):
    value = response.headers.get("content-type") or response.headers.get("Content-Type") or ""
    value = value[0] if isinstance(value, list) else value
    return value.split(";")[0].strip().lower()


def _parsed(response, operation_key):
    """The data of an answer, whichever of the three media types it has."""
    media_type = _media_type(response)
    if media_type == "application/xml":
        return xml_to_data(response.content, operation_key, response.status_code)
    if media_type == "application/yaml":
        return yaml.safe_load(response.content)
    return json.loads(response.content)


def _ids(data):
    """The meter ids in an answer (the id of a meter view; other ids, such as a scoped key's, are other counters)."""
    if isinstance(data, dict):
        found = {data["id"]} if isinstance(data.get("id"), int) and "MeterId" in data else set()
        for value in data.values():
            found |= _ids(value)
        return found
    if isinstance(data, list):
        return set().union(*(_ids(v) for v in data)) if data else set()
    return set()


def _checks():
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi import checks

    return [not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
            checks.response_schema_conformance, checks.negative_data_rejection]


def make_schema():
    """The document as schemathesis loads it: bounded, reproducible, credentials left to the tests."""
    config = schemathesis.Config.from_dict({
        "seed": 20191030,
        "request-timeout": 60,
        "generation": {
            "max-examples": FUZZ_EXAMPLES,
            "deterministic": True,
            "database": "none",
            "with-security-parameters": False,
            # Unknown parameters are ignored (the document's conventions): an extra one is not negative data.
            "allow-extra-parameters": False,
        },
        # The coverage phase also sends methods a path doesn't have: the app answers every one 405
        # (chalicelib/platform/web.py), OPTIONS outside a preflight, TRACE and QUERY included, on the
        # local server as on AWS. HEAD, which schemathesis doesn't send, is tests/api/test_cors.py's.
        "phases": {"examples": {"enabled": True},
                   "coverage": {"enabled": True, "unexpected-methods": ["get", "put", "post", "delete", "patch",
                                                                        "options", "trace", "query"]},
                   "fuzzing": {"enabled": True}, "stateful": {"enabled": False}},
        # 413 is the contract's answer to a batch over 1000 readings (the document's maxItems).
        # 403: a new password without the right current_password (POST /user).
        "checks": {"negative_data_rejection": {"expected-statuses": [400, 401, 403, 404, 405, 409, 413, 429]}},
    })
    with open(DOC_PATH, encoding="utf-8") as handle:
        document = yaml.safe_load(handle)
    return schemathesis.openapi.from_dict(document, config=config)


# Loaded at collection (schemathesis makes one test per operation); the stack's URL is given per call.
# (schemathesis.pytest.from_fixture would load it from a fixture, but its lazy tests break on pytest 9.)
fuzz_schema = make_schema()
_UNAUTHENTICATED = ("logIn", "openapiDocument", "documentationPage", "documentationScript", "documentationStylesheet")

_SETTINGS = settings(deadline=None, suppress_health_check=list(HealthCheck), print_blob=True)


def _run(case, stack, mode):
    """Send one case as project A, with fresh credentials, and check the answer."""
    operation = case.operation
    kwargs = {}
    if operation.definition.raw.get("operationId") not in _UNAUTHENTICATED:
        user_id, key = stack.throwaway() if (operation.method.upper(), operation.path) == ("DELETE", "/user") \
            else (None, None)
        if mode == "key":
            key = key or stack.key()
            # The key as X-API-Key, every other request as Authorization: Bearer.
            stack.requests += 1
            kwargs = {"headers": {"X-API-Key": key} if stack.requests % 2 else {"Authorization": f"Bearer {key}"}}
        else:
            kwargs = {"cookies": {"session": stack.session(user_id)}}
    case.call_and_validate(base_url=stack.url, checks=_checks(), additional_checks=[no_data_of_project_b(stack)],
                           **kwargs)


@_SETTINGS
@fuzz_schema.parametrize()
def test_fuzz_by_key(case, stack):
    """Every operation, authenticated by X-API-Key (and the two that need no credentials)."""
    _run(case, stack, "key")


@_SETTINGS
@fuzz_schema.exclude(operation_id=list(_UNAUTHENTICATED)).parametrize()
def test_fuzz_by_cookie(case, stack):
    """Every authenticated operation, authenticated by the session cookie."""
    _run(case, stack, "cookie")


# ---- readings, fuzzed one by one ----------------------------------------------------------------

# POST /data answers 200 for any batch of at most 1000 elements (each wrong reading is rejected on its
# own), so the document leaves the elements unconstrained and the run above mostly sends junk elements.
# Here they are shaped like readings, with times and values at and past every edge (A's time zone is
# Europe/Paris: naive times in its daylight-saving gap and overlap, years 1 and 9999 that overflow).

def _readings():
    from datetime import datetime, timedelta, timezone

    from hypothesis import strategies as st

    def weighted(choices):
        """One of the strategies, picked in proportion to its weight (st.one_of favours the simplest)."""
        table = [strategy for weight, strategy in choices for _ in range(weight)]
        return st.integers(0, len(table) - 1).flatmap(lambda i: table[i])

    def timestamp(args):
        moment, style, offset_minutes = args
        text = moment.strftime("%Y-%m-%dT%H:%M:%S" if style != "space" else "%Y-%m-%d %H:%M:%S")
        if style == "Z":
            return text + "Z"
        if style == "offset":
            sign = "-" if offset_minutes < 0 else "+"
            return f"{text}{sign}{abs(offset_minutes) // 60:02d}:{abs(offset_minutes) % 60:02d}"
        return text

    now = datetime.now(timezone.utc).replace(tzinfo=None)
    recent = st.tuples(st.datetimes(min_value=now - timedelta(days=30), max_value=now + timedelta(minutes=20)),
                       st.sampled_from(["Z", "offset", "naive", "space"]), st.integers(-15 * 60, 15 * 60)).map(timestamp)
    wide = st.tuples(st.datetimes(), st.sampled_from(["Z", "offset", "naive"]), st.integers(-14 * 60, 14 * 60)).map(timestamp)
    edges = st.sampled_from(["0001-01-01T00:00:00", "9999-12-31T23:59:59", "9999-12-31T23:59:59-14:00",
                             "0001-01-01T00:00:00+14:00", "1970-01-01T00:00:00Z", "1969-12-31T23:59:59Z",
                             "2021-03-28T02:30:00", "2021-10-31T02:30:00", "2019-10-30T13:15:00.000Z",
                             "2019-10-30T13:15:00.5Z", "2019-10-30T13:15:00+1400", "2019-10-30T13:15Z",
                             "2019-02-29T00:00:00Z", "", "yesterday"])
    times = weighted([(6, recent), (1, wide), (2, edges), (1, st.one_of(st.text(max_size=30), st.none(), st.integers()))])
    values = weighted([
        (6, st.floats(min_value=0, max_value=1e7)), (1, st.floats(allow_nan=True, allow_infinity=True)),
        (1, st.one_of(st.integers(), st.integers(min_value=10 ** 300, max_value=10 ** 400))),
        (2, st.sampled_from(["28540.24", "1e3", " 12 ", "1_000", "NaN", "-inf", "0x10", "", True, None, [], {}]))])
    reading = st.fixed_dictionaries(
        {"MeterId": weighted([(6, st.just("meter1")), (1, st.sampled_from([" meter1", "ghost", "", "\u0000", 7]))]),
         "TimeStamping": times, "value": values})
    junk = st.lists(st.one_of(st.none(), st.integers(), st.text(max_size=5), st.lists(st.none())), max_size=2)
    return st.tuples(st.lists(reading, max_size=12), junk).map(lambda parts: parts[0] + parts[1]).flatmap(st.permutations)


def _receipt_of(stack, batch):
    operation = fuzz_schema["/data"]["POST"]
    response = requests.post(stack.url + "/data", data=json.dumps({"readings": batch}, allow_nan=True),
                             headers={"X-API-Key": stack.key(), "Content-Type": "application/json"}, timeout=60)
    assert response.status_code == 200, response.text[:500]
    operation.validate_response(response)
    receipt = response.json()
    indexes = [entry["index"] for entry in receipt["rejected"]]
    assert receipt["accepted"] + receipt["duplicates"] + len(indexes) == len(batch), (batch, receipt)
    assert len(set(indexes)) == len(indexes) and all(0 <= i < len(batch) for i in indexes), receipt
    return receipt


def test_fuzz_readings_one_by_one(stack):
    """Reading-shaped batches: no 500, a conforming receipt that accounts for every reading, and sent twice,
    nothing stored the second time (idempotent: what was accepted is a duplicate, what was rejected still is)."""
    from hypothesis import given

    @settings(max_examples=max(4 * FUZZ_EXAMPLES, 20), derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(batch=_readings())
    def post_twice(batch):
        first = _receipt_of(stack, batch)
        second = _receipt_of(stack, batch)
        assert second["accepted"] == 0, (batch, first, second)
        assert second["duplicates"] == first["accepted"] + first["duplicates"], (batch, first, second)
        assert [r["index"] for r in second["rejected"]] == [r["index"] for r in first["rejected"]], (batch, first, second)

    post_twice()


# ---- GET routes with JSON bodies ----------------------------------------------------------------

# The document gives GET operations no body (GET takes query arguments), so the runs above never send
# one; clients do, and the app reads it like a query string. Here each GET operation gets JSON bodies
# naming its parameters with values of every JSON type: scalars behave as the query argument would,
# lists and objects are a 400 (a list `type` on GET /file was a 500: issue 11).

def test_fuzz_get_routes_with_json_bodies(stack):
    from hypothesis import given
    from hypothesis import strategies as st

    with open(DOC_PATH, encoding="utf-8") as handle:
        document = yaml.safe_load(handle)
    operations = {path: [_resolve(document, p)["name"] for p in item["get"].get("parameters", [])]
                  for path, item in document["paths"].items() if "get" in item and path != "/openapi.yaml"}
    scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=12))
    values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                            st.dictionaries(st.text(max_size=5), inner, max_size=3)),
                          max_leaves=6)

    @settings(max_examples=max(4 * FUZZ_EXAMPLES, 30), derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(path=st.sampled_from(sorted(operations)), data=st.data())
    def get_with_body(path, data):
        names = operations[path] + ["id", "type", "meter", "start", "end"]
        body = data.draw(st.dictionaries(st.sampled_from(names), values, max_size=4))
        response = requests.get(stack.url + path, data=json.dumps(body), allow_redirects=False, timeout=60,
                                headers={"X-API-Key": stack.key(), "Content-Type": "application/json"})
        assert response.status_code < 500, (path, body, response.text[:300])
        if any(isinstance(v, (list, dict)) for v in body.values()):
            assert response.status_code == 400, (path, body, response.text[:300])
        fuzz_schema[path]["GET"].validate_response(response)

    get_with_body()


# ---- object-level authorization, over every operation of the document ---------------------------

# Parameters naming an object of a project: (where, name) → how to give project B's objects and nothing.
# Usernames are login names, unique across all projects by design (PUT/POST /user answer 409 for any
# taken name, whoever has it), so they count as an identifier only where they name an account to log in.
_NOTHING_ID, _NOTHING_NAME = 10 ** 9, "no-such-meter"


def _identifiers(stack, operation_key):
    b = stack.b
    meter_names = [b["only_meter"]]
    table = {
        ("query", "id"): [*b["meter_ids"]], ("body", "id"): [*b["meter_ids"]],
        ("query", "name"): meter_names, ("body", "name"): meter_names, ("query", "meter"): meter_names,
        ("body", "MeterId"): meter_names, ("body", "readings"): meter_names,
    }
    if operation_key == ("PUT", "/session"):
        table[("body", "username")] = [b["username"]]
    if operation_key == ("DELETE", "/keys"):   # a key id of B's, not a meter id
        table[("query", "id")] = [b["scoped_key_id"]]
    # Tariff ids are another sequence than meter ids: B's tariff where an operation names a tariff (a meter
    # id of B's could be one of A's own tariffs, which A may of course use).
    if operation_key[1] == "/tariffs":
        table[("query", "id")] = table[("body", "id")] = [*b["tariff_ids"]]
    table[("query", "tariff")] = table[("body", "Tariff")] = [*b["tariff_ids"]]
    nothing = {"id": _NOTHING_ID, "tariff": _NOTHING_ID, "Tariff": _NOTHING_ID, "username": "no-such-user"}
    return table, nothing


def _resolve(document, node):
    while isinstance(node, dict) and "$ref" in node:
        target = document
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _json_example(operation):
    content = ((operation.get("requestBody") or {}).get("content") or {}).get("application/json")
    if not content:
        return None
    if "example" in content:
        return dict(content["example"])
    return dict(next(iter(content.get("examples", {}).values()))["value"]) if content.get("examples") else {}


def _with_identifier(where, name, value, query, body):
    query, body = dict(query), dict(body) if body is not None else None
    if where == "query":
        query[name] = value
    elif name == "readings":
        body["readings"] = [{**reading, "MeterId": value} for reading in body["readings"]]
    else:
        body[name] = value
        if name == "username":
            body["password"] = "not the password of anyone"
    return query, body


def _normalized(response, *values):
    """The answer with the identifiers given replaced by <X> and ids dropped, to compare B's with nothing's
    (both answers get both replaced: a small id such as 1 also appears in a message's fixed text)."""
    try:
        data = response.json()
    except ValueError:
        data = response.text

    def norm(node):
        if isinstance(node, dict):
            return {k: ("<%s>" % k if k in ("id", "uuid", "expires") else norm(v)) for k, v in node.items()}
        if isinstance(node, list):
            return [norm(v) for v in node]
        if isinstance(node, str):  # a download link: its random key part and signature differ each time
            node = re.sub(r"/[0-9a-f]{32}/", "/<random>/", node.split("?X-Amz-")[0])
            for value in values:
                node = node.replace(repr(str(value)), "<X>").replace(str(value), "<X>")
            return node
        return node

    return response.status_code, norm(data)


def _assert_nothing_of_b(stack, response):
    text = response.text
    b = stack.b
    for secret in (b["key"], b["scoped_key"], b["email"], f"{B_MARK}-project", f"{B_MARK}-agent"):
        assert secret not in text, f"project B's {secret!r} in an answer to another project: {text[:300]}"
    try:
        data = response.json()
    except ValueError:
        return
    leaked = _ids(data) & set(b["meter_ids"])
    assert not leaked, f"project B's meter ids {sorted(leaked)} in an answer to another project: {text[:300]}"
    if isinstance(data, list):
        assert b["user_id"] not in [row.get("uuid") for row in data if isinstance(row, dict)], text[:300]


@pytest.mark.parametrize("mode", ["key", "cookie"])
def test_no_object_of_another_project_over_every_operation(stack, mode):
    """As another project's account, over every documented operation: B's ids and names answer as nothing does.

    For each operation of the document and each of its parameters naming an object (meter id, meter
    name, meter name on site, readings' meter, login name), the request is sent with project B's object
    and with one that exists nowhere: both answers must be the same (status and body, but for the
    identifier echoed and the ids of the caller's own objects). Every answer of every operation is also
    checked for B's data, and project B is compared as stored before and after (the last test).
    """
    from chalicelib.identity import accounts, sessions
    from chalicelib.metering import meters

    with open(DOC_PATH, encoding="utf-8") as handle:
        document = yaml.safe_load(handle)
    project = accounts.create_project(f"tenancy-{mode}", "UTC")
    pid = project["project_id"]
    view, _key = accounts.create_user(pid, f"tenant-{mode}", PASSWORD, f"tenant-{mode}@example.com")
    own = meters.register(pid, {"MeterId": "meter1", "ModbusId": 3})

    def credentials(user_id):
        if mode == "key":
            return {"headers": {"X-API-Key": accounts.current_key(pid, user_id)["key"]}}
        return {"cookies": {"session": sessions.create(pid, user_id)}}

    def send(method, path, operation, query, body):
        public = operation.get("security") == []
        user_id = view["uuid"]
        if (method, path) == ("DELETE", "/user"):
            user_id = accounts.create_user(pid, f"gone-{mode}-{time.monotonic_ns()}", PASSWORD, "gone@example.com")[0]["uuid"]
        kwargs = {} if public else credentials(user_id)
        response = requests.request(method, stack.url + path, params=query, json=body, allow_redirects=False,
                                    timeout=60, **kwargs)
        assert response.status_code < 500, (method, path, query, body, response.text[:300])
        _assert_nothing_of_b(stack, response)
        return response

    visited, compared = set(), []
    # PUT last: PUT /point registers meters under the names tried, which the other operations would find.
    operations = sorted(((m.upper(), p, op) for p, item in document["paths"].items() for m, op in item.items()),
                        key=lambda entry: entry[0] == "PUT")
    for method, path, operation in operations:
        key = (method, path)
        visited.add(key)
        parameters = [_resolve(document, p) for p in operation.get("parameters", [])]
        query = {p["name"]: p["example"] for p in parameters if p.get("required")}
        body = _json_example(operation)
        send(method, path, operation, query, body)          # the operation as documented, for the caller
        table, nothing = _identifiers(stack, key)
        names = [("query", p["name"]) for p in parameters]
        schema = _resolve(document, ((operation.get("requestBody") or {}).get("content") or {})
                          .get("application/json", {}).get("schema", {}))
        names += [("body", name) for name in schema.get("properties", {})]
        for where, name in names:
            for value in table.get((where, name), []):
                absent = nothing.get(name, _NOTHING_NAME)
                theirs = send(method, path, operation, *_with_identifier(where, name, value, query, body))
                none = send(method, path, operation, *_with_identifier(where, name, absent, query, body))
                assert _normalized(theirs, value, absent) == _normalized(none, absent, value), (
                    f"{method} {path} with project B's {name}={value!r} answers otherwise than with one "
                    f"that exists nowhere:\n{theirs.status_code} {theirs.text[:300]}\n"
                    f"{none.status_code} {none.text[:300]}")
                compared.append((method, path, name))

    documented = {(m.upper(), p) for p, item in document["paths"].items() for m in item}
    assert visited == documented
    # Every identifier-taking operation was compared (a new one without an entry above would show here).
    assert {(m, p) for m, p, _n in compared} >= {
        ("GET", "/point"), ("POST", "/point"), ("PUT", "/point"), ("POST", "/data"), ("GET", "/file"),
        ("GET", "/graphics"), ("PUT", "/session"), ("DELETE", "/keys")}
    # A name both projects use finds the caller's own meter.
    answer = requests.get(stack.url + "/point", params={"name": "meter1"}, timeout=60, **credentials(view["uuid"]))
    assert answer.status_code == 200 and answer.json()["id"] == own["id"]


def test_zz_project_b_untouched_by_the_fuzzing(stack):
    """Nothing of project B changed while project A's credentials were fuzzed over every route."""
    assert stack.snapshot_b() == stack.b["before"]
