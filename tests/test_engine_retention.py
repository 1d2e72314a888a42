"""Retention: retention_days at startup, prune(), live tasks untouched, in memory, on SQLite
and on PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest
from apps.db_support import db_execute, db_rows, db_scalar
from apps.engine_support import reaches, started, until
from fastapi import FastAPI
from taskflow import TaskAdmin, TaskManager, TaskStatus

DAY = 86400.0


def _age_rows(db: str, task_ids: list[str], days: float) -> None:
    """Move these rows' times back by ``days`` (as if they ran that long ago)."""
    shift = days * DAY
    for task_id in task_ids:
        changed = db_execute(
            db,
            "UPDATE tasks SET created_at = created_at - ?, start_time = start_time - ?, "
            "end_time = end_time - ? WHERE task_id = ?",
            (shift, shift, shift, task_id),
        )
        assert changed == 1, task_id


async def _one_of_each_final_status(tm: TaskManager) -> dict[str, str]:
    gate = asyncio.Event()

    async def ok():
        return None

    async def bad():
        raise ValueError("x")

    async def stuck():
        await gate.wait()

    ids = {"success": tm.add_task(ok), "failed": tm.add_task(bad)}
    for task_id in ids.values():
        await reaches(tm, task_id)
    ids["cancelled"] = tm.add_task(stuck)
    await reaches(tm, ids["cancelled"], "running")
    tm.cancel(ids["cancelled"])
    ids["interrupted"] = tm.add_task(stuck)  # still running at shutdown
    await reaches(tm, ids["interrupted"], "running")
    return ids


async def test_retention_days_prunes_old_finished_rows_at_startup(snapshot_target: str):
    db = snapshot_target
    tm = TaskManager(snapshot_db=db, shutdown_timeout=0.02)
    async with started(tm):
        old = await _one_of_each_final_status(tm)
        recent = await _one_of_each_final_status(tm)
    statuses = dict(db_rows(db, "SELECT task_id, status FROM tasks"))
    assert {statuses[i] for i in old.values()} == {
        "success",
        "failed",
        "cancelled",
        "interrupted",
    }
    _age_rows(db, list(old.values()), days=10)

    tm2 = TaskManager(snapshot_db=db, retention_days=7)
    async with started(tm2):
        left = {r[0] for r in db_rows(db, "SELECT task_id FROM tasks")}
        assert left == set(recent.values())
        for task_id in old.values():
            assert await tm2.fetch(task_id) is None
        metrics = tm2.metrics()
        assert metrics["total"] == 4
        assert (await tm2.query())[1] == 4


async def test_retention_leaves_live_tasks_of_another_process_alone(snapshot_target: str):
    db = snapshot_target
    gate = asyncio.Event()

    async def stuck():
        await gate.wait()

    owner = TaskManager(snapshot_db=db, max_concurrent_tasks=1, shutdown_timeout=0.02)
    async with started(owner):
        running = owner.add_task(stuck)
        await reaches(owner, running, "running")
        pending = owner.add_task(stuck)
        await owner.flush()
        _age_rows(db, [running, pending], days=30)

        other = TaskManager(snapshot_db=db, retention_days=1)
        async with started(other):
            assert await other.prune(older_than=timedelta(0)) == 0
        live = dict(db_rows(db, "SELECT task_id, status FROM tasks"))
        assert live == {running: "running", pending: "pending"}
        assert owner.get(running).status is TaskStatus.RUNNING


async def test_prune_returns_how_many_went_and_never_touches_live_tasks(storage_target):
    db = storage_target
    tm = TaskManager(snapshot_db=db, max_concurrent_tasks=1)
    gate = asyncio.Event()

    async def ok():
        return None

    async def stuck():
        await gate.wait()

    async with started(tm):
        done = [tm.add_task(ok) for _ in range(5)]
        for task_id in done:
            await reaches(tm, task_id)
        running = tm.add_task(stuck)
        await reaches(tm, running, "running")
        pending = tm.add_task(stuck)
        assert await tm.prune(older_than=timedelta(days=1)) == 0
        assert all(tm.get(i) is not None for i in done)
        # Let the clock move past the end times, then prune everything that finished.
        await until(lambda: time.time() > max(tm.get(i).end_time.timestamp() for i in done))
        assert await tm.prune(older_than=timedelta(0)) == 5
        for task_id in done:
            assert tm.get(task_id) is None and await tm.fetch(task_id) is None
        assert tm.get(running).status is TaskStatus.RUNNING
        assert tm.get(pending).status is TaskStatus.PENDING
        metrics = tm.metrics()
        assert (metrics["total"], metrics["success"]) == (2, 0)
        assert (await tm.query())[1] == 2
        if db is not None:
            assert db_scalar(db, "SELECT count(*) FROM tasks WHERE status = 'success'") == 0
        assert await tm.prune(older_than=timedelta(0)) == 0
        gate.set()
        await reaches(tm, running)
        await reaches(tm, pending)


async def test_prune_validates_its_argument():
    tm = TaskManager()
    with pytest.raises(TypeError, match="older_than"):
        await tm.prune(older_than=30)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="older_than"):
        await tm.prune(older_than=timedelta(days=-1))
    assert await tm.prune(older_than=timedelta.max) == 0


async def test_retention_without_a_database_starts_and_keeps_waiting_tasks():
    tm = TaskManager(retention_days=0.0001)
    ran = []

    async def job():
        ran.append(1)

    early = tm.add_task(job)  # pending before startup
    async with started(tm):
        assert (await reaches(tm, early)).status is TaskStatus.SUCCESS
        assert await tm.prune(older_than=timedelta(days=tm.retention_days)) == 0
    assert ran == [1]


def test_task_admin_retention_days_applies_even_without_a_database():
    tm = TaskManager()
    TaskAdmin(FastAPI(), tm, retention_days=3)
    assert tm.retention_days == 3
