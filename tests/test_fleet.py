"""Several hosts on one PostgreSQL database, for real (tests/apps/fleet_app.py).

Three uvicorn instances, each in its own UTS namespace with its own hostname, so the
host part of each instance's identity really differs and no PID check can tell a dead
instance from a live one: only the heartbeat can. One is SIGKILLed mid-load; the
survivors must claim its work exactly once. Then the database itself restarts
mid-load: nothing accepted is lost and the instances recover on their own.
"""

from __future__ import annotations

import collections
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from apps.db_support import db_rows
from apps.engine_support import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

ROOT = Path(__file__).resolve().parents[1]
APPS = ROOT / "tests" / "apps"
FINAL = {"success", "failed", "cancelled", "interrupted"}


def _can_unshare() -> str:
    """Why this machine cannot give a process its own hostname, or '' if it can."""
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    probe = subprocess.run(
        ["unshare", "--uts", "sh", "-c", "hostname taskflow-probe && hostname"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0 or probe.stdout.strip() != "taskflow-probe":
        return f"unshare --uts does not work here (root needed): {probe.stderr.strip()}"
    return ""


@pytest.fixture(scope="module")
def hosts_possible():
    why = _can_unshare()
    if why and os.environ.get("CI") == "true":
        pytest.fail(why, pytrace=False)
    if why:
        pytest.skip(why)


class Host:
    """`uvicorn fleet_app:app` in a UTS namespace of its own, named ``hostname``."""

    def __init__(self, tmp: Path, hostname: str, db: str, *, limit: int = 4):
        with socket_port() as port:
            self.port = port
        self.hostname = hostname
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / f"{hostname}.out"
        env = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join([str(ROOT / "taskflow_vendor"), str(APPS)]),
            TASKFLOW_TEST_DB=db,
            TASKFLOW_TEST_RAN=str(tmp / "ran.txt"),
            TASKFLOW_TEST_GATE=str(tmp / "gate"),
            TASKFLOW_TEST_LIMIT=str(limit),
            TASKFLOW_TEST_HEARTBEAT="2",
        )
        uvicorn = [sys.executable, "-m", "uvicorn", "fleet_app:app", "--app-dir", str(APPS)]
        uvicorn += ["--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"]
        cmd = ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', hostname, *uvicorn]
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        self.whoami = wait_until(self._whoami, 60, f"{hostname} to answer")

    def _whoami(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.hostname} exited early:\n{self.output()}")
        try:
            return httpx.get(f"{self.url}/whoami", timeout=2).json()
        except httpx.HTTPError:
            return None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)


class socket_port:
    """A free TCP port on 127.0.0.1 (released on exit, for uvicorn to bind)."""

    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        return self.sock.getsockname()[1]

    def __exit__(self, *exc) -> None:
        self.sock.close()


@pytest.fixture
def fleet():
    started: list[Host] = []
    yield started
    for host in started:
        if host.proc.poll() is None:
            os.killpg(host.proc.pid, signal.SIGKILL)
            host.proc.wait(timeout=30)


def _marks(ran: Path) -> tuple[collections.Counter, dict[str, set[str]]]:
    """(count of (event, task_id), hosts that started each task)."""
    counts: collections.Counter = collections.Counter()
    where: dict[str, set[str]] = collections.defaultdict(set)
    if ran.exists():
        for line in ran.read_text().splitlines():
            event, task_id, host, _pid = line.split()
            counts[(event, task_id)] += 1
            if event == "start":
                where[task_id].add(host)
    return counts, where


def _statuses(db: str) -> dict[str, tuple[str, str]]:
    return {t: (s, o) for t, s, o in db_rows(db, "SELECT task_id, status, owner FROM tasks")}


