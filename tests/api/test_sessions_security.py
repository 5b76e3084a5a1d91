"""Security properties of accounts: sessions, cookies, API keys, password hashing, login throttling.

What a user relies on without seeing it: a session token nobody can guess and that only exists in
their browser, sessions that die when idle, after 12 hours, at logout, at a password change elsewhere
or when the account goes; keys and passwords never stored in clear; passwords hashed with Argon2id
and never truncated; password guessing throttled per account.
"""
import json
import math
import re
import time

import pytest

PASSWORD = "correct horse battery staple"
JSON = {"Content-Type": "application/json"}
TABLES = ("AccountsTable", "SessionsTable", "MetersTable", "ReadingsTable")


def log_in(client, username, password):
    return client.http.put("/session", headers=JSON, body=json.dumps({"username": username, "password": password}))


def set_cookie(response):
    """(name, value, attributes) of the response's Set-Cookie header."""
    first, *attributes = [part.strip() for part in response.headers["Set-Cookie"].split(";")]
    name, _, value = first.partition("=")
    return name, value, attributes


def cookie_header(response):
    name, value, _ = set_cookie(response)
    return {"Cookie": f"{name}={value}"}


def items(logical_id):
    """Every item of a table, as plain dicts (scanning is fine in tests)."""
    from chalicelib.platform import aws, config, db

    found: list = []
    for page in aws.dynamodb().get_paginator("scan").paginate(TableName=config.resource_name(logical_id)):
        found.extend(db.from_ddb(item) for item in page["Items"])
    return found


def stored_text():
    """Every item of every table, as one string to search."""
    return "\n".join(json.dumps(item, default=str, ensure_ascii=False) for table in TABLES for item in items(table))


def user_item(user_id):
    return next(item for item in items("AccountsTable") if item.get("user_id") == user_id and "password_hash" in item)


def argon2_parameters(encoded):
    match = re.fullmatch(r"\$argon2id\$v=19\$m=(\d+),t=(\d+),p=(\d+)\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+", encoded)
    assert match, f"not an Argon2id hash: {encoded[:20]}…"
    return {"m": int(match[1]), "t": int(match[2]), "p": int(match[3])}


# ---- session tokens ---------------------------------------------------------------------------

@pytest.mark.usefixtures("fast_hashing")
@pytest.mark.fresh_aws  # counts every session, reads every stored item
def test_the_session_token_has_at_least_256_random_bits_and_only_its_hash_is_stored(client, make_account):
    make_account(username="ann")

    tokens = [set_cookie(log_in(client, "ann", PASSWORD))[1] for _ in range(2)]

    for token in tokens:
        alphabet = 16 if re.fullmatch(r"[0-9a-f]+", token) else 64
        assert re.fullmatch(r"[A-Za-z0-9_-]+", token), "a URL-safe token (no quoting in the cookie)"
        assert len(token) * math.log2(alphabet) >= 256
    assert tokens[0] != tokens[1]
    sessions = items("SessionsTable")
    assert len(sessions) == 2
    text = stored_text()
    for token in tokens:
        assert token not in text
        assert token[:20] not in text


@pytest.mark.usefixtures("fast_hashing")
def test_a_tampered_token_is_refused(client, make_account):
    make_account(username="bea")
    name, token, _ = set_cookie(log_in(client, "bea", PASSWORD))
    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")

    response = client.http.get("/session", headers={"Cookie": f"{name}={tampered}"})

    assert response.status_code == 401
    assert client.http.get("/session", headers={"Cookie": f"{name}={token}"}).status_code == 200


# ---- expiry -----------------------------------------------------------------------------------

@pytest.mark.usefixtures("fast_hashing")
def test_a_session_dies_after_an_hour_idle_and_activity_keeps_it_alive(client, make_account, time_travel):
    make_account(username="cid")
    cookie = cookie_header(log_in(client, "cid", PASSWORD))

    for _ in range(3):  # activity every 59 minutes: alive for three hours
        time_travel.shift(59 * 60)
        assert client.http.get("/session", headers=cookie).status_code == 200
    time_travel.shift(60 * 60)

    assert client.http.get("/session", headers=cookie).status_code == 401
    time_travel.shift(-(3 * 59 + 60) * 60)   # back to when it was made
    assert client.http.get("/session", headers=cookie).status_code == 401  # ended, not just out of date


