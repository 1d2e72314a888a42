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

``TASKFLOW_DEMO_MAX_HISTORY`` sets the manager's ``max_history`` (finished tasks kept).
``TASKFLOW_DEMO_ALLOWED_ORIGINS`` (comma-separated), when set, is TaskAdmin's
``allowed_origins``; unset, the argument is not passed at all.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from fastapi import Depends, FastAPI

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "taskflow_vendor"))

from taskflow import ManagedBackgroundTasks, TaskAdmin, TaskManager, task_log  # noqa: E402

# The tests use markup in the title to prove it is escaped; the README screenshot does not.
TITLE = os.environ.get("TASKFLOW_DEMO_TITLE", "Demo <b>App</b>")
USERNAME, PASSWORD = "admin", "secret"
SECRET_KEY = "browser-tests-secret-key-0123456789"

tm = TaskManager(
    shutdown_timeout=1.0, max_history=int(os.environ.get("TASKFLOW_DEMO_MAX_HISTORY", "10000"))
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
