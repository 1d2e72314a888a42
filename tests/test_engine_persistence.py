"""Persistence on real databases: batched writes of changed rows only, history across
restarts, requeue, persist=True durability, argument encoding, idempotency keys and schema
migrations, on a SQLite file and on PostgreSQL alike (the ``snapshot_target`` fixture);
the SQLite file format and bad database files; PostgreSQL schemas and URLs."""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import json
import logging
import sqlite3
import subprocess
import sys
import textwrap
import threading
import traceback
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from apps.db_support import db_execute, db_rows, db_scalar, is_postgres
from apps.engine_support import (
    LifespanFailed,
    client,
    lifespan,
    reaches,
    rows,
    scalar,
    started,
    status_of,
    until,
)
from fastapi import BackgroundTasks, Depends, FastAPI
from taskflow import (
    TaskArgumentError,
    TaskflowDatabaseError,
    TaskManager,
    TaskStatus,
    get_task_context,
    task_log,
)

ROOT = Path(__file__).resolve().parents[1]


def _status_in_file(db: str, task_id: str) -> str | None:
    return db_scalar(db, "SELECT status FROM tasks WHERE task_id = ?", (task_id,))


# -- the file itself -------------------------------------------------------------------


async def test_file_uses_wal_a_schema_version_an_application_id_and_indices(tmp_path: Path):
    db = tmp_path / "tasks.db"
    tm = TaskManager(snapshot_db=db)
    async with started(tm):
        assert scalar(db, "PRAGMA journal_mode") == "wal"
    version = scalar(db, "PRAGMA user_version")
    app_id = scalar(db, "PRAGMA application_id")
    assert isinstance(version, int) and version >= 1
    assert app_id not in (None, 0)
    indexed: set[tuple[str, ...]] = set()
    for _, name, *_ in rows(db, "PRAGMA index_list(tasks)"):
        indexed.add(tuple(r[2] for r in rows(db, f"PRAGMA index_info({name})")))
    leading = {cols[0] for cols in indexed}
    # The list query filters on status and func_name and sorts on created_at; retention on end_time.
    assert {"status", "func_name", "created_at", "end_time"} <= leading, indexed
    # A second start on the same file keeps its identity and version.
    async with started(TaskManager(snapshot_db=db)):
        pass
    assert scalar(db, "PRAGMA user_version") == version
    assert scalar(db, "PRAGMA application_id") == app_id


async def test_arguments_and_tags_are_stored_as_json(snapshot_target: str):
    db = snapshot_target
    tm = TaskManager(snapshot_db=db)

    @tm.task(persist=True)
    async def job(*args, **kwargs):
        return None

    async with started(tm):
        # job takes **kwargs, so tags= would be its argument: with_options() says "tracking".
        tagged = tm.with_options(tags={"t": "1"})
        task_id = tagged.add_task(job, 1, "two", [3], {"four": None}, k="é")
        await reaches(tm, task_id)
    args, kwargs, tags = db_rows(db, "SELECT args, kwargs, tags FROM tasks")[0]
    assert json.loads(args) == [1, "two", [3], {"four": None}]
    assert json.loads(kwargs) == {"k": "é"}
    assert json.loads(tags) == {"t": "1"}


# -- when rows are written -----------------------------------------------------------


def _watch_writes(db: str) -> None:
    """Record every insert and update of a task row (triggers live in the database itself)."""
    db_execute(db, "CREATE TABLE test_writes (task_id TEXT, kind TEXT)")
    if is_postgres(db):
        db_execute(
            db,
            "CREATE FUNCTION test_written() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "INSERT INTO test_writes VALUES (NEW.task_id, lower(TG_OP)); RETURN NULL; END $$",
        )
        db_execute(
            db,
            "CREATE TRIGGER test_writes AFTER INSERT OR UPDATE ON tasks "
            "FOR EACH ROW EXECUTE FUNCTION test_written()",
        )
        return
    db_execute(
        db,
        "CREATE TRIGGER test_ins AFTER INSERT ON tasks BEGIN "
        "INSERT INTO test_writes VALUES (new.task_id, 'insert'); END",
    )
    db_execute(
        db,
        "CREATE TRIGGER test_upd AFTER UPDATE ON tasks BEGIN "
        "INSERT INTO test_writes VALUES (new.task_id, 'update'); END",
    )


def _written(db: str) -> list[str]:
    return [r[0] for r in db_rows(db, "SELECT task_id FROM test_writes")]


async def test_batches_write_only_rows_that_changed(snapshot_target: str):
    db = snapshot_target
    tm = TaskManager(snapshot_db=db, snapshot_interval=0.02)

    async def job(n):
        return n

    async with started(tm):
        old = [tm.add_task(job, n) for n in range(10)]
        for task_id in old:
            await reaches(tm, task_id)
        await until(
            lambda: db_scalar(db, "SELECT count(*) FROM tasks WHERE status = 'success'") == 10,
            what="the batch loop to write the finished tasks",
        )
        _watch_writes(db)
        fresh = []
        for n in range(4):  # several batches go by, each with one new task
            fresh.append(tm.add_task(job, 100 + n))
            await until(
                lambda: _status_in_file(db, fresh[-1]) == "success",
                what="a later batch",
            )
        assert set(_written(db)) == set(fresh)
    assert set(_written(db)) == set(fresh)  # nothing rewritten at shutdown either

    # A restart does not rewrite history it did not change.
    tm2 = TaskManager(snapshot_db=db, snapshot_interval=0.02)
    async with started(tm2):
        last = tm2.add_task(job, 999)
        await reaches(tm2, last)
        await until(lambda: _status_in_file(db, last) == "success", what="the new task's row")
    assert set(_written(db)) == set(fresh) | {last}


