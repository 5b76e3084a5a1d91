"""The whole system as it ships: these tests start `make run`, the stack, the agent and the packaging as
subprocesses that inherit the environment, so nothing here sets the tests' cheap password hashing."""
import pytest


@pytest.fixture(autouse=True)
def _cheap_password_hashing():
    """Overrides tests/conftest.py's: production Argon2id parameters for everything here."""
