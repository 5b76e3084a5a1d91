"""Nothing half-done: a fault in the middle of a multi-step write leaves every store consistent, and the
request, sent again, completes it.

Each test fails one chosen AWS call (tests/aws_faults.py, botocore event hooks) in the middle of a
route's work and checks the state a user would find.
"""
import json

import pytest

from chalicelib.outputs import downloads
from chalicelib.platform import aws as aws_clients, config
from tests.aws_faults import AwsFaults
from tests.api.test_aws_faults import World, assert_consistent

pytestmark = pytest.mark.fresh_aws  # the project "faulty", and assert_consistent checks every item of every store

NEW_PASSWORD = "another horse battery staple"


def _clients():
    return [aws_clients.dynamodb(), aws_clients.s3(), aws_clients.kms()]


def _login(client, username, password):
    answer = client.http.put("/session", headers={"Content-Type": "application/json"},
                             body=json.dumps({"username": username, "password": password}))
    return answer.headers["Set-Cookie"].split(";")[0] if answer.status_code == 200 else None


def _works(client, cookie):
    return client.http.get("/point", headers={"Cookie": cookie}).status_code == 200


@pytest.fixture
def world(client, make_account, fast_hashing):
    return World(client, make_account)


def test_a_create_user_whose_answer_was_lost_completes_when_sent_again_not_409(world):
    body = {"username": "newcomer", "password": "correct horse battery staple", "email": "n@example.com"}
    AwsFaults.planned(_clients(), {("TransactWriteItems", 1): "lost_answer"})
    first = world.owner.request("PUT", "/user", body=body)
    assert first.status_code == 503 and first.headers["Retry-After"]
    again = world.owner.request("PUT", "/user", body=body)
    assert again.status_code == 200, again.body
    assert json.loads(again.body)["username"] == "newcomer"
    names = [u["username"] for u in json.loads(world.owner.request("GET", "/user").body)]
    assert names.count("newcomer") == 1
    # The same name with another password is still someone else's: 409.
    other = world.owner.request("PUT", "/user", body={**body, "password": "a different horse staple"})
    assert other.status_code == 409
    # Another account of the project sending the very same request (password included) gets a 409 too:
    # only the creator, who chose the password, can have it confirmed.
    assert world.user().request("PUT", "/user", body=body).status_code == 409
    assert_consistent(world)


@pytest.mark.parametrize("failing_delete", [1, 2])
def test_a_password_change_that_fails_midway_never_leaves_the_old_sessions_working(world, failing_delete):
    actor = world.user()
    mine = _login(world.client, actor.view["username"], actor.password)
    others = [_login(world.client, actor.view["username"], actor.password) for _ in range(2)]
    AwsFaults.planned(_clients(), {("DeleteItem", failing_delete): "throttle"})
    answer = world.client.http.post("/user", headers={"Cookie": mine, "Content-Type": "application/json"},
                                    body=json.dumps({"password": NEW_PASSWORD, "current_password": actor.password}))
    assert answer.status_code == 503
    new_password_works = _login(world.client, actor.view["username"], NEW_PASSWORD) is not None
    if new_password_works:
        assert not any(_works(world.client, cookie) for cookie in others), "new password, old sessions alive"
    again = world.client.http.post("/user", headers={"Cookie": mine, "Content-Type": "application/json"},
                                   body=json.dumps({"password": NEW_PASSWORD, "current_password": actor.password}))
    assert again.status_code == 200
    assert not any(_works(world.client, cookie) for cookie in others) and _works(world.client, mine)
    assert_consistent(world)


