"""The query layer: list filters, order, pagination and totals; metrics; bounded memory.

Each runs in memory, on SQLite and on PostgreSQL (``storage_target``), or on both
databases (``snapshot_target``) when it needs a restart."""

from __future__ import annotations

import asyncio
import random
import sys
import textwrap
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from apps.engine_support import client, lifespan, reaches, started, until
from fastapi import FastAPI
from taskflow import TaskAdmin, TaskManager, TaskStatus

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def make_manager(storage_target: str | None):
    def make(**options) -> TaskManager:
        if storage_target is not None:
            options.setdefault("snapshot_db", storage_target)
        return TaskManager(**options)

    return make


async def _populate(tm: TaskManager) -> dict[str, list[str]]:
    """Tasks of three functions ending success/failed/cancelled, created in a known order."""

    @tm.task(name="send-email")
    async def send_email(n):
        return n

    @tm.task(name="resize-image")
    def resize(n):
        raise ValueError(n)

    @tm.task(name="nightly-report")
    async def report():
        return None

    ids: dict[str, list[str]] = {"all": [], "email": [], "resize": [], "cancelled": []}
    for n in range(5):
        for func, key in ((send_email, "email"), (resize, "resize")):
            task_id = tm.add_task(func, n)
            ids[key].append(task_id)
            ids["all"].append(task_id)
            await reaches(tm, task_id)
            await asyncio.sleep(0.002)  # distinct creation times
    cancelled = tm.add_task(report)  # before startup: cancel leaves it never run
    tm.cancel(cancelled)
    ids["cancelled"].append(cancelled)
    ids["all"].append(cancelled)
    return ids


def _q_matches(record, needle: str) -> bool:
    """What ``q=needle`` (lower-case) finds, written out plainly: an id prefix, or part of
    the function name, the error or a tag value."""
    return (
        record.task_id.startswith(needle)
        or needle in record.func_name.lower()
        or needle in (record.error or "").lower()
        or any(needle in value.lower() for value in (record.tags or {}).values())
    )


async def _query_ids(tm: TaskManager, **filters) -> tuple[list[str], int]:
    page, total = await tm.query(**filters)
    return [r.task_id for r in page], total


async def test_query_filters_order_pagination_and_total(make_manager):
    tm = make_manager()
    async with started(tm):
        ids = await _populate(tm)
        newest_first = list(reversed(ids["all"]))

        assert await _query_ids(tm) == (newest_first, 11)
        assert await _query_ids(tm, status="success") == (list(reversed(ids["email"])), 5)
        assert await _query_ids(tm, status=TaskStatus.FAILED) == (list(reversed(ids["resize"])), 5)
        got, total = await _query_ids(tm, status=["failed", "cancelled"])
        assert total == 6 and set(got) == set(ids["resize"] + ids["cancelled"])
        assert await _query_ids(tm, func_name="send-email") == (list(reversed(ids["email"])), 5)
        assert await _query_ids(tm, func_name="nope") == ([], 0)
        assert await _query_ids(tm, status="running") == ([], 0)

        # text search: the start of an id, or part of a function name
        target = ids["resize"][2]
        got, _ = await _query_ids(tm, q=target[:13])
        assert target in got and all(i.startswith(target[:13]) for i in got)
        got, total = await _query_ids(tm, q="image")
        assert total == 5 and set(got) == set(ids["resize"])
        got, total = await _query_ids(tm, q="RESIZE")
        assert total == 5, "the name search is case-insensitive"
        assert (await _query_ids(tm, q="100%_"))[1] == 0  # LIKE wildcards are literal

        # created since/until (bounds between two creation times)
        records = {r.task_id: r for r in (await tm.query(limit=1000))[0]}

        def between(a: int, b: int) -> datetime:
            first, second = records[ids["all"][a]].created_at, records[ids["all"][b]].created_at
            return first + (second - first) / 2

        got, total = await _query_ids(tm, since=between(3, 4))
        assert got == newest_first[: 11 - 4] and total == 7
        got, total = await _query_ids(tm, until=between(4, 5))
        assert got == newest_first[11 - 5 :] and total == 5
        got, total = await _query_ids(
            tm, since=between(3, 4), until=between(6, 7), status="success"
        )
        assert total == 2 and set(got) == {ids["all"][4], ids["all"][6]}
        naive = between(3, 4).replace(tzinfo=None)  # naive datetimes are read as UTC
        assert (await _query_ids(tm, since=naive))[1] == 7

        # pagination: pages partition the result; total is the whole count
        pages = []
        for offset in range(0, 11, 4):
            page, total = await _query_ids(tm, limit=4, offset=offset)
            assert total == 11
            pages += page
        assert pages == newest_first
        assert await _query_ids(tm, limit=4, offset=100) == ([], 11)

        # other orders
        got, _ = await _query_ids(tm, sort="created_at")
        assert got == ids["all"]
        got, _ = await _query_ids(tm, sort="func_name", limit=1000)
        names = [records[i].func_name for i in got]
        assert names == sorted(names)


