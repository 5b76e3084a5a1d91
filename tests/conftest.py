"""Shared fixtures: in-process moto with the template's resources, the Chalice test client, projects."""
import json
import os
from urllib.parse import urlencode

import pytest

os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.pop("AWS_ENDPOINT_URL", None)
os.environ.pop("AWS_PROFILE", None)

STAGE = "local"
PASSWORD = "correct horse battery staple"


@pytest.fixture
def aws():
    """A fresh in-process moto with every resource of infra/resources.yaml, named as the local stage names them.

    One AWS call at a time (serialize_calls): in-process moto is not thread-safe, while the AWS services
    are, and chalicelib makes DynamoDB calls from several threads at once (db.in_parallel)."""
    from moto import mock_aws

    from chalicelib.platform import aws as aws_clients
    from tools import provision

    with mock_aws():
        aws_clients.reset_clients()
        stage_env = provision.provision_local()
        saved = {k: os.environ.get(k) for k in stage_env}
        os.environ.update(stage_env)
        serialize_calls()
        yield stage_env
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        aws_clients.reset_clients()


def serialize_calls():
    """Make the app's AWS clients (chalicelib.platform.aws) carry out one call at a time, for in-process moto,
    which is not thread-safe (two transactions at once can fail inside moto with 'dictionary changed size
    during iteration'), while the AWS services are. Only each call is serialized, through botocore's events,
    not the code between calls, so the races between our calls still run for real."""
    import threading

    from chalicelib.platform import aws as aws_clients

    lock = threading.Lock()

    def acquire(context, **_kwargs):
        lock.acquire()
        context["serialized"] = True

    def release(context, **_kwargs):   # not acquired when an earlier before-call handler answered (a fault)
        if context.pop("serialized", False):
            lock.release()

    for client in (aws_clients.dynamodb(), aws_clients.s3(), aws_clients.kms(), aws_clients.sqs()):
        client.meta.events.register("before-call", acquire)
        client.meta.events.register("after-call", release)
        client.meta.events.register("after-call-error", release)


@pytest.fixture
def serialized_aws(aws):
    """The aws fixture, named for the tests that race threads (every test's calls are serialized now)."""
    yield


@pytest.fixture
def time_travel(time_machine):
    """The system's time, for tests of expiry and throttling: starts at the real now and runs on, and
    ``time_travel.shift(seconds)`` moves it (back with a negative number). time-machine moves
    time.time() and datetime.now() for everything in the process: the app's clock, moto, botocore.
    ``time_travel.move_to(epoch, tick=False)`` stops it at an instant."""
    import time

    time_machine.move_to(time.time(), tick=True)
    return time_machine


@pytest.fixture
def fast_hashing(monkeypatch):
    """Argon2id with small costs, for tests about something other than hashing (it stays Argon2id)."""
    monkeypatch.setenv("PASSWORD_HASHING", "CHEAPEST")


@pytest.fixture
def client(aws):
    """The Chalice test client over the app, on the local stage."""
    from chalice.test import Client

    from app import app

    with Client(app, stage_name=STAGE) as test_client:
        yield test_client


class Account:
    """A user of a test project, with its key and helpers to call the API as it."""

    def __init__(self, client, view, key, password):
        self.client = client
        self.view = view
        self.key = key
        self.password = password

    @property
    def headers(self):
        return {"X-API-Key": self.key}

    def request(self, method, path, body=None, headers=None, **kwargs):
        headers = {**self.headers, **(headers or {})}
        if body is not None:
            headers.setdefault("Content-Type", "application/json")
            body = json.dumps(body)
        return getattr(self.client.http, method.lower())(path, headers=headers, body=body, **kwargs)

    def call(self, method, path, params=None, body=None, status=200):
        """The JSON answer of a request that must answer ``status`` (the query string built from ``params``)."""
        if params:
            path += "?" + urlencode(params)
        answer = self.request(method, path, body=body)
        assert answer.status_code == status, (method, path, answer.status_code, answer.body)
        return json.loads(answer.body)


@pytest.fixture
def make_account(client):
    """Factory: a new project (or a user in a given project) and its first account."""
    from chalicelib.identity import accounts

    counter = {"n": 0}

    def make(project_name=None, username=None, timezone="UTC", project_id=None, password=PASSWORD):
        counter["n"] += 1
        if project_id is None:
            project = accounts.create_project(project_name or f"project{counter['n']}", timezone)
            project_id = project["project_id"]
        view, key = accounts.create_user(project_id, username or f"user{counter['n']}", password,
                                         f"user{counter['n']}@example.com")
        return Account(client, view, key, password)

    return make


class LiveApi:
    """A real HTTP server running the app over the in-process moto, and a fresh project's key."""

    def __init__(self, url, key, project_id):
        self.url = url
        self.key = key
        self.project_id = project_id

    def stored_readings(self, meter_name):
        """(UTC datetime, value) of every reading the cloud stored for a meter (by site or display name)."""
        from datetime import datetime, timezone

        from chalicelib.metering import meters, readings

        meter = meters.find(self.project_id, name=meter_name)
        return [(datetime.fromtimestamp(t, timezone.utc), v)
                for t, v in readings.series(self.project_id, meter["meter_id"], 0, 2 ** 33)]


@pytest.fixture
def live_api(aws, make_account):
    """The API served over HTTP on a free loopback port (Chalice's local server in a thread)."""
    import socket
    import threading

    from tools.local_api import make_server

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = make_server("127.0.0.1", port)
    thread = threading.Thread(target=server.server.serve_forever, daemon=True)
    thread.start()
    account = make_account()
    try:
        yield LiveApi(f"http://127.0.0.1:{port}", account.key, account.view["project"])
    finally:
        server.shutdown()
        server.server.server_close()