class Load:
    """Clients posting ``durable`` and ``plain`` tasks to some hosts until stopped;
    a 503 (the database is away) is retried, as a client honouring Retry-After would."""

    def __init__(self, hosts: list[Host], clients_per_host: int = 2):
        self.accepted: dict[str, str] = {}  # task id -> kind
        self.host_of: dict[str, str] = {}  # task id -> the host that accepted it
        self.refused = 0
        self.errors: list[BaseException] = []
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._run, args=(host, i), daemon=True)
            for host in hosts
            for i in range(clients_per_host)
        ]
        for thread in self.threads:
            thread.start()

    def _run(self, host: Host, index: int) -> None:
        n = 0
        with httpx.Client(base_url=host.url, timeout=30) as http:
            while not self.stopping.is_set():
                kind = "durable" if n % 2 else "plain"
                n += 1
                try:
                    response = http.post(f"/enqueue/{kind}/{index * 100_000 + n}")
                except httpx.TransportError:
                    if host.proc.poll() is not None:
                        return  # this host was killed
                    continue
                if response.status_code == 503:
                    with self.lock:
                        self.refused += 1
                    time.sleep(0.05)
                    continue
                if response.status_code != 200:
                    self.errors.append(AssertionError(f"{response.status_code}: {response.text}"))
                    return
                with self.lock:
                    self.accepted[response.json()["task_id"]] = kind
                    self.host_of[response.json()["task_id"]] = host.hostname
                time.sleep(0.005)

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(60)
        assert not self.errors, self.errors[:3]


def test_survivors_claim_a_killed_hosts_work_exactly_once(tmp_path, pg_url, fleet, hosts_possible):
    db, ran = pg_url, tmp_path / "ran.txt"
    a = Host(tmp_path, "host-a", db, limit=2)
    b = Host(tmp_path, "host-b", db)
    c = Host(tmp_path, "host-c", db)
    fleet.extend([a, b, c])
    owners = {h.hostname: h.whoami["owner"] for h in fleet}
    assert len({o.split(":")[0] for o in owners.values()}) == 3  # three different hosts

    load = Load([a, b, c])
    # On host-a: two gated tasks hold its two slots, twenty wait behind them.
    with httpx.Client(base_url=a.url, timeout=30) as http:
        held = [http.post(f"/enqueue/gated/{n}").json()["task_id"] for n in range(22)]

    def a_settled():
        mine = [s for t, (s, _) in _statuses(db).items() if t in held]
        counts = collections.Counter(mine)
        return counts["running"] == 2 and counts["pending"] == 20 and counts

    wait_until(a_settled, 30, "host-a's gated tasks to be 2 running and 20 pending")
    time.sleep(0.5)  # load goes on through all three
    a.kill()
    at_kill = _statuses(db)
    running_at_kill = {t for t in held if at_kill[t][0] == "running"}
    pending_at_kill = {t for t in held if at_kill[t][0] == "pending"}
    assert len(running_at_kill) == 2 and len(pending_at_kill) == 20
    (tmp_path / "gate").touch()
    time.sleep(1.0)
    load.stop()

    durable = {t for t, kind in load.accepted.items() if kind == "durable"} | set(held)
    # A plain task is written in batches: one that host-a accepted just before it died
    # may be gone with it (that is what persist=True is for). The survivors' all finish.
    survivors_plain = {
        t for t, kind in load.accepted.items() if kind == "plain" and load.host_of[t] != "host-a"
    }

    def all_final():
        statuses = _statuses(db)
        done = all(t in statuses and statuses[t][0] in FINAL for t in durable | survivors_plain)
        return done and statuses

    final = wait_until(all_final, 60, "every accepted persist=True task to finish")
    counts, where = _marks(ran)
    for task_id in durable - running_at_kill:
        assert final[task_id][0] == "success", (task_id, final[task_id])
        assert counts[("start", task_id)] == 1, (task_id, counts[("start", task_id)])
    for task_id in running_at_kill:
        assert final[task_id][0] == "interrupted"
        assert counts[("start", task_id)] == 1 and counts[("done", task_id)] == 0
    # host-a's pending work went to the survivors, each task to exactly one of them.
    claimers = set()
    for task_id in pending_at_kill:
        assert len(where[task_id]) == 1 and where[task_id] != {"host-a"}, where[task_id]
        claimers.add(final[task_id][1])
    assert claimers <= {owners["host-b"], owners["host-c"]} and len(claimers) == 1
    for task_id in survivors_plain:
        assert final[task_id][0] == "success" and counts[("start", task_id)] == 1
    # A survivor's dashboard lists the dead host's tasks.
    listed = httpx.get(f"{b.url}/tasks", params={"func_name": "gated", "limit": 100}).json()
    assert set(held) <= {t["task_id"] for t in listed}
    for host in (b, c):
        host.stop()
        assert "Traceback" not in host.output(), host.output()


