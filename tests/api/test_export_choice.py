"""GET /file chooses between writing the file at once and an export job from the rows it will write:
readings counted from the stored items (never from SaveEvery alone), consumption periods x meters."""
import json
import urllib.parse
from datetime import datetime, timezone

import pytest

from chalicelib.metering import consumption, ingest, meters, readings
from chalicelib.outputs import exports
from chalicelib.platform import db
from chalicelib.tables import accounts_table
from tests.building import build
from tests.api.test_answer_bounds import TableCalls
from tests.api.test_export_jobs import download, follow_job

DAY = 86400
MARCH = int(datetime(2026, 3, 1, tzinfo=timezone.utc).timestamp())


def stamp(epoch):
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def push(project_id, name, epochs, value=lambda k: 1000.0 + k):
    """Readings of a meter through POST /data's own function, 1,000 a call."""
    sent = [{"MeterId": name, "TimeStamping": stamp(t), "value": value(k)} for k, t in enumerate(epochs)]
    for at in range(0, len(sent), 1000):
        answer = ingest.ingest(project_id, sent[at:at + 1000])
        assert answer["accepted"] + answer["duplicates"] == len(sent[at:at + 1000]), answer


def test_stored_per_day_counts_what_ingest_stored_per_utc_day(make_account):
    project = make_account().view["project"]
    meter = meters.register(project, {"MeterId": "m1", "SaveEvery": 1440})     # says one a day, sends more
    epochs = [MARCH + k * 60 for k in range(0, 3 * 1440, 7)] + [MARCH + 5 * DAY + 30]
    push(project, "m1", epochs)
    expected: dict[int, int] = {}
    for t in epochs:
        expected[t - t % DAY] = expected.get(t - t % DAY, 0) + 1
    assert dict(readings.stored_per_day(project, meter["id"], MARCH, MARCH + 10 * DAY)) == expected
    # whole UTC days overlapping the range, in time order; days with no item are left out
    assert list(readings.stored_per_day(project, meter["id"], MARCH + DAY + 5, MARCH + 2 * DAY + 1)) == \
        [(MARCH + DAY, expected[MARCH + DAY]), (MARCH + 2 * DAY, expected[MARCH + 2 * DAY])]
    assert list(readings.stored_per_day(project, meter["id"], MARCH + 3 * DAY, MARCH + 5 * DAY)) == []


def test_stored_per_day_counts_live_readings_in_hot_items_and_after_their_fold(make_account, time_machine):
    """Live readings are in hot hour items (one per UTC hour, beside the day item): counted with their day,
    before and after they are folded into it, and a day holding only hot items is counted too."""
    from chalicelib.tables import readings_table

    project = make_account().view["project"]
    meter = meters.register(project, {"MeterId": "m1", "SaveEvery": 1})
    late = MARCH + DAY - 3600                                    # 23:00 of March 1, UTC
    epochs = list(range(late, late + 3600 + 50 * 60 + 1, 60))   # 23:00 to 00:50 (before 23:00's fold at 00:55)
    for t in epochs:
        time_machine.move_to(t + 5, tick=False)
        push(project, "m1", [t])
    series = readings_table.series_key(project, meter["id"])
    hot = [i["day"] for i in db.query(readings_table.NAME, "meter = :m", {":m": series}) if "T" in i["day"]]
    assert hot == ["2026-03-01T23", "2026-03-02T00"]             # both hours still in hot items
    whole = dict(readings.stored_per_day(project, meter["id"], MARCH, MARCH + 2 * DAY))
    assert whole == {MARCH: 60, MARCH + DAY: 51}
    time_machine.move_to(late + 4 * 3600, tick=False)            # both hours long over: this push folds them
    push(project, "m1", [late + 4 * 3600 - 30])
    hot = [i["day"] for i in db.query(readings_table.NAME, "meter = :m", {":m": series}) if "T" in i["day"]]
    assert hot == ["2026-03-02T02"]                               # 23:00 and 00:00 folded; the new reading's hour
    assert dict(readings.stored_per_day(project, meter["id"], MARCH, MARCH + 2 * DAY)) == {MARCH: 60, MARCH + DAY: 52}


# ---- the choice -----------------------------------------------------------------------------------

FORMATS = ["csv", "json", "xml", "yaml"]


def get_file(account, **query):
    return account.request("GET", "/file?" + urllib.parse.urlencode(query))


