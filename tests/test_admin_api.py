"""HTTP API of TaskAdmin: every route, filter and error code, through TestClient.

The app under test is real: a TaskManager running real (tiny) task functions,
mounted with TaskAdmin. Nothing of taskflow is mocked; waits poll with deadlines.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import random
import re
import threading
import time
import urllib.parse
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import httpx
import pytest
import taskflow
from apps.db_support import db_execute, is_postgres
from apps.engine_support import reaches, started, wait_until
from fastapi import FastAPI
from fastapi.testclient import TestClient
from taskflow import TaskAdmin, TaskManager, task_log

UTC = timezone.utc
PEER_FIELDS = {
    "task_id",
    "func_name",
    "status",
    "created_at",
    "start_time",
    "end_time",
    "duration",
    "retries_used",
    "error",
    "logs",
    "stacktrace",
    "tags",
}
FINAL = {"success", "failed", "cancelled", "interrupted"}


# --------------------------------------------------------------------------- task functions


def ok(x=1, **kwargs):
    task_log("ok ran")
    return x


def boom(message="boom"):
    raise RuntimeError(message)


def hold(gate):
    """Runs until the test's gate opens (set at teardown at the latest)."""
    gate.wait(30)


async def anoop():
    return None


async def afail():
    raise ValueError("async failure")


FUNCS = (ok, boom, hold, anoop, afail)


# --------------------------------------------------------------------------- helpers


def status_of(env, task_id):
    record = env.tm.get(task_id)
    return record.status.value if record is not None else None


def wait_status(env, task_id, *statuses, timeout=10.0):
    wanted = set(statuses) or FINAL
    wait_until(lambda: status_of(env, task_id) in wanted, timeout, f"{task_id} in {wanted}")
    return status_of(env, task_id)


def run(env, func, *args, **kwargs):
    """Enqueue a task and wait until it is final; returns its id."""
    task_id = env.tm.add_task(func, *args, **kwargs)
    wait_status(env, task_id)
    return task_id


def run_many(env, func, n):
    ids = [env.tm.add_task(func) for _ in range(n)]
    wait_until(lambda: all(status_of(env, i) in FINAL for i in ids), 30, f"{n} tasks to finish")
    return ids


def age(tm, task_id, days):
    """Move a finished task's timestamps ``days`` into the past (test data, not a mock).

    ``get()`` hands out a copy of a finished record, so the aged copy is put back
    in the store's frozen form.
    """
    record = tm.get(task_id)
    shift = days * 86400
    record.created -= shift
    if record.started is not None:
        record.started -= shift
    if record.ended is not None:
        record.ended -= shift
    tm._store.records[task_id] = taskflow._freeze(record)


def detail_of(response):
    body = response.json()
    assert set(body) == {"detail"}, body
    return body["detail"]


@pytest.fixture
def make(tmp_path):
    """Factory: a started app (TestClient entered) with TaskAdmin mounted on a fresh manager.

    ``env.close()`` shuts that app down early (a "restart" builds another on the same file).
    ``db``: a file name in tmp_path, a SQLite path or a PostgreSQL URL (``snapshot_target``);
    a test that takes ``snapshot_target`` names it before ``make``, so that its apps are
    shut down before its database goes.
    """
    envs = []

    def build(*, db=None, manager=None, path="/tasks", client_kwargs=None, **admin_kwargs):
        manager_kwargs = {"shutdown_timeout": 2.0, **(manager or {})}
        if db:
            manager_kwargs["snapshot_db"] = db if is_postgres(db) else str(tmp_path / db)
        tm = TaskManager(**manager_kwargs)
        for func in FUNCS:
            tm.task()(func)
        app = FastAPI()
        TaskAdmin(app, tm, path=path, **admin_kwargs)
        gate = threading.Event()
        stack = contextlib.ExitStack()
        stack.callback(gate.set)  # runs first: lets held tasks end before shutdown
        client = TestClient(app, raise_server_exceptions=False, **(client_kwargs or {}))
        stack.enter_context(client)
        stack.callback(gate.set)
        env = SimpleNamespace(tm=tm, app=app, c=client, gate=gate, path=path, close=stack.close)
        envs.append(env)
        return env

    yield build
    for env in reversed(envs):
        env.close()


@pytest.fixture
def env(make):
    return make()


@pytest.fixture
def both(storage_target, make):
    """The same app in every query mode: records in memory, or a SQLite or PostgreSQL
    snapshot_db (``storage_target``)."""
    return make(db=storage_target)


# --------------------------------------------------------------------------- list


def test_list_is_newest_first_with_peer_fields(both):
    env = both
    ids = [run(env, ok, n) for n in range(3)]
    r = env.c.get("/tasks")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert [t["task_id"] for t in body] == ids[::-1]
    for task in body:
        # The list leaves out logs and traceback; every other peer field is there.
        assert PEER_FIELDS - {"logs", "stacktrace"} <= set(task)
        assert "retry_of" in task
        assert "args" not in task and "kwargs" not in task
        assert task["created_at"].endswith("+00:00")
        assert task["status"] == "success"
    assert r.headers["X-Total-Count"] == "3"
    assert "link" not in r.headers


def test_list_items_are_exactly_the_records_brief_dicts(both):
    """With snapshot_db a page is built straight from the file's rows, without
    records; it must be what ``to_dict(brief=True)`` gives, field for field."""
    env = both
    tagged = env.tm.with_options(tags={"tenant": "acme", "plan": "pro"}).add_task(ok, 1)
    wait_status(env, tagged)
    ids = [
        tagged,
        run(env, boom, "it broke"),
        run(env, anoop),
    ]
    retry = env.c.post(f"/tasks/{ids[1]}/retry").json()["task_id"]
    wait_status(env, retry)
    held = env.tm.add_task(hold, env.gate)
    wait_status(env, held, "running")
    body = env.c.get("/tasks").json()
    assert [t["task_id"] for t in body] == [held, retry, *ids[::-1]]
    for item in body:
        assert item == env.tm.get(item["task_id"]).to_dict(brief=True)
    assert body[1]["retry_of"] == ids[1] and body[-1]["tags"] == {"tenant": "acme", "plan": "pro"}


