"""One benchmark measurement in a fresh process; `bench/run.py` starts one per scenario and round.

    python bench/_worker.py <scenario> <impl> --json [--quick] [--variant V] [--db PATH]
    python bench/_worker.py prep <impl> --rows N --out PATH    (history for list/metrics/startup)
    python bench/_worker.py sse-clients - --port P --clients N  (helper process: N SSE readers)

Implementations: `plain` (FastAPI BackgroundTasks, no tracking: the floor), `ours` (taskflow.py
from taskflow_vendor/) and `peer` (fastapi_taskflow, see bench/requirements.txt). The last line on
stdout is one JSON object: the measures, `ok` and `problems` (the correctness checks).
Every load is bounded in count and in time, and everything listens on 127.0.0.1 only.
"""

import argparse
import asyncio
import collections
import contextlib
import gc
import json
import logging
import os
import re
import shutil
import socket
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import traceback
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
FINAL = {"success", "failed", "cancelled", "interrupted", "rejected"}
MAX_HISTORY = 10_000

# Load sizes: (full, quick). Every load also has a time bound (DEADLINE, per scenario).
SIZES = {
    "enqueue_n": (4000, 1500),
    "enqueue_seconds": (5.0, 2.0),
    "enqueue_warm": (300, 200),
    "enqueue_conc": (16, 16),
    "wrk_seconds": (4, 2),
    "wrk_conns": (16, 16),
    "wrk_max_requests": (200_000, 60_000),
    "wrk_paced_delay_ms": (40, 40),  # 16 connections x 1 request per ~40 ms: ~400 req/s offered
    "drain_n": (10_000, 3_000),
    "memory_total": (200_000, 50_000),
    "list_requests": (40, 15),
    "list_seconds": (5.0, 3.0),
    "sse_clients": (20, 20),
}
DEADLINE = 120.0  # seconds for the measured phase of any scenario


def size(name: str, quick: bool):
    full, small = SIZES[name]
    return small if quick else full


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def sval(status) -> str:
    return getattr(status, "value", status)


# ---------------------------------------------------------------------------------------------
# Task functions (a counter that does not grow with the number of tasks)
# ---------------------------------------------------------------------------------------------


class Counter:
    n = 0
    lock = threading.Lock()


C = Counter()


async def noop_async():
    C.n += 1


def noop_sync():
    with C.lock:
        C.n += 1


async def boom():
    C.n += 1
    raise RuntimeError("boom: prepared failure")


# ---------------------------------------------------------------------------------------------
# Implementations
# ---------------------------------------------------------------------------------------------


PLAIN_ROW = {
    "task_id": "",
    "func_name": "noop_async",
    "status": "success",
    "created_at": "2026-01-01T00:00:00.000000+00:00",
    "start_time": "2026-01-01T00:00:00.000200+00:00",
    "end_time": "2026-01-01T00:00:00.000400+00:00",
    "duration": 0.0002,
    "retries_used": 0,
    "error": None,
    "logs": [],
    "stacktrace": None,
    "tags": {},
    "retry_of": None,
    "attempts": [],
}
PLAIN_METRICS = {
    "total": 100000,
    "success": 95000,
    "failed": 5000,
    "success_rate": 0.95,
    "per_minute": [{"minute": "2026-01-01T00:00:00+00:00", "success": 0, "failed": 0}] * 60,
}


class Plain:
    """FastAPI's own BackgroundTasks: no ids, no records (the floor).

    For list/metrics it serves precomputed bodies of the same shape (the cost of FastAPI and
    the in-process client alone)."""

    name = "plain"
    tracked = False
    list_path = "/tasks?limit=100"

    def __init__(self, **_options):
        self.ids: list = []
        self._refs: set = set()

    def register(self, func, **_options):
        return func

    def build_app(self, func, admin=True):
        from fastapi import BackgroundTasks, FastAPI
        from fastapi.responses import JSONResponse

        app = FastAPI()
        ids = self.ids

        @app.post("/enqueue")
        async def enqueue(background_tasks: BackgroundTasks):
            background_tasks.add_task(func)
            ids.append(None)
            return {"ok": True}

        # Floors for the list and metrics scenarios: precomputed bodies of the same shape.
        page = [PLAIN_ROW | {"task_id": str(uuid.uuid4())} for _ in range(100)]

        @app.get("/tasks")
        async def list_page():
            return JSONResponse(page, headers={"X-Total-Count": "100"})

        @app.get("/tasks/metrics")
        async def metrics():
            return JSONResponse(PLAIN_METRICS)

        return app

    def add(self, func):
        task = asyncio.get_running_loop().create_task(func())
        self._refs.add(task)
        task.add_done_callback(self._refs.discard)

    async def startup(self):
        pass

    async def shutdown(self):
        pass

    def status(self, task_id):
        return "success"

    def check_list(self, response, rows):
        return []


