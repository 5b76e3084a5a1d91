"""Who is calling: logging in (password or key) and authenticating each request.

Password guesses go through the login throttle (chalicelib/identity/throttle.py): a ticket of the name's
window and of the account's is taken before a password is verified, and a key login, never throttled,
ends a lock others put on the name. The current password asked by POST /user to change the password
takes tickets of the account's window, which neither a key login nor a rename ends. A session opened by
password less than FRESH_LOGIN seconds ago changes the password without it (the guide's flow: log in,
then POST /user password=…): that login just proved the password.
"""
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

from chalicelib.identity import accounts, passwords, scoped_keys, sessions, throttle
from chalicelib.platform import clock, config, validation
from chalicelib.platform.errors import BadRequest, Forbidden, NotFound, Unauthorized

_LOGIN_FAILED = "cannot log in: unknown username or wrong password"
FRESH_LOGIN = 600   # seconds after a login by password in which its session changes the password without current_password


@dataclass(frozen=True)
class Caller:
    """Who a request comes from: an account (by its key, or by session: session_digest set), or a scoped key.

    A scoped key's caller has user_id None and its scope, key id and label set. password_at: when the
    session was opened by a password (None for a key, or a session a key opened).
    """

    project_id: int
    user_id: int | None = None
    session_digest: str | None = None
    scope: str | None = None
    key_id: int | None = None
    label: str | None = None
    password_at: int | None = None


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
        throttle.forgive_logins(user_id)   # once a window; the current_password guesses stay counted
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
            raise Unauthorized(_LOGIN_FAILED)
        throttle.take_account_ticket(found.user_id, throttle.LOGINS)
        if not accounts.check_password(found.project_id, found.user_id, password):
            raise Unauthorized(_LOGIN_FAILED)
        throttle.clear(username)
        throttle.clear_account(found.user_id)
        project_id, user_id = found
        session_key = None
    return Login({"uuid": user_id}, sessions.create(project_id, user_id, opened_with=session_key,
                                                    by_password=session_key is None))


def update_account(caller: Caller, username: str | None = None, password: str | None = None, email: str | None = None,
                   current_password: object = None) -> dict:
    """POST /user: a new password needs the current one, checked under the throttle, but from a session
    opened by password less than FRESH_LOGIN seconds ago."""
    user_id = caller.user_id
    if user_id is None:   # a scoped key: web.py refuses it on this route before it runs
        raise Forbidden("changing an account needs the account's own credentials")
    if password is not None:
        validation.password(password, passwords.MIN_LENGTH, passwords.MAX_LENGTH)  # a bad new one: 400 first
        if current_password is not None:
            _prove_current(caller.project_id, user_id, current_password, password)
        elif not _fresh_password_login(caller):
            raise Forbidden(f"changing the password needs current_password (the password in use now), unless "
                            f"this session was opened with the password in the last {FRESH_LOGIN // 60} minutes")
    return accounts.update_account(caller.project_id, user_id, caller.session_digest,
                                   username=username, password=password, email=email)


def _fresh_password_login(caller: Caller) -> bool:
    """True for a session opened by password less than FRESH_LOGIN seconds ago."""
    return caller.password_at is not None and clock.now() - caller.password_at < FRESH_LOGIN


def _prove_current(project_id: int, user_id: int, current_password: object, password: str) -> None:
    """Forbidden unless current_password is the account's password; each password verified takes a ticket
    of the account's window first (429 when they are spent).

    A change sent again after a 503 or a lost answer may have been applied already: the new password is
    then the account's one, which proves as much as the old one did (and completes what was half-done,
    ending the other sessions). It is verified only when the current one fails, with a ticket of its own.
    """
    if not isinstance(current_password, str):
        raise BadRequest("current_password must be text")
    throttle.take_account_ticket(user_id, throttle.CHANGES)
    proved = len(current_password) <= passwords.MAX_LENGTH and accounts.check_password(project_id, user_id,
                                                                                        current_password)
    if not proved:
        throttle.take_account_ticket(user_id, throttle.CHANGES)
        proved = accounts.check_password(project_id, user_id, password)
    if not proved:
        raise Forbidden("current_password is not the account's password: the password was not changed")
    throttle.clear_account(user_id)


NOT_AUTHENTICATED = ("not authenticated: send the API key as Authorization: Bearer <key> (or X-API-Key: <key>), "
                     "or log in with PUT /session")


def authenticate(headers: Mapping[str, str], cookies: Mapping[str, str]) -> Caller:
    """The Caller of a request, from X-API-Key / Authorization: Bearer, else the session cookie."""
    key = headers.get("x-api-key")
    scheme_problem = None
    if key is None and headers.get("authorization") is not None:
        key, scheme_problem = _bearer(headers["authorization"])
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
            return Caller(live.project_id, live.user_id, live.digest, password_at=live.password_at)
        if live:
            sessions.end(live.digest)
        if scheme_problem is None:
            raise Unauthorized("the session has expired or ended: log in again with PUT /session")
    raise Unauthorized(scheme_problem or NOT_AUTHENTICATED)


def _bearer(authorization: str) -> tuple[str | None, str | None]:
    """(the key of an Authorization header, None) for the Bearer scheme, else (None, what is wrong with it)."""
    scheme, _, rest = authorization.strip().partition(" ")
    if scheme.lower() == "bearer":
        return rest.strip(), None
    if not rest.strip():   # a lone word: most likely the key without its scheme
        return None, ("the Authorization header has no scheme: send the API key as Authorization: Bearer <key>")
    return None, (f"the Authorization header's scheme must be Bearer, not {scheme[:20]!r}: send the API key as "
                  f"Authorization: Bearer <key>")


def logout(cookies: Mapping[str, str]) -> None:
    """End the session of the cookie sent (the caller's own when the cookie authenticated the call, and
    also when a key did)."""
    token = cookies.get(config.session_cookie_name())
    if token:
        sessions.end_token(token)