def test_list_status_filter_is_repeatable(both):
    env = both
    good = run(env, ok)
    bad = run(env, boom)
    live = env.tm.add_task(hold, env.gate)
    wait_status(env, live, "running")

    r = env.c.get("/tasks", params=[("status", "success"), ("status", "failed")])
    assert r.status_code == 200
    assert {t["task_id"] for t in r.json()} == {good, bad}
    assert r.headers["X-Total-Count"] == "2"

    r = env.c.get("/tasks", params={"status": "running"})
    assert [t["task_id"] for t in r.json()] == [live]
    r = env.c.get("/tasks", params={"status": "cancelled"})
    assert r.json() == [] and r.headers["X-Total-Count"] == "0"


@pytest.mark.parametrize("bad", ["bogus", "SUCCESS", "", "success,failed"])
def test_list_unknown_status_is_422(env, bad):
    r = env.c.get("/tasks", params={"status": bad})
    assert r.status_code == 422
    assert "detail" in r.json()


def test_list_func_name_filter(both):
    env = both
    run(env, ok)
    failed = run(env, boom)
    r = env.c.get("/tasks", params={"func_name": "boom"})
    assert [t["task_id"] for t in r.json()] == [failed]
    assert env.c.get("/tasks", params={"func_name": "nope"}).json() == []


def test_list_q_matches_id_prefix_and_name(both):
    env = both
    a = run(env, ok)
    b = run(env, boom)
    by_id = env.c.get("/tasks", params={"q": a[:8]}).json()
    assert [t["task_id"] for t in by_id] == [a]
    by_name = env.c.get("/tasks", params={"q": "oo"}).json()  # part of "boom"
    assert [t["task_id"] for t in by_name] == [b]
    assert env.c.get("/tasks", params={"q": "zzz-no-such"}).json() == []


def test_list_since_and_until_bound_created_at(both):
    env = both
    old = run(env, ok)
    boundary = datetime.now(UTC)
    wait_until(lambda: time.time() > boundary.timestamp() + 0.001, what="clock to move")
    new = run(env, ok)

    since = env.c.get("/tasks", params={"since": boundary.isoformat()})
    assert since.status_code == 200
    assert [t["task_id"] for t in since.json()] == [new]
    until = env.c.get("/tasks", params={"until": boundary.isoformat()})
    assert [t["task_id"] for t in until.json()] == [old]
    both = env.c.get(
        "/tasks",
        params={
            "since": (boundary - timedelta(hours=1)).isoformat(),
            "until": boundary.isoformat(),
        },
    )
    assert [t["task_id"] for t in both.json()] == [old]
    assert env.c.get("/tasks", params={"since": "not-a-date"}).status_code == 422


def test_list_limit_default_100_max_1000(both):
    env = both
    run_many(env, anoop, 1001)
    r = env.c.get("/tasks")
    assert len(r.json()) == 100
    assert r.headers["X-Total-Count"] == "1001"
    r = env.c.get("/tasks", params={"limit": 1000})
    assert r.status_code == 200 and len(r.json()) == 1000
    for bad in (0, -1, 1001, 10**6, "ten", "1.5"):
        r = env.c.get("/tasks", params={"limit": bad})
        assert r.status_code == 422, bad
        assert "detail" in r.json()


def test_list_offset_and_link_next_page_through_everything(both):
    env = both
    ids = [run(env, ok, n) for n in range(5)]
    run(env, boom)  # filtered out below: the Link must keep the filter
    seen = []
    url = "/tasks?status=success&limit=2"
    pages = 0
    while url:
        r = env.c.get(url)
        assert r.status_code == 200
        assert r.headers["X-Total-Count"] == "5"
        seen += [t["task_id"] for t in r.json()]
        link = r.headers.get("link")
        pages += 1
        if link is None:
            url = None
        else:
            match = re.fullmatch(r'<([^>]+)>;\s*rel="next"', link)
            assert match, link
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(match.group(1)).query)
            assert query["status"] == ["success"] and query["limit"] == ["2"]
            url = match.group(1)
        assert pages <= 5
    assert pages == 3
    assert seen == ids[::-1]
    r = env.c.get("/tasks", params={"status": "success", "offset": 4, "limit": 2})
    assert [t["task_id"] for t in r.json()] == [ids[0]]
    assert "link" not in r.headers
    assert env.c.get("/tasks", params={"offset": -1}).status_code == 422


def test_list_sort(both):
    env = both
    b = run(env, boom)
    a = run(env, ok)
    by_name = env.c.get("/tasks", params={"sort": "func_name"}).json()
    assert [t["task_id"] for t in by_name] == [b, a]
    by_name_desc = env.c.get("/tasks", params={"sort": "-func_name"}).json()
    assert [t["task_id"] for t in by_name_desc] == [a, b]
    oldest_first = env.c.get("/tasks", params={"sort": "created_at"}).json()
    assert [t["task_id"] for t in oldest_first] == [b, a]
    by_status = env.c.get("/tasks", params={"sort": "status"}).json()
    assert [t["status"] for t in by_status] == ["failed", "success"]
    for key in ("duration", "-duration", "-status"):
        assert env.c.get("/tasks", params={"sort": key}).status_code == 200
    for bad in ("bogus", "--created_at", "created_at;drop", "task_id"):
        assert env.c.get("/tasks", params={"sort": bad}).status_code == 422, bad


# --------------------------------------------------------------------------- detail


