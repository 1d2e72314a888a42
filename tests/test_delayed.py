"""Delayed one-off runs: with_options(run_at=... | countdown=...). A delayed task is
``scheduled`` until its time, then runs as any other; it can be cancelled (here or, with a
database, from another process), and with snapshot_db it survives a restart and runs once.
Crashes and other hosts are in test_crash.py."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone

import pytest
from apps.engine_support import lifespan, reaches, serve, started, until
from fastapi import Depends, FastAPI
from taskflow import ManagedBackgroundTasks, TaskAdmin, TaskManager, TaskStatus


async def test_a_countdown_keeps_the_task_scheduled_until_its_time(storage_target):
    tm = TaskManager(snapshot_db=storage_target, snapshot_interval=0.05)
    ran_at: list[float] = []

    @tm.task()
    async def remind(user: str):
        ran_at.append(time.time())

    async with started(tm):
        task_id = tm.with_options(countdown=0.6).add_task(remind, "ann")
        record = tm.get(task_id)
        assert record.status is TaskStatus.SCHEDULED
        due = record.to_dict()["run_at"]
        assert due is not None and record.run_at == pytest.approx(time.time() + 0.6, abs=0.2)
        page, total = await tm.query(status="scheduled")
        assert total == 1 and page[0].task_id == task_id and page[0].to_dict()["run_at"] == due
        assert tm.metrics()["scheduled"] == 1
        await asyncio.sleep(0.3)
        assert not ran_at and tm.get(task_id).status is TaskStatus.SCHEDULED
        done = await reaches(tm, task_id, "success")
        assert ran_at and ran_at[0] >= done.run_at
        assert done.to_dict()["run_at"] == due, "the finished record still says when it was due"
        assert tm.metrics()["scheduled"] == 0 and tm.metrics()["success"] == 1


async def test_run_at_takes_aware_and_naive_datetimes_and_a_past_time_runs_now():
    tm = TaskManager()

    async def job():
        return None

    async with started(tm):
        soon = datetime.now(timezone.utc) + timedelta(seconds=0.3)
        aware = tm.with_options(run_at=soon).add_task(job)
        naive = tm.with_options(run_at=soon.replace(tzinfo=None)).add_task(job)  # read as UTC
        for task_id in (aware, naive):
            assert tm.get(task_id).status is TaskStatus.SCHEDULED
            assert tm.get(task_id).run_at == pytest.approx(soon.timestamp())
        past = tm.with_options(run_at=soon - timedelta(hours=1)).add_task(job)
        assert tm.get(past).status is not TaskStatus.SCHEDULED
        for task_id in (aware, naive, past):
            await reaches(tm, task_id, "success")


async def test_a_scheduled_task_can_be_cancelled_and_never_runs():
    tm = TaskManager()
    ran = []

    async def job():
        ran.append(1)

    app = FastAPI()
    TaskAdmin(app, tm)
    async with lifespan(app), serve(app) as http:
        first = tm.with_options(countdown=0.3).add_task(job)
        second = tm.with_options(countdown=0.3).add_task(job)
        assert tm.cancel(first).status is TaskStatus.CANCELLED
        response = await http.post(f"/tasks/{second}/cancel")
        assert response.status_code == 200 and response.json()["task"]["status"] == "cancelled"
        await asyncio.sleep(0.5)
    assert ran == []


async def test_another_process_cancels_a_delayed_run_through_the_database(snapshot_target):
    """Two managers on one database (two hosts behind a balancer): the dashboard of the
    one that does not hold the task cancels it; the holder sees that when it is due."""
    holder = TaskManager(snapshot_db=snapshot_target, snapshot_interval=0.05)
    other = TaskManager(snapshot_db=snapshot_target, snapshot_interval=0.05)
    ran = []

    for tm in (holder, other):

        @tm.task(name="charge")
        async def charge(n):
            ran.append(n)

    app = FastAPI()
    TaskAdmin(app, other)
    async with started(holder), lifespan(app), serve(app) as http:
        task_id = holder.with_options(countdown=0.8).add_task(charge, 1)
        await holder.flush()
        response = await http.post(f"/tasks/{task_id}/cancel")
        assert response.status_code == 200, response.text
        assert response.json()["task"]["status"] == "cancelled"
        record = await reaches(holder, task_id, "cancelled", timeout=5)
        assert record.error == "cancelled"
        await holder.flush()
        assert (await other.fetch(task_id)).status is TaskStatus.CANCELLED
        assert (await http.post(f"/tasks/{task_id}/cancel")).status_code == 409
    assert ran == []


async def test_a_delayed_run_survives_a_restart_and_runs_once(snapshot_target):
    ran: list[tuple[int, float]] = []

    def manager() -> TaskManager:
        tm = TaskManager(snapshot_db=snapshot_target, snapshot_interval=0.05)

        @tm.task(name="invoice")
        async def invoice(n):
            ran.append((n, time.time()))

        return tm, invoice

    first, invoice = manager()
    async with started(first):
        task_id = first.with_options(countdown=1.0).add_task(invoice, 7)
        due = first.get(task_id).run_at
        other = first.with_options(countdown=30).add_task(invoice, 8)
    # Without requeue_pending: a delayed run is kept whenever there is a database.
    second, _ = manager()
    async with started(second):
        assert second.get(task_id).status is TaskStatus.SCHEDULED
        record = await reaches(second, task_id, "success", timeout=10)
        assert record.retries_used == 0
        assert second.get(other).status is TaskStatus.SCHEDULED
        second.cancel(other)
    assert [n for n, _ in ran] == [7], "ran once, after the restart"
    assert ran[0][1] >= due


async def test_without_a_database_a_delayed_run_ends_interrupted_at_shutdown():
    tm = TaskManager()

    async def job():
        return None

    async with started(tm):
        task_id = tm.with_options(countdown=60).add_task(job)
    record = tm.get(task_id)
    assert record.status is TaskStatus.INTERRUPTED
    assert "not started before shutdown" in record.error


async def test_a_request_delayed_task_does_not_hold_up_the_tasks_after_it():
    tm = TaskManager()
    order: list[str] = []

    async def step(label: str):
        order.append(label)

    app = FastAPI()
    TaskAdmin(app, tm)

    @app.post("/order")
    async def place(tasks: ManagedBackgroundTasks = Depends(tm.get_tasks)):
        ids = [
            tasks.add_task(step, "a"),
            tasks.with_options(countdown=0.4).add_task(step, "later"),
            tasks.add_task(step, "b"),
        ]
        return {"ids": ids}

    async with lifespan(app), serve(app) as http:
        ids = (await http.post("/order")).json()["ids"]
        await reaches(tm, ids[2], "success")
        assert order == ["a", "b"] and tm.get(ids[1]).status is TaskStatus.SCHEDULED
        await reaches(tm, ids[1], "success")
        assert order == ["a", "b", "later"]


async def test_run_at_and_countdown_are_options_never_taken_from_the_functions_arguments():
    tm = TaskManager()
    got = {}

    async def notify(run_at=None, countdown=None):
        got.update(run_at=run_at, countdown=countdown)

    async with started(tm):
        task_id = tm.add_task(notify, run_at="tomorrow", countdown=3)
        await reaches(tm, task_id, "success")
    assert got == {"run_at": "tomorrow", "countdown": 3}


def test_bad_delays_fail_where_they_are_given():
    tm = TaskManager()
    with pytest.raises(ValueError, match="run_at or countdown, not both"):
        tm.with_options(run_at=datetime.now(timezone.utc), countdown=5)
    with pytest.raises(ValueError, match="countdown"):
        tm.with_options(countdown=-1)
    with pytest.raises(TypeError, match="run_at must be a datetime"):
        tm.with_options(run_at="tomorrow")


async def test_a_scheduled_tasks_list_row_carries_its_run_at():
    """The dashboard's 'runs ...' column and its Scheduled card come from these."""
    tm = TaskManager()

    async def job():
        return None

    app = FastAPI()
    TaskAdmin(app, tm)
    async with lifespan(app), serve(app) as http:
        task_id = tm.with_options(countdown=5).add_task(job)
        row = (await http.get("/tasks", params={"status": "scheduled"})).json()[0]
        assert row["task_id"] == task_id and row["status"] == "scheduled"
        assert row["run_at"] is not None
        assert (await http.get("/tasks/metrics")).json()["scheduled"] == 1
        tm.cancel(task_id)
        await until(lambda: tm.metrics()["scheduled"] == 0, what="the count to drop")
