"""Test configuration: fixtures live in tests/fixtures/*.py, registered as plugins."""

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
