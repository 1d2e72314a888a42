"""A periodic task under `uvicorn --workers N` for tests/test_schedules.py.

Every occurrence of the `tick` schedule (every TASKFLOW_TEST_EVERY seconds) appends
``<occurrence slot> <pid> <time>`` to TASKFLOW_TEST_RAN as one O_APPEND write, so the test
counts how often it ran and in which worker. TASKFLOW_TEST_DB: a SQLite path or a
PostgreSQL URL shared by the workers.
"""

from __future__ import annotations

import os
import time

from fastapi import FastAPI
from run_marks import append_line
from taskflow import TaskManager

EVERY = float(os.environ.get("TASKFLOW_TEST_EVERY", "1"))
RAN = os.environ["TASKFLOW_TEST_RAN"]

task_manager = TaskManager(snapshot_db=os.environ["TASKFLOW_TEST_DB"], snapshot_interval=0.1)
app = FastAPI()
task_manager.init_app(app)


@task_manager.schedule(every=EVERY, name="tick", catch_up=False)
def tick() -> None:
    now = time.time()
    append_line(RAN, f"{round(now / EVERY)} {os.getpid()} {now:.3f}\n")


@app.get("/health")
async def health() -> dict:
    return {"pid": os.getpid()}
