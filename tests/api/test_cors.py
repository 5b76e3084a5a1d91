"""Browsers may call the API from any origin, with credentials in headers only (chalicelib/platform/web.py).

Every answer, errors included, carries `Access-Control-Allow-Origin: *`; an OPTIONS preflight gets the
path's methods and the headers credentials travel in; any other OPTIONS, HEAD and methods no route has
(QUERY, TRACE, …) are the API's 405 with its error body, in process as on the local HTTP server. A
request from another origin is never authenticated by the session cookie, nor given one. The same in a
real browser: tests/system/test_docs_page.py.
"""
import http.client
import json
from urllib.parse import urlsplit

import pytest

from tests.conftest import PASSWORD

ORIGIN = "http://portal.example"
HOST = "127.0.0.1:8000"
CREDENTIAL_HEADERS = {"authorization", "x-api-key", "content-type"}


def _headers(answer):
    return {name.lower(): value for name, value in answer.headers.items()}


def _allowed(value):
    return {part.strip() for part in value.split(",")}


def test_every_answer_carries_allow_origin_star_errors_included(client, make_account):
    account = make_account()
    big = b"{" + b" " * (2 * 1024 * 1024 + 1) + b"}"
    answers = {
        200: account.request("GET", "/session"),
        400: account.request("GET", "/session?responseType=html"),
        401: client.http.get("/session"),
        403: account.request("POST", "/user", {"password": "a new password", "current_password": "wrong one"}),
        404: client.http.get("/nowhere"),
        405: client.http.patch("/session"),
        413: client.http.put("/point", headers={**account.headers, "Content-Type": "application/json"}, body=big),
        415: client.http.put("/point", headers={**account.headers, "Content-Type": "text/xml"}, body=b"<a/>"),
    }
    for status, answer in answers.items():
        headers = _headers(answer)
        assert answer.status_code == status, (status, answer.body)
        assert headers["access-control-allow-origin"] == "*", status
        assert "access-control-allow-credentials" not in headers, status   # never credentialed CORS
        assert {"location", "retry-after", "allow"} <= {h.strip().lower() for h in
                                                        headers["access-control-expose-headers"].split(",")}


