"""One benchmark measurement in a fresh process; `bench/run.py` starts one per scenario and round.

    python bench/_worker.py <scenario> <impl> --json [--quick] [--variant V] [--db PATH]
    python bench/_worker.py prep <impl> --rows N --out PATH    (history for list/metrics/startup)
    python bench/_worker.py sse-clients - --port P --clients N  (helper process: N SSE readers)
    python bench/_worker.py pg_<scenario> <impl> [--pg-url URL] [--sqlite] [--db PATH]
    python bench/_worker.py procrastinate-worker - --pg-url URL  (helper: procrastinate's worker)
    python bench/_worker.py arq-worker - --port P        (helper: arq's worker on Redis at port P)
    python bench/_worker.py dashboard-server ours --db PATH --port P  (helper: uvicorn + TaskAdmin)

Implementations: `plain` (FastAPI BackgroundTasks, no tracking: the floor), `ours` (taskflow.py
from taskflow_vendor/), `peer` (fastapi_taskflow, see bench/requirements.txt) and, in
`pg_latency` only, `procrastinate` (a PostgreSQL task queue, its worker in a child process), and
in `arq_latency` only, `arq` (an asyncio job queue on Redis: a redis-server and arq's worker in
child processes).
The last line on stdout is one JSON object: the measures, `ok` and `problems` (the correctness
checks). Every load is bounded in count and in time, and everything listens on 127.0.0.1 only.

The `pg_*` scenarios use the database `--pg-url` names (bench/run.py starts a throwaway
PostgreSQL server with tests/apps/pg_support.py and hands every run a fresh database); without
it the worker starts a server of its own. `--sqlite` runs the same scenario on a SQLite file.
"""

import argparse
import asyncio
import collections
import contextlib
import gc
import json
import logging
import math
import os
import re
import shutil
import signal
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
    # pg_latency: a burst of N tasks at once, after a paced phase (one task every 1/rate s)
    "latency_n": (10_000, 3_000),
    "paced_n": (300, 150),
    "paced_rate": (150, 150),
    # list_memory: tasks run before the list requests (variant -> (full, quick) count)
    "list_memory_2k": (2_000, 2_000),
    "list_memory_10k": (10_000, 10_000),
    "list_memory_50k": (50_000, 20_000),
    "list_memory_requests": (40, 30),  # per query, at least 30 (the issue's measure)
    "dashboard_loads": (7, 5),
}
PROCRASTINATE_CONCURRENCY = 10  # its worker's async concurrency (see docs/benchmarks.md)
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

    async def flush(self):
        return 0

    def status(self, task_id):
        return "success"

    def check_list(self, response, rows):
        return []


class Tracked:
    """What ours and the peer share: the same registration and the same enqueue app."""

    def register(self, func, **options):
        self.tm.task(**options)(func)
        return func

    def build_app(self, func, admin=True, auto_install=False, keyed=False):
        """The enqueue app; ``auto_install``: a plain ``BackgroundTasks`` parameter after
        ``TaskAdmin(..., auto_install=True)`` instead of ``Depends(tm.get_tasks)``;
        ``keyed``: each request's task has an idempotency key of its own."""
        from fastapi import BackgroundTasks, Depends, FastAPI

        app = FastAPI()
        if admin:
            self.mod.TaskAdmin(app, self.tm, **({"auto_install": True} if auto_install else {}))
        tm, ids = self.tm, self.ids

        if auto_install:

            @app.post("/enqueue")
            async def enqueue_plain_parameter(background_tasks: BackgroundTasks):
                task_id = background_tasks.add_task(func)
                ids.append(task_id)
                return {"task_id": task_id}

        elif keyed:
            numbers = iter(range(1 << 62))

            @app.post("/enqueue")
            async def enqueue_keyed(tasks=Depends(tm.get_tasks)):
                # A new key each time: every add claims its key in the database.
                key = f"order-{next(numbers)}"
                task_id = tasks.with_options(idempotency_key=key).add_task(func)
                ids.append(task_id)
                return {"task_id": task_id}

        else:

            @app.post("/enqueue")
            async def enqueue(tasks=Depends(tm.get_tasks)):
                task_id = tasks.add_task(func)
                ids.append(task_id)
                return {"task_id": task_id}

        return app


class Ours(Tracked):
    """taskflow.py, imported from taskflow_vendor/ exactly as a service vendors it."""

    @staticmethod
    def queue_class():
        vendor = os.environ.get("BENCH_TASKFLOW_DIR") or str(ROOT / "taskflow_vendor")
        sys.path.insert(0, vendor)
        try:
            import taskflow
        finally:
            sys.path.remove(vendor)
        return taskflow.Queue

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

    async def flush(self):
        """Write every change now (`tm.flush()`); the manager keeps running."""
        return await self.tm.flush()

    def status(self, task_id):
        record = self.tm.get(task_id)
        return None if record is None else sval(record.status)

    def latency(self, task_id):
        """Seconds from add_task to the task's end (record.ended - record.created)."""
        record = self.tm.get(task_id)
        if record is None or record.ended is None:
            return None
        return record.ended - record.created

    def watch_writes(self):
        """A WriteWatch filled by every database write from now on (or None).

        Bench-side instrumentation of the manager's storage (a private attribute): when the
        module changes shape, it returns None and the figures it gives are left out."""
        db = getattr(self.tm, "_db", None)
        if db is None or not callable(getattr(db, "write", None)):
            return None
        watch, write = WriteWatch(), db.write

        async def timed_write(rows, *args, **kwargs):
            t0 = time.perf_counter()
            # What write() returns matters: False tells the manager that another process
            # declared it dead, and it then gives up its pending tasks.
            kept = await write(rows, *args, **kwargs)
            watch.durations.append(time.perf_counter() - t0)
            watch.rows.append(len(rows))
            now = time.time()
            for row in rows:
                if len(row) > 2 and row[2] in FINAL:
                    watch.written.setdefault(row[0], now)
            return kept

        db.write = timed_write
        return watch

    async def history_count(self, path, status=None):
        """Rows a fresh manager finds in the file or database (through the module's own API)."""
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


class WriteWatch:
    """What Ours.watch_writes records: per write its duration and rows; per task the time
    its row with a final status was written."""

    def __init__(self):
        self.written: dict = {}
        self.durations: list = []
        self.rows: list = []

    def __contains__(self, task_id):
        return task_id in self.written

    def __getitem__(self, task_id):
        return self.written[task_id]

    def summary(self):
        if not self.durations:
            return {"writes": 0}
        return {
            "writes": len(self.durations),
            "rows_per_write": statistics.mean(self.rows),
            "write_ms": statistics.median(self.durations) * 1000,
        }


class Peer(Tracked):
    """fastapi-taskflow 0.12.1 (the peer); it has no max_history, the option is dropped."""

    name = "peer"
    tracked = True
    list_path = "/tasks"

    def __init__(self, **options):
        import fastapi_taskflow

        self.mod = fastapi_taskflow
        options.pop("max_history", None)
        if is_pg(options.get("snapshot_db")):
            # Its PostgreSQL backend (psycopg2, see bench/requirements.txt).
            from fastapi_taskflow.backends import PostgresBackend

            options["snapshot_backend"] = PostgresBackend(options.pop("snapshot_db"))
        self.tm = fastapi_taskflow.TaskManager(**options)
        self.ids: list = []
        self._bt = fastapi_taskflow.ManagedBackgroundTasks(self.tm)
        self._down = False

    def add(self, func):
        # The peer has no enqueue outside a request; eager=True dispatches at once.
        return self._bt.add_task(func, eager=True)

    async def startup(self):
        await self.tm.startup()

    async def shutdown(self):
        if not self._down:
            self._down = True
            await self.tm.shutdown()

    async def flush(self):
        """The peer has no flush: its shutdown writes the snapshot (as in `drain`)."""
        await self.shutdown()

    def status(self, task_id):
        record = self.tm.store.get(task_id)
        return None if record is None else sval(record.status)

    def latency(self, task_id):
        record = self.tm.store.get(task_id)
        if record is None or record.end_time is None:
            return None
        return (record.end_time - record.created_at).total_seconds()

    async def history_count(self, path, status=None):
        if is_pg(path):
            sql = "SELECT count(*) FROM task_snapshots" + (" WHERE status = $1" if status else "")
            return await pg_scalar(str(path), sql, *([status] if status else []))
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


