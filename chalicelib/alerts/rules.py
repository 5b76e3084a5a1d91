"""Alert rules (PUT, GET and DELETE /alerts): what to watch and whom to tell.

Kinds (RULE_KINDS): `meter_silent` (a meter's State leaves ok, as GET /status judges it), `agent_silent` (an
agent sent no PUT /status for `minutes`), `usage_above` (a meter used more than `kWh` in a local `period`,
hour or day). `meter` narrows meter_silent and usage_above to one meter (by its name; kept by id, so a
rename keeps the rule); without it every meter of the project is watched, each on its own. One target:
`email` (an address, subscribed to an SNS topic of its own: chalicelib/alerts/mail.py) or `webhook`
(chalicelib/alerts/webhooks.py says which URLs), whose signing secret PUT answers once.

A rule is one item of AccountsTable, {pk: "PROJECT#<project>", sk: "ALERT#<id>"}. Its definition is this
module's: alert_id, project_id, kind, meter_id, minutes, kWh, period, target ("email" | "webhook"), email, topic_arn,
webhook, secret (KMS ciphertext: chalicelib/alerts/sealing.py), created, created_by. Its evaluation state
is chalicelib/alerts/evaluator.py's (version, firing, last_fired, unsent, unsent_at), its deliveries'
outcome chalicelib/alerts/delivery.py's (last_error, last_delivered).

The project's entry in the evaluator's index ({pk: "ALERTING", sk: "PROJECT#<project>"}) holds the ids of
its rules (alert_ids, a number set), added and removed in the rule's own transaction, under
size(alert_ids) < MAX_RULES: parallel creations never pass the bound, and the evaluator reads the rules of
many projects by key (BatchGetItem) from the index alone.
"""
import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, tzinfo
from typing import Any, NamedTuple

from chalicelib.alerts import mail, sealing, webhooks
from chalicelib.metering import meters
from chalicelib.platform import answers, clock, db, validation
from chalicelib.platform.db import Item
from chalicelib.platform.errors import BadRequest, Conflict, NotFound
from chalicelib.tables import accounts_table, meters_table

RULE_KINDS = ("meter_silent", "agent_silent", "usage_above")
PERIODS = ("hour", "day")
TARGETS = ("email", "webhook")
MAX_RULES = 50
MINUTES_MIN, MINUTES_MAX = 2, 7 * 24 * 60   # agents report every minute: 2 is the shortest silence that means one
KWH_MAX = 10 ** 9
# The fields of a rule; each kind takes some of them (the others are a 400 naming them).
FIELDS = ("kind", "meter", "minutes", "kWh", "period", "email", "webhook")
TAKES = {"meter_silent": {"meter"}, "agent_silent": {"minutes"}, "usage_above": {"meter", "kWh", "period"}}
NEEDS = {"meter_silent": set(), "agent_silent": {"minutes"}, "usage_above": {"kWh", "period"}}


log = logging.getLogger("intellimeter.alerts")
# What the evaluator reads of a rule (never its target, address or secret).
EVALUATED = "alert_id, project_id, kind, meter_id, minutes, kWh, period, firing, version, unsent, unsent_at"


class Draft(NamedTuple):
    """A rule as PUT /alerts asked for it, every field checked."""

    kind: str
    meter: str | None
    minutes: int | None
    kwh: float | None
    period: str | None
    target: str
    address: str


