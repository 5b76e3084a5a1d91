"""Projects and their user accounts: creation, lookup, updates, deletion, and each account's API key.

Login names are unique case-insensitively across all projects, enforced by a LOGIN# item written in
the same transaction as the account (never read-then-write), so concurrent creates can't both win.
"""
from collections.abc import Iterable
from datetime import datetime, tzinfo
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from chalicelib.identity import apikeys, passwords, sessions
from chalicelib.platform import answers, clock, db, validation
from chalicelib.platform.db import Item
from chalicelib.platform.errors import BadRequest, Conflict, NotFound, ServiceUnavailable
from chalicelib.tables import accounts_table


class AccountRef(NamedTuple):
    """Which account: what a login name or an account key finds."""

    project_id: int
    user_id: int


class NewAccount(NamedTuple):
    """A created account: its GET /session view and its API key (the only time the key is returned)."""

    account: dict
    key: str

# ---- projects ---------------------------------------------------------------------------------

def create_project(name: object, time_zone: str = "UTC") -> dict[str, Any]:
    """A new project (site) with its own integer id; names are unique case-insensitively."""
    name = validation.name("project name", name)
    try:
        clock.zone(time_zone)
    except ValueError as error:
        raise BadRequest(str(error)) from None
    project_id = accounts_table.next_id("project")
    project = {"project_id": project_id, "name": name, "timezone": time_zone,
               "created": clock.iso_utc(timespec="auto")}
    try:
        db.transact({
            "project_name": ("put", accounts_table.NAME, {
                "item": {**accounts_table.project_name_key(name), "project_id": project_id},
                "condition": "attribute_not_exists(pk)"}),
            "project": ("put", accounts_table.NAME, {"item": {**accounts_table.project_key(project_id), **project}}),
        })
    except db.ConditionFailed:
        raise Conflict(f"a project named {name!r} already exists") from None
    return project


def get_project(project_id: int) -> Item:
    """The project record, or NotFound."""
    item = db.get(accounts_table.NAME, accounts_table.project_key(project_id))
    if not item:
        raise NotFound(f"project {project_id} does not exist")
    return item


def find_project(name: str) -> Item | None:
    """The project named name (case-insensitive), or None."""
    item = db.get(accounts_table.NAME, accounts_table.project_name_key(name))
    return get_project(item["project_id"]) if item else None


def project_zone(project_id: int) -> ZoneInfo:
    """The ZoneInfo the project's times are shown in."""
    return clock.zone(get_project(project_id).get("timezone", "UTC"))


def project_zones(project_ids: Iterable[int]) -> dict[int, ZoneInfo]:
    """{project id: ZoneInfo} of many projects at once (one BatchGetItem per 100; projects that do not exist
    are left out): the alert evaluator's, for a batch of projects."""
    keys = [accounts_table.project_key(project_id) for project_id in set(project_ids)]
    return {item["project_id"]: clock.zone(item.get("timezone", "UTC"))
            for item in db.batch_get(accounts_table.NAME, keys, consistent=False)}


# ---- accounts ---------------------------------------------------------------------------------

def _account_view(user: Item, project: Item) -> dict[str, Any]:
    """The GET /session shape of an account."""
    zone = clock.zone(project.get("timezone", "UTC"))
    return {
        "uuid": user["user_id"], "project": user["project_id"], "username": user["username"],
        "email": user["email"], "joined": _local(user["joined"], zone), "project_name": project["name"],
        "timezone": project.get("timezone", "UTC"),
    }


def _public_view(user: Item, zone: tzinfo) -> dict[str, Any]:
    """The GET /user shape: what other users of the project may see."""
    return {"uuid": user["user_id"], "username": user["username"], "email": user["email"],
            "joined": _local(user["joined"], zone)}


def _local(iso_utc: str, zone: tzinfo) -> datetime:
    return datetime.fromisoformat(iso_utc).astimezone(zone).replace(tzinfo=None, microsecond=0)


def _user(project_id: int, user_id: int) -> Item:
    item = db.get(accounts_table.NAME, accounts_table.user_key(project_id, user_id))
    if not item:
        raise NotFound("this account no longer exists")
    return item


