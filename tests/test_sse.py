"""The dashboard's server-sent events, read from a real uvicorn server on 127.0.0.1.

A small HTTP/1.1 client on a plain socket reads the stream as a browser's EventSource
would (chunked body, `retry:`, `id:`, `event:`, `data:`, comments), so every test controls
exactly how long it listens. Waits poll with deadlines; nothing of taskflow is mocked.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import threading
import time
from types import SimpleNamespace

import httpx
import pytest
import uvicorn
from apps.engine_support import wait_until
from fastapi import FastAPI
from fastapi.testclient import TestClient
from taskflow import TaskAdmin, TaskManager

pytestmark = pytest.mark.slow

FINAL = {"success", "failed", "cancelled", "interrupted"}


def ok():
    return None


async def anoop():
    return None


def hold(gate):
    gate.wait(30)


# --------------------------------------------------------------------------- SSE client


class Stream:
    """One GET of the event stream over HTTP/1.1, parsed into events as bytes arrive."""

    def __init__(self, port, path="/tasks/dashboard/stream", headers=None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        head = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n"
        extra = b"".join(k.encode() + b": " + v + b"\r\n" for k, v in (headers or {}).items())
        self.sock.sendall(head.encode() + extra + b"Connection: close\r\n\r\n")
        self.buffer = b""
        self.body = b""  # de-chunked
        self.events: list[dict] = []
        self.closed = False
        self.status, self.headers = self._read_head()

    def _recv(self, timeout):
        if self.closed:
            return False
        ready, _, _ = select.select([self.sock], [], [], max(0.0, timeout))
        if not ready:
            return False
        data = self.sock.recv(65536)
        if not data:
            self.closed = True
            return False
        self.buffer += data
        return True

    def _read_head(self):
        deadline = time.monotonic() + 5
        while b"\r\n\r\n" not in self.buffer:
            assert time.monotonic() < deadline, "no response head"
            self._recv(0.1)
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return int(lines[0].split()[1]), headers

    def _dechunk(self):
        if self.headers.get("transfer-encoding") != "chunked":
            self.body += self.buffer
            self.buffer = b""
            return
        while b"\r\n" in self.buffer:
            size_line, rest = self.buffer.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0], 16)
            if len(rest) < size + 2:
                return
            self.body += rest[:size]
            self.buffer = rest[size + 2 :]
            if size == 0:
                self.closed = True
                return

    def _parse(self):
        text = self.body.replace(b"\r\n", b"\n")
        while b"\n\n" in text:
            block, text = text.split(b"\n\n", 1)
            event = {"event": None, "id": None, "data": None, "comments": [], "retry": None}
            data_lines = []
            for line in block.decode("utf-8").split("\n"):
                if line.startswith(":"):
                    event["comments"].append(line[1:].strip())
                    continue
                field, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if field == "data":
                    data_lines.append(value)
                elif field in ("event", "id", "retry"):
                    event[field] = value
            if data_lines:
                event["data"] = "\n".join(data_lines)
            event["size"] = len(block)
            self.events.append(event)
        self.body = text

    def pump(self, timeout=0.05):
        self._recv(timeout)
        self._dechunk()  # also what arrived together with the response head
        self._parse()

    def until(self, predicate, timeout=10.0, what="an event"):
        """Read until ``predicate(events)`` is true; returns its value."""
        deadline = time.monotonic() + timeout
        while True:
            self.pump(0.05)
            value = predicate(self.events)
            if value:
                return value
            if time.monotonic() > deadline:
                kinds = [e["event"] or e["comments"] or e["retry"] for e in self.events][-20:]
                raise AssertionError(f"timed out waiting for {what}; last events: {kinds}")
            if self.closed:
                raise AssertionError(f"stream closed while waiting for {what}")

    def of(self, kind, start=0):
        return [e for e in self.events[start:] if e["event"] == kind]

    def close(self):
        with contextlib.suppress(OSError):
            self.sock.close()


def tasks_in(events):
    return [json.loads(e["data"]) for e in events if e["event"] == "task"]


def metrics_in(events):
    return [json.loads(e["data"]) for e in events if e["event"] == "metrics"]


# --------------------------------------------------------------------------- server


@pytest.fixture
def serve(tmp_path):
    """Factory: TaskAdmin on a fresh manager, served by uvicorn in a thread."""
    started = []

    def start(*, db=None, **admin_kwargs):
        tm = TaskManager(
            shutdown_timeout=1.0,
            snapshot_db=str(tmp_path / db) if db else None,
            snapshot_interval=0.2,
        )
        for func in (ok, anoop, hold):
            tm.task()(func)
        app = FastAPI()
        TaskAdmin(app, tm, **admin_kwargs)

        @app.post("/burst")
        async def burst(n: int) -> dict:
            # On the event loop, in one go: a burst of n tasks (3n+ changes).
            return {"ids": [tm.add_task(anoop) for _ in range(n)]}

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        config = uvicorn.Config(
            app, log_level="warning", lifespan="on", timeout_graceful_shutdown=3
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        wait_until(lambda: server.started or not thread.is_alive(), 10, "uvicorn to start")
        assert server.started, "uvicorn did not start"
        gate = threading.Event()
        env = {
            "tm": tm,
            "port": sock.getsockname()[1],
            "gate": gate,
            "server": server,
            "thread": thread,
            "streams": [],
        }
        env["http"] = httpx.Client(base_url=f"http://127.0.0.1:{env['port']}", timeout=10)

        def stream(headers=None):
            s = Stream(env["port"], headers=headers)
            env["streams"].append(s)
            return s

        env["stream"] = stream
        started.append(env)
        return SimpleNamespace(**env)

    yield start
    for env in started:
        env["gate"].set()
        for s in env["streams"]:
            s.close()
        env["http"].close()
        env["server"].should_exit = True
        env["thread"].join(10)


def final(env, task_id):
    record = env.tm.get(task_id)
    return record is not None and record.status.value in FINAL


# --------------------------------------------------------------------------- tests


def test_stream_needs_a_session_when_auth_is_on(serve):
    env = serve(auth=("admin", "secret"), secret_key="sse-secret-key-0123456789")
    refused = env.stream()
    assert refused.status == 401
    r = env.http.post("/tasks/auth/login", data={"username": "admin", "password": "secret"})
    assert r.status_code == 303
    cookie = f"taskflow_token={env.http.cookies['taskflow_token']}".encode()
    s = env.stream(headers={"Cookie": cookie})
    assert s.status == 200
    s.until(lambda ev: metrics_in(ev), 5, "the first metrics event")


def test_an_open_stream_ends_when_its_session_is_logged_out(serve):
    env = serve(auth=("admin", "secret"), secret_key="sse-secret-key-0123456789")
    r = env.http.post("/tasks/auth/login", data={"username": "admin", "password": "secret"})
    assert r.status_code == 303
    cookie = f"taskflow_token={env.http.cookies['taskflow_token']}".encode()
    s = env.stream(headers={"Cookie": cookie})
    s.until(lambda ev: metrics_in(ev), 5, "the first metrics event")
    env.tm.add_task(ok)
    s.until(lambda ev: tasks_in(ev), 5, "a task event while logged in")
    assert env.http.post("/tasks/auth/logout").status_code == 303
    wait_until(lambda: s.pump(0.1) or s.closed, 5, "the stream to close after logout")
    before = len(s.events)
    env.tm.add_task(ok)
    time.sleep(0.5)
    s.pump(0.1)
    assert len(s.events) == before  # nothing more was sent


def test_stream_opens_with_retry_and_metrics(serve):
    env = serve()
    env.tm.add_task(ok)
    wait_until(lambda: env.http.get("/tasks/metrics").json()["success"] == 1)
    s = env.stream()
    assert s.status == 200
    assert s.headers["content-type"].startswith("text/event-stream")
    assert "no-cache" in s.headers.get("cache-control", "")
    s.until(lambda ev: metrics_in(ev), 5, "the first metrics event")
    retry = next(e["retry"] for e in s.events if e["retry"] is not None)
    assert int(retry) > 0
    first = metrics_in(s.events)[0]
    for key in ("total", "pending", "running", "success", "failed", "interrupted", "cancelled"):
        assert key in first
    assert first["total"] == 1 and first["success"] == 1
    assert 0.0 <= first["success_rate"] <= 1.0


def test_one_small_task_event_per_change_never_the_whole_state(serve):
    env = serve()
    old = [env.tm.add_task(ok) for _ in range(30)]
    wait_until(lambda: all(final(env, i) for i in old), 10, "30 old tasks")
    s = env.stream()
    s.until(lambda ev: metrics_in(ev), 5, "the first metrics event")
    mark = len(s.events)

    task_id = env.tm.add_task(hold, env.gate)
    s.until(
        lambda ev: any(t["task_id"] == task_id and t["status"] == "running" for t in tasks_in(ev)),
        5,
        "a running event",
    )
    env.gate.set()
    s.until(
        lambda ev: any(t["task_id"] == task_id and t["status"] == "success" for t in tasks_in(ev)),
        5,
        "a success event",
    )
    events = s.of("task", mark)
    assert {json.loads(e["data"])["task_id"] for e in events} == {task_id}  # none of the old 30
    assert 2 <= len(events) <= 3  # pending, running, success: coalesced, never more
    ids = [int(e["id"]) for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    for e in events:
        task = json.loads(e["data"])
        assert "logs" not in task and "stacktrace" not in task
        assert e["size"] < 2000
    assert not s.of("refresh", mark)


def test_metrics_event_follows_changes(serve):
    env = serve()
    s = env.stream()
    s.until(lambda ev: metrics_in(ev), 5, "the first metrics event")
    task_id = env.tm.add_task(ok)  # finishes within a second of the first metrics event
    s.until(lambda ev: any(m["success"] == 1 for m in metrics_in(ev)), 5, "metrics showing it")
    assert final(env, task_id)


def test_heartbeat_comment_keeps_an_idle_stream_alive(serve):
    env = serve()
    s = env.stream()
    s.until(lambda ev: any("ping" in e["comments"] for e in ev), 20, "a heartbeat")
    assert s.status == 200 and not s.closed


def test_last_event_id_resumes_where_the_client_left(serve):
    env = serve()
    first = env.stream()
    first.until(lambda ev: metrics_in(ev), 5, "the first metrics event")
    seen = env.tm.add_task(ok)
    first.until(
        lambda ev: any(t["task_id"] == seen and t["status"] == "success" for t in tasks_in(ev)),
        5,
        "the first task's success",
    )
    last_id = max(int(e["id"]) for e in first.events if e["id"])
    first.close()

    missed = env.tm.add_task(ok)  # changes while the browser was away
    wait_until(lambda: final(env, missed), 5, "the missed task to finish")

    again = env.stream(headers={"Last-Event-ID": str(last_id).encode()})
    again.until(
        lambda ev: any(t["task_id"] == missed and t["status"] == "success" for t in tasks_in(ev)),
        5,
        "the missed task's event, replayed",
    )
    assert seen not in {t["task_id"] for t in tasks_in(again.events)}
    assert not again.of("refresh")


def test_last_event_id_from_the_future_asks_for_a_refresh(serve):
    env = serve()
    env.tm.add_task(ok)
    s = env.stream(headers={"Last-Event-ID": b"999999999"})
    s.until(lambda ev: [e for e in ev if e["event"] == "refresh"], 5, "a refresh event")


@pytest.mark.parametrize(
    "value",
    [
        b"abc",
        b"-5",
        b"",
        b"1.5",
        b"0x10",
        pytest.param("\u00b2".encode("latin-1"), id="superscript-two"),
        pytest.param(b"9" * 5000, id="5000-digits"),
    ],
)
def test_odd_last_event_id_never_breaks_the_stream(serve, value):
    env = serve()
    s = env.stream(headers={"Last-Event-ID": value})
    assert s.status == 200
    s.until(lambda ev: metrics_in(ev), 5, "the first metrics event")
    task_id = env.tm.add_task(ok)
    s.until(lambda ev: any(t["task_id"] == task_id for t in tasks_in(ev)), 5, "a task event")


def test_a_burst_of_1000_changes_is_coalesced(serve):
    env = serve()
    s = env.stream()
    s.until(lambda ev: metrics_in(ev), 5, "the first metrics event")
    mark = len(s.events)
    body_before = sum(e["size"] for e in s.events)

    ids = env.http.post("/burst", params={"n": 1000}).json()["ids"]
    assert len(ids) == 1000
    wait_until(
        lambda: env.http.get("/tasks/metrics").json()["success"] == 1000, 20, "the burst to end"
    )
    s.until(
        lambda ev: any(m["success"] == 1000 for m in metrics_in(ev[mark:])),
        10,
        "metrics after the burst",
    )
    burst = s.events[mark:]
    task_events = [e for e in burst if e["event"] == "task"]
    refreshes = [e for e in burst if e["event"] == "refresh"]
    # 1,000 tasks made at least 3,000 changes; the page gets a bounded number of events.
    assert len(task_events) + len(refreshes) <= 500, (len(task_events), len(refreshes))
    assert sum(e["size"] for e in burst) < 512 * 1024, "the burst was streamed in full"
    assert body_before < 64 * 1024

    # Still responsive: a single change afterwards arrives as one small event.
    after = len(s.events)
    task_id = env.tm.add_task(ok)
    s.until(
        lambda ev: any(t["task_id"] == task_id for t in tasks_in(ev[after:])),
        5,
        "an event after the burst",
    )


def test_every_stream_ends_with_the_final_metrics_after_a_burst(serve):
    # Metrics events are built once for all streams at most twice a second, so a
    # stream may first get one built before its latest change: it must get a newer one.
    env = serve()
    streams = [env.stream() for _ in range(4)]
    for s in streams:
        s.until(lambda ev: metrics_in(ev), 5, "the first metrics event")
    marks = [len(s.events) for s in streams]
    env.http.post("/burst", params={"n": 300})
    for s, mark in zip(streams, marks, strict=True):
        s.until(
            lambda ev, mark=mark: any(m["success"] == 300 for m in metrics_in(ev[mark:])),
            10,
            "metrics counting the whole burst",
        )


def test_poll_interval_picks_up_tasks_finished_by_another_process(serve, tmp_path):
    env = serve(db="shared.db", poll_interval=0.5)
    s = env.stream()
    s.until(lambda ev: metrics_in(ev), 5, "the first metrics event")
    mark = len(s.events)

    # Another "process": its own manager and event loop on the same file.
    other = TaskManager(snapshot_db=str(tmp_path / "shared.db"), snapshot_interval=0.2)
    other.task()(ok)
    other_app = FastAPI()
    other.init_app(other_app)
    with TestClient(other_app):
        ids = [other.add_task(ok) for _ in range(3)]
        wait_until(lambda: all(other.get(i).status.value == "success" for i in ids), 5)
    # Its shutdown wrote everything to the file; the stream's poll notices.
    s.until(lambda ev: [e for e in ev[mark:] if e["event"] == "refresh"], 10, "a refresh event")
    s.until(
        lambda ev: any(m["success"] == 3 for m in metrics_in(ev[mark:])),
        10,
        "metrics counting the other process's tasks",
    )
    assert env.http.get("/tasks/metrics").json()["success"] == 3


def test_progress_arrives_over_the_stream_at_most_four_times_a_second(serve):
    """task_progress() in a tight loop (a sync task, in its thread): the stream carries a
    few progress updates, never one per call, and the latest value always arrives."""
    from taskflow import task_progress

    env = serve()

    def crunch(gate):
        for i in range(1, 20_001):
            task_progress(i / 20_000, f"row {i} of 20000")
            if i % 200 == 0:
                time.sleep(0.01)  # about 1 s in all, yielding to the loop 100 times
        gate.wait(10)

    env.tm.task()(crunch)
    s = env.stream()
    s.until(lambda ev: metrics_in(ev), 5, "the first metrics event")
    mark = len(s.events)
    started = time.monotonic()
    changes_before = env.tm._store.seq  # every change of any record counts one
    task_id = env.tm.add_task(crunch, env.gate)

    def done_counting(ev):
        return any(
            t["task_id"] == task_id and t.get("progress") == 1.0 for t in tasks_in(ev[mark:])
        )

    s.until(done_counting, 10, "the last progress value")
    elapsed = time.monotonic() - started
    # The source is throttled, not only the stream: created, running, then one change
    # per 0.25 s at most (a slow consumer or a database writer sees no more either).
    changes = env.tm._store.seq - changes_before
    assert changes <= elapsed / 0.25 + 4, (changes, elapsed)
    updates = [t for t in tasks_in(s.events[mark:]) if t["task_id"] == task_id and "progress" in t]
    assert updates[-1]["progress_message"] == "row 20000 of 20000"
    fractions = [t["progress"] for t in updates]
    assert fractions == sorted(fractions)
    # At most one every 0.25 s (plus the first), whatever the number of calls.
    assert 2 <= len(updates) <= elapsed / 0.25 + 2, (len(updates), elapsed)
    assert env.tm.get(task_id).to_dict()["progress"] == 1.0
    env.gate.set()
    s.until(
        lambda ev: any(t["task_id"] == task_id and t["status"] == "success" for t in tasks_in(ev)),
        5,
        "success",
    )
    last = [t for t in tasks_in(s.events) if t["task_id"] == task_id][-1]
    assert "progress" not in last, "a finished task shows no bar"
