"""/point: registration by the edge agent (idempotent), lookup by name or id, listing, renaming.

A rename changes the name users see everywhere (GET /point, /data, /interval, /file) and never
breaks the agent, which keeps pushing under the meter's name on site.
"""
import json
from datetime import datetime, timezone

import pytest
import requests

T0 = int(datetime(2026, 2, 3, tzinfo=timezone.utc).timestamp())
DAY = "2026-02-03"
CONFIG = {"MeterId": "meter1", "ModbusId": 1, "Port": "USB0", "NoPhases": "3", "MeterType": "I-45/MFX/636",
          "ModbusMap": "Priority.ici", "SaveEvery": 5, "startAddress": 1100}


def iso(epoch):
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def register(account, **config):
    return account.call("PUT", "/point", body={**CONFIG, **config})


def push(account, meter, values, start=T0):
    readings = [{"MeterId": meter, "TimeStamping": iso(start + i * 300), "value": v} for i, v in enumerate(values)]
    return account.call("POST", "/data", body={"readings": readings})


def export_rows(account, **params):
    link = account.call("GET", "/file", {"start": DAY, "end": DAY, "type": "json", **params}, status=303)
    return requests.get(link["url"], timeout=10).json()


@pytest.fixture
def site(make_account):
    return make_account()


# ---- PUT /point ----------------------------------------------------------------------------------

def test_register_returns_the_meter_as_get_shows_it(site):
    meter = register(site)
    assert meter == {"id": meter["id"], **CONFIG, "Parent": None, "Tariff": None}
    assert isinstance(meter["id"], int)
    assert site.call("GET", "/point", {"id": meter["id"]}) == meter
    assert site.call("GET", "/point", {"name": "meter1"}) == meter


def test_register_is_idempotent_same_call_same_meter(site):
    first = register(site)
    second = register(site)
    assert second == first
    assert site.call("GET", "/point") == [first]


def test_register_again_updates_the_configuration_and_keeps_the_id(site):
    first = register(site)
    changed = register(site, ModbusId=7, Port="USB1", SaveEvery=15)
    assert changed == {**first, "ModbusId": 7, "Port": "USB1", "SaveEvery": 15}
    partial = site.call("PUT", "/point", body={"MeterId": "meter1", "startAddress": 0})
    assert partial == {**changed, "startAddress": 0}        # fields not sent stay as they were
    assert site.call("GET", "/point") == [partial]


def test_register_takes_query_form_and_json_parameters(site):
    by_query = site.call("PUT", "/point", {"MeterId": "q1", "ModbusId": "4", "SaveEvery": "10"})
    assert (by_query["ModbusId"], by_query["SaveEvery"]) == (4, 10)
    form = site.client.http.put("/point", headers={**site.headers, "Content-Type": "application/x-www-form-urlencoded"},
                                body="MeterId=f1&Port=USB3")
    assert form.status_code == 200 and json.loads(form.body)["Port"] == "USB3"
    assert [m["MeterId"] for m in site.call("GET", "/point")] == ["q1", "f1"]


def test_a_meter_without_save_every_reads_every_5_minutes(site):
    meter = site.call("PUT", "/point", body={"MeterId": "bare"})
    assert meter["SaveEvery"] == 5


def test_register_rejects_bad_configuration_and_stores_nothing(site):
    for body in [{}, {"MeterId": ""}, {"MeterId": "m", "ModbusId": 256}, {"MeterId": "m", "SaveEvery": 0},
                 {"MeterId": "m", "SaveEvery": "often"}, {"MeterId": "m", "NoPhases": 4},
                 {"MeterId": "m", "startAddress": -1}, {"MeterId": ["m"]}, {"MeterId": "x" * 65}]:
        answer = site.request("PUT", "/point", body=body)
        assert answer.status_code == 400, (body, answer.body)
        assert json.loads(answer.body)["error"]
    assert site.call("GET", "/point") == []


# ---- GET /point ----------------------------------------------------------------------------------

def test_get_by_id_wins_over_name(site):
    one = register(site)
    two = register(site, MeterId="meter2", ModbusId=2)
    assert site.call("GET", "/point", {"id": two["id"], "name": "meter1"}) == two
    assert site.call("GET", "/point", {"id": one["id"], "name": "no-such-meter"}) == one


def test_get_without_name_or_id_lists_every_meter_by_id(site):
    assert site.call("GET", "/point") == []
    made = [register(site, MeterId=f"m{i}", ModbusId=i) for i in (3, 1, 2)]
    assert site.call("GET", "/point") == sorted(made, key=lambda m: m["id"])


def test_get_unknown_meter_is_404_and_a_bad_id_is_400(site):
    meter = register(site)
    for params in [{"name": "nope"}, {"id": meter["id"] + 1000}, {"id": meter["id"] + 1000, "name": "meter1"}]:
        assert "no meter" in site.call("GET", "/point", params, status=404)["error"]
    for params in [{"id": "abc"}, {"id": "1.5"}, {"id": "-1"}, {"name": ""}]:
        assert site.call("GET", "/point", params, status=400)["error"]


