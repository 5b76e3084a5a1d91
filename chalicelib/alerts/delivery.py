"""Delivery of alert events through a queue, so a receiver's slowness never reaches the evaluator.

enqueue() puts one message per event on the delivery queue: {"project", "alert", "event" (the event's
sort key), "attempt"} — never the secret, never the body. The queue's worker (handle_event; in AWS each
message its own invocation, so a receiver that hangs holds up only its own delivery) reads the rule (a
rule deleted meanwhile: the delivery is dropped), claims the attempt on the event item, then POSTs the
signed webhook (chalicelib/alerts/webhooks.py) or publishes the e-mail (chalicelib/alerts/mail.py).

The claim (attempt = k, claim = the message's id, unless a later attempt or another message holds it, or
the event is delivered) makes an attempt run once even when its message was queued twice (an
evaluator that queued events but did not learn it, and queued them again).

A failed attempt is sent again with a delay (BACKOFF: 30 s doubling to 15 minutes, ATTEMPTS tries over
about an hour), then the message goes to the dead-letter queue. Each failure is written on the rule as
last_error (when, the event, the attempt, why, whether it will be retried); a success removes it and
sets last_delivered. The event item keeps delivered (when) and error (the last failure).
"""
import json
import logging
from collections.abc import Iterable
from typing import Any

from chalicelib.alerts import events, mail, sealing, webhooks
from chalicelib.platform import aws, clock, config, db
from chalicelib.platform.db import Item
from chalicelib.tables import accounts_table

ATTEMPTS = 9
BACKOFF = (30, 60, 120, 240, 480, 900, 900, 900)   # seconds before attempts 2..9: 3,630 s, about an hour
log = logging.getLogger("intellimeter.alerts")


def enqueue(project_id: int, alert_id: int, event_keys: Iterable[str]) -> None:
    """Queue the first attempt of each event (by sort key) of a rule."""
    keys = list(event_keys)
    queue = config.resource_name("AlertDeliveryQueue")
    for start in range(0, len(keys), 10):
        entries = [{"Id": str(n), "MessageBody": json.dumps({"project": project_id, "alert": alert_id,
                                                             "event": key, "attempt": 1})}
                   for n, key in enumerate(keys[start:start + 10])]
        answer = aws.sqs().send_message_batch(QueueUrl=queue, Entries=entries)
        if answer.get("Failed"):
            raise RuntimeError(f"the delivery queue refused {len(answer['Failed'])} messages")


def handle_event(records: Iterable[Any]) -> list[str]:
    """The delivery queue's worker: deliver each message; what became of each (see deliver)."""
    return [deliver(json.loads(record.body), record.to_dict().get("messageId", "")) for record in records]


def _event_key(message: dict) -> Item:
    return {"pk": accounts_table.alert_log_pk(int(message["project"])), "sk": str(message["event"])}


def _claim(message: dict, message_id: str) -> Item | None:
    """The event item, the attempt claimed for this message; None when it is not this message's to send."""
    attempt = int(message["attempt"])
    try:
        return db.update(accounts_table.NAME, _event_key(message), "SET attempt = :k, claim = :m",
                         expression_values={":k": attempt, ":m": message_id},
                         condition="attribute_exists(pk) AND attribute_not_exists(delivered) AND "
                                   "(attribute_not_exists(attempt) OR attempt < :k OR (attempt = :k AND claim = :m))",
                         return_values="ALL_NEW")
    except db.ConditionFailed:
        return None


def deliver(message: dict, message_id: str) -> str:
    """One attempt of one event: 'delivered', 'retrying' (sent again later), 'dead' (to the dead letters) or
    'dropped' (the rule was deleted, the event expired, or the attempt was another message's)."""
    project_id, alert_id, attempt = int(message["project"]), int(message["alert"]), int(message["attempt"])
    rule = db.get(accounts_table.NAME, accounts_table.alert_key(project_id, alert_id))
    if rule is None:
        return "dropped"
    event = _claim(message, message_id)
    if event is None:
        return "dropped"
    body = event["body"]
    if rule["target"] == "webhook":
        data = events.encoded(body)
        secret = sealing.unseal(rule["secret"], project_id, alert_id)
        outcome = webhooks.post(rule["webhook"], data, {
            webhooks.SIGNATURE_HEADER: webhooks.signature(secret, data, int(clock.now())),
            "X-Intellimeter-Event": body["id"]})
    else:
        outcome = _mail(rule, body)
    now = int(clock.now())
    if outcome.delivered:
        db.update(accounts_table.NAME, _event_key(message), "SET delivered = :now", expression_values={":now": now})
        _on_rule(project_id, alert_id, "SET last_delivered = :now REMOVE last_error", {":now": now})
        return "delivered"
    retrying = attempt < ATTEMPTS
    failure = {"at": now, "event": body["id"], "attempt": attempt, "error": outcome.error, "retrying": retrying}
    log.warning("alert %s: delivery of event %s failed (attempt %d of %d): %s", alert_id, body["id"], attempt,
                ATTEMPTS, outcome.error)
    db.update(accounts_table.NAME, _event_key(message), "SET #e = :e", names={"#e": "error"},
              expression_values={":e": failure})
    _on_rule(project_id, alert_id, "SET last_error = :e", {":e": failure})
    if retrying:
        aws.sqs().send_message(QueueUrl=config.resource_name("AlertDeliveryQueue"),
                               MessageBody=json.dumps({**message, "attempt": attempt + 1}),
                               DelaySeconds=BACKOFF[attempt - 1])
        return "retrying"
    aws.sqs().send_message(QueueUrl=config.resource_name("AlertDeadLetters"),
                           MessageBody=json.dumps({**message, "error": outcome.error}))
    return "dead"


def _on_rule(project_id: int, alert_id: int, expression: str, values: dict) -> None:
    try:
        db.update(accounts_table.NAME, accounts_table.alert_key(project_id, alert_id), expression,
                  expression_values=values, condition="attribute_exists(pk)")
    except db.ConditionFailed:
        pass                          # deleted meanwhile


def _mail(rule: Item, body: dict) -> webhooks.Outcome:
    """Publish the e-mail of an event; an SNS failure is a failed attempt like a receiver's."""
    who = f"meter {body['meter']}" if body.get("meter") else f"agent {body['agent']}"
    what = {"meter_silent": "is not reporting", "agent_silent": "has not reported",
            "usage_above": f"used more than {rule.get('kWh')} kWh in {'an' if rule.get('period') == 'hour' else 'a'} "
                           f"{rule.get('period')}"}[body["kind"]]
    if body["state"] == "resolved":
        what = {"meter_silent": "is reporting again", "agent_silent": "reports again",
                "usage_above": f"is back within {rule.get('kWh')} kWh per {rule.get('period')}"}[body["kind"]]
    subject = f"Intellimeter alert {body['state']}: {who} {what}"
    text = "\n".join([f"{who[0].upper()}{who[1:]} {what} (since {body['since']}).", "",
                      f"Alert rule {body['alert']} of project {body['project']} ({body['kind']}), event {body['id']}.",
                      "", json.dumps(body, indent=2)])
    try:
        mail.send(rule["topic_arn"], subject, text, body["id"])
    except Exception as error:   # noqa: BLE001 - retried like a receiver's failure
        code = getattr(error, "response", {}).get("Error", {}).get("Code") or type(error).__name__
        return webhooks.Outcome(False, None, f"SNS did not take the e-mail ({code})")
    return webhooks.Outcome(True, None, None)
