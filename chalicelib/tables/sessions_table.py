"""SessionsTable: its name and its key. One item per login session, keyed by the SHA-256 digest of the
session's token (chalicelib/identity/sessions.py owns the fields); the by_user index (user_id → token_digest,
keys only) finds an account's sessions to end them."""

from chalicelib.platform.db import Item

NAME = "SessionsTable"


def session_key(digest: str) -> Item:
    """The item of the session whose token has this digest."""
    return {"token_digest": digest}
