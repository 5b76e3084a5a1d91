"""Tenancy of the account routes: with project A's credentials nothing of project B can be read or changed.

/session, /key and /user take no id of another account: every one of them acts on the caller (or
the caller's project), whatever ids a request smuggles in. B's users, ids, names, e-mails and keys
never appear in A's answers, in any format.
"""
import json

import pytest

PASSWORD = "correct horse battery staple"
JSON = {"Content-Type": "application/json"}
FORMATS = ("json", "xml", "yaml")


pytestmark = [pytest.mark.usefixtures("fast_hashing"), pytest.mark.fresh_aws]  # "Alpha" and "Bravo" each time  # small Argon2 costs: hashing is tested in test_sessions_security


@pytest.fixture
def projects(client, make_account):
    """Two projects with two users each: a1, a2 in A and b1, b2 in B."""
    a1 = make_account(project_name="Alpha", username="a1-user")
    a2 = make_account(username="a2-user", project_id=a1.view["project"])
    b1 = make_account(project_name="Bravo", username="b1-user")
    b2 = make_account(username="b2-user", project_id=b1.view["project"])
    assert a1.view["project"] != b1.view["project"]
    return a1, a2, b1, b2


def log_in(client, username, password=PASSWORD):
    return client.http.put("/session", headers=JSON, body=json.dumps({"username": username, "password": password}))


def cookie_of(response):
    return {"Cookie": response.headers["Set-Cookie"].split(";")[0]}


def fingerprints(account):
    """Strings that identify an account and must not leak to another project."""
    return [account.view["username"], account.view["email"], account.key, account.key.split("-")[0]]


def b_is_intact(client, b1, b2):
    """B's accounts are as they were: same views, same keys, same passwords, same members."""
    for b in (b1, b2):
        view = b.request("GET", "/session").json_body
        assert (view["uuid"], view["username"], view["email"], view["project"]) == (
            b.view["uuid"], b.view["username"], b.view["email"], b.view["project"])
        assert b.request("GET", "/key").json_body == {"key": b.key}
    assert sorted(u["uuid"] for u in b1.request("GET", "/user").json_body) == sorted([b1.view["uuid"], b2.view["uuid"]])
    assert log_in(client, "b1-user").json_body == {"uuid": b1.view["uuid"]}


def test_get_user_lists_only_the_callers_project(client, projects):
    a1, a2, b1, b2 = projects

    for fmt in FORMATS:
        response = a1.request("GET", f"/user?responseType={fmt}")
        assert response.status_code == 200
        text = response.body.decode()
        for b in (b1, b2):
            for secret in fingerprints(b):
                assert secret not in text, (fmt, secret)
    users = a1.request("GET", "/user").json_body
    assert sorted(u["uuid"] for u in users) == sorted([a1.view["uuid"], a2.view["uuid"]])
    assert sorted(u["uuid"] for u in b2.request("GET", "/user").json_body) == sorted([b1.view["uuid"], b2.view["uuid"]])


def test_ids_of_another_project_are_ignored_by_every_account_route(client, projects):
    a1, a2, b1, b2 = projects
    b_ids = {"uuid": b1.view["uuid"], "user_id": b1.view["uuid"], "id": b1.view["uuid"],
             "project": b1.view["project"], "project_id": b1.view["project"]}
    query = "&".join(f"{k}={v}" for k, v in b_ids.items())

    session = a1.request("GET", f"/session?{query}").json_body
    key = a1.request("GET", f"/key?{query}").json_body
    users = a1.request("GET", f"/user?{query}").json_body

    assert (session["uuid"], session["project"], session["project_name"]) == (a1.view["uuid"], a1.view["project"], "Alpha")
    assert key == {"key": a1.key}
    assert {u["uuid"] for u in users} == {a1.view["uuid"], a2.view["uuid"]}
    b_is_intact(client, b1, b2)


def test_a_user_created_with_another_projects_id_lands_in_the_callers_project(client, projects):
    a1, a2, b1, b2 = projects

    response = a1.request("PUT", f"/user?project={b1.view['project']}",
                          {"username": "smuggled", "password": "smuggled password", "email": "s@example.com",
                           "project": b1.view["project"], "project_id": b1.view["project"]})

    assert response.status_code == 200
    assert (response.json_body["project"], response.json_body["project_name"]) == (a1.view["project"], "Alpha")
    assert "smuggled" in [u["username"] for u in a2.request("GET", "/user").json_body]
    assert "smuggled" not in [u["username"] for u in b2.request("GET", "/user").json_body]
    b_is_intact(client, b1, b2)