def create_user(project_id: int, username: object, password: object, email: object,
                created_by: int | None = None) -> NewAccount:
    """A new account in the project, with its own API key: its NewAccount (view, key).

    created_by (the account asking, when one does) makes the create safe to send again: the same
    request from the same account after a lost answer gets the account it created, not a 409.
    """
    username = validation.name("username", username, validation.USERNAME_MAX)
    email = validation.email(email)
    password = validation.password(password, passwords.MIN_LENGTH, passwords.MAX_LENGTH)
    project = get_project(project_id)
    user_id = accounts_table.next_id("user")
    key = apikeys.new_key()
    digest = apikeys.digest(key)
    user = {
        **accounts_table.user_key(project_id, user_id), "user_id": user_id, "project_id": project_id,
        "username": username, "email": email, "joined": clock.iso_utc(),
        "password_hash": passwords.hash_password(password),
        "key_digest": digest, "key_ciphertext": apikeys.encrypt(key, user_id), "created_by": created_by,
    }
    try:
        db.transact({
            "login": ("put", accounts_table.NAME, {
                "item": {**accounts_table.login_name_key(username), "project_id": project_id, "user_id": user_id},
                "condition": "attribute_not_exists(pk)"}),
            "api_key": ("put", accounts_table.NAME, {
                "item": {**accounts_table.api_key_key(digest), "project_id": project_id, "user_id": user_id},
                "condition": "attribute_not_exists(pk)"}),
            "user": ("put", accounts_table.NAME, {"item": user}),
        })
    except db.ConditionFailed:
        earlier = created_by is not None and _same_creation(project_id, username, email, password, created_by)
        if earlier:   # this request sent again after its answer was lost: the account it created
            return NewAccount(_account_view(earlier, project),
                              apikeys.decrypt(earlier["key_ciphertext"], earlier["user_id"]))
        raise Conflict(f"the username {username!r} is taken: choose another") from None
    return NewAccount(_account_view(user, project), key)


RETRY_WINDOW = 600   # seconds: a create sent again within this time may be the same request


def _same_creation(project_id: int, username: str, email: str, password: str, created_by: int) -> Item | None:
    """The account a PUT /user exactly like this one created moments ago (same creator, project, name,
    email and password), or None: a create retried after a 503 or a lost answer gets its account, not a
    409. Only its creator, who chose the password, can match it: no password oracle for anyone else."""
    login = db.get(accounts_table.NAME, accounts_table.login_name_key(username))
    if not login or login["project_id"] != project_id:
        return None
    user = db.get(accounts_table.NAME, accounts_table.user_key(project_id, login["user_id"]))
    if not user or user.get("created_by") != created_by or user["username"] != username or user["email"] != email:
        return None
    if clock.utcnow().timestamp() - datetime.fromisoformat(user["joined"]).timestamp() > RETRY_WINDOW:
        return None
    return user if passwords.verify(user["password_hash"], password) else None


def account(project_id: int, user_id: int) -> dict[str, Any]:
    """The GET /session view of an account."""
    return _account_view(_user(project_id, user_id), get_project(project_id))


def list_users(project_id: int) -> answers.Bounded:
    """GET /user: the public view of every account of the project, by id (checked against the answer's
    bounds before it is rendered)."""
    zone = project_zone(project_id)
    items = accounts_table.project_items(project_id, accounts_table.USER)
    return answers.listing([_public_view(item, zone) for item in items],
                           "the project has more accounts than one answer lists")


def user_ids(project_id: int) -> set[int]:
    """The ids of the project's accounts."""
    return {item["user_id"] for item in accounts_table.project_items(project_id, accounts_table.USER)}


def update_account(project_id: int, user_id: int, session_digest: str | None = None, username: str | None = None,
                   password: str | None = None, email: str | None = None) -> dict[str, Any]:
    """Change any of username, password, email; a password change ends the account's other sessions."""
    user = _user(project_id, user_id)   # a 404 before a password is hashed or a session ended
    changes: dict[str, Any] = {}
    if email is not None:
        changes["email"] = validation.email(email)
    if password is not None:
        changes["password_hash"] = passwords.hash_password(
            validation.password(password, passwords.MIN_LENGTH, passwords.MAX_LENGTH))
    if username is not None:
        changes["username"] = validation.name("username", username, validation.USERNAME_MAX)
    if password is not None:   # first: a failure after this leaves the old password and fewer sessions, never
        sessions.end_all(user_id, keep_digest=session_digest)   # a new password with the old sessions alive
    if changes:
        _write_changes(project_id, user, changes)
    if password is not None:   # again: sessions opened with the old password while it changed
        sessions.end_all(user_id, keep_digest=session_digest)
    return account(project_id, user_id)


# Times a change is written again after another request renamed the same account between its read and write.
CHANGE_ATTEMPTS = 5


def _write_changes(project_id: int, user: Item, changes: dict[str, Any]) -> None:
    """One transaction: the account's fields and, for a rename, its login name moved (user: the account
    as read).

    The write holds only if the account still has the name it was read with. Two renames of one account
    at once (two clients of one key) are then written one after the other, the last one staying, as if
    sent in turn; the one that lost reads the account again and tries again, never a 404 for an account
    that exists.
    """
    user_id = user["user_id"]
    expression, names, vals = db.set_fields(changes)
    for attempt in range(CHANGE_ATTEMPTS):
        if attempt:
            user = _user(project_id, user_id)
        operations: dict[str, tuple[str, str, dict[str, Any]]] = {}
        if "username" in changes:
            old_login = accounts_table.login_name_key(user["username"])
            new_login = accounts_table.login_name_key(changes["username"])
            if old_login != new_login:
                operations["new_login"] = ("put", accounts_table.NAME, {
                    "item": {**new_login, "project_id": project_id, "user_id": user_id},
                    "condition": "attribute_not_exists(pk)"})
                operations["old_login"] = ("delete", accounts_table.NAME, {
                    "key": old_login, "condition": "user_id = :u", "values": {":u": user_id}})
        operations["user"] = ("update", accounts_table.NAME, {
            "key": accounts_table.user_key(project_id, user_id), "expression": expression,
            "names": {**names, "#name": "username"}, "values": {**vals, ":read_name": user["username"]},
            "condition": "attribute_exists(pk) AND #name = :read_name"})
        try:
            db.transact(operations)
            return
        except db.ConditionFailed as failure:
            if "new_login" in failure.failed and find_login(changes["username"]) != AccountRef(project_id, user_id):
                raise Conflict(f"the username {changes['username']!r} is taken: choose another") from None
            # renamed (or deleted) meanwhile: read it again; _user says 404 when it is gone
    raise ServiceUnavailable("the account is being changed by other requests at the same time: try again", 1)


