"""Metering points of a project: registration by the edge agent, lookup, listing, renaming, hierarchy.

A meter has two names: its site name (MeterId, what the edge agent on site calls it; never changes)
and its display name (what users see, changed by POST /point). SITE# and NAME# items map each to
the meter's integer id, written in the same transaction as the meter, so names stay unique.

A meter may have a parent (`Parent`: the meter that feeds it, a sub-meter's main incomer), kept as
the parent's meter id (parent_id), so renaming the parent keeps the link; views show its current name.

A meter may name its tariff (`Tariff`: a tariff's id, chalicelib/billing/tariffs.py), kept as tariff_id;
without one it is billed with the project's default tariff. The meters naming each tariff are counted
(TARIFFUSES# items, n) in the same transaction that sets tariff_id, so tariffs.delete can refuse (409),
atomically, to delete a tariff a meter names (tariff_unused).

The meter item also keeps the meter's latest reading and latest interval (LATEST, INTERVAL: the
attributes <which>_time and <which>_value), moved forward at ingest (record), never back. POST /data
writes them once an hour (when a reading starts a new UTC or local hour), not for every reading: the
readings after latest_time are all in the hot item of its hour (chalicelib/metering/readings.py), which
current() reads by key. So GET /data and GET /interval (latest) read one query per project and one
BatchGetItem per 100 meters, whatever the history.
"""
import enum
import bisect
from collections.abc import Collection, Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any, Literal, NoReturn

from chalicelib.identity import accounts
from chalicelib.metering import readings
from chalicelib.metering.readings import Entry, Reading
from chalicelib.platform import answers, clock, db, validation
from chalicelib.platform.db import Item
from chalicelib.platform.errors import BadRequest, Conflict, NotFound
from chalicelib.tables import accounts_table, meters_table

# Configuration fields of PUT /point: name → validator of the value as sent.
CONFIG_FIELDS = {
    "ModbusId": lambda v: validation.integer("ModbusId", v, 0, 255),
    "Port": lambda v: validation.name("Port", v),
    "NoPhases": lambda v: str(validation.integer("NoPhases", v, 1, 3)),
    "MeterType": lambda v: validation.name("MeterType", v),
    "ModbusMap": lambda v: validation.name("ModbusMap", v),
    "SaveEvery": lambda v: validation.integer("SaveEvery", v, 1, 1440),
    "startAddress": lambda v: validation.integer("startAddress", v, 0, 65535),
}
DEFAULT_SAVE_EVERY = 5
MAX_DEPTH = 20              # levels of parents above a meter: keeps the cycle check one transaction
# Meters a project may have: every request that reads all of them (GET /data, /point, /file) stays
# bounded, and the project's MetersTable partition under DynamoDB's per-partition limits (docs/scale.md).
MAX_METERS = 10_000
# What the meter item keeps of its readings (advance, last): the latest reading, and the energy of the
# latest interval of SaveEvery minutes whose two ends are known.
LATEST, INTERVAL = "latest", "interval"


def view(meter: Item, parent_name: str | None = None) -> dict[str, Any]:
    """The GET /point shape of a meter (parent_name: its parent's display name, None without one)."""
    return {"id": meter["meter_id"], "MeterId": meter["name"],
            **{field: meter.get(field) for field in CONFIG_FIELDS}, "Parent": parent_name,
            "Tariff": meter.get("tariff_id")}


def _view(project_id: int, meter: Item) -> dict[str, Any]:
    """view() of one meter, reading its parent's current name."""
    parent = _get(project_id, meter["parent_id"]) if meter.get("parent_id") is not None else None
    return view(meter, parent["name"] if parent else None)


def views(meters: list[Item]) -> list[dict[str, Any]]:
    """view() of every meter of a list holding their parents (a whole project's)."""
    names = {m["meter_id"]: m["name"] for m in meters}
    return [view(m, names.get(m.get("parent_id"))) for m in meters]


