"""/tariffs: tariffs in the OpenEI URDB shape, stored per project.

What a user relies on: a rate record as URDB's API saves it (a record, or the API's {"items": [...]})
loads as it is, with the fields that price nothing listed under `ignored`; every malformed part is a
400 naming the field and nothing is stored; any body at all answers 4xx or 200, never 500; labels are
unique; a tariff a meter names, or the project's default, is not deleted (409); scoped keys may read,
never write; another project's tariff is unknown (404); POST /point sets a meter's Tariff, GET /point
shows it.
"""
import copy
import json
import random
import threading

import pytest

from chalicelib.billing import tariffs

pytestmark = pytest.mark.usefixtures("fast_hashing")

WEEKDAY = [[0] * 8 + [1] * 13 + [0] * 3 for _ in range(4)] + [[2] * 8 + [3] * 4 + [4] * 6 + [3] * 3 + [2] * 3
                                                           for _ in range(6)] + [[0] * 8 + [1] * 13 + [0] * 3] * 2
WEEKEND = [[0] * 24] * 4 + [[2] * 24] * 6 + [[0] * 24] * 2


def urdb_record():
    """A commercial TOU rate in the shape of a record of URDB's API v7 (written here in that shape:
    descriptive fields, units, a flat demand charge, $/day fixed charge, net-metering and other fields
    this API does not price)."""
    return copy.deepcopy({
        "label": "5f0c1a2b3c4d5e6f7a8b9c0d",
        "uri": "https://apps.openei.org/IURDB/rate/view/5f0c1a2b3c4d5e6f7a8b9c0d",
        "revisions": [1700000000, 1700003600],
        "approved": True,
        "is_default": False,
        "utility": "Example Electric Co",
        "eiaid": 99999,
        "name": "A-10 Medium General Demand Service TOU (Secondary)",
        "startdate": 1727762400,
        "supersedes": "5e0c1a2b3c4d5e6f7a8b9c0c",
        "sector": "Commercial",
        "servicetype": "Bundled",
        "description": "Demand-metered general service; TOU energy charges by season.",
        "source": "https://example.com/tariffs/A-10.pdf",
        "sourceparent": "https://example.com/tariffs/",
        "basicinformationcomments": "Meter charge per day.",
        "peakkwcapacitymax": 500,
        "demandunits": "kW",
        "voltagecategory": "Secondary",
        "phasewiring": "Single and 3-Phase",
        "flatdemandunit": "kW",
        "flatdemandstructure": [[{"rate": 24.38}]],
        "flatdemandmonths": [0] * 12,
        "demandrateunit": "kW",
        "energyratestructure": [[{"unit": "kWh", "rate": 0.24653}], [{"unit": "kWh", "rate": 0.24724}],
                                [{"unit": "kWh", "rate": 0.27092}], [{"unit": "kWh", "rate": 0.29771, "sell": 0.03}],
                                [{"unit": "kWh", "rate": 0.29771, "adj": -0.001}]],
        "energyweekdayschedule": WEEKDAY,
        "energyweekendschedule": WEEKEND,
        "energycomments": "",
        "demandreactivepowercharge": 0.66,
        "dgrules": "Net Metering",
        "fixedchargefirstmeter": 11.51068,
        "fixedchargeunits": "$/day",
        "country": "USA",
    })


IGNORED = ["approved", "basicinformationcomments", "country", "demandreactivepowercharge", "description", "dgrules",
           "eiaid", "energycomments", "energyratestructure[][].sell", "is_default", "peakkwcapacitymax", "phasewiring",
           "revisions", "sector", "servicetype", "source", "sourceparent", "startdate", "supersedes",
           "voltagecategory"]


def put(account, body, status=200):
    return account.call("PUT", "/tariffs", body=body, status=status)


def simple(label="flat", **more):
    return {"label": label, "energyratestructure": [[{"rate": 0.1}]],
            "energyweekdayschedule": [[0] * 24] * 12, "energyweekendschedule": [[0] * 24] * 12, **more}


