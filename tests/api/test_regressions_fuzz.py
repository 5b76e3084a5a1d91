"""Regressions of what fuzzing the API against docs/openapi.yaml found (tests/api/test_fuzz.py), one test each."""
import json


def test_a_null_in_the_json_body_does_not_erase_the_query_argument(make_account):
    """Found by schemathesis: DELETE /session?responseType=%C2%84 with the body {"responseType": null} answered 200.

    A JSON null is a parameter left out, so it must not override (erase) the same parameter given in the
    query string: the bad responseType still answers 400 (and a good one still applies).
    """
    account = make_account()
    answer = account.request("GET", "/key?responseType=%C2%84", body={"responseType": None})
    assert answer.status_code == 400
    assert "responseType" in json.loads(answer.body)["error"]
    answer = account.request("POST", "/key?responseType=yaml", body={"responseType": None})
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == "application/yaml"


def test_a_json_number_too_long_to_read_is_a_400(make_account):
    """Found by review of the fuzzer's body cases: an integer of over 4300 digits made json.loads raise a
    plain ValueError, whose missing .msg turned the 400 into a 500."""
    account = make_account()
    body = '{"MeterId": "m", "ModbusId": 1' + "0" * 5000 + "}"
    answer = account.client.http.put("/point", headers={**account.headers, "Content-Type": "application/json"},
                                      body=body)
    assert answer.status_code == 400, answer.body
    assert "error" in json.loads(answer.body)


def test_json_nested_deeper_than_the_parser_goes_is_a_400(make_account):
    """Found by review of the fuzzer's body cases: '[' * 100000 made json.loads raise RecursionError (a 500)."""
    account = make_account()
    answer = account.client.http.post("/data", headers={**account.headers, "Content-Type": "application/json"},
                                      body='{"readings": ' + "[" * 100000 + "]" * 100000 + "}")
    assert answer.status_code == 400, answer.body
    assert "error" in json.loads(answer.body)


def test_an_empty_chart_size_is_a_400(make_account):
    """Found by schemathesis: GET /graphics?width= drew the default-size chart (303), though width is a
    number from 4 (width) or 3 (height) to 40 (docs/openapi.yaml) and every other empty argument is a 400."""
    account = make_account()
    for query in ("width=", "height=", "width=&height=9"):
        answer = account.request("GET", f"/graphics?{query}")
        assert answer.status_code == 400, (query, answer.body)
        assert "must be a" in json.loads(answer.body)["error"]
    assert account.request("GET", "/graphics?width=4&height=3").status_code == 303