def register(project_id: int, fields: Mapping[str, Any]) -> dict[str, Any]:
    """PUT /point: create the meter of a site name, or update its configuration (and Parent); idempotent.

    All or nothing: every field is checked first (a bad Parent, a cycle included, is a 4xx before any
    write), and the configuration and Parent are written together in one write.
    """
    site_name = validation.name("MeterId", fields.get("MeterId") if fields.get("MeterId") is not None
                                else _missing("MeterId"))
    config = {name: check(fields[name]) for name, check in CONFIG_FIELDS.items() if fields.get(name) is not None}
    parent = _parent_arg(project_id, fields.get("Parent"))
    for _attempt in range(3):
        existing = find_by_site_name(project_id, site_name)
        if existing:
            return _view(project_id, _configure(project_id, existing, config, parent))
        meter = _create(project_id, site_name, config, None if parent is _UNCHANGED else parent)
        if meter is not None:
            return _view(project_id, meter)
        # Someone registered the same site name at the same time: read it again.
    raise Conflict(f"meter {site_name!r} is being registered by another request: try again")


def _create(project_id: int, site_name: str, config: dict[str, Any], parent: Item | None) -> Item | None:
    """A new meter of site_name with config and parent, in one transaction with its names, the project's
    count and the parent's chain as read; None when the site name was taken meanwhile."""
    meter_id = accounts_table.next_id("meter")
    meter = {**meters_table.meter_key(project_id, meter_id), "meter_id": meter_id, "project_id": project_id,
             "site_name": site_name, "name": site_name, "SaveEvery": DEFAULT_SAVE_EVERY, **config}
    checks = {}
    if parent is not None:
        checks = _ancestor_checks(project_id, meter, parent)
        meter["parent_id"] = parent["meter_id"]
    try:
        db.transact({
            "site_name": ("put", meters_table.NAME, {
                "item": {**meters_table.site_name_key(project_id, site_name), "meter_id": meter_id},
                "condition": "attribute_not_exists(pk)"}),
            "name": ("put", meters_table.NAME, {
                "item": {**meters_table.display_name_key(project_id, site_name), "meter_id": meter_id},
                "condition": "attribute_not_exists(pk)"}),
            "meter": ("put", meters_table.NAME, {"item": meter}),
            "count": ("update", meters_table.NAME, {
                "key": meters_table.meter_count_key(project_id), "expression": "ADD #n :one",
                "names": {"#n": "n"}, "values": {":one": 1, ":max": MAX_METERS},
                "condition": "attribute_not_exists(#n) OR #n < :max"}),
            **checks,
        })
        return meter
    except db.ConditionFailed as failure:
        if "count" in failure.failed:
            raise Conflict(f"the project has {MAX_METERS} meters, the most a project can have: "
                           f"split the site into projects") from None
        if "name" in failure.failed and "site_name" not in failure.failed:
            raise Conflict(f"another meter is shown as {site_name!r}: rename it before registering "
                           f"a site meter of that name") from None
        if "site_name" in failure.failed:
            return None
        raise Conflict("Parent: the parent meter's hierarchy was changed by another request: try again") from None


class _Unchanged(enum.Enum):
    UNCHANGED = "unchanged"   # no Parent argument: the meter keeps its parent


_UNCHANGED = _Unchanged.UNCHANGED
Parent = Item | None | Literal[_Unchanged.UNCHANGED]


def _parent_arg(project_id: int, value: object) -> Parent:
    """The Parent argument as a parent meter, None (an empty value: clear it) or _UNCHANGED (absent).

    A name unknown in this project (another project's meter included) is a 404, before anything is written.
    """
    if value is None:
        return _UNCHANGED
    if isinstance(value, str) and not value.strip():
        return None
    parent_name = validation.name("Parent", value)
    try:
        return find(project_id, name=parent_name)
    except NotFound as missing:
        raise NotFound(f"Parent: {missing.message}") from None


