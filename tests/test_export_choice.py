"""GET /file chooses between writing the file at once and an export job from the rows it will write:
readings counted from the stored items (never from SaveEvery alone), consumption periods x meters."""
from datetime import datetime, timezone

from chalicelib.metering import ingest, meters, readings

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
