"""Alert e-mails through SNS: each address of a project gets a topic of its own, and is its only subscriber.

The topic is `<ALERT_TOPIC_PREFIX>-<project id>-<digest of the address>` (the prefix is the stack's, so the
function's policy grants these topics and no other). SNS e-mails the address a link to confirm before it
delivers anything; rules of a project to one address share its topic (one confirmation). When the last
rule of the project naming the address is deleted, so is the topic, and with it the subscription.

Why not one topic per project with a filter policy per address: SNS allows 200 filter policies per
account and region, and its Unsubscribe cannot be limited to our topics in IAM; a topic per address
needs neither (100,000 topics per account), and keeps each address's e-mails apart by construction.
"""
import hashlib
import logging

from botocore.exceptions import ClientError

from chalicelib.platform import aws, config
from chalicelib.platform.errors import BadRequest, Conflict

SUBJECT_MAX = 99
log = logging.getLogger("intellimeter.alerts")


def topic_name(project_id: int, address: str) -> str:
    """The name of the topic of a project's address (its digest: the name never shows the address)."""
    return f"{config.alert_topic_prefix()}-{project_id}-{hashlib.sha256(address.encode('utf-8')).hexdigest()[:24]}"


def subscribe(project_id: int, address: str) -> str:
    """The address's topic (created if need be) with the address subscribed; its ARN. Idempotent: SNS
    returns the existing topic and subscription (and asks again for a confirmation still pending). An
    address SNS refuses is a 400 naming email; SNS's quotas reached, a 409."""
    client = aws.sns()
    try:
        topic = client.create_topic(Name=topic_name(project_id, address))["TopicArn"]
        client.subscribe(TopicArn=topic, Protocol="email", Endpoint=address, ReturnSubscriptionArn=True)
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        if code in ("InvalidParameter", "InvalidParameterValue"):
            raise BadRequest("email: SNS does not take this address: give another") from None
        if code in ("TopicLimitExceeded", "SubscriptionLimitExceeded"):
            raise Conflict("e-mail alerts are at the cloud account's limit of SNS topics or subscriptions: "
                           "use a webhook, or ask the operator to raise the quota") from None
        raise
    return topic


def forget(topic_arn: str) -> None:
    """Delete an address's topic (its subscription goes with it): no rule names the address any more."""
    aws.sns().delete_topic(TopicArn=topic_arn)


def _subject(text: str) -> str:
    """SNS takes a subject of printable ASCII, under 100 characters, starting with a letter or digit."""
    plain = "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in text).strip()
    return plain[:SUBJECT_MAX] or "Intellimeter alert"


def send(topic_arn: str, subject: str, text: str, event_id: str) -> str:
    """Publish one e-mail to the address's topic; SNS's message id. The log says what was sent (locally,
    the embedded SNS e-mails nothing: the log is where the e-mail is seen)."""
    subject = _subject(subject)
    message_id = aws.sns().publish(TopicArn=topic_arn, Subject=subject, Message=text)["MessageId"]
    log.info("alert e-mail published: event %s, subject %r, SNS message %s\n%s", event_id, subject, message_id, text)
    return message_id
