"""GET /file: exports of past readings to S3, answered 303 to a presigned link.

What a user relies on: the file holds exactly the readings of the local days asked (both included,
either order), in time order, meters merged, names as currently named, in the format asked with its
media type and a download name; the link is short-lived, SigV4, and carries none of the caller's
credentials; bad arguments are a clear 400/404, never a 500.
"""
import csv
import io
import json
import urllib.parse
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
import requests
import yaml

from chalicelib.platform import clock

TORONTO = ZoneInfo("America/Toronto")
# Local days 2026-01-10 and 2026-01-11 in Toronto (EST, UTC-5): 05:00Z on the 10th to 05:00Z on the 12th.
FIRST_UTC = int(datetime(2026, 1, 10, 5, tzinfo=timezone.utc).timestamp())
AFTER_UTC = int(datetime(2026, 1, 12, 5, tzinfo=timezone.utc).timestamp())
MEDIA = {"csv": "text/csv; charset=utf-8", "json": "application/json", "xml": "application/xml", "yaml": "application/yaml"}


def iso(epoch):
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def local(epoch):
    return datetime.fromtimestamp(epoch, TORONTO).strftime("%Y-%m-%d %H:%M:%S")


def push(account, readings):
    for start in range(0, len(readings), 1000):
        answer = account.request("POST", "/data", body={"readings": [
            {"MeterId": m, "TimeStamping": iso(t), "value": v} for m, t, v in readings[start:start + 1000]]})
        assert answer.status_code == 200 and not json.loads(answer.body)["rejected"], answer.body


def export(account, status=303, **params):
    answer = account.request("GET", "/file?" + urllib.parse.urlencode(params))
    assert answer.status_code == status, answer.body
    return answer


def download(answer):
    """(body bytes, S3 object headers) of the file a 303 points at, fetched through the presigned URL."""
    link = json.loads(answer.body)
    assert answer.headers["Location"] == link["url"]
    fetched = requests.get(link["url"], timeout=30)
    assert fetched.status_code == 200
    return fetched.content, fetched.headers


def parse(file_type, content):
    """The rows of an export as [(MeterParam, TimeStamping 'YYYY-MM-DD HH:MM:SS', value)]."""
    text = content.decode("utf-8")
    if file_type == "csv":
        lines = list(csv.reader(io.StringIO(text, newline="")))
        assert lines[0] == ["MeterParam", "TimeStamping", "value"]
        return [(n, t, float(v)) for n, t, v in lines[1:]]
    if file_type == "json":
        return [(r["MeterParam"], r["TimeStamping"], r["value"]) for r in json.loads(text)]
    if file_type == "yaml":
        return [(r["MeterParam"], r["TimeStamping"], r["value"]) for r in yaml.safe_load(text)]
    root = ET.fromstring(content)
    assert root.tag == "Response"
    rows = []
    for item in root:
        assert item.tag == "item" and item.get("type") == "dict"
        stamp = item.find("TimeStamping").text
        assert "T" in stamp
        rows.append((item.find("MeterParam").text, stamp.replace("T", " "), float(item.find("value").text)))
    return rows


