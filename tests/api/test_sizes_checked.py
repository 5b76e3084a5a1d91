"""Every name, id and label is bounded and checked before any storage call: an oversized value is a 4xx
(never a 500), its error quotes at most 64 of its characters, and it never reaches DynamoDB.

Every operation of the OpenAPI document (so a route added there is tried too) is sent each of its
parameters oversized, one at a time, the others valid, in the query string and (for writes) in a JSON
body, while DynamoDB's key size limits are enforced as DynamoDB enforces them (tests/dynamodb_limits.py:
moto alone checks them on writes only, so a lookup by an oversized name would pass here and fail on AWS).
"""
import json
import os
import urllib.parse

import pytest
import yaml

from tests.dynamodb_limits import DynamoDbKeyLimits, stage_tables

DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "docs", "openapi.yaml")
OVERSIZED = {
    "ascii": "x" * 2000,                        # 2,000 bytes: over a sort key's 1,024
    "wide": "\U0001f50c" * 300,                 # 300 characters of 4 UTF-8 bytes: 1,200 bytes
}
QUOTE_MAX = 64
# Valid values of the parameters an operation needs, where the document gives no example.
BASELINE: dict[tuple[str, str], dict[str, object]] = {
    ("put", "/user"): {"username": "newcomer", "password": "a long enough password", "email": "n@example.com"},
    ("put", "/point"): {"MeterId": "m1"},
    ("post", "/point"): {"name": "m1", "new": "m1-renamed"},
    ("put", "/keys"): {"label": "site box", "scope": "ingest"},
    ("put", "/status"): {"time": "2026-11-29T10:00:00Z"},
    ("post", "/data"): {"readings": [{"MeterId": "m1", "TimeStamping": "2026-03-01T00:00:00Z", "value": 1.0}]},
    ("get", "/file"): {"start": "2026-03-01", "end": "2026-03-02"},
    ("get", "/consumption"): {"start": "2026-03-01", "end": "2026-03-02"},
}
# Operations that end or replace the caller's own credential: each request gets an account of its own.
SPENDS_ITS_CALLER = {("delete", "/user"), ("post", "/key"), ("post", "/user"), ("delete", "/session")}


def operations():
    with open(DOC) as handle:
        doc = yaml.safe_load(handle)
    schemas = doc["components"]["schemas"]
    found = []
    for path, methods in doc["paths"].items():
        for method, operation in methods.items():
            if not isinstance(operation, dict) or method not in ("get", "put", "post", "delete"):
                continue
            # {name: example when the operation needs it, else None}
            params = {p["name"]: p.get("example") if p.get("required") else None
                      for p in operation.get("parameters", []) if "name" in p}
            params["responseType"] = None
            for content in operation.get("requestBody", {}).get("content", {}).values():
                schema = schemas.get(content["schema"].get("$ref", "").split("/")[-1], {})
                needed = set(schema.get("required", ()))
                params.update({name: spec.get("example") if name in needed else None
                               for name, spec in schema.get("properties", {}).items()})
            found.append((method, path, params))
    return found


def _cases():
    for method, path, params in operations():
        for name in params:
            for kind in OVERSIZED:
                yield pytest.param(method, path, params, name, kind, id=f"{method} {path} {name} {kind}")


def _longest_quote(body: str, value: str) -> int:
    """The longest run of the value's characters the answer repeats."""
    run = best = 0
    unit = value[0]
    for ch in body:
        run = run + 1 if ch == unit else 0
        best = max(best, run)
    return best


@pytest.fixture(scope="module")
def site():
    """One stack for the module (a fresh moto per case would be most of its time): a project with a meter
    m1, its account, a factory of more accounts in it, and the DynamoDB double on the app's client."""
    from chalicelib.metering import meters
    from chalicelib.platform import aws as aws_clients
    from tests.module_aws import module_stack

    with module_stack() as stack:
        account = stack.account()
        project_id = account.view["project"]
        meters.register(project_id, {"MeterId": "m1"})
        yield (account, DynamoDbKeyLimits(aws_clients.dynamodb(), stage_tables(stack.env)),
               lambda: stack.account(project_id))


@pytest.mark.parametrize("method, path, params, name, kind", list(_cases()))
def test_an_oversized_parameter_is_a_4xx_quoting_little_and_never_stored(site, method, path, params, name, kind):
    account, limits, make_account = site
    if (method, path) in SPENDS_ITS_CALLER:
        account = make_account()
    value = OVERSIZED[kind]
    base = {k: v for k, v in params.items() if v is not None}
    base.update(BASELINE.get((method, path), {}))
    sent = {**base, name: value}
    before = len(limits.calls)
    if method == "get":
        answer = account.request(method, path + "?" + urllib.parse.urlencode(sent))
    else:
        answer = account.request(method, path, body=sent)
    body = answer.body.decode() if isinstance(answer.body, bytes) else answer.body or ""
    assert 400 <= answer.status_code < 500 or answer.status_code in (200, 202, 303), (answer.status_code, body[:300])
    assert _longest_quote(body, value) <= QUOTE_MAX, body[:300]
    assert not any(value[:100] in params_ for _op, params_ in limits.calls[before:]), \
        f"{name} reached DynamoDB: {[op for op, p in limits.calls[before:] if value[:100] in p]}"
    if answer.status_code >= 400:
        assert json.loads(body)["error"]


def test_the_double_refuses_what_dynamodb_refuses(site):
    """The double itself: an oversized sort key in a lookup is DynamoDB's ValidationException, a fitting one is not."""
    from botocore.exceptions import ClientError

    from chalicelib.platform import db
    from chalicelib.tables import meters_table

    assert db.get(meters_table.NAME, meters_table.display_name_key(1, "y" * 1000)) is None
    with pytest.raises(ClientError) as refused:
        db.get(meters_table.NAME, meters_table.display_name_key(1, "y" * 1100))
    assert refused.value.response["Error"]["Code"] == "ValidationException"
    assert "1024 bytes" in refused.value.response["Error"]["Message"]


def test_a_name_too_long_is_told_with_its_length_and_a_short_quote(site):
    account, limits, _make = site
    answer = account.request("GET", "/consumption?start=2026-03-01&end=2026-03-01&meter=" + "z" * 5000)
    assert answer.status_code == 400
    error = answer.json_body["error"]
    assert error.startswith("meter is too long: 5000 characters, at most 64 ('zzz") and error.endswith("…)")
    assert not limits.reached("z" * 65)


def test_a_lookup_finds_a_name_as_it_was_stored(site):
    """Names are stored trimmed and in NFC; a lookup goes through the same check, so it finds them."""
    account, _limits, _make = site
    stored = account.call("PUT", "/point", body={"MeterId": "Caf\u00e9 main"})         # é as one code point
    assert account.call("GET", "/point", {"name": " Cafe\u0301 main "})["id"] == stored["id"]    # e + combining acute