def _configure(project_id: int, meter: Item, config: Mapping[str, Any], parent: Parent) -> Item:
    """Apply config and a new parent (a meter item, None to clear, _UNCHANGED) to a meter in one write: both
    or neither; 400 when the parent would close a cycle, before anything is written.

    The write is conditional on the meter's parent being the one read, and (when the parent changes) on
    every ancestor read on the way up still having its parent, all in one transaction, so two concurrent
    changes cannot build a cycle between them.
    """
    for _attempt in range(3):
        changed = {k: v for k, v in config.items() if meter.get(k) != v}
        parent_id = meter.get("parent_id") if parent is _UNCHANGED else None if parent is None else parent["meter_id"]
        moves = parent_id != meter.get("parent_id")
        if not changed and not moves:
            return meter
        checks = _ancestor_checks(project_id, meter, parent) if moves and isinstance(parent, dict) else {}
        try:
            _write_meter(project_id, meter, changed, parent_id if moves else _UNCHANGED, checks)
        except db.ConditionFailed:
            # The meter or one of its new ancestors changed parent meanwhile: read them again.
            again = _get(project_id, meter["meter_id"])
            if again is None:
                raise NotFound("the meter was removed meanwhile") from None
            meter = again
            if isinstance(parent, dict):
                parent = _get(project_id, parent["meter_id"])
                if parent is None:
                    raise NotFound("Parent: the parent meter was removed meanwhile") from None
            continue
        meter = {**meter, **changed}
        if moves:
            meter.pop("parent_id", None)
            if parent_id is not None:
                meter["parent_id"] = parent_id
        return meter
    raise Conflict("the meters' hierarchy was being changed by other requests: try again")


def _write_meter(project_id: int, meter: Item, changed: Mapping[str, Any], parent_id: int | None | _Unchanged,
                 checks: dict[str, tuple[str, str, dict[str, Any]]]) -> None:
    """One write of a meter's changed fields and parent (parent_id: the new one, None to clear, _UNCHANGED),
    conditional on its parent being as read, with checks in the same transaction when there are any."""
    expression, names, values = db.set_fields(changed) if changed else ("", {}, {})
    if parent_id is None:
        expression += " REMOVE parent_id"
    elif parent_id is not _UNCHANGED:
        expression = (expression + ", " if expression else "SET ") + "parent_id = :new"
        values[":new"] = parent_id
    same = _same_parent(project_id, meter["meter_id"], meter.get("parent_id"))
    values.update(same.get("values", {}))
    write = {"key": same["key"], "expression": expression.strip(), "names": names or None, "values": values or None,
             "condition": same["condition"]}
    if checks:
        db.transact({"meter": ("update", meters_table.NAME, {k: v for k, v in write.items() if v}), **checks})
    else:
        db.update(meters_table.NAME, write["key"], write["expression"], names=write["names"],
                  expression_values=write["values"], condition=write["condition"])


def _with(meter: Item, field: str, value: object) -> Item:
    """A copy of a meter item with field set to value, or without it (None), as just written."""
    changed = {k: v for k, v in meter.items() if k != field}
    if value is not None:
        changed[field] = value
    return changed


def _ancestor_checks(project_id: int, meter: Item,
                     parent: Item | None) -> dict[str, tuple[str, str, dict[str, Any]]]:
    """Conditions that parent and each meter above it keep their parent; 400 if the meter is among them."""
    checks: dict[str, tuple[str, str, dict[str, Any]]] = {}
    if parent is None:
        return checks
    ancestor: Item | None = parent
    while ancestor is not None:
        if ancestor["meter_id"] == meter["meter_id"]:
            raise BadRequest(f"Parent: {parent['name']!r} is fed by {meter['name']!r} "
                             f"(directly or through other meters): a meter cannot feed itself")
        if len(checks) >= MAX_DEPTH:
            raise BadRequest(f"Parent: at most {MAX_DEPTH} levels of meters above a meter")
        above = ancestor.get("parent_id")
        checks[f"ancestor {ancestor['meter_id']}"] = ("check", meters_table.NAME,
                                                     {**_same_parent(project_id, ancestor["meter_id"], above)})
        ancestor = _get(project_id, above) if above is not None else None
    return checks


def _same_parent(project_id: int, meter_id: int, parent_id: int | None) -> dict[str, Any]:
    """A condition: the meter exists and its parent is still parent_id (None: it has none)."""
    if parent_id is None:
        return {"key": meters_table.meter_key(project_id, meter_id),
                "condition": "attribute_exists(pk) AND attribute_not_exists(parent_id)"}
    return {"key": meters_table.meter_key(project_id, meter_id), "condition": "parent_id = :was",
            "values": {":was": parent_id}}


