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
from _worker import ROOT, C, Plain, Tracked, http_load, noop_async, wait_until


class Variant(Tracked):
    """One copy of taskflow.py with at most one method changed, and the bench's enqueue app."""

    name = "ours"

    def __init__(self, variant: str):
        spec = importlib.util.spec_from_file_location(
            f"taskflow_{variant}", ROOT / "taskflow_vendor" / "taskflow.py"
        )
        self.mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = self.mod
        spec.loader.exec_module(self.mod)
        if variant == "nowait":

            async def no_commit(self, records):
                return None

            self.mod.TaskManager._make_durable = no_commit
        elif variant == "sleep":

            async def sleep_write(self, rows, *, heartbeat=False):
                await asyncio.sleep(0.0011)
                return True  # not evicted (False would make the manager give up its tasks)

            self.mod._Storage.write = sleep_write
        persist = variant != "nopersist"
        db = Path(tempfile.mkdtemp(prefix="tfbench-")) / "tasks.db"
        self.tm = self.mod.TaskManager(snapshot_db=str(db) if persist else None)
        self.ids: list = []
        self.register(noop_async, persist=persist)


async def load(client: httpx.AsyncClient, n: int) -> None:
    """``n`` requests, 16 in flight, then until every task has run."""
    target = C.n + n
    done, errors = await http_load(client, "/enqueue", n, 16, time.perf_counter() + 60)
    if errors or done != n:
        raise RuntimeError(f"{done} of {n} requests done, errors: {dict(errors)}")
    if not await wait_until(lambda: C.n >= target, 30):
        raise RuntimeError("tasks did not all run within 30 s")


async def main(rounds: int, n: int) -> None:
    variants = {"plain": Plain().build_app(noop_async)}
    for name in ("nopersist", "nowait", "sleep", "persist"):
        variants[name] = Variant(name).build_app(noop_async)
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
