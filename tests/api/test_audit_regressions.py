"""Regressions of the holes a security audit found (issue 11), one test each, named after the hole.

Races are forced with parallel threads against the in-process functions (moto in process), or by
running the interleaving the audit found step by step.
"""
import json
import threading
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from chalicelib.identity import accounts, auth, passwords
from chalicelib.metering import ingest
from chalicelib.platform.errors import TooManyRequests, Unauthorized

PASSWORD = "correct horse battery staple"
JSON = {"Content-Type": "application/json"}
EVERY_ROUTE = [("GET", "/session"), ("GET", "/key"), ("POST", "/key"), ("GET", "/user"), ("PUT", "/user"),
               ("POST", "/user"), ("DELETE", "/user"), ("GET", "/point"), ("PUT", "/point"), ("POST", "/point"),
               ("GET", "/data"), ("POST", "/data"), ("GET", "/interval"), ("GET", "/file"), ("GET", "/graphics"),
               ("GET", "/keys"), ("PUT", "/keys"), ("DELETE", "/keys"), ("GET", "/status"), ("PUT", "/status")]

pytestmark = pytest.mark.usefixtures("fast_hashing")


def log_in(client, body):
    return client.http.put("/session", headers=JSON, body=json.dumps(body))


def cookie_of(response):
    return {"Cookie": response.headers["Set-Cookie"].split(";")[0]}


def send(client, method, path, headers, body=None):
    return getattr(client.http, method.lower())(path, headers={**headers, **JSON},
                                                 body=json.dumps(body or {"MeterId": "m", "username": "x"}))


# ---- a login racing DELETE /user ------------------------------------------------------------------

def test_a_login_racing_delete_user_leaves_no_credential_that_works(client, make_account, monkeypatch):
    """The audit's interleaving: the password is verified, DELETE /user runs (ending the sessions it finds),
    then the login creates its session. That cookie must answer 401 on every route."""
    make_account(username="leaving")
    verify = accounts.check_password

    def verify_then_delete(project_id, user_id, password):
        ok = verify(project_id, user_id, password)
        accounts.delete_account(project_id, user_id)      # DELETE /user lands between check and session
        return ok

    monkeypatch.setattr(accounts, "check_password", verify_then_delete)
    login = log_in(client, {"username": "leaving", "password": PASSWORD})
    monkeypatch.undo()
    assert login.status_code == 200          # the login itself got through, as in the audit…
    for method, path in EVERY_ROUTE:         # …but its cookie opens nothing
        assert send(client, method, path, cookie_of(login)).status_code == 401, (method, path)


def test_parallel_logins_and_delete_user_never_leave_a_live_session(client, make_account, serialized_aws):
    """The same race run for real, 5 times: 4 password logins in threads while the account is deleted."""
    for attempt in range(5):
        account = make_account(username=f"racer{attempt}")
        project_id, user_id = account.view["project"], account.view["uuid"]
        start = threading.Barrier(5)
        tokens = []

        def login():
            start.wait()
            try:
                tokens.append(auth.login(username=f"racer{attempt}", password=PASSWORD)[1])
            except Unauthorized:
                pass

        def delete():
            start.wait()
            accounts.delete_account(project_id, user_id)

        with ThreadPoolExecutor(5) as pool:
            for future in [pool.submit(login) for _ in range(4)] + [pool.submit(delete)]:
                future.result()
        for token in tokens:
            for method, path in (("GET", "/data"), ("GET", "/point"), ("POST", "/user"), ("GET", "/session")):
                assert send(client, method, path, {"Cookie": f"session={token}"}).status_code == 401


# ---- the login throttle under concurrency -----------------------------------------------------------

def wrong_passwords_at_once(username, n):
    """Statuses (sorted) of n logins with n different wrong passwords, released together."""
    start = threading.Barrier(n)

    def guess(i):
        start.wait()
        try:
            auth.login(username=username, password=f"wrong guess {i}")
        except Unauthorized:
            return 401
        except TooManyRequests:
            return 429
        return 200

    with ThreadPoolExecutor(n) as pool:
        return sorted(pool.map(guess, range(n)))


def test_parallel_wrong_passwords_verify_at_most_ten_guesses(client, make_account, monkeypatch, serialized_aws):
    """16 parallel wrong passwords: 10 are verified (401), 6 are refused unverified (429), and every one counts."""
    make_account(username="target")
    verified = []
    real_verify = passwords.verify
    lock = threading.Lock()

    def counting_verify(encoded, password):
        with lock:
            verified.append(password)
        return real_verify(encoded, password)

    monkeypatch.setattr(passwords, "verify", counting_verify)
    answers = wrong_passwords_at_once("target", 16)
    assert len(verified) <= 10
    assert sorted(answers) == [401] * 10 + [429] * 6
    assert log_in(client, {"username": "target", "password": PASSWORD}).status_code == 429


