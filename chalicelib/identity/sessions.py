"""Login sessions: random 256-bit tokens, only their digest stored, idle and absolute expiry checked here.

DynamoDB's TTL only cleans up expired items (late, and not at all under moto): every lookup checks
the expiry itself.
"""
import hashlib
import secrets
from typing import NamedTuple

from chalicelib.platform import clock, db
from chalicelib.tables import sessions_table

IDLE_SECONDS = 3600
ABSOLUTE_SECONDS = 12 * 3600
# last_seen is refreshed at most this often, so a busy client doesn't write on every request.
TOUCH_EVERY = 60


class Live(NamedTuple):
    """A live session: its account, its digest, the digest of the account key it was opened with (or None),
    and when it was opened by a password (epoch seconds; None when a key opened it)."""

    project_id: int
    user_id: int
    digest: str
    opened_with: str | None = None
    password_at: int | None = None


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create(project_id: int, user_id: int, opened_with: str | None = None, by_password: bool = False) -> str:
    """A new session for the account; returns the token (the only time it exists in clear).

    opened_with: the digest of the account key that opened it (a key login), so rotating that key ends it.
    by_password: a login by password opened it (then the session records when: password_at).
    """
    token = secrets.token_urlsafe(32)
    now = int(clock.now())
    db.put(sessions_table.NAME, {
        "token_digest": _digest(token), "user_id": user_id, "project_id": project_id,
        "created_at": now, "last_seen": now, "expires_at": now + IDLE_SECONDS, "opened_with": opened_with,
        "password_at": now if by_password else None,
    })
    return token


def resolve(token: str | None) -> Live | None:
    """The Live session of a token, or None (expired ones are deleted)."""
    if not token or len(token) > 128:
        return None
    digest = _digest(token)
    item = db.get(sessions_table.NAME, sessions_table.session_key(digest))
    if not item:
        return None
    now = int(clock.now())
    if now - item["last_seen"] >= IDLE_SECONDS or now - item["created_at"] >= ABSOLUTE_SECONDS:
        db.delete(sessions_table.NAME, sessions_table.session_key(digest))
        return None
    if now - item["last_seen"] >= TOUCH_EVERY:
        expires = min(now + IDLE_SECONDS, item["created_at"] + ABSOLUTE_SECONDS)
        db.update(sessions_table.NAME, sessions_table.session_key(digest), "SET last_seen = :now, expires_at = :exp",
                  expression_values={":now": now, ":exp": expires})
    password_at = item.get("password_at")
    return Live(item["project_id"], item["user_id"], digest, item.get("opened_with"),
                int(password_at) if password_at is not None else None)


def end(digest: str) -> None:
    """End one session (logout)."""
    db.delete(sessions_table.NAME, sessions_table.session_key(digest))


def end_token(token: str | None) -> None:
    """End the session of a token, whoever's it is (its holder is logging out)."""
    if token and len(token) <= 128:
        end(_digest(token))


def end_all(user_id: int, keep_digest: str | None = None, opened_with: str | None = None) -> None:
    """End every session of an account, except keep_digest (the one changing its password).

    With opened_with, only the sessions opened with that key (a key rotation). The index is eventually
    consistent, so a session created a moment ago may be missed: authentication checks the account
    and key of every session too (chalicelib/identity/auth.py).
    """
    for item in db.query(sessions_table.NAME, "user_id = :u", {":u": user_id}, index="by_user"):
        if item["token_digest"] == keep_digest:
            continue
        if opened_with is not None:  # the index holds keys only
            session = db.get(sessions_table.NAME, sessions_table.session_key(item["token_digest"]))
            if not session or session.get("opened_with") != opened_with:
                continue
        db.delete(sessions_table.NAME, sessions_table.session_key(item["token_digest"]))
