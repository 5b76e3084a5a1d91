"""Changing the password as the vendor's guide does it, and the guesses that door may not give away.

The guide's flow is: log in with username and password (PUT /session), then `POST /user password=…`.
A session opened by password less than 10 minutes ago may do that without current_password; a key,
a session opened by key and an older session need it (chalicelib/identity/auth.py). Every password
verified against an account takes a ticket of the account's window first (chalicelib/identity/throttle.py):
the tickets spent on current_password are never given back by a key login or a rename, and a key login
forgives the login tickets once a window only, so whoever holds the key gets a bounded number of
guesses at the password whatever the doors, one after the other or in parallel.
"""
import json
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlencode

import pytest
import requests

from chalicelib.identity import auth, throttle
from tests.conftest import PASSWORD

FORM = {"Content-Type": "application/x-www-form-urlencoded"}

pytestmark = pytest.mark.usefixtures("fast_hashing")


def _form(client, method, path, fields, headers=None):
    """A request as the guide's clients send it: form-encoded fields."""
    return client.http.request(method, path, headers={**FORM, **(headers or {})}, body=urlencode(fields).encode())


def _log_in(client, username, password):
    return _form(client, "PUT", "/session", {"username": username, "password": password})


def _cookie(answer):
    assert answer.status_code == 200, answer.body
    return {"Cookie": answer.headers["Set-Cookie"].split(";")[0]}


def test_the_guides_flow_changes_the_password_without_the_current_one(client, make_account, time_travel):
    make_account(username="guide")
    cookie = _cookie(_log_in(client, "guide", PASSWORD))

    time_travel.shift(auth.FRESH_LOGIN - 5)
    changed = _form(client, "POST", "/user", {"password": "the guide's new password"}, cookie)

    assert changed.status_code == 200, changed.body
    assert json.loads(changed.body)["username"] == "guide"
    assert _log_in(client, "guide", PASSWORD).status_code == 401
    assert _log_in(client, "guide", "the guide's new password").status_code == 200
    assert client.http.get("/session", headers=cookie).status_code == 200     # the changing session lives on


def test_a_password_login_older_than_10_minutes_needs_the_current_password(client, make_account, time_travel):
    make_account(username="late")
    cookie = _cookie(_log_in(client, "late", PASSWORD))
    time_travel.shift(auth.FRESH_LOGIN)

    refused = _form(client, "POST", "/user", {"password": "a late new password"}, cookie)

    assert refused.status_code == 403 and "current_password" in json.loads(refused.body)["error"]
    assert _log_in(client, "late", PASSWORD).status_code == 200
    # A wrong current_password is refused in a fresh session too: given, it is checked.
    fresh = _cookie(_log_in(client, "late", PASSWORD))
    wrong = _form(client, "POST", "/user", {"password": "a late new password", "current_password": "nope"}, fresh)
    assert wrong.status_code == 403


@pytest.mark.parametrize("credential", ["key", "session opened by key"])
def test_keys_and_sessions_opened_by_key_need_the_current_password(client, make_account, credential):
    account = make_account(username=f"keyed-{len(credential)}")
    headers = account.headers if credential == "key" else _cookie(_form(client, "PUT", "/session",
                                                                        {"key": account.key}))
    refused = _form(client, "POST", "/user", {"password": "a keyed new password"}, headers)
    assert refused.status_code == 403
    assert _form(client, "POST", "/user", {"password": "a keyed new password", "current_password": PASSWORD},
                 headers).status_code == 200


# ---- the key holder's attack ----------------------------------------------------------------------

def _guesses():
    n = 0
    while True:
        n += 1
        yield f"guess number {n}"


