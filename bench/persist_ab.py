"""In-process A/B that splits what ``persist=True`` costs (see docs/benchmarks.md).

    .venv/bin/python bench/persist_ab.py [--rounds 8] [--requests 1000]

One process holds every variant's app; the variants take turns, round after round,
each round sending ``--requests`` requests with 16 in flight through httpx's
in-process transport and ending when every task has run. It prints, per variant,
the median wall time and event-loop-thread CPU per request and the wall ratio to
plain. The variants of ours change one method of the loaded module each, to show
where the time goes; none of them is a way to run taskflow:

- ``nowait``: no commit before the response (rows go out with the background flush);
- ``sleep``: the commit's SQLite write replaced by a 1.1 ms sleep (no SQLite, no thread).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from fastapi import BackgroundTasks, Depends, FastAPI

ROOT = Path(__file__).resolve().parent.parent
DONE = [0]


async def noop():
    DONE[0] += 1


def load_taskflow(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "taskflow_vendor" / "taskflow.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def plain_app():
    app = FastAPI()

    @app.post("/enqueue")
    async def enqueue(background_tasks: BackgroundTasks):
        background_tasks.add_task(noop)
        return {"ok": True}

    return app


def ours_app(variant: str):
    tf = load_taskflow(f"taskflow_{variant}")
    if variant == "nowait":

        async def no_commit(self, records):
            return None

        tf.TaskManager._make_durable = no_commit
    elif variant == "sleep":

        async def sleep_write(self, rows, *, heartbeat=False):
            await asyncio.sleep(0.0011)

        tf._Database.write = sleep_write
    persist = variant != "nopersist"
    tm = tf.TaskManager(snapshot_db=str(Path(tempfile.mkdtemp()) / "t.db") if persist else None)
    tm.task(persist=persist)(noop)
    app = FastAPI()
    tf.TaskAdmin(app, tm)

    @app.post("/enqueue")
    async def enqueue(tasks=Depends(tm.get_tasks)):
        return {"task_id": tasks.add_task(noop)}

    return app


async def load(client: httpx.AsyncClient, n: int, in_flight: int = 16) -> None:
    target = DONE[0] + n
    numbers = iter(range(n))

    async def worker():
        for _ in numbers:
            response = await client.post("/enqueue")
            response.raise_for_status()

    await asyncio.gather(*(worker() for _ in range(in_flight)))
    deadline = time.monotonic() + 30
    while DONE[0] < target:
        if time.monotonic() > deadline:
            raise RuntimeError("tasks did not all run within 30 s")
        await asyncio.sleep(0.0005)


async def main(rounds: int, n: int) -> None:
    variants = {"plain": plain_app()}
    for name in ("nopersist", "nowait", "sleep", "persist"):
        variants[name] = ours_app(name)
    clients, lifespans = {}, []
    for name, app in variants.items():
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()  # as a server starts the app: TaskAdmin starts its manager
        lifespans.append(lifespan)
        transport = httpx.ASGITransport(app=app)
        clients[name] = httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1")
        await load(clients[name], 300)  # warm-up
    wall = {name: [] for name in variants}
    loop_cpu = {name: [] for name in variants}
    for _ in range(rounds):
        for name, client in clients.items():
            t0, c0 = time.perf_counter(), time.thread_time()
            await load(client, n)
            wall[name].append((time.perf_counter() - t0) / n * 1e6)
            loop_cpu[name].append((time.thread_time() - c0) / n * 1e6)
    print(f"{rounds} rounds of {n} requests, 16 in flight; medians per request")
    print(f"{'variant':10} {'wall µs':>8} {'loop CPU µs':>12} {'÷ plain':>8}")
    for name in variants:
        ratio = statistics.median(p / o for p, o in zip(wall["plain"], wall[name], strict=True))
        print(
            f"{name:10} {statistics.median(wall[name]):8.0f} "
            f"{statistics.median(loop_cpu[name]):12.0f} {ratio:8.2f}"
        )
    for client in clients.values():
        await client.aclose()
    for lifespan in reversed(lifespans):
        await lifespan.__aexit__(None, None, None)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--requests", type=int, default=1000)
    options = parser.parse_args()
    logging.disable(logging.WARNING)  # TaskAdmin's "no auth" warning, once per variant
    asyncio.run(main(options.rounds, options.requests))
