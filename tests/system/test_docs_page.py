"""GET /docs in a real browser: headless Chromium (Debian's package, driven by playwright) loads the page
from the API over HTTP and shows every operation of the OpenAPI document, with nothing fetched from
another host. `make test` installs chromium when it is missing.

The page calls the server it came from: served as `make run` serves it (the embedded AWS of
tools/aws_server.py in a process of its own, answering browsers by the bucket's CORS rules only, and
the API on Chalice's local server, on ports of their own), and under a stage prefix `/api` as API
Gateway serves it (a proxy in front), "Try it out" executes operations against that API, and downloads
a file of `/file` from the storage link its 303 names (another origin). A page of another origin
calls the API with the key in a header, and never with the session cookie.
Screenshots: DOCS_SCREENSHOT=dir keeps them there.
"""
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import pytest
import requests
import yaml

from tests.loopback_http import LoopbackServer, QuietHandler, forward

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Flags that let Chromium run here as root without a display, a GPU or the network.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
HTTP_METHODS = {"get", "put", "post", "delete", "patch"}


def _operations():
    with open(os.path.join(ROOT, "chalicelib", "apidocs", "openapi.yaml"), encoding="utf-8") as handle:
        document = yaml.safe_load(handle)
    return {(method.upper(), path) for path, item in document["paths"].items() for method in item
            if method in HTTP_METHODS}


def test_the_page_and_its_assets_are_served_without_credentials(client):
    page = client.http.get("/docs")
    assert page.status_code == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    html = page.body.decode()
    assert 'src="docs/ui.js"' in html and 'href="docs/ui.css"' in html and 'url: "openapi.yaml"' in html
    assert "//" not in html.replace("://", "")            # no URL of another host (no CDN)
    script = client.http.get("/docs/ui.js")
    assert script.status_code == 200 and script.headers["Content-Type"].startswith("application/javascript")
    assert b"SwaggerUIBundle" in script.body and len(script.body) > 500_000
    style = client.http.get("/docs/ui.css")
    assert style.status_code == 200 and style.headers["Content-Type"].startswith("text/css")
    assert b".swagger-ui" in style.body


@pytest.mark.browser
def test_chromium_shows_every_operation_of_the_document(live_api, tmp_path):
    if not os.path.exists(CHROMIUM):
        pytest.fail("chromium is not installed: `make test` installs it (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    requested = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=FLAGS,
            viewport={"width": 1280, "height": 900})
        try:
            page = browser.new_page()
            page.on("request", lambda request: requested.append(request.url))
            errors = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(live_api.url + "/docs", wait_until="load", timeout=60_000)
            page.wait_for_selector(".opblock", timeout=60_000)
            shown = page.eval_on_selector_all(
                ".opblock-summary", """blocks => blocks.map(b => [
                    b.querySelector('.opblock-summary-method').textContent.trim(),
                    b.querySelector('.opblock-summary-path').getAttribute('data-path')])""")
            title = page.text_content(".info .title")
            page.screenshot(path=os.environ.get("DOCS_SCREENSHOT") or str(tmp_path / "docs.png"), full_page=False)
        finally:
            browser.close()
    assert errors == []
    assert "Intellimeter" in title
    assert {(method, path) for method, path in shown} == _operations()
    assert len(shown) == len(_operations())
    assert requested and all(url.startswith(live_api.url + "/") for url in requested), \
        [url for url in requested if not url.startswith(live_api.url)]


# ---- the page against the API it came from ----------------------------------------------------

STAGE = "/api"
METER = "hvac"


@dataclasses.dataclass
class Served:
    api: str        # the API on its own port (not 8000)
    staged: str     # the same API under /api, as an API Gateway stage serves it
    aws: str        # the embedded AWS (moto server)
    key: str
    project_id: int


