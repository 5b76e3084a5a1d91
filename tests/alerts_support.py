"""Doubles and helpers of the alert tests: a webhook receiver on the loopback that checks signatures with
code the project did not write (Stripe's library: the same `t=…,v1=…` scheme over "<t>.<body>"), and the
app's workers run as their AWS event sources run them (tools/local_worker.py)."""
import json
import os
import threading
import time

import boto3
import stripe

from tests.loopback_http import LoopbackServer, QuietHandler

TOLERANCE = 300          # seconds: Stripe's default tolerance for a signature's timestamp


class Receiver:
    """A webhook receiver on 127.0.0.1. By path: /ok answers 200, /fail 500, /hang holds the request until
    `release` is set (or HANG_SECONDS pass) then answers 200. Every POST is recorded with whether its
    signature verifies (stripe.WebhookSignature.verify_header, against `secret` once it is known)."""

    HANG_SECONDS = 30.0

    def __init__(self):
        self.codes: dict[str, int] = {}            # path → the status it answers (default: 500 for /fail…, else 200)
        self.posts: list[dict] = []
        self.secrets: dict[str, str] = {}          # path → the secret its rule was given
        self.release = threading.Event()
        self.lock = threading.Lock()
        receiver = self

        class Handler(QuietHandler):
            def do_POST(self):
                body = self.read_body()
                header = self.headers.get("X-Intellimeter-Signature")
                path = self.path.split("?")[0]
                verified = None
                secret = receiver.secrets.get(path)
                if secret is not None:
                    try:
                        stripe.WebhookSignature.verify_header(body, header, secret, tolerance=TOLERANCE)
                        verified = True
                    except stripe.SignatureVerificationError:
                        verified = False
                with receiver.lock:
                    receiver.posts.append({"path": path, "body": json.loads(body), "raw": body, "header": header,
                                           "verified": verified, "at": time.monotonic(), "clock": time.time(),
                                           "event": self.headers.get("X-Intellimeter-Event")})
                if path.startswith("/hang"):
                    receiver.release.wait(Receiver.HANG_SECONDS)
                self.answer(receiver.codes.get(path, 500 if path.startswith("/fail") else 200), [], b"")

        self.server = LoopbackServer(Handler)
        self.url = self.server.url

    def to(self, path):
        return self.url + path

    def at(self, path):
        with self.lock:
            return [post for post in self.posts if post["path"] == path]

    def close(self):
        self.release.set()
        self.server.close()


def sqs():
    return boto3.client("sqs", region_name="us-east-1")


def drain_deliveries(max_messages=1000):
    """Run the delivery worker on every visible message (each as its own invocation); handled count."""
    from app import alert_delivery
    from tools import local_worker

    handled, _failed = local_worker.drain(sqs(), os.environ["ALERT_DELIVERY_QUEUE_URL"], alert_delivery,
                                          max_messages=max_messages)
    return handled


def drain_evaluations():
    from app import alert_evaluator
    from tools import local_worker

    return local_worker.drain(sqs(), os.environ["ALERT_EVALUATION_QUEUE_URL"], alert_evaluator)[0]


def queued(variable):
    """Messages waiting in a queue (visible, delayed or in flight)."""
    attributes = sqs().get_queue_attributes(QueueUrl=os.environ[variable], AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesDelayed", "ApproximateNumberOfMessagesNotVisible"])
    return sum(int(v) for v in attributes["Attributes"].values())


def scheduled_event():
    """The EventBridge event a rate(1 minute) rule passes its function."""
    return {"version": "0", "account": "123456789012", "region": "us-east-1", "detail": {},
            "detail-type": "Scheduled Event", "source": "aws.events", "time": "", "id": "test", "resources": []}