def test_a_urdb_record_loads_as_it_is_with_what_prices_nothing_listed_as_ignored(make_account):
    account = make_account()
    stored = put(account, urdb_record())
    assert stored["id"] >= 1 and stored["label"] == "5f0c1a2b3c4d5e6f7a8b9c0d"
    assert stored["currency"] == "USD" and stored["default"] is False
    assert stored["name"] == "A-10 Medium General Demand Service TOU (Secondary)"
    assert stored["utility"] == "Example Electric Co"
    assert stored["energyratestructure"][4] == [{"rate": 0.29771, "adj": -0.001}]
    assert stored["energyweekdayschedule"] == WEEKDAY and stored["energyweekendschedule"] == WEEKEND
    assert stored["flatdemandstructure"] == [[{"rate": 24.38}]] and stored["flatdemandmonths"] == [0] * 12
    assert (stored["fixedchargefirstmeter"], stored["fixedchargeunits"]) == (11.51068, "$/day")
    assert stored["ignored"] == IGNORED
    assert account.call("GET", "/tariffs", {"id": stored["id"]}) == stored
    assert account.call("GET", "/tariffs") == [stored]


def test_the_answer_of_urdbs_api_loads_with_its_one_record(make_account):
    account = make_account()
    stored = put(account, {"items": [urdb_record()], "currency": "cad", "default": True})
    assert stored["label"] == "5f0c1a2b3c4d5e6f7a8b9c0d" and stored["currency"] == "CAD" and stored["default"]
    put(account, {"items": [urdb_record(), urdb_record()]}, status=400)


MALFORMED = [
    ("label", lambda b: b.pop("label")),
    ("label", lambda b: b.update(label="")),
    ("label", lambda b: b.update(label="x" * 65)),
    ("currency", lambda b: b.update(currency="dollars")),
    ("default", lambda b: b.update(default="yes")),
    ("energyweekdayschedule", lambda b: b.update(energyweekdayschedule=WEEKDAY[:11])),
    ("energyweekdayschedule[3]", lambda b: b["energyweekdayschedule"].__setitem__(3, [0] * 23)),
    ("energyweekendschedule[5][7]", lambda b: b["energyweekendschedule"].__setitem__(5, [2] * 7 + [5] + [2] * 16)),
    ("energyweekdayschedule[0][0]", lambda b: b["energyweekdayschedule"].__setitem__(0, [-1] + [0] * 23)),
    ("energyweekendschedule", lambda b: b.pop("energyweekendschedule")),
    ("energyratestructure", lambda b: b.update(energyratestructure=[])),
    ("energyratestructure[1]", lambda b: b["energyratestructure"].__setitem__(1, [])),
    ("energyratestructure[2][0].rate", lambda b: b["energyratestructure"].__setitem__(2, [{"rate": -0.1}])),
    ("energyratestructure[2][0].rate", lambda b: b["energyratestructure"].__setitem__(2, [{"rate": "0.1"}])),
    ("energyratestructure[2][0].rate", lambda b: b["energyratestructure"].__setitem__(2, [{"max": 5}])),
    ("energyratestructure[2][0].adj", lambda b: b["energyratestructure"].__setitem__(2, [{"rate": 0.1, "adj": -0.2}])),
    ("energyratestructure[0][1].max", lambda b: b["energyratestructure"].__setitem__(
        0, [{"rate": 0.1, "max": 500}, {"rate": 0.2, "max": 400}, {"rate": 0.3}])),
    ("energyratestructure[0][0].max", lambda b: b["energyratestructure"].__setitem__(0, [{"rate": 0.1}, {"rate": 0.2}])),
    ("energyratestructure[0][0].unit", lambda b: b["energyratestructure"].__setitem__(
        0, [{"rate": 0.1, "unit": "kWh daily"}])),
    ("energyratestructure", lambda b: b["energyratestructure"].__setitem__(   # periods 0 and 1 share January
        0, [{"rate": 0.1, "max": 500}, {"rate": 0.2}])),
    ("demandweekdayschedule", lambda b: b.update(demandratestructure=[[{"rate": 5}]])),   # without its schedules
    ("demandweekdayschedule", lambda b: b.update(demandweekdayschedule=[[0] * 24] * 12)),   # without its structure
    ("flatdemandmonths", lambda b: b.update(flatdemandmonths=[0] * 11)),
    ("flatdemandmonths[4]", lambda b: b.update(flatdemandmonths=[0] * 4 + [1] + [0] * 7)),
    ("flatdemandunit", lambda b: b.update(flatdemandunit="kVA")),
    ("fixedchargeunits", lambda b: b.update(fixedchargeunits="$/year")),
    ("fixedchargefirstmeter", lambda b: b.update(fixedchargefirstmeter=-3)),
    ("mincharge", lambda b: b.update(mincharge="ten")),
    ("minchargeunits", lambda b: b.update(mincharge=10, minchargeunits="$/kWh")),
    ("holidays[1]", lambda b: b.update(holidays=["2026-12-25", "2026-02-30"])),
    ("holidays", lambda b: b.update(holidays="2026-12-25")),
    ("energytoulabels", lambda b: b.update(energytoulabels=["a"] * 6)),
    ("name", lambda b: b.update(name=12)),
]


