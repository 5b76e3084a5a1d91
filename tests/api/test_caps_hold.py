"""Caps that hold under parallel clients, and PUT /point all or nothing (issue 20 item 5).

The races run over HTTP against the app on Chalice's local server (threaded), parallel clients released
together by a barrier; serialized_aws makes each moto call atomic (moto in process is not thread-safe)
while the requests' own calls still interleave as they would against DynamoDB.
"""
import threading

import pytest
import requests

from chalicelib.identity import scoped_keys
from chalicelib.metering import meters


def race(count, send):
    """send(i) from count threads at once; their answers, in order of i."""
    barrier = threading.Barrier(count)
    answers = [None] * count

    def one(i):
        barrier.wait()
        answers[i] = send(i)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return answers


def test_parallel_scoped_key_creation_never_passes_the_cap(live_api, serialized_aws, monkeypatch):
    monkeypatch.setattr(scoped_keys, "MAX_KEYS", 5)
    headers = {"X-API-Key": live_api.key}
    for i in range(2):
        assert requests.put(f"{live_api.url}/keys", json={"label": f"box {i}", "scope": "ingest"},
                            headers=headers, timeout=60).status_code == 200
    answers = race(12, lambda i: requests.put(f"{live_api.url}/keys", json={"label": f"racer {i}", "scope": "read"},
                                              headers=headers, timeout=60))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] * 3 + [409] * 9, statuses
    assert all("5 scoped keys already" in a.json()["error"] for a in answers if a.status_code == 409)
    listed = requests.get(f"{live_api.url}/keys", headers=headers, timeout=60).json()
    assert len(listed) == 5
    # a deleted key frees its place, once
    requests.delete(f"{live_api.url}/keys", params={"id": listed[0]["id"]}, headers=headers, timeout=60)
    again = race(4, lambda i: requests.put(f"{live_api.url}/keys", json={"label": f"late {i}", "scope": "read"},
                                           headers=headers, timeout=60))
    assert sorted(a.status_code for a in again) == [200, 409, 409, 409]


def test_a_project_with_keys_made_before_the_count_counts_them(live_api, monkeypatch):
    """Keys listed without a count item (made before it existed): the count starts from the listing."""
    from chalicelib.platform import db
    from chalicelib.tables import accounts_table

    monkeypatch.setattr(scoped_keys, "MAX_KEYS", 3)
    headers = {"X-API-Key": live_api.key}
    for i in range(2):
        requests.put(f"{live_api.url}/keys", json={"label": f"old {i}", "scope": "read"}, headers=headers, timeout=60)
    db.delete(accounts_table.NAME, accounts_table.scoped_key_count_key(live_api.project_id))
    made = [requests.put(f"{live_api.url}/keys", json={"label": f"new {i}", "scope": "read"}, headers=headers,
                         timeout=60).status_code for i in range(3)]
    assert made == [200, 409, 409]


def test_parallel_meter_registration_never_passes_the_cap(live_api, serialized_aws, monkeypatch):
    monkeypatch.setattr(meters, "MAX_METERS", 4)
    headers = {"X-API-Key": live_api.key}
    answers = race(10, lambda i: requests.put(f"{live_api.url}/point", json={"MeterId": f"racer-{i}"},
                                              headers=headers, timeout=60))
    assert sorted(a.status_code for a in answers) == [200] * 4 + [409] * 6
    assert len(requests.get(f"{live_api.url}/point", headers=headers, timeout=60).json()) == 4


def test_put_point_with_a_bad_parent_saves_nothing(client, make_account):
    account = make_account()
    account.call("PUT", "/point", body={"MeterId": "main", "SaveEvery": 5})
    account.call("PUT", "/point", body={"MeterId": "sub", "SaveEvery": 5, "Parent": "main"})
    before = account.call("GET", "/point", {"name": "main"})
    for bad, status in (({"Parent": "sub"}, 400), ({"Parent": "main"}, 400), ({"Parent": "nowhere"}, 404)):
        answer = account.request("PUT", "/point", body={"MeterId": "main", "SaveEvery": 15, "Port": "USB1", **bad})
        assert answer.status_code == status, answer.body
        assert account.call("GET", "/point", {"name": "main"}) == before
    # both together when the parent is good
    account.call("PUT", "/point", body={"MeterId": "feeder", "SaveEvery": 5})
    after = account.call("PUT", "/point", body={"MeterId": "main", "SaveEvery": 15, "Parent": "feeder"})
    assert (after["SaveEvery"], after["Parent"]) == (15, "feeder")
    assert account.call("GET", "/point", {"name": "main"}) == after


@pytest.mark.parametrize("fault", ["throttle", "lost_answer"])
def test_put_point_changing_config_and_parent_is_one_write(client, make_account, fault):
    """A failing write leaves both the configuration and the parent as they were (a 503), or both applied."""
    from tests.aws_faults import AwsFaults, app_clients

    account = make_account()
    account.call("PUT", "/point", body={"MeterId": "feeder"})
    account.call("PUT", "/point", body={"MeterId": "main", "SaveEvery": 5})
    before = account.call("GET", "/point", {"name": "main"})
    faults = AwsFaults.planned(app_clients(), {("TransactWriteItems", 1): fault})
    answer = account.request("PUT", "/point", body={"MeterId": "main", "SaveEvery": 15, "Parent": "feeder"})
    faults.enabled = False
    assert answer.status_code == 503
    now = account.call("GET", "/point", {"name": "main"})
    assert now in (before, {**before, "SaveEvery": 15, "Parent": "feeder"})
