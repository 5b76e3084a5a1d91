"""Data stored before hot items and hourly rollups: read as it is, and converted as it is touched.

The layout before (docs/data-model.md of that version): a day item per meter and UTC day (n, v: 12 bytes a
reading, seconds into the day uint32 and value float64), one rollup item per meter and local month (r, v:
a header of meter id, year, month, width 8 and the zone's name, then 31 day records of flags, count,
energy and peak), and the meter item's latest reading and interval written with every reading. The items
here are packed by this test from that description, not by chalicelib.
"""
import struct
from datetime import date, datetime, timezone
from zoneinfo import ZoneInfo

import pytest

ZONE = ZoneInfo("America/Toronto")
START = int(datetime(2026, 5, 25, tzinfo=timezone.utc).timestamp())
DEPLOY = int(datetime(2026, 6, 3, 14, 0, tzinfo=timezone.utc).timestamp())   # the last reading stored before
LOST = int(datetime(2026, 5, 27, 12, 30, tzinfo=timezone.utc).timestamp())   # a reading the agent sends late
STEP = 300


def value_at(epoch):
    return round(2000 + (epoch - START) / 3600 * 1.5 + (epoch // 7 % 3) * 0.001, 6)


def old_day_item(series, day, readings):
    packed = b"".join(struct.pack("<Id", epoch % 86400, value) for epoch, value in readings)
    return {"meter": series, "day": day, "n": len(readings), "v": packed}


def old_rollup_item(project_id, meter_id, month, days):
    """days: {day of the month: (energy µkWh or None, count, peak µkWh or None)}."""
    name = ZONE.key.encode()
    parts = [struct.pack("<QHBBB", meter_id, int(month[:4]), int(month[5:7]), 8, len(name)), name]
    for index in range(1, 32):
        energy, count, peak = days.get(index, (None, 0, None))
        parts.append(struct.pack("<BIqq", 1 if energy is not None else 0, count, energy or 0,
                                 -1 if peak is None else peak))
    return {"meter": f"ROLLUP#{project_id}#{meter_id}", "day": month, "r": 3, "v": b"".join(parts)}


@pytest.fixture
def old_site(make_account, time_machine):
    """A meter with ten days of 5-minute readings and their rollups, all in the layout before."""
    from chalicelib.metering import rollups
    from chalicelib.platform import db
    from chalicelib.tables import meters_table, readings_table

    time_machine.move_to(DEPLOY + 120, tick=False)
    account = make_account(timezone=ZONE.key)
    assert account.request("PUT", "/point", body={"MeterId": "m1", "SaveEvery": 5}).status_code == 200
    project_id = account.view["project"]
    meter_id = account.request("GET", "/point?name=m1").json_body["id"]
    series = f"{project_id}#{meter_id}"
    history = [(t, value_at(t)) for t in range(START, DEPLOY + 1, STEP) if t != LOST]
    by_day: dict = {}
    for epoch, value in history:
        by_day.setdefault(datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d"), []).append((epoch, value))
    for day, readings in by_day.items():
        db.put(readings_table.NAME, old_day_item(series, day, readings))
    curve = rollups.Curve([(t, v, False) for t, v in history])   # the arithmetic, as the code before had it
    for month in ("2026-05", "2026-06"):
        days = {}
        for day in range(1, 32):
            try:
                local = date(int(month[:4]), int(month[5:]), day)
            except ValueError:
                break
            begin = int(datetime(local.year, local.month, local.day, tzinfo=ZONE).timestamp())
            summary = curve.summary(begin, begin + 86400)   # no DST change in these days
            if summary != rollups.NOTHING:
                days[day] = summary
        db.put(readings_table.NAME, old_rollup_item(project_id, meter_id, month, days))
    db.update(meters_table.NAME, meters_table.meter_key(project_id, meter_id),
              "SET latest_time = :t, latest_value = :v, interval_time = :t, interval_value = :i",
              expression_values={":t": DEPLOY, ":v": value_at(DEPLOY), ":i": round(value_at(DEPLOY)
                                                                                  - value_at(DEPLOY - STEP), 6)})
    account.project_id, account.meter_id, account.history = project_id, meter_id, history
    return account


def same_as_raw(account, first, last):
    """Every period from the rollups equals the raw readings' (consumption.from_readings)."""
    from chalicelib.metering import consumption, meters

    meter = meters.find(account.project_id, meter_id=account.meter_id)
    for period in ("hour", "day", "month"):
        raw = consumption.from_readings(account.project_id, [account.meter_id], ZONE, first, last, period)
        assert consumption.summaries(account.project_id, [meter], ZONE, first, last, period) == raw, period


def push(account, epoch, value):
    answer = account.request("POST", "/data", body={"readings": [
        {"MeterId": "m1", "TimeStamping": datetime.fromtimestamp(epoch, timezone.utc).isoformat(), "value": value}]})
    assert answer.status_code == 200 and answer.json_body["accepted"] == 1, answer.body


def rollup_attributes(account, month):
    from chalicelib.platform import db
    from chalicelib.tables import readings_table

    return db.get(readings_table.NAME, readings_table.rollup_key(account.project_id, account.meter_id, month))


def test_old_items_are_read_as_they_are(old_site):
    assert old_site.request("GET", "/data").json_body == [
        {"MeterParam": "m1", "TimeStamping": "2026-06-03 10:00:00", "value": value_at(DEPLOY)}]
    same_as_raw(old_site, date(2026, 5, 24), date(2026, 6, 4))
    from chalicelib.metering import readings

    assert list(readings.series(old_site.project_id, old_site.meter_id, 0, 2 ** 33)) == old_site.history


def test_live_readings_after_the_old_ones_convert_the_month_from_the_day_they_touch(old_site, time_machine):
    """The first live readings go to hot items beside the old day item; the open day is computed from the
    readings until the hour closes; then the month item gets hour records from that day on (hs), the days
    before keep theirs, hours before are computed from the readings, and the hot items fold into the old
    day item."""
    for epoch in range(DEPLOY + STEP, DEPLOY + 2 * 3600 + 1, STEP):
        time_machine.move_to(epoch + 7, tick=False)
        push(old_site, epoch, value_at(epoch))
        if epoch in (DEPLOY + STEP, DEPLOY + 3600, DEPLOY + 2 * 3600):
            same_as_raw(old_site, date(2026, 5, 28), date(2026, 6, 3))
    june = rollup_attributes(old_site, "2026-06")
    assert "h" in june
    hs = struct.unpack_from("<BHH", bytes(june["h"]))[1]
    assert hs == 2 * 24                               # hours kept from June 3 (local), the day first touched
    time_machine.move_to(DEPLOY + 4 * 3600, tick=False)
    push(old_site, DEPLOY + 4 * 3600 - 60, value_at(DEPLOY + 4 * 3600 - 60))   # folds 14:00 and 15:00 into June 3's item
    from chalicelib.metering import readings

    stored = list(readings.series(old_site.project_id, old_site.meter_id, 0, 2 ** 33))
    assert [t for t, _v in stored] == sorted({t for t, _v in stored}) and len(stored) == len(old_site.history) + 25
    same_as_raw(old_site, date(2026, 5, 24), date(2026, 6, 4))


def test_a_backfill_into_an_old_month_converts_it_from_the_day_touched(old_site):
    push(old_site, LOST, value_at(LOST))      # into the old day item of May 27, whose hours the old month lacks
    may = rollup_attributes(old_site, "2026-05")
    assert struct.unpack_from("<BHH", bytes(may["h"]))[1] == 26 * 24      # from May 27 (local) on
    assert "h" not in rollup_attributes(old_site, "2026-06")
    same_as_raw(old_site, date(2026, 5, 24), date(2026, 6, 4))


def test_rebuild_converts_every_month_whole(old_site):
    from chalicelib.metering import meters, rollups

    rollups.rebuild(old_site.project_id, ZONE, old_site.meter_id)
    for month in ("2026-05", "2026-06"):
        assert struct.unpack_from("<BHH", bytes(rollup_attributes(old_site, month)["h"]))[1] == 0
    meter = meters.find(old_site.project_id, meter_id=old_site.meter_id)
    hours = rollups.hour_summaries(old_site.project_id, [meter], date(2026, 5, 24), date(2026, 6, 4), ZONE)
    assert hours[old_site.meter_id] is not None        # every hour from the rollups now
    same_as_raw(old_site, date(2026, 5, 24), date(2026, 6, 4))
