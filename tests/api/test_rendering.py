"""responseType on the account routes, and the renderer behind every route.

Every route answers json (default), xml or yaml, case-insensitively, with the matching media type;
XML is byte for byte what the vendor's dicttoxml writes (root Response, type attributes), times as
'YYYY-MM-DDTHH:MM:SS' there and 'YYYY-MM-DD HH:MM:SS' in JSON and YAML; an unknown responseType still
carries out the request and answers 400 in JSON. XML parses with a strict parser and YAML
round-trips through yaml.safe_load whatever the strings hold.
"""
import json
import re
import xml.etree.ElementTree as ET
from datetime import datetime

import dicttoxml
import pytest
import yaml

from chalicelib.platform import rendering

PASSWORD = "correct horse battery staple"
JSON = {"Content-Type": "application/json"}
MEDIA_TYPES = {"json": "application/json", "xml": "application/xml", "yaml": "application/yaml"}
LOCAL_TIME = re.compile(r"^(\d{4}-\d{2}-\d{2}) (\d{2}:\d{2}:\d{2})$")


pytestmark = pytest.mark.usefixtures("fast_hashing")  # small Argon2 costs: hashing is tested in test_sessions_security


def vendor_xml(obj):
    """What the vendor's API answers for obj: dicttoxml with type attributes under a Response root."""
    return dicttoxml.dicttoxml(obj, custom_root="Response", attr_type=True).decode("utf-8")


