"""The demo project's default tariff: Ontario's Regulated Price Plan (RPP) Time-of-Use prices, in the URDB shape.

Source: the Ontario Energy Board's news release of October 17, 2025, "Ontario Energy Board announces
changes to electricity prices for households, small businesses and farms" (prices effective November 1,
2025: off-peak 9.8, mid-peak 15.7, on-peak 20.3 ¢/kWh), the latest published prices found when this was
written; https://www.newswire.ca/news-releases/ontario-energy-board-announces-changes-to-electricity-prices-for-households-small-businesses-and-farms-888803139.html
The OEB sets prices each May 1 and November 1: replace the tariff (PUT /tariffs with its id) when they change.

Periods (the same every year): winter (November to April) weekdays on-peak 7-11 a.m. and 5-7 p.m.,
mid-peak 11 a.m.-5 p.m.; summer (May to October) weekdays mid-peak 7-11 a.m. and 5-7 p.m., on-peak
11 a.m.-5 p.m.; off-peak 7 p.m.-7 a.m. on weekdays and all day on weekends and the holidays the OEB
lists for TOU prices (New Year's Day, Family Day, Good Friday, Victoria Day, Canada Day, Civic Holiday,
Labour Day, Thanksgiving, Christmas Day, Boxing Day; one on a weekend moves to the next weekday).
This is the electricity (commodity) line of an RPP bill only: delivery, regulatory charges, the
Ontario Electricity Rebate and HST are not in it.
"""
from collections.abc import Iterable
from datetime import date, timedelta

LABEL = "Ontario RPP Time-of-Use (OEB prices of 2025-11-01)"
SOURCE = ("https://www.newswire.ca/news-releases/ontario-energy-board-announces-changes-to-electricity-prices-for-"
          "households-small-businesses-and-farms-888803139.html")
OFF, MID, ON = 0, 1, 2
PRICES = {OFF: 0.098, MID: 0.157, ON: 0.203}        # $/kWh (CAD), effective 2025-11-01
SUMMER = range(4, 10)                               # May to October (0-based months)


def _weekday_hours(month):
    """The period of each local hour of a weekday of a month (0-based)."""
    peak, shoulder = (ON, MID) if month in SUMMER else (MID, ON)   # 11-17 and (7-11, 17-19)
    return [OFF] * 7 + [shoulder] * 4 + [peak] * 6 + [shoulder] * 2 + [OFF] * 5


def _nth_monday(year, month, n):
    first = date(year, month, 1)
    return first + timedelta(days=(7 - first.weekday()) % 7 + 7 * (n - 1))


def _easter(year):
    """Easter Sunday (the Anonymous Gregorian algorithm)."""
    a, b, c = year % 19, year // 100, year % 100
    d, e = divmod(b, 4)
    g = (8 * b + 13) // 25
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    m = (32 + 2 * e + 2 * i - h - k) % 7
    n = (a + 11 * h + 22 * m) // 451
    month, day = divmod(h + m - 7 * n + 114, 31)
    return date(year, month, day + 1)


def holidays(year: int) -> list[date]:
    """The weekdays priced off-peak as holidays in a year (a fixed-date holiday on a weekend moves to the
    next weekday not already a holiday: Christmas on a Saturday is Monday, Boxing Day then Tuesday)."""
    days = {_nth_monday(year, 2, 3), _easter(year) - timedelta(days=2),
            date(year, 5, 25) - timedelta(days=(date(year, 5, 25).weekday() or 7)),   # the Monday before May 25
            _nth_monday(year, 8, 1), _nth_monday(year, 9, 1), _nth_monday(year, 10, 2)}
    for fixed in (date(year, 1, 1), date(year, 7, 1), date(year, 12, 25), date(year, 12, 26)):
        while fixed.weekday() >= 5 or fixed in days:
            fixed += timedelta(days=1)
        days.add(fixed)
    return sorted(days)


def tariff(years: Iterable[int]) -> dict:
    """The tariff body (PUT /tariffs) for holidays of these years, the project's default."""
    return {
        "label": LABEL, "currency": "CAD", "default": True,
        "name": "Regulated Price Plan, Time-of-Use (electricity line only)",
        "utility": "Ontario Energy Board (RPP prices)", "uri": SOURCE,
        "energyratestructure": [[{"rate": PRICES[p], "unit": "kWh"}] for p in (OFF, MID, ON)],
        "energytoulabels": ["Off-peak", "Mid-peak", "On-peak"],
        "energyweekdayschedule": [_weekday_hours(m) for m in range(12)],
        "energyweekendschedule": [[OFF] * 24 for _m in range(12)],
        "holidays": [d.isoformat() for year in years for d in holidays(year)],
    }


def ensure(project_id: int, today: date) -> None:
    """Store the demo tariff as the project's default unless it has one of that label (a kept state)."""
    from chalicelib.billing import tariffs

    stored = tariffs.listing(project_id)
    if isinstance(stored, list) and any(t["label"] == LABEL for t in stored):
        return
    tariffs.save(project_id, tariff(range(today.year - 1, today.year + 2)))
