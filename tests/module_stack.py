"""A stack for a whole test module: in-process moto with the template's resources, the Chalice test client
and one project's account, for modules that build a long history once (a year of readings) and then ask
many questions of it. conftest.py's fixtures give a fresh stack per test instead."""
import contextlib
import json
import os
from urllib.parse import urlencode

PASSWORD = "correct horse battery staple"


class ModuleAccount:
    """A project's first account on the module's stack, and the API as it sees it."""

    def __init__(self, client, project_id, key):
        self.client = client
        self.project_id = project_id
        self.key = key

    def request(self, method, path, body=None, params=None):
        if params:
            path += "?" + urlencode(params)
        headers = {"X-API-Key": self.key}
        if body is not None:
            headers["Content-Type"] = "application/json"
            body = json.dumps(body)
        return getattr(self.client.http, method.lower())(path, headers=headers, body=body)

    def call(self, method, path, params=None, body=None, status=200):
        answer = self.request(method, path, body=body, params=params)
        assert answer.status_code == status, (method, path, answer.status_code, answer.body[:500])
        return json.loads(answer.body)

    def new_project(self, name, timezone):
        """The first account of another new project on the same stack."""
        from chalicelib.identity import accounts

        project = accounts.create_project(name, timezone)
        _view, key = accounts.create_user(project["project_id"], f"{name}-user", PASSWORD, f"{name}@example.com")
        return ModuleAccount(self.client, project["project_id"], key)

    def push(self, readings):
        """POST /data in batches of 1000; every reading must be accepted."""
        for at in range(0, len(readings), 1000):
            receipt = self.call("POST", "/data", body={"readings": readings[at:at + 1000]})
            assert receipt["accepted"] == len(readings[at:at + 1000]), receipt


@contextlib.contextmanager
def module_stack(project_name, timezone):
    """(aws environment, ModuleAccount) of a new project in a fresh in-process moto, for one module."""
    from chalice.test import Client
    from moto import mock_aws

    from app import app
    from chalicelib.identity import accounts
    from chalicelib.platform import aws as aws_clients
    from tools import provision

    saved_hashing = os.environ.get("PASSWORD_HASHING")
    os.environ["PASSWORD_HASHING"] = "CHEAPEST"
    with mock_aws():
        aws_clients.reset_clients()
        stage_env = provision.provision_local()
        saved = {k: os.environ.get(k) for k in stage_env}
        os.environ.update(stage_env)
        try:
            with Client(app, stage_name="local") as client:
                project = accounts.create_project(project_name, timezone)
                _view, key = accounts.create_user(project["project_id"], f"{project_name}-user", PASSWORD,
                                                  f"{project_name}@example.com")
                yield stage_env, ModuleAccount(client, project["project_id"], key)
        finally:
            for k, v in {**saved, "PASSWORD_HASHING": saved_hashing}.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            aws_clients.reset_clients()
