"""tools/aws_server.py: the embedded AWS's state saved and loaded again is the same state, KMS key
material included (a key made before a restart of `make run` still decrypts; the file is private)."""
import os
import stat

from moto import mock_aws

from chalicelib.identity import accounts
from chalicelib.platform import aws
from tools import aws_server, provision


def test_a_saved_state_loaded_in_a_fresh_moto_keeps_accounts_and_decrypts_keys(tmp_path, fast_hashing):
    path = str(tmp_path / "aws-state.pickle")
    aws_server._picklable_private_keys()
    saved = dict(os.environ)
    try:
        with mock_aws():
            aws.reset_clients()
            os.environ.update(provision.provision_local())
            project = accounts.create_project("kept", "Europe/Paris")
            view, key = accounts.create_user(project["project_id"], "keeper", "a-long-enough-password",
                                             "k@example.com")
            aws.sqs().send_message(QueueUrl=os.environ["EXPORT_QUEUE_URL"], MessageBody="a slice to write")
            aws_server.save(path)              # the export queue (its lock) pickles too
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        with mock_aws():                    # a new moto: nothing until the state is loaded
            aws.reset_clients()
            assert aws_server.load(str(tmp_path / "none.pickle")) is False
            assert aws_server.load(path) is True
            os.environ.update(provision.provision_local())      # idempotent over the loaded state
            assert accounts.find_project("kept")["timezone"] == "Europe/Paris"
            assert accounts.find_by_key(key) is not None
            assert accounts.current_key(project["project_id"], view["uuid"])["key"] == key   # KMS decrypts
            queued = aws.sqs().receive_message(QueueUrl=os.environ["EXPORT_QUEUE_URL"])["Messages"]
            assert [m["Body"] for m in queued] == ["a slice to write"]   # a job's pending slices survive
    finally:
        os.environ.clear()
        os.environ.update(saved)
        aws.reset_clients()