def _stage_proxy(api_url):
    """An HTTP server that serves the API under /api, as API Gateway's stage does (Host kept: the API
    sees the origin the browser sees); anything else is API Gateway's 403."""
    upstream = urlsplit(api_url)

    class StageHandler(QuietHandler):
        def _any(self):
            body = self.read_body()
            if not self.path.startswith(STAGE + "/"):
                self.answer(403, [("Content-Type", "application/json")], b'{"message":"Missing Authentication Token"}')
                return
            status, headers, data = forward(upstream, self.command, self.path[len(STAGE):], self.headers, body)
            self.answer(status, headers, data)

    for method in ("GET", "PUT", "POST", "DELETE", "PATCH", "HEAD", "OPTIONS"):
        setattr(StageHandler, f"do_{method}", StageHandler._any)
    return LoopbackServer(StageHandler)


def _start_aws(state_dir):
    """tools/aws_server (what make run starts) on a free port: (process, URL)."""
    process = subprocess.Popen([sys.executable, "-m", "tools.aws_server", "-H", "127.0.0.1", "-p", "0",
                                "--state", str(state_dir / "aws.pickle")], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    deadline = time.monotonic() + 60
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line.startswith("moto serving on "):
            return process, line.split()[-1]
        if not line and process.poll() is not None:
            break
    process.kill()
    pytest.fail("tools.aws_server did not start")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The API and the embedded AWS as make run serves them, on free ports, with a project whose meter
    has yesterday's readings."""
    from chalicelib.identity import accounts
    from chalicelib.metering import ingest, meters
    from chalicelib.platform import aws as aws_clients
    from tools import provision
    from tools.local_api import make_server

    process, aws_url = _start_aws(tmp_path_factory.mktemp("aws"))
    saved = dict(os.environ)
    try:
        os.environ.update({"AWS_ENDPOINT_URL": aws_url, "AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local",
                           "AWS_DEFAULT_REGION": "us-east-1", "PASSWORD_HASHING": "CHEAPEST"})
        aws_clients.reset_clients()
        os.environ.update(provision.provision_local())
        server = make_server("127.0.0.1", 0)
        port = server.server.server_address[1]
        assert port != 8000
        import threading

        threading.Thread(target=server.server.serve_forever, daemon=True).start()
        project = accounts.create_project("browsers", "America/Toronto")
        view, key = accounts.create_user(project["project_id"], "browser", "correct horse battery staple",
                                         "browser@example.com")
        meters.register(project["project_id"], {"MeterId": METER, "SaveEvery": 60})
        start = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) - timedelta(days=2)
        receipt = ingest.ingest(project["project_id"], [
            {"MeterId": METER, "TimeStamping": (start + timedelta(hours=h)).strftime("%Y-%m-%dT%H:%M:%SZ"),
             "value": 1000.0 + h} for h in range(48)])
        assert not receipt["rejected"], receipt
        proxy = _stage_proxy(f"http://127.0.0.1:{port}")
        yield Served(f"http://127.0.0.1:{port}", proxy.url + STAGE, aws_url, key, project["project_id"])
        proxy.close()
        server.shutdown()
        server.server.server_close()
    finally:
        os.environ.clear()
        os.environ.update(saved)
        aws_clients.reset_clients()
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


class Browser:
    """Headless Chromium with a log of what its pages requested and got."""

    def __init__(self, playwright, profile):
        if not os.path.exists(CHROMIUM):
            pytest.fail("chromium is not installed: `make test` installs it (apt-get install -y chromium)")
        self.context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=FLAGS, viewport={"width": 1280, "height": 900},
            accept_downloads=True)
        self.requests: list[tuple[str, str]] = []
        self.responses: list = []
        self.errors: list[str] = []
        self.context.on("request", lambda request: self.requests.append((request.method, request.url)))
        self.context.on("response", lambda response: self.responses.append(response))

    def page(self):
        page = self.context.new_page()
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        return page