def test_a_key_holder_gets_ten_guesses_at_the_current_password_key_logins_and_renames_notwithstanding(
        client, make_account):
    """The attack: with a stolen key, guess current_password (and the new password, which also proves the
    change) ten tickets at a time, then log in with the key or rename the account to start afresh.
    Before: 30 tickets were 60 guesses, and the 61st guess, the right one, answered 200."""
    account = make_account(username="victim")
    guess = _guesses()
    statuses = []
    for round_ in range(3):
        for _ in range(10):
            statuses.append(account.request("POST", "/user", {"current_password": next(guess),
                                                              "password": next(guess)}).status_code)
        assert account.request("PUT", "/session", {"key": account.key}).status_code == 200
        assert account.request("POST", "/user", {"username": f"victim-{round_}"}).status_code == 200

    right = account.request("POST", "/user", {"current_password": PASSWORD, "password": "the attacker's own"})

    assert statuses.count(403) * 2 == throttle.LIMIT           # 10 passwords verified, two a request
    assert set(statuses[throttle.LIMIT // 2:]) == {429}
    assert right.status_code == 429 and "API key" in right.json_body["error"]
    assert _log_in(client, "victim-2", "the attacker's own").status_code in (401, 429)
    # The same guess sent as the new password (the retry allowance) is no way round it either.
    assert account.request("POST", "/user", {"current_password": "x", "password": PASSWORD}).status_code == 429


def test_a_key_holder_guessing_by_login_is_forgiven_once_a_window(client, make_account, time_travel):
    """The login door: guesses by PUT /session, a key login, a rename, more guesses by the new name. A key
    login forgives the window's login tickets once (the owner ending a lock others put), so at most 20
    passwords are verified in 15 minutes, and the right one after them is still a 429."""
    account = make_account(username="target")
    guess = _guesses()
    statuses = []
    for round_ in range(4):
        name = f"target-{round_}"
        assert account.request("POST", "/user", {"username": name}).status_code == 200   # a fresh name window
        for _ in range(10):
            statuses.append(_log_in(client, name, next(guess)).status_code)
        assert account.request("PUT", "/session", {"key": account.key}).status_code == 200

    assert statuses.count(401) == 2 * throttle.LIMIT
    assert _log_in(client, "target-3", PASSWORD).status_code == 429
    time_travel.shift(throttle.WINDOW + 1)                      # the window ends: the owner logs in
    assert _log_in(client, "target-3", PASSWORD).status_code == 200


def test_others_locking_a_name_twice_in_a_window_lock_the_password_login_until_it_ends(client, make_account,
                                                                                        time_travel):
    """The price of the bound above: a tenant who spends the name's guesses twice in one window keeps the
    owner's password login shut for the rest of that window (the key works throughout)."""
    owner = make_account(username="owner")
    for _ in range(10):
        _log_in(client, "owner", "spray")
    assert owner.request("PUT", "/session", {"key": owner.key}).status_code == 200       # ends the lock…
    assert _log_in(client, "owner", PASSWORD).status_code == 200
    for _ in range(10):
        _log_in(client, "owner", "spray")
    owner.request("PUT", "/session", {"key": owner.key})
    for _ in range(10):
        _log_in(client, "owner", "spray")
    assert owner.request("PUT", "/session", {"key": owner.key}).status_code == 200
    assert _log_in(client, "owner", PASSWORD).status_code == 429                          # …once a window
    assert owner.request("GET", "/session").status_code == 200
    time_travel.shift(throttle.WINDOW + 1)
    assert _log_in(client, "owner", PASSWORD).status_code == 200


def test_parallel_guesses_key_logins_and_renames_verify_at_most_ten_current_passwords(live_api, serialized_aws):
    """40 clients at once: guesses at current_password, key logins, renames. However they interleave,
    at most 10 passwords are verified, and the right one sent afterwards is a 429."""
    bearer = {"Authorization": f"Bearer {live_api.key}"}
    guess = iter([f"parallel guess {n}" for n in range(200)])
    jobs = []
    for n in range(40):
        if n % 8 == 3:
            jobs.append(("PUT", "/session", {"key": live_api.key}))
        elif n % 8 == 6:
            jobs.append(("POST", "/user", {"username": f"racer-{n}"}))
        else:
            jobs.append(("POST", "/user", {"current_password": next(guess), "password": next(guess)}))

    def send(job):
        method, path, body = job
        return path, body, requests.request(method, live_api.url + path, json=body, headers=bearer, timeout=120)

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(send, jobs))

    guesses = [answer.status_code for path, body, answer in answers if "current_password" in body]
    others = [answer.status_code for path, body, answer in answers if "current_password" not in body]
    assert set(others) == {200}
    assert set(guesses) <= {403, 429}
    assert guesses.count(403) * 2 <= throttle.LIMIT
    right = requests.post(live_api.url + "/user", json={"current_password": PASSWORD, "password": "mine now"},
                          headers=bearer, timeout=60)
    assert right.status_code == 429