@pytest.mark.usefixtures("fast_hashing")
def test_a_session_dies_after_12_hours_however_active(client, make_account, time_travel):
    make_account(username="dee")
    cookie = cookie_header(log_in(client, "dee", PASSWORD))

    for _ in range(23):  # a request every 30 minutes up to 11 h 30
        time_travel.shift(30 * 60)
        assert client.http.get("/session", headers=cookie).status_code == 200
    time_travel.shift(29 * 60)
    assert client.http.get("/session", headers=cookie).status_code == 200  # 11 h 59
    time_travel.shift(60)

    assert client.http.get("/session", headers=cookie).status_code == 401  # 12 h
    assert log_in(client, "dee", PASSWORD).status_code == 200  # logging in again works


# ---- cookie attributes ------------------------------------------------------------------------

@pytest.mark.usefixtures("fast_hashing")
def test_the_local_stage_cookie_is_httponly_samesite_lax_path_root(client, make_account):
    make_account(username="eli")

    name, value, attributes = set_cookie(log_in(client, "eli", PASSWORD))

    assert name == "session" and value
    lowered = [a.lower() for a in attributes]
    assert "httponly" in lowered and "samesite=lax" in lowered and "path=/" in lowered
    assert not any(a.startswith("domain") for a in lowered)


@pytest.mark.usefixtures("fast_hashing")
def test_deployed_stages_use_a_secure_host_prefixed_cookie(aws, make_account):
    # The dev and prod stages set no SECURE_COOKIES of their own: the app-wide "true" applies.
    from chalice.test import Client

    from app import app

    make_account(username="fay")
    with Client(app, stage_name="prod") as deployed:
        login = log_in(deployed, "fay", PASSWORD)
        name, value, attributes = set_cookie(login)
        lowered = [a.lower() for a in attributes]

        assert login.status_code == 200
        assert name == "__Host-session" and value
        assert {"secure", "httponly", "samesite=lax", "path=/"} <= set(lowered)
        assert not any(a.startswith("domain") for a in lowered)  # __Host- cookies may not name a domain
        assert deployed.http.get("/session", headers={"Cookie": f"__Host-session={value}"}).status_code == 200
        assert deployed.http.get("/session", headers={"Cookie": f"session={value}"}).status_code == 401

        logout = deployed.http.delete("/session", headers={"Cookie": f"__Host-session={value}"})
        cleared_name, cleared_value, cleared = set_cookie(logout)
        assert (cleared_name, cleared_value) == ("__Host-session", "")
        assert "Secure" in cleared and "Max-Age=0" in cleared
        assert deployed.http.get("/session", headers={"Cookie": f"__Host-session={value}"}).status_code == 401


@pytest.mark.usefixtures("fast_hashing")
def test_secure_cookies_follow_the_setting(client, make_account, monkeypatch):
    from chalicelib.platform import config

    make_account(username="gus")
    monkeypatch.setattr(config, "secure_cookies", lambda: True)

    name, value, attributes = set_cookie(log_in(client, "gus", PASSWORD))

    assert name == "__Host-session" and "Secure" in attributes
    assert client.http.get("/session", headers={"Cookie": f"__Host-session={value}"}).status_code == 200


# ---- ending sessions --------------------------------------------------------------------------

@pytest.mark.usefixtures("fast_hashing")
@pytest.mark.fresh_aws  # counts every session
def test_logout_ends_the_session_on_the_server(client, make_account):
    make_account(username="hal")
    cookie = cookie_header(log_in(client, "hal", PASSWORD))
    other = cookie_header(log_in(client, "hal", PASSWORD))

    assert client.http.delete("/session", headers=cookie).status_code == 200

    assert client.http.get("/session", headers=cookie).status_code == 401  # replaying the old cookie
    assert client.http.delete("/session", headers=cookie).status_code == 401
    assert client.http.get("/session", headers=other).status_code == 200  # another device stays logged in
    assert len(items("SessionsTable")) == 1


