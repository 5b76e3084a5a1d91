"""Password hashing with Argon2id (argon2-cffi): parameters above OWASP's minimum, rehash when they rise."""
import functools

from argon2 import PasswordHasher, exceptions, profiles

from chalicelib.platform import config

MIN_LENGTH = 8
MAX_LENGTH = 1024

# The parameter sets a stage may choose (config.password_hashing()): argon2-cffi's own profiles, all Argon2id.
# The default, RFC 9106's low-memory profile, is t=3, m=64 MiB, p=4 (OWASP's floor is t=2, m=19 MiB, p=1);
# CHEAPEST is far below that floor: for tests about something other than hashing. (RFC_9106_HIGH_MEMORY
# is not offered: its 2 GiB per hash would not fit the function's memory.)
PROFILES = {
    "RFC_9106_LOW_MEMORY": profiles.RFC_9106_LOW_MEMORY,
    "CHEAPEST": profiles.CHEAPEST,
}


def parameters() -> profiles.Parameters:
    """The Argon2 parameters new hashes get, as the stage's configuration names them."""
    return PROFILES[_profile()]


def hasher() -> PasswordHasher:
    """The hasher for the configured parameters (one per parameter set, built once)."""
    return _hasher(_profile())


def _profile() -> str:
    name = config.password_hashing()
    if name not in PROFILES:
        raise RuntimeError(f"PASSWORD_HASHING={name!r} is none of {', '.join(PROFILES)}")
    return name


@functools.cache
def _hasher(profile: str) -> PasswordHasher:
    return PasswordHasher.from_parameters(PROFILES[profile])


def hash_password(password: str) -> str:
    """An encoded Argon2id hash (salt and parameters included) of the whole password."""
    return hasher().hash(password)


def verify(encoded: str, password: str) -> bool:
    """True when password matches the hash; never raises for a wrong password or a bad hash."""
    try:
        return hasher().verify(encoded, password)
    except (exceptions.VerifyMismatchError, exceptions.VerificationError, exceptions.InvalidHashError,
            UnicodeError):  # UnicodeError: a password with a lone surrogate, which no stored hash matches
        return False


def needs_rehash(encoded: str) -> bool:
    """True when the hash was made with weaker parameters than today's."""
    return hasher().check_needs_rehash(encoded)


def burn_time(password: str) -> None:
    """Spend a verification's time for an unknown user, so timing doesn't tell which names exist."""
    verify(_dummy_hash(_profile()), password)


@functools.cache
def _dummy_hash(profile: str) -> str:
    """A hash made with these parameters, so verifying against it costs what a real verification costs."""
    return _hasher(profile).hash("not-a-real-password-for-timing")
