"""Local days as the API takes them: a 'YYYY-MM-DD' parameter, and a range of whole local days of a
project's zone as epochs (GET /file, /consumption and /graphics share these rules)."""
import calendar
import re
from datetime import date, datetime, timedelta
from typing import NamedTuple, NoReturn
from zoneinfo import ZoneInfo

from chalicelib.platform.errors import BadRequest

MAX_DAYS = 366                                              # days a request may span (unless told fewer)
FIRST_DAY, LAST_DAY = date(1970, 1, 1), date(9999, 12, 30)   # readings are never before 1970
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class DayRange(NamedTuple):
    """Whole local days first..last of a zone, and the instants they span: [start, end) in epoch seconds."""

    first: date
    last: date
    start: int
    end: int


def parse_day(field: str, text: object) -> date:
    """A 'YYYY-MM-DD' parameter as a date."""
    if not isinstance(text, str):
        raise BadRequest(f"{field} is required: a day as YYYY-MM-DD")
    if not _DAY.fullmatch(text.strip()):  # exactly YYYY-MM-DD: fromisoformat also takes week dates (2026-W01-1)
        _bad_day(field, text)
    try:
        return date.fromisoformat(text.strip())
    except ValueError:  # the shape is right: a 31st of November, a 29th of February of a common year, month 13
        raise BadRequest(f"{field} must be a day as YYYY-MM-DD, and {text.strip()} is not a day of the calendar "
                         f"({_why_not_a_day(text.strip())})") from None


def _why_not_a_day(text: str) -> str:
    """Why a YYYY-MM-DD text names no day: the month's length, or the bounds of months and years."""
    year, month, _day = (int(part) for part in text.split("-"))
    if year < 1:
        return "years start at 0001"
    if not 1 <= month <= 12:
        return "months are 01 to 12"
    return f"{year:04d}-{month:02d} has {calendar.monthrange(year, month)[1]} days"


def _bad_day(field: str, text: str) -> NoReturn:
    raise BadRequest(f"{field} must be a day as YYYY-MM-DD, not {text[:40]!r}")


def day_range(start: date, end: date, zone: ZoneInfo, max_days: int = MAX_DAYS) -> DayRange:
    """The DayRange of local days start..end in either order, inclusive."""
    first, last = sorted((start, end))
    if first < FIRST_DAY or last > LAST_DAY:  # outside, local midnights overflow datetime
        raise BadRequest(f"days must be from {FIRST_DAY.isoformat()} to {LAST_DAY.isoformat()}")
    if (last - first).days + 1 > max_days:
        raise BadRequest(f"the range is {(last - first).days + 1} days: at most {max_days} days per request")
    return DayRange(first, last, midnight(first, zone), midnight(last + timedelta(days=1), zone))


def each(first: date, last: date) -> list[date]:
    """The days first..last, in order."""
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def local_day(epoch: float, zone: ZoneInfo) -> date:
    """The local day an instant falls in."""
    return datetime.fromtimestamp(epoch, zone).date()


def midnight(day: date, zone: ZoneInfo) -> int:
    """Epoch of a local day's start (where 00:00 does not exist, the instant the day's clock starts)."""
    return int(datetime(day.year, day.month, day.day, tzinfo=zone).timestamp())


QUARTER = 900   # every zone's offset and every DST change falls on a whole quarter hour of UTC


def hour_starts(first: date, last: date, zone: ZoneInfo) -> list[int]:
    """Epochs at which each local hour of local days first..last starts, then the midnight after last.

    An hour starts where the local clock's hour or its UTC offset changes, so a spring-forward day has
    23 hours, a fall-back day 25 (the repeated hour twice, with its two offsets), Lord Howe's 30-minute
    changes a 30-minute or a 90-minute hour, and every boundary is at local :00 where the clock shows one.
    """
    start, end = midnight(first, zone), midnight(last + timedelta(days=1), zone)
    starts, previous = [start], datetime.fromtimestamp(start, zone)
    for moment in range(start + QUARTER, end, QUARTER):
        local = datetime.fromtimestamp(moment, zone)
        if local.hour != previous.hour or local.utcoffset() != previous.utcoffset():
            starts.append(moment)
        previous = local
    return starts + [end]
