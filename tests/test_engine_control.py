"""Control from Python: cancel, retry, get and fetch."""

from __future__ import annotations

import asyncio
import functools
import threading
from pathlib import Path

import pytest
from apps.engine_support import reaches, started, status_of, until
from taskflow import TaskManager, TaskNotFound, TaskStateError, TaskStatus

# -- cancel ----------------------------------------------------------------------


async def test_cancel_pending_task_never_runs():
    tm = TaskManager(max_concurrent_tasks=1)
    gate = asyncio.Event()
    ran: list[str] = []

    @tm.task()
    async def job(label):
        ran.append(label)
        await gate.wait()

    async with started(tm):
        first = tm.add_task(job, "first")
        second = tm.add_task(job, "second")
        await reaches(tm, first, "running")
        assert status_of(tm, second) == "pending"
        record = tm.cancel(second)
        assert record.task_id == second and record.status is TaskStatus.CANCELLED
        assert record.end_time is not None and record.start_time is None
        gate.set()
        await reaches(tm, first)
        third = tm.add_task(job, "third")  # the slot is free again: later tasks still run
        await reaches(tm, third)
        await asyncio.sleep(0.05)
        assert status_of(tm, second) == "cancelled"
    assert ran == ["first", "third"]


async def test_cancel_before_startup_means_it_never_runs():
    tm = TaskManager()
    ran = []

    async def job():
        ran.append(1)

    task_id = tm.add_task(job)
    tm.cancel(task_id)
    async with started(tm):
        probe = tm.add_task(job)
        await reaches(tm, probe)
        assert status_of(tm, task_id) == "cancelled"
    assert ran == [1]  # only the probe


async def test_cancel_running_async_task_cancels_its_coroutine():
    tm = TaskManager()
    events: list[str] = []

    @tm.task(retries=3)
    async def long():
        events.append("start")
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            events.append("cancelled")
            raise

    async with started(tm):
        task_id = tm.add_task(long)
        await until(lambda: events == ["start"], what="the task to start")
        record = tm.cancel(task_id)
        assert record.status is TaskStatus.CANCELLED
        await until(lambda: "cancelled" in events, what="CancelledError inside the task")
        await asyncio.sleep(0.05)
        assert record.status is TaskStatus.CANCELLED
        assert record.end_time is not None
    assert events == ["start", "cancelled"]  # not retried after the cancel


async def test_cancel_during_the_wait_between_retries_stops_further_attempts():
    tm = TaskManager()
    calls = []

    @tm.task(retries=5, delay=30)
    async def flaky():
        calls.append(1)
        raise ValueError("x")

    async with started(tm):
        task_id = tm.add_task(flaky)
        await until(lambda: calls, what="the first attempt")
        await asyncio.sleep(0.05)
        tm.cancel(task_id)
        await asyncio.sleep(0.05)
        assert status_of(tm, task_id) == "cancelled"
    assert calls == [1]


async def test_cancel_running_sync_task_marks_it_cancelled_and_ignores_its_result():
    tm = TaskManager()
    entered = threading.Event()
    release = threading.Event()
    finished = threading.Event()

    @tm.task()
    def blocking():
        entered.set()
        release.wait(10)
        finished.set()  # documented caveat: the thread itself runs to its end
        return "result"

    try:
        async with started(tm):
            task_id = tm.add_task(blocking)
            await until(entered.is_set, what="the sync task to start")
            assert tm.cancel(task_id).cancel_requested  # running until its thread returns
            release.set()
            await until(finished.is_set, what="the thread to finish")
            await asyncio.sleep(0.05)
            record = tm.get(task_id)
            assert record.status is TaskStatus.CANCELLED
            assert record.error and "cancel" in record.error
    finally:
        release.set()


async def test_cancel_of_finished_or_unknown_tasks_raises():
    tm = TaskManager()

    async def job():
        return 1

    async with started(tm):
        done = tm.add_task(job)
        await reaches(tm, done)
        with pytest.raises(TaskStateError, match=done):
            tm.cancel(done)
        with pytest.raises(TaskNotFound) as info:
            tm.cancel("no-such-task")
        assert isinstance(info.value, KeyError) and "no-such-task" in str(info.value)
        with pytest.raises(ValueError):  # TaskStateError is a ValueError
            tm.cancel(done)
        assert status_of(tm, done) == "success"


# -- retry -----------------------------------------------------------------------


async def test_retry_creates_a_new_linked_record_with_the_same_arguments():
    tm = TaskManager()
    calls: list[tuple] = []
    fail = [True]

    @tm.task(name="charge-card")
    async def charge(amount, *, currency):
        calls.append((amount, currency))
        if fail[0]:
            raise RuntimeError("card declined")

    async with started(tm):
        original = tm.add_task(charge, 10, currency="EUR", tags={"order": "7"})
        assert (await reaches(tm, original)).status is TaskStatus.FAILED
        fail[0] = False
        new_id = await tm.retry(original)
        assert new_id != original
        new = await reaches(tm, new_id)
        assert new.status is TaskStatus.SUCCESS
        assert new.retry_of == original and new.to_dict()["retry_of"] == original
        assert new.func_name == "charge-card" and new.tags == {"order": "7"}
        assert tm.get(original).status is TaskStatus.FAILED
        assert tm.get(original).retry_of is None
    assert calls == [(10, "EUR"), (10, "EUR")]


