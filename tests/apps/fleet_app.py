"""An instance of a fleet for tests/test_fleet.py: several of these, on several (UTS
namespace) hosts, share one PostgreSQL database.

Each start and finish of a task is appended, as one ``O_APPEND`` write, to the file
named by ``TASKFLOW_TEST_RAN`` as ``<event> <task_id> <host> <pid>``, so the test
can count how often, and where, each task ran.

Environment: TASKFLOW_TEST_DB (database URL), TASKFLOW_TEST_RAN (marks file),
TASKFLOW_TEST_GATE (a path: gated tasks wait until it exists), TASKFLOW_TEST_LIMIT
(max_concurrent_tasks), TASKFLOW_TEST_HEARTBEAT (heartbeat_timeout).
"""

from __future__ import annotations

import asyncio
import os
import socket

from fastapi import Depends, FastAPI
from run_marks import mark, wait_for_file
from taskflow import TaskAdmin, TaskManager

RAN = os.environ["TASKFLOW_TEST_RAN"]
GATE = os.environ["TASKFLOW_TEST_GATE"]

task_manager = TaskManager(
    snapshot_db=os.environ["TASKFLOW_TEST_DB"],
    requeue_pending=True,
    max_concurrent_tasks=int(os.environ.get("TASKFLOW_TEST_LIMIT", "4")),
    heartbeat_timeout=float(os.environ.get("TASKFLOW_TEST_HEARTBEAT", "2")),
    snapshot_interval=0.1,
    shutdown_timeout=1.0,
)
app = FastAPI()
TaskAdmin(app, task_manager)  # poll_interval 30 s: live views come from NOTIFY


def _mark(event: str) -> None:
    mark(RAN, event, socket.gethostname(), os.getpid())


@task_manager.task(persist=True)
async def durable(n: int) -> int:
    _mark("start")
    await asyncio.sleep(0.002)
    _mark("done")
    return n


@task_manager.task()
async def plain(n: int) -> int:
    _mark("start")
    await asyncio.sleep(0.002)
    _mark("done")
    return n


@task_manager.task(persist=True)
async def gated(n: int) -> int:
    """Starts, then waits until the file TASKFLOW_TEST_GATE exists."""
    _mark("start")
    await wait_for_file(GATE)
    _mark("done")
    return n


FUNCS = {"durable": durable, "plain": plain, "gated": gated}


@app.post("/enqueue/{kind}/{n}")
async def enqueue(kind: str, n: int, tasks=Depends(task_manager.get_tasks)) -> dict:
    return {"task_id": tasks.add_task(FUNCS[kind], n), "host": socket.gethostname()}


@app.get("/whoami")
async def whoami() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "owner": task_manager._owner}