def _choice(field: str, value: Any, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value.strip().lower() not in allowed:
        raise BadRequest(f"{field} must be one of {', '.join(allowed)}")
    return value.strip().lower()


def _positive(field: str, value: Any) -> float:
    number = validation.number(field, value, 0, KWH_MAX)
    if number <= 0:
        raise BadRequest(f"{field} must be more than 0")
    return number


# Each field's check (validate, then build: check() runs every one and lists every problem).
CHECKS: dict[str, Callable[[Any], Any]] = {
    "kind": lambda v: _choice("kind", v, RULE_KINDS),
    "meter": lambda v: validation.name("meter", v),
    "minutes": lambda v: validation.integer("minutes", v, MINUTES_MIN, MINUTES_MAX),
    "kWh": lambda v: _positive("kWh", v),
    "period": lambda v: _choice("period", v, PERIODS),
    "email": lambda v: validation.email(v).lower(),
    "webhook": webhooks.check_url,
}
WHY = {"minutes": f" ({MINUTES_MIN} to {MINUTES_MAX} minutes without PUT /status)", "kWh": " (kWh in the period)",
       "period": f" ({' or '.join(PERIODS)})"}


def _checked(params: dict, problems: list[str]) -> dict:
    """Each field sent, checked ({name: value}; a field that fails is left out and its problem listed)."""
    values = {}
    for name, check_value in CHECKS.items():
        if params.get(name) is not None:
            try:
                values[name] = check_value(params[name])
            except BadRequest as error:
                problems.append(error.message)
    return values


def _misnamed(params: dict) -> list[str]:
    """A field sent in another case than its name (kwh for kWh): named, rather than taken as missing."""
    found = []
    for sent in params:
        known = next((name for name in FIELDS if name.lower() == str(sent).lower()), None)
        if known is not None and known != sent and known not in params:
            found.append(f"{str(sent)[:40]} is not a field: the field is {known}")
    return found


def _for_kind(kind: str, params: dict) -> list[str]:
    """The fields the kind does not take, and those it needs that are missing."""
    found = []
    for name in FIELDS[1:5]:
        if params.get(name) is not None and name not in TAKES[kind]:
            found.append(f"{name}: {kind} rules take no {name}")
        elif params.get(name) is None and name in NEEDS[kind]:
            found.append(f"{name} is required for {kind} rules{WHY[name]}")
    return found


def check(params: dict) -> Draft:
    """Every problem of a PUT /alerts at once (a 400 listing each, by field), or the Draft."""
    problems = _misnamed(params)
    values = _checked(params, problems)
    if params.get("kind") is None:
        problems.append(f"kind is required: one of {', '.join(RULE_KINDS)}")
    if "kind" in values:
        problems += _for_kind(values["kind"], params)
    given = [name for name in TARGETS if params.get(name) is not None]
    if not given:
        problems.append("a target is required: email (an address) or webhook (an https URL)")
    elif len(given) > 1:
        problems.append("one target per rule: email or webhook, not both (make two rules)")
    if problems:
        raise BadRequest("; ".join(problems))
    return Draft(values["kind"], values.get("meter"), values.get("minutes"), values.get("kWh"), values.get("period"),
                 given[0], values[given[0]])


def rule_ids(project_id: int, consistent: bool = True) -> set[int]:
    """The ids of the project's rules, as the evaluator's index lists them."""
    entry = db.get(accounts_table.NAME, accounts_table.alerting_key(project_id), consistent=consistent)
    return {int(alert_id) for alert_id in entry.get("alert_ids") or ()} if entry else set()


def create(project_id: int, params: dict, zone: tzinfo, created_by: int | None = None) -> dict:
    """PUT /alerts: a new rule; the answer is the rule as GET shows it, with its webhook's secret (shown
    this once; null for e-mail)."""
    draft = check(params)
    meter = None
    if draft.meter is not None:
        try:
            meter = meters.find(project_id, name=draft.meter)
        except NotFound:
            raise NotFound(f"meter: no meter named {draft.meter!r} in this project") from None
    if len(rule_ids(project_id)) >= MAX_RULES:        # before subscribing an address or encrypting a secret
        raise _full()
    item, secret = build(project_id, accounts_table.next_id("alert"), draft, meter, created_by)
    try:
        db.transact({
            "rule": ("put", accounts_table.NAME, {"item": item, "condition": "attribute_not_exists(pk)"}),
            "index": ("update", accounts_table.NAME, {
                "key": accounts_table.alerting_key(project_id), "expression": "ADD alert_ids :id",
                "values": {":id": {item["alert_id"]}, ":max": MAX_RULES},
                "condition": "attribute_not_exists(alert_ids) OR size(alert_ids) < :max"}),
        })
    except db.ConditionFailed:
        raise _full() from None
    return {**view(item, meter["name"] if meter else None, zone), "secret": secret}


def build(project_id: int, alert_id: int, draft: Draft, meter: Item | None,
          created_by: int | None = None) -> tuple[Item, str | None]:
    """(the item of a new rule, its webhook's secret or None): the secret made and encrypted, or the address
    subscribed to the project's topic. Not stored: create() writes it with the index entry."""
    item = {**accounts_table.alert_key(project_id, alert_id), "alert_id": alert_id, "project_id": project_id,
            "kind": draft.kind, "meter_id": meter["meter_id"] if meter else None, "minutes": draft.minutes,
            "kWh": draft.kwh, "period": draft.period, "target": draft.target, "created": int(clock.now()),
            "created_by": created_by, "version": 0, "firing": {}}
    if draft.target == "webhook":
        secret = sealing.new_secret()
        return {**item, "webhook": draft.address, "secret": sealing.seal(secret, project_id, alert_id)}, secret
    return {**item, "email": draft.address, "topic_arn": mail.subscribe(project_id, draft.address)}, None


def _full() -> Conflict:
    return Conflict(f"the project has {MAX_RULES} alert rules, the most it can have: delete one with DELETE /alerts")


def view(rule: Item, meter_name: str | None, zone: tzinfo, full: bool = True) -> dict:
    """A rule as GET /alerts shows it. full: the caller is an account (a read key sees the webhook's host
    only and no address: both can be credentials or personal)."""
    firing = rule.get("firing") or {}
    webhook, email = rule.get("webhook"), rule.get("email")
    if not full:
        webhook = webhooks.shown(webhook) if webhook else None
        email = None if email is None else "…@" + email.rsplit("@", 1)[-1]
    last_error = rule.get("last_error")
    return {"id": rule["alert_id"], "kind": rule["kind"], "meter": meter_name, "minutes": rule.get("minutes"),
            "kWh": rule.get("kWh"), "period": rule.get("period"), "email": email, "webhook": webhook,
            "state": "firing" if firing else "resolved", "firing": len(firing),
            "last_fired": _local(rule.get("last_fired"), zone), "last_error": None if not last_error else {
                **last_error, "at": _local(last_error.get("at"), zone)},
            "created": _local(rule.get("created"), zone)}


def _local(epoch: float | None, zone: tzinfo) -> datetime | None:
    return None if epoch is None else clock.local(epoch, zone)


def rules_of(project_id: int, consistent: bool = False) -> list[Item]:
    """Every rule of the project (one query), by id."""
    return list(accounts_table.project_items(project_id, accounts_table.ALERT, consistent=consistent))


def rules_by_id(projects: Mapping[int, Iterable[int]]) -> dict[int, list[Item]]:
    """{project id: its rules, by id} of {project id: rule ids}: one BatchGetItem per 100 rules, whatever the
    number of projects (the evaluator's read; a rule deleted meanwhile is simply not found)."""
    keys = [accounts_table.alert_key(project_id, int(alert_id)) for project_id, ids in projects.items()
            for alert_id in ids]
    found: dict = {project_id: [] for project_id in projects}
    for rule in db.batch_get(accounts_table.NAME, keys, consistent=False, projection=EVALUATED):
        found[rule["project_id"]].append(rule)
    return {project_id: sorted(listed, key=lambda rule: rule["alert_id"]) for project_id, listed in found.items()}


def listing(project_id: int, zone: tzinfo, full: bool = True) -> answers.Bounded:
    """GET /alerts: the project's rules by id, each with its state (firing while any meter or agent it
    watches is in alert, else resolved) and last_fired (at most MAX_RULES, checked against the answer's
    bounds before it is rendered, as every list is)."""
    rules = rules_of(project_id, consistent=True)
    wanted = {rule["meter_id"] for rule in rules if rule.get("meter_id") is not None}
    names = {}
    if wanted:
        names = {m["meter_id"]: m["name"] for m in db.batch_get(
            meters_table.NAME, [meters_table.meter_key(project_id, meter_id) for meter_id in wanted])}
    return answers.listing([view(rule, names.get(rule.get("meter_id")), zone, full) for rule in rules],
                           "the project's rules take more than one answer holds: ask in JSON, or delete some (DELETE /alerts)")


def delete(project_id: int, alert_id: Any) -> dict:
    """DELETE /alerts?id=: the rule stops at once (its pending deliveries are dropped); its history stays. The
    last rule of the project to an address takes the address's topic (and subscription) with it."""
    if alert_id is None:
        raise BadRequest("id is required: the rule's id as GET /alerts shows it")
    alert_id = validation.integer("id", alert_id, 1, 10 ** 15)
    rule = db.get(accounts_table.NAME, accounts_table.alert_key(project_id, alert_id))
    if rule is None:
        raise NotFound(f"no alert rule {alert_id} in this project")
    try:
        db.transact({
            "rule": ("delete", accounts_table.NAME, {"key": accounts_table.alert_key(project_id, alert_id),
                                                     "condition": "attribute_exists(pk)"}),
            "index": ("update", accounts_table.NAME, {
                "key": accounts_table.alerting_key(project_id), "expression": "DELETE alert_ids :id",
                "values": {":id": {alert_id}, ":one": alert_id}, "condition": "contains(alert_ids, :one)"}),
        })
    except db.ConditionFailed:
        raise NotFound(f"no alert rule {alert_id} in this project") from None
    if rule.get("email") and not any(other.get("email") == rule["email"] for other in rules_of(project_id, True)):
        try:
            mail.forget(rule["topic_arn"])
        except Exception as error:   # noqa: BLE001 - the rule is gone; the topic only lingers, unused
            log.warning("alert %s deleted; its address's topic was not (%s): nothing is sent to it", alert_id,
                        type(error).__name__)
    return {}
