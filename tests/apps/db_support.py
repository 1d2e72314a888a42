"""Read and write a test's database, whichever it is: a SQLite file or a PostgreSQL URL.

A *target* is either a SQLite path (``str`` or ``Path``) or a ``postgresql://`` URL, as
the ``snapshot_target`` fixture yields. The helpers are synchronous and open a fresh
connection per call, as another process would: ``sqlite3`` for files, asyncpg (in a
fresh thread with its own event loop, so they work inside async tests) for URLs. Called
from an async test they block its loop until they return: don't wait on a lock that a
task of that loop holds.

SQL is written with SQLite's ``?`` placeholders; for PostgreSQL they become ``$1, $2...``.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

from apps.pg_support import run_sync

Target = str | Path

# What a ``?`` may hide in: quoted strings, quoted identifiers, comments.
_SQL_TOKENS = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|/\*.*?\*/|\?", re.DOTALL)


def is_postgres(target: Target) -> bool:
    """Whether ``target`` is a PostgreSQL URL (else it is a SQLite path)."""
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


def pg_placeholders(sql: str) -> str:
    """``?`` placeholders -> ``$1, $2...``, leaving quoted text and comments alone."""
    counter = 0

    def number(match: re.Match[str]) -> str:
        nonlocal counter
        if match.group() != "?":
            return match.group()
        counter += 1
        return f"${counter}"

    return _SQL_TOKENS.sub(number, sql)


def db_rows(target: Target, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run ``sql`` (``?`` placeholders) against ``target``; all result rows as tuples."""
    if is_postgres(target):
        return run_sync(_pg_rows, str(target), pg_placeholders(sql), tuple(params))
    conn = sqlite3.connect(str(target), timeout=30)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def db_scalar(target: Target, sql: str, params: tuple[Any, ...] = ()) -> Any:
    """The first column of the first row, or None when there is no row."""
    result = db_rows(target, sql, params)
    return result[0][0] if result else None


def db_execute(target: Target, sql: str, params: tuple[Any, ...] = ()) -> int:
    """Run a writing statement and commit it; the number of rows it touched (-1: n/a)."""
    if is_postgres(target):
        status = run_sync(_pg_execute, str(target), pg_placeholders(sql), tuple(params))
        count = status.rsplit(" ", 1)[-1]  # "UPDATE 3", "INSERT 0 1", "CREATE TABLE"
        return int(count) if count.isdigit() else -1
    conn = sqlite3.connect(str(target), timeout=30)
    try:
        with conn:
            return conn.execute(sql, params).rowcount
    finally:
        conn.close()


async def _pg_rows(url: str, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    import asyncpg

    conn = await asyncpg.connect(url, timeout=30)
    try:
        return [tuple(record) for record in await conn.fetch(sql, *params)]
    finally:
        await conn.close()


async def _pg_execute(url: str, sql: str, params: tuple[Any, ...]) -> str:
    import asyncpg

    conn = await asyncpg.connect(url, timeout=30)
    try:
        return await conn.execute(sql, *params)
    finally:
        await conn.close()