class Tracked:
    """What ours and the peer share: the same registration and the same enqueue app."""

    def register(self, func, **options):
        self.tm.task(**options)(func)
        return func

    def build_app(self, func, admin=True):
        from fastapi import Depends, FastAPI

        app = FastAPI()
        if admin:
            self.mod.TaskAdmin(app, self.tm)
        tm, ids = self.tm, self.ids

        @app.post("/enqueue")
        async def enqueue(tasks=Depends(tm.get_tasks)):
            task_id = tasks.add_task(func)
            ids.append(task_id)
            return {"task_id": task_id}

        return app


class Ours(Tracked):
    """taskflow.py, imported from taskflow_vendor/ exactly as a service vendors it."""

    name = "ours"
    tracked = True
    list_path = "/tasks?limit=100"

    def __init__(self, **options):
        vendor = os.environ.get("BENCH_TASKFLOW_DIR") or str(ROOT / "taskflow_vendor")
        sys.path.insert(0, vendor)
        try:
            import taskflow
        finally:
            # A service imports the file from its own package, adding no sys.path entry.
            # Left in, the entry taxes every later failed import, and httpx's in-process
            # transport tries one per request (`import sniffio`): ~2% of a request here.
            sys.path.remove(vendor)

        self.mod = taskflow
        self.options = options
        self.tm = taskflow.TaskManager(**options)
        self.ids: list = []

    def add(self, func):
        return self.tm.add_task(func)

    async def startup(self):
        await self.tm.startup()

    async def shutdown(self):
        await self.tm.shutdown()

    def status(self, task_id):
        record = self.tm.get(task_id)
        return None if record is None else sval(record.status)

    async def history_count(self, path, status=None):
        """Rows a fresh manager finds in the file (through the module's own API)."""
        tm = self.mod.TaskManager(snapshot_db=str(path))
        for func in (noop_async, noop_sync, boom):
            tm.task()(func)
        await tm.startup()
        try:
            _, total = await tm.query(status=status, limit=1)
        finally:
            await tm.shutdown()
        return total

    def check_list(self, response, rows):
        body = response.json()
        total = response.headers.get("x-total-count")
        problems = []
        if not isinstance(body, list) or len(body) != min(100, rows):
            problems.append(f"page has {len(body) if isinstance(body, list) else body!r} items")
        if total is None or int(total) != rows:
            problems.append(f"X-Total-Count {total!r} != {rows}")
        return problems


class Peer(Tracked):
    """fastapi-taskflow 0.12.1 (the peer); it has no max_history, the option is dropped."""

    name = "peer"
    tracked = True
    list_path = "/tasks"

    def __init__(self, **options):
        import fastapi_taskflow

        self.mod = fastapi_taskflow
        options.pop("max_history", None)
        self.tm = fastapi_taskflow.TaskManager(**options)
        self.ids: list = []
        self._bt = fastapi_taskflow.ManagedBackgroundTasks(self.tm)

    def add(self, func):
        # The peer has no enqueue outside a request; eager=True dispatches at once.
        return self._bt.add_task(func, eager=True)

    async def startup(self):
        await self.tm.startup()

    async def shutdown(self):
        await self.tm.shutdown()

    def status(self, task_id):
        record = self.tm.store.get(task_id)
        return None if record is None else sval(record.status)

    async def history_count(self, path, status=None):
        return peer_rows(path, status)

    def check_list(self, response, rows):
        body = response.json()
        if not isinstance(body, list) or len(body) != rows:
            return [f"list has {len(body) if isinstance(body, list) else body!r} items, not {rows}"]
        return []


def peer_rows(path, status=None):
    """Rows in the peer's history table (read directly: the peer has no count API)."""
    with sqlite3.connect(path) as conn:
        if status:
            sql, args = "SELECT COUNT(*) FROM task_snapshots WHERE status=?", (status,)
        else:
            sql, args = "SELECT COUNT(*) FROM task_snapshots", ()
        return conn.execute(sql, args).fetchone()[0]


IMPLS = {"plain": Plain, "ours": Ours, "peer": Peer}


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


LIFESPANS: set = set()


