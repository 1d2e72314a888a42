"""Execution: statuses, record fields, retries and backoff, timeouts, threads, contextvars,
request/response ordering, concurrency limits, task_log and get_task_context."""

from __future__ import annotations

import asyncio
import contextvars
import re
import threading
from datetime import timezone
from typing import Any

import pytest
from apps.engine_support import client, reaches, serve, started, status_of, until
from fastapi import BackgroundTasks, Depends, FastAPI, HTTPException
from taskflow import TaskManager, TaskStatus, get_task_context, task_log

# -- statuses and record fields ---------------------------------------------------


async def test_status_flow_pending_running_success_with_timestamps():
    tm = TaskManager()
    gate = asyncio.Event()

    @tm.task()
    async def job(x):
        await gate.wait()
        return x

    async with started(tm):
        task_id = tm.add_task(job, 1, tags={"customer": "42"})
        assert len(task_id) == 36
        record = tm.get(task_id)
        assert record.status in (TaskStatus.PENDING, TaskStatus.RUNNING)
        assert record.end_time is None and record.duration is None
        await reaches(tm, task_id, "running")
        assert record.start_time is not None and record.end_time is None
        gate.set()
        record = await reaches(tm, task_id)
        assert record.status is TaskStatus.SUCCESS
        for stamp in (record.created_at, record.start_time, record.end_time):
            assert stamp.tzinfo is not None and stamp.utcoffset().total_seconds() == 0
        assert record.created_at <= record.start_time <= record.end_time
        assert record.duration == pytest.approx(
            (record.end_time - record.start_time).total_seconds(), abs=1e-3
        )
        assert record.retries_used == 0 and record.error is None
        data = record.to_dict()
        assert data["status"] == "success" and data["func_name"] == "job"
        assert data["tags"] == {"customer": "42"}
        for key in ("created_at", "start_time", "end_time"):
            assert data[key].endswith("+00:00"), data[key]


def _deep(n, message):
    if n == 0:
        raise ValueError(message)
    _deep(n - 1, message)


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_failure_keeps_error_and_a_size_capped_traceback(kind):
    tm = TaskManager()

    async def failing_async():
        _deep(900, "boom")

    def failing_sync():
        _deep(900, "boom")

    func = failing_async if kind == "async" else failing_sync
    async with started(tm):
        record = await reaches(tm, tm.add_task(func))
    assert record.status is TaskStatus.FAILED
    assert record.error == "ValueError: boom"
    assert record.stacktrace.rstrip().endswith("ValueError: boom")
    assert "_deep" in record.stacktrace
    assert len(record.stacktrace) < 64 * 1024  # 900 frames uncapped is well over 100 KB


async def test_capped_traceback_of_a_huge_message_still_names_the_exception():
    tm = TaskManager()

    async def failing():
        _deep(5, "boom " + "x" * 200_000)

    async with started(tm):
        record = await reaches(tm, tm.add_task(failing))
    assert record.error.startswith("ValueError: boom") and len(record.error) < 20_000
    assert len(record.stacktrace) < 64 * 1024
    assert "Traceback" in record.stacktrace and "_deep" in record.stacktrace


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_a_failing_task_does_not_affect_other_tasks(kind):
    tm = TaskManager()

    async def bad_async():
        raise RuntimeError("bad")

    def bad_sync():
        raise RuntimeError("bad")

    async def good():
        return "ok"

    bad = bad_async if kind == "async" else bad_sync
    async with started(tm):
        ids = [tm.add_task(bad), tm.add_task(good), tm.add_task(bad), tm.add_task(good)]
        statuses = [(await reaches(tm, i)).status.value for i in ids]
    assert statuses == ["failed", "success", "failed", "success"]


# -- retries, backoff, max_delay, jitter, retry_on, timeout ---------------------------


