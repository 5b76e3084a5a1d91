"""Who is calling: logging in (password or key) and authenticating each request.

Password guesses go through the login throttle (chalicelib/identity/throttle.py): a ticket is taken before a
password is verified, and a key login, never throttled, ends a lock others put on the name. The
current password asked by POST /user to change the password goes through the same tickets.
"""
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

from chalicelib.identity import accounts, passwords, scoped_keys, sessions, throttle
from chalicelib.platform import config, validation
from chalicelib.platform.errors import BadRequest, Forbidden, NotFound, Unauthorized

_LOGIN_FAILED = "cannot log in: unknown username or wrong password"


@dataclass(frozen=True)
class Caller:
    """Who a request comes from: an account (by its key, or by session: session_digest set), or a scoped key.

    A scoped key's caller has user_id None and its scope, key id and label set.
    """

    project_id: int
    user_id: int | None = None
    session_digest: str | None = None
    scope: str | None = None
    key_id: int | None = None
    label: str | None = None


class Login(NamedTuple):
    """A login: the answer of PUT /session ({"uuid": user id}) and the new session's token (for the cookie)."""

    answer: dict
    token: str


def login(username: object = None, password: object = None, key: object = None) -> Login:
    """Log in by key, or by username and password: the answer and the session token (a Login)."""
    if key is not None:
        if not isinstance(key, str):
            raise BadRequest("key must be text")
        found = accounts.find_by_key(key)
        if not found:
            raise Unauthorized("cannot log in: that API key is not valid (scoped keys of /keys open no "
                               "session: send them as X-API-Key with each request)")
        project_id, user_id = found
        session_key = accounts.key_digest(key)
        try:  # the account's own key proves its owner: it ends a lock others put on the password login
            throttle.clear(accounts.account(project_id, user_id)["username"])
        except NotFound:  # the account went meanwhile: the session below is refused on first use anyway
            pass
    else:
        if username is None or password is None:
            raise BadRequest("log in with username and password, or with key")
        if not isinstance(username, str) or not isinstance(password, str):
            raise BadRequest("username and password must be text")
        if (len(username) > validation.USERNAME_MAX * 4 or len(password) > passwords.MAX_LENGTH
                or not validation.encodable(username)):
            raise Unauthorized(_LOGIN_FAILED)
        throttle.take_ticket(username)
        found = accounts.find_login(username)
        if not found:
            passwords.burn_time(password)
        if not found or not accounts.check_password(found.project_id, found.user_id, password):
            raise Unauthorized(_LOGIN_FAILED)
        throttle.clear(username)
        project_id, user_id = found
        session_key = None
    return Login({"uuid": user_id}, sessions.create(project_id, user_id, opened_with=session_key))


def update_account(caller: Caller, username: str | None = None, password: str | None = None, email: str | None = None,
                   current_password: object = None) -> dict:
    """POST /user: a new password needs the current one (whatever the credential), checked under the throttle."""
    user_id = caller.user_id
    if user_id is None:   # a scoped key: web.py refuses it on this route before it runs
        raise Forbidden("changing an account needs the account's own credentials")
    if password is not None:
        validation.password(password, passwords.MIN_LENGTH, passwords.MAX_LENGTH)  # a bad new one: 400 first
        if current_password is None:
            raise Forbidden("changing the password needs current_password (the password in use now)")
        if not isinstance(current_password, str):
            raise BadRequest("current_password must be text")
        name = accounts.account(caller.project_id, user_id)["username"]
        throttle.take_ticket(name)
        # A change sent again after a 503 or a lost answer may have been applied already: the new password
        # is then the account's one, which proves as much as the old one did (and completes what was
        # half-done, ending the other sessions). A guess of either costs one throttle ticket.
        if len(current_password) > passwords.MAX_LENGTH or not (
                accounts.check_password(caller.project_id, user_id, current_password)
                or accounts.check_password(caller.project_id, user_id, password)):
            raise Forbidden("current_password is not the account's password: the password was not changed")
        throttle.clear(name)
    return accounts.update_account(caller.project_id, user_id, caller.session_digest,
                                   username=username, password=password, email=email)


def authenticate(headers: Mapping[str, str], cookies: Mapping[str, str]) -> Caller:
    """The Caller of a request, from X-API-Key / Authorization: Bearer, else the session cookie."""
    key = headers.get("x-api-key")
    authorization = headers.get("authorization", "")
    if key is None and authorization[:7].lower() == "bearer ":
        key = authorization[7:].strip()
    if key is not None:
        found = accounts.find_by_key(key)
        if found:
            return Caller(found.project_id, found.user_id)
        scoped = scoped_keys.find(key)
        if scoped:
            return Caller(scoped.project_id, scope=scoped.scope, key_id=scoped.key_id, label=scoped.label)
        raise Unauthorized("the API key is not valid: get yours with GET /key, or log in again")
    token = cookies.get(config.session_cookie_name())
    if token:
        live = sessions.resolve(token)
        # The account must still exist, and a session opened with a key dies with that key: this read
        # closes the race of a login with DELETE /user or POST /key (whose clean-up query may miss it).
        if live and accounts.session_allowed(live.project_id, live.user_id, live.opened_with):
            return Caller(live.project_id, live.user_id, live.digest)
        if live:
            sessions.end(live.digest)
        raise Unauthorized("the session has expired or ended: log in again with PUT /session")
    raise Unauthorized("not authenticated: log in with PUT /session, or send X-API-Key")


def logout(cookies: Mapping[str, str]) -> None:
    """End the session of the cookie sent (the caller's own when the cookie authenticated the call, and
    also when a key did)."""
    token = cookies.get(config.session_cookie_name())
    if token:
        sessions.end_token(token)
