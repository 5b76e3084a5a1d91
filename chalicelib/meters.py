"""Metering points of a project: registration by the edge agent, lookup, listing and renaming.

A meter has two names: its site name (MeterId, what the edge agent on site calls it; never changes)
and its display name (what users see, changed by POST /point). SITE# and NAME# items map each to
the meter's integer id, written in the same transaction as the meter, so names stay unique.
"""
from chalicelib import db, validation
from chalicelib.errors import BadRequest, Conflict, NotFound

TABLE = "MetersTable"

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
# Meters a project may have: every request that reads all of them (GET /data, /point, /file) stays
# bounded, and the project's MetersTable partition under DynamoDB's per-partition limits (docs/scale.md).
MAX_METERS = 10_000


def _pk(project_id):
    return f"PROJECT#{project_id}"


def _meter_key(project_id, meter_id):
    return {"pk": _pk(project_id), "sk": f"METER#{meter_id:010d}"}


def _alias_key(project_id, kind, name):
    return {"pk": _pk(project_id), "sk": f"{kind}#{name}"}


def view(meter):
    """The GET /point shape of a meter."""
    return {"id": meter["meter_id"], "MeterId": meter["name"],
            **{field: meter.get(field) for field in CONFIG_FIELDS}}


def series_key(project_id, meter_id):
    """The partition key of a meter's readings."""
    return f"{project_id}#{meter_id}"


def register(project_id, fields):
    """PUT /point: create the meter of a site name, or update its configuration; idempotent."""
    site_name = validation.name("MeterId", fields.get("MeterId") if fields.get("MeterId") is not None
                                else _missing("MeterId"))
    config = {name: check(fields[name]) for name, check in CONFIG_FIELDS.items() if fields.get(name) is not None}
    for _attempt in range(3):
        existing = find_by_site_name(project_id, site_name)
        if existing:
            changed = {k: v for k, v in config.items() if existing.get(k) != v}
            if not changed:
                return view(existing)
            names = {f"#f{i}": k for i, k in enumerate(changed)}
            expression = "SET " + ", ".join(f"#f{i} = :v{i}" for i in range(len(changed)))
            updated = db.update(TABLE, _meter_key(project_id, existing["meter_id"]), expression, names=names,
                                expression_values={f":v{i}": v for i, v in enumerate(changed.values())},
                                return_values="ALL_NEW")
            return view(updated)
        meter_id = db.next_id("meter")
        meter = {**_meter_key(project_id, meter_id), "meter_id": meter_id, "project_id": project_id,
                 "site_name": site_name, "name": site_name, "SaveEvery": DEFAULT_SAVE_EVERY, **config}
        try:
            db.transact([
                ("put", TABLE, {"item": {**_alias_key(project_id, "SITE", site_name), "meter_id": meter_id},
                                "condition": "attribute_not_exists(pk)"}),
                ("put", TABLE, {"item": {**_alias_key(project_id, "NAME", site_name), "meter_id": meter_id},
                                "condition": "attribute_not_exists(pk)"}),
                ("put", TABLE, {"item": meter}),
                ("update", TABLE, {"key": _alias_key(project_id, "COUNT", "meters"), "expression": "ADD #n :one",
                                   "names": {"#n": "n"}, "values": {":one": 1, ":max": MAX_METERS},
                                   "condition": "attribute_not_exists(#n) OR #n < :max"}),
            ])
            return view(meter)
        except db.ConditionFailed as failure:
            if len(failure.reasons) > 3 and failure.reasons[3] == "ConditionalCheckFailed":
                raise Conflict(f"the project has {MAX_METERS} meters, the most a project can have: "
                               f"split the site into projects") from None
            if len(failure.reasons) > 1 and failure.reasons[1] == "ConditionalCheckFailed" \
                    and failure.reasons[0] != "ConditionalCheckFailed":
                raise Conflict(f"another meter is shown as {site_name!r}: rename it before registering "
                               f"a site meter of that name") from None
            # Someone registered the same site name at the same time: read it again.
    raise Conflict(f"meter {site_name!r} is being registered by another request: try again")


def _missing(field):
    raise BadRequest(f"{field} is required")


def _get(project_id, meter_id):
    return db.get(TABLE, _meter_key(project_id, meter_id))


def find_by_site_name(project_id, site_name):
    """The meter the edge agent calls site_name, or None."""
    alias = db.get(TABLE, _alias_key(project_id, "SITE", site_name))
    return _get(project_id, alias["meter_id"]) if alias else None


def find(project_id, meter_id=None, name=None):
    """A meter by id (wins) or by display name (then site name); NotFound otherwise."""
    if meter_id is not None:
        meter_id = validation.integer("id", meter_id, 0)
        meter = _get(project_id, meter_id)
        if not meter:
            raise NotFound(f"no meter with id {meter_id} in this project")
        return meter
    if not isinstance(name, str) or not name:
        raise BadRequest("give the meter's name or id")
    for kind in ("NAME", "SITE"):
        alias = db.get(TABLE, _alias_key(project_id, kind, name))
        if alias:
            meter = _get(project_id, alias["meter_id"])
            if meter:
                return meter
    raise NotFound(f"no meter named {name!r} in this project")


def all_meters(project_id):
    """Every meter of the project, by id (one query, whatever the history)."""
    return list(db.query(TABLE, "pk = :p AND begins_with(sk, :m)", {":p": _pk(project_id), ":m": "METER#"}))


def point(project_id, meter_id=None, name=None):
    """GET /point: one meter by id or name, or with neither the list of all."""
    if meter_id is None and name is None:
        return [view(m) for m in all_meters(project_id)]
    return view(find(project_id, meter_id, name))


def rename(project_id, new_name, meter_id=None, name=None):
    """POST /point: give a meter a new display name, unique in the project; the site name stays."""
    meter = find(project_id, meter_id, name)
    new_name = validation.name("new", new_name)
    if new_name == meter["name"]:
        return view(meter)
    try:
        db.transact([
            ("put", TABLE, {"item": {**_alias_key(project_id, "NAME", new_name), "meter_id": meter["meter_id"]},
                            "condition": "attribute_not_exists(pk)"}),
            ("delete", TABLE, {"key": _alias_key(project_id, "NAME", meter["name"]),
                               "condition": "meter_id = :m", "values": {":m": meter["meter_id"]}}),
            ("update", TABLE, {"key": _meter_key(project_id, meter["meter_id"]), "expression": "SET #n = :n",
                               "names": {"#n": "name"}, "values": {":n": new_name, ":old": meter["name"]},
                               "condition": "#n = :old"}),
        ])
    except db.ConditionFailed as failure:
        if failure.reasons and failure.reasons[0] == "ConditionalCheckFailed":
            raise Conflict(f"another meter is already named {new_name!r}") from None
        raise Conflict("the meter was renamed by another request at the same time: try again") from None
    meter["name"] = new_name
    return view(meter)