def test_detail_has_logs_traceback_and_attempts(both):
    env = both
    good = run(env, ok, 7)
    bad = run(env, boom, "kaput")
    r = env.c.get(f"/tasks/{good}")
    assert r.status_code == 200
    task = r.json()
    assert PEER_FIELDS | {"retry_of"} <= set(task)
    assert task["status"] == "success" and task["error"] is None
    assert any("ok ran" in line for line in task["logs"])
    failed = env.c.get(f"/tasks/{bad}").json()
    assert failed["status"] == "failed"
    assert "kaput" in failed["error"]
    assert "RuntimeError" in failed["stacktrace"]
    assert failed["attempts"] and "kaput" in failed["attempts"][-1]["error"]


@pytest.mark.parametrize("task_id", ["no-such-task", "00000000-0000-4000-8000-000000000000"])
def test_detail_unknown_is_404(env, task_id):
    r = env.c.get(f"/tasks/{task_id}")
    assert r.status_code == 404
    assert detail_of(r)


def test_detail_found_in_database_after_restart(snapshot_target, make):
    first = make(db=snapshot_target)
    task_id = run(first, boom)
    first.close()  # shut the first app down; its rows stay in the database
    second = make(db=snapshot_target)
    r = second.c.get(f"/tasks/{task_id}")
    assert r.status_code == 200 and r.json()["status"] == "failed"


# --------------------------------------------------------------------------- metrics


def test_metrics_keys_and_values(env):
    for _ in range(3):
        run(env, ok)
    run(env, boom)
    cancelled = env.tm.add_task(hold, env.gate)
    wait_status(env, cancelled, "running")
    assert env.c.post(f"/tasks/{cancelled}/cancel").status_code == 200
    env.gate.set()  # a sync task is cancelled once its thread returns
    wait_status(env, cancelled, "cancelled")

    r = env.c.get("/tasks/metrics")
    assert r.status_code == 200
    m = r.json()
    for key in ("total", "pending", "running", "success", "failed", "interrupted", "cancelled"):
        assert isinstance(m[key], int), key
    assert (m["total"], m["success"], m["failed"], m["cancelled"]) == (5, 3, 1, 1)
    assert m["pending"] == m["running"] == m["interrupted"] == 0
    # A 0-1 fraction, not a percentage: 3 of 4 finished-and-judged tasks succeeded.
    assert m["success_rate"] == pytest.approx(0.75)
    assert isinstance(m["avg_duration_seconds"], (int, float)) and m["avg_duration_seconds"] >= 0
    duration = m["duration"]
    assert {"p50", "p95"} <= set(duration)
    assert 0 <= duration["p50"] <= duration["p95"]
    funcs = m["functions"]
    assert funcs["ok"]["total"] == 3 and funcs["ok"]["success"] == 3
    assert funcs["ok"]["success_rate"] == pytest.approx(1.0)
    assert funcs["boom"]["failed"] == 1 and funcs["boom"]["success_rate"] == pytest.approx(0.0)
    assert {"p50", "p95"} <= set(funcs["ok"])
    series = m["per_minute"]
    assert len(series) == 60
    minutes = [datetime.fromisoformat(p["minute"]) for p in series]
    assert minutes == sorted(minutes)
    assert sum(p["success"] for p in series) == 3
    assert sum(p["failed"] for p in series) == 1


def test_metrics_success_rate_on_empty_manager(env):
    m = env.c.get("/tasks/metrics").json()
    assert m["total"] == 0 and 0.0 <= m["success_rate"] <= 1.0


# --------------------------------------------------------------------------- cancel


def test_cancel_pending_and_running(make):
    env = make(manager={"max_concurrent_tasks": 1})
    running = env.tm.add_task(hold, env.gate)
    wait_status(env, running, "running")
    pending = env.tm.add_task(ok)
    assert status_of(env, pending) == "pending"

    r = env.c.post(f"/tasks/{pending}/cancel")
    assert r.status_code == 200 and r.json()["task"]["status"] == "cancelled"
    assert r.json()["task_id"] == pending
    r = env.c.post(f"/tasks/{running}/cancel")
    # A running sync task: its thread cannot be stopped, so it says so until it returns.
    assert r.status_code == 200 and r.json()["task"]["status"] == "running"
    assert r.json()["task"]["cancel_requested"] is True
    env.gate.set()
    wait_status(env, running, "cancelled")
    assert env.c.get(f"/tasks/{pending}").json()["status"] == "cancelled"
    assert env.c.get(f"/tasks/{pending}").json()["start_time"] is None  # it never started


def test_cancel_409_when_not_pending_or_running(env):
    done = run(env, ok)
    failed = run(env, boom)
    for task_id in (done, failed):
        r = env.c.post(f"/tasks/{task_id}/cancel")
        assert r.status_code == 409
        assert detail_of(r)
    live = env.tm.add_task(hold, env.gate)
    wait_status(env, live, "running")
    assert env.c.post(f"/tasks/{live}/cancel").status_code == 200
    env.gate.set()
    wait_status(env, live, "cancelled")
    assert env.c.post(f"/tasks/{live}/cancel").status_code == 409  # already cancelled


def test_cancel_unknown_is_404(env):
    r = env.c.post("/tasks/no-such-task/cancel")
    assert r.status_code == 404 and detail_of(r)


# --------------------------------------------------------------------------- retry


def test_retry_failed_task_links_the_new_one(env):
    failed = run(env, boom, "again")
    r = env.c.post(f"/tasks/{failed}/retry")
    assert r.status_code == 200
    body = r.json()
    assert body["retry_of"] == failed and body["task_id"] != failed
    wait_status(env, body["task_id"])
    new = env.c.get(f"/tasks/{body['task_id']}").json()
    assert new["retry_of"] == failed and new["func_name"] == "boom"
    assert "again" in new["error"]  # same arguments


