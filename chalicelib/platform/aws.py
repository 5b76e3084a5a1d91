"""AWS clients, created on first use (never at import) so moto and the test client can start first.

The endpoint comes from the standard AWS environment (AWS_ENDPOINT_URL for the local stack), so
the same code runs against moto and AWS.
"""
import functools
import logging
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (ChecksumError, ClientError,
                                 ConnectionError as BotoConnectionError, HTTPClientError, IncompleteReadError)
from botocore.parsers import ResponseParserError

from chalicelib.platform import config
from chalicelib.platform.errors import ServiceUnavailable

_RETRIES = {"max_attempts": 4, "mode": "standard"}
# A call that hangs fails after these (botocore's default read timeout is 60 s, past the function's
# 28 s and API Gateway's 29 s): it is retried, and if every attempt hangs the request is a 503.
CONNECT_TIMEOUT_SECONDS = 2
READ_TIMEOUT_SECONDS = 4
# Connections a client keeps open: as many as the calls db.in_parallel makes at once (botocore's default, 10,
# would make the others wait for a connection, or open and drop extra ones).
MAX_CONNECTIONS = 32


@functools.lru_cache(maxsize=None)
def _client(service: str, signature_version: str | None = None, _region: str | None = None) -> Any:
    kwargs = {"retries": _RETRIES, "connect_timeout": CONNECT_TIMEOUT_SECONDS, "read_timeout": READ_TIMEOUT_SECONDS,
              "max_pool_connections": MAX_CONNECTIONS}
    if signature_version:
        kwargs["signature_version"] = signature_version
    return boto3.session.Session().client(service, region_name=_region, config=Config(**kwargs))


def dynamodb() -> Any:
    """The low-level DynamoDB client."""
    return _client("dynamodb", _region=config.region())


def s3() -> Any:
    """The S3 client; SigV4 so presigned links carry an expiry that S3 enforces."""
    return _client("s3", "s3v4", _region=config.region())


def kms() -> Any:
    """The KMS client (encrypts the stored copy of API keys)."""
    return _client("kms", _region=config.region())


def sqs() -> Any:
    """The SQS client (export jobs' queue, alert evaluation and delivery queues)."""
    return _client("sqs", _region=config.region())


def sns() -> Any:
    """The SNS client (alert e-mails: a topic per address of a project, its subscription, publishing)."""
    return _client("sns", _region=config.region())


def reset_clients() -> None:
    """Forget cached clients (tests start a fresh moto per test)."""
    _client.cache_clear()


# Error codes meaning "the service is busy or broken right now", not "your request is wrong": the
# same request may succeed when sent again. Any 5xx answer counts too, whatever its code.
TRANSIENT_CODES = frozenset({
    "ThrottlingException", "Throttling", "Throttled", "ThrottledException", "RequestThrottled", "RequestThrottledException",
    "ProvisionedThroughputExceededException", "RequestLimitExceeded", "TooManyRequestsException",
    "SlowDown", "TransactionConflictException", "TransactionInProgressException",
    "InternalServerError", "InternalFailure", "InternalError", "ServiceUnavailable", "ServiceUnavailableException",
    "RequestTimeout", "RequestTimeoutException", "KMSInternalException", "DependencyTimeoutException",
    "KeyUnavailableException", "EC2ThrottledException", "PriorRequestNotComplete", "BandwidthLimitExceeded",
})
# Reasons inside a cancelled transaction that are transient (the others are conditions that did not hold).
TRANSIENT_CANCELLATION_REASONS = frozenset({"ThrottlingError", "ProvisionedThroughputExceeded",
                                            "TransactionConflict", "RequestLimitExceeded", "InternalServerError"})
RETRY_AFTER_SECONDS = 2

log = logging.getLogger("intellimeter.aws")


def is_transient(error: BaseException) -> bool:
    """True when an AWS call failed for a reason that sending it again may cure (throttled, 5xx, timeout)."""
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        if code in TRANSIENT_CODES or status >= 500:
            return True
        if code == "TransactionCanceledException":
            reasons = {r.get("Code") for r in error.response.get("CancellationReasons", [])}
            return bool(reasons & TRANSIENT_CANCELLATION_REASONS) and "ConditionalCheckFailed" not in reasons
        return False
    # Timeouts, refused or dropped connections, a cut or garbled answer: the network, not the request.
    return isinstance(error, (BotoConnectionError, HTTPClientError, IncompleteReadError, ResponseParserError,
                              ChecksumError))


def unavailable(error: BaseException) -> ServiceUnavailable | None:
    """The ServiceUnavailable (503 + Retry-After) answering a transient AWS failure, or None for anything else.

    Anything else (a ValidationException, a missing table, a parameter botocore refuses) is a bug of
    ours that sending again would not cure: it is not turned into a 503, so the caller logs it and
    answers 500 rather than have clients retry for ever.
    """
    if not is_transient(error):
        return None
    if isinstance(error, ClientError):
        what = error.response.get("Error", {}).get("Code") or "an error"
        operation = error.operation_name
    else:
        what, operation = type(error).__name__, "call"
    log.warning("AWS %s failed with %s: answering 503", operation, what)
    return ServiceUnavailable(f"a cloud service is busy or not answering: send the same request again in "
                              f"{RETRY_AFTER_SECONDS} s (nothing is left half-done)", RETRY_AFTER_SECONDS)
