"""Tests of the PostgreSQL test infrastructure: the throwaway server, fixtures, db_* helpers."""

from __future__ import annotations

import asyncpg
import pytest
from apps.db_support import db_execute, db_rows, db_scalar, is_postgres, pg_placeholders
from apps.pg_support import PostgresServer, dbname_of


async def test_server_answers_over_tcp_with_the_password(postgres_server: PostgresServer) -> None:
    conn = await asyncpg.connect(postgres_server.url)
    try:
        assert await conn.fetchval("select 1") == 1
        assert await conn.fetchval("show fsync") == "off"
        assert await conn.fetchval("show max_connections") == "200"
    finally:
        await conn.close()
    wrong = postgres_server.url.replace(postgres_server.password, "not-the-password")
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(wrong)


@pytest.fixture
def other_pg_url(postgres_server: PostgresServer):
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url)


def test_each_pg_url_is_its_own_empty_database(pg_url: str, other_pg_url: str) -> None:
    assert pg_url != other_pg_url
    assert db_scalar(pg_url, "select current_database()") == dbname_of(pg_url)
    assert db_scalar(other_pg_url, "select current_database()") == dbname_of(other_pg_url)
    db_execute(pg_url, "create table t (x integer)")
    assert db_scalar(pg_url, "select to_regclass('t') is not null") is True
    assert db_scalar(other_pg_url, "select to_regclass('t') is not null") is False


def test_a_dropped_database_is_gone(postgres_server: PostgresServer) -> None:
    url = postgres_server.create_database()
    name = dbname_of(url)
    db_execute(url, "create table t (x integer)")
    postgres_server.drop_database(url)
    exists = "select count(*) from pg_database where datname = ?"
    assert db_scalar(postgres_server.url, exists, (name,)) == 0


async def test_db_helpers_on_both_kinds_of_target(snapshot_target: str) -> None:
    """Called from inside a running event loop on purpose: the helpers stay synchronous."""
    assert is_postgres(snapshot_target) == snapshot_target.startswith("postgresql://")
    db_execute(snapshot_target, "create table kv (k text primary key, v integer)")
    insert = "insert into kv (k, v) values (?, ?)"
    assert db_execute(snapshot_target, insert, ("a", 1)) == 1
    assert db_execute(snapshot_target, insert, ("it's ?", 2)) == 1
    assert db_execute(snapshot_target, "update kv set v = v + 10") == 2
    assert db_rows(snapshot_target, "select k, v from kv order by v") == [("a", 11), ("it's ?", 12)]
    assert db_scalar(snapshot_target, "select v from kv where k = ? and '?' = '?'", ("a",)) == 11
    assert db_scalar(snapshot_target, "select v from kv where k = ?", ("missing",)) is None


def test_question_marks_become_numbered_outside_quotes_and_comments() -> None:
    sql = "select '?', \"?\" from t -- ?\nwhere a = ? /* ? */ and b = ?"
    assert pg_placeholders(sql) == "select '?', \"?\" from t -- ?\nwhere a = $1 /* ? */ and b = $2"
    assert pg_placeholders("select 'it''s ?' where x = ?") == "select 'it''s ?' where x = $1"


def test_restart_keeps_the_data_and_the_port(postgres_server: PostgresServer, pg_url: str) -> None:
    db_execute(pg_url, "create table survivors (x integer)")
    db_execute(pg_url, "insert into survivors values (?)", (42,))
    port = postgres_server.port
    postgres_server.restart()
    assert postgres_server.port == port
    assert postgres_server.running
    assert db_rows(pg_url, "select x from survivors") == [(42,)]


def test_kill_then_start_recovers_committed_data(
    postgres_server: PostgresServer, pg_url: str
) -> None:
    db_execute(pg_url, "create table survivors (x integer)")
    db_execute(pg_url, "insert into survivors values (?)", (7,))
    postgres_server.kill()
    assert not postgres_server.running
    postgres_server.start()
    assert db_rows(pg_url, "select x from survivors") == [(7,)]
