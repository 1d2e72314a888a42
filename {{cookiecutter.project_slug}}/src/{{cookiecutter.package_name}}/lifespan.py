"""Pattern 3, manual lifespan: you call task_manager.startup() and shutdown() yourself.

Choose this when tasks depend on something the app opens, here the application's own database:
tasks must start after it is open and stop before it closes. Call nothing else then: TaskAdmin and
init_app() register their own lifespan hooks. (A second startup() would only log a warning and do
nothing, but the order you wrote here would no longer be the order that runs.)

Run: uvicorn {{ cookiecutter.package_name }}.lifespan:app --port 8002
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import aiosqlite
from fastapi import Depends, FastAPI

from .settings import PROJECT_NAME, settings
from .taskflow import ManagedBackgroundTasks, task_log
from .tasks import task_manager


class Database:
    """The application's own SQLite database: one connection, opened and closed by the lifespan."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._connection: aiosqlite.Connection | None = None

    @property
    def connection(self) -> aiosqlite.Connection:
        if self._connection is None:
            raise RuntimeError("the application database is not open")
        return self._connection

    async def connect(self) -> None:
        self._connection = await aiosqlite.connect(self.path)
        await self._connection.execute(
            "CREATE TABLE IF NOT EXISTS events ("
            " id INTEGER PRIMARY KEY, kind TEXT NOT NULL, detail TEXT NOT NULL,"
            " created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)"
        )
        await self._connection.commit()

    async def disconnect(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None


db = Database(settings.app_db)


@task_manager.task(retries=2, delay=0.1)
async def record_event(kind: str, detail: str) -> None:
    """Write one row to the application database: it must be open for as long as tasks run."""
    await db.connection.execute("INSERT INTO events (kind, detail) VALUES (?, ?)", (kind, detail))
    await db.connection.commit()
    task_log("event recorded", kind=kind)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    await db.connect()  # first: tasks queued before startup run as soon as it returns
    await task_manager.startup()
    try:
        yield
    finally:
        await task_manager.shutdown()  # waits for running tasks, which may still write
        await db.disconnect()  # last: nothing can use it any more


app = FastAPI(title=f"{PROJECT_NAME} (manual lifespan)", lifespan=lifespan)

Tasks = Annotated[ManagedBackgroundTasks, Depends(task_manager.get_tasks)]


@app.post("/events", status_code=202)
def create_event(kind: str, detail: str, tasks: Tasks) -> dict[str, str]:
    return {"task_id": tasks.add_task(record_event, kind, detail)}


@app.get("/events")
async def list_events() -> list[dict]:
    cursor = await db.connection.execute(
        "SELECT id, kind, detail, created_at FROM events ORDER BY id"
    )
    rows = await cursor.fetchall()
    return [dict(zip(("id", "kind", "detail", "created_at"), row, strict=True)) for row in rows]
