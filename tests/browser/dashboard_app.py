"""A small FastAPI app with a TaskAdmin dashboard, served by uvicorn for the browser tests.

Run it with ``uvicorn dashboard_app:app --app-dir tests/browser``. The ``/demo`` endpoints
enqueue tasks without a session (they are the app's own routes, not the admin's), so tests
drive the server with plain httpx while the browser watches the dashboard:

- ``POST /demo/quick?n=N``: N tasks that succeed at once.
- ``POST /demo/slow``: a task that sleeps a minute (cancel it from the page).
- ``POST /demo/failing``: a task that always raises.
- ``POST /demo/retrying``: a task that raises the same error on each of its 3 attempts.
- ``POST /demo/burst?n=N``: N short tasks, all in flight at once.
- ``POST /demo/gated/{gate}``: a task that runs until ``POST /demo/open/{gate}``.
- ``POST /demo/populate``: a few dozen tasks of every status (for the screenshot).
- ``POST /demo/stepped/{gate}?steps=N``: a task that reports ``task_progress`` step by step:
  step k is reported once ``POST /demo/open/{gate}:{k}``, and it ends after ``{gate}:done``.
- ``POST /demo/later?seconds=S``: a delayed one-off run, due in S seconds (``scheduled``).

``TASKFLOW_DEMO_MAX_HISTORY`` sets the manager's ``max_history`` (finished tasks kept).
``TASKFLOW_DEMO_SCHEDULES=1`` adds three periodic tasks: two that hardly ever fire by
themselves (``nightly_cleanup``, every day; ``weekly_report``, Mondays at 06:30 in
Europe/Paris) and ``heartbeat``, every second, paused from the start (resume it to see runs).
``TASKFLOW_DEMO_QUEUES=1`` adds an ``email`` queue (``concurrency=1, max_size=3``) and
``POST /demo/queued/{gate}``: a task of that queue that runs until its gate opens (503 when
the queue is full).
``TASKFLOW_DEMO_ALLOWED_ORIGINS`` (comma-separated), when set, is TaskAdmin's
``allowed_origins``; unset, the argument is not passed at all.
"""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import timedelta
from pathlib import Path

from fastapi import Depends, FastAPI

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "taskflow_vendor"))

from taskflow import (  # noqa: E402
    ManagedBackgroundTasks,
    Queue,
    TaskAdmin,
    TaskManager,
    task_log,
    task_progress,
)

# The tests use markup in the title to prove it is escaped; the README screenshot does not.
TITLE = os.environ.get("TASKFLOW_DEMO_TITLE", "Demo <b>App</b>")
USERNAME, PASSWORD = "admin", "secret"
SECRET_KEY = "browser-tests-secret-key-0123456789"

SCHEDULES = os.environ.get("TASKFLOW_DEMO_SCHEDULES") == "1"
QUEUES = os.environ.get("TASKFLOW_DEMO_QUEUES") == "1"

tm = TaskManager(
    shutdown_timeout=1.0,
    max_history=int(os.environ.get("TASKFLOW_DEMO_MAX_HISTORY", "10000")),
    queues={"email": Queue(concurrency=1, max_size=3)} if QUEUES else None,
)
app = FastAPI(title="taskflow browser-test app")
_extra = {}
if os.environ.get("TASKFLOW_DEMO_ALLOWED_ORIGINS"):
    _extra["allowed_origins"] = os.environ["TASKFLOW_DEMO_ALLOWED_ORIGINS"].split(",")
TaskAdmin(app, tm, auth=(USERNAME, PASSWORD), secret_key=SECRET_KEY, title=TITLE, **_extra)

_gates: dict[str, asyncio.Event] = {}


def _gate(name: str) -> asyncio.Event:
    return _gates.setdefault(name, asyncio.Event())


@tm.task(name="send_welcome_email")
async def quick(n: int = 0, seconds: float = 0.0) -> int:
    if seconds:
        await asyncio.sleep(seconds)
    task_log(f"sent message {n}")
    return n


@tm.task(name="rebuild_search_index")
async def slow(seconds: float = 60.0) -> None:
    task_log("rebuilding")
    await asyncio.sleep(seconds)


class UpstreamError(RuntimeError):
    pass


@tm.task(name="charge_card")
async def failing(reason: str = "card declined") -> None:
    task_log("calling the payment provider")
    raise UpstreamError(reason)


@tm.task(name="sync_inventory", retries=2, delay=0.05)
async def retrying(reason: str = "warehouse unreachable") -> None:
    task_log("asking the warehouse")
    raise UpstreamError(reason)


@tm.task(name="wait_for_gate")
async def gated(gate: str) -> str:
    task_log(f"waiting for gate {gate}")
    await _gate(gate).wait()
    task_log(f"gate {gate} opened")
    return gate


