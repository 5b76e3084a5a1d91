"""Settings read from the environment, lazily.

Chalice's test client sets a stage's environment variables only while a request runs, and the
deployed stages point these at the CloudFormation resources: so nothing here is read at import.
"""
import os

# Environment variable naming each resource of infra/resources.yaml.
RESOURCE_ENV = {
    "AccountsTable": "ACCOUNTS_TABLE",
    "SessionsTable": "SESSIONS_TABLE",
    "MetersTable": "METERS_TABLE",
    "ReadingsTable": "READINGS_TABLE",
    "FilesBucket": "FILES_BUCKET",
    "ApiKeysKey": "API_KEYS_KMS_KEY",
    "ExportQueue": "EXPORT_QUEUE_URL",
    "AlertEvaluationQueue": "ALERT_EVALUATION_QUEUE_URL",
    "AlertDeliveryQueue": "ALERT_DELIVERY_QUEUE_URL",
    "AlertDeadLetters": "ALERT_DEAD_LETTERS_URL",
}


def resource_name(logical_id: str) -> str:
    """Physical name of a resource of the template (table name, bucket name, KMS key id)."""
    variable = RESOURCE_ENV[logical_id]
    try:
        return os.environ[variable]
    except KeyError:
        raise RuntimeError(f"{variable} is not set: the stage's configuration names no {logical_id}") from None


def region() -> str:
    """The AWS region of every client."""
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


def secure_cookies() -> bool:
    """True in deployed stages: the session cookie gets Secure and the __Host- prefix."""
    return os.environ.get("SECURE_COOKIES", "true").lower() not in ("0", "false", "no")


def session_cookie_name() -> str:
    """The session cookie's name; __Host- binds it to the exact origin over HTTPS."""
    return "__Host-session" if secure_cookies() else "session"


def password_hashing() -> str:
    """The name of the Argon2 parameter set new password hashes get (passwords.PROFILES)."""
    return os.environ.get("PASSWORD_HASHING", "RFC_9106_LOW_MEMORY")


def alert_topic_prefix() -> str:
    """The name every project's alert e-mail topic starts with (the stack's name + "-alerts"): the
    function may create, subscribe to and publish to those topics only (.chalice/policy.json)."""
    try:
        return os.environ["ALERT_TOPIC_PREFIX"]
    except KeyError:
        raise RuntimeError("ALERT_TOPIC_PREFIX is not set: the stage's configuration names no alert topics") from None


def loopback_webhooks() -> bool:
    """True where alert webhooks may be plain http to this machine (the local stage only: deployed, the
    loopback is the Lambda's own sandbox, never a receiver of the project's)."""
    return os.environ.get("ALERT_LOOPBACK_WEBHOOKS", "").lower() == "true"