@pytest.mark.usefixtures("fast_hashing")
def test_a_password_change_ends_the_accounts_other_sessions_but_not_the_changing_one(client, make_account):
    account = make_account(username="ida")
    colleague = make_account(username="jon", project_id=account.view["project"])
    changing = cookie_header(log_in(client, "ida", PASSWORD))
    elsewhere = cookie_header(log_in(client, "ida", PASSWORD))
    colleagues = cookie_header(log_in(client, "jon", PASSWORD))

    response = client.http.post("/user", headers={**changing, **JSON}, body=json.dumps({"password": "a new password", "current_password": PASSWORD}))

    assert response.status_code == 200
    assert client.http.get("/session", headers=changing).status_code == 200
    assert client.http.get("/session", headers=elsewhere).status_code == 401
    assert client.http.get("/session", headers=colleagues).status_code == 200
    assert account.request("GET", "/session").status_code == 200  # the key is a separate credential
    assert colleague.request("GET", "/session").status_code == 200


@pytest.mark.usefixtures("fast_hashing")
def test_a_password_change_by_key_ends_every_session_and_other_changes_end_none(client, make_account):
    account = make_account(username="kim")
    first = cookie_header(log_in(client, "kim", PASSWORD))

    assert account.request("POST", "/user", {"email": "kim@new.example.com", "username": "kimberly"}).status_code == 200
    assert client.http.get("/session", headers=first).status_code == 200
    assert account.request("POST", "/user", {"password": "kim's new password", "current_password": PASSWORD}).status_code == 200

    assert client.http.get("/session", headers=first).status_code == 401


@pytest.mark.usefixtures("fast_hashing")
@pytest.mark.fresh_aws  # lists every session
def test_deleting_an_account_ends_all_its_sessions_and_its_key(client, make_account):
    account = make_account(username="lou")
    colleague = make_account(username="max", project_id=account.view["project"])
    one = cookie_header(log_in(client, "lou", PASSWORD))
    two = cookie_header(log_in(client, "lou", PASSWORD))
    colleagues = cookie_header(log_in(client, "max", PASSWORD))

    assert client.http.delete("/user", headers=one).status_code == 200

    assert client.http.get("/session", headers=one).status_code == 401
    assert client.http.get("/session", headers=two).status_code == 401
    assert account.request("GET", "/session").status_code == 401
    assert client.http.put("/session", headers=JSON, body=json.dumps({"key": account.key})).status_code == 401
    assert client.http.get("/session", headers=colleagues).status_code == 200
    assert colleague.request("GET", "/session").status_code == 200
    assert [s["user_id"] for s in items("SessionsTable")] == [colleague.view["uuid"]]


# ---- API keys ---------------------------------------------------------------------------------

@pytest.mark.usefixtures("fast_hashing")
@pytest.mark.fresh_aws  # reads every stored item
def test_api_keys_are_160_random_bits_never_stored_in_clear(client, make_account):
    accounts = [make_account() for _ in range(2)]
    keys = [a.key for a in accounts]
    rotated = accounts[0].request("POST", "/key").json_body["key"]

    for key in keys + [rotated]:
        assert re.fullmatch(r"[0-9a-f]{10}(-[0-9a-f]{10}){3}", key)  # 40 hex digits: 160 bits
    assert len({*keys, rotated}) == 3
    text = stored_text()
    for key in keys + [rotated]:
        assert key not in text and key.replace("-", "") not in text
        assert key.upper() not in text and key.replace("-", "").upper() not in text
        for group in key.split("-"):
            assert group not in text
    assert accounts[0].request("GET", "/key", headers={"X-API-Key": rotated}).json_body == {"key": rotated}
    assert accounts[1].request("GET", "/key").json_body == {"key": keys[1]}