def _retry_waits(record) -> list[float]:
    """The wait before each retry, as the task's own log states it (retry_in=...)."""
    return [float(m) for line in record.logs for m in re.findall(r"retry_in=([0-9.]+)", line)]


async def test_retries_until_success_counts_attempts():
    tm = TaskManager()
    calls = []

    @tm.task(retries=3)
    async def flaky():
        calls.append(get_task_context().attempt)
        if len(calls) < 3:
            raise ConnectionError("try again")
        return "done"

    async with started(tm):
        record = await reaches(tm, tm.add_task(flaky))
    assert record.status is TaskStatus.SUCCESS
    assert calls == [0, 1, 2]
    assert record.retries_used == 2
    attempts = record.to_dict()["attempts"]
    assert [a["attempt"] for a in attempts] == [0, 1, 2]
    assert attempts[0]["error"] == "ConnectionError: try again" and attempts[2]["error"] is None


async def test_retries_exhausted_ends_failed_after_retries_plus_one_calls():
    tm = TaskManager()
    calls = []

    @tm.task(retries=2)
    def always():
        calls.append(1)
        raise ValueError("nope")

    async with started(tm):
        record = await reaches(tm, tm.add_task(always))
    assert record.status is TaskStatus.FAILED
    assert len(calls) == 3 and record.retries_used == 2
    assert record.error == "ValueError: nope"


async def test_backoff_waits_delay_times_backoff_power_n_minus_one():
    tm = TaskManager()

    @tm.task(retries=3, delay=0.02, backoff=3.0)
    async def failing():
        raise ValueError("x")

    async with started(tm):
        record = await reaches(tm, tm.add_task(failing))
    assert record.status is TaskStatus.FAILED
    expected = [0.02, 0.06, 0.18]
    assert _retry_waits(record) == pytest.approx(expected)
    # And the waits really happened between the attempts (never shorter).
    attempts = record.attempts
    assert len(attempts) == 4
    for n, wait in enumerate(expected):
        gap = attempts[n + 1][1] - attempts[n][2]
        assert gap >= wait - 0.01, (n, gap, wait)


async def test_max_delay_caps_the_wait():
    tm = TaskManager()

    # Without the cap the third wait would be 0.05 * 100**2 = 500 s and the test would time out.
    @tm.task(retries=3, delay=0.05, backoff=100.0, max_delay=0.06)
    async def failing():
        raise ValueError("x")

    async with started(tm):
        record = await reaches(tm, tm.add_task(failing), timeout=10)
    assert _retry_waits(record) == pytest.approx([0.05, 0.06, 0.06])


async def test_jitter_randomises_each_wait_below_the_computed_delay():
    tm = TaskManager()

    @tm.task(retries=4, delay=0.1, backoff=1.0, jitter=True)
    async def failing():
        raise ValueError("x")

    async with started(tm):
        record = await reaches(tm, tm.add_task(failing))
    waits = _retry_waits(record)
    assert len(waits) == 4
    assert all(0.0 <= w <= 0.1 for w in waits)
    assert waits != [0.1] * 4  # all four at the maximum: jitter did nothing


async def test_only_retry_on_exceptions_are_retried():
    tm = TaskManager()
    calls: list[str] = []

    @tm.task(retries=3, retry_on=(ConnectionError, TimeoutError))
    def picky(kind):
        calls.append(kind)
        raise {"conn": ConnectionError, "key": KeyError}[kind]("x")

    async with started(tm):
        not_retried = await reaches(tm, tm.add_task(picky, "key"))
        retried = await reaches(tm, tm.add_task(picky, "conn"))
    assert not_retried.status is TaskStatus.FAILED and not_retried.retries_used == 0
    assert retried.status is TaskStatus.FAILED and retried.retries_used == 3
    assert calls.count("key") == 1 and calls.count("conn") == 4


