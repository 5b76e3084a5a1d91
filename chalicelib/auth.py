"""Who is calling: logging in (password or key, with login throttling) and authenticating each request."""
from dataclasses import dataclass

from chalicelib import accounts, clock, config, db, passwords, sessions, validation
from chalicelib.errors import BadRequest, TooManyRequests, Unauthorized

THROTTLE_LIMIT = 10
THROTTLE_WINDOW = 15 * 60
_LOGIN_FAILED = "cannot log in: unknown username or wrong password"


@dataclass(frozen=True)
class Caller:
    """The authenticated account of a request; session_digest is set when it came by cookie."""

    project_id: int
    user_id: int
    session_digest: str | None = None


def _throttle_key(username):
    # Stripped like the login lookup (accounts.find_login), so " alice" counts against "alice".
    return {"pk": "THROTTLE#" + validation.login_key(username.strip()), "sk": "THROTTLE"}


def _check_throttle(username):
    item = db.get("AccountsTable", _throttle_key(username))
    if not item:
        return
    retry_after = item["window_start"] + THROTTLE_WINDOW - clock.now()
    if item["failures"] >= THROTTLE_LIMIT and retry_after > 0:
        raise TooManyRequests(f"too many failed logins for this account: try again in {int(retry_after) + 1} s",
                              retry_after=int(retry_after) + 1)


def _count_failure(username):
    now = int(clock.now())
    key = _throttle_key(username)
    try:
        db.update("AccountsTable", key, "ADD failures :one", expression_values={
            ":one": 1, ":cutoff": now - THROTTLE_WINDOW}, condition="window_start > :cutoff")
    except db.ConditionFailed:
        db.put("AccountsTable", {**key, "failures": 1, "window_start": now,
                                 "expires_at": now + THROTTLE_WINDOW})


def login(username=None, password=None, key=None):
    """Log in by key, or by username and password; returns ({"uuid": id}, session token)."""
    if key is not None:
        if not isinstance(key, str):
            raise BadRequest("key must be text")
        found = accounts.find_by_key(key)
        if not found:
            raise Unauthorized("cannot log in: that API key is not valid")
    else:
        if username is None or password is None:
            raise BadRequest("log in with username and password, or with key")
        if not isinstance(username, str) or not isinstance(password, str):
            raise BadRequest("username and password must be text")
        if (len(username) > validation.USERNAME_MAX * 4 or len(password) > passwords.MAX_LENGTH
                or not validation.encodable(username)):
            raise Unauthorized(_LOGIN_FAILED)
        _check_throttle(username)
        found = accounts.find_login(username)
        if not found:
            passwords.burn_time(password)
        if not found or not accounts.check_password(*found, password):
            _count_failure(username)
            raise Unauthorized(_LOGIN_FAILED)
        db.delete("AccountsTable", _throttle_key(username))
    project_id, user_id = found
    return {"uuid": user_id}, sessions.create(project_id, user_id)


def authenticate(headers, cookies):
    """The Caller of a request, from X-API-Key / Authorization: Bearer, else the session cookie."""
    key = headers.get("x-api-key")
    authorization = headers.get("authorization", "")
    if key is None and authorization[:7].lower() == "bearer ":
        key = authorization[7:].strip()
    if key is not None:
        found = accounts.find_by_key(key)
        if not found:
            raise Unauthorized("the API key is not valid: get yours with GET /key, or log in again")
        return Caller(*found)
    token = cookies.get(config.session_cookie_name())
    if token:
        live = sessions.resolve(token)
        if live:
            return Caller(*live)
        raise Unauthorized("the session has expired or ended: log in again with PUT /session")
    raise Unauthorized("not authenticated: log in with PUT /session, or send X-API-Key")


def logout(caller):
    """End the caller's session (a key-authenticated caller has none to end)."""
    if caller.session_digest:
        sessions.end(caller.session_digest)