@pytest.mark.usefixtures("fast_hashing")
def test_a_new_key_replaces_the_old_one_at_once(client, make_account):
    account = make_account()
    old = account.key

    new = account.request("POST", "/key").json_body["key"]

    for headers in ({"X-API-Key": old}, {"Authorization": f"Bearer {old}"}):
        assert client.http.get("/session", headers=headers).status_code == 401
    for headers in ({"X-API-Key": new}, {"Authorization": f"Bearer {new}"}):
        assert client.http.get("/session", headers=headers).json_body["uuid"] == account.view["uuid"]
    assert client.http.get("/key", headers={"X-API-Key": new}).json_body == {"key": new}


# ---- passwords --------------------------------------------------------------------------------

@pytest.mark.production_hashing
@pytest.mark.fresh_aws  # reads every stored item
def test_passwords_are_stored_as_argon2id_with_at_least_owasps_parameters(client, make_account):
    account = make_account(username="ned")

    stored = user_item(account.view["uuid"])

    assert PASSWORD not in stored_text()
    parameters = argon2_parameters(stored["password_hash"])
    assert parameters["m"] >= 19456 and parameters["t"] >= 2 and parameters["p"] >= 1


@pytest.mark.production_hashing
def test_passwords_of_8_to_1024_characters_work(client, make_account):
    account = make_account(username="ola")
    for length in (8, 256, 1024):
        password = ("pässwörd-" * 200)[:length]

        created = account.request("PUT", "/user", {"username": f"pat{length}", "password": password,
                                                   "email": "p@example.com"})

        assert created.status_code == 200
        if length > 8:
            assert log_in(client, f"pat{length}", password).json_body == {"uuid": created.json_body["uuid"]}


@pytest.mark.production_hashing
def test_a_password_under_8_characters_is_refused(client, make_account):
    account = make_account(username="quin")

    response = account.request("PUT", "/user", {"username": "ray", "password": "7 chars", "email": "r@example.com"})

    assert response.status_code == 400 and "password" in response.json_body["error"]
    assert account.request("POST", "/user", {"password": "short"}).status_code == 400
    assert [u["username"] for u in account.request("GET", "/user").json_body] == ["quin"]


@pytest.mark.production_hashing
def test_passwords_are_never_truncated_or_trimmed(client, make_account):
    account = make_account(username="sue")
    long_password = "".join(chr(ord("a") + i % 26) for i in range(400))
    differs_at_300 = long_password[:299] + "#" + long_password[300:]
    created = account.request("PUT", "/user", {"username": "ted", "password": long_password, "email": "t@example.com"})
    assert created.status_code == 200

    assert log_in(client, "ted", differs_at_300).status_code == 401
    assert log_in(client, "ted", long_password[:299]).status_code == 401
    assert account.request("POST", "/user", {"password": " spaces around ", "current_password": PASSWORD}).status_code == 200
    assert log_in(client, "sue", "spaces around").status_code == 401
    assert log_in(client, "sue", " spaces around ").status_code == 200


@pytest.mark.production_hashing
def test_a_hash_with_weaker_parameters_is_upgraded_at_login(client, make_account, monkeypatch):

    from chalicelib.identity import passwords

    strong = passwords.parameters()
    monkeypatch.setenv("PASSWORD_HASHING", "CHEAPEST")
    account = make_account(username="uli")
    weak = argon2_parameters(user_item(account.view["uuid"])["password_hash"])
    assert weak["m"] < 19456
    monkeypatch.delenv("PASSWORD_HASHING")

    assert log_in(client, "uli", PASSWORD).status_code == 200

    upgraded = argon2_parameters(user_item(account.view["uuid"])["password_hash"])
    assert upgraded == {"m": strong.memory_cost, "t": strong.time_cost, "p": strong.parallelism}
    assert upgraded["m"] >= 19456 and upgraded["t"] >= 2
    assert log_in(client, "uli", PASSWORD).status_code == 200
    assert log_in(client, "uli", PASSWORD + "x").status_code == 401