async def test_timeout_fails_an_async_attempt_that_runs_too_long():
    tm = TaskManager()
    cancelled = []

    @tm.task(timeout=0.05, retries=1)
    async def slow():
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(1)
            raise

    async with started(tm):
        record = await reaches(tm, tm.add_task(slow))
    assert record.status is TaskStatus.FAILED
    assert "timed out" in record.error
    assert record.retries_used == 1 and len(cancelled) == 2


async def test_timeout_fails_a_sync_attempt_that_runs_too_long():
    tm = TaskManager()
    release = threading.Event()

    @tm.task(timeout=0.05)
    def stuck():
        release.wait(10)

    try:
        async with started(tm):
            record = await reaches(tm, tm.add_task(stuck))
            assert record.status is TaskStatus.FAILED and "timed out" in record.error
    finally:
        release.set()


async def test_timeout_does_not_touch_a_task_that_finishes_in_time():
    tm = TaskManager()

    @tm.task(timeout=5)
    async def quick():
        await asyncio.sleep(0)
        return 1

    async with started(tm):
        assert (await reaches(tm, tm.add_task(quick))).status is TaskStatus.SUCCESS


# -- where functions run -------------------------------------------------------------


async def test_sync_tasks_run_in_worker_threads_and_never_block_the_loop():
    tm = TaskManager()
    loop_thread = threading.get_ident()
    seen: dict[str, int] = {}
    release = threading.Event()

    @tm.task()
    def blocking():
        seen["thread"] = threading.get_ident()
        # If this ran on the event loop, the loop could not set `release`: the wait times out.
        if not release.wait(5):
            raise RuntimeError("the event loop was blocked while a sync task ran")

    @tm.task()
    async def on_loop():
        seen["async"] = threading.get_ident()

    async with started(tm):
        sync_id = tm.add_task(blocking)
        await until(lambda: "thread" in seen, what="the sync task to start")
        async_id = tm.add_task(on_loop)
        assert (await reaches(tm, async_id)).status is TaskStatus.SUCCESS
        release.set()
        assert (await reaches(tm, sync_id)).status is TaskStatus.SUCCESS
    assert seen["thread"] != loop_thread
    assert seen["async"] == loop_thread


async def test_sync_thread_pool_is_bounded_by_max_sync_threads():
    tm = TaskManager(max_sync_threads=2)
    lock = threading.Lock()
    active = [0]
    peak = [0]
    gate = threading.Event()

    @tm.task()
    def worker():
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        try:
            gate.wait(10)
        finally:
            with lock:
                active[0] -= 1

    try:
        async with started(tm):
            ids = [tm.add_task(worker) for _ in range(5)]
            await until(lambda: active[0] == 2, what="two sync tasks to run")
            await asyncio.sleep(0.2)  # room for a third thread, if the pool were unbounded
            assert peak[0] == 2
            gate.set()
            for task_id in ids:
                assert (await reaches(tm, task_id)).status is TaskStatus.SUCCESS
    finally:
        gate.set()
    assert peak[0] == 2


# -- inside a request ------------------------------------------------------------------

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")


async def test_request_contextvars_are_visible_in_async_and_sync_tasks():
    tm = TaskManager()
    seen: dict[str, str] = {}
    app = FastAPI()

    async def async_task(label):
        seen[label] = request_id.get()

    def sync_task(label):
        seen[label] = request_id.get()

    async def set_request_id(rid: str):
        request_id.set(rid)

    @app.post("/go", dependencies=[Depends(set_request_id)])
    async def go(tasks=Depends(tm.get_tasks)):
        return [tasks.add_task(async_task, "a"), tasks.add_task(sync_task, "s")]

    tm.init_app(app)
    async with serve(app) as http:
        response = await http.post("/go", params={"rid": "req-77"})
        assert response.status_code == 200
        for task_id in response.json():
            assert (await reaches(tm, task_id)).status is TaskStatus.SUCCESS
    assert seen == {"a": "req-77", "s": "req-77"}


