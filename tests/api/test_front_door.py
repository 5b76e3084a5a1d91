"""What a newcomer meets first: unknown paths are 404 with the usual error body (in process as on the
local HTTP server, at any depth), TRACE is 405 like any wrong method, bounds messages name real bounds,
GET /session shows the time zone, CSV exports say their charset; a 401 that says how to send the key,
a day the calendar lacks named as such, a meter name's case-only miss with its suggestion, the files
the README and the contract cite, the README's test commands and its last 7 days.
"""
import os
import pathlib
import re
import subprocess
import sys
from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest
import requests
import yaml


def test_an_unknown_path_is_404_with_the_error_body_in_the_asked_format(client):
    for path in ("/points", "/", "/Data"):
        answer = client.http.get(path)
        assert answer.status_code == 404, path
        assert answer.headers["Content-Type"] == "application/json"
        assert "no such route" in answer.json_body["error"]
    answer = client.http.post("/points?responseType=yaml", body=b"{}", headers={"Content-Type": "application/json"})
    assert answer.status_code == 404
    assert answer.headers["Content-Type"] == "application/yaml"
    assert "no such route" in yaml.safe_load(answer.body)["error"]


def test_over_http_unknown_paths_of_any_depth_are_404_and_trace_is_405(live_api):
    headers = {"Authorization": f"Bearer {live_api.key}"}
    for path in ("/points", "/", "/file/job/extra", "/a/b/c.txt"):
        for method in ("GET", "POST", "DELETE"):
            answer = requests.request(method, live_api.url + path, headers=headers, timeout=30)
            assert answer.status_code == 404, (method, path, answer.text)
            assert answer.headers["Content-Type"] == "application/json"
            assert "no such route" in answer.json()["error"]
    answer = requests.get(live_api.url + "/a/b?responseType=xml", headers=headers, timeout=30)
    assert answer.status_code == 404 and answer.headers["Content-Type"] == "application/xml"
    assert "<error type=\"str\">no such route" in answer.text
    trace = requests.request("TRACE", live_api.url + "/data", headers=headers, timeout=30)
    assert trace.status_code == 405, trace.text
    assert trace.headers["Allow"] == "GET, POST"
    assert trace.headers["Content-Type"] == "application/json"
    assert "TRACE is not allowed on /data" in trace.json()["error"]
    assert live_api.key not in trace.text          # TRACE never echoes the request (its credentials)
    assert requests.request("TRACE", live_api.url + "/nowhere", timeout=30).status_code == 404
    # the known routes still answer as before
    assert requests.get(live_api.url + "/point", headers=headers, timeout=30).status_code == 200


def test_a_negative_meter_id_names_the_bound_that_exists(make_account):
    account = make_account()
    answer = account.request("GET", "/point?id=-1")
    assert answer.status_code == 400
    assert answer.json_body["error"] == "id must be at least 0"


def test_the_session_shows_the_projects_time_zone(make_account):
    account = make_account(timezone="America/Toronto")
    answer = account.request("GET", "/session")
    assert answer.status_code == 200
    assert answer.json_body["timezone"] == "America/Toronto"


# ---- small things that cost trust (issue 23 item 5) ----------------------------------------------

@pytest.mark.parametrize("headers, says", [
    ({}, "not authenticated: send the API key as Authorization: Bearer <key> (or X-API-Key: <key>), or log in "
         "with PUT /session"),
    ({"Authorization": "f27a4f7186-d4a6635fe7-992d888955-284e0b037c"},
     "the Authorization header has no scheme: send the API key as Authorization: Bearer <key>"),
    ({"Authorization": "Basic dXNlcjpwYXNz"},
     "the Authorization header's scheme must be Bearer, not 'Basic': send the API key as Authorization: Bearer <key>"),
])
def test_the_401_names_authorization_bearer_and_says_what_is_wrong_with_the_header(client, headers, says):
    answer = client.http.get("/data", headers=headers)
    assert answer.status_code == 401
    assert answer.json_body == {"error": says}


def test_a_key_without_its_scheme_is_refused_even_when_it_is_right(make_account):
    account = make_account()
    answer = account.client.http.get("/session", headers={"Authorization": account.key})
    assert answer.status_code == 401 and "no scheme" in answer.json_body["error"]
    assert account.client.http.get("/session", headers={"Authorization": f"bearer  {account.key}"}).status_code == 200


@pytest.mark.parametrize("day, why", [("2026-11-31", "2026-11 has 30 days"), ("2027-02-29", "2027-02 has 28 days"),
                                      ("2026-13-01", "months are 01 to 12")])
