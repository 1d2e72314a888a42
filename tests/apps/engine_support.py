"""Helpers shared by the engine tests: run an app's lifespan, poll for states, read SQLite.

Nothing here stands in for taskflow code: apps are driven through the real ASGI
protocol (lifespan and HTTP through httpx's ASGI transport), and databases are
real files read back with the standard ``sqlite3`` module.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx

FINAL = {"success", "failed", "cancelled", "interrupted"}


async def until(
    predicate: Callable[[], Any], *, timeout: float = 10.0, what: str = "condition"
) -> Any:
    """Poll ``predicate`` (sync or async) until it returns something truthy, or fail."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.005)


def status_of(tm: Any, task_id: str) -> str | None:
    record = tm.get(task_id)
    return None if record is None else record.status.value


async def reaches(tm: Any, task_id: str, *statuses: str, timeout: float = 10.0) -> Any:
    """Wait until the task has one of ``statuses`` (default: any final one); returns its record."""
    wanted = set(statuses) or FINAL

    async def check() -> Any:
        record = tm.get(task_id)
        if record is None:  # left memory (max_history): ask the database
            record = await tm.fetch(task_id)
        return record if record is not None and record.status.value in wanted else None

    try:
        return await until(check, timeout=timeout, what=f"{task_id} to reach {sorted(wanted)}")
    except AssertionError:
        raise AssertionError(
            f"task {task_id} is {status_of(tm, task_id)!r}, expected one of {sorted(wanted)}"
        ) from None


@contextlib.asynccontextmanager
async def started(tm: Any) -> AsyncIterator[Any]:
    """``startup()`` on entry, ``shutdown()`` on exit."""
    await tm.startup()
    try:
        yield tm
    finally:
        await tm.shutdown()


class LifespanFailed(RuntimeError):
    """The app reported ``lifespan.startup.failed``."""


@contextlib.asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    """Run ``app``'s ASGI lifespan: startup on entry, shutdown on exit."""
    to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}
    runner = asyncio.create_task(app(scope, to_app.get, from_app.put))
    await to_app.put({"type": "lifespan.startup"})
    message = await _next(from_app, runner)
    if message["type"] != "lifespan.startup.complete":
        with contextlib.suppress(BaseException):
            await runner
        raise LifespanFailed(message.get("message", repr(message)))
    try:
        yield
    finally:
        await to_app.put({"type": "lifespan.shutdown"})
        message = await _next(from_app, runner)
        await runner
        if message["type"] != "lifespan.shutdown.complete":
            raise RuntimeError(f"lifespan shutdown failed: {message}")


async def _next(queue: asyncio.Queue[dict[str, Any]], runner: asyncio.Task[Any]) -> dict[str, Any]:
    getter = asyncio.ensure_future(queue.get())
    done, _ = await asyncio.wait({getter, runner}, return_when=asyncio.FIRST_COMPLETED)
    if getter in done:
        return getter.result()
    getter.cancel()
    runner.result()  # raises what the app raised
    raise RuntimeError("the app's lifespan ended without answering")


def client(app: Any) -> httpx.AsyncClient:
    """An HTTP client that talks to ``app`` in-process (no lifespan: see ``serve``)."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


@contextlib.asynccontextmanager
async def serve(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan running, and a client for it."""
    async with lifespan(app), client(app) as http:
        yield http


def rows(path: Path | str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Read a SQLite file with a fresh ``sqlite3`` connection (as another process would)."""
    conn = sqlite3.connect(str(path), timeout=30)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def scalar(path: Path | str, sql: str, params: tuple[Any, ...] = ()) -> Any:
    result = rows(path, sql, params)
    return result[0][0] if result else None


def wait_until(predicate: Any, timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll a synchronous ``predicate`` until it is truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)