async def test_a_failing_task_does_not_break_the_response():
    tm = TaskManager()
    app = FastAPI()

    async def explode():
        raise RuntimeError("task blew up")

    def explode_sync():
        raise RuntimeError("task blew up")

    async def fine():
        return 1

    @app.post("/go")
    async def go(tasks=Depends(tm.get_tasks)):
        return {
            "ids": [
                tasks.add_task(explode),
                tasks.add_task(explode_sync),
                tasks.add_task(fine),
            ]
        }

    tm.init_app(app)
    async with serve(app) as http:
        first = await http.post("/go")
        second = await http.post("/go")
        assert first.status_code == second.status_code == 200
        ids = first.json()["ids"] + second.json()["ids"]
        statuses = [(await reaches(tm, i)).status.value for i in ids]
    assert statuses == ["failed", "failed", "success"] * 2


async def _call_asgi(app, method: str, path: str, on_send) -> list[dict]:
    """One HTTP request through the raw ASGI interface, calling ``on_send`` per message."""
    messages: list[dict] = []
    sent = False

    async def receive():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.sleep(3600)

    async def send(message):
        on_send(message)
        messages.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
    }
    await app(scope, receive, send)
    return messages


@pytest.mark.parametrize("pattern", ["depends", "install", "sync-endpoint"])
async def test_tasks_added_during_a_request_start_after_the_response(pattern):
    tm = TaskManager()
    app = FastAPI()
    ran: list[str] = []
    ids: list[str] = []

    async def job_a():
        ran.append("a")

    def job_b():
        ran.append("b")

    if pattern == "depends":

        @app.post("/go")
        async def go(tasks=Depends(tm.get_tasks)):
            ids.extend([tasks.add_task(job_a), tasks.add_task(job_b)])
            for _ in range(20):  # give an eagerly started task every chance to run
                await asyncio.sleep(0.005)
            return {"ok": True}

    elif pattern == "install":
        tm.install(app)

        @app.post("/go")
        async def go(background_tasks: BackgroundTasks):
            ids.extend([background_tasks.add_task(job_a), background_tasks.add_task(job_b)])
            for _ in range(20):
                await asyncio.sleep(0.005)
            return {"ok": True}

    else:

        @app.post("/go")
        def go(tasks=Depends(tm.get_tasks)):
            ids.extend([tasks.add_task(job_a), tasks.add_task(job_b)])
            threading.Event().wait(0.1)
            return {"ok": True}

    at_send: list[tuple[str, list[str | None], list[str]]] = []

    def on_send(message):
        at_send.append((message["type"], [status_of(tm, i) for i in ids], list(ran)))

    async with started(tm):
        await _call_asgi(app, "POST", "/go", on_send)
        for task_id in ids:
            assert (await reaches(tm, task_id)).status is TaskStatus.SUCCESS
    assert [m[0] for m in at_send][0] == "http.response.start"
    for kind, statuses, ran_then in at_send:
        assert statuses == ["pending", "pending"], (kind, statuses)
        assert ran_then == [], kind
    assert sorted(ran) == ["a", "b"]


@pytest.mark.parametrize("pattern", ["depends", "install"])
async def test_tasks_of_one_request_run_one_after_another_in_the_order_added(pattern):
    # FastAPI's own order: each starts when the previous one has ended, retries included;
    # unlike FastAPI, a failure does not stop the ones after it.
    tm = TaskManager()
    app = FastAPI()
    events: list[str] = []
    attempts = {"flaky": 0}

    @tm.task(retries=1, delay=0.01)
    async def flaky():
        events.append("flaky start")
        attempts["flaky"] += 1
        await asyncio.sleep(0.02)
        if attempts["flaky"] == 1:
            raise RuntimeError("first attempt fails")
        events.append("flaky end")

    def failing():
        events.append("failing")
        raise RuntimeError("boom")

    async def last(n):
        events.append(f"last {n}")

    if pattern == "depends":

        @app.post("/go")
        async def go(tasks=Depends(tm.get_tasks)):
            return [tasks.add_task(flaky), tasks.add_task(failing), tasks.add_task(last, 1)]

    else:
        tm.install(app)

        @app.post("/go")
        async def go(tasks: BackgroundTasks):
            return [tasks.add_task(flaky), tasks.add_task(failing), tasks.add_task(last, 1)]

    async with started(tm), client(app) as http:
        ids = (await http.post("/go")).json()
        assert tm.get(ids[2]).status.value == "pending"  # waits for the ones before it
        statuses = [(await reaches(tm, i)).status.value for i in ids]
    assert statuses == ["success", "failed", "success"]
    assert events == ["flaky start", "flaky start", "flaky end", "failing", "last 1"]