def _missing(field: str) -> NoReturn:
    raise BadRequest(f"{field} is required")


def _get(project_id: int, meter_id: int) -> Item | None:
    return db.get(meters_table.NAME, meters_table.meter_key(project_id, meter_id))


def find_by_site_name(project_id: int, site_name: str) -> Item | None:
    """The meter the edge agent calls site_name, or None."""
    alias = db.get(meters_table.NAME, meters_table.site_name_key(project_id, site_name))
    return _get(project_id, alias["meter_id"]) if alias else None


def find_by_site_names(project_id: int, site_names: Iterable[str]) -> dict[str, Item | None]:
    """{site name: meter or None} for many site names at once: two BatchGetItem calls per 100 names
    (aliases, then meters) instead of two GetItem calls per name, so a 300-meter push costs 6 calls."""
    names = list(dict.fromkeys(site_names))
    aliases = db.batch_get(meters_table.NAME, [meters_table.site_name_key(project_id, name) for name in names])
    meter_ids = {meters_table.site_name_of(alias): alias["meter_id"] for alias in aliases}
    keys = [meters_table.meter_key(project_id, meter_id) for meter_id in set(meter_ids.values())]
    found = {m["meter_id"]: m for m in db.batch_get(meters_table.NAME, keys)}
    return {name: found.get(meter_ids.get(name)) for name in names}


def find(project_id: int, meter_id: object = None, name: object = None, field: str = "name") -> Item:
    """A meter by id (wins) or by display name (then site name); NotFound otherwise.

    field: the parameter that named it (meter on /file, /consumption, /graphics), for a 400 on a bad name.
    """
    if meter_id is not None:
        meter_id = validation.integer("id", meter_id, 0)
        meter = _get(project_id, meter_id)
        if not meter:
            raise NotFound(f"no meter with id {meter_id} in this project")
        return meter
    if name is None or name == "":
        raise BadRequest("give the meter's name or id")
    name = validation.name(field, name)
    for alias_key in (meters_table.display_name_key(project_id, name), meters_table.site_name_key(project_id, name)):
        alias = db.get(meters_table.NAME, alias_key)
        if alias:
            meter = _get(project_id, alias["meter_id"])
            if meter:
                return meter
    raise NotFound(f"no meter named {name!r} in this project{_suggestion(project_id, name)}")


def _suggestion(project_id: int, name: str) -> str:
    """': did you mean 'hvac'?' when a meter's name (as shown, else on site) differs from name in case only
    (names are case-sensitive: 'HVAC' and 'hvac' may be two meters); '' otherwise. Costs the meter
    listing, on a miss only."""
    known = _same_but_case(all_meters(project_id), name)
    return f": did you mean {known!r}? (names are case-sensitive)" if known else ""


def _same_but_case(candidates: Iterable[Item], name: str) -> str | None:
    """The name (as shown, else on site) of a meter of candidates that differs from name in case only."""
    wanted = name.casefold()
    for meter in candidates:
        for known in (meter["name"], meter["site_name"]):
            if known.casefold() == wanted:
                return str(known)
    return None


def all_meters(project_id: int) -> list[Item]:
    """Every meter of the project, by id (one query, whatever the history)."""
    return list(db.query(meters_table.NAME, "pk = :p AND begins_with(sk, :m)",
                         {":p": meters_table.project_pk(project_id), ":m": meters_table.METER + "#"}))


def named(candidates: Sequence[Item], names: Iterable[str]) -> list[Item]:
    """The meters of candidates (all_meters' list) with these names (each by display name, else site
    name, as find), each once, in the order first named; NotFound naming the names no meter has (with
    find's "did you mean" for a name that differs in case only)."""
    by_name = {m["site_name"]: m for m in candidates} | {m["name"]: m for m in candidates}
    found: dict[int, Item] = {}
    unknown: list[str] = []
    for name in names:
        meter = by_name.get(name)
        if meter is None:
            unknown.append(name)
        else:
            found.setdefault(meter["meter_id"], meter)
    if unknown:
        hints = [(name, _same_but_case(candidates, name)) for name in unknown[:5]]
        listed = ", ".join(repr(name) + (f" (did you mean {known!r}?)" if known else "") for name, known in hints)
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise NotFound(f"no meter named {listed}{more} in this project"
                       + (" (names are case-sensitive)" if any(known for _name, known in hints) else ""))
    return list(found.values())


