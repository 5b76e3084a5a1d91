"""The hourly month of 300 meters (issue 20 item 3): GET /consumption answers 413 before reading any reading,
naming the bound and the /file form, which is an export job; never a 6 MB+ answer.

One stack for the module: a 300-meter building with a month of 5-minute readings (tests/building.py).
"""
import urllib.parse

import pytest

from tests.building import build
from tests.api.test_answer_bounds import FORMATS, MARCH, TableCalls, error_of, payload


@pytest.fixture(scope="module")
def stack():
    from tests.module_aws import module_stack

    with module_stack() as made:
        yield made


@pytest.fixture(scope="module")
def building(stack):
    """The account of a 300-meter building with the month of March 2026 of 5-minute readings."""
    account = stack.account()
    build(account.view["project"], 300, MARCH, 31)
    return account


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_hourly_month_of_300_meters_is_a_413_before_any_reading_is_read(stack, building, fmt):
    calls = TableCalls()
    try:
        answer = building.request("GET", "/consumption?" + urllib.parse.urlencode(
            {"start": "2026-03-01", "end": "2026-03-31", "period": "hour", "responseType": fmt}))
    finally:
        calls.close()
    assert answer.status_code == 413
    assert payload(answer) < 2000
    error = error_of(answer, fmt)
    assert "223,200 rows" in error and "at most 5 MB" in error and "Lambda answers at most 6 MB" in error
    assert f"GET /file?start=2026-03-01&end=2026-03-31&period=hour&type={fmt}" in error
    assert stack.env["READINGS_TABLE"] not in calls.by_table, calls.by_table


def test_the_413s_file_form_is_a_job_not_an_answer(building):
    """The form the 413 names writes the same rows to a file: for 223,200 hourly rows, an export job."""
    answer = building.request("GET", "/consumption?start=2026-03-01&end=2026-03-31&period=hour")
    form = answer.json_body["error"].split("GET ", 1)[1].split()[0].rstrip(":,.")
    started = building.request("GET", form)
    assert started.status_code == 202, started.body
    assert started.headers["Location"] == f"/file/job?id={started.json_body['id']}"
    assert int(started.headers["Retry-After"]) >= 1


def test_a_month_of_days_of_300_meters_fits(building):
    rows = building.call("GET", "/consumption", {"start": "2026-03-01", "end": "2026-03-31", "period": "day"})
    assert len(rows) == 300 * 31
    assert rows[0]["MeterParam"] == "suite-000" and rows[0]["value"] == pytest.approx(106.56, abs=0.01)