def test_retry_409_when_succeeded_or_live_and_allowed_when_cancelled(env):
    done = run(env, ok)
    live = env.tm.add_task(hold, env.gate)
    wait_status(env, live, "running")
    r = env.c.post(f"/tasks/{done}/retry")
    assert r.status_code == 409 and detail_of(r)
    assert env.c.post(f"/tasks/{live}/retry").status_code == 409
    assert env.c.post(f"/tasks/{live}/cancel").status_code == 200
    env.gate.set()
    wait_status(env, live, "cancelled")
    # A cancelled task can be run again, through the API as through TaskManager.retry().
    r = env.c.post(f"/tasks/{live}/retry")
    assert r.status_code == 200 and r.json()["retry_of"] == live
    assert r.json()["task"]["task_id"] == r.json()["task_id"]
    assert env.c.post("/tasks/no-such-task/retry").status_code == 404


# --------------------------------------------------------------------------- bulk replay


def test_bulk_retry_replays_only_failed_ones(env):
    failed = [run(env, boom) for _ in range(2)]
    good = run(env, ok)
    r = env.c.post("/tasks/bulk-retry", json={"task_ids": [*failed, good, "no-such-task"]})
    assert r.status_code == 200
    body = r.json()
    assert body["dispatched"] == 2 and body["skipped"] == 2
    assert {x["original_task_id"] for x in body["results"]} == set(failed)
    for x in body["results"]:
        assert env.c.get(f"/tasks/{x['new_task_id']}").json()["retry_of"] == x["original_task_id"]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"task_ids": "abc"},
        {"task_ids": [1, 2]},
        {"task_ids": None},
        [],
        "task_ids",
        {"task_ids": [f"id-{i}" for i in range(1001)]},  # bounded
    ],
)
def test_bulk_retry_rejects_bad_bodies(env, body):
    r = env.c.post("/tasks/bulk-retry", json=body)
    assert r.status_code == 422
    assert "detail" in r.json()


def test_bulk_retry_accepts_1000_ids(env):
    r = env.c.post("/tasks/bulk-retry", json={"task_ids": [f"id-{i}" for i in range(1000)]})
    assert r.status_code == 200 and r.json()["skipped"] == 1000