async def test_retry_of_cancelled_and_interrupted_tasks(tmp_path: Path):
    db = tmp_path / "tasks.db"
    tm = TaskManager(snapshot_db=db, max_concurrent_tasks=1, shutdown_timeout=0.05)
    gate = asyncio.Event()
    runs = []

    @tm.task()
    async def job(n):
        runs.append(n)
        await gate.wait()

    async with started(tm):
        running = tm.add_task(job, 1)
        waiting = tm.add_task(job, 2)
        await reaches(tm, running, "running")
        tm.cancel(waiting)
    # shutdown interrupted the running one
    tm2 = TaskManager(snapshot_db=db)
    tm2.task()(job)
    gate.set()
    async with started(tm2):
        assert (await tm2.fetch(running)).status is TaskStatus.INTERRUPTED
        for original in (running, waiting):
            new_id = await tm2.retry(original)
            record = await reaches(tm2, new_id)
            assert record.status is TaskStatus.SUCCESS and record.retry_of == original
    assert runs == [1, 1, 2]


async def test_retry_refuses_unknown_successful_and_live_tasks():
    tm = TaskManager()
    gate = asyncio.Event()

    @tm.task()
    async def job():
        await gate.wait()

    async with started(tm):
        with pytest.raises(TaskNotFound):
            await tm.retry("00000000-0000-4000-8000-000000000000")
        live = tm.add_task(job)
        await reaches(tm, live, "running")
        with pytest.raises(TaskStateError):
            await tm.retry(live)
        gate.set()
        await reaches(tm, live)
        with pytest.raises(TaskStateError):
            await tm.retry(live)


async def test_retry_runs_exactly_what_ran_while_it_is_in_memory():
    tm = TaskManager()
    calls = []

    def purge(dry_run=False):
        calls.append(("purge", dry_run))
        raise ValueError("x")

    tm.task(name="purge")(purge)

    class Reports:
        def cleanup(self):
            calls.append(("Reports.cleanup",))
            raise ValueError("y")

    async def cleanup():  # a registered function of the same name as the bound method
        calls.append(("registered cleanup",))

    tm.task(name="cleanup")(cleanup)
    async with started(tm):
        partial = await reaches(tm, tm.add_task(functools.partial(purge, dry_run=True)))
        method = await reaches(tm, tm.add_task(Reports().cleanup))
        calls.clear()
        for original in (partial, method):
            await reaches(tm, await tm.retry(original.task_id))
    assert calls == [("purge", True), ("Reports.cleanup",)]


async def test_after_a_restart_only_a_registered_function_is_retried_else_409(tmp_path: Path):
    db = tmp_path / "tasks.db"

    def purge(dry_run=False):
        raise ValueError("x")

    first = TaskManager(snapshot_db=db)
    first.task(name="purge")(purge)
    async with started(first):
        by_name = (await reaches(first, first.add_task(purge))).task_id
        partial = (await reaches(first, first.add_task(functools.partial(purge, True)))).task_id
    second = TaskManager(snapshot_db=db)
    second.task(name="purge")(purge)
    async with started(second):
        assert (await reaches(second, await second.retry(by_name))).retry_of == by_name
        with pytest.raises(TaskStateError, match="cannot rebuild"):
            await second.retry(partial)


# -- get / fetch -------------------------------------------------------------------


async def test_get_and_fetch(tmp_path: Path):
    tm = TaskManager(snapshot_db=tmp_path / "tasks.db", max_history=2)

    async def job(n):
        return n

    async with started(tm):
        assert tm.get("missing") is None
        assert await tm.fetch("missing") is None
        ids = [tm.add_task(job, n) for n in range(6)]
        for task_id in ids:
            await reaches(tm, task_id)
        await until(lambda: tm.get(ids[0]) is None, what="the oldest record to leave memory")
        assert tm.get(ids[-1]) is not None
        fetched = await tm.fetch(ids[0])
        assert fetched is not None and fetched.task_id == ids[0]
        assert fetched.status is TaskStatus.SUCCESS and fetched.func_name == "job"
        assert fetched.end_time is not None and fetched.end_time.tzinfo is not None


@pytest.mark.parametrize("outcome", ["returns", "raises"])
async def test_cancelling_a_running_sync_task_tells_the_truth_until_its_thread_returns(outcome):
    tm = TaskManager()
    gate = threading.Event()
    started_event = threading.Event()

    def blocking():
        started_event.set()
        gate.wait(10)
        if outcome == "raises":
            raise RuntimeError("after the cancel")
        return "a result nobody gets"

    async with started(tm):
        task_id = tm.add_task(blocking)
        await until(started_event.is_set, what="the thread to start")
        await reaches(tm, task_id, "running")
        record = tm.cancel(task_id)
        # Python cannot stop the thread: it is still running, with the cancel requested.
        assert record.status.value == "running" and record.cancel_requested
        assert tm.get(task_id).to_dict()["cancel_requested"] is True
        gate.set()
        final = await reaches(tm, task_id, "cancelled")
        assert "discarded" in final.error
        assert not final.cancel_requested
