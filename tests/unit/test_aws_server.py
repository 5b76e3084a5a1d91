"""The embedded AWS's state (tools/aws_state.py, tools/aws_server.py): what is saved and loaded again is the
same state, KMS key material and S3 files included; a save writes only what changed; a moto server stopped
and started again on its directory answers as before, for every kind of write the product makes."""
import json
import os
import signal
import stat
import subprocess
import sys
import time

import boto3
import pytest
from moto import mock_aws

from chalicelib.identity import accounts
from chalicelib.metering import ingest, meters, readings
from chalicelib.tables import readings_table
from chalicelib.platform import aws, config
from tools import provision
from tools.aws_state import Store
from tools.stack import PROJECT_DIR, wait_for


@pytest.fixture
def environ():
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)
    aws.reset_clients()


def _files(directory):
    return {name: os.stat(os.path.join(directory, name)).st_mtime_ns for name in os.listdir(directory)}


def test_a_saved_state_loaded_in_a_fresh_moto_keeps_accounts_and_decrypts_keys(tmp_path, fast_hashing, environ):
    directory = str(tmp_path / "aws-state")
    with mock_aws():
        aws.reset_clients()
        os.environ.update(provision.provision_local())
        project = accounts.create_project("kept", "Europe/Paris")
        view, key = accounts.create_user(project["project_id"], "keeper", "a-long-enough-password", "k@example.com")
        aws.sqs().send_message(QueueUrl=os.environ["EXPORT_QUEUE_URL"], MessageBody="a slice to write")
        Store(directory).save()              # the export queue (its lock) pickles too
    assert all(stat.S_IMODE(os.stat(os.path.join(directory, n)).st_mode) == 0o600 for n in os.listdir(directory))
    with mock_aws():                    # a new moto: nothing until the state is loaded
        aws.reset_clients()
        assert Store(str(tmp_path / "none")).load() is False
        assert Store(directory).load() is True
        os.environ.update(provision.provision_local())      # idempotent over the loaded state
        assert accounts.find_project("kept")["timezone"] == "Europe/Paris"
        assert accounts.find_by_key(key) is not None
        assert accounts.current_key(project["project_id"], view["uuid"])["key"] == key   # KMS decrypts
        queued = aws.sqs().receive_message(QueueUrl=os.environ["EXPORT_QUEUE_URL"])["Messages"]
        assert [m["Body"] for m in queued] == ["a slice to write"]   # a job's pending slices survive


def test_files_are_kept_and_provisioning_again_keeps_them(tmp_path, environ):
    """Issue 20 item 6: after a restart the bucket was made again, empty (moto's bucket index is not in its
    backends): every link answered 404 and running export jobs failed with NoSuchKey."""
    directory = str(tmp_path / "aws-state")
    with mock_aws():
        aws.reset_clients()
        os.environ.update(provision.provision_local())
        bucket = config.resource_name("FilesBucket")
        aws.s3().put_object(Bucket=bucket, Key="exports/1/a.csv", Body=b"MeterParam,TimeStamping,value\n")
        Store(directory).save()
    with mock_aws():
        aws.reset_clients()
        assert Store(directory).load()
        os.environ.update(provision.provision_local())      # what every make run does at start
        body = aws.s3().get_object(Bucket=bucket, Key="exports/1/a.csv")["Body"].read()
        assert body == b"MeterParam,TimeStamping,value\n"


def test_a_save_writes_what_changed_only(tmp_path, environ):
    directory = str(tmp_path / "aws-state")
    with mock_aws():
        aws.reset_clients()
        os.environ.update(provision.provision_local())
        project = accounts.create_project("many", "UTC")["project_id"]
        made = [meters.register(project, {"MeterId": f"m{i}", "SaveEvery": 5}) for i in range(20)]
        for meter in made:
            ingest.ingest(project, [{"MeterId": meter["MeterId"], "TimeStamping": "2025-01-01T00:00:00Z",
                                       "value": 1.0}])
        store = Store(directory)
        files, _size, _seconds = store.save()
        assert files > 20
        assert store.save() is None                               # nothing changed: nothing written
        before = _files(directory)
        item = readings.day_item(readings_table.series_key(project, made[3]["id"]), "2025-01-02", {0: 2.5})
        table = config.resource_name("ReadingsTable")
        store.touch_item(table, {"meter": {"S": item["meter"]}})   # what the server notes for this PutItem
        aws.dynamodb().put_item(TableName=table, Item={"meter": {"S": item["meter"]}, "day": {"S": item["day"]},
                                                       "n": {"N": "1"}, "v": {"B": item["v"]}})
        files, _size, _seconds = store.save()
        assert files == 2                                         # the skeleton and the meter's shard
        after = _files(directory)
        assert len(set(after) - set(before)) == 2 and len(set(before) - set(after)) == 2
    with mock_aws():
        aws.reset_clients()
        assert Store(directory).load()
        assert [v for _t, v in readings.series(project, made[3]["id"], 0, 2 ** 33)] == [1.0, 2.5]
        assert len(meters.all_meters(project)) == 20