def test_retry_failed_windows_and_func_name(env):
    recent = run(env, boom)
    old = run(env, afail)
    ancient = run(env, boom)
    run(env, ok)
    age(env.tm, old, 1)  # 24 h ago: outside 6h, inside 2d
    age(env.tm, ancient, 5)  # outside 2d

    def replayed(**params):
        r = env.c.post("/tasks/retry-failed", params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["dispatched"] == len(body["results"])
        # Earlier calls' replays fail too and are recent: look at the three originals only.
        return {x["original_task_id"] for x in body["results"]} & {recent, old, ancient}

    # include_replayed: each call looks at the same originals again.
    assert replayed(include_replayed=True) == {recent}  # default since=6h
    assert replayed(since="6h", include_replayed=True) == {recent}
    assert replayed(since="2d", include_replayed=True) == {recent, old}
    assert replayed(since="all", func_name="afail", include_replayed=True) == {old}
    assert replayed(since="all", include_replayed=True) == {recent, old, ancient}


def test_replay_never_repeats_work(env):
    charges = []

    def charge(n):
        charges.append(n)
        if len(charges) == 1:
            raise RuntimeError("gateway timeout")  # the first attempt fails, the replay succeeds

    failing = run(env, charge, 1)
    always = [run(env, boom) for _ in range(3)]
    first = env.c.post("/tasks/retry-failed").json()
    assert first["dispatched"] == 4  # the four failures, once each
    ids = {r["original_task_id"]: r["new_task_id"] for r in first["results"]}
    for new_id in ids.values():
        wait_status(env, new_id)
    assert charges == [1, 1]
    # Clicking again: the charge, replayed with success, is never run again; failures that
    # keep failing are replayed once per new failure, not doubled.
    for _ in range(3):
        again = env.c.post("/tasks/retry-failed").json()
        assert failing not in {r["original_task_id"] for r in again["results"]}
        assert again["dispatched"] <= 3
        for r in again["results"]:
            wait_status(env, r["new_task_id"])
    assert charges == [1, 1]
    original = env.c.get(f"/tasks/{failing}").json()
    assert original["retried_as"] == ids[failing]
    # An explicit retry of that id still works, answering with the live retry if any.
    explicit = env.c.post(f"/tasks/{failing}/retry")
    assert explicit.status_code == 200 and explicit.json()["task"]["retry_of"] == failing
    assert always[0] in ids


@pytest.mark.parametrize(
    "since", ["", "6", "h", "6x", "-1h", "1.5h", "6 h", "six", "all ", "999999d", "6H", "1w"]
)
def test_retry_failed_bad_since_is_400_with_a_string_detail(env, since):
    r = env.c.post("/tasks/retry-failed", params={"since": since})
    assert r.status_code == 400, r.text
    assert isinstance(r.json()["detail"], str)


def test_retry_failed_is_bounded(env):
    run_many(env, afail, 1005)
    r = env.c.post("/tasks/retry-failed", params={"since": "all"})
    assert r.status_code == 200
    body = r.json()
    assert 0 < body["dispatched"] <= 1000
    assert len(body["results"]) == body["dispatched"]


# --------------------------------------------------------------------------- delete history


def test_delete_history_removes_old_finished_only(env):
    old_ok = run(env, ok)
    old_failed = run(env, boom)
    fresh = run(env, ok)
    live = env.tm.add_task(hold, env.gate)
    wait_status(env, live, "running")
    for task_id in (old_ok, old_failed):
        age(env.tm, task_id, 3)
    env.tm.get(live).created -= 10 * 86400  # a live task is never deleted, however old

    r = env.c.delete("/tasks/history", params={"value": 2, "unit": "day"})
    assert r.status_code == 200
    assert r.json() == {"deleted": 2}
    assert env.c.get(f"/tasks/{old_ok}").status_code == 404
    assert env.c.get(f"/tasks/{old_failed}").status_code == 404
    assert env.c.get(f"/tasks/{fresh}").status_code == 200
    assert env.c.get(f"/tasks/{live}").json()["status"] == "running"
    assert env.c.get("/tasks/metrics").json()["total"] == 2


@pytest.mark.parametrize(("value", "unit"), [(1, "min"), (48, "hour"), (1, "day")])
def test_delete_history_units(env, value, unit):
    keep = run(env, ok)
    gone = run(env, ok)
    age(env.tm, gone, 3)
    r = env.c.delete("/tasks/history", params={"value": value, "unit": unit})
    assert r.status_code == 200 and r.json()["deleted"] == 1
    assert env.c.get(f"/tasks/{keep}").status_code == 200
    assert env.c.get(f"/tasks/{gone}").status_code == 404


def test_delete_history_in_database(snapshot_target, make):
    first = make(db=snapshot_target)
    gone = run(first, ok)
    keep = run(first, boom)
    first.close()
    # Age one row in the database (test data): it ended three days ago.
    aged = db_execute(
        snapshot_target,
        "UPDATE tasks SET created_at = created_at - 259200, start_time = start_time - 259200,"
        " end_time = end_time - 259200 WHERE task_id = ?",
        (gone,),
    )
    assert aged == 1
    env = make(db=snapshot_target)
    assert env.c.get(f"/tasks/{gone}").status_code == 200
    r = env.c.delete("/tasks/history", params={"value": 1, "unit": "day"})
    assert r.status_code == 200 and r.json()["deleted"] == 1
    assert env.c.get(f"/tasks/{gone}").status_code == 404
    assert {t["task_id"] for t in env.c.get("/tasks").json()} == {keep}
    assert env.c.get("/tasks/metrics").json()["total"] == 1


@pytest.mark.parametrize(
    "params",
    [
        {"value": 10**7, "unit": "day"},
        {"value": 10**30, "unit": "day"},
        {"value": 999_999_999_999, "unit": "min"},
        {"value": 1_000_000, "unit": "day"},
        {"value": 1_000_000, "unit": "hour"},
        {"value": 0, "unit": "day"},
        {"value": -1, "unit": "day"},
        {"value": "1e9", "unit": "day"},
        {"value": "abc", "unit": "day"},
        {"value": 1, "unit": "week"},
        {"value": 1, "unit": ""},
        {"value": 1},
        {"unit": "day"},
    ],
)
def test_delete_history_absurd_windows_are_refused(env, params):
    # Values of the wrong type or range are FastAPI's 422 (a list of errors); well-typed
    # values that mean nothing (unit=week, a window past 100 years) are 400 with a string.
    run(env, ok)
    r = env.c.delete("/tasks/history", params=params)
    typed = isinstance(params.get("value"), int) and 1 <= params["value"] <= 1_000_000
    if typed and "unit" in params:
        assert r.status_code == 400, r.text
        assert isinstance(r.json()["detail"], str)
    else:
        assert r.status_code == 422, r.text
        assert isinstance(r.json()["detail"], list)
    assert env.c.get("/tasks/metrics").json()["total"] == 1


def test_error_answers_are_declared_in_the_openapi_schema(env):
    paths = env.c.get("/openapi.json").json()["paths"]
    for path, method in (("/tasks/retry-failed", "post"), ("/tasks/history", "delete")):
        assert "400" in paths[path][method]["responses"], path


def test_delete_history_largest_windows_still_work(env):
    run(env, ok)
    for params in ({"value": 36500, "unit": "day"}, {"value": 1_000_000, "unit": "min"}):
        r = env.c.delete("/tasks/history", params=params)
        assert r.status_code == 200, (params, r.text)
        assert r.json() == {"deleted": 0}


# --------------------------------------------------------------------------- audit


def login(client, username="admin", password="secret"):
    r = client.post(
        "/tasks/auth/login",
        data={"username": username, "password": password},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    return r


def test_audit_entries_carry_the_username(storage_target, make):
    env = make(
        db=storage_target, auth=[("alice", "pw-alice"), ("bob", "pw-bob")], secret_key="k" * 32
    )
    failed = run(env, boom)
    login(env.c, "alice", "pw-alice")
    assert env.c.post(f"/tasks/{failed}/retry").status_code == 200
    login(env.c, "bob", "pw-bob")
    assert env.c.delete("/tasks/history", params={"value": 1, "unit": "day"}).status_code == 200
    entries = env.c.get("/tasks/audit").json()
    by_action = {e["action"]: e for e in entries}
    assert by_action["retry"]["actor"] == "alice"
    assert by_action["retry"]["task_id"] == failed
    assert by_action["delete_history"]["actor"] == "bob"
    for entry in entries:
        assert {"timestamp", "actor", "action", "task_id", "detail"} <= set(entry)
    # Newest first.
    stamps = [datetime.fromisoformat(e["timestamp"]) for e in entries]
    assert stamps == sorted(stamps, reverse=True)


def test_audit_survives_a_restart_with_snapshot_db(snapshot_target, make):
    first = make(db=snapshot_target, auth=("admin", "secret"), secret_key="s" * 32)
    failed = run(first, boom)
    login(first.c)
    assert first.c.post(f"/tasks/{failed}/retry").status_code == 200
    assert first.c.post("/tasks/retry-failed", params={"since": "all"}).status_code == 200
    first.close()

    second = make(db=snapshot_target, auth=("admin", "secret"), secret_key="s" * 32)
    login(second.c)
    entries = second.c.get("/tasks/audit").json()
    actions = [(e["actor"], e["action"]) for e in entries]
    assert ("admin", "retry") in actions
    assert ("admin", "retry_failed") in actions
    assert next(e for e in entries if e["action"] == "retry")["task_id"] == failed


def test_audit_pagination_limits(storage_target, make):
    env = make(db=storage_target)
    assert env.c.get("/tasks/audit", params={"limit": 1001}).status_code == 422
    assert env.c.get("/tasks/audit", params={"limit": 0}).status_code == 422
    assert env.c.get("/tasks/audit", params={"offset": -1}).status_code == 422
    assert env.c.get("/tasks/audit").json() == []


# --------------------------------------------------------------------------- health


def test_health_ok_when_running(env):
    run(env, ok)
    r = env.c.get("/tasks/health")
    assert r.status_code == 200
    assert r.json()["status"] == "ok"


def test_health_503_when_most_recent_tasks_fail(env):
    run(env, ok)
    run_many(env, afail, 12)
    r = env.c.get("/tasks/health")
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == "degraded"
    assert body["failure_rate_15m"] > 0.5
    assert body["problems"]


def test_health_503_names_a_stuck_task(env):
    stuck = env.tm.add_task(hold, env.gate)
    wait_status(env, stuck, "running")
    assert env.c.get("/tasks/health").status_code == 200
    env.tm.get(stuck).started -= 3 * 3600  # test data: "running" for three hours, no timeout
    r = env.c.get("/tasks/health")
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == "degraded"
    assert stuck in body["stuck_task_ids"]


def test_health_503_when_manager_not_started():
    tm = TaskManager()
    app = FastAPI()
    TaskAdmin(app, tm)
    client = TestClient(app)  # no `with`: the lifespan, and so the manager, never starts
    r = client.get("/tasks/health")
    assert r.status_code == 503
    assert r.json()["status"] == "degraded"


# --------------------------------------------------------------------------- prometheus

SAMPLE = re.compile(
    r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\[\\n"])*",?)*\})?'
    r" [-+]?(\d+(\.\d*)?([eE][-+]?\d+)?|NaN|[-+]?Inf)$"
)