async def test_changes_reach_the_file_in_batches_and_at_shutdown(snapshot_target: str):
    db = snapshot_target
    fast = TaskManager(snapshot_db=db, snapshot_interval=0.05)

    async def job():
        return None

    async with started(fast):
        task_id = fast.add_task(job)
        await until(lambda: _status_in_file(db, task_id) == "success", what="a batched write")

    slow = TaskManager(snapshot_db=db, snapshot_interval=3600)
    async with started(slow):
        late = slow.add_task(job)
        await reaches(slow, late)
    assert _status_in_file(db, late) == "success"  # written by shutdown()


# -- history across restarts -------------------------------------------------------------


async def test_history_survives_a_restart_with_every_field(snapshot_target: str):
    db = snapshot_target
    tm = TaskManager(snapshot_db=db)

    @tm.task(name="report", retries=1)
    async def report(n):
        task_log("working", n=n)
        if n == 2:
            raise ValueError("bad input")

    async with started(tm):
        ok = tm.add_task(report, 1, tags={"team": "a"})
        bad = tm.add_task(report, 2)
        before = {i: (await reaches(tm, i)).to_dict() for i in (ok, bad)}
        retried = await tm.retry(bad)
        before[retried] = (await reaches(tm, retried)).to_dict()
        before[bad]["retried_as"] = retried  # the original now names its retry

    tm2 = TaskManager(snapshot_db=db)
    tm2.task(name="report", retries=1)(report)
    async with started(tm2):
        for task_id, data in before.items():
            record = await tm2.fetch(task_id)
            assert record is not None, task_id
            assert record.to_dict() == data
        assert (await tm2.fetch(bad)).stacktrace
        assert (await tm2.fetch(retried)).retry_of == bad
        page, total = await tm2.query()
        assert total == 3 and {r.task_id for r in page} == set(before)
        metrics = tm2.metrics()
        assert metrics["total"] == 3 and metrics["failed"] == 2 and metrics["success"] == 1


# -- requeue at graceful shutdown --------------------------------------------------------


async def test_requeue_pending_runs_pending_tasks_after_a_graceful_restart(snapshot_target: str):
    db = snapshot_target
    gate = asyncio.Event()
    runs: list[tuple] = []

    def register(tm):
        @tm.task(name="blocker")
        async def blocker():
            runs.append(("blocker",))
            await gate.wait()

        @tm.task(name="again", requeue_on_interrupt=True)
        async def again():
            runs.append(("again", get_task_context().task_id))
            await gate.wait()

        @tm.task(name="plain-job")
        async def plain(n, *, label):
            runs.append(("plain", n, label, get_task_context().tags))

        @tm.task(name="durable-job", persist=True)
        def durable(payload):
            runs.append(("durable", payload))

        return blocker, again, plain, durable

    tm = TaskManager(
        snapshot_db=db, requeue_pending=True, max_concurrent_tasks=2, shutdown_timeout=0.05
    )
    blocker, again, plain, durable = register(tm)
    async with started(tm):
        b = tm.add_task(blocker)
        a = tm.add_task(again)
        p = tm.add_task(plain, 1, label="x", tags={"tenant": "t1"})
        d = tm.add_task(durable, {"nested": [1, 2, {"é": None}]})
        await reaches(tm, b, "running")
        await reaches(tm, a, "running")
        assert status_of(tm, p) == status_of(tm, d) == "pending"
    assert tm.get(b) is None or tm.get(b).status is TaskStatus.INTERRUPTED
    assert _status_in_file(db, b) == "interrupted"
    assert _status_in_file(db, p) == _status_in_file(db, d) == "pending"
    assert _status_in_file(db, a) == "pending"  # requeue_on_interrupt
    runs.clear()

    gate.set()
    tm2 = TaskManager(snapshot_db=db, requeue_pending=True)
    register(tm2)
    async with started(tm2):
        for task_id in (p, d, a):
            assert (await reaches(tm2, task_id)).status is TaskStatus.SUCCESS
        assert (await tm2.fetch(b)).status is TaskStatus.INTERRUPTED
    expected = [
        ("again", a),
        ("plain", 1, "x", {"tenant": "t1"}),
        ("durable", {"nested": [1, 2, {"é": None}]}),
    ]
    assert sorted(runs, key=str) == sorted(expected, key=str)
    assert db_scalar(db, "SELECT count(*) FROM tasks") == 4  # same ids, no duplicates


async def test_without_requeue_pending_only_persisted_tasks_wait_for_a_requeueing_start(
    snapshot_target: str,
):
    db = snapshot_target
    gate = asyncio.Event()
    runs: list[str] = []

    tm = TaskManager(snapshot_db=db, max_concurrent_tasks=1, shutdown_timeout=0.05)
    funcs = {}

    @tm.task(name="blocker")
    async def blocker():
        await gate.wait()

    @tm.task(name="transient")
    async def transient():
        runs.append("transient")

    @tm.task(name="durable", persist=True)
    async def durable():
        runs.append("durable")

    funcs.update(blocker=blocker, transient=transient, durable=durable)
    async with started(tm):
        b = tm.add_task(blocker)
        t = tm.add_task(transient)
        d = tm.add_task(durable)
        await reaches(tm, b, "running")
    # Without requeue_pending a non-persisted pending task is recorded, not silently dropped.
    assert _status_in_file(db, t) == "interrupted"
    assert db_rows(db, "SELECT error FROM tasks WHERE task_id = ?", (t,))[0][0]

    gate.set()
    tm2 = TaskManager(snapshot_db=db, requeue_pending=True)
    for name, func in funcs.items():
        tm2.task(name=name, persist=name == "durable")(func)
    async with started(tm2):
        assert (await reaches(tm2, d)).status is TaskStatus.SUCCESS
        assert (await tm2.fetch(t)).status is TaskStatus.INTERRUPTED
    assert runs == ["durable"]  # persist=True on one function did not requeue the others