def test_a_preflight_lists_the_paths_methods_and_the_headers_credentials_travel_in(client):
    from app import api

    for path, methods in api.routes.items():
        for asked in methods:
            answer = client.http.options(path, headers={"Origin": ORIGIN, "Access-Control-Request-Method": asked,
                                                        "Access-Control-Request-Headers": "authorization"})
            headers = _headers(answer)
            assert answer.status_code == 204, (path, answer.body)
            assert answer.body in (b"", None)
            assert _allowed(headers["access-control-allow-methods"]) == set(methods), path
            assert {h.lower() for h in _allowed(headers["access-control-allow-headers"])} == CREDENTIAL_HEADERS
            assert headers["access-control-allow-origin"] == "*"
            assert int(headers["access-control-max-age"]) > 0
    # A path no route has: the methods a browser may then send, so it can read the 404 that follows.
    unknown = client.http.options("/nowhere", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET"})
    assert unknown.status_code == 204 and "GET" in _allowed(_headers(unknown)["access-control-allow-methods"])


def test_options_outside_a_preflight_and_head_are_405_with_the_error_body(client):
    from app import api

    for path, methods in api.routes.items():
        for method, headers in (("OPTIONS", {}), ("OPTIONS", {"Origin": ORIGIN}),   # no Request-Method: no preflight
                                ("OPTIONS", {"Access-Control-Request-Method": "GET"}), ("HEAD", {})):
            answer = client.http.request(method, path, headers=headers)
            assert answer.status_code == 405, (method, path, answer.body)
            assert _headers(answer)["allow"] == ", ".join(sorted(methods))
            assert json.loads(answer.body) == {"error": f"{method} is not allowed on {path}: use "
                                                        f"{', '.join(sorted(methods))}"}


def _raw(url, method, path, headers=None):
    """(status, headers, body) of one request, then proof that the connection still frames answers right:
    a GET on the same connection gets its own whole answer."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.request(method, path, headers=headers or {})
        answer = connection.getresponse()
        result = answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read()
        connection.request("GET", "/openapi.yaml")
        after = connection.getresponse()
        assert after.status == 200 and after.read().startswith(b"openapi: 3.1")
        return result
    finally:
        connection.close()


@pytest.mark.parametrize("method", ["HEAD", "OPTIONS", "QUERY", "TRACE", "PROPFIND", "get"])
def test_over_http_any_method_a_path_lacks_is_the_apis_405(live_api, method):
    """The local server answers what API Gateway and the app answer: never its own 501 in HTML."""
    status, headers, body = _raw(live_api.url, method, "/data", {"Authorization": f"Bearer {live_api.key}"})
    assert status == 405, body
    assert headers["allow"] == "GET, POST"
    assert headers["content-type"] == "application/json"
    assert headers["access-control-allow-origin"] == "*"
    if method == "HEAD":   # the headers of the error answer, without its body
        assert body == b"" and int(headers["content-length"]) > 0
    else:
        assert json.loads(body) == {"error": f"{method} is not allowed on /data: use GET, POST"}
    assert live_api.key.encode() not in body        # nothing of the request is echoed
    status, headers, body = _raw(live_api.url, method, "/nowhere")
    assert status == 404 and headers["access-control-allow-origin"] == "*"


def test_over_http_a_preflight_is_answered_without_credentials(live_api):
    status, headers, body = _raw(live_api.url, "OPTIONS", "/file", {
        "Origin": ORIGIN, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "x-api-key"})
    assert (status, body) == (204, b"")
    assert headers["access-control-allow-methods"] == "GET"
    assert "X-API-Key" in headers["access-control-allow-headers"]


def _log_in(client, username, origin=None):
    headers = {"Content-Type": "application/json", "Host": HOST}
    if origin:
        headers["Origin"] = origin
    return client.http.put("/session", headers=headers, body=json.dumps({"username": username, "password": PASSWORD}))


def test_across_origins_the_session_cookie_neither_authenticates_nor_is_set(client, make_account, fast_hashing):
    account = make_account(username="crossed")
    login = _log_in(client, "crossed")
    cookie = login.headers["Set-Cookie"].split(";")[0]

    def as_browser(method, path, origin):
        headers = {"Cookie": cookie, "Host": HOST, **({"Origin": origin} if origin else {})}
        return client.http.request(method, path, headers=headers)

    assert as_browser("GET", "/session", None).status_code == 200              # no Origin: a same-origin GET
    assert as_browser("GET", "/session", f"http://{HOST}").status_code == 200  # the API's own pages
    for origin in (ORIGIN, "http://127.0.0.1:9000", "null"):                   # another port is another origin
        refused = as_browser("GET", "/session", origin)
        assert refused.status_code == 401, origin
        assert _headers(refused)["access-control-allow-origin"] == "*"
        # A simple cross-origin POST (no preflight) with the cookie would have rotated the key.
        assert as_browser("POST", "/key", origin).status_code == 401
    assert account.request("GET", "/key").json_body == {"key": account.key}
    # A login from another origin checks the password and answers, but sets no cookie there.
    elsewhere = _log_in(client, "crossed", ORIGIN)
    assert elsewhere.status_code == 200 and "Set-Cookie" not in elsewhere.headers
    assert "Set-Cookie" in _log_in(client, "crossed", f"http://{HOST}").headers
    # Keys in headers work from any origin.
    by_key = client.http.get("/session", headers={"Authorization": f"Bearer {account.key}", "Origin": ORIGIN,
                                                  "Host": HOST})
    assert by_key.status_code == 200 and by_key.json_body["username"] == "crossed"
