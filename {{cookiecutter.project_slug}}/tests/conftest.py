"""Point the service at throw-away databases before any test imports it, and share small helpers."""

import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

# Settings are read once, at import, so the environment is set here, before test modules import
# the package. Nothing a test does touches a developer's own tasks.db or app.db.
STATE_DIR = Path(tempfile.mkdtemp(prefix="service-tests-"))
os.environ.update(
    APP_ENV="development",
    TASKS_DB=str(STATE_DIR / "tasks.db"),
    APP_DB=str(STATE_DIR / "app.db"),
    DASHBOARD_USER="admin",
    DASHBOARD_PASSWORD="test-password",
    SESSION_SECRET="test-secret-" + "x" * 32,
    RETENTION_DAYS="30",
)

FINISHED = {"success", "failed", "cancelled", "interrupted"}


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(STATE_DIR, ignore_errors=True)


@pytest.fixture
def wait_for():
    """Return `wait(task_manager, task_id, until=FINISHED)`: poll until the task's status is in
    `until`, and return the task as a dict."""

    def wait(task_manager, task_id: str, until=FINISHED, timeout: float = 10.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            record = task_manager.get(task_id)
            if record is not None and record.to_dict()["status"] in until:
                return record.to_dict()
            time.sleep(0.01)
        raise AssertionError(f"task {task_id} did not reach {sorted(until)} within {timeout} s")

    return wait


@pytest.fixture
def reload():
    """Return `reload(task_id)`: the task as a fresh TaskManager finds it in TASKS_DB, or None.

    A new manager has nothing in memory, so this sees only what was written to the database: what
    a restarted process, or another process sharing the database, would see.
    """
    from {{ cookiecutter.package_name }}.settings import settings
    from {{ cookiecutter.package_name }}.taskflow import TaskManager

    async def fetch(task_id: str):
        fresh = TaskManager(snapshot_db=settings.tasks_db)
        await fresh.startup()
        try:
            record = await fresh.fetch(task_id)
        finally:
            await fresh.shutdown()
        return None if record is None else record.to_dict()

    return lambda task_id: asyncio.run(fetch(task_id))