async def test_pending_rows_of_unknown_functions_are_kept_not_dropped(snapshot_target: str):
    db = snapshot_target
    gate = asyncio.Event()
    runs: list[str] = []

    async def blocker():
        await gate.wait()

    async def later():
        runs.append("later")

    tm = TaskManager(
        snapshot_db=db, requeue_pending=True, max_concurrent_tasks=1, shutdown_timeout=0.05
    )
    tm.task()(blocker)
    tm.task()(later)
    async with started(tm):
        await reaches(tm, tm.add_task(blocker), "running")
        pending = tm.add_task(later)
    assert _status_in_file(db, pending) == "pending"

    stranger = TaskManager(snapshot_db=db, requeue_pending=True)
    stranger.task()(blocker)  # does not know `later`
    async with started(stranger):
        await asyncio.sleep(0.05)
    assert _status_in_file(db, pending) == "pending"  # neither run, nor dropped

    knows = TaskManager(snapshot_db=db, requeue_pending=True)
    knows.task()(later)
    async with started(knows):
        assert (await reaches(knows, pending)).status is TaskStatus.SUCCESS
    assert runs == ["later"]


async def test_two_managers_on_one_file_do_not_lose_each_others_pending_tasks(snapshot_target: str):
    db = snapshot_target
    gate = asyncio.Event()
    runs: list[str] = []

    async def blocker():
        await gate.wait()

    async def job(label):
        runs.append(label)

    managers = []
    pending: list[str] = []
    for _ in range(2):
        tm = TaskManager(
            snapshot_db=db, requeue_pending=True, max_concurrent_tasks=1, shutdown_timeout=0.05
        )
        tm.task()(blocker)
        tm.task()(job)
        managers.append(tm)
    await managers[0].startup()
    await managers[1].startup()
    try:
        for tm, name in zip(managers, "ab", strict=True):
            await reaches(tm, tm.add_task(blocker), "running")
            pending += [tm.add_task(job, f"{name}{n}") for n in range(3)]
    finally:
        await managers[0].shutdown()
        await managers[1].shutdown()
    assert [_status_in_file(db, i) for i in pending] == ["pending"] * 6

    gate.set()
    tm = TaskManager(snapshot_db=db, requeue_pending=True)
    tm.task()(blocker)
    tm.task()(job)
    async with started(tm):
        for task_id in pending:
            assert (await reaches(tm, task_id)).status is TaskStatus.SUCCESS
    assert sorted(runs) == ["a0", "a1", "a2", "b0", "b1", "b2"]


async def test_pending_task_with_non_json_arguments_is_interrupted_at_shutdown_not_lost(
    snapshot_target: str,
):
    db = snapshot_target
    gate = asyncio.Event()

    async def blocker():
        await gate.wait()

    async def takes_object(obj):
        return obj

    tm = TaskManager(
        snapshot_db=db, requeue_pending=True, max_concurrent_tasks=1, shutdown_timeout=0.05
    )
    async with started(tm):
        await reaches(tm, tm.add_task(blocker), "running")
        task_id = tm.add_task(takes_object, object())  # fine: not persist=True
    record = tm.get(task_id)
    assert record.status is TaskStatus.INTERRUPTED and "JSON" in record.error
    assert _status_in_file(db, task_id) == "interrupted"


# -- persist=True: committed before the response --------------------------------------------


def _app_with_persisted_task(tm: TaskManager, pattern: str, ran: list[str]) -> FastAPI:
    app = FastAPI()

    @tm.task(persist=True)
    async def durable(order: str):
        ran.append(order)

    if pattern == "depends":

        @app.post("/orders/{order}")
        async def create(order: str, tasks=Depends(tm.get_tasks)):
            return {"task_id": tasks.add_task(durable, order)}

    elif pattern == "install":
        tm.install(app)

        @app.post("/orders/{order}")
        async def create(order: str, background_tasks: BackgroundTasks):
            return {"task_id": background_tasks.add_task(durable, order)}

    else:

        @app.post("/orders/{order}")
        def create(order: str, tasks=Depends(tm.get_tasks)):
            return {"task_id": tasks.add_task(durable, order)}

    return app


@pytest.mark.parametrize("pattern", ["depends", "install", "sync-endpoint"])
async def test_persisted_task_is_committed_before_the_response_is_sent(
    snapshot_target: str, pattern: str
):
    db = snapshot_target
    # A batch interval of an hour: only the commit before the response can write the row.
    tm = TaskManager(snapshot_db=db, snapshot_interval=3600)
    ran: list[str] = []
    app = _app_with_persisted_task(tm, pattern, ran)
    seen_at_start: list[list[tuple]] = []
    orig_app = app

    async def spy(scope, receive, send):
        async def checking_send(message):
            if message["type"] == "http.response.start":
                seen_at_start.append(db_rows(db, "SELECT task_id, status FROM tasks"))
            await send(message)

        await orig_app(scope, receive, checking_send)

    async with started(tm), client(spy) as http:
        response = await http.post("/orders/A1")
        task_id = response.json()["task_id"]
        # Read the file right after the response, as another process would.
        in_file = db_rows(
            db, "SELECT task_id, status, args FROM tasks WHERE task_id = ?", (task_id,)
        )
        assert in_file and in_file[0][0] == task_id
        assert json.loads(in_file[0][2]) == ["A1"]
        await reaches(tm, task_id)
    assert seen_at_start == [[(task_id, "pending")]]
    assert ran == ["A1"]


