"""The evaluation of alert rules, every minute: each rule's condition, for each meter or agent it watches.

Fan-out, so a run's work is bounded whatever the number of projects: schedule() (the @app.schedule
function, each minute) pages through the index of projects that have rules (AccountsTable's ALERTING
partition: one small item per project, listing its rules' ids) and queues one message per BATCH projects
on the evaluation queue; its worker (handle_event) evaluates them, BATCH projects × rules.MAX_RULES rules
at most. While the last round is not all taken by the workers (messages still waiting in the queue), the
schedule queues no new one: under more projects than the workers can take in a minute, rounds grow
longer, every project's turn still comes, and nothing piles up.

A message's rules are read by key (one BatchGetItem per 100 rules, whatever the projects), and the
projects' zones likewise; then each project costs one Query for its meters when a rule watches meters,
one for its agents when a rule watches agents; the rollups of the meters usage rules watch are read for
all of the message's projects at once (one BatchGetItem per 100 month items), then one
consumption.summaries of the hours of local yesterday and today gives both periods. Nothing is written
while nothing changes.

What fires when (per watched meter or agent, a "subject"):
  - meter_silent: the meter's State (chalicelib/metering/status.py) is late or silent; clears when it is
    ok again. A meter that never sent a reading is no subject (it never was ok).
  - agent_silent: no PUT /status from the agent for `minutes`; clears at its next report.
  - usage_above: the current local period (hour or day) so far, or the last complete one, used more
    than `kWh`; clears once a whole period used no more (so over-use across periods is one alert).
A subject fires once when its condition starts (`firing`) and once when it ends (`resolved`), never in
between: the rule's `firing` map (subject → the instant its condition began) is its state, written
under an optimistic `version` in one transaction with the events (their history items). Of two runs
that overlap, one commits; the other's events are never written nor sent. The events are then queued
for delivery (chalicelib/alerts/delivery.py); their keys wait in the rule's `unsent` set until they
are, so the events of a run that dies in between are queued by a later run (REDRIVE_SECONDS after),
never lost. At most MAX_EVENTS_PER_RULE transitions of a rule are taken per run (one transaction);
the rest follow a minute later.
"""
import bisect
import json
import logging
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from chalicelib.alerts import delivery, events, rules
from chalicelib.identity import accounts
from chalicelib.metering import consumption, days, meters, rollups, status
from chalicelib.platform import aws, clock, config, db
from chalicelib.platform.db import Item
from chalicelib.tables import accounts_table

BATCH = 50                   # projects per evaluation message (one worker's share)
INDEX_PAGE = 1000            # index entries per Query
REDRIVE_SECONDS = 300        # events left unsent this long are queued again (the evaluator's timeout is 60 s)
MAX_EVENTS_PER_RULE = 90     # transitions a rule takes per run: its state item and the events, one transaction
METERS_KINDS = ("meter_silent", "usage_above")
log = logging.getLogger("intellimeter.alerts")


class Observation(NamedTuple):
    """A subject as a run sees it: whether its condition holds, since when (it began, or it ended), the
    event's value, and its names."""

    alerting: bool
    since: float
    value: float | None
    meter: str | None
    agent: str | None


# ---- the schedule: fan-out ------------------------------------------------------------------------