def test_a_table_dropped_and_made_again_is_saved_as_the_new_one(tmp_path, environ):
    directory = str(tmp_path / "aws-state")
    with mock_aws():
        aws.reset_clients()
        client = boto3.client("dynamodb")
        schema = {"KeySchema": [{"AttributeName": "k", "KeyType": "HASH"}],
                  "AttributeDefinitions": [{"AttributeName": "k", "AttributeType": "S"}],
                  "BillingMode": "PAY_PER_REQUEST"}
        client.create_table(TableName="t", **schema)
        client.put_item(TableName="t", Item={"k": {"S": "old"}})
        store = Store(directory)
        store.save()
        client.delete_table(TableName="t")
        client.create_table(TableName="t", **schema)
        client.put_item(TableName="t", Item={"k": {"S": "new"}})
        store.touch()               # no note of the items: the new table is a new container, written whole
        store.save()
    with mock_aws():
        assert Store(directory).load()
        assert [i["k"]["S"] for i in boto3.client("dynamodb").scan(TableName="t")["Items"]] == ["new"]


def test_files_a_cut_short_save_left_are_ignored_and_removed(tmp_path, environ):
    directory = str(tmp_path / "aws-state")
    with mock_aws():
        aws.reset_clients()
        os.environ.update(provision.provision_local())
        accounts.create_project("whole", "UTC")
        Store(directory).save()
    # A save killed after writing some files, before its manifest: files no manifest names.
    (tmp_path / "aws-state" / "skeleton-99.pickle").write_bytes(b"half a pick")
    (tmp_path / "aws-state" / "manifest.json.tmp").write_text('{"format": 1, "gen')
    with mock_aws():
        aws.reset_clients()
        assert Store(directory).load()
        assert accounts.find_project("whole") is not None
    assert not {"skeleton-99.pickle", "manifest.json.tmp"} & set(os.listdir(directory))


def test_the_one_file_state_of_earlier_versions_is_read_and_rewritten(tmp_path, environ):
    import pickle

    from moto.backends import get_backend

    legacy = tmp_path / "aws-state.pickle"
    with mock_aws():
        aws.reset_clients()
        os.environ.update(provision.provision_local())
        accounts.create_project("old", "UTC")
        store = Store(str(tmp_path / "aws-state"))           # registers the picklers moto's state needs
        legacy.write_bytes(pickle.dumps({name: dict(get_backend(name)) for name in ("dynamodb", "kms", "s3", "sqs")}))
    with mock_aws():
        aws.reset_clients()
        store = Store(str(tmp_path / "aws-state"))
        assert store.load() and store.dirty()
        store.save()
        assert not legacy.exists()
    with mock_aws():
        aws.reset_clients()
        assert Store(str(tmp_path / "aws-state")).load()
        assert accounts.find_project("old") is not None


# ---- the server, over HTTP ----------------------------------------------------------------------

class Server:
    """python -m tools.aws_server on a port of its own choosing, its state in a directory."""

    def __init__(self, directory, tmp_path, save_every=3600.0):
        self.ready = str(tmp_path / "aws.ready")
        if os.path.exists(self.ready):
            os.remove(self.ready)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tools.aws_server", "--port", "0", "--state", directory, "--ready-file",
             self.ready, "--save-every", str(save_every)], cwd=PROJECT_DIR, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        wait_for(lambda: os.path.exists(self.ready) or self.process.poll() is not None, "the moto server",
                 timeout=120)
        assert self.process.poll() is None, self.process.stdout.read()
        with open(self.ready) as handle:
            self.url = f"http://127.0.0.1:{json.load(handle)['port']}"

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        output = self.process.communicate(timeout=120)[0]
        assert self.process.returncode == 0, output
        return output


def _point_at(url):
    os.environ.update({"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local",
                       "AWS_DEFAULT_REGION": "us-east-1"})
    aws.reset_clients()


def _everything():
    """Every item of every table and every object (key, bytes) of every bucket, and the queues' message counts."""
    dynamodb, s3, sqs = boto3.client("dynamodb"), boto3.client("s3"), boto3.client("sqs")
    seen: dict = {}
    for table in dynamodb.list_tables()["TableNames"]:
        items = [item for page in dynamodb.get_paginator("scan").paginate(TableName=table) for item in page["Items"]]
        seen[table] = sorted(json.dumps(item, sort_keys=True, default=str) for item in items)
    for bucket in s3.list_buckets()["Buckets"]:
        keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket["Name"])
                for o in page.get("Contents", [])]
        seen[bucket["Name"]] = {k: s3.get_object(Bucket=bucket["Name"], Key=k)["Body"].read() for k in keys}
    for url in sqs.list_queues().get("QueueUrls", []):
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
        seen[url.rsplit("/", 1)[-1]] = attributes["Attributes"]["ApproximateNumberOfMessages"]
    return seen