# ---- login throttling -------------------------------------------------------------------------

def _fail(client, username, times):
    for _ in range(times):
        assert log_in(client, username, "wrong password!").status_code == 401


def test_ten_failed_logins_in_15_minutes_lock_the_account_for_the_rest_of_the_window(client, make_account, fast_hashing,
                                                                                       time_travel):
    account = make_account(username="vic")
    bystander = make_account(username="wes")

    _fail(client, "vic", 10)
    locked = log_in(client, "vic", PASSWORD)  # even the right password

    assert locked.status_code == 429
    assert set(json.loads(locked.body)) == {"error"}
    retry_after = int(locked.headers["Retry-After"])
    assert 0 < retry_after <= 15 * 60
    assert log_in(client, "wes", PASSWORD).json_body == {"uuid": bystander.view["uuid"]}  # another account
    assert account.request("GET", "/session").status_code == 200  # keys are not throttled

    time_travel.shift(retry_after - 5)
    assert log_in(client, "vic", PASSWORD).status_code == 429
    time_travel.shift(6)
    assert log_in(client, "vic", PASSWORD).json_body == {"uuid": account.view["uuid"]}


def test_the_throttle_counts_every_spelling_of_a_name_that_logs_in(client, make_account, fast_hashing):
    for name, variant in [("vic0", "VIC0"), ("vic1", " vic1"), ("vic2", "vic2\t"), ("vic3", "Vic3 "), ("vic4", "ＶＩＣ４")]:
        make_account(username=name)
        assert log_in(client, variant, PASSWORD).status_code == 200  # the variant logs in…

        _fail(client, name, 5)
        _fail(client, variant, 5)

        assert log_in(client, name, PASSWORD).status_code == 429  # …so its failures count for the name
        assert log_in(client, variant, PASSWORD).status_code == 429


def test_failures_spread_over_more_than_15_minutes_do_not_lock(client, make_account, fast_hashing, time_travel):
    account = make_account(username="xia")

    _fail(client, "xia", 9)
    time_travel.shift(15 * 60 + 1)
    _fail(client, "xia", 9)

    assert log_in(client, "xia", PASSWORD).json_body == {"uuid": account.view["uuid"]}


def test_unknown_users_and_wrong_passwords_answer_identically_even_when_throttled(client, make_account, fast_hashing,
                                                                                 time_travel):
    make_account(username="yan")
    time_travel.move_to(time.time(), tick=False)  # time stands still, so both Retry-After count from the same instant

    first_wrong, first_unknown = log_in(client, "yan", "wrong password!"), log_in(client, "nobody", "wrong password!")
    assert first_wrong.status_code == first_unknown.status_code == 401
    assert (first_wrong.body, first_wrong.headers) == (first_unknown.body, first_unknown.headers)
    _fail(client, "yan", 9)
    _fail(client, "nobody", 9)

    locked_wrong, locked_unknown = log_in(client, "yan", PASSWORD), log_in(client, "nobody", PASSWORD)
    assert locked_wrong.status_code == locked_unknown.status_code == 429
    assert (locked_wrong.body, locked_wrong.headers) == (locked_unknown.body, locked_unknown.headers)


def test_every_stage_hashes_passwords_at_or_above_owasps_floor():
    """PASSWORD_HASHING may name a cheap profile for tests; no stage of .chalice/config.json may."""
    import json
    import pathlib

    from chalicelib.identity import passwords

    chalice_config = json.loads((pathlib.Path(__file__).parents[2] / ".chalice" / "config.json").read_text())
    for stage, settings in chalice_config["stages"].items():
        environment = {**chalice_config.get("environment_variables", {}), **settings.get("environment_variables", {})}
        chosen = passwords.PROFILES[environment.get("PASSWORD_HASHING", "RFC_9106_LOW_MEMORY")]
        assert chosen.memory_cost >= 19456 and chosen.time_cost >= 2, stage
