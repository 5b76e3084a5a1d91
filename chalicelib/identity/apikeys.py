"""API keys: the guide's format (160 random bits as four groups of ten hex digits), never stored in clear.

A SHA-256 digest finds the key's account; a KMS-encrypted copy lets GET /key show it.
"""
import base64
import hashlib
import re
import secrets

from chalicelib.platform import aws, config

KEY_PATTERN = re.compile(r"^[0-9a-f]{10}(-[0-9a-f]{10}){3}$")


def new_key() -> str:
    """A fresh key: 20 random bytes as 'xxxxxxxxxx-xxxxxxxxxx-xxxxxxxxxx-xxxxxxxxxx'."""
    digits = secrets.token_hex(20)
    return "-".join(digits[i:i + 10] for i in range(0, 40, 10))


def looks_like_key(text: object) -> bool:
    """True when text has the key's shape (cheap check before any lookup)."""
    return isinstance(text, str) and bool(KEY_PATTERN.match(text.strip().lower()))


def digest(key: str) -> str:
    """The lookup digest of a key."""
    return hashlib.sha256(key.strip().lower().encode("ascii")).hexdigest()


def encrypt(key: str, user_id: int) -> str:
    """The key encrypted under the API-keys KMS key, bound to its account by encryption context."""
    answer = aws.kms().encrypt(KeyId=config.resource_name("ApiKeysKey"), Plaintext=key.encode("ascii"),
                               EncryptionContext={"user_id": str(user_id)})
    return base64.b64encode(answer["CiphertextBlob"]).decode("ascii")


def decrypt(ciphertext: str, user_id: int) -> str:
    """The key back from its encrypted copy."""
    answer = aws.kms().decrypt(CiphertextBlob=base64.b64decode(ciphertext),
                               EncryptionContext={"user_id": str(user_id)})
    return answer["Plaintext"].decode("ascii")