async def test_concurrent_requests_share_their_commits(snapshot_target: str):
    db = snapshot_target
    tm = TaskManager(snapshot_db=db, snapshot_interval=3600)
    ran: list[str] = []
    app = _app_with_persisted_task(tm, "depends", ran)
    async with started(tm), client(app) as http:
        writes: set[str] = set()
        if is_postgres(db):
            # The server counts the statements that write task rows: a statement-level
            # trigger fires once per INSERT (an upsert of many rows is one statement).
            db_execute(db, "CREATE TABLE test_statements (n INTEGER)")
            db_execute(
                db,
                "CREATE FUNCTION test_counted() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "INSERT INTO test_statements VALUES (1); RETURN NULL; END $$",
            )
            db_execute(
                db,
                "CREATE TRIGGER test_statements AFTER INSERT ON tasks "
                "FOR EACH STATEMENT EXECUTE FUNCTION test_counted()",
            )
        else:
            # Observe the statements our own connection runs (SQLite's trace hook). It
            # reports a statement again for each trigger program it runs, with the same
            # expanded text (bound values included), so distinct texts count the writes.
            await tm._db.conn.set_trace_callback(
                lambda sql: writes.add(sql) if sql.startswith("INSERT INTO tasks ") else None
            )
        responses = await asyncio.gather(*(http.post(f"/orders/{i}") for i in range(40)))
        ids = [r.json()["task_id"] for r in responses]
        if is_postgres(db):
            count = db_scalar(db, "SELECT count(*) FROM test_statements")
        else:
            await tm._db.conn.set_trace_callback(None)
            count = len(writes)
        # Every response came after its own row was written...
        in_file = {row[0] for row in db_rows(db, "SELECT task_id FROM tasks")}
        assert set(ids) <= in_file
        # ...but the 40 requests waited together, so far fewer writes than requests.
        assert 1 <= count <= 10, f"{count} writes for 40 requests"
        for task_id in ids:
            await reaches(tm, task_id)
    assert sorted(ran) == sorted(str(i) for i in range(40))


@pytest.mark.parametrize(
    "bad",
    [object(), (1, 2), {1, 2}, b"bytes", {1: "int key"}, [object()], float("nan"), [(1,)]],
    ids=["object", "tuple", "set", "bytes", "int-key", "nested", "nan", "nested-tuple"],
)
async def test_non_json_arguments_of_a_persisted_task_are_refused(snapshot_target: str, bad):
    db = snapshot_target
    tm = TaskManager(snapshot_db=db)

    @tm.task(persist=True, name="durable")
    async def durable(value):
        return value

    async with started(tm):
        with pytest.raises(TaskArgumentError) as info:
            tm.add_task(durable, bad)
        assert isinstance(info.value, ValueError)
        assert "durable" in str(info.value) and "JSON" in str(info.value)
        with pytest.raises(TaskArgumentError):
            tm.add_task(durable, value=bad)
        assert (await tm.query())[1] == 0
        assert tm.metrics()["total"] == 0
    assert db_scalar(db, "SELECT count(*) FROM tasks") == 0


async def test_non_json_arguments_in_a_request_fail_the_request_and_store_nothing(
    snapshot_target: str,
):
    db = snapshot_target
    tm = TaskManager(snapshot_db=db)
    app = FastAPI()

    @tm.task(persist=True)
    async def durable(value):
        return value

    @app.post("/go")
    async def go(tasks=Depends(tm.get_tasks)):
        return tasks.add_task(durable, object())

    async with started(tm), client(app) as http:
        assert (await http.post("/go")).status_code == 500
        assert (await tm.query())[1] == 0
    assert db_scalar(db, "SELECT count(*) FROM tasks") == 0


# -- bad database files ---------------------------------------------------------------------


def _snapshot(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.parent.iterdir()) if p.is_file()}


def _foreign_sqlite(path: Path) -> None:
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT)")
        conn.execute("INSERT INTO users (email) VALUES ('a@example.com')")
    conn.close()