def test_eight_simultaneous_failures_are_all_counted(client, make_account, serialized_aws):
    make_account(username="counted")
    assert wrong_passwords_at_once("counted", 8) == [401] * 8
    # 8 counted: two more wrong guesses are verified, the next is refused even with the right password.
    for n in range(2):
        assert log_in(client, {"username": "counted", "password": f"late {n}"}).status_code == 401
    assert log_in(client, {"username": "counted", "password": PASSWORD}).status_code == 429


# ---- sessions and the account key ----------------------------------------------------------------------

def test_post_key_ends_the_sessions_opened_with_the_old_key(client, make_account):
    account = make_account(username="rotor")
    by_old_key = cookie_of(log_in(client, {"key": account.key}))
    by_password = cookie_of(log_in(client, {"username": "rotor", "password": PASSWORD}))
    assert client.http.get("/key", headers=by_old_key).json_body == {"key": account.key}

    new_key = account.request("POST", "/key").json_body["key"]

    assert client.http.get("/key", headers=by_old_key).status_code == 401      # can't read the new key
    assert client.http.get("/data", headers=by_old_key).status_code == 401
    assert client.http.get("/key", headers=by_password).json_body == {"key": new_key}
    by_new_key = cookie_of(log_in(client, {"key": new_key}))
    assert client.http.get("/session", headers=by_new_key).status_code == 200


def test_a_session_opened_with_the_old_key_dies_even_if_the_clean_up_misses_it(client, make_account, monkeypatch):
    """The clean-up query reads an eventually consistent index: authentication itself refuses the session."""
    from chalicelib.identity import sessions

    account = make_account()
    by_old_key = cookie_of(log_in(client, {"key": account.key}))
    monkeypatch.setattr(sessions, "end_all", lambda *args, **kwargs: None)
    account.request("POST", "/key")
    assert client.http.get("/key", headers=by_old_key).status_code == 401


def test_delete_session_with_a_key_header_and_a_cookie_ends_the_session(client, make_account):
    account = make_account(username="both")
    cookie = cookie_of(log_in(client, {"username": "both", "password": PASSWORD}))

    answer = client.http.delete("/session", headers={**cookie, "X-API-Key": account.key})

    assert answer.status_code == 200 and "Max-Age=0" in answer.headers["Set-Cookie"]
    assert client.http.get("/session", headers=cookie).status_code == 401
    assert account.request("GET", "/session").status_code == 200      # the key is not a session: it stays


@pytest.mark.parametrize("credential", ["key", "session opened by key", "session opened by password 10 minutes ago"])
def test_a_new_password_needs_the_current_one(client, make_account, time_travel, credential):
    """Only a session opened by password in the last 10 minutes changes it without current_password
    (tests/api/test_password_change.py)."""
    name = f"changer-{len(credential)}"
    account = make_account(username=name)
    if credential == "key":
        headers = account.headers
    elif credential == "session opened by key":
        headers = cookie_of(log_in(client, {"key": account.key}))
    else:
        headers = cookie_of(log_in(client, {"username": name, "password": PASSWORD}))
        time_travel.shift(auth.FRESH_LOGIN)

    without = send(client, "POST", "/user", headers, {"password": "taken over password"})
    wrong = send(client, "POST", "/user", headers, {"password": "taken over password", "current_password": "guess"})
    assert without.status_code == wrong.status_code == 403
    assert "current_password" in without.json_body["error"]
    assert log_in(client, {"username": name, "password": "taken over password"}).status_code == 401
    right = send(client, "POST", "/user", headers, {"password": "my new password", "current_password": PASSWORD})
    assert right.status_code == 200
    assert log_in(client, {"username": name, "password": "my new password"}).status_code == 200


def test_guessing_the_current_password_through_post_user_is_throttled(client, make_account):
    """Each password verified takes a ticket: a wrong current_password and a wrong new one are two."""
    account = make_account(username="guarded")
    for n in range(5):
        assert account.request("POST", "/user", {"password": f"new password {n}!", "current_password": f"g{n}"}
                               ).status_code == 403
    answer = account.request("POST", "/user", {"password": "new password!", "current_password": PASSWORD})
    assert answer.status_code == 429 and int(answer.headers["Retry-After"]) > 0


def test_post_key_with_an_invalid_response_type_rotates_nothing(client, make_account):
    account = make_account()
    answer = account.request("POST", "/key?responseType=html")
    assert answer.status_code == 400 and "nothing was done" in json.loads(answer.body)["error"]
    assert account.request("GET", "/key").json_body == {"key": account.key}
    made = account.request("PUT", "/keys?responseType=html", {"label": "lost?", "scope": "read"})
    assert made.status_code == 400 and account.request("GET", "/keys").json_body == []


def test_every_answer_carrying_a_secret_is_never_cached(client, make_account):
    account = make_account(username="cached")
    answers = [account.request("GET", "/key"), account.request("PUT", "/keys", {"label": "l", "scope": "read"}),
               log_in(client, {"username": "cached", "password": PASSWORD})]
    answers.append(account.request("POST", "/key"))
    for answer in answers:
        assert answer.status_code == 200 and answer.headers.get("Cache-Control") == "no-store"


