"""chalicelib/openapi.yaml: a valid OpenAPI 3.1 document that describes exactly the app's routes, served by the API.

A route added to app.py without documenting it (or documented without being routed, or with another
authentication) fails test_document_and_app_have_the_same_routes.
"""
import json
import os

import jsonschema
import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOC_PATH = os.path.join(ROOT, "chalicelib", "apidocs", "openapi.yaml")
MEDIA_TYPES = {"application/json", "application/xml", "application/yaml"}
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
JSON_TYPE = {"Content-Type": "application/json"}
REFERENCE_MEDIA_TYPES = {"/openapi.yaml": "application/yaml", "/docs": "text/html",
                         "/docs/ui.js": "application/javascript", "/docs/ui.css": "text/css"}


@pytest.fixture(scope="module")
def document():
    with open(DOC_PATH, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def _operations(document):
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield path, method.upper(), operation


def _resolve(document, node):
    while isinstance(node, dict) and "$ref" in node:
        target = document
        for part in node["$ref"][2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        node = target
    return node


def _refs(node):
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _headers(answer):
    return {name.lower(): value for name, value in answer.headers.items()}


def test_docs_openapi_yaml_is_a_link_to_the_document_not_a_copy():
    """One document: docs/openapi.yaml, where readers look, is a symbolic link to chalicelib/openapi.yaml."""
    docs = os.path.join(ROOT, "docs", "openapi.yaml")
    assert os.path.islink(docs), "docs/openapi.yaml must stay a link: edit chalicelib/apidocs/openapi.yaml only"
    assert os.path.realpath(docs) == os.path.realpath(DOC_PATH)


def test_the_document_is_packaged_with_the_function():
    """`chalice package` ships chalicelib/openapi.yaml (it zips app.py and every file of chalicelib/)."""
    from chalice.deploy.packager import LambdaDeploymentPackager
    from chalice.utils import UI, OSUtils

    packager = LambdaDeploymentPackager(OSUtils(), None, UI())
    zipped = dict((zip_path, full_path) for full_path, zip_path in packager._iter_app_filenames(ROOT))
    assert "chalicelib/apidocs/openapi.yaml" in zipped
    assert "chalicelib/apidocs/openapi.py" in zipped


def test_the_document_is_valid_openapi_3_1(document):
    import schemathesis

    assert document["openapi"].startswith("3.1.")
    schemathesis.openapi.from_dict(document).validate()
    for schema in document["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)
    for ref in set(_refs(document)):
        assert ref.startswith("#/"), ref
        assert _resolve(document, {"$ref": ref}) is not None, ref


def test_document_and_app_have_the_same_routes(document):
    """Every route of app.py is documented with its methods and authentication, and nothing else is."""
    from app import api

    routed = {(path, method): route.authenticated for path, methods in api.routes.items()
              for method, route in methods.items()}
    documented = {(path, method): operation.get("security", document["security"]) != []
                  for path, method, operation in _operations(document)}
    assert sorted(set(routed) - set(documented)) == [], "routes of app.py missing from chalicelib/apidocs/openapi.yaml"
    assert sorted(set(documented) - set(routed)) == [], "operations of chalicelib/apidocs/openapi.yaml that app.py doesn't route"
    assert documented == routed, "authentication differs (security: [] in the document is authenticated=False)"


def test_the_document_gives_each_operation_the_scopes_the_app_grants(document):
    """x-scopes of each operation are the scoped keys' scopes that may call it (chalicelib/scoped_keys.py)."""
    from app import api

    for path, method, operation in _operations(document):
        assert sorted(operation.get("x-scopes", [])) == sorted(api.routes[path][method].scopes), f"{method} {path}"


def test_every_operation_documents_its_answers(document):
    """responseType, the three media types, the errors every operation can give, the 303s of /file, /file/job and /graphics."""
    schemes = set(document["components"]["securitySchemes"])
    assert schemes == {"apiKey", "bearerKey", "sessionCookie"}
    assert document["components"]["securitySchemes"]["apiKey"]["name"] == "X-API-Key"
    assert document["components"]["securitySchemes"]["sessionCookie"] == {
        **document["components"]["securitySchemes"]["sessionCookie"], "in": "cookie", "name": "session"}
    for path, method, operation in _operations(document):
        label = f"{method} {path}"
        responses = operation["responses"]
        if path in REFERENCE_MEDIA_TYPES:     # the document itself and its interactive page: not API answers
            assert set(_resolve(document, responses["200"])["content"]) == {REFERENCE_MEDIA_TYPES[path]}
            assert operation["security"] == [], label
            continue
        names = [_resolve(document, p)["name"] for p in operation.get("parameters", [])]
        assert "responseType" in names, label
        assert "400" in responses, label
        if operation.get("security", document["security"]) != []:
            assert "401" in responses, label
        if method in ("PUT", "POST", "DELETE"):
            assert {"413", "415"} <= set(responses), label
        success = "303" if path in ("/file", "/graphics", "/file/job") else "200"
        expected = {"200", "303"} if path == "/file/job" else {success}   # a failed job answers 200
        assert set(responses) & {"200", "303"} == expected, label
        for status, response in responses.items():
            content = _resolve(document, response)["content"]
            assert set(content) == MEDIA_TYPES, f"{label} {status}"
        if success == "303":
            headers = _resolve(document, responses["303"])["headers"]
            assert headers["Location"]["required"] is True, label
        if method != "GET" and "requestBody" in operation:
            assert {"application/json", "application/x-www-form-urlencoded"} <= set(
                operation["requestBody"]["content"]) or path in ("/data", "/tariffs"), label   # lists: JSON only


def test_the_examples_follow_their_schemas(document):  # noqa: C901  # walks every kind of example the document has
    """Each example of the document is valid for the schema beside it (they are what schemathesis sends first)."""
    checked = 0

    def check(schema, example, where):
        nonlocal checked
        resolved = {**schema, "components": document["components"]} if "$ref" not in schema else {
            "$ref": schema["$ref"], "components": document["components"]}
        jsonschema.Draft202012Validator(resolved).validate(example)
        checked += 1

    for path, method, operation in _operations(document):
        for parameter in map(lambda p: _resolve(document, p), operation.get("parameters", [])):
            if "example" in parameter:
                check(parameter["schema"], parameter["example"], f"{method} {path} {parameter['name']}")
        for media in (operation.get("requestBody") or {}).get("content", {}).values():
            for example in [media.get("example"), *[e["value"] for e in media.get("examples", {}).values()]]:
                if example is not None:
                    check(media["schema"], example, f"{method} {path} body")
        for response in operation["responses"].values():
            for media in _resolve(document, response).get("content", {}).values():
                if "example" in media:
                    check(media["schema"], media["example"], f"{method} {path} answer")
    assert checked > 20


def test_the_api_serves_its_document_without_credentials(client):
    answer = client.http.get("/openapi.yaml")
    assert answer.status_code == 200
    assert _headers(answer)["content-type"] == "application/yaml"
    with open(DOC_PATH, "rb") as handle:
        assert answer.body == handle.read()
    assert yaml.safe_load(answer.body)["paths"]["/openapi.yaml"]["get"]["security"] == []


def test_methods_the_document_does_not_list_answer_405_with_the_documented_ones(client, document):
    for path, item in document["paths"].items():
        documented = sorted(m.upper() for m in item if m in HTTP_METHODS)
        for method in ("GET", "PUT", "POST", "DELETE", "PATCH"):
            if method in documented:
                continue
            answer = getattr(client.http, method.lower())(path)
            assert answer.status_code == 405, (method, path, answer.body)
            assert _headers(answer)["allow"] == ", ".join(documented), (method, path)
            assert _headers(answer)["content-type"] == "application/json"


# ---- what /docs shows and calls -----------------------------------------------------------------

def test_the_documents_server_is_the_one_that_served_it(document):
    """A relative server: Swagger UI resolves it against the document's URL, so /docs calls the API it
    came from on any host, port or stage prefix (tests/system/test_docs_page.py does it in Chromium)."""
    assert [server["url"] for server in document["servers"]] == ["."]


FILTERS = {"meter", "period", "bill", "tariff"}   # narrow or change an answer; GET /point's id and name choose one meter


def test_optional_filters_and_selectors_are_never_pre_filled(document):
    """Swagger UI puts a parameter's example into "Try it out": an example meter would 404 or narrow the
    answer of someone else's project. Examples go in the description instead."""
    for path, method, operation in _operations(document):
        for parameter in map(lambda p: _resolve(document, p), operation.get("parameters", [])):
            chooses = parameter["name"] in FILTERS or (path, method) == ("/point", "GET")
            if chooses and not parameter.get("required") and parameter["name"] != "responseType":
                schema = _resolve(document, parameter["schema"])
                assert "example" not in parameter and "examples" not in parameter, (method, path, parameter["name"])
                assert "example" not in schema and "default" not in schema, (method, path, parameter["name"])


def _error_example(document, name):
    return _resolve(document, {"$ref": f"#/components/responses/{name}"})["content"]["application/json"][
        "example"]["error"]


def test_each_error_answer_shows_its_own_message_as_the_api_gives_it(client, make_account, document, fast_hashing):
    """The example of each error response is the message the API answers for it (numbers aside), so the
    page never shows a responseType error as the example of a 401 or a 404."""
    import re

    from chalicelib.identity import accounts
    from chalicelib.metering import meters
    from chalicelib.platform import aws, db
    from chalicelib.tables import accounts_table
    from tests.aws_faults import AwsFaults

    account = make_account(username="examples")
    reader = account.call("PUT", "/keys", {"label": "dashboard", "scope": "read"})["key"]
    big = b"{" + b" " * (2 * 1024 * 1024 + 1) + b"}"
    answers = {
        "BadRequest": account.request("GET", "/session?responseType=html"),
        "Unauthorized": client.http.get("/session"),
        "Forbidden": client.http.put("/point", headers={"X-API-Key": reader}),
        "KeyNotFound": account.request("DELETE", "/keys?id=3"),
        "MeterNotFound": account.request("GET", "/point?name=meter1"),
        "JobNotFound": account.request("GET", "/file/job?id=nope"),
        "Conflict": [account.request("PUT", "/user", {"username": "alice", "password": "a long password",
                                                       "email": "alice@example.com"}),
                     account.request("POST", "/user", {"username": "alice"})][-1],
        "PayloadTooLarge": client.http.put("/point", headers={**account.headers, **JSON_TYPE}, body=big),
        "UnsupportedMediaType": client.http.put("/point", headers={**account.headers, "Content-Type": "text/xml"},
                                                body=b"<a/>"),
    }
    answers["TariffNotFound"] = account.request("GET", "/tariffs?id=7")
    answers["MeterOrTariffNotFound"] = account.request("GET", "/bill?start=2026-11-01&end=2026-11-30&tariff=7")
    for n in range(50):                                   # 50 meters x 13 months: past the 600 rows of a bill
        meters.register(account.view["project"], {"MeterId": f"m{n}"})
    answers["AnswerTooLarge"] = account.request("GET", "/bill?start=2025-12-31&end=2026-12-31")
    for _ in range(10):
        client.http.put("/session", headers=JSON_TYPE, body=b'{"username": "examples", "password": "wrong!!!"}')
    answers["TooManyRequests"] = client.http.put("/session", headers=JSON_TYPE,
                                                 body=b'{"username": "examples", "password": "wrong!!!"}')
    AwsFaults.planned([aws.dynamodb()], {("GetItem", 1): "throttle"})
    answers["ServiceUnavailable"] = account.request("GET", "/session")
    db.delete(accounts_table.NAME, accounts_table.user_key(account.view["project"], account.view["uuid"]))
    answers["AccountGone"] = account.request("GET", "/session")
    assert accounts.find_by_key(account.key) is not None       # the key's item is there, its account gone

    examples = {name: _error_example(document, name) for name in answers}
    errors = {name: response for name, response in document["components"]["responses"].items()
              if response.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref", "").endswith(
                  "/Error")}
    every = [_error_example(document, name) for name in errors]       # each error response has its own
    assert len(set(every)) == len(every), "two error answers show the same example"
    for name, answer in answers.items():
        given = json.loads(answer.body).get("error", answer.body.decode())
        assert re.sub(r"\d+", "N", given) == re.sub(r"\d+", "N", examples[name]), (name, given, examples[name])
