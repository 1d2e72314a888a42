"""Periodic tasks: every occurrence runs once, across processes sharing the database.

Two managers on one database stand for two workers (or hosts, on PostgreSQL): each
occurrence of a schedule must run exactly once between them, as an ordinary tracked task.
"""

from __future__ import annotations

import asyncio
import collections
import subprocess
import sys
import textwrap
import time
from datetime import timedelta
from pathlib import Path

import pytest
from apps.db_support import db_rows
from apps.engine_support import started, until
from taskflow import TaskManager

ROOT = Path(__file__).resolve().parents[1]
EVERY = 0.2


def _manager(db, runs, who):
    tm = TaskManager(snapshot_db=db, snapshot_interval=0.02)

    @tm.schedule(every=timedelta(seconds=EVERY), name="heartbeat_report")
    def report():
        runs.append((who, round(time.time() / EVERY)))

    return tm


async def test_each_occurrence_runs_once_across_processes_sharing_the_database(snapshot_target):
    runs: list = []
    first, second = _manager(snapshot_target, runs, "a"), _manager(snapshot_target, runs, "b")
    async with started(first), started(second):
        await asyncio.sleep(EVERY * 8)
        first._schedules.clear()  # stop firing, then let both write what they ran
        second._schedules.clear()
        await asyncio.sleep(0.2)
        await first.flush()
        await second.flush()
        page, total = await first.query(func_name="heartbeat_report", limit=100)
    claims = db_rows(snapshot_target, "SELECT occurrence, owner, task_id FROM schedule_runs")
    occurrences = collections.Counter(round(o / EVERY) for o, _, _ in claims)
    assert len(occurrences) >= 5, claims
    assert max(occurrences.values()) == 1, occurrences  # each occurrence claimed once
    assert len(runs) == len(claims)  # and run once: one run per claim, never twice
    assert {who for who, _ in runs} <= {"a", "b"}
    # Each run is an ordinary tracked task, under the id its claim names.
    assert {r.task_id for r in page} == {t for _, _, t in claims}
    assert all(r.status.value == "success" for r in page)


async def test_without_a_database_it_runs_once_per_process():
    runs: list = []
    first, second = _manager(None, runs, "a"), _manager(None, runs, "b")
    async with started(first), started(second):
        await asyncio.sleep(EVERY * 6)
    by_process = collections.Counter(who for who, _ in runs)
    assert by_process["a"] >= 3 and by_process["b"] >= 3


async def test_a_process_that_was_down_runs_at_most_one_missed_occurrence(tmp_path):
    db = tmp_path / "tasks.db"
    runs: list = []
    tm = TaskManager(snapshot_db=db, snapshot_interval=0.05)

    @tm.schedule(every=3600, name="hourly")
    def hourly():
        runs.append(time.time())

    async with started(tm):
        await until(lambda: len(runs) == 1, what="the missed occurrence to run once")
        await asyncio.sleep(0.3)
    assert len(runs) == 1  # this hour's occurrence, once; no backlog of earlier hours
    async with started(tm):  # a restart within the same hour: already claimed
        await asyncio.sleep(0.3)
    assert len(runs) == 1


async def test_run_on_startup_and_options_apply():
    runs: list = []
    tm = TaskManager()

    @tm.schedule(every=3600, run_on_startup=True, retries=2, delay=0)
    async def warm():
        runs.append(1)
        if len(runs) == 1:
            raise RuntimeError("first attempt fails")

    async with started(tm):
        await until(lambda: len(runs) == 2, what="the startup run and its retry")
    assert tm._registry["warm"][1].retries == 2


def test_bad_schedules_fail_at_definition():
    tm = TaskManager()
    with pytest.raises(ValueError, match="exactly one of every= and cron="):
        tm.schedule()
    with pytest.raises(ValueError, match="exactly one"):
        tm.schedule(every=1, cron="* * * * *")
    with pytest.raises(ValueError, match="every"):
        tm.schedule(every=0)
    with pytest.raises(ValueError, match="timezone"):
        tm.schedule(every=1, timezone="Mars/Olympus")


def test_cron_without_croniter_names_the_fix():
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["croniter"] = None
        sys.path.insert(0, {str(ROOT / "taskflow_vendor")!r})
        import taskflow
        try:
            taskflow.TaskManager().schedule(cron="*/5 * * * *")
        except ImportError as exc:
            print(exc)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert "pip install croniter" in out.stdout, out.stderr
