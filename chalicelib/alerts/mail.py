"""Alert e-mails through SNS: one topic per project, each address subscribed to it once.

The topic is `<ALERT_TOPIC_PREFIX>-<project id>` (the prefix is the stack's, so the function's policy
can grant these topics and no other). An address is subscribed with the filter policy {"to": [address]},
and each e-mail is published with the message attribute to=<its address>: the topic's other
subscribers (the project's other addresses) never receive it. SNS asks the address to confirm (its own
e-mail with a link) before delivering anything; rules to one address share its subscription.

Deleting a rule does not unsubscribe its address (SNS's Unsubscribe cannot be limited to our topics in
IAM): nothing is published to an address no rule names, so it receives nothing more, and a new rule to
it needs no new confirmation.
"""
import json
import logging

from chalicelib.platform import aws, config

SUBJECT_MAX = 99
log = logging.getLogger("intellimeter.alerts")


def topic_name(project_id: int) -> str:
    """The name of a project's alert topic."""
    return f"{config.alert_topic_prefix()}-{project_id}"


def subscribe(project_id: int, address: str) -> str:
    """Subscribe an address to the project's topic (created if need be); the topic's ARN. Idempotent."""
    client = aws.sns()
    topic = client.create_topic(Name=topic_name(project_id))["TopicArn"]
    client.subscribe(TopicArn=topic, Protocol="email", Endpoint=address, ReturnSubscriptionArn=True,
                     Attributes={"FilterPolicy": json.dumps({"to": [address]})})
    return topic


def _subject(text: str) -> str:
    """SNS takes a subject of printable ASCII, under 100 characters, starting with a letter or digit."""
    plain = "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in text).strip()
    return plain[:SUBJECT_MAX] or "Intellimeter alert"


def send(topic_arn: str, address: str, subject: str, text: str, event_id: str) -> str:
    """Publish one e-mail to one address of the topic; SNS's message id. The log says what was sent
    (locally, the moto SNS delivers nothing: the log is where the e-mail is seen)."""
    subject = _subject(subject)
    message_id = aws.sns().publish(TopicArn=topic_arn, Subject=subject, Message=text, MessageAttributes={
        "to": {"DataType": "String", "StringValue": address}})["MessageId"]
    log.info("alert e-mail published: event %s, subject %r, SNS message %s\n%s", event_id, subject, message_id, text)
    return message_id
