"""Finished records stay compact and out of the garbage collector's way.

A service keeps up to ``max_history`` finished records. If each were an object
the collector tracks, every full collection would walk all of them (pauses that
grow with the history); if a request left reference cycles behind, collections
would run several times more often. These tests pin both properties down, and
check that the compact form loses nothing.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import uuid

import pytest
from apps.db_support import db_rows
from apps.engine_support import reaches, serve, started, until
from fastapi import BackgroundTasks, Depends, FastAPI
from taskflow import ManagedBackgroundTasks, TaskManager, TaskStatus, task_log


def _tracked() -> int:
    # A tuple is untracked when a collection finds its items untracked. Items that
    # are tuples themselves (the arguments) go in the same pass, the record in the
    # next: in a service, two young-generation collections, before the oldest one.
    gc.collect()
    gc.collect()
    return len(gc.get_objects())


async def test_finished_records_add_no_objects_for_the_collector_to_track():
    tm = TaskManager(max_history=5000)

    async def job(n: int, label: str = "x") -> None:
        return None

    async with started(tm):
        for _ in range(3):  # warm up every code path and cache
            await reaches(tm, tm.add_task(job, 1))
        before = _tracked()
        ids = [tm.add_task(job, i, label="y") for i in range(3000)]
        await until(lambda: all(tm.get(i).status.is_final for i in ids), what="3,000 tasks")
        added = _tracked() - before
        # 3,000 records kept: as objects they would add at least 3,000 tracked ones.
        assert added < 100, f"{added} more objects tracked by the garbage collector"
        assert all(tm.get(i).status is TaskStatus.SUCCESS for i in ids)


@pytest.mark.parametrize("pattern", ["depends", "install"])
async def test_a_request_and_its_task_leave_no_reference_cycles(pattern):
    tm = TaskManager()
    app = FastAPI()
    done = []

    @tm.task()
    async def job(n: int) -> None:
        done.append(n)

    if pattern == "install":
        tm.install(app)

        @app.post("/go")
        async def go(tasks: BackgroundTasks) -> dict[str, str]:
            return {"id": tasks.add_task(job, 1)}
    else:

        @app.post("/go")
        async def go(tasks: ManagedBackgroundTasks = Depends(tm.get_tasks)) -> dict[str, str]:
            return {"id": tasks.add_task(job, 1)}

    tm.init_app(app)
    async with serve(app) as http:
        for _ in range(3):
            assert (await http.post("/go")).status_code == 200
        await until(lambda: len(done) == 3, what="warm-up tasks")
        gc.collect()
        gc.disable()
        try:
            ids = [(await http.post("/go")).json()["id"] for _ in range(20)]
            await until(lambda: len(done) == 23, what="20 tasks")
            await asyncio.sleep(0.05)
            gc.set_debug(gc.DEBUG_SAVEALL)
            gc.collect()
            ours = [
                type(o).__name__
                for o in gc.garbage
                if type(o).__module__ == "taskflow" or isinstance(o, asyncio.Task)
            ]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
        assert ours == [], f"reference cycles left by requests: {sorted(set(ours))}"
        assert all(tm.get(i).status is TaskStatus.SUCCESS for i in ids)


async def test_a_finished_record_keeps_every_field(snapshot_target: str):
    db = snapshot_target
    tm = TaskManager(snapshot_db=str(db), snapshot_interval=0.05)
    calls = []

    @tm.task(retries=2, delay=0.01, persist=True)
    async def flaky(a: int, *, b: list[int]) -> None:
        calls.append((a, b))
        task_log("attempt", n=len(calls))
        if len(calls) < 3:
            raise RuntimeError(f"boom {len(calls)}")

    @tm.task()
    async def broken() -> None:
        raise ValueError("never works")

    async with started(tm):
        task_id = tm.add_task(flaky, 7, b=[1, 2], idempotency_key="k-1", tags={"team": "a"})
        live = tm.get(task_id)
        record = await reaches(tm, task_id)
        failed = await reaches(tm, tm.add_task(broken))
        again = await tm.retry(failed.task_id)
        await reaches(tm, again)
        await tm.flush()

        assert record.status is TaskStatus.SUCCESS
        assert (record.args, record.kwargs) == ((7,), {"b": [1, 2]})
        assert record.tags == {"team": "a"} and record.idempotency_key == "k-1"
        assert record.retries_used == 2 and record.persist
        assert [line.split(" ", 2)[2] for line in record.logs if "attempt n=" in line] == [
            "attempt n=1",
            "attempt n=2",
            "attempt n=3",
        ]
        attempts = record.to_dict()["attempts"]
        assert [a["attempt"] for a in attempts] == [0, 1, 2]
        assert [a["error"] for a in attempts] == [
            "RuntimeError: boom 1",
            "RuntimeError: boom 2",
            None,
        ]
        assert all(a["end_time"] for a in attempts)
        # The object the caller held while it ran ended in the same state.
        assert live.to_dict(include_args=True) == record.to_dict(include_args=True)

        failed = tm.get(failed.task_id)
        assert failed.error == "ValueError: never works"
        assert "never works" in failed.stacktrace
        assert tm.get(again).retry_of == failed.task_id
        # A key held by a finished task still returns that task.
        assert tm.add_task(flaky, 7, b=[1, 2], idempotency_key="k-1") == task_id

        (row,) = db_rows(
            db,
            "SELECT status, tags, args, kwargs, attempts, idempotency_key, persist "
            "FROM tasks WHERE task_id = ?",
            (task_id,),
        )
        assert row[0] == "success" and row[1] == '{"team":"a"}'
        assert (row[2], row[3], row[5], row[6]) == ("[7]", '{"b":[1,2]}', "k-1", 1)
        assert row[4].count('"RuntimeError: boom') == 2


async def test_get_hands_out_a_copy_of_a_finished_record():
    tm = TaskManager()

    async def job() -> None:
        return None

    async with started(tm):
        task_id = tm.add_task(job)
        record = await reaches(tm, task_id)
        record.error = "changed by the caller"
        record.status = TaskStatus.FAILED
        assert tm.get(task_id).status is TaskStatus.SUCCESS
        assert tm.get(task_id).error is None
        assert tm.get(task_id) is not tm.get(task_id)


async def test_a_cancelled_sync_task_that_keeps_logging_is_recorded():
    tm = TaskManager()
    entered, release = threading.Event(), threading.Event()

    def slow() -> None:
        entered.set()
        release.wait(5)
        task_log("still here after cancel")

    async with started(tm):
        task_id = tm.add_task(slow)
        await until(entered.is_set, what="the thread to start")
        tm.cancel(task_id)
        release.set()
        await until(
            lambda: any("still here" in line for line in tm.get(task_id).logs or ()),
            what="the late log line",
        )
        record = tm.get(task_id)
        assert record.status is TaskStatus.CANCELLED  # the thread's end changes nothing else


async def test_cancelling_a_retrying_task_closes_its_open_attempt():
    tm = TaskManager()
    calls = []

    @tm.task(retries=3, delay=0.01)
    async def job() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("first")
        await asyncio.sleep(30)

    async with started(tm):
        task_id = tm.add_task(job)
        await until(lambda: len(calls) == 2, what="the second attempt")
        tm.cancel(task_id)
        record = await reaches(tm, task_id)
        attempts = record.to_dict()["attempts"]
        assert record.status is TaskStatus.CANCELLED
        assert [(a["attempt"], a["error"]) for a in attempts] == [
            (0, "RuntimeError: first"),
            (1, "cancelled"),
        ]
        assert attempts[1]["end_time"] is not None


async def test_task_ids_are_distinct_canonical_version_4_uuids():
    tm = TaskManager()

    async def job() -> None:
        return None

    async with started(tm):
        ids = [tm.add_task(job) for _ in range(5000)]
        assert len(set(ids)) == len(ids)
        for task_id in ids:
            parsed = uuid.UUID(task_id)
            assert str(parsed) == task_id
            assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
        # The random digits stay random: the variant digit takes all its four values.
        assert {task_id[19] for task_id in ids} == set("89ab")