def point(project_id: int, meter_id: object = None, name: object = None) -> dict[str, Any] | answers.Bounded:
    """GET /point: one meter by id or name, or with neither the list of all (checked against the answer's
    bounds before it is rendered)."""
    if meter_id is None and name is None:
        return answers.listing(views(all_meters(project_id)), "ask for one meter: GET /point?name=… (or ?id=…)")
    return _view(project_id, find(project_id, meter_id, name))


def change(project_id: int, meter_id: object = None, name: object = None, new_name: object = None,
           parent: object = None, tariff: object = None) -> dict[str, Any]:
    """POST /point: rename a meter (new), set or clear its Parent, set or clear its Tariff, any of them;
    returns the meter as GET shows it."""
    meter = find(project_id, meter_id, name)
    if new_name is None and parent is None and tariff is None:
        raise BadRequest("give new (the meter's new name), Parent (the meter feeding it; empty to clear) or "
                         "Tariff (a tariff's id; empty to use the project's default)")
    new_parent = _parent_arg(project_id, parent)
    new_tariff = _tariff_arg(project_id, tariff)
    if new_name is not None:      # validate them all before changing any
        validation.name("new", new_name)
        if new_parent not in (None, _UNCHANGED):
            _ancestor_checks(project_id, meter, new_parent)
        meter = _rename(project_id, meter, new_name)
    if new_parent is not _UNCHANGED:
        meter = _configure(project_id, meter, {}, new_parent)
    if new_tariff is not _UNCHANGED:
        meter = _set_tariff(project_id, meter, new_tariff)
    return _view(project_id, meter)


def _tariff_arg(project_id: int, value: object) -> int | None | Literal[_Unchanged.UNCHANGED]:
    """The Tariff argument as a tariff id, None (an empty value: the default) or _UNCHANGED (absent); 404 for
    an id that is no tariff of this project, before anything is written."""
    if value is None:
        return _UNCHANGED
    if isinstance(value, str) and not value.strip():
        return None
    tariff_id = validation.integer("Tariff", value, 1, 2 ** 53)
    if db.get(meters_table.NAME, meters_table.tariff_key(project_id, tariff_id)) is None:
        raise NotFound(f"Tariff: no tariff with id {tariff_id} in this project (GET /tariffs lists them)")
    return tariff_id


def _set_tariff(project_id: int, meter: Item, tariff_id: int | None) -> Item:
    """Make tariff_id (None: none, the default) the meter's tariff, moving the counts of meters naming each."""
    for _attempt in range(3):
        old = meter.get("tariff_id")
        if old == tariff_id:
            return meter
        key = meters_table.meter_key(project_id, meter["meter_id"])
        values = {":old": old} if old is not None else {}
        condition = "attribute_exists(pk) AND " + ("tariff_id = :old" if old is not None
                                                   else "attribute_not_exists(tariff_id)")
        operations = {"meter": ("update", meters_table.NAME, {
            "key": key, "condition": condition,
            **({"expression": "REMOVE tariff_id", **({"values": values} if values else {})} if tariff_id is None else
               {"expression": "SET tariff_id = :new", "values": {**values, ":new": tariff_id}})})}
        if tariff_id is not None:
            operations["tariff"] = ("check", meters_table.NAME, {
                "key": meters_table.tariff_key(project_id, tariff_id), "condition": "attribute_exists(pk)"})
            operations["uses"] = ("update", meters_table.NAME, {
                "key": meters_table.tariff_uses_key(project_id, tariff_id), "expression": "ADD #n :one",
                "names": {"#n": "n"}, "values": {":one": 1}})
        if old is not None:
            operations["old uses"] = ("update", meters_table.NAME, {
                "key": meters_table.tariff_uses_key(project_id, old), "expression": "ADD #n :minus",
                "names": {"#n": "n"}, "values": {":minus": -1}})
        try:
            db.transact(operations)
        except db.ConditionFailed as failure:
            if "tariff" in failure.failed:
                raise NotFound(f"Tariff: no tariff with id {tariff_id} in this project (deleted meanwhile)") from None
            again = _get(project_id, meter["meter_id"])   # its tariff was changed meanwhile: read it again
            if again is None:
                raise NotFound("the meter was removed meanwhile") from None
            meter = again
            continue
        return _with(meter, "tariff_id", tariff_id)
    raise Conflict("the meter's tariff was being changed by other requests: try again")