@pytest.mark.parametrize("field, spoil", MALFORMED, ids=[f"{i}-{f}" for i, (f, _s) in enumerate(MALFORMED)])
def test_each_malformed_part_is_a_400_naming_the_field_and_nothing_is_stored(make_account, field, spoil):
    account = make_account()
    body = urdb_record()
    spoil(body)
    answer = put(account, body, status=400)
    assert f"{field}:" in answer["error"], answer
    assert account.call("GET", "/tariffs") == []


def test_every_problem_of_a_body_is_named_at_once(make_account):
    account = make_account()
    body = urdb_record()
    body.update(currency="dollars", fixedchargeunits="$/year", holidays=["someday"])
    error = put(account, body, status=400)["error"]
    assert all(f"{field}:" in error for field in ("currency", "fixedchargeunits", "holidays[0]"))


def test_a_tariff_needs_a_charge(make_account):
    assert "no charge" in put(make_account(), {"label": "empty"}, status=400)["error"]


def test_the_last_tier_is_unbounded_and_its_max_listed_as_ignored(make_account):
    stored = put(make_account(), simple(energyratestructure=[[{"rate": 0.1, "max": 100}, {"rate": 0.2, "max": 9e9}]]))
    assert stored["energyratestructure"] == [[{"rate": 0.1, "max": 100}, {"rate": 0.2}]]
    assert stored["ignored"] == ["energyratestructure[0][1].max"]


def _places(node, path=()):
    """Every place (a path of keys and indices) in a JSON document."""
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in children:
        yield path + (key,)
        yield from _places(child, path + (key,))


def test_any_body_answers_a_4xx_or_200_never_a_500(make_account):
    """Random spoilings of a valid record (wrong types, nulls, huge and non-finite numbers, nesting) anywhere."""
    account = make_account()
    rng = random.Random(21)
    junk: list = [None, -1, 0, 1.5, 1e308, float("inf"), float("nan"), "", "x", "kW", True, [], {}, [[]], [{}],
            {"rate": 1}, [None], "2026-13-01", 10 ** 30, [[0] * 24] * 12, [[{"rate": 1}]], "\ud800"]
    statuses = set()
    for _round in range(150):
        body = urdb_record()
        for _spoil in range(rng.randint(1, 3)):
            *above, last = rng.choice(list(_places(body)))
            target = body
            for key in above:
                target = target[key]
            target[last] = copy.deepcopy(rng.choice(junk))
        answer = account.request("PUT", "/tariffs", body=body)
        statuses.add(answer.status_code)
        assert answer.status_code in (200, 400, 409), (answer.status_code, answer.body[:300])
        assert b"Traceback" not in answer.body
    assert {200, 400} <= statuses