@pytest.mark.parametrize("how", ["manager", "request"])
async def test_a_request_s_tasks_run_concurrently_when_asked(how):
    tm = TaskManager(concurrent_request_tasks=how == "manager")
    app = FastAPI()
    first_started = asyncio.Event()
    second_started = asyncio.Event()

    async def first():
        first_started.set()
        await asyncio.wait_for(second_started.wait(), 5)

    async def second():
        second_started.set()
        await asyncio.wait_for(first_started.wait(), 5)

    @app.post("/go")
    async def go(tasks=Depends(tm.get_tasks)):
        if how == "request":
            tasks.concurrent = True
        return [tasks.add_task(first), tasks.add_task(second)]

    async with started(tm), client(app) as http:
        ids = (await http.post("/go")).json()
        statuses = [(await reaches(tm, i)).status.value for i in ids]
    assert statuses == ["success", "success"]


async def test_a_waiting_task_cancelled_lets_the_next_one_run():
    tm = TaskManager()
    app = FastAPI()
    gate = asyncio.Event()

    async def hold():
        await gate.wait()

    async def after():
        return None

    @app.post("/go")
    async def go(tasks=Depends(tm.get_tasks)):
        return [tasks.add_task(hold), tasks.add_task(after), tasks.add_task(after)]

    async with started(tm), client(app) as http:
        ids = (await http.post("/go")).json()
        await reaches(tm, ids[0], "running")
        tm.cancel(ids[1])  # waiting for its turn: cancelled, it hands the turn on
        assert tm.get(ids[2]).status.value == "pending"
        gate.set()
        assert (await reaches(tm, ids[2])).status.value == "success"
        assert tm.get(ids[1]).status.value == "cancelled"


@pytest.mark.parametrize("pattern", ["depends", "install"])
@pytest.mark.parametrize("failure", ["http-exception", "crash"])
async def test_endpoint_raising_cancels_its_tasks_with_the_reason(pattern, failure):
    tm = TaskManager()
    app = FastAPI()
    ran: list[int] = []
    ids: list[str] = []

    async def job():
        ran.append(1)

    def fail():
        if failure == "http-exception":
            raise HTTPException(status_code=409, detail="conflict")
        raise RuntimeError("endpoint crashed")

    if pattern == "depends":

        @app.post("/go")
        async def go(tasks=Depends(tm.get_tasks)):
            ids.append(tasks.add_task(job))
            fail()

    else:
        tm.install(app)

        @app.post("/go")
        async def go(background_tasks: BackgroundTasks):
            ids.append(background_tasks.add_task(job))
            fail()

    async with started(tm), client(app) as http:
        response = await http.post("/go")
        assert response.status_code == (409 if failure == "http-exception" else 500)
        record = await reaches(tm, ids[0], timeout=5)
        await asyncio.sleep(0.05)  # it must stay cancelled and never run
        assert record.status is TaskStatus.CANCELLED
        assert record.error and ("request" in record.error.lower())
        assert record.start_time is None
    assert ran == []


