"""Password hashing with Argon2id (argon2-cffi): parameters above OWASP's minimum, rehash when they rise."""
from argon2 import PasswordHasher, exceptions, profiles

MIN_LENGTH = 8
MAX_LENGTH = 1024

# RFC 9106's low-memory profile: Argon2id, t=3, m=64 MiB, p=4 (OWASP's floor is t=2, m=19 MiB, p=1).
PARAMETERS = profiles.RFC_9106_LOW_MEMORY


_hashers = {}


def hasher():
    """The hasher for the current parameters (one per parameter set, built once)."""
    key = repr(PARAMETERS)
    if key not in _hashers:
        _hashers[key] = PasswordHasher.from_parameters(PARAMETERS)
    return _hashers[key]


def hash_password(password):
    """An encoded Argon2id hash (salt and parameters included) of the whole password."""
    return hasher().hash(password)


def verify(encoded, password):
    """True when password matches the hash; never raises for a wrong password or a bad hash."""
    try:
        return hasher().verify(encoded, password)
    except (exceptions.VerifyMismatchError, exceptions.VerificationError, exceptions.InvalidHashError,
            UnicodeError):  # UnicodeError: a password with a lone surrogate, which no stored hash matches
        return False


def needs_rehash(encoded):
    """True when the hash was made with weaker parameters than today's."""
    return hasher().check_needs_rehash(encoded)


_DUMMY = None


def burn_time(password):
    """Spend a verification's time for an unknown user, so timing doesn't tell which names exist."""
    global _DUMMY
    if _DUMMY is None:
        _DUMMY = hash_password("not-a-real-password-for-timing")
    verify(_DUMMY, password)
