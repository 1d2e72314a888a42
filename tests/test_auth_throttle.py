"""The login throttle: counted before the password is checked, keyed by address so nobody
elsewhere can lock a user out, bounded in memory, and shared through the database.

Real apps, real forms, concurrent requests through httpx; the credentials backend only
counts how often it was asked.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from apps.engine_support import lifespan
from fastapi import FastAPI
from taskflow import TaskAdmin, TaskAuthBackend, TaskManager, _Throttle

SECRET = "test-secret-key-0123456789abcdef"


class CountingBackend(TaskAuthBackend):
    """admin / secret; slow enough that concurrent attempts overlap."""

    def __init__(self) -> None:
        self.checked = 0

    async def authenticate_user(self, username: str, password: str) -> bool:
        self.checked += 1
        await asyncio.sleep(0.01)
        return (username, password) == ("admin", "secret")


def build(db=None):
    tm = TaskManager(snapshot_db=db)
    app = FastAPI()
    backend = CountingBackend()
    TaskAdmin(app, tm, auth=backend, secret_key=SECRET)
    return app, backend


def client(app, address="10.0.0.1"):
    transport = httpx.ASGITransport(app=app, client=(address, 1234))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def login(http, username="admin", password="secret"):
    r = await http.post("/tasks/auth/login", data={"username": username, "password": password})
    return r.status_code


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def target(request, tmp_path):
    if request.param == "memory":
        return None
    if request.param == "sqlite":
        return str(tmp_path / "tasks.db")
    return request.getfixturevalue("pg_url")


async def test_concurrent_guesses_are_counted_before_any_password_is_checked(target):
    app, backend = build(target)
    async with lifespan(app), client(app) as http:
        attempts = [login(http, password=f"guess-{n}") for n in range(300)]
        attempts.insert(150, login(http))  # the right password, in the middle of the burst
        codes = await asyncio.gather(*attempts)
    # Five attempts per (address, name) reach the backend; the rest wait, 429.
    assert backend.checked <= 5, backend.checked
    assert codes.count(429) >= 301 - 5
    if codes[150] == 303:  # the right one may only pass as one of those five
        assert backend.checked <= 5


async def test_failures_from_other_addresses_never_lock_a_user_out(target):
    app, _ = build(target)
    async with lifespan(app):
        for n in range(8):
            async with client(app, f"10.0.1.{n}") as attacker:
                for _ in range(5):
                    assert await login(attacker, password="wrong") == 401
                assert await login(attacker, password="wrong") == 429
        async with client(app, "10.0.9.9") as admin:
            assert await login(admin) == 303


async def test_one_address_is_throttled_across_usernames_after_twenty_failures(target):
    app, _ = build(target)
    async with lifespan(app), client(app) as http:
        for n in range(20):
            assert await login(http, username=f"user{n}", password="x") == 401
        assert await login(http) == 429
        async with client(app, "10.0.0.2") as other:
            assert await login(other) == 303


async def test_a_success_does_not_count_as_a_failure(target):
    app, _ = build(target)
    async with lifespan(app), client(app) as http:
        for _ in range(4):
            assert await login(http, password="wrong") == 401
        assert await login(http) == 303
        assert await login(http, password="wrong") == 401  # the fifth failure
        assert await login(http) == 429


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_the_throttle_holds_on_every_instance_sharing_the_database(kind, tmp_path, request):
    db = str(tmp_path / "tasks.db") if kind == "sqlite" else request.getfixturevalue("pg_url")
    first, _ = build(db)
    second, _ = build(db)
    async with lifespan(first), lifespan(second):
        async with client(first) as http:
            for _ in range(5):
                assert await login(http, password="wrong") == 401
        async with client(second) as http:
            assert await login(http) == 429


async def test_memory_stays_bounded_under_a_spray_of_huge_usernames():
    throttle = _Throttle(TaskManager(), max_keys=1000)
    for n in range(5000):
        keys = throttle.keys(f"10.{n // 250}.{n % 250}.1", "u" * 16_384 + str(n))
        token, wait = await throttle.reserve(keys)
        assert token is not None and wait == 0
    assert len(throttle.attempts) <= 1000
    assert all(len(key) <= 40 for key in throttle.attempts)
