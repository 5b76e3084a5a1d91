"""Scoped keys (/keys): a project's keys that may call only the routes of one scope, for site boxes and dashboards.

An account key (chalicelib/identity/accounts.py) can do everything its account can; a scoped key can only push
(`ingest`: PUT /point, POST /data, PUT /status) or only read (`read`: the GET routes of data, files,
charts and status). Routes declare the scopes that may call them (chalicelib/platform/web.py Api.route).

Keys belong to the project, not to the account that made them (the site's agent keeps working when
the integrator who commissioned it leaves). Each key is two items of AccountsTable, written and
deleted in one transaction:
- the lookup item {pk: "SCOPEDKEY#<sha256 of the key>", sk: "SCOPEDKEY"}: project, id, scope, label,
  last_used; authentication reads it (consistently, so a deleted key stops at once);
- the listing item {pk: "PROJECT#<project>", sk: "SCOPEDKEY#<id>"}: id, label, scope, created, the
  digest (to find the lookup item); GET /keys queries these.
The project's count of keys (n of {pk: "PROJECT#<project>", sk: "COUNT#scopedkeys"}) moves in the same
transactions, under the condition n < MAX_KEYS, so parallel creations never pass the cap.
The key itself is shown once (PUT /keys) and never stored: a lost key is revoked and replaced.
last_used is written at most once a minute per key (TOUCH_EVERY), so a busy agent does not write on
every request.
"""
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any

from chalicelib.identity import apikeys
from chalicelib.platform import clock, db, validation
from chalicelib.platform.db import Item
from chalicelib.platform.errors import BadRequest, Conflict, NotFound
from chalicelib.tables import accounts_table

SCOPES = ("ingest", "read")
MAX_KEYS = 100          # per project: GET /keys reads one item per key
LABEL_MAX = 64
TOUCH_EVERY = 60


@dataclass(frozen=True)
class ScopedKey:
    """The key of a request, as authentication found it."""

    project_id: int
    key_id: int
    scope: str
    label: str


def _listed(project_id: int) -> list[Item]:
    return list(accounts_table.project_items(project_id, accounts_table.SCOPED_KEY, consistent=True))


def _local(epoch: float | None, zone: tzinfo) -> datetime | None:
    return clock.local(epoch, zone) if epoch is not None else None


def create(project_id: int, label: object, scope: object, zone: tzinfo,
           created_by: int | None = None) -> dict[str, Any]:
    """PUT /keys: a new key of the project; the answer is the only time the key exists in clear."""
    label = validation.name("label", label, LABEL_MAX)
    if scope is None:
        raise BadRequest("scope is required: ingest (for an edge agent) or read (for a dashboard)")
    if not isinstance(scope, str) or scope.strip().lower() not in SCOPES:
        raise BadRequest("scope must be ingest (PUT /point, POST /data, PUT /status) or read (the GET routes "
                         "of data, files, charts and status)")
    scope = scope.strip().lower()
    _count_from_listing(project_id)
    key = apikeys.new_key()
    digest = apikeys.digest(key)
    key_id = accounts_table.next_id("scoped_key")
    now = int(clock.now())
    try:
        db.transact({
            "lookup": ("put", accounts_table.NAME, {
                "item": {**accounts_table.scoped_key_lookup_key(digest), "project_id": project_id, "key_id": key_id,
                         "scope": scope, "label": label},
                "condition": "attribute_not_exists(pk)"}),
            "listing": ("put", accounts_table.NAME, {
                "item": {**accounts_table.scoped_key_listing_key(project_id, key_id), "key_id": key_id,
                         "label": label, "scope": scope, "created": now, "digest": digest, "created_by": created_by},
                "condition": "attribute_not_exists(pk)"}),
            "count": ("update", accounts_table.NAME, {
                "key": accounts_table.scoped_key_count_key(project_id), "expression": "ADD #n :one",
                "names": {"#n": "n"}, "values": {":one": 1, ":max": MAX_KEYS}, "condition": "#n < :max"}),
        })
    except db.ConditionFailed as failure:
        if "count" in failure.failed:
            raise Conflict(f"the project has {MAX_KEYS} scoped keys already: delete unused ones with "
                           f"DELETE /keys") from None
        raise
    return {"id": key_id, "label": label, "scope": scope, "created": _local(now, zone), "key": key}