def test_get_point_renders_xml_and_yaml(site):
    import yaml

    meter = register(site)
    xml = site.request("GET", f"/point?id={meter['id']}&responseType=XML")
    assert xml.headers["Content-Type"] == "application/xml"
    assert xml.body.decode().startswith('<?xml version="1.0" encoding="UTF-8" ?><Response>'
                                        f'<id type="int">{meter["id"]}</id><MeterId type="str">meter1</MeterId>')
    as_yaml = site.request("GET", "/point?name=meter1&responseType=yaml")
    assert as_yaml.headers["Content-Type"] == "application/yaml"
    assert yaml.safe_load(as_yaml.body) == meter


# ---- POST /point: rename -------------------------------------------------------------------------

def test_rename_shows_the_new_name_everywhere(site):
    meter = register(site)
    push(site, "meter1", [100.0, 100.5, 101.25])
    renamed = site.call("POST", "/point", body={"id": meter["id"], "new": "Kitchen"})
    assert renamed == {**meter, "MeterId": "Kitchen"}
    assert site.call("GET", "/point", {"id": meter["id"]}) == renamed
    assert site.call("GET", "/point", {"name": "Kitchen"}) == renamed
    assert site.call("GET", "/point") == [renamed]
    assert [r["MeterParam"] for r in site.call("GET", "/data")] == ["Kitchen"]
    assert [r["MeterParam"] for r in site.call("GET", "/interval")] == ["Kitchen"]
    rows = export_rows(site)
    assert [r["MeterParam"] for r in rows] == ["Kitchen"] * 3        # old readings too
    assert [r["value"] for r in rows] == [100.0, 100.5, 101.25]
    assert export_rows(site, meter="Kitchen") == rows


def test_after_a_rename_the_agent_still_pushes_under_the_site_name(site):
    meter = register(site)
    push(site, "meter1", [100.0])
    site.call("POST", "/point", body={"name": "meter1", "new": "Kitchen"})
    receipt = push(site, "meter1", [100.0, 100.75])                    # the agent retries, then goes on
    assert receipt == {"accepted": 1, "duplicates": 1, "rejected": []}
    assert site.call("GET", "/data") == [{"MeterParam": "Kitchen", "TimeStamping": "2026-02-03 00:05:00",
                                           "value": 100.75}]
    assert site.call("GET", "/interval")[0]["value"] == 0.75
    # The agent re-registering its meter on restart finds the same meter and keeps the new name.
    assert register(site) == {**meter, "MeterId": "Kitchen"}
    assert [m["id"] for m in site.call("GET", "/point")] == [meter["id"]]
    # The display name is not a site name: pushing under it is an unknown meter.
    assert "unknown meter" in push(site, "Kitchen", [101.0], start=T0 + 3600)["rejected"][0]["error"]


def test_the_site_name_keeps_finding_its_meter_when_another_meter_takes_the_name(site):
    one = register(site)
    two = register(site, MeterId="meter2")
    site.call("POST", "/point", body={"name": "meter1", "new": "Kitchen"})
    site.call("POST", "/point", body={"name": "meter2", "new": "meter1"})   # the freed display name
    assert site.call("GET", "/point", {"name": "meter1"})["id"] == two["id"]
    push(site, "meter1", [5.0])                                              # the agent's meter1 is still `one`
    assert site.call("GET", "/data") == [{"MeterParam": "Kitchen", "TimeStamping": "2026-02-03 00:00:00",
                                           "value": 5.0}]
    assert register(site)["id"] == one["id"]


def test_rename_to_a_taken_name_is_409_and_changes_nothing(site):
    one = register(site)
    two = register(site, MeterId="meter2")
    for taken in ("meter2", " meter2 "):
        assert "already named" in site.call("POST", "/point", body={"id": one["id"], "new": taken},
                                       status=409)["error"]
    assert site.call("GET", "/point") == [one, two]
    assert site.call("POST", "/point", body={"id": one["id"], "new": "meter1"}) == one    # its own name: no-op


def test_registering_a_site_name_that_another_meter_shows_is_409(site):
    one = register(site)
    site.call("POST", "/point", body={"id": one["id"], "new": "Boiler"})
    assert site.call("PUT", "/point", body={"MeterId": "Boiler"}, status=409)["error"]
    assert [m["MeterId"] for m in site.call("GET", "/point")] == ["Boiler"]


def test_rename_unknown_meter_is_404_and_bad_arguments_400(site):
    meter = register(site)
    assert site.call("POST", "/point", body={"name": "nope", "new": "x"}, status=404)["error"]
    assert site.call("POST", "/point", body={"id": meter["id"] + 99, "new": "x"}, status=404)["error"]
    for body in [{"id": meter["id"]}, {"id": meter["id"], "new": ""}, {"id": meter["id"], "new": 5},
                 {"new": "x"}, {"id": meter["id"], "new": "a\x00b"}]:
        assert site.call("POST", "/point", body=body, status=400)["error"], body
    assert site.call("GET", "/point") == [meter]


def test_a_renamed_meter_can_be_renamed_again_and_back(site):
    meter = register(site)
    site.call("POST", "/point", body={"id": meter["id"], "new": "A"})
    site.call("POST", "/point", body={"name": "A", "new": "B"})
    assert site.call("GET", "/point", {"name": "A"}, status=404)                  # the old display name is free
    back = site.call("POST", "/point", body={"name": "B", "new": "meter1"})
    assert back == meter
    other = register(site, MeterId="other")
    assert site.call("POST", "/point", body={"id": other["id"], "new": "A"})["MeterId"] == "A"