class Procrastinate:
    """procrastinate (a PostgreSQL task queue): only `pg_latency` runs it (`sc_latency`)."""

    name = "procrastinate"
    tracked = True

    def __init__(self, **_options):
        raise RuntimeError("procrastinate runs in pg_latency only")


class Arq:
    """arq (an asyncio job queue on Redis): only `arq_latency` runs it (`arq_latency`)."""

    name = "arq"
    tracked = True

    def __init__(self, **_options):
        raise RuntimeError("arq runs in arq_latency only")


IMPLS = {"plain": Plain, "ours": Ours, "peer": Peer, "procrastinate": Procrastinate, "arq": Arq}


def is_pg(target) -> bool:
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


async def pg_scalar(url, sql, *params):
    import asyncpg

    conn = await asyncpg.connect(url, timeout=30)
    try:
        return await conn.fetchval(sql, *params)
    finally:
        await conn.close()


PG_SERVER = []  # a server this worker started itself (no --pg-url): cleaned up at exit


def pg_target(args):
    """The PostgreSQL URL of this run: --pg-url, else a database on a server started here."""
    if args.pg_url:
        return args.pg_url
    import _pg  # tests/apps/pg_support.py's server, with the benchmarks' settings

    server = _pg.start()
    PG_SERVER.append(server)
    args.pg_url = _pg.create(server)
    return args.pg_url


def snapshot_target(args, tmp):
    """Where this run's tasks persist: a SQLite file with --sqlite, else PostgreSQL."""
    return str(tmp / "tasks.db") if args.sqlite else pg_target(args)


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


class LoopWatch:
    """What stalls the event loop during a measured run: the longest lateness of a 2 ms
    sleeper on the loop (any callback, the collector or a maintenance turn that holds the
    loop shows here), how many wake-ups came 10 ms late or more (a saturated server's loop
    turn takes a few ms; issue 15 saw stalls of 15-40 ms), and the collector's longest
    pause (gc.callbacks). The sleeper costs both implementations the same."""

    STALL_MS = 10.0

    def __init__(self):
        self.max_lag = 0.0
        self.stalls = 0
        self.gc_max = 0.0
        self.gc_full = 0
        self._gc_start = None
        self._task = None

    def _on_gc(self, phase, info):
        if phase == "start":
            self._gc_start = time.perf_counter()
        elif self._gc_start is not None:
            self.gc_max = max(self.gc_max, time.perf_counter() - self._gc_start)
            self.gc_full += info.get("generation") == 2

    async def _watch(self):
        while True:
            t0 = time.perf_counter()
            await asyncio.sleep(0.002)
            lag = (time.perf_counter() - t0 - 0.002) * 1000
            self.max_lag = max(self.max_lag, lag)
            self.stalls += lag >= self.STALL_MS

    def __enter__(self):
        gc.callbacks.append(self._on_gc)
        self._task = asyncio.get_running_loop().create_task(self._watch())
        return self

    def __exit__(self, *exc):
        gc.callbacks.remove(self._on_gc)
        self._task.cancel()
        return False

    def figures(self):
        return {
            "max_stall_ms": self.max_lag,
            "stalls": self.stalls,
            "gc_max_ms": self.gc_max * 1000,
            "gc_full": self.gc_full,
        }


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
    target = None
    pg = args.scenario.startswith("pg_")
    # keyed: no persist=True, but a database, where every add claims its idempotency key.
    keyed = args.variant.endswith("keyed") and args.impl == "ours"
    if keyed:
        persist = False
    if (persist or keyed) and args.impl != "plain":
        # pg_persist_enqueue: PostgreSQL (or, with --sqlite, the file as in persist_enqueue)
        target = snapshot_target(args, tmp) if pg else str(tmp / "tasks.db")
    options = {"snapshot_db": target} if target else {}
    register = {"persist": True} if persist else {}
    if args.variant == "queues" and args.impl == "ours":
        # Issue 16: named queues and a priority configured must cost (almost) nothing.
        # The task's queue is limited far above the load, so its gate is taken each time.
        queue = IMPLS["ours"].queue_class()
        options["queues"] = {"mail": queue(concurrency=1_000, max_size=100_000), "bulk": queue()}
        register.update(queue="mail", priority=5)
    impl = IMPLS[args.impl](**options)
    func = noop_async if kind == "async" else noop_sync
    impl.register(func, **register)
    if args.variant == "auto_install" and args.impl == "ours":
        # The drop-in path: FastAPI special-cases a BackgroundTasks parameter, where
        # Depends(tm.get_tasks) is a sub-dependency to solve on every request.
        app = impl.build_app(func, auto_install=True)
    elif keyed:
        app = impl.build_app(func, keyed=True)
    else:
        app = impl.build_app(func)
    stop = await start_app(app)  # as a server starts it (ours: TaskAdmin starts the manager)
    n, warm, conc = (
        size("enqueue_n", quick),
        size("enqueue_warm", quick),
        size("enqueue_conc", quick),
    )
    transport = httpx.ASGITransport(app=app)
    watch, write_stats = None, None
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            done_w, err_w = await http_load(
                client, "/enqueue", warm, conc, time.perf_counter() + 30
            )
            await wait_until(lambda: C.n >= done_w, 10)
            before = C.n
            bound = size("enqueue_seconds", quick)
            # pg_*: each write's duration (the commit persist=True requests wait for)
            if target and impl.name == "ours" and pg:
                watch = impl.watch_writes()
            with Profile(args):
                t0, cpu0 = time.perf_counter(), time.process_time()
                done, errors = await http_load(client, "/enqueue", n, conc, t0 + bound)
                drained = await wait_until(lambda: C.n >= before + done, 30)
                elapsed = time.perf_counter() - t0
                cpu = time.process_time() - cpu0
            if watch is not None:
                write_stats = watch.summary()
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
    if write_stats:
        result.update(write_stats)
    if (persist or keyed) and impl.tracked:
        flushed = await impl.history_count(target, status="success")
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