async def start_app(app):
    """Run ``app``'s ASGI lifespan startup, as a server does; returns a coroutine function
    that runs its shutdown. Both ours (TaskAdmin) and the peer start their manager there."""
    to_app, from_app = asyncio.Queue(), asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}
    runner = asyncio.create_task(app(scope, to_app.get, from_app.put))
    # The loop keeps only a weak reference to a task: a lifespan never shut down (the
    # read-only scenarios) would be collected mid-run, closing the app's lifespan.
    LIFESPANS.add(runner)
    await to_app.put({"type": "lifespan.startup"})
    message = await asyncio.wait_for(from_app.get(), 60)
    if message["type"] != "lifespan.startup.complete":
        raise RuntimeError(f"lifespan startup failed: {message}")

    async def stop():
        await to_app.put({"type": "lifespan.shutdown"})
        message = await asyncio.wait_for(from_app.get(), 60)
        await runner
        if message["type"] != "lifespan.shutdown.complete":
            raise RuntimeError(f"lifespan shutdown failed: {message}")

    return stop


async def wait_until(predicate, timeout, interval=0.002):
    end = time.perf_counter() + timeout
    while not predicate():
        if time.perf_counter() > end:
            return False
        await asyncio.sleep(interval)
    return True


def check_final(impl, ids, problems, max_history=None):
    """Every id reached `success`; ours may have evicted the oldest beyond max_history."""
    if not impl.tracked:
        return {}
    statuses = collections.Counter()
    missing_positions = []
    for position, task_id in enumerate(ids):
        status = impl.status(task_id)
        if status is None:
            missing_positions.append(position)
        statuses[status or "missing"] += 1
    bad = {k: v for k, v in statuses.items() if k not in ("success", "missing")}
    if bad:
        problems.append(f"tasks not final/success: {dict(bad)}")
    if missing_positions:
        evictable = len(ids) - (max_history or 0) if max_history else 0
        if not max_history or max(missing_positions) >= evictable:
            problems.append(
                f"{len(missing_positions)} task ids unknown (not the oldest beyond max_history)"
            )
    return dict(statuses)


def check_bad_ids(ids, problems):
    bad = [i for i in ids if not (isinstance(i, str) and len(i) == 36)]
    if bad:
        problems.append(f"{len(bad)} add_task results are not 36-char ids, e.g. {bad[0]!r}")


async def http_load(client, path, total, conc, deadline):
    issued = done = 0
    errors: collections.Counter = collections.Counter()

    async def worker():
        nonlocal issued, done
        while issued < total and time.perf_counter() < deadline:
            issued += 1
            response = await client.post(path)
            if response.status_code != 200:
                errors[response.status_code] += 1
            done += 1

    await asyncio.gather(*(worker() for _ in range(conc)))
    return done, errors


class Profile:
    """pyinstrument around the measured phase when --profile is given (text report to results/)."""

    def __init__(self, args):
        self.args, self.profiler = args, None

    def __enter__(self):
        if self.args.profile:
            from pyinstrument import Profiler

            self.profiler = Profiler(async_mode="enabled", interval=0.001, use_timing_thread=True)
            self.profiler.start()
        return self

    def __exit__(self, *exc):
        if self.profiler is not None:
            self.profiler.stop()
            out = RESULTS / "profiles"
            out.mkdir(parents=True, exist_ok=True)
            variant = f"-{self.args.variant}" if self.args.variant else ""
            name = f"{self.args.scenario}-{self.args.impl}{variant}.txt"
            tree = self.profiler.output_text(unicode=True, show_all=False)
            flat = self.profiler.output_text(unicode=True, flat=True)
            flat = "\n".join(flat.splitlines()[:60])
            (out / name).write_text(tree + "\n\nFlat (self time), top 60:\n" + flat + "\n")
        return False


# ---------------------------------------------------------------------------------------------
# Scenarios (each returns a dict of measures; problems collect correctness failures)
# ---------------------------------------------------------------------------------------------


