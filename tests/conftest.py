"""Test configuration: fixtures live in tests/fixtures/*.py, registered as plugins."""

import pytest

from appliance import wiring

pytest_plugins = [
    "tests.fixtures.env",
    "tests.fixtures.index",
    "tests.fixtures.documents",
    "tests.fixtures.models",
    "tests.fixtures.app",
    "tests.fixtures.auth",
    "tests.fixtures.chat",
    "tests.fixtures.postgres",
]


@pytest.fixture(autouse=True, scope="session")
def _wired() -> None:
    """Install the hooks and approval executors, as every entry point does at start-up."""
    wiring.install()
