"""Failing AWS calls for tests, through botocore's own event hooks on the clients chalicelib.aws hands out.

``AwsFaults(clients, rate, seed)`` makes a seeded random share of the clients' calls fail as AWS
fails them:

* ``throttle``: the service's throttling error (DynamoDB ProvisionedThroughputExceededException,
  S3 SlowDown, KMS ThrottlingException), as botocore raises it once its retries are spent;
* ``server_error``: a 500 InternalServerError (S3 InternalError, KMS KMSInternalException);
* ``timeout``: ReadTimeoutError / ConnectTimeoutError / EndpointConnectionError before the call
  reaches the service (nothing done);
* ``lost_answer``: the call is carried out, then its answer is lost (ReadTimeoutError): the
  hardest case for "nothing half-done", since the caller can't tell it happened;
* ``cancelled``: a TransactWriteItems cancelled for throttling or a conflicting transaction (no
  condition failed); other operations get ``throttle``;
* ``retried``: the first attempt's connection fails (before-send), botocore's own retry sends it
  again (exercises the client's retry path; succeeds);
* ``lost_retried``: the first attempt is carried out and its answer lost (the connection closes
  after the service's before-send handler ran), and botocore sends it again: a write arrives twice.
  Not for TransactWriteItems, which DynamoDB makes idempotent with the ClientRequestToken botocore
  fills in (moto ignores it; the ``throttle`` kind stands in);
* ``unprocessed``: a BatchGetItem answering every key as unprocessed (throttling's way in batches);
  other operations get ``throttle``.

A plan may also use ``condition_failed`` (a ConditionalCheckFailedException: what a concurrent
writer causes) and ``validation`` (a ValidationException: a bug of ours), never picked at random.

``AwsFaults.planned(clients, {("TransactWriteItems", 1): "lost_answer"})`` fails exactly the calls
named (operation, its nth call counting from 1) instead of a random share.

Hooks: ``before-call`` (registered first, so it answers before the request is built or sent),
``before-send`` and ``after-call``. No private function is patched.
"""
import json
import random
import threading
from collections import Counter

from botocore.awsrequest import AWSResponse
from botocore.exceptions import ConnectionClosedError, ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError

KINDS = ("throttle", "server_error", "timeout", "lost_answer", "cancelled", "retried", "lost_retried", "unprocessed")

_THROTTLE = {"dynamodb": ("ProvisionedThroughputExceededException", 400), "s3": ("SlowDown", 503),
             "kms": ("ThrottlingException", 400), "sns": ("Throttled", 400)}
_SERVER = {"dynamodb": ("InternalServerError", 500), "s3": ("InternalError", 500),
           "kms": ("KMSInternalException", 500), "sns": ("InternalError", 500)}


def app_clients():
    """Every boto3 client chalicelib.aws hands out. Each is made once and kept until reset_clients() (the
    aws fixture's start and end), so a hook registered on these during a test sees every call the app makes."""
    from chalicelib.platform import aws

    return [aws.dynamodb(), aws.s3(), aws.kms(), aws.sqs(), aws.sns()]


