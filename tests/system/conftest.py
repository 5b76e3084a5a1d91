"""The whole system as it ships: `make run`, the end-to-end stack, the soak, the packaging, the /docs page
in Chromium.

These tests start the stack, the agent and the packaging as subprocesses that inherit the environment,
so nothing here sets the tests' cheap password hashing. The ones that take minutes are marked ``slow``
(`make test-fast`, `pytest -m "not slow"` leave them out; `make test` runs them)."""
from pathlib import Path

import pytest

SLOW = {"test_make_run.py", "test_stack_lifecycle.py", "test_e2e_stack.py", "test_soak.py", "test_package.py"}
HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items):
    for item in items:
        if item.path.parent == HERE and item.path.name in SLOW:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _cheap_password_hashing():
    """Overrides tests/conftest.py's: production Argon2id parameters for everything here."""