def test_prometheus_text_format(make):
    env = make()
    run(env, ok)
    run(env, boom)
    r = env.c.get("/tasks/metrics/prometheus")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    assert "version=0.0.4" in r.headers["content-type"]
    text = r.text
    assert text.endswith("\n")
    typed = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            typed.add(line.split()[2])
        elif line.startswith("# HELP "):
            continue
        else:
            assert SAMPLE.match(line), f"not a valid sample line: {line!r}"
            assert line.split("{")[0].split(" ")[0] in typed, f"sample before its TYPE: {line}"
    assert 'taskflow_tasks{status="success"} 1' in text
    assert 'taskflow_tasks{status="failed"} 1' in text


def test_prometheus_escapes_label_values(make):
    env = make()
    odd = env.tm.task(name='we"ird\\na\nme')(boom)
    run(env, odd)
    text = env.c.get("/tasks/metrics/prometheus").text
    for line in text.splitlines():
        if not line.startswith("#"):
            assert SAMPLE.match(line), f"not a valid sample line: {line!r}"
    assert 'func_name="we\\"ird\\\\na\\nme"' in text


# --------------------------------------------------------------------------- export.csv


def test_export_csv(make):
    env = make()
    formula = env.tm.task(name="=HYPERLINK(evil)")(boom)
    good = run(env, ok)
    bad = run(env, formula, "-2+3")
    r = env.c.get("/tasks/export.csv")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert {row["task_id"] for row in rows} == {good, bad}
    assert {"task_id", "func_name", "status", "created_at", "duration", "error"} <= set(rows[0])
    by_id = {row["task_id"]: row for row in rows}
    # Cells that a spreadsheet would run as formulas are defused.
    assert not by_id[bad]["func_name"].startswith("=")
    failed_only = env.c.get("/tasks/export.csv", params={"status": "failed"}).text
    only_failed = list(csv.DictReader(io.StringIO(failed_only)))
    assert [row["task_id"] for row in only_failed] == [bad]
    assert env.c.get("/tasks/export.csv", params={"status": "nope"}).status_code == 422


# --------------------------------------------------------------------------- display_func_args


def test_arguments_hidden_by_default(env):
    task_id = run(env, ok, "secret-arg", token="hunter2")
    for body in (env.c.get(f"/tasks/{task_id}").text, env.c.get("/tasks").text):
        assert "secret-arg" not in body and "hunter2" not in body
        assert '"args"' not in body and '"kwargs"' not in body


def test_arguments_shown_with_display_func_args(make):
    env = make(display_func_args=True)
    task_id = run(env, ok, "visible-arg", token="tok", obj=object())
    task = env.c.get(f"/tasks/{task_id}").json()
    assert task["args"] == ["visible-arg"]
    assert task["kwargs"]["token"] == "tok"
    assert "object" in task["kwargs"]["obj"]  # not JSON: shown as its repr
    (listed,) = env.c.get("/tasks").json()
    assert listed["args"] == ["visible-arg"] and listed["kwargs"] == task["kwargs"]


def test_list_shows_arguments_with_display_func_args_from_the_file_too(snapshot_target, make):
    env = make(display_func_args=True, db=snapshot_target)
    task_id = run(env, ok, "visible-arg", token="tok")
    (listed,) = env.c.get("/tasks").json()
    assert listed == env.tm.get(task_id).to_dict(include_args=True, brief=True)
    assert listed["args"] == ["visible-arg"] and listed["kwargs"] == {"token": "tok"}


@pytest.mark.parametrize("show", [False, True])
def test_dashboard_tells_the_page_about_display_func_args(make, show):
    env = make(display_func_args=show, path="/admin/tasks")
    html = env.c.get("/admin/tasks/dashboard").text
    assert f'data-show-args="{int(show)}"' in html
    assert 'data-base="/admin/tasks"' in html
    assert 'data-stream="/admin/tasks/dashboard/stream"' in html
    assert 'data-auth="0"' in html


# --------------------------------------------------------------------------- functions


def test_functions_lists_registered_functions(env):
    r = env.c.get("/tasks/functions")
    assert r.status_code == 200
    names = {f["name"] for f in r.json()}
    assert {"ok", "boom", "hold", "anoop", "afail"} <= names


