"""Crash and multi-process durability under a real uvicorn (tests/apps/crash_app.py).

SIGKILL while tasks are pending and running, restart, and prove that no persisted
task is lost: every task reaches a final status exactly once. Then two workers
(`uvicorn --workers 2`) share one file after a crash: each requeued task runs in
exactly one process, and "database is locked" never shows up.
"""

from __future__ import annotations

import collections
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from apps.engine_support import wait_until

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
APPS = ROOT / "tests" / "apps"
FINAL = {"success", "failed", "cancelled", "interrupted"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _query(db: Path, sql: str, params=()) -> list[tuple]:
    conn = sqlite3.connect(db, timeout=30)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def _statuses(db: Path) -> dict[str, str]:
    return dict(_query(db, "SELECT task_id, status FROM tasks"))


class Server:
    """One `uvicorn crash_app:app` process (or a supervisor with workers)."""

    def __init__(self, tmp: Path, name: str, *, slow: float, limit: int, workers: int = 1):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / f"{name}.out"
        env = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join([str(ROOT / "taskflow_vendor"), str(APPS)]),
            TASKFLOW_TEST_DB=str(tmp / "tasks.db"),
            TASKFLOW_TEST_RAN=str(tmp / "ran.txt"),
            TASKFLOW_TEST_SLOW=str(slow),
            TASKFLOW_TEST_LIMIT=str(limit),
            TASKFLOW_TEST_GATE=str(tmp / "gate"),
        )
        cmd = [
            sys.executable,
            "-m",
            "uvicorn",
            "crash_app:app",
            "--app-dir",
            str(APPS),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--log-level",
            "warning",
        ]
        if workers > 1:
            cmd += ["--workers", str(workers)]
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        self.wait_ready()

    def wait_ready(self) -> None:
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"uvicorn exited early:\n{self.output()}")
            try:
                return httpx.get(f"{self.url}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, 60, "uvicorn to answer")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the whole process group (supervisor and workers): a crash."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> int:
        """A graceful stop (SIGTERM, as a process manager would send)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
                raise AssertionError(f"uvicorn did not stop on SIGTERM:\n{self.output()}") from None
        # uvicorn re-raises the signal after its graceful shutdown: -SIGTERM is a clean stop.
        return 0 if self.proc.returncode == -signal.SIGTERM else self.proc.returncode


@pytest.fixture
def servers():
    started: list[Server] = []
    yield started
    for server in started:
        if server.proc.poll() is None:
            os.killpg(server.proc.pid, signal.SIGKILL)
            server.proc.wait(timeout=30)


def _marks(ran: Path) -> collections.Counter:
    """Counter of (event, task_id) from the marks file, and the pids per task."""
    counts: collections.Counter = collections.Counter()
    if ran.exists():
        for line in ran.read_text().splitlines():
            event, task_id, _pid = line.split()
            counts[(event, task_id)] += 1
    return counts


def _pids(ran: Path, event: str) -> dict[str, set[str]]:
    pids: dict[str, set[str]] = collections.defaultdict(set)
    for line in ran.read_text().splitlines():
        kind, task_id, pid = line.split()
        if kind == event:
            pids[task_id].add(pid)
    return pids


def _enqueue(url: str, plan: list[tuple[str, int]]) -> list[tuple[str, str]]:
    out = []
    with httpx.Client(base_url=url, timeout=30) as http:
        for kind, n in plan:
            response = http.post(f"/enqueue/{kind}/{n}")
            assert response.status_code == 200, response.text
            out.append((response.json()["task_id"], kind))
    return out


def test_sigkill_loses_no_persisted_task(tmp_path: Path, servers):
    db, ran = tmp_path / "tasks.db", tmp_path / "ran.txt"
    limit = 8
    first = Server(tmp_path, "first", slow=120, limit=limit)
    servers.append(first)

    plan = [("fast", n) for n in range(30)] + [("sync_fast", n) for n in range(10)]
    plan += [("slow", n) for n in range(10)] + [("slow_again", n) for n in range(10)]
    plan += [("fast" if n % 2 else "sync_fast", n) for n in range(140)]
    enqueued = _enqueue(first.url, plan)
    kinds = dict(enqueued)
    assert len(enqueued) == len(kinds) == 200

    # Every id the server returned is already in the file (persist=True commits first).
    assert set(_statuses(db)) == set(kinds)

    # Wait for a stable picture: the 40 quick tasks done, `limit` slow ones running
    # (they sleep for minutes), everything else pending behind them.
    def settled():
        statuses = collections.Counter(_statuses(db).values())
        return statuses["success"] == 40 and statuses["running"] == limit and statuses

    at_kill_counts = wait_until(settled, 60, "40 successes and 8 running tasks in the file")
    assert at_kill_counts["pending"] == 200 - 40 - limit

    first.kill()
    at_kill = _statuses(db)
    marks_at_kill = _marks(ran)
    running_at_kill = {t for t, s in at_kill.items() if s == "running"}
    pending_at_kill = {t for t, s in at_kill.items() if s == "pending"}
    done_at_kill = {t for t, s in at_kill.items() if s == "success"}
    assert {kinds[t] for t in running_at_kill} <= {"slow", "slow_again"}
    assert all(marks_at_kill[("start", t)] == 1 for t in running_at_kill)
    assert not any(marks_at_kill[("start", t)] for t in pending_at_kill)

    second = Server(tmp_path, "second", slow=0.05, limit=limit)
    servers.append(second)

    def all_final():
        statuses = _statuses(db)
        return len(statuses) == 200 and set(statuses.values()) <= FINAL and statuses

    final = wait_until(all_final, 90, "every task to reach a final status after restart")
    assert second.stop() == 0
    output = first.output() + second.output()
    assert "database is locked" not in output

    # Nothing lost, nothing duplicated: the same 200 ids, each in one row.
    assert scalar_count(db) == 200
    assert set(final) == set(kinds)
    marks = _marks(ran)
    for task_id in pending_at_kill:
        assert final[task_id] == "success", (task_id, kinds[task_id], final[task_id])
        assert marks[("start", task_id)] == 1 and marks[("done", task_id)] == 1
    for task_id in running_at_kill:
        if kinds[task_id] == "slow_again":  # requeue_on_interrupt=True: ran again
            assert final[task_id] == "success"
            assert marks[("start", task_id)] == 2 and marks[("done", task_id)] == 1
        else:
            assert final[task_id] == "interrupted"
            assert marks[("start", task_id)] == 1 and marks[("done", task_id)] == 0
    for task_id in done_at_kill:
        assert final[task_id] == "success"
        assert marks[("start", task_id)] == 1 and marks[("done", task_id)] == 1
    interrupted = [t for t in running_at_kill if kinds[t] == "slow"]
    for (error,) in _query(
        db,
        f"SELECT error FROM tasks WHERE task_id IN ({','.join('?' * len(interrupted))})",
        interrupted,
    ):
        assert error


def scalar_count(db: Path) -> int:
    return _query(db, "SELECT count(*) FROM tasks")[0][0]


def test_two_workers_share_one_file_after_a_crash(tmp_path: Path, servers):
    db, ran = tmp_path / "tasks.db", tmp_path / "ran.txt"
    crashed = Server(tmp_path, "crashed", slow=120, limit=1)
    servers.append(crashed)
    blocker = _enqueue(crashed.url, [("slow", 0)])[0][0]
    # Gated tasks: whoever claims them holds them until both workers have started.
    left_pending = [t for t, _ in _enqueue(crashed.url, [("gated", n) for n in range(100)])]
    wait_until(lambda: _statuses(db).get(blocker) == "running", 30, "the blocker to be running")
    crashed.kill()
    assert collections.Counter(_statuses(db).values()) == {"pending": 100, "running": 1}

    workers = Server(tmp_path, "workers", slow=0.05, limit=4, workers=2)
    servers.append(workers)

    # Two processes really serve: fresh connections reach both pids.
    seen: set[int] = set()

    def two_pids():
        seen.add(httpx.get(f"{workers.url}/health", timeout=5).json()["pid"])
        return len(seen) >= 2

    wait_until(two_pids, 60, "both workers to answer")
    # Both have finished their startup (and its claim); now let the requeued tasks finish.
    (tmp_path / "gate").touch()

    # Load while they run the requeued tasks: 8 clients enqueue 240 more persisted tasks.
    added: list[str] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def client(offset: int) -> None:
        try:
            plan = [("fast" if n % 2 else "sync_fast", offset + n) for n in range(30)]
            ids = [t for t, _ in _enqueue(workers.url, plan)]
            with lock:
                added.extend(ids)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(1000 * i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    assert len(added) == len(set(added)) == 240

    def all_final():
        statuses = _statuses(db)
        return len(statuses) == 341 and set(statuses.values()) <= FINAL and statuses

    final = wait_until(all_final, 120, "every task to finish under two workers")
    assert workers.stop() == 0

    marks = _marks(ran)
    for task_id in left_pending + added:
        assert final[task_id] == "success"
        assert marks[("start", task_id)] == 1, (task_id, marks[("start", task_id)])
        assert marks[("done", task_id)] == 1
    assert final[blocker] == "interrupted"
    assert marks[("start", blocker)] == 1  # its first run only; it was not requeued
    # The requeued tasks were each claimed by one process.
    pids = _pids(ran, "start")
    assert all(len(pids[t]) == 1 for t in left_pending)
    output = crashed.output() + workers.output()
    assert "database is locked" not in output.lower()
    assert "Traceback" not in output


def _later(url: str, kind: str, n: int, countdown: float) -> str:
    response = httpx.post(f"{url}/later/{kind}/{n}", params={"countdown": countdown}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["task_id"]


def _due_and_started(db: Path) -> dict[str, tuple]:
    return {
        t: (s, r, b)
        for t, s, r, b in _query(db, "SELECT task_id, status, run_at, start_time FROM tasks")
    }


def test_delayed_runs_survive_sigkill_and_run_once_after_a_restart(tmp_path: Path, servers):
    """Delayed runs accepted by a process that is then SIGKILLed: after a restart each runs
    once, at or after its time; the restarted process also takes over the later ones."""
    db, ran = tmp_path / "tasks.db", tmp_path / "ran.txt"
    first = Server(tmp_path, "first", slow=0.05, limit=8)
    servers.append(first)
    soon = [_later(first.url, "fast", n, 2.0) for n in range(5)]
    later = [_later(first.url, "sync_fast", n, 6.0) for n in range(3)]
    rows = _due_and_started(db)
    assert {rows[t][0] for t in soon + later} == {"scheduled"}  # committed before the answer
    first.kill()
    assert not _marks(ran), "nothing ran before the crash"

    second = Server(tmp_path, "second", slow=0.05, limit=8)
    servers.append(second)

    def all_done():
        statuses = _statuses(db)
        return all(statuses[t] == "success" for t in soon + later) and statuses

    wait_until(all_done, 30, "every delayed run to succeed after the restart")
    marks = _marks(ran)
    rows = _due_and_started(db)
    for task_id in soon + later:
        assert marks[("start", task_id)] == 1 and marks[("done", task_id)] == 1, task_id
        _, run_at, start_time = rows[task_id]
        assert start_time >= run_at - 0.01, "never before its time"
    assert second.stop() == 0


def test_a_live_process_takes_over_the_delayed_runs_of_one_that_died(tmp_path: Path, servers):
    db, ran = tmp_path / "tasks.db", tmp_path / "ran.txt"
    doomed = Server(tmp_path, "doomed", slow=0.05, limit=8)
    survivor = Server(tmp_path, "survivor", slow=0.05, limit=8)
    servers += [doomed, survivor]
    ids = [_later(doomed.url, "fast", n, 1.0) for n in range(4)]
    doomed.kill()

    def all_done():
        statuses = _statuses(db)
        return all(statuses[t] == "success" for t in ids) and statuses

    # The survivor looks for dead processes' tasks every 5 s (a dead PID on this host
    # is known at once; another host's after heartbeat_timeout).
    wait_until(all_done, 30, "the survivor to run the dead process's delayed runs")
    marks = _marks(ran)
    assert all(marks[("start", t)] == 1 for t in ids)
    owners = {o for (o,) in _query(db, "SELECT DISTINCT owner FROM tasks")}
    assert len(owners) == 1, "every row now belongs to the survivor"
