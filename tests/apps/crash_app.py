"""A small app for tests/test_crash.py, served by a real uvicorn process.

Every task is ``persist=True``; each start and each finish is appended, as one
``O_APPEND`` write, to the file named by ``TASKFLOW_TEST_RAN`` as
``<event> <task_id> <pid>``, so the test can count how often each task ran.

Environment: TASKFLOW_TEST_DB (SQLite file), TASKFLOW_TEST_RAN (marks file),
TASKFLOW_TEST_SLOW (seconds a slow task sleeps), TASKFLOW_TEST_LIMIT (max_concurrent_tasks),
TASKFLOW_TEST_GATE (a path: gated tasks wait until it exists).
"""

from __future__ import annotations

import asyncio
import os
import time

from fastapi import Depends, FastAPI
from run_marks import mark, wait_for_file
from taskflow import TaskManager

DB = os.environ["TASKFLOW_TEST_DB"]
RAN = os.environ["TASKFLOW_TEST_RAN"]
SLOW = float(os.environ.get("TASKFLOW_TEST_SLOW", "60"))
LIMIT = int(os.environ.get("TASKFLOW_TEST_LIMIT", "8"))
GATE = os.environ.get("TASKFLOW_TEST_GATE", "")

task_manager = TaskManager(
    snapshot_db=DB,
    requeue_pending=True,
    max_concurrent_tasks=LIMIT,
    snapshot_interval=0.1,
    shutdown_timeout=1.0,
)
app = FastAPI()
task_manager.init_app(app)


def _mark(event: str) -> None:
    mark(RAN, event, os.getpid())


@task_manager.task(persist=True)
async def fast(n: int) -> int:
    _mark("start")
    await asyncio.sleep(0.005)
    _mark("done")
    return n


@task_manager.task(persist=True)
def sync_fast(n: int) -> int:
    _mark("start")
    time.sleep(0.005)
    _mark("done")
    return n


@task_manager.task(persist=True)
async def gated(n: int) -> int:
    """Starts, then waits until the file TASKFLOW_TEST_GATE exists."""
    _mark("start")
    await wait_for_file(GATE)
    _mark("done")
    return n


@task_manager.task(persist=True)
async def slow(n: int) -> int:
    _mark("start")
    await asyncio.sleep(SLOW)
    _mark("done")
    return n


@task_manager.task(persist=True, requeue_on_interrupt=True)
async def slow_again(n: int) -> int:
    _mark("start")
    await asyncio.sleep(SLOW)
    _mark("done")
    return n


FUNCS = {
    "fast": fast,
    "sync_fast": sync_fast,
    "gated": gated,
    "slow": slow,
    "slow_again": slow_again,
}


@app.post("/enqueue/{kind}/{n}")
async def enqueue(kind: str, n: int, tasks=Depends(task_manager.get_tasks)) -> dict:
    return {"task_id": tasks.add_task(FUNCS[kind], n), "pid": os.getpid()}


@app.post("/later/{kind}/{n}")
async def later(kind: str, n: int, countdown: float, tasks=Depends(task_manager.get_tasks)) -> dict:
    """A delayed run (persist=True: committed before this answers)."""
    task_id = tasks.with_options(countdown=countdown).add_task(FUNCS[kind], n)
    return {"task_id": task_id, "pid": os.getpid()}


@app.get("/health")
async def health() -> dict:
    return {"pid": os.getpid()}
