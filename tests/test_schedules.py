"""Periodic tasks: every occurrence runs once, across processes sharing the database.

Two managers on one database stand for two workers (or hosts, on PostgreSQL): each
occurrence of a schedule must run exactly once between them, as an ordinary tracked task.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
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


# -- pause, resume, run now; the admin API ----------------------------------------------


async def test_pause_holds_for_every_process_and_restarts_resume_runs_the_next_only(
    snapshot_target,
):
    runs: list = []
    first, second = _manager(snapshot_target, runs, "a"), _manager(snapshot_target, runs, "b")
    async with started(first), started(second):
        await until(lambda: len(runs) >= 2, what="two occurrences")
        await first.pause_schedule("heartbeat_report")
        await asyncio.sleep(EVERY * 2)  # the other process hears of it within a tick
        paused_at = len(runs)
        await asyncio.sleep(EVERY * 5)
        assert len(runs) == paused_at, "no occurrence starts while paused, in either process"
        listed = (await second.list_schedules())[0]
        assert listed["paused"] is True and listed["next_run"] is None
    third = _manager(snapshot_target, runs, "c")
    async with started(third):  # a restart: still paused
        await asyncio.sleep(EVERY * 4)
        assert len(runs) == paused_at
        await third.resume_schedule("heartbeat_report")
        await until(lambda: len(runs) > paused_at, what="the next occurrence after resume")
        resumed = [slot for who, slot in runs[paused_at:]]
        assert min(resumed) * EVERY >= time.time() - EVERY * 3, "no late run of a paused one"
        listed = (await third.list_schedules())[0]
        assert listed["paused"] is False and listed["next_run"] is not None
        assert listed["rule"] == f"every {EVERY:g} s"


async def test_the_admin_api_lists_pauses_resumes_and_runs_a_schedule_now(storage_target):
    from apps.engine_support import lifespan, reaches, serve
    from fastapi import FastAPI
    from taskflow import TaskAdmin

    tm = TaskManager(snapshot_db=storage_target, snapshot_interval=0.05)
    ran: list = []

    @tm.schedule(every=3600, catch_up=False, name="nightly_cleanup")
    async def cleanup():
        ran.append(1)

    app = FastAPI()
    TaskAdmin(app, tm)
    async with lifespan(app), serve(app) as http:
        await asyncio.sleep(0.2)
        assert ran == [], "catch_up=False: the occurrence missed before start is skipped"
        [listed] = (await http.get("/tasks/schedules")).json()
        assert listed["name"] == "nightly_cleanup" and listed["rule"] == "every 1 h"
        assert listed["paused"] is False and listed["last_run"] is None

        response = await http.post("/tasks/schedules/nightly_cleanup/run")
        assert response.status_code == 200, response.text
        task_id = response.json()["task_id"]
        record = await reaches(tm, task_id, "success")
        assert record.tags == {"schedule": "nightly_cleanup", "trigger": "manual"}
        [listed] = (await http.get("/tasks/schedules")).json()
        assert (listed["last_task_id"], listed["last_status"]) == (task_id, "success")

        paused = await http.post("/tasks/schedules/nightly_cleanup/pause")
        assert paused.status_code == 200 and paused.json()["state"]["paused"] is True
        resumed = await http.post("/tasks/schedules/nightly_cleanup/resume")
        assert resumed.json()["state"]["paused"] is False
        assert (await http.post("/tasks/schedules/nope/pause")).status_code == 404
        cross = await http.post(
            "/tasks/schedules/nightly_cleanup/pause", headers={"Sec-Fetch-Site": "cross-site"}
        )
        assert cross.status_code == 403
        actions = [e["action"] for e in (await http.get("/tasks/audit")).json()]
        assert actions[:3] == ["schedule_resume", "schedule_pause", "schedule_run"]
    assert ran == [1]


def test_cron_occurrences_follow_the_zone_across_daylight_saving_changes():
    """09:00 in Berlin is 07:00 UTC in summer and 08:00 UTC in winter: the occurrences
    computed around both changes of 2026 (29 March, 25 October) move with the clock."""
    from datetime import datetime, timezone

    tm = TaskManager()

    @tm.schedule(cron="0 9 * * *", timezone="Europe/Berlin")
    def morning():
        return None

    [schedule] = tm._schedules
    assert schedule.rule == "cron 0 9 * * * (Europe/Berlin)"

    def utc(*parts):
        return datetime(*parts, tzinfo=timezone.utc).timestamp()

    def iso(ts):
        return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M")

    assert iso(schedule.next_after(utc(2026, 3, 27, 12))) == "2026-03-28 08:00"  # CET
    assert iso(schedule.next_after(utc(2026, 3, 28, 12))) == "2026-03-29 07:00"  # CEST
    assert iso(schedule.latest(utc(2026, 3, 29, 7, 30))) == "2026-03-29 07:00"
    assert iso(schedule.next_after(utc(2026, 10, 24, 12))) == "2026-10-25 08:00"  # CET again
    assert iso(schedule.latest(utc(2026, 10, 25, 7, 59))) == "2026-10-24 07:00"


def test_three_uvicorn_workers_fire_each_second_once_in_all(snapshot_target, tmp_path):
    """`uvicorn --workers 3` on one database, every=1 s, for 10 s: 10 ± 1 runs in all,
    never two for one occurrence (the complaint about repeat_every and friends)."""
    import os
    import signal
    import socket

    import httpx
    from apps.engine_support import wait_until

    ran = tmp_path / "ran.txt"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(ROOT / "taskflow_vendor"), str(ROOT / "tests" / "apps")]),
        TASKFLOW_TEST_DB=str(snapshot_target),
        TASKFLOW_TEST_RAN=str(ran),
        TASKFLOW_TEST_EVERY="1",
    )
    cmd = [sys.executable, "-m", "uvicorn", "schedule_app:app", "--workers", "3"]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    log = tmp_path / "uvicorn.out"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        pids = set()

        def three_workers():
            assert proc.poll() is None, log.read_text()
            with contextlib.suppress(httpx.HTTPError):
                pids.add(httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json()["pid"])
            return len(pids) >= 2  # the balancer reached several workers: all are up

        wait_until(three_workers, 60, "the workers to answer")
        time.sleep(1.5)  # every worker past its startup
        start = time.time()
        time.sleep(10)
        end = time.time()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    lines = [line.split() for line in ran.read_text().splitlines()]
    slots = collections.Counter(int(slot) for slot, _, _ in lines)
    assert max(slots.values()) == 1, f"an occurrence ran twice: {slots}"
    in_window = [float(t) for _, _, t in lines if start <= float(t) < end]
    assert 9 <= len(in_window) <= 11, (len(in_window), lines, log.read_text()[-3000:])
    assert len({pid for _, pid, _ in lines}) >= 1
