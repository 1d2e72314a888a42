"""Shared fixtures: make the vendored module importable as `taskflow`; a throwaway PostgreSQL.

``postgres_server`` starts one PostgreSQL cluster per session, only if a test asks for
it; ``pg_url`` is a fresh database on it per test; ``snapshot_target`` runs a test once
against a SQLite file and once against PostgreSQL; ``storage_target`` adds a run with no
database at all (memory only). Tests that use PostgreSQL carry the ``postgres`` marker,
so ``-m "not postgres"`` leaves them out.
"""

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "taskflow_vendor"))

from apps.pg_support import PostgresServer  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "postgres: uses the throwaway PostgreSQL server (tests/apps/pg_support.py)"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs ``postgres_server``, directly or through another fixture."""
    for item in items:
        if "postgres_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL cluster for the session; skipped if it cannot start (failed under CI=true)."""
    server = PostgresServer()
    try:
        import asyncpg  # noqa: F401  (the fixtures and helpers talk to the server through it)

        server.start()
    except Exception as exc:
        server.cleanup()
        reason = f"PostgreSQL test server unavailable: {type(exc).__name__}: {exc}"
    else:
        reason = ""
    if reason and os.environ.get("CI") == "true":
        pytest.fail(reason, pytrace=False)
    if reason:
        pytest.skip(reason)
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database on the session's server, dropped after the test: its URL."""
    url = postgres_server.create_database()
    try:
        yield url
    finally:
        postgres_server.drop_database(url)


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
    ids=["sqlite", "postgres"],
)
def snapshot_target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a test's tasks persist: a SQLite file path, or a fresh PostgreSQL database URL."""
    if request.param == "sqlite":
        return str(tmp_path / "tasks.db")
    return request.getfixturevalue("pg_url")


@pytest.fixture(
    params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
    ids=["memory", "sqlite", "postgres"],
)
def storage_target(request: pytest.FixtureRequest, tmp_path: Path) -> str | None:
    """Where a test's tasks are kept: None (memory only), a SQLite path, or a PostgreSQL URL."""
    if request.param == "memory":
        return None
    if request.param == "sqlite":
        return str(tmp_path / "tasks.db")
    return request.getfixturevalue("pg_url")
