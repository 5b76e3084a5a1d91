"""Time: the one place that reads the clock and converts between UTC and a project's zone.

It is the system's clock: tests move time.time() itself (time-machine), not a variable here."""
import time
from datetime import datetime, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def now() -> float:
    """Seconds since the epoch, UTC."""
    return time.time()


def utcnow() -> datetime:
    """The current time as an aware UTC datetime."""
    return datetime.fromtimestamp(now(), timezone.utc)


def zone(name: object) -> ZoneInfo:
    """The ZoneInfo of an IANA name; ValueError when there is no such zone."""
    try:
        if not isinstance(name, str) or not name or len(name) > 64 or name.startswith(("/", ".")) or ".." in name:
            raise ZoneInfoNotFoundError(name)
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}: use an IANA name such as America/Toronto") from None


def local(epoch_seconds: float, tz: tzinfo) -> datetime:
    """A UTC instant as a naive local datetime in tz (what the API shows)."""
    return datetime.fromtimestamp(epoch_seconds, tz).replace(tzinfo=None)


def iso_utc(epoch_seconds: float | None = None, timespec: str = "seconds") -> str:
    """An instant (default: now) as ISO 8601 UTC text, 'YYYY-MM-DDTHH:MM:SS+00:00' (timespec as
    datetime.isoformat's: 'auto' adds microseconds when there are any)."""
    return datetime.fromtimestamp(now() if epoch_seconds is None else epoch_seconds, timezone.utc).isoformat(
        timespec=timespec)
