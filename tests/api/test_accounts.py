"""The account half of the contract: /session, /key and /user as docs/API.md describes them.

Shapes and statuses of every route, parameters from the query string, a form body or a JSON body
(later sources override earlier ones), authentication by key, bearer token or session cookie,
errors that are always {"error": …} with a precise 4xx, and login names unique across projects.
"""
import json
import re
import threading
import urllib.parse
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

PASSWORD = "correct horse battery staple"
KEY_FORMAT = re.compile(r"^[0-9a-f]{10}-[0-9a-f]{10}-[0-9a-f]{10}-[0-9a-f]{10}$")
LOCAL_TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
SESSION_FIELDS = {"uuid", "project", "username", "email", "joined", "project_name", "timezone"}
USER_FIELDS = {"uuid", "username", "email", "joined"}
JSON = {"Content-Type": "application/json"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


pytestmark = pytest.mark.usefixtures("fast_hashing")  # small Argon2 costs: hashing is tested in test_sessions_security


def send(client, method, path, body=None, headers=None, form=None):
    """A request with a JSON body (body=dict), a form body (form=dict) or a raw body (body=str/bytes)."""
    headers = dict(headers or {})
    if form is not None:
        headers.setdefault("Content-Type", FORM["Content-Type"])
        body = urllib.parse.urlencode(form)
    elif isinstance(body, (dict, list)):
        headers.setdefault("Content-Type", JSON["Content-Type"])
        body = json.dumps(body)
    return getattr(client.http, method.lower())(path, headers=headers, body=body)


def log_in(client, username, password):
    return send(client, "PUT", "/session", {"username": username, "password": password})


def session_cookie(response):
    """'name=value' of the Set-Cookie header, to send back as a Cookie header."""
    return response.headers["Set-Cookie"].split(";")[0].strip()


def assert_error(response, status):
    assert response.status_code == status, response.body
    body = json.loads(response.body)
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"], body
    return body["error"]


def usernames(account):
    response = account.request("GET", "/user")
    assert response.status_code == 200
    return sorted(user["username"] for user in response.json_body)


# ---- /session ---------------------------------------------------------------------------------

def test_get_session_is_the_logged_in_account_with_joined_in_the_project_time_zone(client, make_account):
    from chalicelib.platform import clock

    before = clock.utcnow().replace(microsecond=0)
    account = make_account(project_name="myProject", username="test", timezone="Asia/Kathmandu")
    after = clock.utcnow()

    response = account.request("GET", "/session")

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    body = response.json_body
    assert set(body) == SESSION_FIELDS
    assert body["uuid"] == account.view["uuid"] and isinstance(body["uuid"], int)
    assert isinstance(body["project"], int)
    assert (body["username"], body["email"], body["project_name"]) == ("test", account.view["email"], "myProject")
    assert body["timezone"] == "Asia/Kathmandu"   # the contract's second round: the project's zone
    assert LOCAL_TIME.match(body["joined"])
    # Kathmandu is UTC+05:45: the time shown is the local wall clock of the moment the account was made.
    joined = datetime.strptime(body["joined"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=ZoneInfo("Asia/Kathmandu"))
    assert before - timedelta(seconds=1) <= joined <= after + timedelta(seconds=1)


def test_put_session_logs_in_with_username_and_password_and_the_cookie_authenticates(client, make_account):
    account = make_account(username="Carol")

    response = log_in(client, "carol", PASSWORD)  # login names are case-insensitive

    assert response.status_code == 200
    assert response.json_body == {"uuid": account.view["uuid"]}
    cookie = session_cookie(response)
    me = client.http.get("/session", headers={"Cookie": cookie})
    assert me.status_code == 200 and me.json_body == account.request("GET", "/session").json_body


def test_put_session_logs_in_with_a_key(client, make_account):
    account = make_account()

    response = send(client, "PUT", "/session", {"key": account.key})

    assert response.status_code == 200
    assert response.json_body == {"uuid": account.view["uuid"]}
    me = client.http.get("/key", headers={"Cookie": session_cookie(response)})
    assert me.json_body == {"key": account.key}


@pytest.mark.fresh_aws  # the same user "dave" for each source
@pytest.mark.parametrize("source", ["query", "form", "json"])
def test_put_session_takes_its_parameters_from_query_form_or_json(client, make_account, source):
    account = make_account(username="dave")
    params = {"username": "dave", "password": PASSWORD}
    if source == "query":
        response = client.http.put("/session?" + urllib.parse.urlencode(params))
    elif source == "form":
        response = send(client, "PUT", "/session", form=params)
    else:
        response = send(client, "PUT", "/session", params)

    assert response.status_code == 200
    assert response.json_body == {"uuid": account.view["uuid"]}


def test_put_session_with_a_wrong_password_or_unknown_user_answers_401_the_same_way(client, make_account):
    make_account(username="erin")

    wrong_password = log_in(client, "erin", PASSWORD + "!")
    unknown_user = log_in(client, "nobody-here", PASSWORD)
    bad_key = send(client, "PUT", "/session", {"key": "0" * 10 + "-" + "0" * 10 + "-" + "0" * 10 + "-" + "0" * 10})

    assert_error(wrong_password, 401)
    assert_error(bad_key, 401)
    assert (unknown_user.status_code, unknown_user.body) == (wrong_password.status_code, wrong_password.body)
    assert "Set-Cookie" not in wrong_password.headers and "Set-Cookie" not in unknown_user.headers


def test_put_session_without_credentials_is_400(client):
    assert_error(send(client, "PUT", "/session", {}), 400)
    assert_error(send(client, "PUT", "/session", {"username": "someone"}), 400)
    assert_error(send(client, "PUT", "/session", {"password": PASSWORD}), 400)


def test_delete_session_logs_out_and_clears_the_cookie(client, make_account):
    account = make_account(username="frank")
    cookie = session_cookie(log_in(client, "frank", PASSWORD))

    response = client.http.delete("/session", headers={"Cookie": cookie})

    assert response.status_code == 200 and response.json_body == {}
    cleared = response.headers["Set-Cookie"]
    assert cleared.startswith("session=;") and "Max-Age=0" in cleared
    assert_error(client.http.get("/session", headers={"Cookie": cookie}), 401)
    assert account.request("GET", "/session").status_code == 200  # the key is not a session


# ---- /key -------------------------------------------------------------------------------------

def test_get_key_shows_the_accounts_key_in_the_guides_format(client, make_account):
    account = make_account()
    other = make_account()

    response = account.request("GET", "/key")

    assert response.status_code == 200
    assert response.json_body == {"key": account.key}
    assert KEY_FORMAT.match(account.key) and KEY_FORMAT.match(other.key)
    assert account.key != other.key


def test_post_key_makes_a_new_key_and_the_old_one_stops_at_once(client, make_account):
    account = make_account()
    old = account.key

    response = account.request("POST", "/key")

    assert response.status_code == 200
    new = response.json_body["key"]
    assert set(response.json_body) == {"key"} and KEY_FORMAT.match(new) and new != old
    assert_error(client.http.get("/session", headers={"X-API-Key": old}), 401)
    assert_error(send(client, "PUT", "/session", {"key": old}), 401)
    assert client.http.get("/session", headers={"X-API-Key": new}).json_body["uuid"] == account.view["uuid"]
    assert client.http.get("/key", headers={"X-API-Key": new}).json_body == {"key": new}


# ---- /user ------------------------------------------------------------------------------------

def test_get_user_lists_the_public_information_of_every_user_of_the_project(client, make_account):
    first = make_account(username="gina", timezone="America/Toronto")
    second = make_account(username="hank", project_id=first.view["project"])

    response = first.request("GET", "/user")

    assert response.status_code == 200
    users = sorted(response.json_body, key=lambda user: user["uuid"])
    assert [set(user) for user in users] == [USER_FIELDS, USER_FIELDS]
    for user, account in zip(users, (first, second)):
        assert user["uuid"] == account.view["uuid"]
        assert user["username"] == account.view["username"]
        assert user["email"] == account.view["email"]
        assert user["joined"] == account.view["joined"].strftime("%Y-%m-%d %H:%M:%S")
        assert LOCAL_TIME.match(user["joined"])


def test_put_user_creates_an_account_in_the_callers_project_with_its_own_key(client, make_account):
    creator = make_account(project_name="Plant", username="ivan")

    response = creator.request("PUT", "/user", {"username": "judy", "password": "judys password", "email": "judy@example.com"})

    assert response.status_code == 200
    new = response.json_body
    assert set(new) == SESSION_FIELDS
    assert (new["username"], new["email"], new["project"], new["project_name"]) == (
        "judy", "judy@example.com", creator.view["project"], "Plant")
    assert new["uuid"] != creator.view["uuid"] and LOCAL_TIME.match(new["joined"])
    login = log_in(client, "judy", "judys password")
    assert login.json_body == {"uuid": new["uuid"]}
    cookie = {"Cookie": session_cookie(login)}
    assert client.http.get("/session", headers=cookie).json_body == new
    judys_key = client.http.get("/key", headers=cookie).json_body["key"]
    assert KEY_FORMAT.match(judys_key) and judys_key != creator.key
    assert client.http.get("/session", headers={"X-API-Key": judys_key}).json_body["uuid"] == new["uuid"]
    assert usernames(creator) == ["ivan", "judy"]


def test_put_user_requires_username_password_and_email(client, make_account):
    account = make_account(username="kate")
    for missing in ("username", "password", "email"):
        params = {"username": "newbie", "password": "a fine password", "email": "newbie@example.com"}
        del params[missing]

        message = assert_error(account.request("PUT", "/user", params), 400)

        assert missing in message
    assert usernames(account) == ["kate"]


def test_put_user_takes_parameters_from_the_query_and_a_later_form_or_json_body_overrides(client, make_account):
    account = make_account(username="leo")
    query = "/user?" + urllib.parse.urlencode({"username": "fromquery", "password": "query password", "email": "q@example.com"})

    by_query = client.http.put(query.replace("fromquery", "onlyquery"), headers=account.headers)
    by_form = send(client, "PUT", query, form={"username": "fromform"}, headers=account.headers)
    by_json = send(client, "PUT", query, {"username": "fromjson", "email": "j@example.com"}, headers=account.headers)

    assert by_query.status_code == 200 and by_query.json_body["username"] == "onlyquery"
    assert by_form.status_code == 200
    assert (by_form.json_body["username"], by_form.json_body["email"]) == ("fromform", "q@example.com")
    assert by_json.status_code == 200
    assert (by_json.json_body["username"], by_json.json_body["email"]) == ("fromjson", "j@example.com")
    assert usernames(account) == ["fromform", "fromjson", "leo", "onlyquery"]
    assert log_in(client, "fromjson", "query password").status_code == 200  # password from the query


def test_post_user_updates_only_what_is_given(client, make_account):
    account = make_account(username="mia")
    before = account.request("GET", "/session").json_body

    email_only = account.request("POST", "/user", {"email": "mia@new.example.com"})

    assert email_only.status_code == 200
    assert email_only.json_body == {**before, "email": "mia@new.example.com"}
    assert log_in(client, "mia", PASSWORD).status_code == 200  # password and name unchanged

    renamed = send(client, "POST", "/user?username=mia2", headers=account.headers)  # from the query string
    assert renamed.status_code == 200
    assert renamed.json_body == {**before, "email": "mia@new.example.com", "username": "mia2"}
    new_password = account.request("POST", "/user", {"password": "a brand new password", "current_password": PASSWORD})
    assert new_password.status_code == 200 and new_password.json_body == renamed.json_body
    assert_error(log_in(client, "mia", "a brand new password"), 401)  # the old name is gone
    assert_error(log_in(client, "mia2", PASSWORD), 401)  # the old password is gone
    assert log_in(client, "mia2", "a brand new password").json_body == {"uuid": account.view["uuid"]}


def test_post_user_rejects_bad_values_and_changes_nothing(client, make_account):
    account = make_account(username="nina")
    before = account.request("GET", "/session").json_body

    assert_error(account.request("POST", "/user", {"email": "not an address"}), 400)
    assert_error(account.request("POST", "/user", {"password": "short"}), 400)
    assert_error(account.request("POST", "/user", {"username": ""}), 400)
    assert_error(account.request("POST", "/user", {"username": "ok", "email": "bad"}), 400)

    assert account.request("GET", "/session").json_body == before


def test_delete_user_deletes_the_account_its_key_and_frees_its_name(client, make_account):
    account = make_account(username="oscar")
    colleague = make_account(username="pia", project_id=account.view["project"])
    cookie = session_cookie(log_in(client, "oscar", PASSWORD))

    response = client.http.delete("/user", headers={"Cookie": cookie})

    assert response.status_code == 200 and response.json_body == {}
    assert "Max-Age=0" in response.headers["Set-Cookie"]
    assert_error(client.http.get("/session", headers={"Cookie": cookie}), 401)
    assert_error(account.request("GET", "/session"), 401)
    assert log_in(client, "oscar", PASSWORD).body == log_in(client, "nobody-at-all", PASSWORD).body
    assert usernames(colleague) == ["pia"]
    again = colleague.request("PUT", "/user", {"username": "Oscar", "password": "another password", "email": "o@example.com"})
    assert again.status_code == 200 and again.json_body["uuid"] != account.view["uuid"]


# ---- authentication ---------------------------------------------------------------------------

AUTHENTICATED_ROUTES = [("GET", "/session"), ("DELETE", "/session"), ("GET", "/key"), ("POST", "/key"),
                        ("GET", "/user"), ("PUT", "/user"), ("POST", "/user"), ("DELETE", "/user")]


def test_every_route_but_login_needs_credentials(client, make_account):
    account = make_account()
    unknown_key = "0123456789-abcdef0123-456789abcd-ef01234567"
    attempts = [
        {},
        {"X-API-Key": unknown_key},
        {"X-API-Key": "not a key"},
        {"Authorization": "Bearer " + unknown_key},
        {"Authorization": "Basic " + account.key},
        {"Cookie": "session=forged-session-token-forged-session-token"},
        {"Cookie": "other=" + account.key},
    ]
    for method, path in AUTHENTICATED_ROUTES:
        for headers in attempts:
            response = send(client, method, path, {"username": "intruder", "password": "intruder password",
                                                   "email": "i@example.com"}, headers=headers)
            assert_error(response, 401)
    # nothing happened: the key still works, it was not rotated, nobody was created or deleted
    assert account.request("GET", "/key").json_body == {"key": account.key}
    assert usernames(account) == [account.view["username"]]


def test_the_key_is_accepted_as_x_api_key_or_bearer_token(client, make_account):
    account = make_account()

    by_header = client.http.get("/session", headers={"X-API-Key": account.key})
    by_bearer = client.http.get("/session", headers={"Authorization": "Bearer " + account.key})

    assert by_header.status_code == by_bearer.status_code == 200
    assert by_header.json_body == by_bearer.json_body
    assert by_header.json_body["uuid"] == account.view["uuid"]


# ---- errors -----------------------------------------------------------------------------------

def test_a_malformed_json_body_is_400(client, make_account):
    account = make_account()
    bodies = ['{"username": "x",', "{'username': 'x'}", "[1, 2]", '"text"', "nul", "1" * 5000, "[" * 100000,
              b"\xff\xfe{}"]
    for method, path in [("PUT", "/user"), ("POST", "/user"), ("PUT", "/session")]:
        for body in bodies:
            assert_error(send(client, method, path, body, headers={**account.headers, **JSON}), 400)
    assert usernames(account) == [account.view["username"]]


def test_a_parameter_of_the_wrong_json_type_is_400(client, make_account):
    account = make_account(username="quinn")
    before = account.request("GET", "/session").json_body
    for field, value in [(f, v) for f in ("username", "password", "email")
                         for v in (["alice", "bob"], 12345, {"name": "alice"}, True, 1.5)]:
        params = {"username": "rita", "password": "rita's password", "email": "rita@example.com", field: value}
        assert_error(account.request("PUT", "/user", params), 400)
        assert_error(account.request("POST", "/user", {field: value}), 400)
        if field != "email":
            login = {"username": "quinn", "password": PASSWORD, field: value}
            assert_error(send(client, "PUT", "/session", login), 400)
    assert usernames(account) == ["quinn"]
    assert account.request("GET", "/session").json_body == before


def test_a_null_json_value_counts_as_missing(client, make_account):
    account = make_account()

    message = assert_error(account.request("PUT", "/user", {"username": None, "password": "a password 1",
                                                            "email": "x@example.com"}), 400)
    assert "username" in message


def test_a_body_over_the_limit_is_413_and_a_huge_username_400_never_500(client, make_account):
    account = make_account(username="sam")
    ten_mb = "u" * (10 * 1024 * 1024)
    hundred_kb = "u" * (100 * 1024)

    assert_error(account.request("PUT", "/user", {"username": ten_mb, "password": "pw123456789", "email": "a@b.example"}), 413)
    assert_error(send(client, "PUT", "/user", form={"username": ten_mb}, headers=account.headers), 413)
    assert_error(send(client, "PUT", "/session", {"username": ten_mb, "password": PASSWORD}), 413)
    assert_error(account.request("PUT", "/user", {"username": hundred_kb, "password": "pw123456789", "email": "a@b.example"}), 400)
    assert_error(account.request("POST", "/user", {"username": hundred_kb}), 400)
    assert_error(send(client, "PUT", "/session", {"username": hundred_kb, "password": PASSWORD}), 401)
    assert usernames(account) == ["sam"]


ODD_USERNAMES = [
    "\ufdfa" * 64,          # 64 characters whose NFKC form is 1152 characters (over DynamoDB's key size)
    "\ufdfa" * 256,         # the longest a login attempt may be, NFKC-expanded likewise
    "\ud800lone",           # a lone surrogate (JSON can carry one; UTF-8 can't)
    "bad\x00name", "tab\tname", "zero\u200bwidth", "   ", "\U0010ffff", "\ue000private",
]


def test_odd_usernames_are_a_clear_4xx_everywhere(client, make_account):
    account = make_account(username="tess")
    for username in ODD_USERNAMES:
        created = account.request("PUT", "/user", {"username": username, "password": "pw123456789", "email": "a@b.example"})
        renamed = account.request("POST", "/user", {"username": username})
        login = send(client, "PUT", "/session", {"username": username, "password": "pw123456789"})

        assert created.status_code in (200, 400), (username, created.body)
        assert renamed.status_code in (200, 400, 409), (username, renamed.body)
        assert login.status_code in (200, 401), (username, login.body)
        if created.status_code == 200:
            assert login.status_code == 200
        else:
            assert_error(created, 400)
    assert account.request("GET", "/session").status_code == 200


def test_an_odd_password_is_a_clear_4xx(client, make_account):
    account = make_account(username="uma")

    assert_error(account.request("PUT", "/user", {"username": "vic", "password": "\ud800" * 10, "email": "v@example.com"}), 400)
    assert_error(account.request("POST", "/user", {"password": "pass\ud800word"}), 400)
    assert_error(log_in(client, "uma", "pass\ud800word"), 401)
    assert_error(log_in(client, "nobody-like-that", "pass\ud800word"), 401)
    assert log_in(client, "uma", PASSWORD).status_code == 200


def test_a_wrong_method_is_405_with_an_allow_header(client, make_account):
    account = make_account()
    for method, path, allowed in [
        ("POST", "/session", {"GET", "PUT", "DELETE"}),
        ("PATCH", "/session", {"GET", "PUT", "DELETE"}),
        ("PUT", "/key", {"GET", "POST"}),
        ("DELETE", "/key", {"GET", "POST"}),
        ("PATCH", "/user", {"GET", "PUT", "POST", "DELETE"}),
    ]:
        response = send(client, method, path, headers=account.headers)

        assert_error(response, 405)
        assert {m.strip() for m in response.headers["Allow"].split(",")} == allowed
    assert account.request("GET", "/key").json_body == {"key": account.key}


def test_an_unsupported_body_type_is_a_4xx_with_an_error_body(client, make_account):
    # Chalice itself refuses content types a route doesn't list, with its own {"Code", "Message"}
    # body: the contract says every error is {"error": …}.
    account = make_account()

    response = send(client, "PUT", "/user", "<user><username>x</username></user>",
                    headers={**account.headers, "Content-Type": "application/xml"})

    assert response.status_code in (400, 415)
    assert_error(response, response.status_code)


# ---- unique login names -----------------------------------------------------------------------

def test_usernames_are_unique_case_insensitively_across_projects(client, make_account):
    alice = make_account(username="alice")
    other_project = make_account(username="walt")

    for taken in ("Alice", "ALICE", " alice ", "alice"):
        message = assert_error(other_project.request("PUT", "/user", {"username": taken, "password": "pw123456789",
                                                                      "email": "a2@example.com"}), 409)
        assert "taken" in message
    assert usernames(other_project) == ["walt"]
    assert usernames(alice) == ["alice"]


def test_renaming_to_a_taken_name_is_409_and_changes_nothing(client, make_account):
    make_account(username="xena")
    yuri = make_account(username="yuri")
    before = yuri.request("GET", "/session").json_body

    assert_error(yuri.request("POST", "/user", {"username": "XENA", "email": "changed@example.com"}), 409)

    assert yuri.request("GET", "/session").json_body == before
    assert log_in(client, "yuri", PASSWORD).status_code == 200


def test_renaming_to_another_case_of_ones_own_name_works(client, make_account):
    zoe = make_account(username="zoe")

    response = zoe.request("POST", "/user", {"username": "ZoE"})

    assert response.status_code == 200 and response.json_body["username"] == "ZoE"
    assert usernames(zoe) == ["ZoE"]
    assert log_in(client, "zoe", PASSWORD).json_body == {"uuid": zoe.view["uuid"]}


def test_a_rename_frees_the_old_name(client, make_account):
    amy = make_account(username="amy")
    other = make_account(username="ben")

    assert amy.request("POST", "/user", {"username": "amelia"}).status_code == 200
    assert_error(other.request("PUT", "/user", {"username": "AMELIA", "password": "pw123456789", "email": "c@example.com"}), 409)
    taken_over = other.request("PUT", "/user", {"username": "Amy", "password": "pw123456789", "email": "c@example.com"})
    assert taken_over.status_code == 200


def test_two_concurrent_creates_of_one_name_give_one_account_and_one_conflict(aws, serialized_aws):
    from chalicelib.identity import accounts
    from chalicelib.platform.errors import Conflict

    projects = [accounts.create_project(f"race{i}")["project_id"] for i in range(2)]
    for attempt in range(3):
        barrier = threading.Barrier(2)
        outcomes = []

        def create(project_id, name):
            barrier.wait()
            try:
                accounts.create_user(project_id, name, "racing password", "race@example.com")
                outcomes.append("created")
            except Conflict:
                outcomes.append("conflict")
            except Exception as error:  # noqa: BLE001 - any other outcome fails the test below
                outcomes.append(repr(error))

        threads = [threading.Thread(target=create, args=(projects[0], f"racer{attempt}")),
                   threading.Thread(target=create, args=(projects[1], f"RACER{attempt}"))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        assert sorted(outcomes) == ["conflict", "created"]
        listed = [u["username"] for p in projects for u in accounts.list_users(p).build()]
        assert len([name for name in listed if name.lower() == f"racer{attempt}"]) == 1


def test_two_renames_of_one_account_at_once_both_answer_200_and_the_later_name_stays(aws, serialized_aws):
    """Two clients of one key rename the account at the same moment (each has read it before either
    writes): both are answered as if sent in turn, never a 404 for the account that exists, and exactly
    one login name is left, the account's."""
    from chalicelib.identity import accounts
    from chalicelib.platform import aws as aws_clients

    project = accounts.create_project("renames")["project_id"]
    user = accounts.create_user(project, "before", "racing password", "r@example.com").account["uuid"]
    both_read = threading.Barrier(2)
    first_writes: list[int] = []

    def overlap(**_kwargs):          # the first write of each rename waits until both have read the account
        if len(first_writes) < 2:
            first_writes.append(1)
            both_read.wait(timeout=20)

    outcomes = []

    def rename(name):
        try:
            outcomes.append(accounts.update_account(project, user, username=name)["username"])
        except Exception as error:  # noqa: BLE001 - any other outcome fails the test below
            outcomes.append(repr(error))

    aws_clients.dynamodb().meta.events.register_first("before-call.dynamodb.TransactWriteItems", overlap)
    try:
        threads = [threading.Thread(target=rename, args=(name,)) for name in ("left", "right")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        aws_clients.dynamodb().meta.events.unregister("before-call.dynamodb.TransactWriteItems", overlap)

    assert sorted(outcomes) == ["left", "right"], outcomes
    final = accounts.account(project, user)["username"]
    assert final in ("left", "right")
    assert {name: accounts.find_login(name) for name in ("before", "left", "right")} == {
        "before": None, "left": None, "right": None, final: accounts.AccountRef(project, user)}
