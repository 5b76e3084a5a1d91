"""A faulty AWS: an HTTP proxy in front of the moto server that fails a seeded random share of the calls.

The API's AWS endpoint (AWS_ENDPOINT_URL) points here instead of at moto. Per call it either
forwards, or (with probability ``rate``) does what AWS and networks do:

* ``throttle``: the service's throttling answer (DynamoDB ProvisionedThroughputExceededException,
  KMS ThrottlingException, S3 503 SlowDown), not forwarded;
* ``500``: an internal error answer (DynamoDB InternalServerError, KMS KMSInternalException, S3
  InternalError), not forwarded;
* ``drop``: the connection closed without an answer, not forwarded;
* ``hang``: no answer until past the client's read timeout, then closed, not forwarded;
* ``lost``: forwarded (moto carries it out), then the connection closed: the answer is lost.

``outage(seconds)`` fails every call (``drop``) for a while: a region having a bad minute.
The service is told by the request (X-Amz-Target for DynamoDB and KMS, else S3).
"""
import random
import threading
import time
from collections import Counter
from urllib.parse import urlsplit

from tests.loopback_http import LoopbackServer, QuietHandler, forward

KINDS = ("throttle", "500", "drop", "hang", "lost")

_ANSWERS = {   # service → kind → (status, content type, body)
    "dynamodb": {
        "throttle": (400, "application/x-amz-json-1.0",
                     b'{"__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",'
                     b'"message":"injected: throughput exceeded"}'),
        "500": (500, "application/x-amz-json-1.0",
                b'{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"injected"}'),
    },
    "kms": {
        "throttle": (400, "application/x-amz-json-1.1", b'{"__type":"ThrottlingException","message":"injected"}'),
        "500": (500, "application/x-amz-json-1.1", b'{"__type":"KMSInternalException","message":"injected"}'),
    },
    "s3": {
        "throttle": (503, "application/xml",
                     b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>SlowDown</Code>"
                     b"<Message>injected</Message></Error>"),
        "500": (500, "application/xml",
                b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>InternalError</Code>"
                b"<Message>injected</Message></Error>"),
    },
}


class FaultyAwsProxy:
    """A threaded HTTP proxy to ``upstream`` (the moto server) failing a share ``rate`` of the calls."""

    def __init__(self, upstream, rate=0.1, seed=0, hang_seconds=5.0, kinds=KINDS):
        self.upstream = urlsplit(upstream)
        self.rate = rate
        self.kinds = tuple(kinds)
        self.hang_seconds = hang_seconds
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.calls = 0
        self.faults: Counter = Counter()
        self.by_service: Counter = Counter()
        self._outage_until = 0.0
        proxy = self

        class Handler(QuietHandler):
            def _handle(self):
                body = self.read_body()
                service = _service(self.headers)
                kind = proxy._pick(service)
                if kind in ("drop", "outage"):
                    return self.drop()
                if kind == "hang":
                    time.sleep(proxy.hang_seconds)
                    return self.drop()
                if kind in ("throttle", "500"):
                    status, media_type, data = _ANSWERS[service][kind]
                    return self.answer(status, [("Content-Type", media_type)], data)
                try:
                    status, headers, data = forward(proxy.upstream, self.command, self.path, self.headers, body)
                except OSError:
                    return self.drop()
                if kind == "lost":
                    return self.drop()
                self.answer(status, headers, data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.httpd = LoopbackServer(Handler)
        self.url = self.httpd.url

    @property
    def failed_share(self):
        """The share of AWS calls that failed (outages included)."""
        return sum(self.faults.values()) / self.calls if self.calls else 0.0

    def outage(self, seconds):
        """Fail every call for the next seconds."""
        self._outage_until = time.monotonic() + seconds

    def _pick(self, service):
        with self.lock:
            self.calls += 1
            self.by_service[service] += 1
            if time.monotonic() < self._outage_until:
                kind = "outage"
            elif self.rng.random() < self.rate:
                kind = self.rng.choice(self.kinds)
            else:
                return None
            self.faults[kind] += 1
            return kind

    def close(self):
        self.httpd.close()


def _service(headers):
    target = headers.get("X-Amz-Target", "")
    if target.startswith("DynamoDB"):
        return "dynamodb"
    if target.startswith("TrentService"):
        return "kms"
    return "s3"