def test_a_database_restart_mid_load_loses_nothing(
    tmp_path, pg_url, postgres_server, fleet, hosts_possible
):
    db, ran = pg_url, tmp_path / "ran.txt"
    (tmp_path / "gate").touch()
    b = Host(tmp_path, "host-b", db)
    c = Host(tmp_path, "host-c", db)
    fleet.extend([b, c])
    load = Load([b, c])
    time.sleep(1.0)
    postgres_server.restart()
    time.sleep(1.0)
    load.stop()
    accepted = load.accepted
    assert len(accepted) > 50
    # The restart was felt: a write failed, or a persist=True request was refused.
    noticed = [h.hostname for h in (b, c) if "maintenance step failed" in h.output()]
    print(f"refused {load.refused}, noticed on {noticed}, accepted {len(accepted)}")
    assert load.refused or noticed

    def all_final():
        statuses = _statuses(db)
        done = all(t in statuses and statuses[t][0] in FINAL for t in accepted)
        return done and statuses

    final = wait_until(all_final, 60, "every accepted task, plain ones too, to be stored final")
    counts, _ = _marks(ran)
    for task_id in accepted:
        assert final[task_id][0] == "success"
        assert counts[("start", task_id)] == 1
    # Both instances recovered on their own: they answer, and their health is ok again.
    for host in (b, c):
        wait_until(
            lambda h=host: httpx.get(f"{h.url}/tasks/health", timeout=5).status_code == 200,
            30,
            f"{host.hostname} to report healthy",
        )
        response = httpx.post(f"{host.url}/enqueue/durable/1", timeout=10)
        assert response.status_code == 200


def test_every_dashboard_shows_every_hosts_tasks_within_a_second(
    tmp_path, pg_url, fleet, hosts_possible
):
    (tmp_path / "gate").touch()
    b = Host(tmp_path, "host-b", pg_url)
    c = Host(tmp_path, "host-c", pg_url)
    fleet.extend([b, c])
    with (
        httpx.Client(timeout=10) as http,
        http.stream("GET", f"{b.url}/tasks/dashboard/stream") as stream,
    ):
        lines = stream.iter_lines()
        assert next(lines).startswith("retry:")
        posted = time.monotonic()
        task_id = httpx.post(f"{c.url}/enqueue/durable/7", timeout=10).json()["task_id"]
        for line in lines:
            if line == "event: refresh":
                break
        waited = time.monotonic() - posted
    assert waited < 2.0, f"host-b's stream took {waited:.2f}s to hear of host-c's task"
    # host-b's list and detail show it, and which instance ran it.
    detail = wait_until(
        lambda: (
            (r := httpx.get(f"{b.url}/tasks/{task_id}", timeout=5)).status_code == 200
            and r.json()["status"] == "success"
            and r.json()
        ),
        10,
        "host-b to show host-c's finished task",
    )
    assert detail["instance"] == c.whoami["owner"]
    listed = httpx.get(f"{b.url}/tasks", params={"limit": 10}, timeout=5).json()
    assert task_id in {t["task_id"] for t in listed}
    # The fleet's counters: host-b's metrics count host-c's task.
    metrics = wait_until(
        lambda: (m := httpx.get(f"{b.url}/tasks/metrics", timeout=5).json())["success"] >= 1 and m,
        10,
        "host-b's metrics to count host-c's task",
    )
    assert metrics["success"] >= 1
