"""AWS clients, created on first use (never at import) so moto and the test client can start first.

The endpoint comes from the standard AWS environment (AWS_ENDPOINT_URL for the local stack), so
the same code runs against moto and AWS.
"""
import functools

import boto3
from botocore.config import Config

from chalicelib import config

_RETRIES = {"max_attempts": 4, "mode": "standard"}


@functools.lru_cache(maxsize=None)
def _client(service, signature_version=None, _region=None):
    kwargs = {"retries": _RETRIES}
    if signature_version:
        kwargs["signature_version"] = signature_version
    return boto3.session.Session().client(service, region_name=_region, config=Config(**kwargs))


def dynamodb():
    """The low-level DynamoDB client."""
    return _client("dynamodb", _region=config.region())


def s3():
    """The S3 client; SigV4 so presigned links carry an expiry that S3 enforces."""
    return _client("s3", "s3v4", _region=config.region())


def kms():
    """The KMS client (encrypts the stored copy of API keys)."""
    return _client("kms", _region=config.region())


def sqs():
    """The SQS client (export jobs' queue)."""
    return _client("sqs", _region=config.region())


def reset_clients():
    """Forget cached clients (tests start a fresh moto per test)."""
    _client.cache_clear()