async def sc_enqueue(args, problems, kind="async", persist=False):
    import httpx

    quick = args.quick
    tmp = Path(tempfile.mkdtemp(prefix="tfbench-"))
    options = {"snapshot_db": str(tmp / "tasks.db")} if persist else {}
    impl = IMPLS[args.impl](**options)
    func = noop_async if kind == "async" else noop_sync
    impl.register(func, **({"persist": True} if persist else {}))
    app = impl.build_app(func)
    stop = await start_app(app)  # as a server starts it (ours: TaskAdmin starts the manager)
    n, warm, conc = (
        size("enqueue_n", quick),
        size("enqueue_warm", quick),
        size("enqueue_conc", quick),
    )
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            done_w, err_w = await http_load(
                client, "/enqueue", warm, conc, time.perf_counter() + 30
            )
            await wait_until(lambda: C.n >= done_w, 10)
            before = C.n
            bound = size("enqueue_seconds", quick)
            with Profile(args):
                t0, cpu0 = time.perf_counter(), time.process_time()
                done, errors = await http_load(client, "/enqueue", n, conc, t0 + bound)
                drained = await wait_until(lambda: C.n >= before + done, 30)
                elapsed = time.perf_counter() - t0
                cpu = time.process_time() - cpu0
    finally:
        await stop()
    errors.update(err_w)
    if errors:
        problems.append(f"HTTP errors: {dict(errors)}")
    if not drained or C.n != len(impl.ids):
        problems.append(f"executed {C.n} tasks for {len(impl.ids)} requests")
    if impl.tracked:
        check_bad_ids(impl.ids, problems)
    statuses = check_final(impl, impl.ids, problems)
    result = {
        "rps": done / elapsed,
        "rps_cpu": done / cpu,
        "requests": done,
        "seconds": elapsed,
        "cpu_seconds": cpu,
        "statuses": statuses,
    }
    if persist and impl.tracked:
        flushed = await impl.history_count(tmp / "tasks.db", status="success")
        result["flushed"] = flushed
        if flushed != len(impl.ids):
            problems.append(
                f"{flushed} success rows in the file after shutdown, not {len(impl.ids)}"
            )
    shutil.rmtree(tmp, ignore_errors=True)
    return result


WRK_SCRIPT = """
wrk.method = "POST"
local responses = 0
local limit = tonumber(os.getenv("BENCH_MAX_REQUESTS") or "1000000")
local pause = tonumber(os.getenv("BENCH_DELAY_MS") or "0")
function response(status, headers, body)
  responses = responses + 1
  if responses >= limit then wrk.thread:stop() end
end
if pause > 0 then
  -- uniform in [pause/2, 3*pause/2], so the connections do not fire in lockstep
  function delay() return math.random(math.floor(pause / 2), math.floor(pause * 3 / 2)) end
end
"""