async def test_query_rejects_bad_arguments(make_manager):
    tm = make_manager()
    async with started(tm):
        with pytest.raises(ValueError, match="status"):
            await tm.query(status="done")
        with pytest.raises(ValueError, match="sort"):
            await tm.query(sort="colour")
        with pytest.raises(ValueError, match="limit"):
            await tm.query(limit=0)
        with pytest.raises(ValueError, match="offset"):
            await tm.query(offset=-1)
        with pytest.raises(TypeError, match="since"):
            await tm.query(since="yesterday")


async def test_since_and_until_a_records_own_created_at_include_it(make_manager):
    tm = make_manager()
    async with started(tm):
        ids = [tm.add_task(print, n) for n in range(12)]
        for task_id in ids:
            await reaches(tm, task_id)
        missing = []
        for task_id in ids:
            created = tm.get(task_id).created_at
            if task_id not in (await _query_ids(tm, since=created, limit=1000))[0]:
                missing.append(("since", task_id))
            if task_id not in (await _query_ids(tm, until=created, limit=1000))[0]:
                missing.append(("until", task_id))
        assert missing == []


# -- metrics -------------------------------------------------------------------------

TOP_KEYS = {
    "total",
    "pending",
    "running",
    "success",
    "failed",
    "cancelled",
    "interrupted",
    "success_rate",
    "avg_duration_seconds",
    "duration",
    "functions",
    "per_minute",
}
FUNC_KEYS = {
    "total",
    "pending",
    "running",
    "success",
    "failed",
    "cancelled",
    "interrupted",
    "success_rate",
    "avg",
    "p50",
    "p95",
}


def _counts(metrics) -> dict[str, int]:
    keys = ("total", "pending", "running", "success", "failed", "cancelled", "interrupted")
    return {k: metrics[k] for k in keys}


async def test_metrics_keys_counts_rates_durations_and_per_minute(make_manager):
    tm = make_manager(max_concurrent_tasks=1)
    gate = asyncio.Event()

    @tm.task(name="blocker")
    async def blocker():
        await gate.wait()

    empty = tm.metrics()
    assert set(empty) >= TOP_KEYS and empty["total"] == 0 and empty["success_rate"] == 0

    async with started(tm):
        ids = await _populate(tm)
        running = tm.add_task(blocker)
        await reaches(tm, running, "running")
        pending = tm.add_task(blocker)
        await asyncio.sleep(0.01)
        metrics = tm.metrics()
        assert set(metrics) >= TOP_KEYS
        assert _counts(metrics) == {
            "total": 13,
            "pending": 1,
            "running": 1,
            "success": 5,
            "failed": 5,
            "cancelled": 1,
            "interrupted": 0,
        }
        assert metrics["success_rate"] == pytest.approx(0.5)
        d = metrics["duration"]
        assert {"min", "max", "avg", "p50", "p95"} <= set(d)
        assert 0 <= d["min"] <= d["p50"] <= d["p95"] <= d["max"]
        assert d["min"] <= d["avg"] <= d["max"]
        assert metrics["avg_duration_seconds"] == pytest.approx(d["avg"], abs=1e-6)

        functions = metrics["functions"]
        assert {"send-email", "resize-image", "nightly-report", "blocker"} <= set(functions)
        email = functions["send-email"]
        assert set(email) >= FUNC_KEYS
        assert (email["total"], email["success"], email["failed"]) == (5, 5, 0)
        assert email["success_rate"] == 1.0
        resize = functions["resize-image"]
        assert (resize["total"], resize["failed"], resize["success_rate"]) == (5, 5, 0.0)
        assert functions["nightly-report"]["cancelled"] == 1
        assert functions["blocker"]["running"] == 1 and functions["blocker"]["pending"] == 1

        per_minute = metrics["per_minute"]
        assert len(per_minute) == 60
        minutes = [datetime.fromisoformat(m["minute"]) for m in per_minute]
        assert all(m.tzinfo is not None for m in minutes)
        assert all(
            b - a == timedelta(minutes=1) for a, b in zip(minutes, minutes[1:], strict=False)
        )
        assert sum(m["success"] for m in per_minute) == 5
        assert sum(m["failed"] for m in per_minute) == 5

        tm.cancel(pending)
        gate.set()
        await reaches(tm, running)
        after = tm.metrics()
        assert (after["pending"], after["running"], after["cancelled"], after["success"]) == (
            0,
            0,
            2,
            6,
        )
    assert ids