def test_labels_are_unique_and_a_put_with_id_replaces(make_account):
    account = make_account()
    first = put(account, simple("a"))
    assert "labelled 'a'" in put(account, simple("a"), status=409)["error"]
    second = put(account, simple("b"))
    assert put(account, {**simple("a"), "id": second["id"]}, status=409)
    replaced = put(account, {**simple("c", currency="EUR"), "id": first["id"], "mincharge": 5})
    assert replaced["id"] == first["id"] and replaced["label"] == "c" and replaced["mincharge"] == 5
    assert put(account, simple("a"))["label"] == "a"   # the old label is free again
    assert put(account, {**simple("z"), "id": 9999}, status=404)
    assert [t["label"] for t in account.call("GET", "/tariffs")] == ["c", "b", "a"]


def test_one_default_at_a_time(make_account):
    account = make_account()
    a = put(account, simple("a", default=True))
    b = put(account, simple("b", default=True))
    listed = {t["label"]: t["default"] for t in account.call("GET", "/tariffs")}
    assert listed == {"a": False, "b": True} and a["default"] and b["default"]
    put(account, {**simple("b"), "id": b["id"]})        # default omitted: unchanged
    assert account.call("GET", "/tariffs", {"id": b["id"]})["default"] is True
    put(account, {**simple("a"), "id": a["id"], "default": False})   # not the default: nothing to clear
    assert account.call("GET", "/tariffs", {"id": b["id"]})["default"] is True
    put(account, {**simple("b"), "id": b["id"], "default": False})
    assert not any(t["default"] for t in account.call("GET", "/tariffs"))


def test_a_tariff_a_meter_names_or_the_default_is_not_deleted(make_account):
    account = make_account()
    account.call("PUT", "/point", body={"MeterId": "m1"})
    used = put(account, simple("used"))
    default = put(account, simple("default", default=True))
    point = account.call("POST", "/point", body={"name": "m1", "Tariff": used["id"]})
    assert point["Tariff"] == used["id"] and account.call("GET", "/point", {"name": "m1"})["Tariff"] == used["id"]
    assert "named by meters" in account.call("DELETE", "/tariffs", {"id": used["id"]}, status=409)["error"]
    assert "default" in account.call("DELETE", "/tariffs", {"id": default["id"]}, status=409)["error"]
    assert account.call("POST", "/point", body={"name": "m1", "Tariff": default["id"]})["Tariff"] == default["id"]
    assert account.call("DELETE", "/tariffs", {"id": used["id"]}) == {}
    assert account.call("POST", "/point", body={"name": "m1", "Tariff": ""})["Tariff"] is None
    put(account, {**simple("default"), "id": default["id"], "default": False})
    assert account.call("DELETE", "/tariffs", {"id": default["id"]}) == {}
    assert account.call("GET", "/tariffs") == []
    assert account.call("DELETE", "/tariffs", {"id": default["id"]}, status=404)
    assert "Tariff" in account.call("POST", "/point", body={"name": "m1", "Tariff": used["id"]}, status=404)["error"]
    assert "Tariff" in account.call("POST", "/point", body={"name": "m1", "Tariff": "one"}, status=400)["error"]


def test_a_rename_and_a_tariff_in_one_call_and_nothing_changes_on_a_bad_tariff(make_account):
    account = make_account()
    account.call("PUT", "/point", body={"MeterId": "m1"})
    t = put(account, simple("t"))
    point = account.call("POST", "/point", body={"name": "m1", "new": "Suite 101", "Tariff": t["id"]})
    assert (point["MeterId"], point["Tariff"]) == ("Suite 101", t["id"])
    account.call("POST", "/point", body={"name": "Suite 101", "new": "Suite 102", "Tariff": 424242}, status=404)
    assert account.call("GET", "/point", {"name": "Suite 101"})["Tariff"] == t["id"]