@tm.task(name="import_catalog")
async def stepped(gate: str, steps: int = 4) -> int:
    for step in range(1, steps + 1):
        await _gate(f"{gate}:{step}").wait()
        task_progress(step / steps, f"step {step} of {steps}")
    await _gate(f"{gate}:done").wait()
    return steps


if SCHEDULES:

    @tm.schedule(every=timedelta(days=1), name="nightly_cleanup")
    async def nightly_cleanup() -> None:
        task_log("removed expired sessions")

    @tm.schedule(cron="30 6 * * 1", timezone="Europe/Paris", name="weekly_report")
    async def weekly_report() -> None:
        task_log("report sent")

    @tm.schedule(every=1, name="heartbeat")
    async def heartbeat() -> None:
        task_log("beat")

    # Paused in memory before the manager starts (no snapshot_db): no task every second
    # unless a test resumes it.
    asyncio.run(tm.pause_schedule("heartbeat"))


if QUEUES:

    @tm.task(name="send_newsletter", queue="email")
    async def newsletter(gate: str) -> str:
        await _gate(gate).wait()
        return gate

    @app.post("/demo/queued/{gate}")
    async def enqueue_queued(
        gate: str, tasks: ManagedBackgroundTasks = Depends(tm.get_tasks)
    ) -> dict[str, str]:
        _gate(gate)
        return {"task_id": tasks.add_task(newsletter, gate, tags={"gate": gate})}


@app.get("/demo/ready")
async def ready() -> dict[str, bool]:
    return {"ready": True}


@app.post("/demo/quick")
async def enqueue_quick(
    n: int = 1, tasks: ManagedBackgroundTasks = Depends(tm.get_tasks)
) -> dict[str, list[str]]:
    return {"task_ids": [tasks.add_task(quick, i) for i in range(n)]}


@app.post("/demo/slow")
async def enqueue_slow(
    seconds: float = 60.0, tasks: ManagedBackgroundTasks = Depends(tm.get_tasks)
) -> dict[str, str]:
    return {"task_id": tasks.add_task(slow, seconds)}


@app.post("/demo/failing")
async def enqueue_failing(
    reason: str = "card declined", tasks: ManagedBackgroundTasks = Depends(tm.get_tasks)
) -> dict[str, str]:
    return {"task_id": tasks.add_task(failing, reason)}


@app.post("/demo/retrying")
async def enqueue_retrying(
    reason: str = "warehouse unreachable", tasks: ManagedBackgroundTasks = Depends(tm.get_tasks)
) -> dict[str, str]:
    return {"task_id": tasks.add_task(retrying, reason)}


@app.post("/demo/burst")
async def burst(
    n: int = 100, spread: float = 0.01, tasks: ManagedBackgroundTasks = Depends(tm.get_tasks)
) -> dict[str, list[str]]:
    """N tasks started together, each done within 6 * spread seconds."""
    tasks.concurrent = True
    return {"task_ids": [tasks.add_task(quick, i, (i % 7) * spread) for i in range(n)]}


@app.post("/demo/gated/{gate}")
async def enqueue_gated(
    gate: str, tasks: ManagedBackgroundTasks = Depends(tm.get_tasks)
) -> dict[str, str]:
    _gate(gate)
    return {"task_id": tasks.add_task(gated, gate, tags={"gate": gate})}


@app.post("/demo/open/{gate}")
async def open_gate(gate: str) -> dict[str, bool]:
    _gate(gate).set()
    return {"opened": True}


@app.post("/demo/stepped/{gate}")
async def enqueue_stepped(
    gate: str, steps: int = 4, tasks: ManagedBackgroundTasks = Depends(tm.get_tasks)
) -> dict[str, str]:
    return {"task_id": tasks.add_task(stepped, gate, steps, tags={"gate": gate})}


@app.post("/demo/later")
async def enqueue_later(
    seconds: float = 3600.0, tasks: ManagedBackgroundTasks = Depends(tm.get_tasks)
) -> dict[str, str]:
    return {"task_id": tasks.with_options(countdown=seconds).add_task(quick, 0)}


@app.post("/demo/populate")
async def populate(tasks: ManagedBackgroundTasks = Depends(tm.get_tasks)) -> dict[str, int]:
    """A realistic mix for the screenshot: mostly successes, some failures, a few in flight."""
    tasks.concurrent = True  # independent tasks: all in flight at once, not in turn
    ids = []
    for i in range(24):
        seconds = (i * 7 % 9) * 0.04  # a spread of durations for the table and percentiles
        ids.append(tasks.add_task(quick, i, seconds, tags={"user": f"u{100 + i}"}))
    for reason in ("card declined", "gateway timeout after 30s", "insufficient funds"):
        ids.append(tasks.add_task(failing, reason))
    for i in range(3):
        ids.append(tasks.add_task(slow, 300.0 + i))
    ids.append(tasks.add_task(gated, "populate-held", tags={"gate": "populate-held"}))
    return {"enqueued": len(ids)}