@pytest.fixture
def browser(tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        opened = Browser(playwright, tmp_path / "profile")
        try:
            yield opened
        finally:
            opened.context.close()


def _screenshot(element, tmp_path, name):
    """A PNG of what a person sees of an element (kept in DOCS_SCREENSHOT_DIR when set)."""
    folder = os.environ.get("DOCS_SCREENSHOT_DIR") or str(tmp_path)
    os.makedirs(folder, exist_ok=True)
    element.screenshot(path=os.path.join(folder, name))


def _authorize(page, key):
    """Click Authorize, give the key as the bearer token (the page's Authorize dialog), close it."""
    page.click("button.btn.authorize")
    scheme = page.locator(".auth-container", has_text="bearerKey")
    scheme.locator("input").fill(key)
    scheme.locator("button.authorize").click()
    page.click("button.btn-done")


def _try(page, block, params=None):
    """Open an operation, Try it out, fill params, Execute; the block's locator."""
    operation = page.locator(f"#{block}")
    operation.locator(".opblock-summary").first.click()
    operation.locator("button.try-out__btn").click()
    for name, value in (params or {}).items():
        operation.locator(f'tr[data-param-name="{name}"] input').fill(value)
    operation.locator("button.execute").click()
    operation.locator(".live-responses-table tbody .response-col_status").first.wait_for(timeout=60_000)
    return operation


def _sent(browser, url):
    """The query of each GET the browser sent to url."""
    from urllib.parse import parse_qsl

    return [dict(parse_qsl(urlsplit(sent).query)) for method, sent in browser.requests
            if method == "GET" and sent.split("?")[0] == url]


@pytest.mark.browser
@pytest.mark.parametrize("where", ["api", "staged"])
def test_try_it_out_calls_the_api_the_page_came_from_and_downloads_a_file(served, browser, tmp_path, where):
    base = getattr(served, where)
    page = browser.page()
    page.goto(base + "/docs", wait_until="load", timeout=60_000)
    page.wait_for_selector(".opblock", timeout=60_000)
    _authorize(page, served.key)

    session = _try(page, "operations-session-getSession")
    assert session.locator(".live-responses-table tbody .response-col_status").first.inner_text().strip() == "200"
    assert '"username": "browser"' in session.locator(".live-responses-table tbody .microlight").first.inner_text()
    assert _sent(browser, base + "/session") == [{"responseType": "json"}]

    files = page.locator("#operations-files-exportFile")
    files.locator(".opblock-summary").first.click()
    files.locator("button.try-out__btn").click()
    # Optional filters stay empty: a pre-filled example meter would narrow (or 404) the answer.
    for optional in ("meter", "period", "bill", "tariff"):
        row = files.locator(f'tr[data-param-name="{optional}"] input')
        assert row.count() == 0 or row.input_value() == "", optional
    assert files.locator('tr[data-param-name="meter"] input').count() == 1
    # The project's yesterday (Toronto): the 48 hourly readings cover all of it at any hour of the day.
    yesterday = (datetime.now(ZoneInfo("America/Toronto")) - timedelta(days=1)).date().isoformat()
    files.locator('tr[data-param-name="start"] input').fill(yesterday)
    files.locator('tr[data-param-name="end"] input').fill(yesterday)
    files.locator("button.execute").click()
    files.locator(".live-responses-table tbody .response-col_status").first.wait_for(timeout=60_000)
    _screenshot(session, tmp_path, f"docs-session-{where}.png")
    _screenshot(files, tmp_path, f"docs-file-{where}.png")

    assert _sent(browser, base + "/file") == [{"start": yesterday, "end": yesterday, "type": "csv",
                                               "responseType": "json"}]
    stored = [r for r in browser.responses if r.url.startswith(served.aws + "/") and r.request.method == "GET"]
    assert stored, [r.url for r in browser.responses]
    assert stored[-1].status == 200 and stored[-1].headers["access-control-allow-origin"] in ("*", base[:len(
        urlsplit(base).scheme) + 3 + len(urlsplit(base).netloc)])
    rows = stored[-1].text().splitlines()
    assert rows[0].lstrip("\ufeff").startswith("MeterParam") and len(rows) > 20 and METER in rows[1]
    # The browser followed the 303 (which a page cannot see): the file's 200 is the answer shown.
    assert files.locator(".live-responses-table tbody .response-col_status").first.inner_text().startswith("200")
    assert files.locator(".live-responses-table a", has_text="Download").count() == 1
    assert browser.errors == []
    assert all(url.startswith((base.rsplit(STAGE, 1)[0] if where == "staged" else base) + "/")
               or url.startswith(served.aws + "/") for _method, url in browser.requests), browser.requests


PORTAL = """<!DOCTYPE html><html><body><pre id="out"></pre><script>
async function call(path, init) {
  try { const r = await fetch(API + path, init); return r.status + " " + (await r.text()); }
  catch (e) { return "blocked " + e.name; }
}
</script></body></html>"""


@pytest.mark.browser
def test_a_page_of_another_origin_calls_the_api_with_the_key_never_with_the_cookie(served, browser):
    """A portal of another origin reads the API's answers with the key in a header; the session cookie the
    browser holds for the API's host (cookies ignore ports) neither authenticates nor rotates the key."""
    class PortalHandler(QuietHandler):
        def do_GET(self):
            self.answer(200, [("Content-Type", "text/html")], PORTAL.encode())

    class CookieEcho(QuietHandler):
        """Answers a credentialed cross-origin request with the Cookie header it got."""

        def do_GET(self):
            self.answer(200, [("Content-Type", "text/plain"), ("Access-Control-Allow-Credentials", "true"),
                              ("Access-Control-Allow-Origin", self.headers.get("Origin", ""))],
                        (self.headers.get("Cookie") or "").encode())

    portal = LoopbackServer(PortalHandler)
    echo = LoopbackServer(CookieEcho)
    try:
        page = browser.page()
        page.goto(served.api + "/docs", wait_until="load", timeout=60_000)   # log in there: the cookie is set
        login = page.evaluate("""async () => (await fetch("session", {method: "PUT",
            headers: {"Content-Type": "application/json"},
            body: JSON.stringify({username: "browser", password: "correct horse battery staple"})})).status""")
        assert login == 200
        assert page.evaluate("""async () => (await fetch("session")).status""") == 200   # the cookie works here
        assert any(c["name"] == "session" for c in browser.context.cookies())

        page.goto(portal.url + "/portal.html", wait_until="load")
        page.evaluate(f"window.API = {served.api!r}")
        by_key = page.evaluate("k => call('/session', {headers: {Authorization: 'Bearer ' + k}})", served.key)
        assert by_key.startswith("200 ") and '"username": "browser"' in by_key
        by_x_api_key = page.evaluate("k => call('/data', {headers: {'X-API-Key': k}})", served.key)
        assert by_x_api_key.startswith('200 [{"MeterParam": "hvac"')
        error = page.evaluate("() => call('/session', {})")
        assert error.startswith("401 ") and "Bearer" in error       # errors are readable across origins too
        gone = page.evaluate("() => call('/nowhere', {method: 'DELETE'})")   # preflighted: then a readable 404
        assert gone.startswith("404 ")
        # With credentials: "include" the cookie goes along to any port of the host (cookies ignore ports):
        # a server of the page's own choosing that allows credentials sees it…
        echoed = page.evaluate(f"async () => (await fetch({echo.url!r} + '/', {{credentials: 'include'}})).text()")
        assert "session=" in echoed
        # …and a simple POST needs no preflight: with the cookie accepted it would rotate the account's key.
        page.evaluate("() => call('/key', {method: 'POST', credentials: 'include'})")
        assert requests.get(served.api + "/key", headers={"X-API-Key": served.key}, timeout=30).json() == \
            {"key": served.key}
        assert browser.errors == []
    finally:
        portal.close()
        echo.close()
