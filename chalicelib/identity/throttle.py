"""The login throttle: password guesses per login name, counted before any password is verified.

Each attempt takes a numbered ticket atomically *before* its password is verified, and only tickets
1..LIMIT of a window are verified, so at most 10 guesses per name per 15 minutes are ever checked,
however many run in parallel. Because login names are unique across projects (a 409 on PUT/POST
/user says a name is taken somewhere), anyone can find a name and spend its 10 tickets; the
account's owner then ends that lock at once by logging in with the account key (PUT /session with
key: chalicelib/identity/auth.py), which is never throttled (160 random bits can't be guessed).

The item is {pk: "THROTTLE#<login key>", sk: "THROTTLE"} of AccountsTable; this module owns its
shape: attempts (the tickets taken), window_start, expires_at (TTL).
"""
from chalicelib.platform import clock, db
from chalicelib.platform.errors import TooManyRequests
from chalicelib.tables import accounts_table

LIMIT = 10
WINDOW = 15 * 60


def take_ticket(username: str) -> None:
    """Count one password guess of the name before it is verified; 429 when the window's guesses are spent.

    The count is one atomic ADD on the window's item (a new window is a conditional put that only one
    of concurrent requests wins; the others add to it), so parallel attempts never share a ticket.
    """
    now = int(clock.now())
    key = accounts_table.throttle_key(username)
    cutoff = now - WINDOW
    for _attempt in range(5):
        try:
            item = db.update(accounts_table.NAME, key, "ADD attempts :one", expression_values={
                ":one": 1, ":cutoff": cutoff}, condition="window_start > :cutoff", return_values="ALL_NEW")
        except db.ConditionFailed:
            try:
                db.put(accounts_table.NAME, {**key, "attempts": 1, "window_start": now, "expires_at": now + WINDOW},
                       condition="attribute_not_exists(pk) OR window_start <= :cutoff",
                       expression_values={":cutoff": cutoff})
                return
            except db.ConditionFailed:
                continue  # another request opened the window first: take a ticket in it
        if item["attempts"] > LIMIT:
            retry_after = max(1, int(item["window_start"] + WINDOW - clock.now()) + 1)   # at most the window
            raise TooManyRequests(f"too many failed logins for this account: try again in {retry_after} s, "
                                  f"or log in with the account's API key", retry_after=retry_after)
        return
    raise TooManyRequests("too many logins for this account at once: try again in a moment", retry_after=1)


def clear(username: str) -> None:
    """End the name's window: a right password, or the account's key, proves its owner."""
    db.delete(accounts_table.NAME, accounts_table.throttle_key(username))
