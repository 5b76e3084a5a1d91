"""What a benchmark on in-process moto needs before it imports the project: the checkout (and its tests'
helpers) on sys.path, and fake credentials with no endpoint, so no call can reach a real AWS account."""
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def in_process_aws() -> None:
    """Put the checkout and tests/ first on sys.path and point boto3 at nothing real (moto answers)."""
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.pop("AWS_ENDPOINT_URL", None)