def test_dense_meters_that_say_one_reading_a_day_become_a_job(aws, make_account, monkeypatch):
    """Four meters registered with SaveEvery 1440 (as an ingest key may set it) that send every 30 s: their
    rows are counted from the stored items, so the export is a job, not a request that would time out."""
    account = make_account()
    project = account.view["project"]
    for i in range(4):
        account.call("PUT", "/point", body={"MeterId": f"dense-{i}", "SaveEvery": 1440})
        push(project, f"dense-{i}", range(MARCH, MARCH + 3 * DAY, 30))
    monkeypatch.setattr(exports, "SYNC_MAX_ROWS", 20_000)        # 34,560 rows stored
    started = get_file(account, start="2026-03-01", end="2026-03-03", type="csv")
    assert started.status_code == 202, started.body
    assert int(started.headers["Retry-After"]) >= 2
    monkeypatch.setattr(exports, "SYNC_MAX_ROWS", 10 ** 9)
    expected = download(get_file(account, start="2026-03-01", end="2026-03-03", type="csv").json_body["url"])
    assert expected.count(b"\r\n") == 1 + 4 * 3 * 2880
    assert follow_job(aws, account, started) == expected


def test_sparse_meters_that_say_every_minute_stay_synchronous(aws, make_account, monkeypatch):
    """Three meters registered with SaveEvery 1 that send one reading a day: SaveEvery alone would make a
    year of them 1.58 M rows (a job); counted, they are 1,098, written at once."""
    account = make_account()
    project = account.view["project"]
    for i in range(3):
        account.call("PUT", "/point", body={"MeterId": f"sparse-{i}", "SaveEvery": 1})
        push(project, f"sparse-{i}", range(MARCH - 300 * DAY, MARCH + 66 * DAY, DAY))
    done = get_file(account, start="2025-05-05", end="2026-05-05", type="json")
    assert done.status_code == 303, done.body
    assert len(json.loads(download(done.json_body["url"]))) == 3 * 366


def test_a_short_range_is_decided_without_reading(aws, make_account):
    """When even 2,880 readings a day could not pass the bound, nothing is counted."""
    account = make_account()
    account.call("PUT", "/point", body={"MeterId": "m1"})
    push(account.view["project"], "m1", range(MARCH, MARCH + DAY, 300))
    calls = TableCalls()
    try:
        assert get_file(account, start="2026-03-01", end="2026-03-01").status_code == 303
    finally:
        calls.close()
    assert calls.by_table.get(aws["READINGS_TABLE"]) == 1       # the export's own read of the day


@pytest.fixture
def offices(aws, make_account):
    """Three meters with hourly readings from 2026-01-01 to 2026-05-31 (ingest, copies, rollups rebuilt),
    one of them named to test every format's escapes."""
    account = make_account(timezone="America/Toronto")
    build(account.view["project"], 3, int(datetime(2026, 1, 1, 5, tzinfo=timezone.utc).timestamp()), 151,
          every=3600, save_every=60, prefix='=office "<&>" ', rollups=True)
    return account


@pytest.mark.parametrize("period, start, end", [
    ("hour", "2026-03-07", "2026-03-10"),      # over the spring-forward day (23 hours)
    ("week", "2026-01-14", "2026-04-02"),      # partial first and last weeks
    ("month", "2026-01-15", "2026-05-10"),
])
def test_a_consumption_job_writes_the_synchronous_file_byte_for_byte(aws, offices, monkeypatch, period, start, end):
    slice_rows = 24 * 3 if period == "hour" else 2 * 3           # a day of hours, or two periods, of 3 meters
    for file_type in FORMATS:
        query = {"start": start, "end": end, "period": period, "type": file_type}
        monkeypatch.setattr(exports, "SYNC_SECONDS", 10.0)
        sync = get_file(offices, **query)
        assert sync.status_code == 303
        expected = download(sync.json_body["url"])
        monkeypatch.setattr(exports, "SYNC_SECONDS", 0.0)
        monkeypatch.setattr(exports, "SLICE_SECONDS", slice_rows * consumption.seconds_per_row(period) * 1.0001)
        started = get_file(offices, **query)
        assert follow_job(aws, offices, started) == expected, file_type
        item = db.get(accounts_table.NAME, accounts_table.job_key(started.json_body["id"]))
        assert item["parts"] == {"hour": 4, "week": 6, "month": 3}[period]   # 4 days; 12 weeks, 5 months in twos
