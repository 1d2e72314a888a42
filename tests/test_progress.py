"""task_progress(): the running task's record carries it at once, in sync and async tasks;
a list page read from the database shows it for tasks running here; bad values fail."""

from __future__ import annotations

import asyncio
import threading

import pytest
from apps.engine_support import lifespan, reaches, serve, started
from fastapi import FastAPI
from taskflow import TaskAdmin, TaskManager, task_progress


async def test_async_and_sync_tasks_report_progress_on_their_records():
    tm = TaskManager()
    step = asyncio.Event()
    thread_gate = threading.Event()

    @tm.task()
    async def upload():
        task_progress(0.25, "part 1 of 4")
        await step.wait()

    @tm.task()
    def convert():
        task_progress(0.5)
        thread_gate.wait(10)

    async with started(tm):
        a, b = tm.add_task(upload), tm.add_task(convert)
        await reaches(tm, a, "running")
        assert tm.get(a).to_dict()["progress"] == 0.25
        assert tm.get(a).to_dict()["progress_message"] == "part 1 of 4"
        await reaches(tm, b, "running")
        for _ in range(200):
            if tm.get(b).progress is not None:
                break
            await asyncio.sleep(0.01)
        assert tm.get(b).to_dict()["progress"] == 0.5
        assert tm.get(b).to_dict()["progress_message"] is None
        step.set()
        thread_gate.set()
        for task_id in (a, b):
            assert "progress" not in (await reaches(tm, task_id, "success")).to_dict()


async def test_a_page_from_the_database_shows_the_progress_of_tasks_running_here(tmp_path):
    tm = TaskManager(snapshot_db=str(tmp_path / "tasks.db"), snapshot_interval=0.05)
    gate = asyncio.Event()

    @tm.task()
    async def export():
        task_progress(0.4, "40 of 100 rows")
        await gate.wait()

    app = FastAPI()
    TaskAdmin(app, tm)
    async with lifespan(app), serve(app) as http:
        task_id = tm.add_task(export)
        await reaches(tm, task_id, "running")
        row = (await http.get("/tasks")).json()[0]
        assert row["task_id"] == task_id
        assert (row["progress"], row["progress_message"]) == (0.4, "40 of 100 rows")
        gate.set()
        await reaches(tm, task_id, "success")
        assert "progress" not in (await http.get("/tasks")).json()[0]


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "half", True, None])
def test_a_fraction_outside_0_to_1_is_refused(bad):
    with pytest.raises(ValueError, match="fraction from 0.0 to 1.0"):
        task_progress(bad)


def test_outside_a_task_it_does_nothing():
    task_progress(0.5, "not in a task")  # no error, nothing to update