@pytest.mark.parametrize("pattern", ["depends", "install"])
async def test_tasks_of_a_response_with_its_own_background_still_run_after_it(pattern):
    from fastapi.responses import JSONResponse
    from starlette.background import BackgroundTask

    tm = TaskManager()
    app = FastAPI()
    ran: list[str] = []

    async def job():
        ran.append("tracked")

    def respond(task_id):
        # FastAPI attaches the request's BackgroundTasks only to a response without a
        # background of its own; the tracked tasks must not depend on that.
        return JSONResponse({"task_id": task_id}, background=BackgroundTask(ran.append, "own"))

    if pattern == "depends":

        @app.post("/go")
        async def go(tasks=Depends(tm.get_tasks)):
            return respond(tasks.add_task(job))

    else:
        tm.install(app)

        @app.post("/go")
        async def go(background_tasks: BackgroundTasks):
            return respond(background_tasks.add_task(job))

    async with started(tm), client(app) as http:
        task_id = (await http.post("/go")).json()["task_id"]
        record = await reaches(tm, task_id, timeout=5)
        assert record.status is TaskStatus.SUCCESS
    # The tracked task starts once the response, and its own background, are done.
    assert ran == ["own", "tracked"]


async def test_a_task_added_after_the_request_ended_starts_at_once():
    tm = TaskManager()
    app = FastAPI()
    kept: list[Any] = []

    async def job():
        return None

    @app.post("/go")
    async def go(tasks=Depends(tm.get_tasks)):
        kept.append(tasks)  # a caller that holds on to the object past its request
        return {"task_id": tasks.add_task(job)}

    async with started(tm), client(app) as http:
        first = (await http.post("/go")).json()["task_id"]
        assert (await reaches(tm, first)).status is TaskStatus.SUCCESS
        late = kept[0].add_task(job)
        assert (await reaches(tm, late, timeout=5)).status is TaskStatus.SUCCESS
        # From another thread too: handed to the loop (asyncio's debug mode raises on a
        # call_soon from a foreign thread).
        asyncio.get_running_loop().set_debug(True)
        threaded = await asyncio.to_thread(kept[0].add_task, job)
        assert (await reaches(tm, threaded, timeout=5)).status is TaskStatus.SUCCESS


async def test_a_burst_of_tasks_starts_in_order_and_in_slices_that_let_the_loop_turn():
    tm = TaskManager()
    ran: list[int] = []
    seen: list[int] = []

    async def job(n):
        ran.append(n)

    async def watcher():
        while len(ran) < 2000:
            seen.append(len(ran))
            await asyncio.sleep(0)

    async with started(tm):
        ids = [tm.add_task(job, n) for n in range(2000)]
        await asyncio.wait_for(watcher(), 10)
        assert (await reaches(tm, ids[-1])).status is TaskStatus.SUCCESS
    assert ran == list(range(2000))  # first added, first started
    # Other coroutines ran while the burst was starting, not only before and after it.
    assert any(0 < k < 2000 for k in seen)


# -- concurrency limit --------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_task_waiting_for_a_concurrency_slot_reports_pending(kind):
    tm = TaskManager(max_concurrent_tasks=2)
    gate = threading.Event()
    peak = [0, 0]
    lock = threading.Lock()

    async def async_job():
        with lock:
            peak[0] += 1
            peak[1] = max(peak)
        while not gate.is_set():
            await asyncio.sleep(0.005)
        with lock:
            peak[0] -= 1

    def sync_job():
        with lock:
            peak[0] += 1
            peak[1] = max(peak)
        gate.wait(10)
        with lock:
            peak[0] -= 1

    job = async_job if kind == "async" else sync_job
    try:
        async with started(tm):
            ids = [tm.add_task(job) for _ in range(4)]
            await until(lambda: peak[0] == 2, what="two tasks to run")
            await asyncio.sleep(0.05)
            statuses = [status_of(tm, i) for i in ids]
            assert statuses == ["running", "running", "pending", "pending"]
            assert tm.get(ids[3]).start_time is None
            gate.set()
            for task_id in ids:
                assert (await reaches(tm, task_id)).status is TaskStatus.SUCCESS
    finally:
        gate.set()
    assert peak[1] == 2


