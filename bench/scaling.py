"""Several processes on one database: the task rate of docs/scaling.md's steps, measured.

    python bench/scaling.py [--tasks N] [--procs 1,2,4] [--rounds R] [--backends sqlite,pg]

For each backend (one SQLite file; one PostgreSQL database on a throwaway server, as the
pg_* scenarios start it: bench/_pg.py) and each number of processes K, K processes share one
`snapshot_db` and together drain N no-op tasks: each process starts its TaskManager, waits for
the others, adds N/K tasks outside a request, waits until every one is final and calls
`await tm.flush()`. The rate is N ÷ (last process written − first process started), the
median over R rounds; the database must then hold N success rows. Every process runs on this
machine, so the processes, and PostgreSQL, share its cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent


async def child(target: str, n: int) -> None:
    """One process: a manager on `target`, READY, wait for "go", N tasks, flush, a JSON line."""
    sys.path.insert(0, str(ROOT / "taskflow_vendor"))
    import taskflow

    done = 0

    async def noop() -> None:
        nonlocal done
        done += 1

    tm = taskflow.TaskManager(snapshot_db=target, max_history=max(n, 10_000))  # keeps them all
    tm.task()(noop)
    await tm.startup()
    print("READY", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.readline)
    start = time.time()
    ids = [tm.add_task(noop) for _ in range(n)]
    while done < n or not all(tm.get(i).status.is_final for i in ids[-50:]):
        await asyncio.sleep(0.002)
    while not all(tm.get(i).status.is_final for i in ids):
        await asyncio.sleep(0.01)
    final = time.time()
    await tm.flush()
    written = time.time()
    await tm.shutdown()
    print(json.dumps({"start": start, "final": final, "written": written, "tasks": n}), flush=True)


def run_trial(target: str, k: int, n: int) -> dict:
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--child", target, "--tasks", str(n // k)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for _ in range(k)
    ]
    try:
        for proc in procs:
            line = proc.stdout.readline()
            if not line.startswith("READY"):
                raise RuntimeError(f"a process did not start: {line!r}")
        for proc in procs:  # as close together as this loop allows
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = []
        for proc in procs:
            out, _ = proc.communicate(timeout=120)
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    first = min(r["start"] for r in results)
    return {
        "tasks_per_s": n / (max(r["written"] for r in results) - first),
        "final_per_s": n / (max(r["final"] for r in results) - first),
    }


def count_success(target: str) -> int:
    sql = "SELECT count(*) FROM tasks WHERE status = 'success'"
    if target.startswith("postgresql://"):
        import asyncpg

        async def count() -> int:
            conn = await asyncpg.connect(target, timeout=30)
            try:
                return await conn.fetchval(sql)
            finally:
                await conn.close()

        return asyncio.run(count())
    with sqlite3.connect(target) as conn:
        return conn.execute(sql).fetchone()[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--procs", default="1,2,4")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backends", default="sqlite,pg")
    parser.add_argument("--child", metavar="TARGET", help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    if args.child:
        asyncio.run(child(args.child, args.tasks))
        os._exit(0)

    procs = [int(k) for k in args.procs.split(",")]
    backends = args.backends.split(",")
    server = None
    if "pg" in backends:
        import _pg

        try:
            server = _pg.start()
        except Exception as exc:  # noqa: BLE001
            print(f"pg: skipped, no PostgreSQL server ({type(exc).__name__}: {exc})")
            backends.remove("pg")
        else:
            print(f"PostgreSQL: {_pg.describe(server)}")
    print(
        f"{args.tasks:,} no-op tasks drained by K processes sharing one database, "
        f"{os.cpu_count()} cores; medians of {args.rounds} rounds (tasks/s)"
    )
    print(f"{'backend':8} {'K':>2} {'to written':>11} {'to final':>10}  rounds (to written)")
    try:
        for backend in backends:
            for k in procs:
                rates, finals = [], []
                for _ in range(args.rounds):
                    if backend == "pg":
                        target = _pg.create(server)
                    else:
                        target = str(Path(tempfile.mkdtemp(prefix="tfscale-")) / "tasks.db")
                    # The schema first, so that K processes do not all create it at once.
                    subprocess.run(
                        [sys.executable, __file__, "--child", target, "--tasks", "0"],
                        input="go\n",
                        capture_output=True,
                        text=True,
                        cwd=ROOT,
                        check=True,
                    )
                    trial = run_trial(target, k, args.tasks)
                    stored = count_success(target)
                    if stored != args.tasks:
                        raise SystemExit(f"{backend} K={k}: {stored} rows, not {args.tasks}")
                    rates.append(trial["tasks_per_s"])
                    finals.append(trial["final_per_s"])
                    if backend == "pg":
                        _pg.drop(server, target)
                    else:
                        shutil.rmtree(Path(target).parent, ignore_errors=True)
                print(
                    f"{backend:8} {k:>2} {statistics.median(rates):>11,.0f} "
                    f"{statistics.median(finals):>10,.0f}  " + " ".join(f"{r:,.0f}" for r in rates),
                    flush=True,
                )
    finally:
        if server is not None:
            server.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