def parse_wrk(text):
    def seconds(value, unit):
        return float(value) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]

    out = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    out["rps"] = float(m.group(1)) if m else None
    for pct in ("50", "90", "99"):
        m = re.search(rf"^\s+{pct}(?:\.0+)?%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
        out[f"p{pct}_ms"] = seconds(*m.groups()) * 1000 if m else None
    m = re.search(r"(\d+) requests in", text)
    out["wrk_requests"] = int(m.group(1)) if m else None
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    out["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    out["socket_errors"] = sum(map(int, m.groups())) if m else 0
    return out


async def run_wrk(port, seconds, conns, max_requests, script, delay_ms=0):
    """wrk against POST /enqueue; delay_ms > 0 paces each connection (offered load bounded)."""
    env = dict(os.environ, BENCH_MAX_REQUESTS=str(max_requests), BENCH_DELAY_MS=str(delay_ms))
    proc = await asyncio.create_subprocess_exec(
        shutil.which("wrk") or "/usr/bin/wrk",
        "-t1",
        f"-c{conns}",
        f"-d{seconds}s",
        "--timeout",
        "5s",
        "--latency",
        "-s",
        str(script),
        f"http://127.0.0.1:{port}/enqueue",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    try:
        stdout, _ = await asyncio.wait_for(proc.communicate(), seconds + 30)
    except asyncio.TimeoutError:
        proc.kill()
        raise
    return stdout.decode(errors="replace")


def free_port():
    # (Handing uvicorn an already bound socket made every request wait ~40 ms for a delayed
    # ACK on this machine, so uvicorn binds the port itself.)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def sc_uvicorn(args, problems, sse_clients=0):
    """uvicorn on 127.0.0.1 in this process, wrk (and SSE readers) in child processes."""
    import uvicorn

    quick = args.quick
    impl = IMPLS[args.impl]()
    impl.register(noop_async)
    app = impl.build_app(noop_async)
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="error", access_log=False, lifespan="on"
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    tmp = Path(tempfile.mkdtemp(prefix="tfbench-"))
    script = tmp / "post.lua"
    script.write_text(WRK_SCRIPT)
    clients_proc = None
    result = {}
    text = ""

    async def measured():
        """One wrk run: its parsed figures, requests per second of this process's CPU, text."""
        served0, cpu0 = len(impl.ids), time.process_time()
        out = await run_wrk(port, seconds, conns, limit, script)
        cpu = time.process_time() - cpu0
        figures = parse_wrk(out)
        figures["server_cpu_seconds"] = cpu
        figures["rps_cpu"] = (len(impl.ids) - served0) / cpu if cpu else None
        return figures, out

    try:
        if not await wait_until(lambda: server.started, 20, 0.01):
            raise RuntimeError("uvicorn did not start within 20 s")
        seconds, conns = size("wrk_seconds", quick), size("wrk_conns", quick)
        limit = size("wrk_max_requests", quick)
        await run_wrk(port, 1, conns, limit, script)  # warm-up
        if sse_clients:
            # A-B-A in this one server: no clients, clients, no clients again. Two separate
            # server processes differ by more than the clients cost on a shared machine
            # (single-round ratios of 0.6 to 1.5), and the mean of the two A runs cancels
            # a machine that speeds up or slows down during the three. A longer warm-up
            # first: a process gets faster as its store fills to max_history and then
            # reuses the memory of evicted records (one run measured 1,974, 2,251 and
            # 2,517 req/s in a row), so all three runs start from a full store.
            await run_wrk(port, 2 * seconds, conns, limit, script)
            before, _ = await measured()
            result["none_before"] = before
            clients_proc = await asyncio.create_subprocess_exec(
                sys.executable,
                str(Path(__file__)),
                "sse-clients",
                "-",
                "--port",
                str(port),
                "--clients",
                str(sse_clients),
                "--seconds",
                str(seconds + 40),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            line = await asyncio.wait_for(clients_proc.stdout.readline(), 20)
            if not line.startswith(b"READY"):
                problems.append(f"SSE clients did not connect: {line[:200]!r}")
            await asyncio.sleep(0.5)
        with Profile(args):
            figures, text = await measured()
        result.update(figures)
        if not sse_clients:
            # Then a paced run on the store the saturated run filled: the tail latency
            # without the queueing that only mirrors throughput at saturation.
            paced_text = await run_wrk(
                port, seconds, conns, limit, script, delay_ms=size("wrk_paced_delay_ms", quick)
            )
            paced = parse_wrk(paced_text)
            result.update({f"paced_{k}": v for k, v in paced.items()})
            text += "\n--- paced ---\n" + paced_text
            if paced.get("p99_ms") is None:
                problems.append("could not parse the paced wrk output: " + paced_text[-300:])
            if paced.get("non2xx") or paced.get("socket_errors"):
                problems.append(
                    f"paced wrk: {paced['non2xx']} non-2xx, {paced['socket_errors']} socket errors"
                )
        if clients_proc is not None:
            clients_proc.stdin.write(b"stop\n")
            await clients_proc.stdin.drain()
            out, _ = await asyncio.wait_for(clients_proc.communicate(), 30)
            stats = json.loads(out.decode().strip().splitlines()[-1])
            result["sse"] = stats
            if stats["connected"] != sse_clients:
                problems.append(f"{stats['connected']}/{sse_clients} SSE clients connected")
            if impl.tracked and stats["events"] < sse_clients:
                problems.append(f"SSE clients received only {stats['events']} events in all")
            await asyncio.sleep(0.5)  # the streams notice their clients left
            after, _ = await measured()
            result["none_after"] = after
            runs = (before, after)
            if any(r.get("rps") is None or r.get("rps_cpu") is None for r in runs):
                problems.append("could not parse the wrk output of a run without clients")
            elif result.get("rps") and result.get("rps_cpu"):
                result["rps_none"] = statistics.mean(r["rps"] for r in runs)
                result["rps_cpu_none"] = statistics.mean(r["rps_cpu"] for r in runs)
                result["ratio"] = result["rps"] / result["rps_none"]
                result["ratio_cpu"] = result["rps_cpu"] / result["rps_cpu_none"]
        if result.get("rps") is None or result.get("p99_ms") is None:
            problems.append("could not parse wrk output: " + text[-300:])
        if result.get("non2xx") or result.get("socket_errors"):
            problems.append(
                f"wrk: {result['non2xx']} non-2xx, {result['socket_errors']} socket errors"
            )
        drained = await wait_until(lambda: C.n >= len(impl.ids), 60, 0.01)
        if not drained or C.n != len(impl.ids):
            problems.append(f"executed {C.n} tasks for {len(impl.ids)} requests")
        result["requests_served"] = len(impl.ids)
        if impl.tracked:
            await wait_until(lambda: impl.status(impl.ids[-1]) in FINAL, 10, 0.01)
            check_bad_ids(impl.ids, problems)
            result["statuses"] = check_final(
                impl, impl.ids, problems, MAX_HISTORY if impl.name == "ours" else None
            )
    finally:
        if clients_proc is not None and clients_proc.returncode is None:
            clients_proc.kill()
        server.should_exit = True
        try:
            await asyncio.wait_for(serving, 15)
        except (asyncio.TimeoutError, Exception) as exc:  # noqa: BLE001
            problems.append(f"server shutdown: {type(exc).__name__}: {exc}")
        shutil.rmtree(tmp, ignore_errors=True)
    result["wrk_text"] = text.strip()
    return result


async def sse_clients_main(args):
    """Helper process: N SSE readers on P/dashboard/stream, counting events until told to stop."""
    path = args.path
    stats = {"connected": 0, "events": 0, "bytes": 0, "statuses": []}
    stop = asyncio.Event()
    marker = b"event:"

    async def reader(ready):
        reader_, writer = await asyncio.open_connection("127.0.0.1", args.port)
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n".encode()
        )
        await writer.drain()
        head = await reader_.readuntil(b"\r\n\r\n")
        status = head.split(b" ", 2)[1].decode()
        stats["statuses"].append(status)
        if status == "200":
            stats["connected"] += 1
        ready.set()
        tail = b""
        try:
            while not stop.is_set():
                chunk = await reader_.read(65536)
                if not chunk:
                    break
                stats["bytes"] += len(chunk)
                data = tail + chunk
                stats["events"] += data.count(marker)
                tail = data[-(len(marker) - 1) :]
        finally:
            writer.close()

    readies = [asyncio.Event() for _ in range(args.clients)]
    tasks = [asyncio.create_task(reader(ev)) for ev in readies]
    await asyncio.wait_for(asyncio.gather(*(ev.wait() for ev in readies)), 15)
    print("READY", flush=True)
    loop = asyncio.get_running_loop()
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.readline), args.seconds)
    stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    stats["statuses"] = dict(collections.Counter(stats["statuses"]))
    print(json.dumps(stats), flush=True)


async def sc_drain(args, problems):
    """Enqueue N tasks outside a request at once; time until all final and flushed (shutdown)."""
    n = size("drain_n", args.quick)
    tmp = Path(tempfile.mkdtemp(prefix="tfbench-"))
    db = tmp / "tasks.db"
    impl = IMPLS[args.impl](snapshot_db=str(db))
    impl.register(noop_async)
    await impl.startup()
    ids = []
    with Profile(args):
        t0 = time.perf_counter()
        for _ in range(n):
            ids.append(impl.add(noop_async))
        enqueued = time.perf_counter() - t0
        ran = await wait_until(lambda: C.n >= n, DEADLINE)
        final = await wait_until(
            lambda: all(impl.status(i) in FINAL for i in ids[-100:]), 30, 0.005
        )
        if impl.tracked:
            final = await wait_until(lambda: all(impl.status(i) in FINAL for i in ids), 30, 0.02)
        t_final = time.perf_counter() - t0
        await impl.shutdown()
        elapsed = time.perf_counter() - t0
    if not ran or C.n != n:
        problems.append(f"executed {C.n}/{n} tasks within the time bound")
    if not final:
        problems.append("not all tasks reached a final status")
    result = {
        "tasks_per_s": n / elapsed,
        "tasks": n,
        "enqueue_s": enqueued,
        "final_s": t_final,
        "flushed_s": elapsed,
    }
    if impl.tracked:
        check_bad_ids(ids, problems)
        flushed = await impl.history_count(db, status="success")
        result["flushed"] = flushed
        if flushed != n:
            problems.append(f"{flushed} success rows in the file after shutdown, not {n}")
    shutil.rmtree(tmp, ignore_errors=True)
    return result


async def sc_memory(args, problems):
    """RSS growth while 200,000 no-op tasks finish, max_history=10,000 (the peer keeps all)."""
    total = size("memory_total", args.quick)
    warm, batch = 500, 1000
    impl = IMPLS[args.impl](max_history=MAX_HISTORY)
    impl.register(noop_async)
    await impl.startup()
    deadline = time.perf_counter() + DEADLINE
    rss = {}
    last_batch: list = []

    async def run_to(count):
        nonlocal last_batch
        while C.n < count:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"memory: {C.n}/{total} tasks after {DEADLINE:.0f} s")
            start = C.n
            k = min(batch, count - start)
            batch_ids = [impl.add(noop_async) for _ in range(k)]
            last_batch = batch_ids
            if not await wait_until(lambda s=start, k=k: C.n >= s + k, 30, 0.001):
                raise TimeoutError(f"memory: batch stuck at {C.n}")
            if impl.tracked:
                last = batch_ids[-1]
                await wait_until(lambda last=last: impl.status(last) in FINAL, 10, 0.001)

    def sample(label):
        gc.collect()
        rss[label] = rss_bytes()

    t0 = time.perf_counter()
    with Profile(args):
        await run_to(warm)
        sample("warm")
        await run_to(MAX_HISTORY)
        sample("at_max_history")
        await run_to(2 * MAX_HISTORY)
        sample("at_2x")
        await run_to(total)
        await asyncio.sleep(0.05)
        sample("end")
    elapsed = time.perf_counter() - t0
    if impl.tracked:
        check_bad_ids(last_batch, problems)
        check_final(impl, last_batch, problems)
    in_memory = None
    if impl.name == "ours":
        _, in_memory = await impl.tm.query(limit=1)
        if in_memory > MAX_HISTORY:
            problems.append(f"{in_memory} records kept with max_history={MAX_HISTORY}")
    elif impl.name == "peer":
        in_memory = len(impl.tm.store.list())
    await impl.shutdown()
    if C.n != total:
        problems.append(f"executed {C.n}/{total}")
    mb = 1024 * 1024
    return {
        "bytes_per_record": (rss["at_max_history"] - rss["warm"]) / (MAX_HISTORY - warm),
        "growth_after_mb": (rss["end"] - rss["at_2x"]) / mb,
        "growth_total_mb": (rss["end"] - rss["warm"]) / mb,
        "bytes_per_task_total": (rss["end"] - rss["warm"]) / (total - warm),
        "records_in_memory": in_memory,
        "tasks": total,
        "seconds": elapsed,
        "rss_mb": {k: round(v / mb, 1) for k, v in rss.items()},
    }


