"""Checks on the text fields clients send: each failure is a 400 saying what is wrong.

Every name, label and id a client sends is checked here before any storage call: bounded in length
(NAME_MAX characters: at most 256 UTF-8 bytes, far under DynamoDB's 1,024-byte sort key), text,
without control characters. An error quotes at most QUOTE_MAX characters of the value (quote).
"""
import hashlib
import math
import re
import unicodedata

from chalicelib.platform.errors import BadRequest

USERNAME_MAX = 64
EMAIL_MAX = 254
NAME_MAX = 64
QUOTE_MAX = 40          # characters of a client's value an error message repeats

# A decimal number as text, ASCII digits only: float() alone also takes "1_000", "１２" and "nan".
_DECIMAL = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?", re.ASCII)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _has_control(text: str) -> bool:
    return any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn") for ch in text)


def quote(value: object) -> str:
    """A client's value as an error message shows it: repr of its first QUOTE_MAX characters, '…' after a cut."""
    text = value if isinstance(value, str) else str(value)
    return repr(text[:QUOTE_MAX]) + ("…" if len(text) > QUOTE_MAX else "")


def name(field: str, value: object, max_length: int = NAME_MAX) -> str:
    """A name, label or other text id (username, meter name, key label): 1..max characters, no control
    characters, trimmed, NFC. What is stored and what looks it up go through the same check, so a
    lookup finds what was stored and an oversized value never reaches a key."""
    if not isinstance(value, str):
        raise BadRequest(f"{field} must be text")
    value = unicodedata.normalize("NFC", value.strip())
    if not value:
        raise BadRequest(f"{field} must not be empty")
    if len(value) > max_length:
        raise BadRequest(f"{field} is too long: {len(value)} characters, at most {max_length} ({quote(value)})")
    if _has_control(value):
        raise BadRequest(f"{field} must not contain control or unassigned characters")
    return value


# NFKC can expand a character up to 18-fold: a key longer than this is replaced by its digest, so the
# LOGIN#/THROTTLE#/PROJECTNAME# items stay under DynamoDB's 2048-byte partition key limit.
LOGIN_KEY_MAX_BYTES = 1024


def encodable(text: str) -> bool:
    """True when text can be sent as UTF-8 (a JSON body can carry lone surrogates, which can't)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def login_key(username: str) -> str:
    """The case-insensitive identity of a login name (unique across every project)."""
    key = unicodedata.normalize("NFKC", username).casefold()
    encoded = key.encode("utf-8", "surrogatepass")
    if len(encoded) > LOGIN_KEY_MAX_BYTES:
        key = "sha256:" + hashlib.sha256(encoded).hexdigest()
    return key


def email(value: object) -> str:
    """An e-mail address of plausible shape."""
    if not isinstance(value, str):
        raise BadRequest("email must be text")
    value = value.strip()
    if len(value) > EMAIL_MAX or not _EMAIL.match(value) or _has_control(value):
        raise BadRequest("email must be an address like name@example.com (at most 254 characters)")
    return value


def password(value: object, minimum: int, maximum: int) -> str:
    """A password of minimum..maximum characters, kept whole (never truncated or trimmed)."""
    if not isinstance(value, str):
        raise BadRequest("password must be text")
    if not encodable(value):
        raise BadRequest("password must be valid Unicode text (it contains a lone surrogate)")
    if len(value) < minimum:
        raise BadRequest(f"password is too short: at least {minimum} characters")
    if len(value) > maximum:
        raise BadRequest(f"password is too long: at most {maximum} characters")
    return value


def _check_bounds(field: str, value: float, minimum: float | None, maximum: float | None) -> None:
    """400 naming only the bounds that exist ("at least 0", not "between 0 and None")."""
    if minimum is not None and maximum is not None:
        if not minimum <= value <= maximum:
            raise BadRequest(f"{field} must be between {minimum} and {maximum}")
    elif minimum is not None and value < minimum:
        raise BadRequest(f"{field} must be at least {minimum}")
    elif maximum is not None and value > maximum:
        raise BadRequest(f"{field} must be at most {maximum}")


def integer(field: str, value: object, minimum: int | None = None, maximum: int | None = None) -> int:
    """An integer given as a number or decimal digits."""
    if isinstance(value, bool):
        raise BadRequest(f"{field} must be an integer")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*[-+]?[0-9]{1,18}\s*", value, re.ASCII):  # not ٣ or １
        value = int(value)
    if not isinstance(value, int):
        raise BadRequest(f"{field} must be an integer")
    _check_bounds(field, value, minimum, maximum)
    return value


def number(field: str, value: object, minimum: float | None = None, maximum: float | None = None) -> float:
    """A finite number given as a number or decimal text."""
    if isinstance(value, bool):
        raise BadRequest(f"{field} must be a number")
    if isinstance(value, str):
        try:
            value = float(value.strip()) if len(value) < 40 and _DECIMAL.fullmatch(value.strip()) else None
        except ValueError:
            value = None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadRequest(f"{field} must be a finite number")
    _check_bounds(field, value, minimum, maximum)
    return value


def flag(field: str, value: object) -> bool | None:
    """A yes/no parameter: 1 or true, 0 or false (case-insensitive; a JSON boolean too); None when absent."""
    if value is None or isinstance(value, bool):
        return value
    text = value.strip().lower() if isinstance(value, str) else str(value) if value in (0, 1) else None
    if text in ("1", "true"):
        return True
    if text in ("0", "false"):
        return False
    raise BadRequest(f"{field} must be 1 (or true) or 0 (or false)")
