"""Where a write of task rows goes on PostgreSQL: taskflow.py's own upsert, timed in variants.

    python bench/pg_write_ab.py [--rounds R]

On a throwaway server (bench/_pg.py, as the pg_* scenarios start it) and a database whose
schema a TaskManager created, this sends the statement `_Storage.write` sends for a chunk of
1,000 finished tasks (taskflow.py's `_UPSERT_HEAD`, `_ROW_MARKS`, `_UPSERT_TAIL`: private
names, read only to time them), 20 chunks per measurement, and prints rows per second:

* as taskflow.py's pool sends it, and with asyncpg's statement cache taking the statement (a
  1,000-row statement is ~150 KB; asyncpg caches statements up to 15 KiB by default, so each
  chunk is parsed and planned again);
* with the counting triggers (`task_counts`, `task_minutes`) on and off;
* from 1, 2 and 4 connections at once (each its own rows), triggers on and off.

Nothing here changes taskflow.py; the variants only show where the time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "taskflow_vendor"))

import _pg  # noqa: E402
import taskflow  # noqa: E402

CHUNK, CHUNKS = 1000, 20


def params(now: float) -> list:
    row = ("noop_async", "success", now, now + 1e-4, now + 2e-4, 1e-4, 0, None, None, None)
    rest = (None, "[]", "{}", None, None, None, 0, 0, "bench")
    return [v for _ in range(CHUNK) for v in (uuid.uuid4().hex, *row, *rest)]


async def main(rounds: int) -> None:
    import asyncpg

    server = _pg.start()
    try:
        url = _pg.create(server)
        tm = taskflow.TaskManager(snapshot_db=url)
        await tm.startup()  # creates the schema, triggers included
        await tm.shutdown()
        sql = taskflow._pg_sql(
            taskflow._UPSERT_HEAD + ", ".join([taskflow._ROW_MARKS] * CHUNK) + taskflow._UPSERT_TAIL
        )
        print(f"PostgreSQL: {_pg.describe(server)}")
        print(f"one chunk: {CHUNK:,} rows, a {len(sql) / 1024:.0f} KB statement; {CHUNKS} chunks")
        print(f"medians of {rounds} rounds, rows/s")

        async def rate(conns: list) -> float:
            async def writer(conn, k):
                for _ in range(k):
                    await conn.execute(sql, *params(time.time()))

            times = []
            for _ in range(rounds):
                t0 = time.perf_counter()
                await asyncio.gather(*(writer(c, CHUNKS // len(conns)) for c in conns))
                times.append(time.perf_counter() - t0)
            return CHUNKS * CHUNK / statistics.median(times)

        default = await asyncpg.connect(url)
        big = 1 << 20  # statements up to 1 MiB in asyncpg's cache
        cached = [await asyncpg.connect(url, max_cacheable_statement_size=big) for _ in range(4)]
        try:
            print(f"  1 connection, as taskflow.py sends it       {await rate([default]):>9,.0f}")
            print(f"  1 connection, statement cached               {await rate(cached[:1]):>9,.0f}")
            for triggers in ("on", "off"):
                if triggers == "off":
                    await default.execute("ALTER TABLE tasks DISABLE TRIGGER USER")
                for n in (1, 2, 4):
                    label = f"{n} connection{'s' if n > 1 else ''}, cached, triggers {triggers}"
                    print(f"  {label:45}{await rate(cached[:n]):>9,.0f}")
            await default.execute("ALTER TABLE tasks ENABLE TRIGGER USER")
        finally:
            for conn in (default, *cached):
                await conn.close()
    finally:
        server.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    asyncio.run(main(parser.parse_args().rounds))