def schedule(now: float | None = None) -> int:
    """Queue the projects that have rules (with their rules' ids) for evaluation, BATCH per message; the
    number of projects queued."""
    now = clock.now() if now is None else now
    queue = config.resource_name("AlertEvaluationQueue")
    waiting = int(aws.sqs().get_queue_attributes(QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessages"])
                  ["Attributes"]["ApproximateNumberOfMessages"])
    if waiting:
        log.warning("alert schedule: %d messages of the last round still wait for a worker: no new round", waiting)
        return 0
    batches: list[list] = [[]]
    queued = 0
    for entry in db.query(accounts_table.NAME, "pk = :p", {":p": accounts_table.ALERTING},
                          projection="sk, alert_ids", page_size=INDEX_PAGE):
        project_id = accounts_table.alerting_project(entry)
        if not entry.get("alert_ids"):
            _forget(project_id)
            continue
        if len(batches[-1]) == BATCH:
            batches.append([])
        batches[-1].append([project_id, sorted(int(alert_id) for alert_id in entry["alert_ids"])])
        queued += 1
        if len(batches) == 11:                 # ten full messages: one SendMessageBatch
            _send(queue, batches[:10], now)
            batches = batches[10:]
    _send(queue, [batch for batch in batches if batch], now)
    return queued


def _send(queue: str, batches: list[list], now: float) -> None:
    if not batches:
        return
    answer = aws.sqs().send_message_batch(QueueUrl=queue, Entries=[
        {"Id": str(n), "MessageBody": json.dumps({"projects": batch, "at": int(now)})} for n, batch in enumerate(batches)])
    if answer.get("Failed"):
        raise RuntimeError(f"the evaluation queue refused {len(answer['Failed'])} messages")


def _forget(project_id: int) -> None:
    """Drop the index entry of a project left with no rules (a creation meanwhile keeps it)."""
    try:
        db.delete(accounts_table.NAME, accounts_table.alerting_key(project_id), condition="attribute_not_exists(alert_ids)")
    except db.ConditionFailed:
        pass


# ---- the worker: evaluation of a batch of projects ---------------------------------------------

def handle_event(records: Iterable[Any]) -> int:
    """The evaluation queue's worker: evaluate each message's projects; the events written. A project
    that fails (a failing AWS call, or a bug) is logged and left to the next minute's run; the others go on."""
    written = 0
    for record in records:
        message = json.loads(record.body)
        written += evaluate_batch({int(project_id): ids for project_id, ids in message.get("projects", [])})
    return written


def evaluate_projects(project_ids: Iterable[int]) -> int:
    """Evaluate projects now, their rules as the index lists them; the events written."""
    try:
        listed = {project_id: rules.rule_ids(project_id, consistent=False) for project_id in project_ids}
    except Exception as error:   # noqa: BLE001 - as evaluate_batch: the next run's
        _failed(sorted(project_ids), error)
        return 0
    return evaluate_batch(listed)


def evaluate_batch(projects: Mapping[int, Iterable[int]]) -> int:
    """Evaluate {project id: rule ids} now: the rules in one BatchGetItem per 100, the projects' zones in one
    per 100, then each project's meters and agents, the rollups usage rules watch across all the projects
    (one BatchGetItem per 100 month items), then each project's rules; the events written. The projects
    are evaluated as of one instant. A project whose evaluation fails is logged and left to the next run."""
    try:
        every_rule = rules.rules_by_id(projects)
        zones = accounts.project_zones(projects)
    except Exception as error:   # noqa: BLE001 - the whole batch is the next run's
        _failed(sorted(projects), error)
        return 0
    now = clock.now()
    read: dict[int, _Project] = {}
    for project_id, its_rules in every_rule.items():
        if not its_rules or project_id not in zones:
            continue
        try:
            read[project_id] = _Project(project_id, now, its_rules, zones[project_id])
        except Exception as error:   # noqa: BLE001 - one project's failure must not stop the others'
            _failed([project_id], error)
    _read_rollups(list(read.values()))
    written = 0
    for project_id, project in read.items():
        try:
            written += _evaluate(project)
        except Exception as error:   # noqa: BLE001 - as above
            _failed([project_id], error)
    return written


def _read_rollups(projects: list["_Project"]) -> None:
    """The month items of the meters usage rules watch, of every project at once (one read per set of
    months: projects whose local today differ may need others); a project whose read fails here reads its
    own during its evaluation."""
    by_months: dict[tuple[str, ...], dict[int, set[int]]] = {}
    for project in projects:
        meter_ids = project.usage_meters()
        if meter_ids:
            by_months.setdefault(project.usage_months(), {})[project.project_id] = meter_ids
    by_id = {project.project_id: project for project in projects}
    for months, wanted in by_months.items():
        try:
            found = rollups.read_months_across(wanted, months)
        except Exception as error:   # noqa: BLE001 - each project then reads its own
            log.warning("alert evaluation: the rollups of projects %s were not read at once (%s)",
                        sorted(wanted), type(error).__name__)
            continue
        for project_id, items in found.items():
            by_id[project_id].rollups = items


def _failed(project_ids: list[int], error: Exception) -> None:
    if aws.is_transient(error):
        log.warning("alert evaluation of projects %s failed (%s): the next run retries", project_ids,
                    type(error).__name__)
    else:
        log.exception("alert evaluation of projects %s failed", project_ids)


class _Project:
    """What one evaluation of a project reads, each thing once and only when a rule needs it."""

    def __init__(self, project_id: int, now: float, every_rule: list[Item], zone: ZoneInfo):
        self.project_id, self.now, self.zone, self.every_rule = project_id, now, zone, every_rule
        wanted = {rule["kind"] for rule in every_rule}
        # As they are now: the meter item keeps its latest reading as of its hour's first write (meters.current).
        self.meters = meters.current(project_id, list(meters.all_meters(project_id))) \
            if wanted & set(METERS_KINDS) else []
        self.agents = list(accounts_table.project_items(project_id, accounts_table.AGENT)) \
            if "agent_silent" in wanted else []
        self.rollups: rollups.MonthItems | None = None   # the usage meters' month items, when read across projects
        self._usage: dict[str, dict[int, Usage]] | None = None

    def chosen(self, rule: Item) -> list[Item]:
        """The meters a rule watches: its meter, or every meter of the project."""
        meter_id = rule.get("meter_id")
        return self.meters if meter_id is None else [m for m in self.meters if m["meter_id"] == meter_id]

    def _usage_chosen(self) -> dict[int, Item]:
        """{meter id: meter} the usage rules watch."""
        return {m["meter_id"]: m for rule in self.every_rule if rule["kind"] == "usage_above"
                for m in self.chosen(rule)}

    def usage_meters(self) -> set[int]:
        """The ids of the meters usage rules watch."""
        return set(self._usage_chosen())

    def usage_months(self) -> tuple[str, ...]:
        """The local months whose rollups the usage rules read (those of yesterday and today)."""
        today = days.local_day(self.now, self.zone)
        return tuple(rollups.months_of(today - timedelta(days=1), today))

    def usage(self, period: str) -> dict[int, "Usage"]:
        """The Usage in hours or days of the meters usage rules watch (one consumption.summaries call for both)."""
        if self._usage is None:
            self._usage = _usage(self, list(self._usage_chosen().values()))
        return self._usage[period]


class Usage(NamedTuple):
    """A meter's energy (kWh, None: unknown) in the last complete local period and in the current one so
    far, with the instants they start."""

    before: float
    used_before: float | None
    start: float
    used: float | None


def _kwh(summary: rollups.Summary) -> float | None:
    return None if summary.energy is None else summary.energy / 10 ** 6


def _usage(project: _Project, chosen: list[Item]) -> dict[str, dict[int, Usage]]:
    """{"hour" | "day": {meter id: Usage}} from the hours of local yesterday and today (GET /consumption's
    hours): a day's energy is the sum of its hours' to the µkWh (differences of one curve telescope), so
    both periods come from one read, and one read of the open hour's readings."""
    if not chosen:
        return {"hour": {}, "day": {}}
    now, zone = project.now, project.zone
    today = days.local_day(now, zone)
    starts = days.hour_starts(today - timedelta(days=1), today, zone)
    table = consumption.summaries(project.project_id, chosen, zone, today - timedelta(days=1), today, "hour",
                                  read=project.rollups)
    current = bisect.bisect_right(starts, now) - 1             # the hour now is in (yesterday's hours come first)
    midnight = days.midnight(today, zone)
    split = starts.index(midnight)
    return {
        "hour": {meter_id: Usage(starts[current - 1], _kwh(hours[current - 1]), starts[current], _kwh(hours[current]))
                 for meter_id, hours in table.items()},
        "day": {meter_id: Usage(starts[0], _kwh(rollups.combine(hours[:split])), midnight,
                                _kwh(rollups.combine(hours[split:current + 1])))
                for meter_id, hours in table.items()},
    }


def _meters_silent(rule: Item, project: _Project) -> dict[str, Observation]:
    """meter_silent: each meter not ok, since it turned late (a meter that never reported is no subject)."""
    seen = {}
    for meter in project.chosen(rule):
        until, latest = status.ok_until(meter), meters.last(meter, meters.LATEST)
        if until is None or latest is None:
            continue
        alerting = status.state(meter, project.now) != "ok"
        seen[f"m{meter['meter_id']}"] = Observation(alerting, until if alerting else latest.epoch,
                                                    round((project.now - latest.epoch) / 60, 1), meter["name"], None)
    return seen


def _agents_silent(rule: Item, project: _Project) -> dict[str, Observation]:
    """agent_silent: each agent without PUT /status for the rule's minutes."""
    seen = {}
    limit = 60 * rule["minutes"]
    for agent in project.agents:
        contact = agent["last_contact"]
        alerting = project.now - contact > limit
        seen["a" + agent["sk"].split("#", 1)[1]] = Observation(
            alerting, contact + limit if alerting else contact, round((project.now - contact) / 60, 1), None,
            agent["agent"])
    return seen


def _usage_above(rule: Item, project: _Project) -> dict[str, Observation]:
    """usage_above: each meter over the bound in the current period so far or the last complete one."""
    seen = {}
    usage, limit = project.usage(rule["period"]), rule["kWh"]
    for meter in project.chosen(rule):
        if meter["meter_id"] not in usage:
            continue
        known = usage[meter["meter_id"]]
        over_before = known.used_before is not None and known.used_before > limit
        over = known.used is not None and known.used > limit
        if over_before or over:
            observation = Observation(True, known.before if over_before else known.start,
                                      known.used if over else known.used_before, meter["name"], None)
        else:
            observation = Observation(False, known.before, known.used_before, meter["name"], None)
        seen[f"m{meter['meter_id']}"] = observation
    return seen


def _observe(rule: Item, project: _Project) -> dict[str, Observation]:
    """{subject: Observation} of a rule now."""
    if rule["kind"] == "meter_silent":
        return _meters_silent(rule, project)
    if rule["kind"] == "agent_silent":
        return _agents_silent(rule, project)
    return _usage_above(rule, project)


def _evaluate(project: _Project) -> int:
    """Evaluate the rules of a project (as read) at its `now`; the events written (and queued for delivery)."""
    written = 0
    for rule in project.every_rule:
        if rule.get("unsent") and rule.get("unsent_at", 0) <= project.now - REDRIVE_SECONDS:
            _redrive(project.project_id, rule, project.now)
        written += _evaluate_rule(rule, project)
    return written


def _evaluate_rule(rule: Item, project: _Project) -> int:
    """Write and queue the events of a rule's subjects whose condition started or ended; how many."""
    seen = _observe(rule, project)
    old = rule.get("firing") or {}
    new = {subject: since for subject, since in old.items() if subject in seen}   # vanished subjects drop out
    transitions = [(subject, seen[subject]) for subject in seen
                   if seen[subject].alerting != (subject in old)][:MAX_EVENTS_PER_RULE]
    if not transitions and new == old:
        return 0
    bodies = []
    for subject, observation in transitions:
        if observation.alerting:
            new[subject] = int(observation.since)
        else:
            new.pop(subject, None)
        bodies.append(events.body(events.new_id(), rule["alert_id"], rule["kind"],
                                  "firing" if observation.alerting else "resolved", observation.meter,
                                  observation.agent, observation.since, observation.value, project.project_id,
                                  project.zone))
    if not _commit(project.project_id, rule, new, bodies, project.now):
        return 0
    for b in bodies:
        log.info("alert %s %s: %s %s (event %s)", b["alert"], b["state"], b["kind"], b["meter"] or b["agent"], b["id"])
    if bodies:
        keys = [events.key(project.project_id, project.now, b["id"])["sk"] for b in bodies]
        try:
            _queue(project.project_id, rule["alert_id"], keys)
        except Exception as error:   # noqa: BLE001 - committed and kept in unsent: a later run queues them
            log.warning("alert %s: %d events not queued (%s): queued again in %d s", rule["alert_id"], len(keys),
                        type(error).__name__, REDRIVE_SECONDS)
    return len(bodies)


def _commit(project_id: int, rule: Item, firing: dict, bodies: list[dict], now: float) -> bool:
    """Write the rule's new state and its events in one transaction, if no other run did first."""
    names = {"#f": "firing", "#v": "version"}
    values = {":f": firing, ":v": rule.get("version", 0), ":next": rule.get("version", 0) + 1}
    expression = "SET #f = :f, #v = :next"
    if any(b["state"] == "firing" for b in bodies):
        expression += ", last_fired = :now"
        values[":now"] = int(now)
    if bodies:
        expression += ", unsent_at = :now ADD unsent :keys"
        values[":now"] = int(now)
        values[":keys"] = {events.key(project_id, now, b["id"])["sk"] for b in bodies}
    operations: dict = {"rule": ("update", accounts_table.NAME, {
        "key": accounts_table.alert_key(project_id, rule["alert_id"]), "expression": expression, "names": names,
        "values": values, "condition": "#v = :v"})}
    for n, b in enumerate(bodies):
        operations[f"event {n}"] = ("put", accounts_table.NAME, {"item": events.item(project_id, now, b)})
    try:
        db.transact(operations)
    except db.ConditionFailed:
        return False                 # another run committed first (or the rule was deleted): its events stand
    return True


def _queue(project_id: int, alert_id: int, keys: list[str]) -> None:
    """Queue events for delivery, then take them out of the rule's unsent set."""
    delivery.enqueue(project_id, alert_id, keys)
    try:
        db.update(accounts_table.NAME, accounts_table.alert_key(project_id, alert_id), "DELETE unsent :keys",
                  expression_values={":keys": set(keys)}, condition="attribute_exists(pk)")
    except db.ConditionFailed:
        pass                         # the rule was deleted meanwhile


def _redrive(project_id: int, rule: Item, now: float) -> None:
    """Queue the events a run committed but did not queue (it died in between), claiming them first so two
    runs never both do."""
    try:
        db.update(accounts_table.NAME, accounts_table.alert_key(project_id, rule["alert_id"]),
                  "SET unsent_at = :now", expression_values={":now": int(now), ":was": rule["unsent_at"]},
                  condition="unsent_at = :was")
    except db.ConditionFailed:
        return
    log.warning("alert %s: %d events committed earlier were not queued: queued now", rule["alert_id"],
                len(rule["unsent"]))
    _queue(project_id, rule["alert_id"], sorted(rule["unsent"]))
