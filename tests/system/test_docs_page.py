"""GET /docs in a real browser: headless Chromium (Debian's package, driven by playwright) loads the page
from the API over HTTP and shows every operation of the OpenAPI document, with nothing fetched from
another host. `make test` installs chromium when it is missing.
"""
import os
import shutil

import pytest
import yaml

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
