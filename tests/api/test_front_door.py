"""What a newcomer meets first: unknown paths are 404 with the usual error body (in process as on the
local HTTP server, at any depth), TRACE is 405 like any wrong method, bounds messages name real bounds,
GET /session shows the time zone, CSV exports say their charset.
"""
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