def delete_account(project_id: int, user_id: int) -> None:
    """Delete the account, its login name and key, and end all its sessions.

    Sessions end first: a failure after that leaves the account whole (the caller logs in and sends
    the delete again), never a deleted account whose sessions still authenticate.
    """
    user = _user(project_id, user_id)
    sessions.end_all(user_id)
    db.transact({
        "user": ("delete", accounts_table.NAME, {"key": accounts_table.user_key(project_id, user_id)}),
        "login": ("delete", accounts_table.NAME, {"key": accounts_table.login_name_key(user["username"])}),
        "api_key": ("delete", accounts_table.NAME, {"key": accounts_table.api_key_key(user["key_digest"])}),
    })
    sessions.end_all(user_id)


def find_login(username: object) -> AccountRef | None:
    """The AccountRef of a login name, or None."""
    if not isinstance(username, str) or not username or len(username) > validation.USERNAME_MAX * 4:
        return None
    item = db.get(accounts_table.NAME, accounts_table.login_name_key(username.strip()))
    return AccountRef(item["project_id"], item["user_id"]) if item else None


def check_password(project_id: int, user_id: int, password: str) -> bool:
    """True when password is the account's; upgrades the stored hash when the parameters have risen."""
    user = db.get(accounts_table.NAME, accounts_table.user_key(project_id, user_id))
    if not user or not passwords.verify(user["password_hash"], password):
        return False
    if passwords.needs_rehash(user["password_hash"]):
        db.update(accounts_table.NAME, accounts_table.user_key(project_id, user_id), "SET password_hash = :h",
                  expression_values={":h": passwords.hash_password(password)}, condition="attribute_exists(pk)")
    return True


# ---- API keys ---------------------------------------------------------------------------------

def find_by_key(key: object) -> AccountRef | None:
    """The AccountRef owning an API key, or None."""
    if not isinstance(key, str) or not apikeys.looks_like_key(key):
        return None
    item = db.get(accounts_table.NAME, accounts_table.api_key_key(apikeys.digest(key)))
    return AccountRef(item["project_id"], item["user_id"]) if item else None


def key_digest(key: str) -> str:
    """The stored digest of an account key (what a session opened with it records)."""
    return apikeys.digest(key)


def session_allowed(project_id: int, user_id: int, opened_with: str | None = None) -> bool:
    """True while the account exists and, for a session opened with a key, that key is still the account's."""
    user = db.get(accounts_table.NAME, accounts_table.user_key(project_id, user_id))
    return user is not None and (opened_with is None or user["key_digest"] == opened_with)


def current_key(project_id: int, user_id: int) -> dict[str, str]:
    """The account's API key, decrypted from its stored copy."""
    user = _user(project_id, user_id)
    return {"key": apikeys.decrypt(user["key_ciphertext"], user_id)}


def regenerate_key(project_id: int, user_id: int) -> dict[str, str]:
    """A new API key for the account; the old one stops working in the same transaction."""
    user = _user(project_id, user_id)
    key = apikeys.new_key()
    digest = apikeys.digest(key)
    try:
        db.transact({
            "old_key": ("delete", accounts_table.NAME, {"key": accounts_table.api_key_key(user["key_digest"])}),
            "new_key": ("put", accounts_table.NAME, {
                "item": {**accounts_table.api_key_key(digest), "project_id": project_id, "user_id": user_id},
                "condition": "attribute_not_exists(pk)"}),
            "user": ("update", accounts_table.NAME, {"key": accounts_table.user_key(project_id, user_id),
                                                     "expression": "SET key_digest = :d, key_ciphertext = :c",
                                                     "condition": "key_digest = :old",
                                                     "values": {":d": digest, ":c": apikeys.encrypt(key, user_id),
                                                                ":old": user["key_digest"]}}),
        })
    except db.ConditionFailed:
        raise Conflict("the key was changed by another request at the same time: try again") from None
    sessions.end_all(user_id, opened_with=user["key_digest"])  # sessions opened with the old key end with it
    return {"key": key}