def copy_db(src):
    tmp = Path(tempfile.mkdtemp(prefix="tfbench-"))
    for suffix in ("", "-wal", "-shm"):
        if Path(str(src) + suffix).exists():
            shutil.copy(str(src) + suffix, tmp / ("tasks.db" + suffix))
    return tmp, tmp / "tasks.db"


async def sc_endpoint(args, problems, which):
    """GET P (one page) or P/metrics against a restarted manager with prepared history rows."""
    import httpx

    rows = args.rows
    tmp, db = copy_db(args.db) if args.db else (Path(tempfile.mkdtemp(prefix="tfbench-")), None)
    impl = IMPLS[args.impl](**({"snapshot_db": str(db)} if db else {}))
    for func in (noop_async, boom):
        impl.register(func)
    app = impl.build_app(noop_async)
    await start_app(app)  # no shutdown: see below
    path = impl.list_path if which == "list" else "/tasks/metrics"
    latencies = []
    max_requests = size("list_requests", args.quick)
    budget = size("list_seconds", args.quick)
    # No shutdown afterwards (the peer's re-writes every row it loaded); the process just ends.
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        t_end = time.perf_counter() + budget
        first = None
        with Profile(args):
            while len(latencies) < max_requests and (
                len(latencies) < 2 or time.perf_counter() < t_end
            ):
                t0 = time.perf_counter()
                response = await client.get(path)
                latencies.append((time.perf_counter() - t0) * 1000)
                if first is None:
                    first = response
                    if response.status_code != 200:
                        problems.append(f"GET {path}: {response.status_code}")
                        break
    result = {
        "ms": statistics.median(latencies),
        "first_ms": latencies[0],
        "requests": len(latencies),
        "bytes": len(first.content),
        "rows": rows,
    }
    if first.status_code == 200:
        if which == "list":
            problems.extend(impl.check_list(first, rows))
        elif impl.tracked:
            body = first.json()
            if body.get("total") != rows:
                problems.append(f"metrics total {body.get('total')!r} != {rows}")
            result["metrics_keys"] = sorted(body)
    shutil.rmtree(tmp, ignore_errors=True)
    return result