class AwsFaults:
    """Seeded random failures of a share of the AWS calls of some boto3 clients."""

    def __init__(self, clients, rate=0.0, seed=0, kinds=KINDS, operations=None, plan=None):
        self.plan = plan
        self.seen: Counter = Counter()
        self.rate = rate
        self.kinds = tuple(kinds)
        self.operations = set(operations) if operations else None   # only these operation names fail
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.local = threading.local()
        self.enabled = True
        self.calls = 0
        self.failed: Counter = Counter()
        self.by_operation: Counter = Counter()
        for client in clients:
            events = client.meta.events
            events.register_first("before-call", self._before_call)
            events.register_first("before-send", self._before_send)
            events.register("before-send", self._after_send)     # after moto's own handler carried it out
            events.register("after-call", self._after_call)

    @classmethod
    def planned(cls, clients, plan):
        """Faults exactly where plan {(operation, nth call): kind} says."""
        return cls(clients, plan=dict(plan))

    @property
    def failed_share(self):
        """The share of calls that were made to fail."""
        return sum(self.failed.values()) / self.calls if self.calls else 0.0

    def _pick(self, operation):
        with self.lock:
            if not self.enabled:
                return None
            self.calls += 1
            self.seen[operation] += 1
            if self.plan is not None:
                kind = self.plan.get((operation, self.seen[operation]))
                if kind is None:
                    return None
            else:
                if self.operations and operation not in self.operations:
                    return None
                if self.rng.random() >= self.rate:
                    return None
                kind = self.rng.choice(self.kinds)
            self.failed[kind] += 1
            self.by_operation[operation] += 1
            return kind

    def _before_call(self, model, params, context, **_):
        service = model.service_model.endpoint_prefix
        kind = self._pick(model.name)
        context["injected_fault"] = kind
        self.local.fail_next_send = kind == "retried"
        self.local.lose_next_answer = kind == "lost_retried" and model.name != "TransactWriteItems"
        if kind == "unprocessed" and model.name == "BatchGetItem":
            context["asked_keys"] = json.loads(params["body"])["RequestItems"]
            return None
        if kind == "cancelled" and model.name == "TransactWriteItems":
            items = json.loads(params["body"])["TransactItems"]
            reason = self.rng.choice(["ThrottlingError", "TransactionConflict", "ProvisionedThroughputExceeded"])
            http, parsed = _error_answer("TransactionCanceledException", 400)
            parsed["CancellationReasons"] = [{"Code": reason}] + [{"Code": "None"}] * (len(items) - 1)
            return http, parsed
        stand_in = {"cancelled": "TransactWriteItems", "unprocessed": "BatchGetItem"}
        if kind == "throttle" or (kind in stand_in and model.name != stand_in[kind]) \
                or (kind == "lost_retried" and model.name == "TransactWriteItems"):
            return _error_answer(*_THROTTLE.get(service, ("ThrottlingException", 400)))
        if kind == "condition_failed":   # planned only: what a concurrent writer causes
            return _error_answer("ConditionalCheckFailedException", 400)
        if kind == "validation":         # planned only: a request of ours the service refuses (a bug)
            return _error_answer("ValidationException", 400)
        if kind == "server_error":
            return _error_answer(*_SERVER.get(service, ("InternalFailure", 500)))
        if kind == "timeout":
            url = f"https://{service}.us-east-1.amazonaws.com/"
            raise self.rng.choice([ReadTimeoutError(endpoint_url=url), ConnectTimeoutError(endpoint_url=url),
                                   EndpointConnectionError(endpoint_url=url)])
        return None

    def _before_send(self, request, **_):
        if getattr(self.local, "fail_next_send", False):   # set by before-call in this thread
            self.local.fail_next_send = False
            raise ConnectTimeoutError(endpoint_url=request.url)
        return None

    def _after_send(self, request, **_):
        if getattr(self.local, "lose_next_answer", False):   # the service did it; the answer never comes
            self.local.lose_next_answer = False
            raise ConnectionClosedError(endpoint_url=request.url)
        return None

    def _after_call(self, context, parsed, **_):
        if context.get("injected_fault") == "unprocessed" and "asked_keys" in context:   # all still to do
            parsed["Responses"] = {}
            parsed["UnprocessedKeys"] = context["asked_keys"]
        if context.get("injected_fault") == "lost_answer":
            raise ReadTimeoutError(endpoint_url="(answer lost after the call was carried out)")


def _error_answer(code, status):
    http = AWSResponse("https://aws.invalid/", status, {}, None)
    parsed = {"Error": {"Code": code, "Message": "injected fault"},
              "ResponseMetadata": {"HTTPStatusCode": status, "RetryAttempts": 3}}
    return http, parsed