def _count_from_listing(project_id: int) -> None:
    """Start the project's key count from its listing items when it has none yet (keys made before the
    count existed); a count already there is never touched."""
    if db.get(accounts_table.NAME, accounts_table.scoped_key_count_key(project_id)) is not None:
        return
    try:
        db.put(accounts_table.NAME, {**accounts_table.scoped_key_count_key(project_id), "n": len(_listed(project_id))},
               condition="attribute_not_exists(pk)")
    except db.ConditionFailed:
        pass   # another request started it


def listing(project_id: int, zone: tzinfo) -> list[dict[str, Any]]:
    """GET /keys: the project's keys by id, never their secrets (last_used from their lookup items, read
    together: one BatchGetItem per 100 keys)."""
    listed = list(_listed(project_id))
    lookups = [accounts_table.scoped_key_lookup_key(item["digest"]) for item in listed]
    last_used = {found["pk"]: found.get("last_used")
                 for found in db.batch_get(accounts_table.NAME, lookups, projection="pk, last_used")}
    return [{"id": item["key_id"], "label": item["label"], "scope": item["scope"],
             "created": _local(item["created"], zone), "last_used": _local(last_used.get(lookup["pk"]), zone)}
            for item, lookup in zip(listed, lookups)]


def key_ids(project_id: int) -> set[int]:
    """The ids of the project's keys (those not deleted)."""
    return {item["key_id"] for item in _listed(project_id)}


def delete(project_id: int, key_id: object) -> dict:
    """DELETE /keys: the key stops working at once (both items go in one transaction)."""
    key_id = validation.integer("id", key_id, 1, 10 ** 15) if key_id is not None else None
    if key_id is None:
        raise BadRequest("id is required: the key's id as GET /keys shows it")
    item = db.get(accounts_table.NAME, accounts_table.scoped_key_listing_key(project_id, key_id))
    if not item:
        raise NotFound(f"no key {key_id} in this project")
    _count_from_listing(project_id)
    try:
        db.transact({
            "listing": ("delete", accounts_table.NAME, {
                "key": accounts_table.scoped_key_listing_key(project_id, key_id), "condition": "attribute_exists(pk)"}),
            "lookup": ("delete", accounts_table.NAME, {"key": accounts_table.scoped_key_lookup_key(item["digest"])}),
            "count": ("update", accounts_table.NAME, {
                "key": accounts_table.scoped_key_count_key(project_id), "expression": "ADD #n :less",
                "names": {"#n": "n"}, "values": {":less": -1}}),
        })
    except db.ConditionFailed:
        raise NotFound(f"no key {key_id} in this project") from None
    return {}


def find(key: object) -> ScopedKey | None:
    """The ScopedKey of a key, or None; records its use at most once a minute."""
    if not isinstance(key, str) or not apikeys.looks_like_key(key):
        return None
    digest = apikeys.digest(key)
    item = db.get(accounts_table.NAME, accounts_table.scoped_key_lookup_key(digest))
    if not item:
        return None
    now = int(clock.now())
    if now - item.get("last_used", 0) >= TOUCH_EVERY:
        try:
            db.update(accounts_table.NAME, accounts_table.scoped_key_lookup_key(digest), "SET last_used = :now",
                      expression_values={":now": now, ":before": now - TOUCH_EVERY},
                      condition="attribute_exists(pk) AND (attribute_not_exists(last_used) OR last_used <= :before)")
        except db.ConditionFailed:
            pass  # deleted meanwhile, or another request touched it
    return ScopedKey(item["project_id"], item["key_id"], item["scope"], item["label"])