def test_a_stopped_server_starts_again_with_every_write_the_product_makes(tmp_path, fast_hashing, environ):
    """Transactions (project, user), batches of readings, updates (latest), deletes, S3 puts, copies,
    multipart uploads and deletes, queue messages: the server restarted on its directory has them all,
    and its stop wrote only what changed since its last save."""
    from chalicelib.identity import scoped_keys
    from chalicelib.outputs import downloads
    from chalicelib.platform import clock

    directory = str(tmp_path / "aws-state")
    server = Server(directory, tmp_path, save_every=0.5)
    _point_at(server.url)
    os.environ.update(provision.provision_local())
    _wait_saved(server)
    # A save that began after the tables and the bucket were made, so what follows is noted: a change made
    # now is in the next save that writes (a save with nothing to write prints nothing).
    aws.s3().put_object(Bucket=config.resource_name("FilesBucket"), Key="a/provisioned.txt", Body=b"ok")
    _wait_saved(server)
    project = accounts.create_project("site", "UTC")["project_id"]
    accounts.create_user(project, "owner", "a-long-enough-password", "o@example.com")
    for i in range(5):
        meters.register(project, {"MeterId": f"m{i}", "SaveEvery": 1})
    ingest.ingest(project, [{"MeterId": f"m{i}", "TimeStamping": f"2025-01-01T00:0{m}:00Z", "value": 10 + m}
                              for i in range(5) for m in range(5)])
    key = scoped_keys.create(project, "temporary", "read", clock.zone("UTC"))
    scoped_keys.delete(project, key["id"])
    table = config.resource_name("ReadingsTable")       # BatchWriteItem: not used by the product today
    aws.dynamodb().batch_write_item(RequestItems={table: [
        {"PutRequest": {"Item": {"meter": {"S": "batch#1"}, "day": {"S": "2025-01-01"}, "n": {"N": "0"}}}},
        {"PutRequest": {"Item": {"meter": {"S": "batch#2"}, "day": {"S": "2025-01-01"}, "n": {"N": "0"}}}}]})
    aws.dynamodb().batch_write_item(RequestItems={table: [
        {"DeleteRequest": {"Key": {"meter": {"S": "batch#2"}, "day": {"S": "2025-01-01"}}}}]})
    arn = aws.dynamodb().describe_table(TableName=table)["Table"]["TableArn"]     # a table named by its ARN
    aws.dynamodb().put_item(TableName=arn, Item={"meter": {"S": "arn#1"}, "day": {"S": "2025-01-01"}, "n": {"N": "0"}})
    bucket = config.resource_name("FilesBucket")
    s3 = aws.s3()
    s3.put_object(Bucket=bucket, Key="a/one.csv", Body=b"one")
    s3.put_object(Bucket=bucket, Key="a/gone.csv", Body=b"gone")
    s3.copy_object(Bucket=bucket, Key="a/copy.csv", CopySource={"Bucket": bucket, "Key": "a/one.csv"})
    s3.delete_object(Bucket=bucket, Key="a/gone.csv")
    downloads.write_object("a/multi.csv", "text/csv", iter([b"x" * (6 << 20), b"y" * 100]))
    aws.sqs().send_message(QueueUrl=os.environ["EXPORT_QUEUE_URL"], MessageBody="slice")
    before = _everything()
    assert before[bucket]["a/multi.csv"] == b"x" * (6 << 20) + b"y" * 100
    server.stop()

    server = Server(directory, tmp_path)
    _point_at(server.url)
    assert _everything() == before
    # What make run does at each start (its CreateTable and CreateBucket are refused: nothing changes), then
    # one reading more: the stop writes the skeleton and the shards of that meter's items, not whole tables.
    provision.provision_local()
    ingest.ingest(project, [{"MeterId": "m0", "TimeStamping": "2025-01-01T00:09:00Z", "value": 20}])
    output = server.stop()
    stopped = [line for line in output.splitlines() if line.startswith("stopped:")][-1]
    assert int(stopped.split()[1]) <= 4, stopped   # skeleton; shards of the day item, the meter item, its rollups

    server = Server(directory, tmp_path)
    _point_at(server.url)
    try:
        assert [v for _t, v in readings.series(project, meters.find(project, name="m0")["meter_id"], 0, 2 ** 33)] \
            == [10, 11, 12, 13, 14, 20]
        assert _everything()[bucket] == before[bucket]
    finally:
        server.stop()


def _wait_saved(server, timeout=60):
    """Read the server's output up to its next "saved:" line (it prints one per save that wrote)."""
    import select

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if select.select([server.process.stdout], [], [], 0.5)[0]:
            line = server.process.stdout.readline()
            assert line, "the moto server ended"
            if line.startswith("saved:"):
                return
    raise AssertionError("no periodic save")