def tariff_unused(project_id: int, tariff_id: int) -> tuple[str, str, dict[str, Any]]:
    """A transaction check (db.transact) that no meter names the tariff (chalicelib/billing/tariffs.py's delete)."""
    return ("check", meters_table.NAME, {"key": meters_table.tariff_uses_key(project_id, tariff_id),
                                         "condition": "attribute_not_exists(#n) OR #n = :zero",
                                         "names": {"#n": "n"}, "values": {":zero": 0}})


def _rename(project_id: int, meter: Item, new_name: object) -> Item:
    """Give a meter a new display name, unique in the project; the site name stays. Returns the meter."""
    new_name = validation.name("new", new_name)
    if new_name == meter["name"]:
        return meter
    try:
        db.transact({
            "new_name": ("put", meters_table.NAME, {
                "item": {**meters_table.display_name_key(project_id, new_name), "meter_id": meter["meter_id"]},
                "condition": "attribute_not_exists(pk)"}),
            "old_name": ("delete", meters_table.NAME, {
                "key": meters_table.display_name_key(project_id, meter["name"]),
                "condition": "meter_id = :m", "values": {":m": meter["meter_id"]}}),
            "meter": ("update", meters_table.NAME, {
                "key": meters_table.meter_key(project_id, meter["meter_id"]), "expression": "SET #n = :n",
                "names": {"#n": "name"}, "values": {":n": new_name, ":old": meter["name"]}, "condition": "#n = :old"}),
        })
    except db.ConditionFailed as failure:
        if "new_name" in failure.failed:
            raise Conflict(f"another meter is already named {new_name!r}") from None
        raise Conflict("the meter was renamed by another request at the same time: try again") from None
    return {**meter, "name": new_name}


# ---- the latest reading and interval ------------------------------------------------------------

def step(meter: Item) -> int:
    """Seconds between the meter's readings (its SaveEvery minutes)."""
    return 60 * meter.get("SaveEvery", DEFAULT_SAVE_EVERY)


def last(meter: Item, which: str) -> Reading | None:
    """The meter item's latest reading (LATEST), or its latest interval (INTERVAL: when it ended and the
    energy used in it), or None."""
    epoch = meter.get(f"{which}_time")
    return None if epoch is None else Reading(epoch, meter[f"{which}_value"])


def _ahead(meter: Item, which: str, reading: Reading | None) -> bool:
    known = last(meter, which)
    return reading is not None and (known is None or known.epoch < reading.epoch)


def record(project_id: int, meter: Item, latest: Reading | None = None, interval: Reading | None = None,
           hot_add: Collection[str] = (), hot_remove: Collection[str] = ()) -> None:
    """One UpdateItem of the meter item: its LATEST reading and INTERVAL moved forward (never back: each is
    written only if later than the one the item has), hours added to or removed from the hours that may
    have a hot item (readings.hot_attribute).

    meter is the item as read: what it already has as late is not written (a retried batch of duplicates,
    or a backfill, writes nothing). The write is conditional on what it moves still being older, so
    concurrent requests never move it back: when another request moved one meanwhile, the meter is read
    again and what is still ahead written.
    """
    for _attempt in range(3):
        sets, values, names, conditions = [], {}, {}, ["attribute_exists(pk)"]
        for which, reading in ((LATEST, latest), (INTERVAL, interval)):
            if reading is not None and _ahead(meter, which, reading):
                sets.append(f"{which}_time = :{which}_t, {which}_value = :{which}_v")
                values.update({f":{which}_t": reading.epoch, f":{which}_v": reading.value})
                conditions.append(f"(attribute_not_exists({which}_time) OR {which}_time < :{which}_t)")
        for i, hour in enumerate(sorted(hot_add)):
            names[f"#a{i}"] = readings.hot_attribute(hour)
            sets.append(f"#a{i} = :marked")
            values[":marked"] = int(clock.now())   # when: an hour marked before it starts is clean (readings.clean)
        removes = [readings.hot_attribute(hour) for hour in sorted(set(hot_remove) - set(hot_add))]
        names.update({f"#r{i}": name for i, name in enumerate(removes)})
        if not sets and not removes:
            return
        expression = " ".join(part for part in ("SET " + ", ".join(sets) if sets else "",
                                                "REMOVE " + ", ".join(f"#r{i}" for i in range(len(removes))) if removes else "") if part)
        try:
            db.update(meters_table.NAME, meters_table.meter_key(project_id, meter["meter_id"]), expression,
                      names=names or None, expression_values=values or None, condition=" AND ".join(conditions))
            return
        except db.ConditionFailed:
            again = _get(project_id, meter["meter_id"])
            if again is None:
                return   # the meter is gone: nothing to record
            meter = again
    raise Conflict("the meter's latest reading was being moved by other requests: send the batch again "
                   "(the readings are stored; they will come back as duplicates)")