async def spawn_self(*argv, **kwargs):
    """This script in a child process, running one of its helper commands (SSE clients, a
    queue's worker, the dashboard's server)."""
    script = str(Path(__file__))
    return await asyncio.create_subprocess_exec(sys.executable, script, *argv, **kwargs)


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
            clients_proc = await spawn_self(
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
        with Profile(args), LoopWatch() as watch:
            figures, text = await measured()
        result.update(figures)
        result.update(watch.figures())
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


async def add_all_and_drain(args, impl, n, problems, written):
    """drain and pg_drain: add n no-op tasks outside a request at once, wait until they ran
    and are final, then await ``written()`` (a shutdown or a flush: what stores them). Seconds
    from the first add to the last add, to all final, to written; and what written() gave."""
    ids = []
    with Profile(args):
        t0 = time.perf_counter()
        for _ in range(n):
            ids.append(impl.add(noop_async))
        enqueued = time.perf_counter() - t0
        ran = await wait_until(lambda: C.n >= n, DEADLINE)
        final = await wait_final(impl, ids, 30)
        t_final = time.perf_counter() - t0
        outcome = await written()
        elapsed = time.perf_counter() - t0
    if not ran or C.n != n:
        problems.append(f"executed {C.n}/{n} tasks within the time bound")
    if not final:
        problems.append("not all tasks reached a final status")
    if impl.tracked:
        check_bad_ids(ids, problems)
    return enqueued, t_final, elapsed, outcome


async def sc_drain(args, problems):
    """Enqueue N tasks outside a request at once; time until all final and flushed (shutdown)."""
    n = size("drain_n", args.quick)
    tmp = Path(tempfile.mkdtemp(prefix="tfbench-"))
    db = tmp / "tasks.db"
    impl = IMPLS[args.impl](snapshot_db=str(db))
    impl.register(noop_async)
    await impl.startup()
    enqueued, t_final, elapsed, _ = await add_all_and_drain(args, impl, n, problems, impl.shutdown)
    result = {
        "tasks_per_s": n / elapsed,
        "tasks": n,
        "enqueue_s": enqueued,
        "final_s": t_final,
        "flushed_s": elapsed,
    }
    if impl.tracked:
        flushed = await impl.history_count(db, status="success")
        result["flushed"] = flushed
        if flushed != n:
            problems.append(f"{flushed} success rows in the file after shutdown, not {n}")
    shutil.rmtree(tmp, ignore_errors=True)
    return result


# ---------------------------------------------------------------------------------------------
# PostgreSQL scenarios (pg_*): the same work on PostgreSQL, with --sqlite on a file beside it
# ---------------------------------------------------------------------------------------------


def pct(values, q):
    """The q-quantile of values (nearest rank), or None."""
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


def ms_summary(prefix, seconds):
    return {
        f"{prefix}_p50_ms": (pct(seconds, 0.50) or 0) * 1000 if seconds else None,
        f"{prefix}_p99_ms": (pct(seconds, 0.99) or 0) * 1000 if seconds else None,
        f"{prefix}_max_ms": max(seconds) * 1000 if seconds else None,
    }


async def wait_final(impl, ids, timeout):
    """Every id final: the last 100 first (cheap), then all of them."""
    if not impl.tracked:
        return True
    last = ids[-100:]
    if not await wait_until(lambda: all(impl.status(i) in FINAL for i in last), timeout, 0.005):
        return False
    return await wait_until(lambda: all(impl.status(i) in FINAL for i in ids), timeout, 0.02)


async def sc_drain_written(args, problems):
    """pg_drain: N no-op tasks added outside a request at once, snapshot_db on PostgreSQL
    (--sqlite: a file); tasks/s from the first add until every task is final and written:
    ours `await tm.flush()` (the manager keeps running), the peer its shutdown (it has no
    flush), plain asyncio tasks (no persistence, the floor)."""
    n = size("drain_n", args.quick)
    tmp = Path(tempfile.mkdtemp(prefix="tfbench-"))
    target = snapshot_target(args, tmp) if args.impl != "plain" else None
    impl = IMPLS[args.impl](**({"snapshot_db": target} if target else {}))
    impl.register(noop_async)
    await impl.startup()
    enqueued, t_final, elapsed, written = await add_all_and_drain(
        args, impl, n, problems, impl.flush
    )
    t1 = time.perf_counter()
    await impl.shutdown()
    shutdown_s = time.perf_counter() - t1
    result = {
        "tasks_per_s": n / elapsed,
        "final_per_s": n / t_final,
        "tasks": n,
        "enqueue_s": enqueued,
        "final_s": t_final,
        "written_s": elapsed,
        "flush_rows": written,
        "shutdown_s": shutdown_s,
        "backend": "sqlite" if args.sqlite else "postgresql",
    }
    if impl.tracked:
        stored = await impl.history_count(target, status="success")
        result["stored"] = stored
        if stored != n:
            problems.append(f"{stored} success rows in the database after shutdown, not {n}")
    shutil.rmtree(tmp, ignore_errors=True)
    return result


# pg_list: the page, filtered by status, searched by `q` (matches the 5 % of prepared rows
# whose function is `boom`, by name: a scan plus a count on both databases).
LIST_QUERIES = {"": "", "status": "&status=failed", "q": "&q=boom"}


async def sc_list_filters(args, problems):
    """GET /tasks?limit=100 (and filtered by status, and by q) against a manager started on
    prepared history: a copy of the prepared PostgreSQL database (run.py makes it from a
    template), or with --sqlite a copy of the prepared file (also `list`'s variant
    "filtered"). Medians of alternating requests."""
    rows = args.rows
    if args.impl == "plain":
        tmp, target = Path(tempfile.mkdtemp(prefix="tfbench-")), None
    elif args.sqlite:
        tmp, db = copy_db(args.db)
        target = str(db)
    else:
        tmp, target = Path(tempfile.mkdtemp(prefix="tfbench-")), pg_target(args)
    impl = IMPLS[args.impl](**({"snapshot_db": target} if target else {}))
    for func in (noop_async, boom):
        impl.register(func)
    app = impl.build_app(noop_async)
    await start_app(app)  # no shutdown: a read-only scenario, the process just ends
    max_requests = size("list_requests", args.quick)
    budget = size("list_seconds", args.quick) * len(LIST_QUERIES)
    result = {"rows": rows, "backend": "sqlite" if args.sqlite else "postgresql"}
    result.update(await list_queries(args, app, impl, max_requests, 2, budget, problems, rows))
    shutil.rmtree(tmp, ignore_errors=True)
    return result


async def list_queries(args, app, impl, max_requests, min_requests, budget, problems, rows):
    """GET the list page, unfiltered and with each LIST_QUERIES filter in turn, in process,
    until every query has `max_requests` timings (or `min_requests` and the time `budget` is
    spent); medians per query. Ours' first responses are checked against `rows` prepared
    tasks of which every 20th failed (the `boom` function): 100 items, the total (for `q`,
    among the newest X-Search-Window tasks when the response gives one), the filter."""
    import httpx

    latencies = {key: [] for key in LIST_QUERIES}
    firsts = {}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        t_end = time.perf_counter() + budget
        with Profile(args):
            while True:
                counts = [len(v) for v in latencies.values()]
                if min(counts) >= max_requests or (
                    min(counts) >= min_requests and time.perf_counter() > t_end
                ):
                    break
                for key, extra in LIST_QUERIES.items():
                    path = impl.list_path + extra
                    t0 = time.perf_counter()
                    response = await client.get(path)
                    latencies[key].append((time.perf_counter() - t0) * 1000)
                    if key not in firsts:
                        firsts[key] = response
                        if response.status_code != 200:
                            problems.append(f"GET {path}: {response.status_code}")
                if problems:
                    break
    result = {}
    for key, values in latencies.items():
        suffix = f"_{key}" if key else ""
        result[f"ms{suffix}"] = statistics.median(values)
        result[f"first_ms{suffix}"] = values[0]
        result[f"requests{suffix}"] = len(values)
    result["bytes"] = len(firsts[""].content)
    if impl.name == "ours" and not problems:
        # A search may look at the newest tasks only, and say how many (X-Search-Window).
        window = firsts["q"].headers.get("x-search-window")
        searched = min(rows, int(window)) if window else rows
        if window:
            result["search_window"] = int(window)
        expect = {"": (rows, None), "status": (rows // 20, "failed"), "q": (searched // 20, None)}
        for key, (total, status) in expect.items():
            response = firsts[key]
            body, count = response.json(), response.headers.get("x-total-count")
            label = f"GET {impl.list_path}{LIST_QUERIES[key]}"
            if not isinstance(body, list) or len(body) != min(100, total):
                problems.append(f"{label}: {len(body) if isinstance(body, list) else body!r} items")
                continue
            if count is None or int(count) != total:
                problems.append(f"{label}: X-Total-Count {count!r} != {total}")
            if status and any(item.get("status") != status for item in body):
                problems.append(f"{label}: an item is not {status}")
            if key == "q" and any("boom" not in item.get("func_name", "") for item in body):
                problems.append(f"{label}: an item's function does not match q")
    return result


async def sc_list_memory(args, problems):
    """list_memory: the list page in the default mode (no snapshot_db, max_history=10,000)
    after N no-op tasks ran through a started manager (every 20th fails: `boom`), N from the
    variant (2k, 10k, 50k: the store full, 40,000 evicted). GET /tasks?limit=100, &status=failed
    and &q=boom in turn, in process, at least 30 requests each; medians. Plain: FastAPI
    returning a precomputed page (the floor)."""
    n = size(f"list_memory_{args.variant or '10k'}", args.quick)
    impl = IMPLS[args.impl](**({"max_history": MAX_HISTORY} if args.impl == "ours" else {}))
    for func in (noop_async, boom):
        impl.register(func)
    app = impl.build_app(noop_async)
    await start_app(app)  # no shutdown: the process just ends
    ran = 0
    t0 = time.perf_counter()
    if impl.tracked:
        # In batches of 1,000 (whole batches of 20: the kept records hold exactly 5 % failed),
        # each run and final before the next, so eviction drops whole older batches.
        last = None
        while ran < n:
            k = min(1000, n - ran)
            ids = [impl.add(boom if i % 20 == 19 else noop_async) for i in range(ran, ran + k)]
            ran += k
            last = ids
            if not await wait_until(lambda r=ran: C.n >= r, 60, 0.001):
                raise TimeoutError(f"list_memory: {C.n}/{ran} tasks ran after 60 s")
            if not await wait_until(lambda ids=ids: impl.status(ids[-1]) in FINAL, 10, 0.001):
                raise TimeoutError("list_memory: the last task of a batch is not final")
        check_bad_ids(last, problems)
        statuses = collections.Counter(impl.status(i) for i in last)
        expected = {"success": len(last) - len(last) // 20, "failed": len(last) // 20}
        if dict(statuses) != expected:
            problems.append(f"last batch statuses {dict(statuses)}, not {expected}")
        if C.n != n:
            problems.append(f"executed {C.n}/{n}")
    run_s = time.perf_counter() - t0
    kept = min(n, MAX_HISTORY)
    max_requests = size("list_memory_requests", args.quick)
    result = {"tasks": n, "kept": kept, "run_s": run_s}
    result.update(
        await list_queries(args, app, impl, max_requests, max_requests, DEADLINE, problems, kept)
    )
    if result["requests"] < 30 and not problems:
        problems.append(f"only {result['requests']} requests per query")
    return result


async def sc_latency(args, problems):
    """pg_latency: enqueue → done per task on PostgreSQL, side by side with procrastinate.

    First a paced phase (`paced_n` tasks, one every 1/`paced_rate` s: the latency of one task
    on an idle system), then a burst of `latency_n` tasks added at once (the latency includes
    the wait behind the others, so it mirrors throughput). Ours: `tm.add_task`, latency
    `record.ended - record.created`; variant `persist`: the function has persist=True.
    """
    n, paced_n = size("latency_n", args.quick), size("paced_n", args.quick)
    rate = size("paced_rate", args.quick)
    if args.impl == "procrastinate":
        return await procrastinate_latency(args, problems, n, paced_n, rate)
    persist = args.variant == "persist"
    tmp = Path(tempfile.mkdtemp(prefix="tfbench-"))
    target = snapshot_target(args, tmp) if args.impl != "plain" else None
    impl = IMPLS[args.impl](**({"snapshot_db": target} if target else {}))
    impl.register(noop_async, **({"persist": True} if persist else {}))
    await impl.startup()
    written = impl.watch_writes() if impl.name == "ours" else None

    if impl.name == "plain":
        spans = {}

        def add():
            k = len(spans)
            span = spans[k] = [time.time(), None]

            async def run():
                await noop_async()
                span[1] = time.time()

            impl.add(run)
            return k

        def times_of(k):
            return tuple(spans[k])

    else:

        def add():
            return impl.add(noop_async)

        def times_of(task_id):
            if impl.name == "ours":
                record = impl.tm.get(task_id)
                return (record.created, record.ended) if record else (None, None)
            record = impl.tm.store.get(task_id)
            if record is None or record.end_time is None:
                return (None, None)
            return (record.created_at.timestamp(), record.end_time.timestamp())

    def latencies(ids):
        spans_ = [times_of(i) for i in ids]
        return spans_, [e - c for c, e in spans_ if c is not None and e is not None]

    def to_written(ids, spans_):
        if written is None:
            return []
        return [written[i] - c for i, (c, _) in zip(ids, spans_, strict=True) if i in written]

    result = {"tasks": n, "paced_tasks": paced_n, "paced_rate": rate, "persist": persist}
    with Profile(args):
        # Paced: one task every 1/rate s, then every one done.
        ids = []
        start = time.perf_counter()
        for i in range(paced_n):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            ids.append(add())
        ran = await wait_until(lambda: C.n >= paced_n, 30)
        final = await wait_final(impl, ids, 30)
        spans_, paced = latencies(ids)
        result.update(ms_summary("paced", paced))
        if written is not None:  # the maintenance loop writes them (snapshot_interval)
            await wait_until(lambda: all(i in written for i in ids), 5, 0.01)
            result.update(ms_summary("paced_written", to_written(ids, spans_)))
        if len(paced) != paced_n:
            problems.append(f"paced: {len(paced)}/{paced_n} tasks have an end time")
        # Burst: latency_n tasks at once.
        base = C.n
        p0 = time.perf_counter()
        ids = [add() for _ in range(n)]
        result["enqueue_s"] = time.perf_counter() - p0
        ran = ran and await wait_until(lambda: C.n >= base + n, DEADLINE)
        final = final and await wait_final(impl, ids, 30)
        spans_, burst = latencies(ids)
        await impl.flush()
        written_s = time.perf_counter() - p0
    result.update(ms_summary("burst", burst))
    if len(burst) != n:
        problems.append(f"burst: {len(burst)}/{n} tasks have an end time")
    else:
        first = min(c for c, _ in spans_)
        last = max(e for _, e in spans_)
        result["done_per_s"] = n / (last - first)
        result["done_s"] = last - first
    if impl.tracked:
        result["written_per_s"] = n / written_s
        result.update(ms_summary("burst_written", to_written(ids, spans_)))
    await impl.shutdown()
    await check_all_ran(
        impl, target if impl.tracked else None, ran, final, paced_n + n, result, problems
    )
    shutil.rmtree(tmp, ignore_errors=True)
    return result


async def check_all_ran(impl, target, ran, final, expected, result, problems):
    """A latency run's correctness: every task ran and ended, and (with a database
    `target`) every one is stored as a success after shutdown."""
    if not ran or C.n != expected:
        problems.append(f"executed {C.n}/{expected} tasks within the time bound")
    if not final:
        problems.append("not all tasks reached a final status")
    if target:
        stored = await impl.history_count(target, status="success")
        result["stored"] = stored
        if stored != expected:
            problems.append(f"{stored} success rows after shutdown, not {expected}")


def procrastinate_app(url):
    """procrastinate's App on `url` and its no-op task (the same in the worker process)."""
    from procrastinate import App, PsycopgConnector

    app = App(connector=PsycopgConnector(conninfo=url))

    @app.task(name="bench_noop")
    async def bench_noop(t: float, p: str = "") -> None:  # t: when it was deferred
        return None

    return app, bench_noop


async def procrastinate_worker_main(args):
    """Helper process: procrastinate's worker, as `procrastinate worker` runs it (defaults:
    LISTEN/NOTIFY, keeps finished jobs), with async concurrency --concurrency."""
    app, _ = procrastinate_app(args.pg_url)
    async with app.open_async():
        await app.run_worker_async(concurrency=args.concurrency, install_signal_handlers=True)


SUCCEEDED_SQL = "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"
PROCRASTINATE_LATENCY_SQL = """
    SELECT extract(epoch FROM e.at)::float8 - (j.args->>'t')::float8,
        extract(epoch FROM e.at)::float8
    FROM procrastinate_jobs j JOIN procrastinate_events e ON e.job_id = j.id
    WHERE e.type = 'succeeded' AND j.args->>'p' = %s
"""


async def procrastinate_latency(args, problems, n, paced_n, rate):
    """procrastinate's side of pg_latency: schema in a fresh database, its worker in a child
    process on this machine, jobs deferred here. Latency: from the time a job is deferred
    (passed in its arguments) to its `succeeded` event in procrastinate_events (committed by
    the worker: for procrastinate, done is written)."""
    import procrastinate
    import psycopg

    url = pg_target(args)
    app, task = procrastinate_app(url)
    async with app.open_async():
        await app.schema_manager.apply_schema_async()
    concurrency = args.concurrency or PROCRASTINATE_CONCURRENCY
    worker = await spawn_self(
        "procrastinate-worker",
        "-",
        "--pg-url",
        url,
        "--concurrency",
        str(concurrency),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    result = {
        "tasks": n,
        "paced_tasks": paced_n,
        "paced_rate": rate,
        "concurrency": concurrency,
        "version": procrastinate.__version__,
    }
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True)

    async def scalar(sql, *params):
        cursor = await conn.execute(sql, params)
        return (await cursor.fetchone())[0]

    async def succeeded_reaches(count, timeout, interval):
        end = time.perf_counter() + timeout
        while time.perf_counter() < end:
            if worker.returncode is not None:
                return False
            done = await scalar(SUCCEEDED_SQL)
            if done >= count:
                return True
            await asyncio.sleep(interval)
        return False

    async def phase(label):
        cursor = await conn.execute(PROCRASTINATE_LATENCY_SQL, (label,))
        return await cursor.fetchall()

    try:
        ready = await wait_async(
            lambda: scalar("SELECT count(*) FROM procrastinate_workers"), 30, 0.05
        )
        if not ready:
            raise RuntimeError("procrastinate's worker did not register within 30 s")
        await asyncio.sleep(0.5)  # its LISTEN is set up right after it registers
        async with app.open_async():
            with Profile(args):
                start = time.perf_counter()
                for i in range(paced_n):
                    delay = start + i / rate - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    await task.defer_async(t=time.time(), p="paced")
                paced_ok = await succeeded_reaches(paced_n, 30, 0.02)
                t_first = time.time()
                p0 = time.perf_counter()
                for k in range(0, n, 1000):  # its fastest enqueue: 1,000 jobs per statement
                    t = time.time()
                    await task.batch_defer_async(*[{"t": t, "p": "burst"}] * min(1000, n - k))
                result["enqueue_s"] = time.perf_counter() - p0
                burst_ok = await succeeded_reaches(paced_n + n, DEADLINE, 0.1)
        paced = [r[0] for r in await phase("paced")]
        burst_rows = await phase("burst")
        burst = [r[0] for r in burst_rows]
        result.update(ms_summary("paced", paced))
        result.update(ms_summary("burst", burst))
        # Its done is committed: "to written" is the same figure.
        result.update(ms_summary("paced_written", paced))
        result.update(ms_summary("burst_written", burst))
        if burst_rows:
            result["done_s"] = max(r[1] for r in burst_rows) - t_first
            result["done_per_s"] = len(burst_rows) / result["done_s"]
            result["written_per_s"] = result["done_per_s"]
        cursor = await conn.execute(
            "SELECT status::text, count(*) FROM procrastinate_jobs GROUP BY status"
        )
        counts = dict(await cursor.fetchall())
        result["statuses"] = counts
        if not paced_ok or len(paced) != paced_n:
            problems.append(f"paced: {len(paced)}/{paced_n} jobs succeeded within 30 s")
        if not burst_ok or len(burst) != n:
            problems.append(f"burst: {len(burst)}/{n} jobs succeeded within {DEADLINE:.0f} s")
        if set(counts) - {"succeeded"}:
            problems.append(f"jobs not succeeded: {counts}")
    finally:
        await conn.close()
        if worker.returncode is None:
            worker.terminate()  # SIGTERM: procrastinate stops gracefully
            try:
                await asyncio.wait_for(worker.wait(), 15)
            except asyncio.TimeoutError:
                worker.kill()
                await worker.wait()
        err = (await worker.stderr.read()).decode(errors="replace").strip()
        if worker.returncode not in (0, -signal.SIGTERM) and err:
            problems.append(f"worker exit {worker.returncode}: {err.splitlines()[-1][:300]}")
    return result


# ---------------------------------------------------------------------------------------------
# arq_latency: HTTP request -> task done, ours against arq (an asyncio job queue on Redis)
# ---------------------------------------------------------------------------------------------

PLAIN_DONE: list = []  # plain's tasks: (the client's time before the request, their end)


async def plain_timed(t: float):
    C.n += 1
    PLAIN_DONE.append((t, time.time()))


def latency_app(impl_name, func, enqueue_arq=None, ours=None):
    """The app of arq_latency: POST /enqueue?t=<the client's time.time() before the request>.
    Plain passes t to its task (which times itself); ours returns the task id (done is its
    record's `ended`); arq enqueues a job that carries t (done is the job's finish_time)."""
    from fastapi import BackgroundTasks, FastAPI

    if impl_name == "ours":
        return ours.build_app(func)
    app = FastAPI()
    if impl_name == "plain":

        @app.post("/enqueue")
        async def enqueue_plain(t: float, background_tasks: BackgroundTasks):
            background_tasks.add_task(plain_timed, t)
            return {"ok": True}

    else:

        @app.post("/enqueue")
        async def enqueue_job(t: float, p: str = ""):
            job = await enqueue_arq("bench_noop", t, p)
            return {"job_id": job.job_id if job else None}

    return app


@contextlib.asynccontextmanager
async def served(app):
    """uvicorn serving `app` on 127.0.0.1 and a free port in this process (lifespan on, as
    sc_uvicorn runs it); yields the port and shuts it down (the lifespan too) at the end."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="error", access_log=False, lifespan="on"
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    try:
        if not await wait_until(lambda: server.started, 20, 0.01):
            raise RuntimeError("uvicorn did not start within 20 s")
        yield port
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 30)


class Reply:
    __slots__ = ("status_code", "body")

    def __init__(self, status_code, body):
        self.status_code, self.body = status_code, body

    def json(self):
        return json.loads(self.body)


class Conn:
    """One HTTP/1.1 keep-alive connection to 127.0.0.1:port that POSTs and reads the reply.
    A minimal client: httpx's own work per request (~1.5 ms of this process's CPU) bounded
    every implementation at ~530 requests/s, well under what the servers do."""

    def __init__(self, port):
        self.port, self.reader, self.writer = port, None, None

    async def post(self, path):
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n".encode()
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
        body = await self.reader.readexactly(int(length.group(1))) if length else b""
        return Reply(status, body)

    def close(self):
        if self.writer is not None:
            self.writer.close()


async def http_phases(port, n, paced_n, rate, conc, between):
    """The paced phase (one request every 1/rate s, each on an idle system), `await between()`,
    then the burst (n requests, `conc` connections with one request in flight each, within
    DEADLINE). Per request: (its phase, the client's time.time() before it, its reply); and
    the burst's requests per second."""
    sent = []
    conns = [Conn(port) for _ in range(conc)]

    async def one(conn, phase):
        t = time.time()
        reply = await conn.post(f"/enqueue?t={t!r}&p={phase}")
        sent.append((phase, t, reply))

    try:
        start = time.perf_counter()
        for i in range(paced_n):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await one(conns[0], "paced")
        await between(sent)
        issued = 0

        async def client_loop(conn):
            nonlocal issued
            while issued < n:
                issued += 1
                await one(conn, "burst")

        p0 = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(client_loop(c) for c in conns)), DEADLINE)
    finally:
        for conn in conns:
            conn.close()
    return sent, (len(sent) - paced_n) / (time.perf_counter() - p0)


def spans_summary(prefix, spans):
    """ms_summary of (start, end) pairs whose end is known."""
    return ms_summary(prefix, [e - t for t, e in spans if e is not None])


async def sc_arq_latency(args, problems):
    """arq_latency: from the HTTP request (the client's time before it) to the task done,
    plain / ours / arq, through the same kind of FastAPI app under uvicorn in this process and
    a client over TCP in the same process (`Conn`). In-process ASGI (httpx's ASGITransport)
    would never turn the loop between requests, which holds back every task started outside
    the request's own await, as no server does.
    Paced: `paced_n` requests at `paced_rate`/s; burst: `latency_n` requests, 16 in flight.
    Ours: no snapshot_db (variant ""), or persist=True on a SQLite snapshot_db ("persist")."""

    n, paced_n = size("latency_n", args.quick), size("paced_n", args.quick)
    rate, conc = size("paced_rate", args.quick), size("enqueue_conc", args.quick)
    if args.impl == "arq":
        return await arq_latency(args, problems, n, paced_n, rate, conc)
    persist = args.variant == "persist"
    tmp = Path(tempfile.mkdtemp(prefix="tfbench-"))
    target = str(tmp / "tasks.db") if persist and args.impl == "ours" else None
    impl = IMPLS[args.impl](**({"snapshot_db": target} if target else {}))
    impl.register(noop_async, **({"persist": True} if persist else {}))
    app = latency_app(impl.name, noop_async, ours=impl)
    result = {"tasks": n, "paced_tasks": paced_n, "paced_rate": rate, "persist": persist}
    sent, paced, final = [], [], True

    def ids_of(requests):
        return [r.json().get("task_id") for _, _, r in requests]

    def spans_of(requests):
        """(the client's time before the request, the record's `ended`) per request."""
        spans = []
        for (_, t, _), task_id in zip(requests, ids_of(requests), strict=True):
            record = impl.tm.get(task_id)
            spans.append((t, record.ended if record is not None else None))
        return spans

    async def after_paced(sent):
        # Read now: with max_history=10,000 the burst evicts the paced records.
        nonlocal paced, final
        await wait_until(lambda: C.n >= paced_n, 30)
        if impl.tracked:
            final = await wait_final(impl, ids_of(sent), 30)
            paced = spans_of(sent)
        else:
            paced = list(PLAIN_DONE)

    async with served(app) as port:
        with Profile(args):
            sent, result["req_per_s"] = await http_phases(port, n, paced_n, rate, conc, after_paced)
            ran = await wait_until(lambda: C.n >= paced_n + n, DEADLINE)
            burst_sent = sent[paced_n:]
            if impl.tracked:
                final = final and await wait_final(impl, ids_of(burst_sent), 30)
                burst = spans_of(burst_sent)
                result["statuses"] = check_final(impl, ids_of(burst_sent), problems)
            else:
                burst = PLAIN_DONE[paced_n:]
    bad = [r.status_code for _, _, r in sent if r.status_code != 200]
    if bad:
        problems.append(f"HTTP errors: {dict(collections.Counter(bad))}")
    result.update(spans_summary("paced", paced))
    result.update(spans_summary("burst", burst))
    ends = [e for _, e in burst if e is not None]
    if len(ends) == n:
        result["done_per_s"] = n / (max(ends) - min(t for _, t, _ in burst_sent))
    else:
        problems.append(f"burst: {len(ends)}/{n} tasks have an end time")
    if sum(e is not None for _, e in paced) != paced_n:
        problems.append(f"paced: {len(paced)}/{paced_n} tasks have an end time")
    if impl.tracked:
        check_bad_ids(ids_of(sent), problems)
    await check_all_ran(impl, target if target else None, ran, final, paced_n + n, result, problems)
    shutil.rmtree(tmp, ignore_errors=True)
    return result


async def start_redis(tmp):
    """Debian's redis-server on 127.0.0.1 and a free port, its files in tmp, with its
    compiled-in defaults otherwise; (process, port) once it answers PING."""
    import redis.asyncio

    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        shutil.which("redis-server") or "/usr/bin/redis-server",
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(tmp),
        "--daemonize",
        "no",
        "--logfile",
        "",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    client = redis.asyncio.Redis(host="127.0.0.1", port=port)
    try:
        if not await wait_async(client.ping, 20, 0.02):
            proc.kill()
            await proc.wait()
            raise RuntimeError("redis-server did not answer PING within 20 s")
    finally:
        await client.aclose()
    return proc, port


async def stop_process(proc, timeout=15):
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()


async def arq_bench_noop(ctx, t: float, p: str = "") -> None:
    """arq's no-op job (t: the client's time before the request; p: the phase)."""
    return None


async def arq_worker_main(args):
    """Helper process: arq's worker on Redis at --port, as `arq` runs it (its defaults:
    max_jobs=10, poll_delay=0.5 s, results kept an hour), unless --poll-delay is given."""
    from arq import func
    from arq.connections import RedisSettings
    from arq.worker import Worker

    options = {"poll_delay": args.poll_delay} if args.poll_delay else {}
    worker = Worker(
        functions=[func(arq_bench_noop, name="bench_noop")],
        redis_settings=RedisSettings(host="127.0.0.1", port=args.port),
        handle_signals=True,
        **options,
    )
    try:
        await worker.async_run()
    except asyncio.CancelledError:  # SIGTERM: arq cancels its main task
        pass
    finally:
        await worker.close()


async def arq_latency(args, problems, n, paced_n, rate, conc):
    """arq's side of arq_latency: a redis-server and arq's worker in child processes, jobs
    enqueued by the app's route (`await redis.enqueue_job(...)`). Latency: from the client's
    time before the request (carried in the job's arguments) to the job's finish_time in its
    result (arq's own record of done, in ms), for every job, from its results in Redis."""
    import arq
    import arq.version
    from arq.connections import RedisSettings

    tmp = Path(tempfile.mkdtemp(prefix="tfbench-"))
    redis_proc, port = await start_redis(tmp)
    worker = None
    result = {
        "tasks": n,
        "paced_tasks": paced_n,
        "paced_rate": rate,
        "version": arq.version.VERSION,
        "poll_delay": args.poll_delay or None,
    }
    try:
        pool = await arq.create_pool(RedisSettings(host="127.0.0.1", port=port))
        info = await pool.info("server")
        result["redis_version"] = info.get("redis_version")
        worker = await spawn_self(
            "arq-worker",
            "-",
            "--port",
            str(port),
            *(["--poll-delay", str(args.poll_delay)] if args.poll_delay else []),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        # Its first poll writes the health-check key: the worker is polling.
        if not await wait_async(lambda: pool.exists("arq:queue:health-check"), 30, 0.02):
            raise RuntimeError("arq's worker did not write its health check within 30 s")
        app = latency_app("arq", None, enqueue_arq=pool.enqueue_job)

        async def results_count():
            return len(await pool.keys("arq:result:*"))

        async def results_reach(count, timeout):
            end = time.perf_counter() + timeout
            while time.perf_counter() < end:
                if worker.returncode is not None:
                    return False
                if await results_count() >= count:
                    return True
                await asyncio.sleep(0.05)
            return False

        paced_ok = False

        async def after_paced(_sent):
            nonlocal paced_ok
            paced_ok = await results_reach(paced_n, 30)

        async with served(app) as port:
            with Profile(args):
                sent, result["req_per_s"] = await http_phases(
                    port, n, paced_n, rate, conc, after_paced
                )
                burst_ok = await results_reach(paced_n + n, DEADLINE)
        jobs = await pool.all_job_results()
        await pool.aclose()
    finally:
        if worker is not None:
            await stop_process(worker)
        await stop_process(redis_proc)
        shutil.rmtree(tmp, ignore_errors=True)
    err = (await worker.stderr.read()).decode(errors="replace").strip() if worker else ""
    bad_http = [r.status_code for _, _, r in sent if r.status_code != 200]
    if bad_http:
        problems.append(f"HTTP errors: {dict(collections.Counter(bad_http))}")
    ids = {r.json().get("job_id") for _, _, r in sent if r.status_code == 200}
    by_phase = {"paced": [], "burst": []}
    ends = []
    failed = 0
    for job in jobs:
        if job.job_id not in ids:
            continue
        if not job.success:
            failed += 1
            continue
        t, phase = job.args[0], job.args[1]
        end = job.finish_time.timestamp()
        by_phase[phase].append(end - t)
        if phase == "burst":
            ends.append(end)
    paced, burst = by_phase["paced"], by_phase["burst"]
    result.update(ms_summary("paced", paced))
    result.update(ms_summary("burst", burst))
    if ends and len(burst) == n:
        t_first = min(t for phase, t, _ in sent if phase == "burst")
        result["done_per_s"] = n / (max(ends) - t_first)
    result["jobs"] = len(jobs)
    if not paced_ok or len(paced) != paced_n:
        problems.append(f"paced: {len(paced)}/{paced_n} jobs succeeded within 30 s")
    if not burst_ok or len(burst) != n:
        problems.append(f"burst: {len(burst)}/{n} jobs succeeded within {DEADLINE:.0f} s")
    if failed:
        problems.append(f"{failed} jobs failed")
    if len(ids) != paced_n + n:
        problems.append(f"{len(ids)} distinct job ids for {paced_n + n} requests")
    if worker is not None and worker.returncode not in (0, -signal.SIGTERM) and err:
        problems.append(f"worker exit {worker.returncode}: {err.splitlines()[-1][:300]}")
    return result


async def wait_async(probe, timeout, interval):
    """Until the coroutine function `probe` returns something true (or timeout): that value."""
    end = time.perf_counter() + timeout
    while time.perf_counter() < end:
        with contextlib.suppress(Exception):
            value = await probe()
            if value:
                return value
        await asyncio.sleep(interval)
    return None


async def sc_schedule_claim(args, problems):
    """Issue 16: what an occurrence of a periodic task costs on SQLite. The statements
    the database runs are counted (sqlite3's trace callback on the manager's connection):
    per claim of an occurrence, and per maintenance turn that fires one due occurrence
    (the claim plus the read of paused schedules, which every turn makes)."""
    tmp = Path(tempfile.mkdtemp(prefix="tfbench-"))
    impl = IMPLS["ours"](snapshot_db=str(tmp / "tasks.db"))
    tm = impl.tm

    @tm.schedule(every=3600, name="bench_hourly", catch_up=False)
    async def hourly():
        return None

    await tm.startup()
    storage = tm._db  # bench-side instrumentation of a private attribute
    statements: list[str] = []
    await storage.conn.set_trace_callback(statements.append)
    n = 200 if args.quick else 2_000
    t0 = time.perf_counter()
    won = 0
    for i in range(n):
        won += await storage.claim_occurrence("bench", float(i), f"task-{i}")
    claim_s = time.perf_counter() - t0
    per_claim = len(statements) / n
    again = sum([await storage.claim_occurrence("bench", float(i), "x") for i in range(10)])
    if won != n or again:
        problems.append(f"{won}/{n} claims won, {again} of 10 repeated claims won (want 0)")
    # One maintenance turn with a due occurrence: force it due, count what the turn runs.
    schedule = tm._schedules[0]
    schedule.last = float("-inf")
    statements.clear()
    await tm._fire_schedules()
    turn_statements = len(statements)
    claimed = await storage.scalar(
        "SELECT count(*) FROM schedule_runs WHERE name = ?", ("bench_hourly",)
    )
    if claimed != 1:
        problems.append(f"{claimed} occurrences of bench_hourly claimed, want 1")
    await storage.conn.set_trace_callback(None)
    await tm.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)
    return {
        "statements_per_claim": per_claim,
        "ms_per_claim": claim_s / n * 1000,
        "statements_per_turn": turn_statements,
        "claims": n,
    }


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
        sample("empty")  # the started manager, before its first task
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
        # From 0: everything the first max_history records cost, first-use allocations
        # included (the issue's measure); the other from 500 on, once those are paid.
        "bytes_per_record_from_0": (rss["at_max_history"] - rss["empty"]) / MAX_HISTORY,
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


DASHBOARD_USER, DASHBOARD_PASSWORD = "admin", "bench-secret"
DASHBOARD_SECRET = "bench-dashboard-secret-key-0123456789"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [  # as tests/browser/browser_harness.py launches it
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ROW = "#task-rows tr[data-task-id]"
# Before the page's own scripts: the time (performance.now(), from navigation start) at which
# the first task row enters the DOM, and of the next animation frame (the row rendered).
FIRST_ROW_SCRIPT = """
(() => {
  const mark = { row: null, frame: null, shown: null };
  window.__benchFirstRow = mark;
  const seen = () => {
    if (mark.row === null && document.querySelector(ROW_SELECTOR)) {
      mark.row = performance.now();
      requestAnimationFrame(() => { mark.frame = performance.now(); });
    }
    const range = document.getElementById('range');
    if (mark.shown === null && range && /^1\u2013\\d+ of [1-9]/.test(range.textContent)) {
      mark.shown = performance.now();
    }
    return mark.row !== null && mark.shown !== null;
  };
  const observer = new MutationObserver(() => { if (seen()) observer.disconnect(); });
  observer.observe(document, { childList: true, subtree: true, characterData: true });
})();
""".replace("ROW_SELECTOR", repr(ROW))


def dashboard_server_main(args):
    """Helper process: uvicorn serving TaskAdmin (with a login) on the file --db, port --port."""
    import uvicorn
    from fastapi import FastAPI

    impl = Ours(snapshot_db=args.db)
    for func in (noop_async, boom):
        impl.register(func)
    app = FastAPI()
    impl.mod.TaskAdmin(
        app, impl.tm, auth=(DASHBOARD_USER, DASHBOARD_PASSWORD), secret_key=DASHBOARD_SECRET
    )
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="error", access_log=False)


async def sc_dashboard(args, problems):
    """dashboard_load: uvicorn (a child process) serves TaskAdmin on a copy of the prepared
    history file; headless Chromium signs in once, then loads the dashboard `dashboard_loads`
    times, each in a fresh browser context (no cache) holding the session cookie. Per load:
    ms from navigation start to the first animation frame after the first task row entered
    the DOM (the page's own clock), and the same seen from Playwright (wall)."""
    import httpx
    from playwright.async_api import async_playwright

    tmp, db = copy_db(args.db)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    dashboard = f"{base}/tasks/dashboard"
    server = await spawn_self(
        "dashboard-server",
        "ours",
        "--db",
        str(db),
        "--port",
        str(port),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    loads = size("dashboard_loads", args.quick)
    marks, errors = [], []
    result = {"rows": args.rows, "loads": loads}
    try:
        async with httpx.AsyncClient(base_url=base, timeout=2) as client:

            async def ready():
                return (await client.get("/tasks/auth/login")).status_code == 200

            if not await wait_async(ready, 30, 0.05):
                raise RuntimeError("the dashboard server did not answer within 30 s")
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
            )
            options = {"viewport": {"width": 1280, "height": 800}, "locale": "en-US"}
            try:
                # Sign in as a user would (tests/browser/browser_harness.py's log_in).
                context = await browser.new_context(**options)
                page = await context.new_page()
                await page.goto(dashboard)
                await page.fill("#username", DASHBOARD_USER)
                await page.fill("#password", DASHBOARD_PASSWORD)
                await page.click("button[type=submit]")
                await page.wait_for_url(dashboard, timeout=15_000)
                await page.wait_for_selector(ROW, timeout=15_000)
                state = await context.storage_state()
                await context.close()
                with Profile(args):
                    for _ in range(loads):
                        context = await browser.new_context(storage_state=state, **options)
                        page = await context.new_page()
                        page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
                        page.on(
                            "console",
                            lambda m: (
                                errors.append(f"console: {m.text}") if m.type == "error" else None
                            ),
                        )
                        await page.add_init_script(FIRST_ROW_SCRIPT)
                        t0 = time.perf_counter()
                        response = await page.goto(dashboard, wait_until="commit")
                        await page.wait_for_selector(ROW, timeout=15_000)
                        wall = (time.perf_counter() - t0) * 1000
                        await page.wait_for_function(
                            "() => { const m = window.__benchFirstRow;"
                            " return m && m.frame !== null && m.shown !== null; }",
                            timeout=15_000,
                        )
                        mark = await page.evaluate(
                            "(row) => ({...window.__benchFirstRow,"
                            " dcl: performance.getEntriesByType('navigation')[0]"
                            ".domContentLoadedEventEnd, url: location.pathname,"
                            " rows: document.querySelectorAll(row).length,"
                            " range: document.getElementById('range').textContent})",
                            ROW,
                        )
                        mark["wall"] = wall
                        mark["status"] = response.status if response else None
                        marks.append(mark)
                        await context.close()
            finally:
                await browser.close()
    finally:
        if server.returncode is None:
            server.terminate()
            try:
                await asyncio.wait_for(server.wait(), 15)
            except asyncio.TimeoutError:
                server.kill()
                await server.wait()
        err = (await server.stderr.read()).decode(errors="replace").strip()
        shutil.rmtree(tmp, ignore_errors=True)
    if err and "Traceback" in err:
        problems.append(f"dashboard server: {err.splitlines()[-1][:300]}")
    total = f"{args.rows:,}"
    for i, mark in enumerate(marks):
        if mark["status"] != 200 or mark["url"] != "/tasks/dashboard":
            problems.append(f"load {i + 1}: status {mark['status']} at {mark['url']}")
        if mark["rows"] != min(50, args.rows):  # the dashboard's page size
            problems.append(f"load {i + 1}: {mark['rows']} rows shown")
        if not mark["range"].endswith(f"of {total}"):
            problems.append(f"load {i + 1}: range {mark['range']!r}, not '… of {total}'")
    problems.extend(dict.fromkeys(errors))
    frames = [m["frame"] for m in marks]
    result.update(
        {
            "ms": statistics.median(frames),
            "first_ms": frames[0],
            "row_ms": statistics.median(m["row"] for m in marks),
            "wall_ms": statistics.median(m["wall"] for m in marks),
            "dcl_ms": statistics.median(m["dcl"] for m in marks),
            "range_ms": statistics.median(m["shown"] for m in marks),
            "frames_ms": [round(f, 1) for f in frames],
        }
    )
    return result


async def prep(args):
    """Write a history file with `rows` finished tasks (95% success, 5% failed) for one impl;
    ours also into the PostgreSQL database --pg-url (then --out is not needed)."""
    rows = args.rows
    out = args.pg_url or Path(args.out)
    if not args.pg_url:
        out.parent.mkdir(parents=True, exist_ok=True)
        for suffix in ("", "-wal", "-shm"):
            Path(str(out) + suffix).unlink(missing_ok=True)
    elif args.impl != "ours":
        raise SystemExit("prep --pg-url: ours only")
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
        # Through the manager's own write path: the rows are exactly what running them writes.
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
    if args.pg_url:
        # As a database that has lived a while would be: vacuumed, with statistics.
        import asyncpg

        conn = await asyncpg.connect(args.pg_url, timeout=30)
        try:
            await conn.execute("VACUUM ANALYZE")
        finally:
            await conn.close()
    else:
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
    "schedule_claim": sc_schedule_claim,
    "list": lambda a, p: (
        sc_list_filters(a, p) if a.variant == "filtered" else sc_endpoint(a, p, "list")
    ),
    "list_memory": sc_list_memory,
    "dashboard_load": sc_dashboard,
    "arq_latency": sc_arq_latency,
    "metrics": lambda a, p: sc_endpoint(a, p, "metrics"),
    "startup": sc_startup,
    "sse": lambda a, p: sc_uvicorn(a, p, sse_clients=a.clients),
    "pg_persist_enqueue": lambda a, p: sc_enqueue(a, p, "async", persist=True),
    "pg_drain": sc_drain_written,
    "pg_list": sc_list_filters,
    "pg_latency": sc_latency,
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "scenario",
        choices=[
            *SCENARIOS,
            "prep",
            "sse-clients",
            "procrastinate-worker",
            "arq-worker",
            "dashboard-server",
        ],
    )
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
    parser.add_argument("--pg-url", help="PostgreSQL database for pg_* (else a server is started)")
    parser.add_argument("--sqlite", action="store_true", help="pg_*: a SQLite file instead")
    parser.add_argument("--concurrency", type=int, default=0, help="procrastinate's worker")
    parser.add_argument(
        "--poll-delay", type=float, default=0, help="arq's worker poll_delay (default: arq's)"
    )
    args = parser.parse_args(argv)
    logging.disable(logging.CRITICAL)  # task failures and peer warnings are expected noise

    if args.scenario == "sse-clients":
        asyncio.run(sse_clients_main(args))
        return 0
    if args.scenario == "procrastinate-worker":
        args.concurrency = args.concurrency or PROCRASTINATE_CONCURRENCY
        asyncio.run(procrastinate_worker_main(args))
        return 0
    if args.scenario == "arq-worker":
        asyncio.run(arq_worker_main(args))
        return 0
    if args.scenario == "dashboard-server":
        dashboard_server_main(args)
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
    for server in PG_SERVER:  # started here for want of --pg-url
        server.cleanup()
    os._exit(0)  # do not wait for daemon threads left by an implementation


if __name__ == "__main__":
    sys.exit(main())
