"""Webhook signing secrets: made here, shown once (PUT /alerts), stored only encrypted.

A secret is "whsec_" and 256 random bits (the shape integrators know from Stripe). Its stored copy is
encrypted with the KMS key that encrypts API keys, under an encryption context naming its rule
({"alert": "<project>/<rule>"}): a ciphertext copied onto another rule does not decrypt. The delivery
worker decrypts it to sign each POST; it is never logged, never in a message on a queue.
"""
import base64
import secrets

from chalicelib.platform import aws, config

PREFIX = "whsec_"


def new_secret() -> str:
    """A fresh signing secret."""
    return PREFIX + secrets.token_urlsafe(32)


def _context(project_id: int, alert_id: int) -> dict:
    return {"alert": f"{project_id}/{alert_id}"}


def seal(secret: str, project_id: int, alert_id: int) -> str:
    """The secret encrypted for its rule (base64 text to store)."""
    answer = aws.kms().encrypt(KeyId=config.resource_name("ApiKeysKey"), Plaintext=secret.encode("ascii"),
                               EncryptionContext=_context(project_id, alert_id))
    return base64.b64encode(answer["CiphertextBlob"]).decode("ascii")


def unseal(sealed: str, project_id: int, alert_id: int) -> str:
    """The secret back from its stored copy."""
    answer = aws.kms().decrypt(CiphertextBlob=base64.b64decode(sealed), EncryptionContext=_context(project_id, alert_id))
    return answer["Plaintext"].decode("ascii")