def interval_in(points: Sequence[Entry], step_seconds: int, ends: Iterable[int] | None = None) -> Reading | None:
    """The latest interval among points (epoch, value, reset) in time order: Reading(end, energy used from
    end - step_seconds to end) where both readings are among points, no reading after the start up to the
    end marks a new register series, and the register did not go down. ends: the ends to consider (every
    reading's time when None)."""
    times = [t for t, _v, _r in points]
    best: Reading | None = None
    for end in sorted(set(times if ends is None else ends), reverse=True):
        if best is not None and end <= best.epoch:
            break
        i, j = bisect.bisect_left(times, end - step_seconds), bisect.bisect_left(times, end)
        if i == len(times) or j == len(times) or times[i] != end - step_seconds or times[j] != end:
            continue
        if any(reset for _t, _v, reset in points[i + 1:j + 1]):
            continue
        used = Decimal(repr(points[j][1])) - Decimal(repr(points[i][1]))
        if used >= 0:
            best = Reading(end, float(used))
    return best


def current(project_id: int, items: Sequence[Item]) -> list[Item]:
    """The meter items with their latest reading and interval as they are now.

    The item keeps them as of the last time POST /data wrote it (once an hour); readings since are all in
    the hot item of the hour of latest_time, read here by key (one BatchGetItem per 100 meters, only for
    meters with such an item): its last reading, and its intervals whose two ends it holds.
    """
    wanted = {}
    for meter in items:
        epoch = meter.get(f"{LATEST}_time")
        if epoch is not None and readings.hour_of(epoch) in readings.hot_hours(meter):
            wanted[meter["meter_id"]] = readings.hour_of(epoch)
    hot = readings.hot_entries(project_id, {meter_id: [hour] for meter_id, hour in wanted.items()}) if wanted else {}
    completed = []
    for meter in items:
        points = hot.get(meter["meter_id"])
        if points:
            meter = dict(meter)
            epoch, value, _reset = points[-1]
            if _ahead(meter, LATEST, Reading(epoch, value)):
                meter[f"{LATEST}_time"], meter[f"{LATEST}_value"] = epoch, value
            derived = interval_in(points, step(meter))
            if _ahead(meter, INTERVAL, derived):
                assert derived is not None
                meter[f"{INTERVAL}_time"], meter[f"{INTERVAL}_value"] = derived
        completed.append(meter)
    return completed


def latest(project_id: int, which: str) -> answers.Bounded:
    """GET /data (LATEST) and GET /interval (INTERVAL): one row per meter that has one (checked against the
    answer's bounds before it is rendered)."""
    zone = accounts.project_zone(project_id)
    rows = []
    for meter in current(project_id, all_meters(project_id)):
        known = last(meter, which)
        if known is not None:
            rows.append({"MeterParam": meter["name"], "TimeStamping": clock.local(known.epoch, zone),
                         "value": float(known.value)})
    return answers.listing(rows, "get the readings as a file: GET /file?start=YYYY-MM-DD&end=YYYY-MM-DD&type={type}")
