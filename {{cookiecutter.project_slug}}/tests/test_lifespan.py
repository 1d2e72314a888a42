"""Pattern 3, lifespan.py: the database opens before tasks start and closes after they stop."""

import asyncio
import contextlib
import sqlite3

from fastapi.testclient import TestClient

from {{ cookiecutter.package_name }} import lifespan
from {{ cookiecutter.package_name }}.settings import settings
from {{ cookiecutter.package_name }}.taskflow import task_log
from {{ cookiecutter.package_name }}.tasks import task_manager


def rows(kind: str) -> list[str]:
    with contextlib.closing(sqlite3.connect(settings.app_db)) as connection:
        query = "SELECT detail FROM events WHERE kind = ? ORDER BY id"
        return [detail for (detail,) in connection.execute(query, (kind,))]


def test_startup_and_shutdown_run_in_the_written_order(monkeypatch):
    calls = []

    def spy(name, method):
        async def wrapper(*args, **kwargs):
            calls.append(name)
            return await method(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(lifespan.db, "connect", spy("db.connect", lifespan.db.connect))
    monkeypatch.setattr(lifespan.db, "disconnect", spy("db.disconnect", lifespan.db.disconnect))
    monkeypatch.setattr(task_manager, "startup", spy("tasks.startup", task_manager.startup))
    monkeypatch.setattr(task_manager, "shutdown", spy("tasks.shutdown", task_manager.shutdown))

    with TestClient(lifespan.app):
        assert calls == ["db.connect", "tasks.startup"]
    assert calls == ["db.connect", "tasks.startup", "tasks.shutdown", "db.disconnect"]


def test_a_task_writes_to_the_application_database(wait_for):
    with TestClient(lifespan.app) as client:
        response = client.post("/events", params={"kind": "signup", "detail": "ada"})
        assert response.status_code == 202
        assert wait_for(task_manager, response.json()["task_id"])["status"] == "success"
        assert [e["detail"] for e in client.get("/events").json() if e["kind"] == "signup"] == [
            "ada"
        ]


@task_manager.task()
async def slow_write(detail: str) -> None:
    task_log("writing after a pause")
    await asyncio.sleep(0.3)
    await lifespan.db.connection.execute(
        "INSERT INTO events (kind, detail) VALUES ('slow', ?)", (detail,)
    )
    await lifespan.db.connection.commit()


def test_a_task_running_at_shutdown_finishes_before_the_database_closes(wait_for):
    with TestClient(lifespan.app):
        task_id = task_manager.add_task(slow_write, "in flight")
        wait_for(task_manager, task_id, until={"running"})
    # Leaving the block ran the lifespan's shutdown half while the task was mid-sleep.
    assert wait_for(task_manager, task_id)["status"] == "success"
    assert rows("slow") == ["in flight"]
