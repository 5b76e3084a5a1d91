"""Time zones: stored in UTC, shown and asked for in the project's local time, across DST changes.

A project in America/Toronto: the fall-back day (2026-11-01) has 25 hours, the spring-forward day
(2026-03-08) 23; an export of such a day holds every 5-minute reading of it once, none lost or
doubled. A project east of UTC reads a local day from two UTC day items.
"""
import csv
import io
import json
import urllib.parse
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import requests

TORONTO = ZoneInfo("America/Toronto")


def iso(epoch):
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def utc(*args):
    return int(datetime(*args).replace(tzinfo=timezone.utc).timestamp())


def site(make_account, zone, meters=("m1",)):
    account = make_account(timezone=zone)
    for name in meters:
        assert account.request("PUT", "/point", body={"MeterId": name}).status_code == 200
    return account


def push_every_5_minutes(account, begin, end, meter="m1"):
    """Readings from begin (included) to end (excluded), value = minutes since begin / 100; returns them."""
    sent = [(t, (t - begin) // 60 / 100) for t in range(begin, end, 300)]
    for start in range(0, len(sent), 1000):
        answer = account.request("POST", "/data", body={"readings": [
            {"MeterId": meter, "TimeStamping": iso(t), "value": v} for t, v in sent[start:start + 1000]]})
        assert answer.status_code == 200 and json.loads(answer.body)["accepted"] == len(sent[start:start + 1000])
    return sent


def export_csv(account, start, end, **params):
    answer = account.request("GET", "/file?" + urllib.parse.urlencode({"start": start, "end": end, **params}))
    assert answer.status_code == 303, answer.body
    lines = list(csv.reader(io.StringIO(requests.get(answer.headers["Location"], timeout=30).text, newline="")))
    return [(n, t, float(v)) for n, t, v in lines[1:]]


def test_the_fall_back_day_exports_25_hours_none_lost_or_doubled(make_account):
    account = site(make_account, "America/Toronto")
    # Local 2026-11-01 runs from 00:00 EDT (04:00Z) to 00:00 EST on the 2nd (05:00Z): 25 hours.
    begin, end = utc(2026, 11, 1, 4), utc(2026, 11, 2, 5)
    sent = push_every_5_minutes(account, begin - 3600, end + 3600)
    rows = export_csv(account, "2026-11-01", "2026-11-01")
    assert len(rows) == 300
    assert [v for _n, _t, v in rows] == [v for t, v in sent if begin <= t < end]     # each once, in time order
    assert rows[0][1] == "2026-11-01 00:00:00" and rows[-1][1] == "2026-11-01 23:55:00"
    times = [t for _n, t, _v in rows]
    assert times.count("2026-11-01 01:30:00") == 2                    # the repeated hour, shown twice
    assert len(set(times)) == 288


def test_the_spring_forward_day_exports_23_hours(make_account):
    account = site(make_account, "America/Toronto")
    # Local 2026-03-08 runs from 00:00 EST (05:00Z) to 00:00 EDT on the 9th (04:00Z): 23 hours.
    begin, end = utc(2026, 3, 8, 5), utc(2026, 3, 9, 4)
    sent = push_every_5_minutes(account, begin - 3600, end + 3600)
    rows = export_csv(account, "2026-03-08", "2026-03-08")
    assert len(rows) == 276
    assert [v for _n, _t, v in rows] == [v for t, v in sent if begin <= t < end]
    times = [t for _n, t, _v in rows]
    assert not [t for t in times if t.startswith("2026-03-08 02:")]    # that hour does not exist
    assert "2026-03-08 01:55:00" in times and "2026-03-08 03:00:00" in times
    assert times == sorted(times) and len(set(times)) == 276


def test_a_range_across_both_changes_keeps_every_reading(make_account):
    account = site(make_account, "America/Toronto")
    # Every hour from local 2026-03-07 to 2026-11-02 (a range across both changes).
    begin, end = utc(2026, 3, 7, 5), utc(2026, 11, 3, 5)
    sent = [(t, (t - begin) // 3600) for t in range(begin, end, 3600)]
    from chalicelib.metering import ingest

    for start in range(0, len(sent), 1000):
        ingest.ingest(account.view["project"], [{"MeterId": "m1", "TimeStamping": iso(t), "value": v}
                                                  for t, v in sent[start:start + 1000]])
    rows = export_csv(account, "2026-11-02", "2026-03-07")
    assert [v for _n, _t, v in rows] == [float(v) for _t, v in sent]
    assert rows[0][1] == "2026-03-07 00:00:00" and rows[-1][1] == "2026-11-02 23:00:00"


def test_local_days_of_a_zone_east_of_utc_span_two_utc_days(make_account):
    account = site(make_account, "Asia/Kolkata")                       # UTC+05:30
    begin, end = utc(2026, 4, 30, 18, 30), utc(2026, 5, 1, 18, 30)       # local 2026-05-01
    sent = push_every_5_minutes(account, begin - 7200, end + 7200)
    rows = export_csv(account, "2026-05-01", "2026-05-01")
    assert len(rows) == 288
    assert [v for _n, _t, v in rows] == [v for t, v in sent if begin <= t < end]
    assert rows[0][1] == "2026-05-01 00:00:00" and rows[-1][1] == "2026-05-01 23:55:00"


def test_readings_without_an_offset_are_local_time_of_the_project(make_account):
    account = site(make_account, "America/Toronto")
    answer = account.request("POST", "/data", body={"readings": [
        {"MeterId": "m1", "TimeStamping": "2026-07-01T12:00:00", "value": 1.0},    # EDT: 16:00Z
        {"MeterId": "m1", "TimeStamping": "2026-02-01 12:00:00", "value": 2.0},    # EST: 17:00Z
        {"MeterId": "m1", "TimeStamping": "2026-02-01T12:05:00+00:00", "value": 3.0}]})
    assert json.loads(answer.body)["accepted"] == 3
    from chalicelib.metering import meters, readings

    project_id = account.view["project"]
    meter = meters.find(project_id, name="m1")
    assert list(readings.series(project_id, meter["meter_id"], 0, 2 ** 33)) == [
        (utc(2026, 2, 1, 12, 5), 3.0), (utc(2026, 2, 1, 17), 2.0), (utc(2026, 7, 1, 16), 1.0)]
    latest = json.loads(account.request("GET", "/data").body)
    assert latest == [{"MeterParam": "m1", "TimeStamping": "2026-07-01 12:00:00", "value": 1.0}]


def test_latest_times_follow_the_zone_of_each_project(make_account):
    shown = {}
    for zone in ("UTC", "America/Toronto", "Asia/Kolkata", "Pacific/Chatham"):
        account = site(make_account, zone)
        account.request("POST", "/data", body={"readings": [
            {"MeterId": "m1", "TimeStamping": "2026-01-15T12:00:00Z", "value": 1.0}]})
        shown[zone] = json.loads(account.request("GET", "/data").body)[0]["TimeStamping"]
        assert f'<TimeStamping type="str">{shown[zone].replace(" ", "T")}</TimeStamping>' in \
            account.request("GET", "/data?responseType=xml").body.decode()
    assert shown == {"UTC": "2026-01-15 12:00:00", "America/Toronto": "2026-01-15 07:00:00",
                     "Asia/Kolkata": "2026-01-15 17:30:00", "Pacific/Chatham": "2026-01-16 01:45:00"}


def test_the_fall_back_hour_sent_with_offsets_is_two_hours_of_readings(make_account):
    account = site(make_account, "America/Toronto")
    readings = [{"MeterId": "m1", "TimeStamping": f"2026-11-01T01:{m:02d}:00{offset}", "value": v}
                for v, (offset, m) in enumerate([(o, m) for o in ("-04:00", "-05:00") for m in range(0, 60, 5)])]
    receipt = json.loads(account.request("POST", "/data", body={"readings": readings}).body)
    assert receipt == {"accepted": 24, "duplicates": 0, "rejected": []}
    rows = export_csv(account, "2026-11-01", "2026-11-01")
    assert [v for _n, _t, v in rows] == [float(v) for v in range(24)]
    assert [t[11:] for _n, t, _v in rows[:1] + rows[12:13]] == ["01:00:00", "01:00:00"]
    assert json.loads(account.request("GET", "/interval").body)[0] == {
        "MeterParam": "m1", "TimeStamping": "2026-11-01 01:55:00", "value": 1.0}
