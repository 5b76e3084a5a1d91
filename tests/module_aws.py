"""One stack for a whole test module: in-process moto with the template's resources and the Chalice test
client, for modules that build something big once (300 meters) or ask many small questions of one
project. conftest.py's fixtures give a fresh stack per test instead."""
import contextlib
import os
from collections.abc import Callable, Iterator
from typing import NamedTuple

from tests.conftest import PASSWORD, STAGE, Account


class ModuleStack(NamedTuple):
    env: dict[str, str]                        # the stage's resource names (EXPORT_QUEUE_URL, …)
    client: object                             # chalice.test.Client
    account: Callable[..., Account]            # account(project_id=None, timezone="UTC"): a new account


@contextlib.contextmanager
def module_stack() -> Iterator[ModuleStack]:
    """A fresh in-process moto for one module, cheap password hashing, the app's test client."""
    from chalice.test import Client
    from moto import mock_aws

    from app import app
    from chalicelib.identity import accounts
    from chalicelib.platform import aws as aws_clients
    from tools import provision

    saved = {"PASSWORD_HASHING": os.environ.get("PASSWORD_HASHING")}
    os.environ["PASSWORD_HASHING"] = "CHEAPEST"
    with mock_aws():
        aws_clients.reset_clients()
        stage_env = provision.provision_local()
        saved.update({k: os.environ.get(k) for k in stage_env})
        os.environ.update(stage_env)
        try:
            with Client(app, stage_name=STAGE) as client:
                made = iter(range(1, 10 ** 6))

                def account(project_id: int | None = None, timezone: str = "UTC") -> Account:
                    n = next(made)
                    if project_id is None:
                        project_id = accounts.create_project(f"project{n}", timezone)["project_id"]
                    view, key = accounts.create_user(project_id, f"user{n}", PASSWORD, f"user{n}@example.com")
                    return Account(client, view, key, PASSWORD)

                yield ModuleStack(stage_env, client, account)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            aws_clients.reset_clients()
