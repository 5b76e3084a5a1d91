"""The login throttle: password guesses counted before any password is verified, per login name and per account.

Each guess takes a numbered ticket atomically *before* its password is verified, and only the first
LIMIT tickets of a window are verified, so however many run in parallel, at most LIMIT guesses per
window of WINDOW seconds are ever checked. Two windows count them:

- **the name's**: every login by password with that name (PUT /session), whether an account has it or
  not, so a 429 tells nothing about which names exist. Because login names are unique across projects
  (a 409 on PUT/POST /user says a name is taken somewhere), anyone can find a name and spend its
  tickets; the account's owner ends that lock by logging in with the account key (PUT /session with
  key: chalicelib/identity/auth.py), which is never throttled (160 random bits can't be guessed).
- **the account's**: every password verified against the account, by a login (`logins`) or as the
  `current_password` of POST /user (`changes`). It is keyed by the account's id, so a rename starts
  nothing new, and a key login never ends it: whoever holds the key gets no more guesses at the
  password by logging in with it. A key login forgives the window's login tickets once (the owner
  ending a lock others put on the name, whose guesses count here too), never its `changes`. So the
  account's password is verified at most 2 x LIMIT times a window whatever the doors, LIMIT through
  current_password.
The right password ends both windows.

The items, of AccountsTable, are {pk: "THROTTLE#<login key>", sk: "THROTTLE"} (a name) and
{pk: "USERTHROTTLE#<user id>", sk: "THROTTLE"} (an account); this module owns their shape: attempts
(the tickets taken), logins and changes (the account's tickets by door), forgiven (the login tickets a
key login forgave), window_start, expires_at (TTL).
"""
from chalicelib.platform import clock, db
from chalicelib.platform.db import Item
from chalicelib.platform.errors import TooManyRequests
from chalicelib.tables import accounts_table

LIMIT = 10
WINDOW = 15 * 60
LOGINS = "logins"     # an account's tickets taken by logins by password
CHANGES = "changes"   # an account's tickets taken by POST /user's current_password


def take_ticket(username: str) -> None:
    """Count one password guess of the name before it is verified; 429 when the window's guesses are spent."""
    item = _take(accounts_table.throttle_key(username), None)
    if item is not None:
        raise _locked("too many failed logins for this account: try again in {} s, or log in with the "
                      "account's API key", item)


def take_account_ticket(user_id: int, door: str) -> None:
    """Count one password verified against the account (door: LOGINS or CHANGES) before it is verified;
    429 when the window's guesses are spent."""
    item = _take(accounts_table.account_throttle_key(user_id), door)
    if item is not None:
        raise _locked("too many wrong passwords for this account: try again in {} s (its API key works "
                      "meanwhile)", item)


def _take(key: Item, door: str | None) -> Item | None:
    """Take a ticket of the window at key (counted for door too); None when it may be verified, else the
    window's item.

    The count is one atomic ADD on the window's item (a new window is a conditional put that only one
    of concurrent requests wins; the others add to it), so parallel attempts never share a ticket.
    """
    now = int(clock.now())
    cutoff = now - WINDOW
    counted = f"ADD attempts :one, {door} :one" if door else "ADD attempts :one"
    for _attempt in range(5):
        try:
            item = db.update(accounts_table.NAME, key, counted, expression_values={":one": 1, ":cutoff": cutoff},
                             condition="window_start > :cutoff", return_values="ALL_NEW")
        except db.ConditionFailed:
            try:
                db.put(accounts_table.NAME, {**key, "attempts": 1, **({door: 1} if door else {}), "window_start": now,
                                             "expires_at": now + WINDOW},
                       condition="attribute_not_exists(pk) OR window_start <= :cutoff",
                       expression_values={":cutoff": cutoff})
                return None
            except db.ConditionFailed:
                continue  # another request opened the window first: take a ticket in it
        return item if item["attempts"] - item.get("forgiven", 0) > LIMIT else None
    raise TooManyRequests("too many logins for this account at once: try again in a moment", retry_after=1)


def _locked(message: str, item: Item) -> TooManyRequests:
    retry_after = max(1, int(item["window_start"] + WINDOW - clock.now()) + 1)   # at most the window
    return TooManyRequests(message.format(retry_after), retry_after=retry_after)


def clear(username: str) -> None:
    """End the name's window: a right password, or the account's key, proves its owner."""
    db.delete(accounts_table.NAME, accounts_table.throttle_key(username))


def clear_account(user_id: int) -> None:
    """End the account's window: the right password was given."""
    db.delete(accounts_table.NAME, accounts_table.account_throttle_key(user_id))


def forgive_logins(user_id: int) -> None:
    """A key login: forgive the login tickets of the account's window, once per window (never its changes)."""
    cutoff = int(clock.now()) - WINDOW
    try:
        db.update(accounts_table.NAME, accounts_table.account_throttle_key(user_id), f"SET forgiven = {LOGINS}",
                  expression_values={":cutoff": cutoff},
                  condition=f"window_start > :cutoff AND attribute_exists({LOGINS}) AND attribute_not_exists(forgiven)")
    except db.ConditionFailed:
        pass   # no window, no login in it, or forgiven already this window