async def test_metrics_count_interrupted_tasks(snapshot_target: str):
    db = snapshot_target
    tm = TaskManager(snapshot_db=db, shutdown_timeout=0.02)
    gate = asyncio.Event()

    async def stuck():
        await gate.wait()

    async with started(tm):
        await reaches(tm, tm.add_task(stuck), "running")
    tm2 = TaskManager(snapshot_db=db)
    async with started(tm2):
        metrics = tm2.metrics()
    assert metrics["interrupted"] == 1 and metrics["total"] == 1
    assert metrics["functions"]["stuck"]["interrupted"] == 1


async def test_metrics_and_query_cover_history_older_than_memory(snapshot_target: str):
    db = snapshot_target
    tm = TaskManager(snapshot_db=db, max_history=10)

    async def job(n):
        if n % 4 == 0:
            raise ValueError(n)

    async with started(tm):
        ids = [tm.add_task(job, n) for n in range(400)]
        await reaches(tm, ids[-1])
        await until(
            lambda: all(tm.get(i) is None or tm.get(i).status.is_final for i in ids),
            what="every task to finish",
        )
        in_memory = [i for i in ids if tm.get(i) is not None]
        assert len(in_memory) <= 10  # the newest finished ones only
        assert in_memory == ids[-len(in_memory) :]
        metrics = tm.metrics()
        assert (metrics["total"], metrics["success"], metrics["failed"]) == (400, 300, 100)
        page, total = await tm.query(status="failed", limit=10, offset=90)
        assert total == 100 and len(page) == 10
        oldest = (await tm.query(sort="created_at", limit=1))[0][0]
        assert oldest.task_id == ids[0] and oldest.status is TaskStatus.FAILED
        assert (await tm.fetch(ids[1])).status is TaskStatus.SUCCESS

    # After a restart nothing is loaded into memory, yet everything is counted and queryable.
    tm2 = TaskManager(snapshot_db=db, max_history=10)
    async with started(tm2):
        assert all(tm2.get(i) is None for i in ids)
        metrics = tm2.metrics()
        assert (metrics["total"], metrics["success"], metrics["failed"]) == (400, 300, 100)
        assert metrics["functions"]["job"]["total"] == 400
        assert (await tm2.query(limit=5))[1] == 400


async def test_memory_without_a_database_keeps_only_max_history_finished_records():
    tm = TaskManager(max_history=5)
    gate = asyncio.Event()

    async def job():
        return None

    async def live():
        await gate.wait()

    async with started(tm):
        long_running = tm.add_task(live)
        ids = [tm.add_task(job) for _ in range(50)]
        for task_id in ids:
            await until(
                lambda t=task_id: tm.get(t) is None or tm.get(t).status.is_final,
                what="a task to finish",
            )
        kept = [i for i in ids if tm.get(i) is not None]
        assert kept == ids[-5:]
        assert tm.get(long_running).status is TaskStatus.RUNNING  # live tasks are never evicted
        page, total = await tm.query(limit=100)
        assert total == 6 and {r.task_id for r in page} == set(kept) | {long_running}
        # The list holds the kept records; the counters count every task that ran.
        metrics = tm.metrics()
        assert metrics["success"] == 50 and metrics["running"] == 1
        assert metrics["total"] == 51
        gate.set()


async def test_metrics_after_a_requeueing_restart_count_each_task_once(snapshot_target: str):
    db = snapshot_target
    gate = asyncio.Event()

    async def blocker():
        await gate.wait()

    async def quick(n):
        return n

    tm = TaskManager(
        snapshot_db=db, requeue_pending=True, max_concurrent_tasks=1, shutdown_timeout=0.02
    )
    tm.task()(blocker)
    tm.task()(quick)
    async with started(tm):
        await reaches(tm, tm.add_task(blocker), "running")
        ids = [tm.add_task(quick, n) for n in range(3)]
    tm2 = TaskManager(snapshot_db=db, requeue_pending=True)
    tm2.task()(blocker)
    tm2.task()(quick)
    async with started(tm2):
        for task_id in ids:
            await reaches(tm2, task_id)
        assert _counts(tm2.metrics()) == {
            "total": 4,
            "pending": 0,
            "running": 0,
            "success": 3,
            "failed": 0,
            "cancelled": 0,
            "interrupted": 1,
        }


