"""Fleet status: what each edge agent last reported (PUT /status) and how each meter is reporting (GET /status).

Each agent's last report is one item of AccountsTable, {pk: "PROJECT#<project>", sk: "AGENT#<who>"},
where who is the scoped key ("key:<id>") or the account ("user:<id>") that sent it, so one agent's
reports overwrite each other and never another's. The agent is shown by its key's label (or the
account's username) as it was when it reported.

A meter's State comes from its latest reading (meters.current: the meter item, completed from its hot
item): ok within 2 × SaveEvery + 5 minutes, late within 24 hours, silent beyond, never without one.
Coverage24h counts the readings of the last 24 hours (readings.counts: the two day items of each meter
that reported in that time and its hot items, 100 a BatchGetItem; a meter silent for a day costs
nothing) against 24 h / SaveEvery.
"""
import re
from collections.abc import Mapping
from datetime import tzinfo
from typing import Any

from chalicelib.identity import accounts, scoped_keys
from chalicelib.identity.auth import Caller
from chalicelib.metering import ingest, meters, readings
from chalicelib.platform import answers, clock, db, validation
from chalicelib.platform.db import Item
from chalicelib.platform.errors import BadRequest
from chalicelib.tables import accounts_table

GRACE = 5 * 60
DAY = 86400
MAX_FAILING = 1000
COUNT_MAX = 10 ** 12
_FRACTION = re.compile(r"\.([0-9]{1,9})(?=Z|[+-]|$)", re.ASCII)


def _count(field: str, value: object) -> int | None:
    return None if value is None else validation.integer(field, value, 0, COUNT_MAX)


def _agent_time(text: object, zone: tzinfo) -> float:
    """Epoch seconds (with fractions) of the agent's ISO 8601 time."""
    if not isinstance(text, str):
        raise BadRequest("time is required: the agent's clock as ISO 8601, such as 2026-11-29T10:00:00.250Z")
    fraction = _FRACTION.search(text)
    whole = _FRACTION.sub("", text, count=1)
    try:
        epoch = ingest.parse_time(whole, zone)
    except ValueError as error:
        raise BadRequest(str(error).replace("TimeStamping", "time")) from None
    return epoch + (int(fraction.group(1)) / 10 ** len(fraction.group(1)) if fraction else 0)


def _failing(value: object) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_FAILING:
        raise BadRequest(f"failing_meters must be a list of meter names (at most {MAX_FAILING})")
    return [validation.name("failing_meters", name) for name in value]


def report(caller: Caller, params: Mapping[str, Any]) -> dict[str, float]:
    """PUT /status: store the agent's report; answers the cloud's clock minus the agent's, in seconds."""
    zone = accounts.project_zone(caller.project_id)
    agent_time = _agent_time(params.get("time"), zone)
    version = params.get("version")
    item = {
        "version": None if version is None else validation.name("version", version),
        "backlog": _count("backlog", params.get("backlog")),
        "dead_letters": _count("dead_letters", params.get("dead_letters")),
        "failing_meters": _failing(params.get("failing_meters")),
    }
    now = clock.now()
    offset = round(now - agent_time, 3)
    if caller.user_id is None:   # a scoped key (auth.Caller)
        who, agent = f"key:{caller.key_id}", caller.label
    else:
        who, agent = f"user:{caller.user_id}", accounts.account(caller.project_id, caller.user_id)["username"]
    db.put(accounts_table.NAME, {**accounts_table.agent_key(caller.project_id, who), **item, "agent": agent,
                                 "last_contact": int(now), "clock_offset": offset})
    return {"clock_offset": offset}


def ok_until(meter: Item) -> float | None:
    """The instant the meter stops being ok if no reading comes: its latest reading + 2 × SaveEvery + GRACE
    (None: it never sent one; state() compares with the same bound)."""
    latest = meters.last(meter, meters.LATEST)
    return None if latest is None else latest.epoch + 2 * meters.step(meter) + GRACE


def state(meter: Item, now: float) -> str:
    """The meter's State at an instant: ok, late, silent or never (GET /status's, and meter_silent alerts')."""
    latest = meters.last(meter, meters.LATEST)
    if latest is None:
        return "never"
    if now <= latest.epoch + 2 * meters.step(meter) + GRACE:
        return "ok"
    return "late" if now - latest.epoch <= DAY else "silent"


def _coverage(present: int, meter: Item) -> float:
    expected = DAY / meters.step(meter)
    return round(min(1.0, present / expected), 3)


def _agents(project_id: int, zone: tzinfo) -> list[dict[str, Any]]:
    """Every agent's last report, by agent name: with the id of the scoped key (key_id) or of the account
    (uuid) that sent it, and whether that credential was deleted since (its agent can report no more)."""
    items = list(accounts_table.project_items(project_id, accounts_table.AGENT))
    if not items:
        return []
    live = {f"key:{key_id}" for key_id in scoped_keys.key_ids(project_id)}
    live |= {f"user:{user_id}" for user_id in accounts.user_ids(project_id)}
    agents = []
    for item in items:
        who = accounts_table.agent_of(item)
        kind, _, number = who.partition(":")
        agents.append({"agent": item["agent"], "key_id": int(number) if kind == "key" else None,
                       "uuid": int(number) if kind == "user" else None, "deleted": who not in live,
                       "last_contact": clock.local(item["last_contact"], zone),
                       "version": item.get("version"), "backlog": item.get("backlog"),
                       "dead_letters": item.get("dead_letters"), "failing_meters": item.get("failing_meters", []),
                       "clock_offset": float(item["clock_offset"])})
    agents.sort(key=lambda row: (row["agent"].casefold(), row["last_contact"]))
    return agents


def overview(project_id: int) -> answers.Bounded:
    """GET /status: the project's time zone, every agent's last report, by agent name, and every meter's
    state, by meter id (checked against the answer's bounds before it is rendered)."""
    project = accounts.get_project(project_id)
    time_zone = project.get("timezone", "UTC")
    zone = clock.zone(time_zone)
    now = clock.now()
    agents = _agents(project_id, zone)
    every = meters.current(project_id, list(meters.all_meters(project_id)))   # latest readings as they are now
    latest = {m["meter_id"]: meters.last(m, meters.LATEST) for m in every}
    recent = [meter_id for meter_id, known in latest.items() if known is not None and known.epoch > now - DAY]
    present = readings.counts(project_id, recent, int(now) - DAY + 1, int(now) + 1) if recent else {}
    rows = []
    for meter in every:
        known = latest[meter["meter_id"]]
        rows.append({"MeterParam": meter["name"], "LastReading": clock.local(known.epoch, zone) if known else None,
                     "State": state(meter, now), "Coverage24h": _coverage(present.get(meter["meter_id"], 0), meter)})
    return answers.listing(agents + rows, "ask for one meter's readings instead: GET /point?name=…, GET /file",
                           whole={"timezone": time_zone, "agents": agents, "meters": rows})