def test_updates_aimed_at_another_projects_user_change_only_the_caller(client, projects):
    a1, a2, b1, b2 = projects
    aimed = {"uuid": b1.view["uuid"], "user_id": b1.view["uuid"], "project": b1.view["project"]}

    response = a1.request("POST", "/user", {**aimed, "email": "a1-new@example.com", "password": "a1 new password",
                                          "current_password": PASSWORD})

    assert response.status_code == 200
    assert (response.json_body["uuid"], response.json_body["email"]) == (a1.view["uuid"], "a1-new@example.com")
    assert log_in(client, "a1-user", "a1 new password").status_code == 200
    assert log_in(client, "b1-user", "a1 new password").status_code == 401
    b_is_intact(client, b1, b2)


def test_a_key_rotation_aimed_at_another_project_rotates_only_the_callers_key(client, projects):
    a1, a2, b1, b2 = projects

    response = a1.request("POST", "/key", {"uuid": b1.view["uuid"], "key": b1.key})

    assert response.status_code == 200
    assert response.json_body["key"] not in (a1.key, b1.key)
    assert a1.request("GET", "/session").status_code == 401
    b_is_intact(client, b1, b2)


def test_logout_and_delete_aimed_at_another_project_end_only_the_caller(client, projects):
    a1, a2, b1, b2 = projects
    b_session = cookie_of(log_in(client, "b1-user"))
    a_session = cookie_of(log_in(client, "a2-user"))

    logout = client.http.delete(f"/session?uuid={b1.view['uuid']}", headers=a_session)
    delete = a1.request("DELETE", "/user", {"uuid": b1.view["uuid"], "project": b1.view["project"]})

    assert logout.status_code == 200 and delete.status_code == 200
    assert client.http.get("/session", headers=a_session).status_code == 401
    assert a1.request("GET", "/session").status_code == 401
    assert client.http.get("/session", headers=b_session).json_body["uuid"] == b1.view["uuid"]
    b_is_intact(client, b1, b2)


def test_credentials_of_one_project_never_open_another(client, projects):
    a1, a2, b1, b2 = projects

    assert log_in(client, "b1-user", "wrong for b1").status_code == 401
    a_cookie = cookie_of(log_in(client, "a1-user"))
    assert client.http.get("/session", headers=a_cookie).json_body["project"] == a1.view["project"]
    assert client.http.get("/key", headers=a_cookie).json_body == {"key": a1.key}
    # A key sent as a login name or a password is just a wrong credential.
    assert log_in(client, b1.key, PASSWORD).status_code == 401
    assert log_in(client, "b1-user", b1.key).status_code == 401
    b_is_intact(client, b1, b2)


def test_renaming_into_another_projects_name_is_refused_and_leaves_it_alone(client, projects):
    a1, a2, b1, b2 = projects

    response = a1.request("POST", "/user", {"username": "B1-USER"})

    assert response.status_code == 409
    assert a1.request("GET", "/session").json_body["username"] == "a1-user"
    b_is_intact(client, b1, b2)


def test_errors_about_another_projects_users_reveal_nothing_of_them(client, projects):
    a1, a2, b1, b2 = projects

    conflict = a1.request("PUT", "/user", {"username": "b2-user", "password": "pw123456789", "email": "x@example.com"})

    assert conflict.status_code == 409
    text = conflict.body.decode()
    for secret in (b2.view["email"], b2.key, "Bravo"):
        assert secret not in text


def test_scoped_keys_never_open_another_projects_accounts(client, projects):
    a1, a2, b1, b2 = projects
    b_key = b1.request("PUT", "/keys", {"label": "b agent", "scope": "read"}).json_body
    a_key = a1.request("PUT", "/keys", {"label": "a agent", "scope": "ingest"}).json_body

    assert client.http.put("/session", headers=JSON, body=json.dumps({"key": b_key["key"]})).status_code == 401
    for method, path in (("GET", "/user"), ("GET", "/session"), ("GET", "/key"), ("GET", "/keys")):
        answer = getattr(client.http, method.lower())(path, headers={"X-API-Key": a_key["key"]})
        assert answer.status_code == 403, (method, path)
        assert "b-user" not in answer.body.decode() and b_key["key"] not in answer.body.decode()
    assert [k["label"] for k in a2.request("GET", "/keys").json_body] == ["a agent"]   # the project's keys
    assert [k["label"] for k in b2.request("GET", "/keys").json_body] == ["b agent"]
    b_is_intact(client, b1, b2)