async def test_a_scraper_alone_sees_other_processes_tasks_within_poll_interval(tmp_path):
    # Two processes' managers share one file; nobody opens a dashboard on the first.
    db = tmp_path / "tasks.db"
    app = FastAPI()
    served = TaskManager(snapshot_db=db, snapshot_interval=0.05)
    TaskAdmin(app, served, poll_interval=0.5)
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        sys.path.insert(0, {str(ROOT / "taskflow_vendor")!r})
        from taskflow import TaskManager

        async def main():
            tm = TaskManager(snapshot_db={str(db)!r})
            await tm.startup()
            for n in range(7):
                tm.add_task(print, n)
            await asyncio.sleep(0.3)
            await tm.shutdown()

        asyncio.run(main())
        """
    )
    async with lifespan(app), client(app) as http:
        assert "taskflow_tasks{" in (await http.get("/tasks/metrics/prometheus")).text
        other = await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, stdout=asyncio.subprocess.DEVNULL
        )
        assert await other.wait() == 0
        started_at = time.monotonic()

        async def seen():
            text = (await http.get("/tasks/metrics/prometheus")).text
            return 'taskflow_tasks{status="success"} 7' in text

        await until(seen, timeout=5, what="the scraper to see the other process's 7 tasks")
        assert time.monotonic() - started_at < 0.5 + 1.5  # poll_interval, plus a turn or two
        listed = await http.get("/tasks")
        assert listed.headers["X-Total-Count"] == "7"
        assert (await http.get("/tasks/metrics")).json()["total"] == 7


async def test_q_matches_id_prefix_name_error_and_tag_values_the_same_everywhere(storage_target):
    tm = TaskManager(snapshot_db=storage_target)

    def send_invoice(n):
        if n == 2:
            raise RuntimeError("Card DECLINED by gateway")

    async with started(tm):
        ids = [
            tm.with_options(tags={"customer": "ACME corp"}).add_task(send_invoice, 1),
            tm.add_task(send_invoice, 2),
            tm.with_options(tags={"declined": "no"}).add_task(send_invoice, 3),
            tm.with_options(tags={"note": 'say "hi" \\ 50% ünï'}).add_task(send_invoice, 4),
        ]
        for task_id in ids:
            await reaches(tm, task_id)

        async def found(q):
            page, total = await tm.query(q=q)
            assert total == len(page)
            return {r.task_id for r in page}

        assert await found(ids[0][:8].upper()) == {ids[0]}  # id prefix, any case
        assert await found(ids[0][4:12]) == set()  # not the middle of an id
        assert await found("INVOICE") == set(ids)  # part of the function name
        assert await found('"hi" \\ 50%') == {ids[3]}  # quotes, backslash, % in a tag value
        assert await found("ünï") == {ids[3]}  # not ASCII
        assert await found("declined") == {ids[1]}  # the error; a tag *key* does not count
        assert await found("acme") == {ids[0]}  # a tag value
        assert await found("100%") == set()  # LIKE's wildcards are literal


async def test_q_counts_each_match_once_however_many_ways_it_matches(storage_target):
    """A database counts a search's total in parts (matching functions, rows with an error
    or tags, id prefixes): a task that matches in several ways must count once, and the
    total and page must be what a plain walk over every task finds."""
    tm = TaskManager(snapshot_db=storage_target)
    rng = random.Random(11)
    words = ["cafe", "feed", "bad", "ok", "Decaf"]

    def cafe_report(n):
        if n % 3 == 0:
            raise RuntimeError(f"{rng.choice(words)} {rng.choice(words)}")

    def send(n):
        if n % 4 == 0:
            raise ValueError(rng.choice(words))

    async with started(tm):
        ids = []
        for n in range(80):
            func = cafe_report if n % 2 else send
            tags = {"k": rng.choice(words)} if n % 5 == 0 else None
            ids.append(tm.with_options(tags=tags).add_task(func, n))
        records = [await reaches(tm, task_id) for task_id in ids]
        await tm.flush()

        newest_first = sorted(records, key=lambda r: r.created_at, reverse=True)
        needles = ["cafe", "CAFE", "fe", "de", "d", "a", "bad", "send", "zzz", ids[7][:2]]
        for needle in needles:
            for status in (None, "failed"):
                expected = [
                    r.task_id
                    for r in newest_first
                    if _q_matches(r, needle.lower()) and status in (None, r.status.value)
                ]
                got, total = await _query_ids(tm, q=needle, status=status, limit=1000)
                assert (total, got) == (len(expected), expected), (needle, status)
                got, total = await _query_ids(tm, q=needle, status=status, limit=3, offset=2)
                assert (total, got) == (len(expected), expected[2:5]), (needle, status)


async def test_counts_never_go_negative_and_always_sum_to_the_total(tmp_path):
    # The stream's refresh raced live counting: a task that moved while the counters were
    # re-read counted down from zero (running -1). Tasks flow while refresh() runs on.
    db = tmp_path / "tasks.db"
    tm = TaskManager(snapshot_db=db, snapshot_interval=0.05)
    rng = random.Random(7)

    async def work(n):
        await asyncio.sleep(rng.random() / 200)
        if n % 3 == 0:
            raise RuntimeError("one in three fails")

    statuses = ("pending", "running", "success", "failed", "cancelled", "interrupted")
    bad: list[dict] = []

    def check():
        m = tm.metrics()
        if any(m[s] < 0 for s in statuses) or sum(m[s] for s in statuses) != m["total"]:
            bad.append({s: m[s] for s in (*statuses, "total")})

    async def refresher():
        while True:
            await tm.refresh()
            check()
            await asyncio.sleep(0)

    async with started(tm):
        spinning = asyncio.create_task(refresher())
        ids = []
        for n in range(600):
            ids.append(tm.add_task(work, n))
            if n % 7 == 0:
                await asyncio.sleep(0.001)
            check()
        for task_id in ids:
            await reaches(tm, task_id)
            check()
        spinning.cancel()
    assert not bad, bad[:5]


async def _churn(tm, rng, ok, bad, *, steps, check, every, tags=lambda: None):
    """Records come, fail (added from a worker thread), are cancelled, retried and pruned,
    at random; ``check()`` every ``every`` steps and at the end. ``tags()`` tags new tasks."""
    for step in range(steps):
        roll = rng.random()
        if roll < 0.45:
            await reaches(tm, tm.with_options(tags=tags()).add_task(ok))
        elif roll < 0.65:
            await reaches(tm, await asyncio.to_thread(tm.add_task, bad))
        elif roll < 0.75:
            tm.cancel(tm.with_options(tags=tags()).add_task(ok))
        elif roll < 0.85:
            failed, _ = await tm.query(status="failed", limit=1)
            if failed:
                await reaches(tm, await tm.retry(failed[0].task_id))
        elif roll < 0.9:
            await tm.prune(older_than=timedelta(seconds=0.05))
        else:
            await asyncio.sleep(0.001)
        if step % every == 0:
            await check()
    await check()


async def test_a_status_filtered_page_in_memory_counts_exactly_what_is_kept():
    """Without a database, a page filtered by status takes its total from counts kept as
    records come, change and go (eviction, pruning, cancel, retry, threads): they must
    equal a full count of what memory holds, and the page the full walk's first rows."""
    tm = TaskManager(max_history=40)
    rng = random.Random(7)
    gate = asyncio.Event()

    @tm.task(name="ok")
    async def ok():
        return None

    @tm.task(name="bad")
    def bad():
        raise ValueError("bad")

    @tm.task(name="wait")
    async def wait():
        await gate.wait()

    async def check():
        kept = list(reversed([tm.get(i) for i in list(tm._store.records)]))
        for status in TaskStatus:
            expected = [r.task_id for r in kept if r.status is status]
            got, total = await _query_ids(tm, status=status.value, limit=7)
            assert total == len(expected), status
            assert got == expected[:7], status
        both = [r.task_id for r in kept if r.status.value in ("failed", "cancelled")]
        got, total = await _query_ids(tm, status=["failed", "cancelled"], limit=5, offset=3)
        assert (got, total) == (both[3:8], len(both))

    async with started(tm):
        waiting = [tm.add_task(wait) for _ in range(3)]
        await _churn(tm, rng, ok, bad, steps=200, check=check, every=25)
        gate.set()
        for task_id in waiting:
            await reaches(tm, task_id)
        await check()