@pytest.fixture
def site(make_account):
    """A Toronto project with two meters, 5-minute readings over the two days and an hour either side."""
    account = make_account(timezone="America/Toronto")
    for name in ("m1", "m2"):
        assert account.request("PUT", "/point", body={"MeterId": name}).status_code == 200
    readings = []
    for t in range(FIRST_UTC - 3600, AFTER_UTC + 3600, 300):
        readings.append(("m1", t, round(1000 + (t - FIRST_UTC) / 300 * 0.25, 2)))
        if (t // 300) % 2 == 0:                       # m2 reads every 10 minutes
            readings.append(("m2", t + 60, round(50 + (t - FIRST_UTC) / 300 * 0.125, 3)))
    push(account, readings)
    account.ingested = readings
    return account


def expected(readings, begin=FIRST_UTC, end=AFTER_UTC, meter=None):
    chosen = sorted((t, m, v) for m, t, v in readings if begin <= t < end and meter in (None, m))
    return [(m, local(t), v) for t, m, v in chosen]


def test_csv_export_is_a_303_to_a_presigned_file_of_the_readings(site):
    answer = export(site, start="2026-01-10", end="2026-01-11")
    link = json.loads(answer.body)
    assert set(link) == {"url", "expires"}
    content, headers = download(answer)
    assert headers["Content-Type"] == "text/csv; charset=utf-8"
    assert headers["Content-Disposition"].startswith('attachment; filename="readings-2026-01-10-to-2026-01-11.csv"')
    assert content.startswith(b"MeterParam,TimeStamping,value\r\n")
    rows = parse("csv", content)
    assert rows == expected(site.ingested)
    assert rows[0] == ("m1", "2026-01-10 00:00:00", 1000.0) and rows[-1][1] == "2026-01-11 23:55:00"


@pytest.mark.parametrize("file_type", ["json", "xml", "yaml"])
def test_every_format_holds_the_same_rows_with_its_media_type(site, file_type):
    answer = export(site, start="2026-01-10", end="2026-01-11", type=file_type.upper() if file_type == "xml" else file_type)
    content, headers = download(answer)
    assert headers["Content-Type"] == MEDIA[file_type]
    assert headers["Content-Disposition"].startswith(
        f'attachment; filename="readings-2026-01-10-to-2026-01-11.{file_type}"')
    assert parse(file_type, content) == expected(site.ingested)


def test_the_object_in_s3_has_media_type_and_download_name(site):
    from chalicelib.platform import aws, config

    answer = export(site, start="2026-01-10", end="2026-01-10", type="json", meter="m2")
    url = urllib.parse.urlsplit(json.loads(answer.body)["url"])
    bucket = config.resource_name("FilesBucket")
    assert url.netloc.startswith(bucket + ".")
    key = urllib.parse.unquote(url.path.lstrip("/"))
    obj = aws.s3().get_object(Bucket=bucket, Key=key)
    assert obj["ContentType"] == "application/json"
    assert obj["ContentDisposition"].startswith('attachment; filename="readings-m2-2026-01-10-to-2026-01-10.json"')
    assert parse("json", obj["Body"].read()) == expected(site.ingested, end=FIRST_UTC + 86400, meter="m2")


def test_the_link_is_sigv4_for_15_minutes_and_holds_no_credentials(site):
    answer = export(site, start="2026-01-10", end="2026-01-10")
    link = json.loads(answer.body)
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(link["url"]).query)
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert query["X-Amz-Expires"] == ["900"]
    assert "X-Amz-Signature" in query
    assert site.key not in link["url"] and site.key.replace("-", "") not in link["url"]
    shown = datetime.strptime(link["expires"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=TORONTO).timestamp()
    assert abs(shown - (clock.now() + 900)) < 120          # the expiry, in the project's zone
    # Logged in by session: the link carries neither the session token nor the key.
    login = site.client.http.put("/session", headers={"Content-Type": "application/json"},
                                 body=json.dumps({"key": site.key}))
    token = login.headers["Set-Cookie"].split(";")[0].split("=", 1)[1]
    by_session = site.client.http.get("/file?start=2026-01-10&end=2026-01-10",
                                      headers={"Cookie": login.headers["Set-Cookie"].split(";")[0]})
    assert by_session.status_code == 303
    url = json.loads(by_session.body)["url"]
    assert token not in url and urllib.parse.quote(token, safe="") not in url and site.key not in url


def test_start_and_end_in_either_order_give_the_same_rows(site):
    forward, _h = download(export(site, start="2026-01-10", end="2026-01-11"))
    backward, _h = download(export(site, start="2026-01-11", end="2026-01-10"))
    assert forward == backward


def test_days_are_local_and_both_included(site):
    # One local day: from local midnight (05:00Z) to the next; the readings an hour either side are out.
    rows = parse("csv", download(export(site, start="2026-01-11", end="2026-01-11"))[0])
    assert rows == expected(site.ingested, begin=FIRST_UTC + 86400)
    assert rows[0][1] == "2026-01-11 00:00:00" and rows[-1][1] == "2026-01-11 23:55:00"
    assert len([r for r in rows if r[0] == "m1"]) == 288


def test_a_meter_alone_and_meters_merged_in_time_order(site):
    m1 = parse("json", download(export(site, start="2026-01-10", end="2026-01-11", type="json", meter="m1"))[0])
    assert m1 == expected(site.ingested, meter="m1")
    both = parse("json", download(export(site, start="2026-01-10", end="2026-01-11", type="json"))[0])
    assert {r[0] for r in both} == {"m1", "m2"}
    assert [r[1] for r in both] == sorted(r[1] for r in both)     # interleaved, never meter after meter
    assert both[:3] == [("m1", "2026-01-10 00:00:00", 1000.0), ("m2", "2026-01-10 00:01:00", 50.0),
                        ("m1", "2026-01-10 00:05:00", 1000.25)]


def test_readings_at_the_same_time_of_two_meters_come_by_meter_id(make_account):
    account = make_account()
    for name in ("b", "a"):
        account.request("PUT", "/point", body={"MeterId": name})
    t = int(datetime(2026, 1, 10, 12, tzinfo=timezone.utc).timestamp())
    push(account, [("a", t, 2.0), ("b", t, 1.0), ("a", t + 300, 2.5), ("b", t - 300, 0.5)])
    rows = parse("csv", download(export(account, start="2026-01-10", end="2026-01-10"))[0])
    assert rows == [("b", "2026-01-10 11:55:00", 0.5), ("b", "2026-01-10 12:00:00", 1.0),
                    ("a", "2026-01-10 12:00:00", 2.0), ("a", "2026-01-10 12:05:00", 2.5)]


def test_an_export_shows_current_names_and_a_safe_download_name(site):
    meter = json.loads(site.request("GET", "/point?name=m1").body)
    site.request("POST", "/point", body={"id": meter["id"], "new": "Küche/Nord"})
    content, headers = download(export(site, start="2026-01-10", end="2026-01-10", meter="Küche/Nord"))
    disposition = headers["Content-Disposition"]
    assert disposition.startswith('attachment; filename="readings-K_che_Nord-2026-01-10-to-2026-01-10.csv"')
    assert "filename*=UTF-8''readings-K%C3%BCche%2FNord-2026-01-10" in disposition
    rows = parse("csv", content)
    assert {r[0] for r in rows} == {"Küche/Nord"} and len(rows) == 288


def test_a_range_without_readings_is_an_empty_file(site):
    for file_type, body in [("csv", b"MeterParam,TimeStamping,value\r\n"), ("json", b"[]"),
                            ("xml", b'<?xml version="1.0" encoding="UTF-8" ?><Response></Response>')]:
        content, _h = download(export(site, start="2025-06-01", end="2025-06-02", type=file_type))
        assert content == body


def test_366_days_are_allowed_and_367_are_400(site):
    export(site, start="2024-01-01", end="2024-12-31")                     # a leap year: 366 days
    error = json.loads(export(site, status=400, start="2024-01-01", end="2025-01-01").body)["error"]
    assert "367 days" in error and "366" in error
    assert export(site, status=400, start="2025-01-01", end="2024-01-01")


BAD = [
    ({"end": "2026-01-10"}, 400, "start is required"),
    ({"start": "2026-01-10"}, 400, "end is required"),
    ({"start": "2026-13-01", "end": "2026-01-10"}, 400, "start must be a day as YYYY-MM-DD"),
    ({"start": "2026-01-10", "end": "2026-02-30"}, 400, "end must be a day as YYYY-MM-DD"),
    ({"start": "yesterday", "end": "2026-01-10"}, 400, "YYYY-MM-DD"),
    ({"start": "2026-1-10", "end": "2026-01-10"}, 400, "YYYY-MM-DD"),
    ({"start": "2026-01-10T00:00", "end": "2026-01-10"}, 400, "YYYY-MM-DD"),
    ({"start": "2026-W02-6", "end": "2026-01-10"}, 400, "YYYY-MM-DD"),     # an ISO week date was taken
    ({"start": "9999-12-31", "end": "9999-12-31"}, 400, "days must be from"),   # was a 500
    ({"start": "1969-12-31", "end": "1969-12-31"}, 400, "days must be from"),
    ({"start": "2026-01-10", "end": "2026-01-10", "meter": "nope"}, 404, "no meter named 'nope'"),
    ({"start": "2026-01-10", "end": "2026-01-10", "type": "pdf"}, 400, "type must be one of csv, json, xml, yaml"),
    ({"start": "2026-01-10", "end": "2026-01-10", "type": ""}, 400, "type must be"),
]


def test_bad_arguments_are_400_or_404_with_a_clear_message(site):
    wrong = []
    for params, status, message in BAD:
        answer = site.request("GET", "/file?" + urllib.parse.urlencode(params))
        body = json.loads(answer.body)
        if answer.status_code != status or message not in body.get("error", "") or "url" in body:
            wrong.append((params, answer.status_code, body))
    assert wrong == []


def test_an_error_is_rendered_in_the_asked_response_type(site):
    answer = site.request("GET", "/file?start=bad&end=2026-01-10&responseType=xml")
    assert answer.status_code == 400 and answer.headers["Content-Type"] == "application/xml"
    assert answer.body.decode().startswith('<?xml version="1.0" encoding="UTF-8" ?><Response><error type="str">')
    link = site.request("GET", "/file?start=2026-01-10&end=2026-01-10&responseType=yaml")
    assert link.status_code == 303 and yaml.safe_load(link.body)["url"] == link.headers["Location"]


def test_an_export_larger_than_a_part_is_uploaded_in_parts_and_whole(make_account, monkeypatch):
    from moto.s3 import models as s3_models

    from chalicelib.metering import ingest
    from chalicelib.outputs import downloads, export_writers

    small = 64 * 1024            # parts of 64 KiB instead of 8 MiB, so 12 days of XML take several
    real_chunks = export_writers.export_chunks
    monkeypatch.setattr(export_writers, "export_chunks", lambda fmt, rows: real_chunks(fmt, rows, chunk_bytes=small))
    monkeypatch.setattr(downloads, "PART_BYTES", small)
    monkeypatch.setattr(s3_models, "S3_UPLOAD_PART_MIN_SIZE", 1)
    account = make_account()
    account.request("PUT", "/point", body={"MeterId": "m1"})
    start = int(datetime(2026, 3, 1, tzinfo=timezone.utc).timestamp())
    values = [(start + i * 300, round(i * 0.125, 3)) for i in range(12 * 288)]
    project_id = account.view["project"]
    for chunk in range(0, len(values), 1000):
        ingest.ingest(project_id, [{"MeterId": "m1", "TimeStamping": iso(t), "value": v}
                                     for t, v in values[chunk:chunk + 1000]])
    content, headers = download(export(account, start="2026-03-01", end="2026-03-12", type="xml"))
    assert len(content) > 4 * small
    assert int(headers["ETag"].strip('"').rsplit("-", 1)[1]) == -(-len(content) // small)   # a multipart ETag
    assert parse("xml", content) == [
        ("m1", datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S"), float(v)) for t, v in values]


def test_exports_need_credentials(client):
    assert client.http.get("/file?start=2026-01-10&end=2026-01-10").status_code == 401


def test_the_expiry_is_shown_a_quarter_hour_ahead_in_utc_for_a_utc_project(make_account):
    account = make_account()
    link = json.loads(export(account, start="2026-01-10", end="2026-01-10").body)
    shown = datetime.strptime(link["expires"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc)
    assert abs(shown - (datetime.now(timezone.utc) + timedelta(seconds=900))) < timedelta(minutes=2)