# --------------------------------------------------------------------------- TaskAdmin set-up


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"path": "tasks"}, "path"),
        ({"path": "/tasks/"}, "path"),
        ({"path": ""}, "path"),
        ({"path": "/ta sks"}, "path"),
        ({"path": None}, "path"),
        ({"token_expiry": -1}, "token_expiry"),
        ({"token_expiry": 0}, "token_expiry"),
        ({"token_expiry": "3600"}, "token_expiry"),
        ({"token_expiry": 1.5}, "token_expiry"),
        ({"auth": "admin:secret"}, "auth"),
        ({"auth": ("admin",)}, "auth"),
        ({"auth": ("admin", "")}, "auth"),
        ({"auth": [("a", "b"), "c"]}, "auth"),
        ({"auth": []}, "auth"),
        ({"auth": {"admin": "secret"}}, "auth"),
        ({"auth": object()}, "auth"),
        ({"poll_interval": 0}, "poll_interval"),
        ({"poll_interval": -5}, "poll_interval"),
        ({"poll_interval": float("nan")}, "poll_interval"),
        ({"retention_days": -1}, "retention_days"),
        ({"retention_days": 0}, "retention_days"),
        ({"retention_days": "30"}, "retention_days"),
        ({"title": ""}, "title"),
        ({"title": 42}, "title"),
        ({"display_func_args": "yes"}, "display_func_args"),
        ({"auto_install": 1}, "auto_install"),
        ({"secret_key": "short"}, "secret_key"),
        ({"secret_key": 12345678901234567890}, "secret_key"),
    ],
)
def test_taskadmin_rejects_bad_arguments_naming_the_parameter(kwargs, param):
    app = FastAPI()
    with pytest.raises((TypeError, ValueError)) as info:
        TaskAdmin(app, TaskManager(), **kwargs)
    assert param in str(info.value)
    assert [r.path for r in app.routes] == [r.path for r in FastAPI().routes]  # nothing mounted


@pytest.mark.parametrize("path", ["/..", "/.", "/tasks/..", "/./tasks"])
def test_taskadmin_rejects_dot_segments_in_path(path):
    with pytest.raises(ValueError, match="path"):
        TaskAdmin(FastAPI(), TaskManager(), path=path)


def test_taskadmin_rejects_wrong_app_and_manager():
    with pytest.raises(TypeError, match="app"):
        TaskAdmin(object(), TaskManager())
    with pytest.raises(TypeError, match="task_manager"):
        TaskAdmin(FastAPI(), object())


def test_custom_path_moves_every_route(make):
    env = make(path="/admin/tasks")
    task_id = run(env, ok)
    assert env.c.get("/admin/tasks").json()[0]["task_id"] == task_id
    assert env.c.get(f"/admin/tasks/{task_id}").status_code == 200
    assert env.c.get("/admin/tasks/metrics").status_code == 200
    assert env.c.get("/admin/tasks/dashboard").status_code == 200
    assert env.c.get("/tasks").status_code == 404


def test_retention_days_overrides_the_managers():
    tm = TaskManager(retention_days=365)
    app = FastAPI()
    tm.task()(ok)
    TaskAdmin(app, tm, retention_days=1)
    assert tm.retention_days == 1
    with TestClient(app) as client:
        assert client.get("/tasks/health").status_code == 200
        task_id = tm.add_task(ok)
        wait_until(lambda: tm.get(task_id).status.value == "success")
        age(tm, task_id, 3)
    # A restart applies retention: 3 days is past the overriding 1 day (not the 365 given).
    with TestClient(app) as client:
        assert client.get(f"/tasks/{task_id}").status_code == 404


@pytest.mark.parametrize("days", [1e9, 1e10, 10**12])
def test_huge_retention_days_is_refused_or_harmless(days):
    tm = TaskManager()
    app = FastAPI()
    try:
        TaskAdmin(app, tm, retention_days=days)
    except (TypeError, ValueError) as exc:  # refused at construction, naming the parameter
        assert "retention_days" in str(exc)
        return
    with TestClient(app) as client:  # or accepted: then the app must start and work
        assert client.get("/tasks/health").status_code == 200


def test_taskadmin_and_init_app_start_the_manager_once(caplog):
    tm = TaskManager()
    tm.task()(ok)
    app = FastAPI()
    TaskAdmin(app, tm)
    tm.init_app(app)
    with caplog.at_level(logging.WARNING), TestClient(app) as client:
        task_id = tm.add_task(ok)
        wait_until(lambda: tm.get(task_id).status.value == "success")
        assert client.get("/tasks/health").status_code == 200
    assert not [r for r in caplog.records if "already running" in r.getMessage()]


def test_two_admins_on_one_app_start_the_manager_once(caplog):
    tm = TaskManager()
    tm.task()(ok)
    app = FastAPI()
    TaskAdmin(app, tm, path="/tasks")
    TaskAdmin(app, tm, path="/ops/tasks")
    with caplog.at_level(logging.WARNING), TestClient(app) as client:
        task_id = tm.add_task(ok)
        wait_until(lambda: tm.get(task_id).status.value == "success")
        assert client.get(f"/tasks/{task_id}").status_code == 200
        assert client.get(f"/ops/tasks/{task_id}").status_code == 200
    assert not [r for r in caplog.records if "already running" in r.getMessage()]


def test_taskadmin_with_an_app_lifespan_that_starts_the_manager_itself(caplog):
    tm = TaskManager()
    tm.task()(ok)
    order = []

    @contextlib.asynccontextmanager
    async def lifespan(app):
        order.append("app up")
        await tm.startup()
        yield
        await tm.shutdown()
        order.append("app down")

    app = FastAPI(lifespan=lifespan)
    TaskAdmin(app, tm)
    with caplog.at_level(logging.WARNING), TestClient(app) as client:
        task_id = tm.add_task(ok)
        wait_until(lambda: tm.get(task_id).status.value == "success")
        assert client.get("/tasks/health").status_code == 200
    assert order == ["app up", "app down"]
    assert not [r for r in caplog.records if "already running" in r.getMessage()]