def xml_times(obj):
    """obj with every 'YYYY-MM-DD HH:MM:SS' string written the XML way, 'YYYY-MM-DDTHH:MM:SS'."""
    if isinstance(obj, dict):
        return {k: xml_times(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [xml_times(v) for v in obj]
    if isinstance(obj, str) and LOCAL_TIME.match(obj):
        return LOCAL_TIME.sub(r"\1T\2", obj)
    return obj


def assert_rendered(response, fmt, expected):
    """The response is expected (a JSON-shaped value) rendered as fmt, with fmt's media type."""
    assert response.status_code == 200, response.body
    assert response.headers["Content-Type"] == MEDIA_TYPES[fmt]
    text = response.body.decode("utf-8")
    if fmt == "json":
        assert json.loads(text) == expected
    elif fmt == "yaml":
        assert yaml.safe_load(text) == expected
    else:
        assert text == vendor_xml(xml_times(expected))
        assert ET.fromstring(response.body).tag == "Response"


def log_in(client, username, password=PASSWORD):
    return client.http.put("/session", headers=JSON, body=json.dumps({"username": username, "password": password}))


def cookie_of(response):
    return {"Cookie": response.headers["Set-Cookie"].split(";")[0]}


def as_json(client, path, headers):
    response = client.http.get(path, headers=headers)
    assert response.status_code == 200
    return response.json_body


# Each case calls one route with ?responseType=… and returns (response, what it should show as JSON).

def _get_session(client, account, rt):
    return account.request("GET", f"/session?responseType={rt}"), as_json(client, "/session", account.headers)


def _put_session(client, account, rt):
    response = client.http.put(f"/session?responseType={rt}", headers=JSON,
                               body=json.dumps({"username": account.view["username"], "password": PASSWORD}))
    assert client.http.get("/session", headers=cookie_of(response)).status_code == 200
    return response, {"uuid": account.view["uuid"]}


def _delete_session(client, account, rt):
    cookie = cookie_of(log_in(client, account.view["username"]))
    response = client.http.delete(f"/session?responseType={rt}", headers=cookie)
    assert client.http.get("/session", headers=cookie).status_code == 401
    return response, {}


def _get_key(client, account, rt):
    return account.request("GET", f"/key?responseType={rt}"), {"key": account.key}


def _post_key(client, account, rt):
    response = account.request("POST", f"/key?responseType={rt}")
    cookie = cookie_of(log_in(client, account.view["username"]))
    return response, as_json(client, "/key", cookie)


def _get_user(client, account, rt):
    account.request("PUT", "/user", {"username": f"second-{account.view['uuid']}", "password": "second password",
                                     "email": "s@example.com"})
    expected = as_json(client, "/user", account.headers)
    assert len(expected) == 2
    return account.request("GET", f"/user?responseType={rt}"), expected


def _put_user(client, account, rt):
    name = f"newcomer-{account.view['uuid']}"
    response = account.request("PUT", f"/user?responseType={rt}",
                               {"username": name, "password": "newcomer password", "email": "n@example.com"})
    return response, as_json(client, "/session", cookie_of(log_in(client, name, "newcomer password")))


def _post_user(client, account, rt):
    response = account.request("POST", f"/user?responseType={rt}", {"email": "changed@example.com"})
    expected = as_json(client, "/session", account.headers)
    assert expected["email"] == "changed@example.com"
    return response, expected


def _delete_user(client, account, rt):
    response = account.request("DELETE", f"/user?responseType={rt}")
    assert account.request("GET", "/session").status_code == 401
    return response, {}


ROUTES = {"GET /session": _get_session, "PUT /session": _put_session, "DELETE /session": _delete_session,
          "GET /key": _get_key, "POST /key": _post_key, "GET /user": _get_user, "PUT /user": _put_user,
          "POST /user": _post_user, "DELETE /user": _delete_user}


@pytest.mark.parametrize("route", ROUTES)
def test_every_account_route_answers_in_the_asked_format(client, make_account, route):
    for response_type in ("json", "XML", "Yaml", "yaml", "xml", "JSON"):
        account = make_account(timezone="Europe/Paris")  # a new project each time

        response, expected = ROUTES[route](client, account, response_type)

        assert_rendered(response, response_type.lower(), expected)


def test_json_is_the_default_and_times_are_local_with_a_space(client, make_account):
    account = make_account(timezone="Pacific/Auckland")

    response = account.request("GET", "/session")

    assert response.headers["Content-Type"] == "application/json"
    assert LOCAL_TIME.match(response.json_body["joined"])
    xml = account.request("GET", "/session?responseType=xml").body.decode()
    date, time = response.json_body["joined"].split(" ")
    assert f'<joined type="str">{date}T{time}</joined>' in xml
    assert yaml.safe_load(account.request("GET", "/session?responseType=yaml").body)["joined"] == response.json_body["joined"]


def test_xml_of_the_guides_example_is_byte_for_byte_the_vendors(client, make_account):
    account = make_account(project_name="myProject", username="test")

    body = account.request("GET", "/session?responseType=xml").body.decode()

    uuid, project = account.view["uuid"], account.view["project"]
    assert body.startswith('<?xml version="1.0" encoding="UTF-8" ?><Response>'
                           f'<uuid type="int">{uuid}</uuid><project type="int">{project}</project>'
                           '<username type="str">test</username>')
    # the guide's fields in its order, then the second round's time zone
    assert body.endswith('<project_name type="str">myProject</project_name>'
                         '<timezone type="str">UTC</timezone></Response>')


def test_a_list_is_items_under_the_root(client, make_account):
    account = make_account(username="only")

    body = account.request("GET", "/user?responseType=xml").body

    root = ET.fromstring(body)
    assert [(child.tag, child.get("type")) for child in root] == [("item", "dict")]
    assert root.find("item/username").text == "only"


def test_strings_with_xml_and_yaml_syntax_survive_every_format(client, make_account):
    account = make_account(username="plain")
    for name in ["<b>&amp;'\"</b>", "yes", "null", "123", "2019-10-29 16:07:17", "- x: y", "]]>", "é ☃ 😀"]:
        assert account.request("POST", "/user", {"username": name}).status_code == 200, name

        as_xml = ET.fromstring(account.request("GET", "/user?responseType=xml").body)
        as_yaml = yaml.safe_load(account.request("GET", "/user?responseType=yaml").body)
        as_json_ = account.request("GET", "/user").json_body

        assert as_xml.find("item/username").text == name
        assert as_yaml[0]["username"] == name and as_json_[0]["username"] == name


def test_an_unknown_response_type_still_carries_out_the_request_and_answers_400_in_json(client, make_account):
    for n, response_type in enumerate(["html", "XMLX", "jsonp", "1", "csv"]):
        account = make_account(username=f"owner{n}")

        created = account.request("PUT", f"/user?responseType={response_type}",
                                  {"username": f"made-anyway{n}", "password": "made password", "email": "m@example.com"})
        rotated = account.request("POST", f"/key?responseType={response_type}")

        for response in (created, rotated):
            assert response.status_code == 400
            assert response.headers["Content-Type"] == "application/json"
            assert set(json.loads(response.body)) == {"error"}
            assert "responseType" in json.loads(response.body)["error"]
        assert log_in(client, f"made-anyway{n}", "made password").status_code == 200  # the user was created
        # …but a new key is refused before it is made (its only copy would be lost): issue 11.
        assert "nothing was done" in json.loads(rotated.body)["error"]
        assert account.request("GET", "/session").status_code == 200  # the key was not replaced
        assert as_json(client, "/key", cookie_of(log_in(client, f"owner{n}")))["key"] == account.key


def test_an_unknown_response_type_on_logout_and_delete_still_acts(client, make_account):
    account = make_account(username="leaver")
    cookie = cookie_of(log_in(client, "leaver"))

    logout = client.http.delete("/session?responseType=html", headers=cookie)
    assert logout.status_code == 400 and logout.headers["Content-Type"] == "application/json"
    assert client.http.get("/session", headers=cookie).status_code == 401

    deleted = account.request("DELETE", "/user?responseType=csv")
    assert deleted.status_code == 400
    assert account.request("GET", "/session").status_code == 401


def test_errors_are_rendered_in_the_asked_format(client, make_account):
    account = make_account(username="taken")
    for response_type in ("xml", "yaml"):
        _errors_in(client, account, response_type)


def _errors_in(client, account, response_type):
    unauthenticated = client.http.get(f"/session?responseType={response_type}")
    conflict = account.request("PUT", f"/user?responseType={response_type}",
                               {"username": "TAKEN", "password": "pw123456789", "email": "t@example.com"})
    missing = account.request("PUT", f"/user?responseType={response_type}", {"username": "x"})

    for response, status in ((unauthenticated, 401), (conflict, 409), (missing, 400)):
        assert response.status_code == status
        assert response.headers["Content-Type"] == MEDIA_TYPES[response_type]
        if response_type == "xml":
            root = ET.fromstring(response.body)
            assert [child.tag for child in root] == ["error"]
            assert response.body.decode() == vendor_xml({"error": root.find("error").text})
        else:
            assert set(yaml.safe_load(response.body)) == {"error"}


def test_errors_found_before_the_handler_are_rendered_in_the_asked_format_too(client, make_account):
    # A wrong method or an unreadable body is still an error the client asked to get as XML.
    account = make_account()

    wrong_method = client.http.patch("/session?responseType=xml", headers=account.headers)
    bad_body = client.http.put("/user?responseType=xml", headers={**account.headers, **JSON}, body="{not json")

    for response, status in ((wrong_method, 405), (bad_body, 400)):
        assert response.status_code == status
        assert response.headers["Content-Type"] == "application/xml", response.body
        assert [child.tag for child in ET.fromstring(response.body)] == ["error"]


# ---- the renderer itself ----------------------------------------------------------------------

FORBIDDEN_IN_XML = ["\x00", "nul\x00in the middle", "\x01\x02\x03", "bell\x07", "\x08", "\x0b\x0c", "\x0e\x1f",
                    "\ud800", "lone \udfff", "\ufffe", "\uffff"]
ODD_BUT_ALLOWED = ["tab\there", "line\nbreak", "\x7f", "\x85", "\x9f", "\u2028\u2029", "\ufeff", "é ☃ 😀",
                   "<a href='x'>&amp;</a>", "]]>", "", " leading and trailing ", "yes", "~", "null", "0x1F",
                   "2019-10-29 16:07:17", "- item", "key: value", "#comment", "'quoted'", '"double"', "\\"]


@pytest.mark.parametrize("text", FORBIDDEN_IN_XML + ODD_BUT_ALLOWED)
def test_xml_parses_with_a_strict_parser_whatever_a_string_holds(text):
    obj = {"username": text, "users": [{"email": text}, text], "n": 1}

    body, media_type = rendering.render(obj, "xml")

    assert media_type == "application/xml"
    root = ET.fromstring(body.encode("utf-8"))  # strict: forbidden characters would raise here
    assert root.tag == "Response"
    if text in ODD_BUT_ALLOWED and "\r" not in text:
        assert (root.find("username").text or "") == text
        assert (root.find("users/item/email").text or "") == text
        assert body == vendor_xml(obj)


@pytest.mark.parametrize("text", FORBIDDEN_IN_XML + ODD_BUT_ALLOWED)
def test_yaml_round_trips_through_safe_load_whatever_a_string_holds(text):
    obj = {"username": text, "users": [{"email": text}, text], "n": 1, "x": 2.5, "ok": True}

    body, media_type = rendering.render(obj, "yaml")

    assert media_type == "application/yaml"
    body.encode("utf-8")
    assert yaml.safe_load(body) == obj


@pytest.mark.parametrize("text", ODD_BUT_ALLOWED + ["\x00", "\x1f"])
def test_json_round_trips_whatever_a_string_holds(text):
    obj = {"username": text, "users": [{"email": text}, text]}

    body, media_type = rendering.render(obj, "json")

    assert media_type == "application/json"
    assert json.loads(body.encode("utf-8")) == obj


def test_times_are_written_each_formats_way():
    obj = {"TimeStamping": datetime(2019, 10, 30, 13, 15, 0), "rows": [{"joined": datetime(2019, 10, 29, 16, 7, 17)}]}

    as_json, _ = rendering.render(obj, "json")
    as_yaml, _ = rendering.render(obj, "yaml")
    as_xml, _ = rendering.render(obj, "xml")

    plain = {"TimeStamping": "2019-10-30 13:15:00", "rows": [{"joined": "2019-10-29 16:07:17"}]}
    assert json.loads(as_json) == plain
    assert yaml.safe_load(as_yaml) == plain
    assert as_xml == vendor_xml({"TimeStamping": "2019-10-30T13:15:00", "rows": [{"joined": "2019-10-29T16:07:17"}]})


@pytest.mark.parametrize("obj", [{}, [], {"a": None}, [{"MeterParam": "m1", "value": 28540.24}], {"nested": {"k": [1, 2]}}])
def test_xml_matches_dicttoxml_for_every_shape(obj):
    body, _ = rendering.render(obj, "xml")

    assert body == vendor_xml(obj)


@pytest.mark.parametrize("value,expected", [("json", "json"), ("JSON", "json"), ("Xml", "xml"), ("yAmL", "yaml"),
                                            (None, "json"), ("", "json"), ("html", None), ("xmlx", None),
                                            (["xml"], None), (7, None)])
def test_response_type_is_case_insensitive_and_unknown_values_are_refused(value, expected):
    assert rendering.response_type(value) == expected