async def sc_startup(args, problems):
    """startup() against a file with prepared history rows: time and RSS it adds."""
    tmp, db = copy_db(args.db)
    impl = IMPLS[args.impl](snapshot_db=str(db))
    for func in (noop_async, boom):
        impl.register(func)
    gc.collect()
    rss0 = rss_bytes()
    with Profile(args):
        t0 = time.perf_counter()
        await impl.startup()
        elapsed = time.perf_counter() - t0
    gc.collect()
    rss1 = rss_bytes()
    if impl.name == "ours":
        _, total = await impl.tm.query(limit=1)
    else:
        total = len(impl.tm.store.list())
    if total != args.rows:
        problems.append(f"after startup the manager sees {total} tasks, not {args.rows}")
    # No shutdown (the peer's re-writes every row it loaded); the process just ends.
    shutil.rmtree(tmp, ignore_errors=True)
    return {"seconds": elapsed, "rss_mb": (rss1 - rss0) / (1024 * 1024), "rows": args.rows}


async def prep(args):
    """Write a history file with `rows` finished tasks (95% success, 5% failed) for one impl."""
    rows, out = args.rows, Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(str(out) + suffix).unlink(missing_ok=True)
    problems = []
    t0 = time.perf_counter()
    if args.impl == "peer":
        # Inserted through the peer's own backend API (running 100,000 tasks costs one
        # transaction each there; the rows are the same either way).
        from fastapi_taskflow import SqliteBackend, TaskRecord, TaskStatus

        backend = SqliteBackend(str(out))
        start = datetime.now(timezone.utc) - timedelta(seconds=rows / 100)
        chunk = []
        for i in range(rows):
            created = start + timedelta(milliseconds=10 * i)
            failed = i % 20 == 19
            chunk.append(
                TaskRecord(
                    task_id=str(uuid.uuid4()),
                    func_name="boom" if failed else "noop_async",
                    status=TaskStatus.FAILED if failed else TaskStatus.SUCCESS,
                    created_at=created,
                    start_time=created + timedelta(microseconds=200),
                    end_time=created + timedelta(microseconds=400),
                    error="boom: prepared failure" if failed else None,
                    stacktrace="Traceback (most recent call last):\n  ...\nRuntimeError: boom"
                    if failed
                    else None,
                    executor="async",
                )
            )
            if len(chunk) == 5000:
                await backend.save(chunk)
                chunk = []
        if chunk:
            await backend.save(chunk)
        await backend.close()
        count = peer_rows(out)
    else:
        impl = Ours(snapshot_db=str(out))
        for func in (noop_async, boom):
            impl.register(func)
        await impl.startup()
        deadline = time.perf_counter() + 300
        done = 0
        while done < rows and time.perf_counter() < deadline:
            k = min(2000, rows - done)
            for i in range(done, done + k):
                impl.add(boom if i % 20 == 19 else noop_async)
            done += k
            await wait_until(lambda d=done: C.n >= d, 60, 0.002)
        await asyncio.sleep(0.2)
        await impl.shutdown()
        count = await impl.history_count(out)
    if count != rows:
        problems.append(f"prepared file holds {count} rows, not {rows}")
    with sqlite3.connect(out) as conn:  # one self-contained file to copy
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return {
        "rows": count,
        "seconds": time.perf_counter() - t0,
        "ok": not problems,
        "problems": problems,
    }