@pytest.mark.parametrize("max_history", [25, 60])
async def test_a_search_in_memory_finds_what_a_walk_over_every_kept_record_finds(
    monkeypatch, max_history
):
    """Without a database a search counts the records of matching functions from kept
    counts and looks only at records with an error or tags: as records come, fail, log,
    are retried, cancelled, evicted and pruned (some from worker threads), its page and
    total must be a full walk's, within the window (20 here; 60 kept is beyond twice the
    window, where the full walk itself is used)."""
    import taskflow

    monkeypatch.setattr(taskflow, "_SEARCH_WINDOW", 20)
    tm = TaskManager(max_history=max_history)
    rng = random.Random(5)
    colours = ["red", "green", "Redwood"]
    gate = asyncio.Event()

    @tm.task(name="ok_job")
    async def ok_job():
        taskflow.task_log(rng.choice(colours))

    @tm.task(name="fail_job")
    def fail_job():
        raise ValueError(rng.choice(["nope", "wrong green", "no"]))

    @tm.task(name="wait_job")
    async def wait_job():
        await gate.wait()

    async def check():
        kept = [tm.get(i) for i in reversed(list(tm._store.records))][:20]
        for needle in ["ok", "job", "nope", "green", "red", "re", "wait", "zz", "e"]:
            expected = [r.task_id for r in kept if _q_matches(r, needle)]
            got, total = await _query_ids(tm, q=needle.upper(), limit=4, offset=1)
            assert (got, total) == (expected[1:5], len(expected)), needle
            got, total = await _query_ids(tm, q=needle, sort="created_at", limit=100)
            assert (got, total) == (expected[::-1], len(expected)), needle

    def tagged():
        return {"colour": rng.choice(colours)} if rng.random() < 0.4 else None

    async with started(tm):
        waiting = [tm.with_options(tags={"colour": "Redwood"}).add_task(wait_job)]
        waiting += [tm.add_task(wait_job) for _ in range(2)]
        await _churn(tm, rng, ok_job, fail_job, steps=240, check=check, every=20, tags=tagged)
        gate.set()
        for task_id in waiting:
            await reaches(tm, task_id)
        await check()


