"""Alert events: what each firing or resolution says (the webhook's body), and their history (GET /alerts/events).

An event is one item of AccountsTable, {pk: "ALERTLOG#<project>", sk: "<epoch>#<event id>"} (epoch:
when it happened), written in the same transaction as the rule's new state (chalicelib/alerts/evaluator.py),
so the history holds exactly the events that were decided, once each. This module owns its fields:
  body (the webhook's JSON body, a dict: id, alert, kind, state, meter, agent, since, value, project),
  alert_id, at (epoch), expires_at (TTL: KEEP_DAYS), and the delivery's bookkeeping
  (chalicelib/alerts/delivery.py): attempt, claim, delivered (epoch), error.
"""
import json
import secrets
from datetime import datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from chalicelib.metering import days
from chalicelib.platform import answers, clock, db
from chalicelib.platform.db import Item
from chalicelib.platform.errors import PayloadTooLarge
from chalicelib.tables import accounts_table

KEEP_DAYS = 90
MAX_EVENTS = 5000          # events one GET /alerts/events answers (~1.5 MB of JSON at most)
STATES = ("firing", "resolved")


def new_id() -> str:
    """A new event id (80 random bits, hex): the receiver's key to recognise an event delivered twice."""
    return secrets.token_hex(10)


def body(event_id: str, alert_id: int, kind: str, state: str, meter: str | None, agent: str | None, since: float,
         value: float | None, project_id: int, zone: tzinfo) -> dict:
    """The webhook body of an event (and how GET /alerts/events shows it). since: ISO 8601 with the
    offset of the project's zone."""
    return {"id": event_id, "alert": alert_id, "kind": kind, "state": state, "meter": meter, "agent": agent,
            "since": datetime.fromtimestamp(since, zone).isoformat(timespec="seconds"),
            "value": value, "project": project_id}


def encoded(event_body: dict) -> bytes:
    """The bytes POSTed (and signed): compact JSON, ASCII only."""
    return json.dumps(event_body, separators=(",", ":")).encode("ascii")


def key(project_id: int, at: float, event_id: str) -> Item:
    return accounts_table.alert_event_key(project_id, at, event_id)


def item(project_id: int, at: float, event_body: dict) -> Item:
    """The history item of an event that happened at `at`."""
    return {**key(project_id, at, event_body["id"]), "body": event_body, "alert_id": event_body["alert"],
            "at": int(at), "expires_at": int(at) + KEEP_DAYS * 86400}


def history(project_id: int, start: Any, end: Any, zone: ZoneInfo) -> answers.Bounded:
    """GET /alerts/events: the events of local days start..end (YYYY-MM-DD, inclusive), oldest first,
    each as its webhook body. At most KEEP_DAYS days back are kept; the reading stops past MAX_EVENTS (413),
    and what was read is checked against the answer's bounds before it is rendered, as every list is."""
    span = days.day_range(days.parse_day("start", start), days.parse_day("end", end), zone, max_days=KEEP_DAYS + 1)
    now = clock.now()
    found = []
    for event in db.query(accounts_table.NAME, "pk = :p AND sk BETWEEN :a AND :b",
                          {":p": accounts_table.alert_log_pk(project_id),
                           ":a": accounts_table.alert_log_range(span.start),
                           ":b": accounts_table.alert_log_range(span.end)},
                          names={"#b": "body"}, projection="#b, expires_at", page_size=1000):
        if event.get("expires_at", now + 1) <= now:
            continue                       # expired: DynamoDB's TTL removes it within a day or two
        found.append(event["body"])
        if len(found) > MAX_EVENTS:
            raise PayloadTooLarge(f"more than {MAX_EVENTS} events in {span.first}..{span.last}: ask for fewer days")
    return answers.listing(found, "ask for fewer days (start, end)")