# -- task_log and get_task_context ------------------------------------------------------


async def test_task_log_and_context_from_async_and_sync_tasks():
    tm = TaskManager()
    contexts = {}

    @tm.task(name="async-job", retries=1)
    async def async_job():
        ctx = get_task_context()
        contexts.setdefault("async", []).append(ctx)
        task_log("hello from async", step=1)
        if ctx.attempt == 0:
            raise ValueError("first attempt fails")

    @tm.task(name="sync-job")
    def sync_job():
        contexts["sync"] = get_task_context()
        task_log("hello from sync", level="warning", user="bob smith")

    async with started(tm):
        a = tm.add_task(async_job, tags={"k": "v"})
        s = tm.add_task(sync_job)
        ra, rs = await reaches(tm, a), await reaches(tm, s)
    assert ra.status is TaskStatus.SUCCESS and rs.status is TaskStatus.SUCCESS
    first, second = contexts["async"]
    assert (first.task_id, first.func_name, first.attempt, first.tags) == (
        a,
        "async-job",
        0,
        {"k": "v"},
    )
    assert second.attempt == 1 and second.task_id == a
    assert (contexts["sync"].task_id, contexts["sync"].func_name) == (s, "sync-job")
    async_lines = [line for line in ra.logs if "hello from async" in line]
    assert len(async_lines) == 2 and all("step=1" in line for line in async_lines)
    sync_lines = [line for line in rs.logs if "hello from sync" in line]
    assert len(sync_lines) == 1
    assert "WARNING" in sync_lines[0].upper() and "bob smith" in sync_lines[0]


async def test_each_async_task_runs_in_its_own_asyncio_task_named_by_its_id():
    tm = TaskManager()
    seen: dict[str, str] = {}

    async def job():
        current = asyncio.current_task()
        assert current is not None
        seen[get_task_context().task_id] = current.get_name()

    async with started(tm):
        ids = [tm.add_task(job) for _ in range(3)]
        for task_id in ids:
            assert (await reaches(tm, task_id)).status is TaskStatus.SUCCESS
    assert seen == {task_id: task_id for task_id in ids}


async def test_outside_a_task_context_is_none_and_task_log_does_not_raise():
    assert get_task_context() is None
    task_log("not in a task", level="info", x=1)


async def test_record_timestamps_are_timezone_aware_utc_even_before_running():
    tm = TaskManager()
    task_id = tm.add_task(lambda: None)
    record = tm.get(task_id)
    assert record.created_at.tzinfo is not None
    assert record.created_at.astimezone(timezone.utc) == record.created_at
    assert record.start_time is None and record.end_time is None
    async with started(tm):
        await reaches(tm, task_id)


def test_iso_timestamps_match_datetime_isoformat_to_the_microsecond():
    """Records, pages and events format times with a cached, faster ``_iso``: the text
    must be exactly ``datetime.isoformat()``'s, rounding (half to even) included."""
    import math
    import random
    from datetime import datetime

    import taskflow

    rnd = random.Random(20261129)
    edges = [0.0, 1.0, 0.5e-6, 1.5e-6, 2.5e-6, 0.9999995, 1.9999995, 1e9 + 0.123456789]
    edges += [1700000000.9999996, 1700000000.0000004, -1.5, -1e-7, 253402300799.0]
    whole = [math.floor(rnd.uniform(0, 4e9)) + k / 1e6 for k in range(0, 1_000_000, 997)]
    spread = [rnd.uniform(0, 4e9) for _ in range(20_000)]
    for ts in edges + whole + spread:
        assert taskflow._iso(ts) == datetime.fromtimestamp(ts, timezone.utc).isoformat(), ts
    assert taskflow._iso(None) is None
