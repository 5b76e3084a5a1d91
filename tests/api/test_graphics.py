"""GET /graphics: a 303 to a presigned PNG of the size asked (hundreds of pixels), for every chart type.

Bounds are checked before anything is drawn (never a huge image, never a 500), a project without
data still gets a chart, and an unknown meter is a 404.
"""
import json
import struct
import urllib.parse
from datetime import datetime, timezone

import pytest
import requests

from chalicelib.platform import aws, config

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DAYS = {"start": "2026-01-10", "end": "2026-01-11"}


def iso(epoch):
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def png_size(data):
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def chart(account, status=303, **params):
    answer = account.request("GET", "/graphics?" + urllib.parse.urlencode(params))
    assert answer.status_code == status, answer.body
    return answer


def fetch_png(answer):
    """The PNG bytes the 303 points at (through the presigned URL), after checking the object's type."""
    link = json.loads(answer.body)
    assert set(link) == {"url", "expires"} and answer.headers["Location"] == link["url"]
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(link["url"]).query)
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"] and query["X-Amz-Expires"] == ["900"]
    fetched = requests.get(link["url"], timeout=30)
    assert fetched.status_code == 200 and fetched.headers["Content-Type"] == "image/png"
    return fetched.content


@pytest.fixture
def site(make_account):
    account = make_account()
    for name in ("m1", "m2"):
        assert account.request("PUT", "/point", body={"MeterId": name}).status_code == 200
    start = int(datetime(2026, 1, 10, tzinfo=timezone.utc).timestamp())
    readings = [{"MeterId": m, "TimeStamping": iso(start + i * 900), "value": round(i * (1.5 if m == "m1" else 0.5), 2)}
                for i in range(192) for m in ("m1", "m2")]
    assert json.loads(account.request("POST", "/data", body={"readings": readings}).body)["accepted"] == 384
    return account


@pytest.mark.parametrize("kind", ["pie", "bar", "line"])
def test_each_type_is_a_png_of_the_default_size(site, kind):
    assert png_size(fetch_png(chart(site, type=kind, **DAYS))) == (1600, 900)


def test_the_default_type_is_pie_and_a_meter_gives_its_line(site):
    pie = chart(site, **DAYS)
    assert "/pie-2026-01-10-to-2026-01-11.png" in json.loads(pie.body)["url"]
    meter = chart(site, meter="m2", type="pie", width=4, height=3, **DAYS)      # meter overrides type
    assert "/line-2026-01-10-to-2026-01-11.png" in json.loads(meter.body)["url"]
    assert png_size(fetch_png(meter)) == (400, 300)


def test_width_and_height_are_hundreds_of_pixels_decimals_allowed(site):
    for width, height, size in [("4.5", "3", (450, 300)), ("4", "3", (400, 300)), ("12.34", "3.5", (1234, 350)),
                                (" 4 ", "3.005", (400, 300))]:
        assert png_size(fetch_png(chart(site, type="line", width=width, height=height, **DAYS))) == size, width


@pytest.mark.fresh_aws  # counts every file of the bucket
def test_sizes_out_of_bounds_or_not_numbers_are_400_and_draw_nothing(site):
    bucket = config.resource_name("FilesBucket")
    wrong = []
    for bad in ["0", "41", "-1", "abc", "nan", "NaN", "inf", "-inf", "1e9", "0.5", "0.99", "40.01", "1,5", ""]:
        for params in ({"width": bad}, {"height": bad}):
            answer = site.request("GET", "/graphics?" + urllib.parse.urlencode({**params, **DAYS}))
            message = json.loads(answer.body).get("error", "")
            if answer.status_code != 400 or next(iter(params)) not in message:
                wrong.append((params, answer.status_code, answer.body))
    assert wrong == []
    assert aws.s3().list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0


def test_the_largest_size_allowed_is_40(site):
    assert png_size(fetch_png(chart(site, type="bar", width="40", height="3", **DAYS))) == (4000, 300)


def test_a_size_out_of_bounds_says_the_bounds(site):
    for params in ({"width": "0.99"}, {"height": "40.5"}):
        answer = site.request("GET", "/graphics?" + urllib.parse.urlencode({**params, **DAYS}))
        assert answer.status_code == 400
        assert "from 1 to 40 (hundreds of pixels" in json.loads(answer.body)["error"], answer.body


# The guide's clients ask small sizes (4.5 x 2.5 was a 400): every width and height from 1 to 40 draws.
GUIDE_SIZES = [("1", "1"), ("1.5", "1"), ("4.5", "2.5"), ("2.5", "4.5"), ("1", "40"), ("40", "1"), ("2", "1.5")]


@pytest.mark.parametrize("params", [{"type": "pie"}, {"type": "bar"}, {"type": "line"}, {"meter": "m1"}],
                         ids=lambda p: next(iter(p.values())))
def test_every_size_from_1_to_40_is_a_chart_of_that_size(site, params):
    for width, height in GUIDE_SIZES:
        png = fetch_png(chart(site, width=width, height=height, **params, **DAYS))
        assert png_size(png) == (round(float(width) * 100), round(float(height) * 100)), (width, height)


def test_a_project_without_data_gets_a_chart_not_a_crash(make_account):
    account = make_account()
    for kind in ("pie", "bar", "line"):
        assert png_size(fetch_png(chart(account, type=kind, width=4, height=3))) == (400, 300)
        assert png_size(fetch_png(chart(account, type=kind, width=1, height=1))) == (100, 100)
    account.request("PUT", "/point", body={"MeterId": "silent"})
    for params in ({"type": "pie"}, {"type": "bar"}, {"meter": "silent"}):
        assert png_size(fetch_png(chart(account, width=4, height=3, **params, **DAYS))) == (400, 300)


def test_unknown_meter_is_404_and_unknown_type_400(site):
    assert "no meter named 'nope'" in json.loads(chart(site, status=404, meter="nope", **DAYS).body)["error"]
    for kind in ("donut", "", "PIE "):
        answer = site.request("GET", "/graphics?" + urllib.parse.urlencode({"type": kind, **DAYS}))
        if kind == "PIE ":
            assert answer.status_code == 303                    # case and spaces don't matter
        else:
            assert answer.status_code == 400 and "type must be" in json.loads(answer.body)["error"]


def test_bad_days_are_400(site):
    for params in ({"start": "2026-02-30"}, {"start": "2026-01-01", "end": "tomorrow"},
                   {"start": "2024-01-01", "end": "2025-06-01"}, {"start": "9999-12-31"}):
        answer = site.request("GET", "/graphics?" + urllib.parse.urlencode(params))
        assert answer.status_code == 400, (params, answer.body)
        assert json.loads(answer.body)["error"]


def test_a_renamed_meter_is_charted_by_its_new_name(site):
    meter = json.loads(site.request("GET", "/point?name=m1").body)
    site.request("POST", "/point", body={"id": meter["id"], "new": "Pump"})
    answer = chart(site, meter="Pump", width=4, height=4, **DAYS)
    assert png_size(fetch_png(answer)) == (400, 400)


def test_charts_need_credentials(client):
    assert client.http.get("/graphics").status_code == 401
