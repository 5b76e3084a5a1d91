"""Shared fixtures: in-process moto with the template's resources, the Chalice test client, projects.

One moto per test module (``moto_world``), shared by the module's tests: each test works in projects,
users and meters of its own (``make_account`` names them uniquely), so it needs no empty world. A
test that does (it counts every item of a table, say) is marked ``@pytest.mark.fresh_aws`` and starts
on an empty world. Passwords are hashed with Argon2id's cheapest parameters unless a test is marked
``@pytest.mark.production_hashing`` (hashing is its subject).
"""
import contextlib
import itertools
import json
import os
import weakref
from types import SimpleNamespace
from urllib.parse import urlencode

import pytest

os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.pop("AWS_ENDPOINT_URL", None)
os.environ.pop("AWS_PROFILE", None)

STAGE = "local"
PASSWORD = "correct horse battery staple"
# Numbers for the names make_account makes: unique in the session, so tests sharing a moto never meet.
_NAMES = itertools.count(1)


def restore_environ(saved: dict) -> None:
    """Put back the environment variables a fixture changed ({name: value before, None when unset})."""
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    """The slow tests first, the others in their order: under pytest-xdist (`make test`, files handed out
    in this order) the long files start at once instead of one running alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(autouse=True)
def _cheap_password_hashing(request, monkeypatch):
    """Argon2id with small costs unless the test is about hashing (``production_hashing``)."""
    if request.node.get_closest_marker("production_hashing") is None:
        monkeypatch.setenv("PASSWORD_HASHING", "CHEAPEST")


@pytest.fixture(autouse=True)
def _fresh_moto_state(request):
    """A test marked ``fresh_aws`` that runs a moto server in this process (which shares in-process moto's
    state) rather than asking for ``aws`` starts on an empty state too."""
    if request.node.get_closest_marker("fresh_aws") and "aws" not in request.fixturenames:
        from moto import mock_aws

        with mock_aws():   # started on an empty state, and emptied again when stopped
            pass


@pytest.fixture(scope="module")
def moto_world():
    """The module's in-process moto, with every resource of infra/resources.yaml, named as the local stage
    names them. Its state is kept from test to test; it is switched on only while a test asks for ``aws``
    (tests of a moto server or of the real network in the same module run outside it, as alone)."""
    from moto import mock_aws

    from chalicelib.platform import aws as aws_clients
    from tools import provision

    mock = mock_aws()
    mock.start()                                  # an empty moto
    try:
        env = provision.provision_local()
    finally:
        mock.stop(remove_data=False)
    yield SimpleNamespace(mock=mock, env=env, provision=provision.provision_local, clients=None)
    aws_clients.reset_clients()
    with mock:                                    # forget the module's state
        pass


def _app_clients():
    from chalicelib.platform import aws as aws_clients

    return [aws_clients.dynamodb(), aws_clients.s3(), aws_clients.kms(), aws_clients.sqs(), aws_clients.sns()]


def _same(clients, others):
    return others is not None and all(a is b for a, b in zip(clients, others, strict=True))


@contextlib.contextmanager
def _registrations_on(clients):
    """Yields a list that gets the name of every event a handler is registered for, meanwhile, on one
    of ``clients`` (botocore's public register methods, watched on the class for every thread)."""
    from botocore.hooks import EventAliaser

    emitters = [client.meta.events for client in clients]
    seen: list = []
    originals = {name: getattr(EventAliaser, name) for name in ("register", "register_first", "register_last")}

    def watched(original):
        def register(self, event_name, *args, **kwargs):
            if any(self is emitter for emitter in emitters):
                seen.append(event_name)
            return original(self, event_name, *args, **kwargs)
        return register

    for name, original in originals.items():
        setattr(EventAliaser, name, watched(original))
    try:
        yield seen
    finally:
        for name, original in originals.items():
            setattr(EventAliaser, name, original)


@pytest.fixture
def aws(request, moto_world):
    """The module's in-process moto, switched on for the test (emptied first for a test marked ``fresh_aws``),
    and the stage's environment naming its resources.

    The app's boto3 clients are kept from test to test (making one costs a tenth of a second and more),
    unless the test registered an event hook on them or made new ones: then they are made anew after it."""
    import requests

    from chalicelib.platform import aws as aws_clients

    moto_world.mock.start(reset=False)
    saved = {k: os.environ.get(k) for k in moto_world.env}
    try:
        os.environ.update(moto_world.env)
        before = _app_clients()
        if not _same(before, moto_world.clients):   # the module's first test, or clients made outside moto since
            aws_clients.reset_clients()
            before = _app_clients()
        if request.node.get_closest_marker("fresh_aws"):
            requests.post("http://motoapi.amazonaws.com/moto-api/reset", timeout=10)   # moto's reset API
            moto_world.provision()
        elif moto_world.env["ACCOUNTS_TABLE"] not in before[0].list_tables()["TableNames"]:
            moto_world.provision()   # another moto started in the module (a test's own mock_aws) emptied it
        serialize_calls(before)
        with _registrations_on(before) as registered:
            yield moto_world.env
        moto_world.clients = _app_clients()
        if registered or not _same(before, moto_world.clients):
            aws_clients.reset_clients()
            moto_world.clients = None
    finally:
        restore_environ(saved)
        moto_world.mock.stop(remove_data=False)


_SERIALIZED: "weakref.WeakSet" = weakref.WeakSet()   # the clients serialize_calls was applied to


def serialize_calls(clients):
    """Make the app's AWS clients carry out one call at a time, for in-process moto, which is not thread-safe
    (two transactions at once can fail inside moto with 'dictionary changed size during iteration'), while
    the AWS services are, and chalicelib makes DynamoDB calls from several threads at once (db.in_parallel).
    Only each call is serialized, through botocore's events, not the code between calls, so the races
    between our calls still run for real. The lock is released first thing after a call (registered first
    on each operation's own after-call events, which botocore runs before the generic ones), so a test's
    hook that makes a call of its own after another's (a race staged in after-call) does not wait on it."""
    import threading

    lock = threading.Lock()

    def acquire(context, **_kwargs):
        lock.acquire()
        context["serialized"] = True

    def release(context, **_kwargs):   # not acquired when an earlier before-call handler answered (a fault)
        if context.pop("serialized", False):
            lock.release()

    for client in clients:
        if client in _SERIALIZED:
            continue
        _SERIALIZED.add(client)
        events, service = client.meta.events, client.meta.service_model.service_id.hyphenize()
        events.register("before-call", acquire)
        for operation in client.meta.service_model.operation_names:
            events.register_first(f"after-call.{service}.{operation}", release)
            events.register_first(f"after-call-error.{service}.{operation}", release)


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
    """Argon2id with small costs, for tests about something other than hashing (it stays Argon2id).
    Every test has them now unless marked ``production_hashing``; this fixture says so explicitly."""
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
    """Factory: a new project (or a user in a given project) and its first account, named uniquely
    in the session unless the test names them."""
    from chalicelib.identity import accounts

    def make(project_name=None, username=None, timezone="UTC", project_id=None, password=PASSWORD):
        n = next(_NAMES)
        if project_id is None:
            project = accounts.create_project(project_name or f"project{n}", timezone)
            project_id = project["project_id"]
        view, key = accounts.create_user(project_id, username or f"user{n}", password, f"user{n}@example.com")
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
    """The API served over HTTP (Chalice's local server in a thread) on the loopback port it bound (port 0)."""
    import threading

    from tools.local_api import make_server

    server = make_server("127.0.0.1", 0)
    thread = threading.Thread(target=server.server.serve_forever, daemon=True)
    thread.start()
    account = make_account()
    try:
        yield LiveApi(f"http://127.0.0.1:{server.port}", account.key, account.view["project"])
    finally:
        server.shutdown()
        server.server.server_close()