def test_racing_assignments_and_a_delete_never_leave_a_meter_naming_a_deleted_tariff(make_account, serialized_aws):
    account = make_account()
    names = [f"m{i}" for i in range(6)]
    for name in names:
        account.call("PUT", "/point", body={"MeterId": name})
    for _round in range(3):
        t = put(account, simple(f"t{_round}"))
        statuses = []

        def assign(name, tariff_id=t["id"]):
            statuses.append(account.request("POST", "/point", body={"name": name, "Tariff": tariff_id}).status_code)

        def remove(tariff_id=t["id"]):
            statuses.append(account.request("DELETE", f"/tariffs?id={tariff_id}").status_code)

        threads = [threading.Thread(target=assign, args=(n,)) for n in names] + [threading.Thread(target=remove)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert set(statuses) <= {200, 404, 409, 503}, statuses
        existing = {x["id"] for x in account.call("GET", "/tariffs")}
        named = {p["Tariff"] for p in account.call("GET", "/point")} - {None}
        assert named <= existing
        for name in names:
            account.call("POST", "/point", body={"name": name, "Tariff": ""})
        if t["id"] in existing:
            account.call("DELETE", "/tariffs", {"id": t["id"]})


def test_scoped_keys_may_read_tariffs_never_write_them(make_account):
    account = make_account()
    stored = put(account, simple("t"))
    keys = {scope: account.call("PUT", "/keys", body={"label": scope, "scope": scope})["key"]
            for scope in ("read", "ingest")}
    read = account.client.http.get("/tariffs", headers={"X-API-Key": keys["read"]})
    assert read.status_code == 200 and json.loads(read.body)[0]["id"] == stored["id"]
    for scope, method, path in (("read", "put", "/tariffs"), ("read", "delete", f"/tariffs?id={stored['id']}"),
                                ("ingest", "get", "/tariffs"), ("ingest", "put", "/tariffs")):
        answer = getattr(account.client.http, method)(path, headers={"X-API-Key": keys[scope],
                                                                     "Content-Type": "application/json"},
                                                      body=json.dumps(simple("x")) if method == "put" else None)
        assert answer.status_code == 403, (scope, method, answer.body)


def test_another_projects_tariff_is_unknown(make_account):
    mine, theirs = make_account(), make_account()
    stored = put(theirs, simple("theirs"))
    mine.call("PUT", "/point", body={"MeterId": "m1"})
    assert mine.call("GET", "/tariffs", {"id": stored["id"]}, status=404)
    assert mine.call("DELETE", "/tariffs", {"id": stored["id"]}, status=404)
    assert mine.call("PUT", "/tariffs", body={**simple("x"), "id": stored["id"]}, status=404)
    assert mine.call("POST", "/point", body={"name": "m1", "Tariff": stored["id"]}, status=404)
    assert mine.call("GET", "/bill", {"start": "2026-01-01", "end": "2026-01-31", "tariff": stored["id"]}, status=404)
    assert mine.call("GET", "/tariffs") == []


def test_a_project_has_at_most_max_tariffs(make_account, monkeypatch):
    monkeypatch.setattr(tariffs, "MAX_TARIFFS", 2)
    account = make_account()
    first = put(account, simple("a"))
    put(account, simple("b"))
    assert "the most it can have" in put(account, simple("c"), status=409)["error"]
    account.call("DELETE", "/tariffs", {"id": first["id"]})
    put(account, simple("c"))


def test_bad_ids_are_400_saying_what_is_wrong(make_account):
    account = make_account()
    for value in ("", "x", "0", "-3", "1e3", "99999999999999999999"):
        answer = account.request("GET", f"/tariffs?id={value}")
        assert answer.status_code == 400, (value, answer.body)
    assert "id is required" in account.call("DELETE", "/tariffs", status=400)["error"]


def test_responses_in_xml_and_yaml(make_account):
    import yaml

    account = make_account()
    stored = put(account, simple("t", holidays=["2026-12-25"]))
    as_yaml = account.request("GET", f"/tariffs?id={stored['id']}&responseType=yaml")
    assert yaml.safe_load(as_yaml.body) == stored
    as_xml = account.request("GET", f"/tariffs?id={stored['id']}&responseType=xml")
    assert as_xml.status_code == 200 and b"<label type=\"str\">t</label>" in as_xml.body


def test_check_and_build_are_the_same_rules_without_storage():
    body = urdb_record()
    assert tariffs.check(body) == []
    built = tariffs.build(copy.deepcopy(body))
    assert built["ignored"] == IGNORED and "id" not in built and "default" not in built