async def test_q_searches_the_newest_window_of_tasks_within_since_and_until(
    storage_target, monkeypatch
):
    """A search has no index, so it looks at the newest tasks only (taskflow._SEARCH_WINDOW,
    10,000; 20 here), the same way in memory and in each database; since/until move the
    window back to older tasks, and the list says which window it searched."""
    import taskflow

    monkeypatch.setattr(taskflow, "_SEARCH_WINDOW", 20)
    tm = TaskManager(snapshot_db=storage_target, max_history=100)

    async def job(n):
        return n

    async with started(tm):
        ids = []
        for n in range(50):
            ids.append(tm.add_task(job, n))
            await asyncio.sleep(0.002)  # distinct creation times
        for task_id in ids:
            await reaches(tm, task_id)
        newest_first = list(reversed(ids))

        got, total = await _query_ids(tm, q="job", limit=100)
        assert (got, total) == (newest_first[:20], 20)
        got, total = await _query_ids(tm, q="job", limit=5, offset=15)
        assert (got, total) == (newest_first[15:20], 20)
        got, total = await _query_ids(tm, q="job", sort="created_at", limit=3)
        assert (got, total) == (ids[30:33], 20), "oldest first within the same window"
        assert (await _query_ids(tm, q=ids[5][:12]))[1] == 0, "outside the window"

        records = {r.task_id: r for r in (await tm.query(limit=1000))[0]}
        until = records[ids[9]].created_at
        got, total = await _query_ids(tm, q=ids[5][:12], until=until)
        assert (got, total) == ([ids[5]], 1), "until moves the window back"
        got, total = await _query_ids(tm, q="job", until=until, limit=100)
        assert (got, total) == (newest_first[40:], 10)
        since = records[ids[35]].created_at
        got, total = await _query_ids(tm, q="job", since=since, limit=100)
        assert (got, total) == (newest_first[:15], 15)
        # Filters other than the time range do not move it: 20 newest, then filtered.
        assert (await _query_ids(tm, q="job", status="failed"))[1] == 0

        app = FastAPI()
        TaskAdmin(app, tm)
        async with client(app) as http:
            response = await http.get("/tasks", params={"q": "job"})
            assert response.headers["X-Search-Window"] == "20"
            assert response.headers["X-Total-Count"] == "20"
            assert "X-Search-Window" not in (await http.get("/tasks")).headers