SCENARIOS = {
    "enqueue_async": lambda a, p: sc_enqueue(a, p, "async"),
    "enqueue_sync": lambda a, p: sc_enqueue(a, p, "sync"),
    "uvicorn_wrk": lambda a, p: sc_uvicorn(a, p),
    "persist_enqueue": lambda a, p: sc_enqueue(a, p, "async", persist=True),
    "drain": sc_drain,
    "memory": sc_memory,
    "list": lambda a, p: sc_endpoint(a, p, "list"),
    "metrics": lambda a, p: sc_endpoint(a, p, "metrics"),
    "startup": sc_startup,
    "sse": lambda a, p: sc_uvicorn(a, p, sse_clients=a.clients),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=[*SCENARIOS, "prep", "sse-clients"])
    parser.add_argument("impl", choices=[*IMPLS, "-"])
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--profile", action="store_true", help="pyinstrument -> bench/results/profiles"
    )
    parser.add_argument("--variant", default="")
    parser.add_argument("--db", help="prepared history file (list, metrics, startup)")
    parser.add_argument("--rows", type=int, default=0)
    parser.add_argument("--out")
    parser.add_argument("--port", type=int)
    parser.add_argument("--clients", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--path", default="/tasks/dashboard/stream")
    args = parser.parse_args(argv)
    logging.disable(logging.CRITICAL)  # task failures and peer warnings are expected noise

    if args.scenario == "sse-clients":
        asyncio.run(sse_clients_main(args))
        return 0
    if args.scenario == "prep":
        result = asyncio.run(prep(args))
    else:
        problems: list[str] = []
        result = {"scenario": args.scenario, "impl": args.impl, "variant": args.variant}
        result["load_before"] = os.getloadavg()[0]
        try:
            result.update(asyncio.run(SCENARIOS[args.scenario](args, problems)))
        except Exception as exc:  # noqa: BLE001 - reported as a failed check
            problems.append(f"{type(exc).__name__}: {exc}")
            result["traceback"] = traceback.format_exc()
        result["ok"] = not problems
        result["problems"] = problems
        result["load_after"] = os.getloadavg()[0]
    if args.json:
        print(json.dumps(result, default=str), flush=True)
    else:
        print(json.dumps(result, indent=2, default=str), flush=True)
    sys.stdout.flush()
    os._exit(0)  # do not wait for daemon threads left by an implementation


if __name__ == "__main__":
    sys.exit(main())