def test_openapi_has_the_taskflow_tag_and_typed_models(env):
    schema = env.c.get("/openapi.json").json()
    paths = schema["paths"]
    ours = {p: ops for p, ops in paths.items() if p.startswith("/tasks")}
    expected = {
        "/tasks",
        "/tasks/{task_id}",
        "/tasks/metrics",
        "/tasks/{task_id}/cancel",
        "/tasks/{task_id}/retry",
        "/tasks/bulk-retry",
        "/tasks/retry-failed",
        "/tasks/history",
        "/tasks/audit",
        "/tasks/health",
        "/tasks/metrics/prometheus",
    }
    assert expected <= set(ours)
    for path, ops in ours.items():
        for method, op in ops.items():
            assert "taskflow" in op.get("tags", []), (method, path)
    # Dashboard, stream and login are pages, not API operations.
    assert not [p for p in ours if "dashboard" in p or "/auth/" in p]
    listing = paths["/tasks"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert listing["type"] == "array" and "$ref" in listing["items"]
    params = {p["name"] for p in paths["/tasks"]["get"]["parameters"]}
    assert {"status", "func_name", "q", "since", "until", "limit", "offset", "sort"} <= params


# --------------------------------------------------------------------------- no 500s

ODD = [
    "",
    " ",
    "-1",
    "0",
    "1e3",
    "NaN",
    "inf",
    "99999999999999999999999999",
    "\x00",
    "%00",
    "ü",
    "😀",
    "'; DROP TABLE tasks;--",
    "%",
    "_",
    "\\",
    "../../etc/passwd",
    "a" * 5000,
    "2024-13-45",
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-14:00",
    "1970-01-01",
    "true",
    "[]",
    "null",
    "6h",
    "all",
    "success",
    "-created_at",
]


def fuzz(client, rng, rounds):
    failures = []
    routes = [
        (
            "GET",
            "/tasks",
            ["status", "func_name", "q", "since", "until", "limit", "offset", "sort"],
        ),
        ("GET", "/tasks/export.csv", ["status", "func_name", "q", "since", "until", "limit"]),
        ("GET", "/tasks/audit", ["limit", "offset"]),
        ("POST", "/tasks/retry-failed", ["since", "func_name"]),
        ("DELETE", "/tasks/history", ["value", "unit"]),
    ]
    for _ in range(rounds):
        method, url, names = rng.choice(routes)
        params = [(rng.choice(names), rng.choice(ODD)) for _ in range(rng.randint(0, 4))]
        r = client.request(method, url, params=params)
        if r.status_code >= 500:
            failures.append((method, url, params, r.status_code))
    for raw in ("q=%ED%A0%80", "since=%FF", "status=%C0%AF", "limit=%00", "q=%", "sort=%2D"):
        for url in ("/tasks", "/tasks/export.csv"):
            r = client.get(f"{url}?{raw}")
            if r.status_code >= 500:
                failures.append((url, raw, r.status_code))
    for value in ODD + ["a/b", "x" * 101, "%2e%2e", "?", "#"]:
        quoted = urllib.parse.quote(value, safe="")
        for method, suffix in (("GET", ""), ("POST", "/cancel"), ("POST", "/retry")):
            r = client.request(method, f"/tasks/{quoted}{suffix}")
            if r.status_code >= 500:
                failures.append((method, value, r.status_code))
    bodies = [
        b"",
        b"{",
        b"null",
        b"[]",
        b'{"task_ids": {}}',
        b'{"task_ids": [null]}',
        b'{"task_ids": ["' + b"x" * 100_000 + b'"]}',
        b"[" * 100_000,
        b"\xff\xfe",
        json.dumps({"task_ids": ["a"] * 999, "extra": 1}).encode(),
    ]
    for body in bodies:
        for ctype in (
            "application/json",
            "application/json; charset=latin-1",
            "text/plain",
            "application/x-www-form-urlencoded",
            "",
        ):
            r = client.post("/tasks/bulk-retry", content=body, headers={"content-type": ctype})
            if r.status_code >= 500:
                failures.append(("bulk-retry", body[:40], ctype, r.status_code))
    return failures


def test_no_malformed_input_gives_500(storage_target, make):
    env = make(db=storage_target)
    run(env, ok)
    run(env, boom)
    failures = fuzz(env.c, random.Random(1234), 300)
    assert not failures, failures[:10]


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded"])
def test_bulk_retry_non_utf8_body_is_not_500(env, ctype):
    r = env.c.post("/tasks/bulk-retry", content=b"\xff\xfe", headers={"content-type": ctype})
    assert r.status_code < 500
    assert r.status_code in (400, 415, 422)


@pytest.mark.parametrize("how", ["root_path", "mounted"])
async def test_link_is_relative_and_keeps_the_prefix(how):
    tm = TaskManager()
    inner = FastAPI()
    TaskAdmin(inner, tm)
    if how == "mounted":
        app = FastAPI()
        app.mount("/svc", inner)
        prefix = "/svc"
    else:
        app, prefix = inner, ""
    async with started(tm):
        ids = [tm.add_task(ok) for _ in range(5)]
        for task_id in ids:
            await reaches(tm, task_id)
        transport = httpx.ASGITransport(app=app, root_path="/svc" if how == "root_path" else "")
        async with httpx.AsyncClient(transport=transport, base_url="http://upstream:8101") as http:
            r = await http.get(f"{prefix}/tasks", params={"limit": 2})
    link = r.headers["link"]
    assert link.startswith("</svc/tasks?") and link.endswith('>; rel="next"'), link
    assert "upstream" not in link and "8101" not in link
    assert "offset=2" in link and "limit=2" in link
