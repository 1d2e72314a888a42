"""The throwaway PostgreSQL server of the pg_* benchmarks (bench/run.py, bench/_worker.py).

It is tests/apps/pg_support.py's ``PostgresServer`` (initdb in a temp dir, pg_ctl on a free
port of 127.0.0.1, run as the ``postgres`` user under root), imported, not copied. Only its
settings differ: pg_support's are for tests (``fsync=off``, 32 MB of shared buffers), and the
benchmarks measure what a stock server holds, so durability and memory are PostgreSQL's
defaults here (see ``BENCH_SETTINGS``).
"""

from __future__ import annotations

import asyncio
import secrets
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "apps"))

import pg_support  # noqa: E402
from pg_support import PostgresServer, PostgresUnavailable, find_bindir, run_sync  # noqa: E402,F401

# PostgreSQL's own defaults for what the test settings change: every commit is flushed to
# disk before it returns (as a production server does), 128 MB of shared buffers.
# max_parallel_workers_per_gather stays 0 (pg_support: containers often have a tiny /dev/shm).
BENCH_SETTINGS = {
    "fsync": "on",
    "full_page_writes": "on",
    "synchronous_commit": "on",
    "shared_buffers": "128MB",
}


def start() -> PostgresServer:
    """A started throwaway server with BENCH_SETTINGS.

    Raises PostgresUnavailable (no binaries, no ``postgres`` user, start failed) or
    ImportError (no asyncpg, which creates the databases) with the reason in the message.
    """
    import asyncpg  # noqa: F401

    find_bindir()  # fail with pg_support's message before changing anything
    pg_support.SERVER_SETTINGS.update(BENCH_SETTINGS)  # this process only
    server = PostgresServer()
    try:
        server.start()
    except BaseException:
        server.cleanup()
        raise
    return server


def describe(server: PostgresServer) -> str:
    settings = ", ".join(f"{k}={v}" for k, v in BENCH_SETTINGS.items())
    return f"{server.version or 'PostgreSQL'} (throwaway, 127.0.0.1, {settings})"


def create(server: PostgresServer, prefix: str = "bench", template: str | None = None) -> str:
    """A new database (empty, or a copy of ``template``, a database name): its URL."""
    if template is None:
        return server.create_database(prefix)
    name = f"{prefix}_{secrets.token_hex(6)}"
    run_sync(_copy, server.url, name, template)
    return server.url_for(name)


async def _copy(admin_url: str, name: str, template: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_url, timeout=30)
    try:
        for attempt in range(50):  # an autovacuum worker may still be on the template
            try:
                await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
                return
            except asyncpg.ObjectInUseError:
                if attempt == 49:
                    raise
                await asyncio.sleep(0.1)
    finally:
        await conn.close()


def drop(server: PostgresServer, url: str) -> None:
    server.drop_database(url)


def wait_idle(server: PostgresServer, url: str, timeout: float = 10.0) -> None:
    """Until nobody but us is connected to ``url``'s database (a worker just exited)."""
    name = pg_support.dbname_of(url)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not run_sync(_others, server.url, name):
            return
        time.sleep(0.05)


async def _others(admin_url: str, name: str) -> int:
    import asyncpg

    conn = await asyncpg.connect(admin_url, timeout=30)
    try:
        return await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
    finally:
        await conn.close()