def test_a_day_the_calendar_lacks_is_named_as_such(make_account, day, why):
    account = make_account()
    for path in ("/file", "/consumption", "/graphics"):
        answer = account.request("GET", f"{path}?start={day}&end=2026-11-01")
        assert answer.status_code == 400, (path, answer.body)
        assert answer.json_body["error"] == (f"start must be a day as YYYY-MM-DD, and {day} is not a day of the "
                                             f"calendar ({why})")


def test_a_meter_name_that_differs_in_case_only_gets_a_suggestion(make_account):
    account = make_account()
    account.call("PUT", "/point", body={"MeterId": "hvac"})
    account.call("PUT", "/point", body={"MeterId": "site-7"})
    account.call("POST", "/point", body={"name": "site-7", "new": "Kitchen"})

    for path in ("/point?name=HVAC", "/consumption?start=2026-11-01&end=2026-11-02&meter=Hvac",
                 "/file?start=2026-11-01&end=2026-11-02&meter=HVAC"):
        answer = account.request("GET", path)
        assert answer.status_code == 404, path
        assert "did you mean 'hvac'? (names are case-sensitive)" in answer.json_body["error"], path
    assert "did you mean 'Kitchen'?" in account.request("GET", "/point?name=kitchen").json_body["error"]
    assert "did you mean 'site-7'?" in account.request("GET", "/point?name=SITE-7").json_body["error"]
    nothing_like = account.request("GET", "/point?name=boiler").json_body["error"]
    assert nothing_like == "no meter named 'boiler' in this project"
    parent = account.request("POST", "/point", {"name": "hvac", "Parent": "KITCHEN"})
    assert parent.status_code == 404 and parent.json_body["error"].startswith("Parent: no meter named 'KITCHEN'")


ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("document", ["README.md", "docs/API.md"])
def test_the_files_a_newcomers_document_cites_are_in_the_repository(document):
    """Links and `paths/like/this` of the README and the contract name files of the repository (the
    contract cites the vendor's guide, kept in docs/vendor/)."""
    path = ROOT / document
    text = path.read_text(encoding="utf-8")
    cited = [m.group(1) for m in re.finditer(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text) if "://" not in m.group(1)]
    cited += [m.group(1).rstrip(".,:;") for m in re.finditer(
        r"`((?:\.\./)*(?:docs|tests|tools|chalicelib|edge_agent|infra|bench|seed)/[^`\s*<>{}]+)`", text)]
    missing = [c for c in cited if not (path.parent / c).exists() and not (ROOT / c).exists()]
    assert cited and missing == []


def test_the_readmes_test_commands_select_tests():
    """What the README says runs one test file (or some of its tests) collects tests as written."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = re.findall(r"^(?:(\w+)=(\S+) )?\.venv/bin/python -m pytest (-q [^#\n]+?)\s*(?:#.*)?$", readme, re.M)
    assert len(commands) >= 2
    for variable, value, arguments in commands:
        env = {**os.environ, **({variable: value} if variable else {})}
        done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", *arguments.split()], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, (arguments, done.stdout[-2000:], done.stderr[-2000:])
        assert re.search(r"\b[1-9][0-9]*(/[0-9]+)? tests? (collected|selected)", done.stdout), (arguments, done.stdout[-500:])


def _days(query):
    start, end = (date.fromisoformat(re.search(rf"{name}=(\d{{4}}-\d\d-\d\d)", query).group(1))
                  for name in ("start", "end"))
    return start, end


def test_the_last_7_days_of_the_banner_and_the_readme_are_7_days(tmp_path):
    """start and end are both included: the last 7 days start 6 days before today (the demo's today)."""
    from tools.stack import DEMO, Stack

    stack = Stack(api_port=8123, aws_port=5123, state_dir=str(tmp_path), quiet=True)
    stack.key = stack.ingest_key = "f27a4f7186-d4a6635fe7-992d888955-284e0b037c"
    banner = stack.banner()
    lines = [line for line in banner.splitlines() if "start=" in line and "/bill?" not in line]
    assert len(lines) == 3                                   # /file, /graphics and /alerts/events
    today = datetime.now(ZoneInfo(DEMO["timezone"])).date()
    for line in lines:
        start, end = _days(line)
        assert (end - start).days + 1 == 7 and end == today, line
    bill = [line for line in banner.splitlines() if "/bill?" in line]
    assert len(bill) == 1 and _days(bill[0]) == (today.replace(day=1), today), bill   # the month so far
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "last\n7 days" in readme or "last 7 days" in readme
    shell_days = re.findall(r"start=\$\((?:TZ=(\S+) )?date -d '(\d+) days ago' \+%F\)&end=\$\((?:TZ=(\S+) )?date \+%F\)",
                            readme)
    assert len(shell_days) == 2
    for zone, ago, end_zone in shell_days:
        assert int(ago) + 1 == 7
        assert zone == end_zone == DEMO["timezone"]          # the project's days, not the shell's