@pytest.mark.parametrize("kind", ["throttle", "lost_answer"])
def test_a_delete_that_fails_midway_never_leaves_a_deleted_account_with_live_sessions(world, kind):
    actor = world.user()
    sessions = [_login(world.client, actor.view["username"], actor.password) for _ in range(3)]
    AwsFaults.planned(_clients(), {("DeleteItem", 2): kind})
    answer = world.client.http.delete("/user", headers=actor.headers)
    assert answer.status_code == 503
    gone = world.client.http.get("/session", headers=actor.headers).status_code == 401
    if gone:
        assert not any(_works(world.client, cookie) for cookie in sessions), "deleted account, sessions alive"
    else:   # the account is whole: the delete sent again completes
        assert world.client.http.delete("/user", headers=actor.headers).status_code == 200
    assert not any(_works(world.client, cookie) for cookie in sessions)
    assert_consistent(world)


@pytest.mark.parametrize("method, path, body", [
    ("PUT", "/user", {"username": "someone", "password": "correct horse battery staple", "email": "s@example.com"}),
    ("POST", "/point", {"name": "m1", "new": "Kitchen"}),
    ("PUT", "/point", {"MeterId": "brand-new"}),
    ("POST", "/key", None),
])
def test_a_transaction_cancelled_by_throttling_or_a_conflict_is_a_503_not_a_409_or_404(world, method, path, body):
    AwsFaults.planned(_clients(), {("TransactWriteItems", 1): "cancelled"})
    answer = world.owner.request(method, path, body=body)
    assert answer.status_code == 503, answer.body
    world.refresh_owner_key()
    again = world.owner.request(method, path, body=body)
    assert again.status_code == 200, again.body
    world.refresh_owner_key()
    assert_consistent(world)


def test_a_batch_read_that_stays_unprocessed_is_a_503_not_an_endless_loop(world):
    faults = AwsFaults.planned(_clients(), {("BatchGetItem", n): "unprocessed" for n in range(1, 200)})
    answer = world.owner.request("POST", "/data", body={"readings": [
        {"MeterId": "m1", "TimeStamping": "2026-03-02T00:05:00Z", "value": 1.5}]})
    assert answer.status_code == 503 and answer.headers["Retry-After"]
    assert faults.seen["BatchGetItem"] < 20       # it gave up, rather than spin
    faults.enabled = False
    again = world.owner.request("POST", "/data", body={"readings": [
        {"MeterId": "m1", "TimeStamping": "2026-03-02T00:05:00Z", "value": 1.5}]})
    assert json.loads(again.body)["accepted"] == 1


def test_a_day_write_whose_answer_was_lost_is_a_duplicate_when_sent_again(world):
    batch = [{"MeterId": "m1", "TimeStamping": f"2026-03-02T00:{m:02d}:00Z", "value": float(m)} for m in (5, 10)]
    AwsFaults.planned(_clients(), {("PutItem", 1): "lost_answer"})
    assert world.owner.request("POST", "/data", body={"readings": batch}).status_code == 503
    receipt = json.loads(world.owner.request("POST", "/data", body={"readings": batch}).body)
    assert receipt == {"accepted": 0, "duplicates": 2, "rejected": []}
    latest = json.loads(world.owner.request("GET", "/data").body)
    assert [(r["MeterParam"], r["value"]) for r in latest] == [("m1", 10.0)]   # the retry moved latest on too
    assert_consistent(world)


def test_a_multipart_upload_that_fails_is_aborted_even_when_the_first_abort_fails(aws, monkeypatch):
    monkeypatch.setattr(downloads, "PART_BYTES", 1024)
    faults = AwsFaults.planned(_clients(), {("UploadPart", 2): "server_error",
                                            ("AbortMultipartUpload", 1): "throttle"})
    with pytest.raises(Exception) as raised:
        downloads.upload_stream(1, "exports", "big.csv", "text/csv", (bytes([65 + i]) * 1500 for i in range(5)))
    assert aws_clients.unavailable(raised.value) is not None      # the upload's own error, answered as a 503
    assert faults.seen["AbortMultipartUpload"] == 2
    open_uploads = aws_uploads()
    assert open_uploads == []


def aws_uploads():
    return aws_clients.s3().list_multipart_uploads(Bucket=config.resource_name("FilesBucket")).get("Uploads", [])