def _newer_taskflow(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA application_id = 1413893207")
    conn.execute("CREATE TABLE tasks (task_id TEXT PRIMARY KEY)")
    conn.execute("PRAGMA user_version = 999")
    conn.commit()
    conn.close()


BAD_FILES = {
    "text": lambda p: p.write_text("this is not a database\n" * 100),
    "random-bytes": lambda p: p.write_bytes(bytes(range(256)) * 64),
    "truncated-sqlite": lambda p: p.write_bytes(b"SQLite format 3\x00" + b"\x07" * 5000),
    "newer-schema": _newer_taskflow,
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
async def test_unusable_database_fails_startup_clearly_and_is_left_untouched(
    tmp_path: Path, kind: str
):
    db = tmp_path / "tasks.db"
    BAD_FILES[kind](db)
    before = _snapshot(db)
    tm = TaskManager(snapshot_db=db, requeue_pending=True)
    with pytest.raises(TaskflowDatabaseError) as info:
        await tm.startup()
    message = str(info.value)
    assert str(db) in message and "\n" not in message
    assert _snapshot(db) == before
    # The manager did not half-start: once the file is gone, the same manager starts.
    db.unlink()
    for extra in tmp_path.iterdir():
        extra.unlink()
    async with started(tm):
        await reaches(tm, tm.add_task(print, "started"))


async def test_foreign_sqlite_database_fails_startup_with_a_message_naming_the_file(
    tmp_path: Path,
):
    db = tmp_path / "other-app.db"
    _foreign_sqlite(db)
    tm = TaskManager(snapshot_db=db)
    with pytest.raises(TaskflowDatabaseError) as info:
        await tm.startup()
    assert str(db) in str(info.value) and "\n" not in str(info.value)
    assert rows(db, "SELECT email FROM users") == [("a@example.com",)]
    assert scalar(db, "SELECT count(*) FROM sqlite_master WHERE name = 'tasks'") == 0


async def test_foreign_sqlite_database_is_not_modified(tmp_path: Path):
    db = tmp_path / "other-app.db"
    _foreign_sqlite(db)
    before = _snapshot(db)
    with pytest.raises(TaskflowDatabaseError):
        await TaskManager(snapshot_db=db).startup()
    assert _snapshot(db) == before


async def test_directory_in_place_of_the_database_fails_startup_clearly(tmp_path: Path):
    db = tmp_path / "tasks.db"
    db.mkdir()
    with pytest.raises(TaskflowDatabaseError) as info:
        await TaskManager(snapshot_db=db).startup()
    assert str(db) in str(info.value)
    assert list(db.iterdir()) == []


async def test_bad_database_fails_the_app_lifespan_with_the_message(tmp_path: Path):
    db = tmp_path / "tasks.db"
    db.write_text("not sqlite")
    tm = TaskManager(snapshot_db=db)
    app = FastAPI()
    tm.init_app(app)
    with pytest.raises(LifespanFailed) as info:
        async with lifespan(app):
            pass
    assert str(db) in str(info.value)
    assert db.read_text() == "not sqlite"


async def test_an_empty_file_is_a_new_database(tmp_path: Path):
    db = tmp_path / "tasks.db"
    db.touch()
    tm = TaskManager(snapshot_db=db)
    async with started(tm):
        await reaches(tm, tm.add_task(lambda: None))
    assert scalar(db, "SELECT count(*) FROM tasks") == 1


# -- idempotency keys across restarts ---------------------------------------------------------


async def test_idempotency_keys_survive_a_restart(snapshot_target: str):
    db = snapshot_target
    runs: list[str] = []
    fail = {"bad": True}

    async def job(label):
        runs.append(label)
        if fail.get(label):
            raise RuntimeError("fails the first time")

    tm = TaskManager(snapshot_db=db)
    async with started(tm):
        ok = tm.add_task(job, "ok", idempotency_key="key-ok")
        bad = tm.add_task(job, "bad", idempotency_key="key-bad")
        await reaches(tm, ok)
        await reaches(tm, bad)

    fail["bad"] = False
    tm2 = TaskManager(snapshot_db=db)
    async with started(tm2):
        assert tm2.add_task(job, "ok", idempotency_key="key-ok") == ok  # succeeded: deduped
        again = tm2.add_task(job, "bad", idempotency_key="key-bad")  # failed: runs again
        assert again != bad
        assert (await reaches(tm2, again)).status is TaskStatus.SUCCESS
        assert tm2.add_task(job, "bad", idempotency_key="key-bad") == again
    assert runs == ["ok", "bad", "bad"]


async def test_a_requeued_task_keeps_its_idempotency_key(snapshot_target: str):
    db = snapshot_target
    gate = asyncio.Event()
    runs: list[str] = []

    async def blocker():
        await gate.wait()

    async def job():
        runs.append("job")
        await gate.wait()

    def manager() -> TaskManager:
        tm = TaskManager(
            snapshot_db=db, requeue_pending=True, max_concurrent_tasks=1, shutdown_timeout=0.02
        )
        tm.task()(blocker)
        tm.task()(job)
        return tm

    tm = manager()
    async with started(tm):
        await reaches(tm, tm.add_task(blocker), "running")
        pending = tm.add_task(job, idempotency_key="once")
    tm2 = manager()
    async with started(tm2):
        await reaches(tm2, pending, "running")
        assert tm2.add_task(job, idempotency_key="once") == pending
        gate.set()
        await reaches(tm2, pending)
    assert runs == ["job"]


async def test_an_old_idempotency_key_still_dedupes_after_a_restart(snapshot_target: str):
    db = snapshot_target
    runs: list[int] = []

    def job(n):
        runs.append(n)

    tm = TaskManager(snapshot_db=db, max_history=10)
    async with started(tm):
        ids = [tm.add_task(job, n, idempotency_key=f"order-{n}") for n in range(1200)]
        for task_id in ids:
            await reaches(tm, task_id)
    tm2 = TaskManager(snapshot_db=db, max_history=10)
    async with started(tm2):
        assert tm2.add_task(job, 1199, idempotency_key="order-1199") == ids[1199]
        assert tm2.add_task(job, 0, idempotency_key="order-0") == ids[0]
    assert sorted(runs) == list(range(1200))


async def test_an_idempotency_key_used_by_another_process_on_the_file_dedupes(snapshot_target: str):
    db = snapshot_target
    runs: list[str] = []

    async def job(worker):
        runs.append(worker)

    a = TaskManager(snapshot_db=db)
    b = TaskManager(snapshot_db=db)
    a.task(persist=True, name="job")(job)
    b.task(persist=True, name="job")(job)
    async with started(a), started(b):
        first = a.add_task(job, "a", idempotency_key="charge-42")
        await reaches(a, first)
        await a.flush()
        assert (
            db_scalar(db, "SELECT task_id FROM tasks WHERE idempotency_key = 'charge-42'") == first
        )
        assert b.add_task(job, "b", idempotency_key="charge-42") == first
    assert runs == ["a"]


def _two_processes(db: str, job) -> tuple[TaskManager, TaskManager]:
    """Two managers on one database, as two processes (or hosts) are, with ``job`` registered
    under one name, and no batch write for an hour: what they know of each other's tasks is
    what was written when the tasks were added."""
    managers = (
        TaskManager(snapshot_db=db, snapshot_interval=3600),
        TaskManager(snapshot_db=db, snapshot_interval=3600),
    )
    for tm in managers:
        tm.task(name="job")(job)
    return managers


async def test_an_idempotency_key_dedupes_across_processes_before_any_batch_is_written(
    snapshot_target: str,
):
    """A client retries on another host a request whose first try is still in flight: the
    key must hold at once, not after the first task's row is written in a batch."""
    db = snapshot_target
    runs: list[str] = []

    async def job(worker):
        runs.append(worker)

    a, b = _two_processes(db, job)
    async with started(a), started(b):
        first = a.add_task(job, "a", idempotency_key="order-7")
        assert b.add_task(job, "b", idempotency_key="order-7") == first
        assert a.add_task(job, "a", idempotency_key="order-7") == first
        await reaches(a, first)
        assert b.get(first) is None  # b added nothing of its own
    assert runs == ["a"]


async def test_processes_adding_one_key_at_the_same_moment_get_one_task(snapshot_target: str):
    """Sync endpoints of two processes add one key from many threads at once."""
    db = snapshot_target
    runs: list[str] = []

    def job(worker):
        runs.append(worker)

    a, b = _two_processes(db, job)
    async with started(a), started(b):
        start = threading.Barrier(8)

        def add(i: int) -> str:
            tm = (a, b)[i % 2]
            start.wait()
            return tm.add_task(job, f"{'ab'[i % 2]}{i}", idempotency_key="invoice-9")

        loop = asyncio.get_running_loop()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            ids = await asyncio.gather(*(loop.run_in_executor(pool, add, i) for i in range(8)))
        assert len(set(ids)) == 1, ids
        owner = a if a.get(ids[0]) is not None else b
        await reaches(owner, ids[0])
    assert len(runs) == 1
    assert db_scalar(db, "SELECT count(*) FROM tasks WHERE idempotency_key = 'invoice-9'") == 1


async def test_a_key_freed_by_a_failure_is_claimed_again_before_the_failure_is_written(
    snapshot_target: str,
):
    db = snapshot_target
    fail = {"first": True}

    async def job():
        if fail.pop("first", False):
            raise RuntimeError("declined")

    a, b = _two_processes(db, job)
    async with started(a), started(b):
        failed = a.add_task(job, idempotency_key="pay-3")
        assert (await reaches(a, failed)).status is TaskStatus.FAILED
        # The database still says pending; a knows better, so the key is free for it...
        again = a.add_task(job, idempotency_key="pay-3")
        assert again != failed
        assert (await reaches(a, again)).status is TaskStatus.SUCCESS
        # ...and the new task holds it for every process.
        assert b.add_task(job, idempotency_key="pay-3") == again


async def test_a_key_claim_does_not_wait_for_this_process_own_sqlite_transaction(tmp_path, caplog):
    """This process's maintenance transaction holds SQLite's write lock and needs the loop to
    go on; a claim made on that loop must not wait for the lock (it would wait in vain until
    its timeout, with the loop stopped): it looks the key up instead."""
    db = str(tmp_path / "tasks.db")
    tm = TaskManager(snapshot_db=db, snapshot_interval=3600)

    async def job():
        return None

    tm.task(name="job")(job)
    async with started(tm):
        first = tm.add_task(job, idempotency_key="held")
        inside, release = asyncio.Event(), asyncio.Event()

        async def work():
            await tm._db.execute("UPDATE instances SET heartbeat = heartbeat")
            inside.set()
            await release.wait()

        transaction = asyncio.ensure_future(tm._db.atomic(work))
        await inside.wait()
        with caplog.at_level(logging.WARNING, logger="taskflow"):
            assert tm.add_task(job, idempotency_key="held") == first  # memory knows it
            other = tm.add_task(job, idempotency_key="new-during-transaction")
        release.set()
        await transaction
        assert other != first
        await reaches(tm, other)
    assert "cannot claim" not in caplog.text


# -- cancellation in the middle of a write ----------------------------------------------------


async def test_a_cancelled_flush_does_not_break_persistence(snapshot_target: str):
    """A request cancelled while its commit runs (client gone, a timeout) must not poison
    the connection: later writes work and nothing is lost."""
    db = snapshot_target
    tm = TaskManager(snapshot_db=db, snapshot_interval=3600)

    async def job():
        return None

    done = 0
    async with started(tm):
        # One yield lands the cancellation on the first statement of the write every time;
        # more yields reach later statements (depending on the database thread's speed).
        for yields in range(1, 8):
            ids = [tm.add_task(job) for _ in range(20)]
            for task_id in ids:
                await reaches(tm, task_id)
            done += len(ids)
            flushing = asyncio.create_task(tm.flush())
            for _ in range(yields):
                await asyncio.sleep(0)
            flushing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flushing
            await tm.flush()
            assert db_scalar(db, "SELECT count(*) FROM tasks WHERE status = 'success'") == done
    assert db_scalar(db, "SELECT count(*) FROM tasks WHERE status = 'success'") == done


def test_shutdown_never_hangs_when_it_stops_the_batch_loop_mid_write(tmp_path: Path):
    script = textwrap.dedent(
        """
        import asyncio, logging, os, random, sys
        sys.path.insert(0, sys.argv[1])
        from taskflow import TaskManager
        logging.disable(logging.CRITICAL)

        async def job():
            return None

        async def main():
            random.seed(7)
            for i in range(150):
                tm = TaskManager(snapshot_db=sys.argv[2], snapshot_interval=0.001)
                await tm.startup()
                for _ in range(20):
                    tm.add_task(job)
                await asyncio.sleep(random.uniform(0, 0.01))
                try:
                    await asyncio.wait_for(asyncio.shield(tm.shutdown()), 5)
                except asyncio.TimeoutError:
                    print(f"shutdown hung (iteration {i})", flush=True)
                    os._exit(1)
                except Exception as exc:
                    print(f"shutdown failed (iteration {i}): {exc!r}", flush=True)
                    os._exit(1)
            print("ok", flush=True)
            os._exit(0)

        asyncio.run(main())
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(ROOT / "taskflow_vendor"), str(tmp_path / "t.db")],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.stdout.strip() == "ok", result.stdout + result.stderr[-2000:]


# -- schema versions and migrations ---------------------------------------------------------


def _schema_version(db: str) -> int:
    if is_postgres(db):
        return db_scalar(db, "SELECT version FROM taskflow_schema")
    return db_scalar(db, "PRAGMA user_version")


def _task_columns(db: str) -> list[str]:
    if is_postgres(db):
        sql = (
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = 'public' AND table_name = 'tasks' ORDER BY ordinal_position"
        )
        return [r[0] for r in db_rows(db, sql)]
    return [r[1] for r in db_rows(db, "PRAGMA table_info(tasks)")]


def _has_index(db: str, name: str) -> bool:
    if is_postgres(db):
        return bool(db_scalar(db, f"SELECT to_regclass('{name}') IS NOT NULL"))
    return db_scalar(db, f"SELECT count(*) FROM sqlite_master WHERE name = '{name}'") == 1


async def test_a_version_1_database_is_migrated_forward(snapshot_target: str):
    db = snapshot_target
    tm = TaskManager(snapshot_db=db)

    def job(n):
        return n

    async with started(tm):
        task_id = tm.add_task(job, 3, tags={"kept": "yes"})
        before = (await reaches(tm, task_id)).to_dict()
        await tm.flush()
    # A new database is created at the current schema version: 2 added retried_as, and
    # later versions may add more; a migrated database must end up the same.
    current, columns = _schema_version(db), set(_task_columns(db))
    assert current >= 2 and "retried_as" in columns

    # What a database written by schema version 1 looks like: no retried_as column (2),
    # no run_at column (5) and no index of the rows with an error or tags (6).
    assert _has_index(db, "tasks_rare")
    db_execute(db, "ALTER TABLE tasks DROP COLUMN retried_as")
    db_execute(db, "ALTER TABLE tasks DROP COLUMN run_at")
    db_execute(db, "DROP INDEX tasks_rare")
    if is_postgres(db):
        db_execute(db, "DROP FUNCTION taskflow_claim_key")  # schema 7
        db_execute(db, "UPDATE taskflow_schema SET version = 1")
    else:
        db_execute(db, "PRAGMA user_version = 1")
    assert _schema_version(db) == 1 and "retried_as" not in _task_columns(db)

    tm2 = TaskManager(snapshot_db=db)
    async with started(tm2):
        assert {"retried_as", "run_at"} <= set(_task_columns(db))
        assert set(_task_columns(db)) == columns
        assert _has_index(db, "tasks_rare")
        if is_postgres(db):
            claims = "SELECT count(*) FROM pg_proc WHERE proname = 'taskflow_claim_key'"
            assert db_scalar(db, claims) == 1
        assert _schema_version(db) == current
        record = await tm2.fetch(task_id)
        assert record is not None and record.to_dict() == before
        assert record.status is TaskStatus.SUCCESS and record.tags == {"kept": "yes"}
        assert (await tm2.query())[1] == 1
        key = tm2.add_task(lambda: None, idempotency_key="after-migration")
        keyed = "SELECT count(*) FROM tasks WHERE idempotency_key = 'after-migration'"
        assert db_scalar(db, keyed) == 1  # claimed: written when added
        assert tm2.add_task(lambda: None, idempotency_key="after-migration") == key
    assert _schema_version(db) == current


# -- PostgreSQL: newer schemas, passwords, ?schema= ------------------------------------------


async def test_a_newer_postgres_schema_refuses_to_start_without_showing_the_password(
    pg_url: str, caplog: pytest.LogCaptureFixture
):
    password = urlsplit(pg_url).password
    assert password and len(password) >= 8
    async with started(TaskManager(snapshot_db=pg_url)):
        pass
    db_execute(pg_url, "UPDATE taskflow_schema SET version = 99")

    caplog.set_level(logging.DEBUG)
    caplog.clear()
    tm = TaskManager(snapshot_db=pg_url)
    with pytest.raises(TaskflowDatabaseError) as info:
        await tm.startup()
    message = str(info.value)
    assert "newer" in message and "\n" not in message
    assert urlsplit(pg_url).path.lstrip("/") in message  # names the database it refused
    assert password not in message
    assert password not in repr(info.value)
    assert password not in "".join(traceback.format_exception(info.value))

    # The same failure through an app's lifespan, which reports (and may log) it.
    app = FastAPI()
    TaskManager(snapshot_db=pg_url).init_app(app)
    with pytest.raises(LifespanFailed) as failed:
        async with lifespan(app):
            pass
    assert "newer" in str(failed.value) and password not in str(failed.value)

    for record in caplog.records:
        assert password not in record.getMessage(), record
        if record.exc_info:
            assert password not in "".join(traceback.format_exception(*record.exc_info))
    assert password not in caplog.text
    assert db_scalar(pg_url, "SELECT version FROM taskflow_schema") == 99  # left untouched


async def test_the_schema_in_the_url_holds_the_tables_and_keeps_managers_apart(pg_url: str):
    other = TaskManager(snapshot_db=pg_url + "?schema=other")
    second = TaskManager(snapshot_db=pg_url + "?schema=second")

    async def job(label):
        return label

    for tm in (other, second):
        tm.task(name="job")(job)
    async with started(other), started(second):
        a = other.add_task(job, "a", idempotency_key="same-key")
        b = second.add_task(job, "b", idempotency_key="same-key")
        assert a != b  # each schema has its own keys
        await reaches(other, a)
        await reaches(second, b)
        await other.flush()
        await second.flush()
        assert await other.fetch(b) is None and await second.fetch(a) is None
        assert [r.task_id for r in (await other.query())[0]] == [a]
        assert [r.task_id for r in (await second.query())[0]] == [b]
        assert other.metrics()["total"] == second.metrics()["total"] == 1

    tables = {
        r[0]
        for r in db_rows(
            pg_url,
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'other'",
        )
    }
    expected = {"tasks", "task_counts", "task_minutes", "audit", "revoked_sessions", "instances"}
    assert expected | {"taskflow_schema"} <= tables
    public = "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
    assert db_scalar(pg_url, public) == 0
    assert db_rows(pg_url, "SELECT task_id FROM other.tasks") == [(a,)]
    assert db_rows(pg_url, "SELECT task_id FROM second.tasks") == [(b,)]

    # A restart on one schema finds its own history only.
    again = TaskManager(snapshot_db=pg_url + "?schema=other")
    again.task(name="job")(job)
    async with started(again):
        assert (await again.fetch(a)).status is TaskStatus.SUCCESS
        assert await again.fetch(b) is None
        assert again.add_task(job, "a", idempotency_key="same-key") == a
        assert again.metrics()["total"] == 1


async def test_a_stalled_process_whose_tasks_were_claimed_does_not_start_them_too(
    snapshot_target: str,
):
    # A process stops heartbeating (a long pause, simulated by stopping its maintenance
    # loop); another claims its unfinished tasks and runs them. When the first resumes, it
    # learns it was declared dead and starts none of the claimed pending tasks itself.
    db = snapshot_target
    ran: list[tuple[str, int]] = []
    gate = asyncio.Event()

    def build(who: str) -> TaskManager:
        tm = TaskManager(
            snapshot_db=db,
            snapshot_interval=0.05,
            requeue_pending=True,
            heartbeat_timeout=0.3,
            max_concurrent_tasks=1,
        )

        @tm.task(name="step", persist=True)
        async def step(n: int) -> None:
            if n == 0:
                await gate.wait()  # holds the stalled process's only slot
            ran.append((who, n))

        return tm

    stalled, survivor = build("stalled"), build("survivor")
    async with started(stalled):
        ids = [stalled.add_task(stalled._registry["step"][0], n) for n in range(6)]
        await reaches(stalled, ids[0], "running")
        await stalled.flush()
        stalled._maintenance.cancel()  # the pause: no more heartbeats
        async with started(survivor):
            await until(
                lambda: {"survivor"} == {w for w, n in ran if n} and len(ran) == 5,
                timeout=15,
                what="the survivor to run the five pending tasks",
            )
            # The stalled process resumes.
            stalled._maintenance = asyncio.create_task(stalled._maintain())
            await until(
                lambda: all(stalled.get(i).status.value != "pending" for i in ids[1:]),
                what="the stalled process to give its pending tasks up",
            )
            gate.set()
            await asyncio.sleep(0.3)
    counted = collections.Counter(n for _, n in ran)
    assert all(counted[n] == 1 for n in range(1, 6)), ran  # each pending task ran once
    assert {w for w, n in ran if n} == {"survivor"}


def test_workers_starting_together_on_a_new_sqlite_file_all_start(tmp_path):
    """uvicorn --workers N on a file that does not exist yet: every worker creates the schema
    and switches the file to WAL at once. SQLite does not wait for the switch (no busy
    timeout there), so a worker failed its start-up with "database is locked" and uvicorn
    stopped them all (seen in CI). Twelve processes, released together, must all start."""
    import subprocess
    import sys
    import textwrap
    import time

    db, go = tmp_path / "tasks.db", tmp_path / "go"
    script = textwrap.dedent(
        f"""
        import asyncio, os, sys, time
        sys.path.insert(0, {str(Path(__file__).resolve().parents[1] / "taskflow_vendor")!r})
        import taskflow

        async def main():
            while not os.path.exists({str(go)!r}):
                time.sleep(0.001)
            time.sleep(int(sys.argv[1]) * 0.02)  # in a staggered wave, as workers come up
            tm = taskflow.TaskManager(snapshot_db={str(db)!r}, snapshot_interval=0.01)
            await tm.startup()
            print("started", flush=True)
            await asyncio.sleep(1.0)  # writing heartbeats while the others start
            await tm.shutdown()

        asyncio.run(main())
        """
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(n)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for n in range(12)
    ]
    time.sleep(1.0)  # every interpreter imported taskflow and waits
    go.touch()
    results = [p.communicate(timeout=120) for p in procs]
    failed = [err.decode()[-500:] for (out, err) in results if b"started" not in out]
    assert not failed, failed