# ---- malformed input ------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["2026-01-10T12:00:00+05:75", "2026-01-10T12:00:00+0575", "2026-01-10T12:00:00-00:99",
                                  "２０２６-01-10T12:00:00Z", "2026-01-10T12:00:00+٠٥:٠٠", "٢٠٢٦-٠١-١٠T12:00:00Z"])
def test_malformed_offsets_and_non_ascii_digits_in_times_are_rejected(client, make_account, text):
    import zoneinfo

    with pytest.raises(ValueError, match="malformed"):
        ingest.parse_time(text, zoneinfo.ZoneInfo("UTC"))
    account = make_account()
    account.request("PUT", "/point", {"MeterId": "m1"})
    receipt = account.request("POST", "/data", {"readings": [{"MeterId": "m1", "TimeStamping": text, "value": 1}]})
    assert receipt.json_body["accepted"] == 0 and len(receipt.json_body["rejected"]) == 1


@pytest.mark.parametrize("value", ["1_000", "１２", "٣", "1e٣", "0x10", "1__0"])
def test_non_ascii_digits_and_underscores_in_numbers_are_rejected(client, make_account, value):
    account = make_account()
    account.request("PUT", "/point", {"MeterId": "m1"})
    receipt = account.request("POST", "/data", {"readings": [
        {"MeterId": "m1", "TimeStamping": "2026-01-10T12:00:00Z", "value": value}]}).json_body
    assert receipt["accepted"] == 0 and "not a number" in receipt["rejected"][0]["error"]
    assert account.request("PUT", "/point", {"MeterId": "m2", "ModbusId": value}).status_code == 400
    assert account.request("GET", f"/graphics?width={urllib.parse.quote(value)}").status_code == 400


def test_well_formed_offsets_and_numbers_still_work(client, make_account):
    account = make_account()
    account.request("PUT", "/point", {"MeterId": "m1"})
    receipt = account.request("POST", "/data", {"readings": [
        {"MeterId": "m1", "TimeStamping": "2026-01-10T12:00:00+05:45", "value": "1000.5"},
        {"MeterId": "m1", "TimeStamping": "2026-01-10T12:00:00-0330", "value": " 1e3 "},
        {"MeterId": "m1", "TimeStamping": "2026-01-10T12:00:00Z", "value": 2000}]}).json_body
    assert receipt == {"accepted": 3, "duplicates": 0, "rejected": []}


@pytest.mark.parametrize("path", ["/file", "/graphics", "/point", "/data", "/interval", "/status", "/keys",
                                  "/session", "/key", "/user"])
def test_a_get_with_a_json_body_of_the_wrong_type_is_400(client, make_account, path):
    account = make_account()
    for body in ({"type": ["csv"], "start": "2026-01-10", "end": "2026-01-10"},
                 {"type": {"a": 1}, "start": "2026-01-10", "end": "2026-01-10"}, {"name": ["m"]}, {"id": {"x": 1}}):
        answer = account.request("GET", path, body)
        assert answer.status_code == 400, (path, body, answer.body)
        assert "must be text or a number" in json.loads(answer.body)["error"]


def test_a_display_name_with_dot_segments_gives_a_working_download(client, make_account):
    account = make_account()
    account.request("PUT", "/point", {"MeterId": "m1"})
    account.request("POST", "/data", {"readings": [{"MeterId": "m1", "TimeStamping": "2026-01-10T12:00:00Z",
                                                    "value": 5.0}]})
    assert account.request("POST", "/point", {"name": "m1", "new": "a/../../b"}).status_code == 200

    answer = account.request("GET", "/file?" + urllib.parse.urlencode(
        {"start": "2026-01-10", "end": "2026-01-10", "meter": "a/../../b"}))

    assert answer.status_code == 303
    location = answer.headers["Location"]
    path = urllib.parse.urlsplit(location).path
    assert "/../" not in path and "/./" not in path and "%2F" not in path.upper()
    download = requests.get(location, timeout=30)
    assert download.status_code == 200 and "a/../../b" in download.text
    assert urllib.parse.quote("a/../../b", safe="") in download.headers["Content-Disposition"]


# ---- cross-project lockout ----------------------------------------------------------------------------

def test_another_projects_tenant_cannot_keep_a_user_locked_out(client, make_account):
    """A tenant learns a name from a 409 and spends its 10 guesses: the owner ends the lock with the account key."""
    victim = make_account(project_name="Victim", username="victim-admin")
    tenant = make_account(project_name="Tenant", username="tenant")
    assert tenant.request("POST", "/user", {"username": "VICTIM-ADMIN"}).status_code == 409   # the name exists
    for n in range(10):
        log_in(client, {"username": "victim-admin", "password": f"spray {n}"})
    assert log_in(client, {"username": "victim-admin", "password": PASSWORD}).status_code == 429

    assert log_in(client, {"key": victim.key}).status_code == 200          # the owner's key is never throttled…

    assert log_in(client, {"username": "victim-admin", "password": PASSWORD}).status_code == 200   # …and ends it
