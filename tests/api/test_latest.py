"""GET /data and GET /interval: the latest reading / interval of each meter, in every responseType.

Names as currently named; times in the project's zone ('YYYY-MM-DD HH:MM:SS' in JSON and YAML,
'YYYY-MM-DDTHH:MM:SS' in XML); the cost of the answer does not grow with the history.
"""
import json
from datetime import datetime, timezone

import pytest
import yaml

T0 = int(datetime(2026, 1, 15, 17, 0, tzinfo=timezone.utc).timestamp())     # 12:00 in Toronto (EST)
SUMMER = int(datetime(2026, 7, 15, 17, 0, tzinfo=timezone.utc).timestamp())  # 13:00 in Toronto (EDT)


def iso(epoch):
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def setup_site(account, meters=("m1", "m2")):
    for name in meters:
        assert account.request("PUT", "/point", body={"MeterId": name}).status_code == 200


def push(account, readings):
    answer = account.request("POST", "/data", body={"readings": [
        {"MeterId": m, "TimeStamping": iso(t), "value": v} for m, t, v in readings]})
    assert answer.status_code == 200 and not json.loads(answer.body)["rejected"], answer.body
    return json.loads(answer.body)


@pytest.fixture
def toronto(make_account):
    account = make_account(timezone="America/Toronto")
    setup_site(account)
    push(account, [("m1", T0 - 300, 28539.74), ("m1", T0, 28540.24),
                   ("m2", T0 - 600, 10.0), ("m2", T0 - 300, 12.125)])
    return account


def get(account, path, fmt=None):
    answer = account.request("GET", path + (f"?responseType={fmt}" if fmt else ""))
    assert answer.status_code == 200, answer.body
    return answer


def test_data_is_the_latest_reading_of_each_meter_in_local_time(toronto):
    answer = get(toronto, "/data")
    assert answer.headers["Content-Type"] == "application/json"
    assert json.loads(answer.body) == [
        {"MeterParam": "m1", "TimeStamping": "2026-01-15 12:00:00", "value": 28540.24},
        {"MeterParam": "m2", "TimeStamping": "2026-01-15 11:55:00", "value": 12.125},
    ]


def test_interval_is_the_latest_interval_of_each_meter_in_local_time(toronto):
    assert json.loads(get(toronto, "/interval").body) == [
        {"MeterParam": "m1", "TimeStamping": "2026-01-15 12:00:00", "value": 0.5},
        {"MeterParam": "m2", "TimeStamping": "2026-01-15 11:55:00", "value": 2.125},
    ]


def test_xml_is_the_vendor_shape_with_t_separated_times(toronto):
    for fmt in ("xml", "XML", "Xml"):
        answer = get(toronto, "/data", fmt)
        assert answer.headers["Content-Type"] == "application/xml"
        assert answer.body.decode() == (
            '<?xml version="1.0" encoding="UTF-8" ?><Response>'
            '<item type="dict"><MeterParam type="str">m1</MeterParam>'
            '<TimeStamping type="str">2026-01-15T12:00:00</TimeStamping><value type="float">28540.24</value></item>'
            '<item type="dict"><MeterParam type="str">m2</MeterParam>'
            '<TimeStamping type="str">2026-01-15T11:55:00</TimeStamping><value type="float">12.125</value></item>'
            '</Response>')
    interval = get(toronto, "/interval", "xml").body.decode()
    assert ('<TimeStamping type="str">2026-01-15T12:00:00</TimeStamping><value type="float">0.5</value>'
            in interval)


def test_yaml_has_the_same_rows_with_space_separated_times(toronto):
    for path in ("/data", "/interval"):
        answer = get(toronto, path, "yaml")
        assert answer.headers["Content-Type"] == "application/yaml"
        assert yaml.safe_load(answer.body) == json.loads(get(toronto, path).body)
    assert "TimeStamping: '2026-01-15 12:00:00'" in get(toronto, "/data", "yaml").body.decode()


def test_an_unknown_response_type_is_400_in_json(toronto):
    for path in ("/data", "/interval"):
        answer = toronto.request("GET", path + "?responseType=csv")
        assert answer.status_code == 400
        assert answer.headers["Content-Type"] == "application/json"
        assert "responseType" in json.loads(answer.body)["error"]


def test_summer_times_are_shown_with_daylight_saving(toronto):
    push(toronto, [("m1", SUMMER - 300, 30000.0), ("m1", SUMMER, 30001.0)])
    assert json.loads(get(toronto, "/data").body)[0] == {
        "MeterParam": "m1", "TimeStamping": "2026-07-15 13:00:00", "value": 30001.0}
    assert json.loads(get(toronto, "/interval").body)[0]["TimeStamping"] == "2026-07-15 13:00:00"


def test_names_are_the_current_names(toronto):
    meter = json.loads(toronto.request("GET", "/point?name=m2").body)
    assert toronto.request("POST", "/point", body={"id": meter["id"], "new": "Boiler room"}).status_code == 200
    for path in ("/data", "/interval"):
        assert [r["MeterParam"] for r in json.loads(get(toronto, path).body)] == ["m1", "Boiler room"]


def test_meters_without_readings_are_left_out_and_empty_is_empty(make_account):
    account = make_account()
    setup_site(account, ["quiet"])
    for path in ("/data", "/interval"):
        assert json.loads(get(account, path).body) == []
        assert get(account, path, "xml").body.decode() == '<?xml version="1.0" encoding="UTF-8" ?><Response></Response>'
        assert yaml.safe_load(get(account, path, "yaml").body) == []
    push(account, [("quiet", T0, 1.0)])
    assert len(json.loads(get(account, "/data").body)) == 1
    assert json.loads(get(account, "/interval").body) == []       # one reading: no interval yet


def test_latest_routes_need_credentials(client):
    for path in ("/data", "/interval"):
        assert client.http.get(path).status_code == 401
        assert client.http.get(path, headers={"X-API-Key": "0" * 10 + "-" + "0" * 10 + "-" + "0" * 10 + "-" + "0" * 10}
                               ).status_code == 401


def _dynamodb_calls():
    """Count DynamoDB operations by name while the block runs."""
    from collections import Counter

    from chalicelib.platform import aws

    counts: Counter = Counter()

    def count(event_name, **_kwargs):
        counts[event_name.rsplit(".", 1)[-1]] += 1

    events = aws.dynamodb().meta.events
    events.register("before-call.dynamodb.*", count)
    return counts, lambda: events.unregister("before-call.dynamodb.*", count)


def test_latest_routes_cost_the_same_with_a_day_or_a_month_of_history(make_account):
    from chalicelib.metering import ingest, meters

    account = make_account()
    setup_site(account)
    project_id = account.view["project"]
    costs = []
    for days in (1, 30):
        for meter in meters.all_meters(project_id):
            for start in range(0, days * 288, 1000):     # 5-minute readings, newest last
                chunk = range(start, min(start + 1000, days * 288))
                ingest.ingest(project_id, [{"MeterId": meter["site_name"], "TimeStamping": iso(T0 - 86400 * 60 + i * 300),
                                              "value": i * 0.5} for i in chunk])
        counts, stop = _dynamodb_calls()
        try:
            data, interval = json.loads(get(account, "/data").body), json.loads(get(account, "/interval").body)
        finally:
            stop()
        assert len(data) == 2 and len(interval) == 2
        assert "Scan" not in counts
        costs.append(dict(counts))
    assert costs[0] == costs[1]
    assert costs[0].get("Query") == 2 and sum(costs[0].values()) <= 8   # one query of the meters per route
