"""Hostile strings through every stored field and every route, on a real uvicorn.

Lone surrogates (Starlette's JSON parser lets them through from any body), NULs,
megabyte strings, deep JSON, control characters and markup go into arguments, errors,
tracebacks, task logs, tags, idempotency keys and function names. Afterwards the file
must hold every accepted task, every read route must answer 200, and shutdown must
leave no task pending. One bad row must never block the others.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import urllib.parse

import httpx
import pytest
import uvicorn
from apps.engine_support import reaches, rows, scalar, started, wait_until
from fastapi import FastAPI, Request
from taskflow import TaskAdmin, TaskManager, _clean, _thaw, task_log

pytestmark = pytest.mark.slow

DEEP = json.loads("[" * 500 + "]" * 500)
HOSTILE = {
    "surrogate": "fail\ud800",
    "low-surrogate": "\udfff tail",
    "pair-as-two": "\ud83d\ude00",
    "nul": "a\x00b",
    "megabyte": "m" * 1_000_000,
    "control": "\x01\x07\x1b[31m\r\n\t\x7f",
    "markup": "<script>alert(1)</script><img src=x onerror=alert(2)>&amp;",
    "formula": '=HYPERLINK("http://evil")',
}
FINAL = {"success", "failed", "cancelled", "interrupted"}


def _body(value) -> bytes:
    # json.dumps escapes a lone surrogate as \ud800, as an attacker's client would send it.
    return json.dumps({"name": value}).encode()


def _build(db):
    tm = TaskManager(snapshot_db=db, snapshot_interval=0.1, shutdown_timeout=2.0)

    @tm.task()
    def explode(name, deep=None):
        task_log(f"about to fail on {name}", who=name)
        raise RuntimeError(f"failed for {name}")

    @tm.task(persist=True)
    def keep(name):
        task_log(name)

    def odd(name):
        return name

    odd.__name__ = "odd\ud800name\x00"  # as a decorator or a code generator could leave it
    tm.task()(odd)

    app = FastAPI()
    TaskAdmin(app, tm, display_func_args=True)

    async def name_of(request: Request) -> str:
        return (await request.json())["name"]

    @app.post("/fail")
    async def fail(request: Request):
        name = await name_of(request)
        return {
            "id": tm.add_task(
                explode, name, deep=DEEP, tags={name: name}, idempotency_key="f" + name
            )
        }

    @app.post("/persist")
    async def persist(request: Request):
        return {"id": tm.add_task(keep, await name_of(request), idempotency_key="p" + "x")}

    @app.post("/odd")
    async def odd_route(request: Request):
        return {"id": tm.add_task(odd, await name_of(request))}

    return tm, app


class _Server:
    def __init__(self, app):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )
        self.thread.start()
        wait_until(lambda: self.server.started or not self.thread.is_alive(), 10, "uvicorn")
        assert self.server.started
        origin = f"http://127.0.0.1:{self.port}"
        self.http = httpx.Client(base_url=origin, timeout=30, headers={"Origin": origin})

    def stop(self):
        self.http.close()
        self.server.should_exit = True
        self.thread.join(20)
        assert not self.thread.is_alive()


def _sse_task_events(port: int, trigger, wanted: int) -> list[str]:
    """Open the live stream, run ``trigger``, read until ``wanted`` task events arrived."""
    events: list[str] = []
    deadline = time.monotonic() + 15
    with (
        httpx.Client(timeout=15) as http,
        http.stream("GET", f"http://127.0.0.1:{port}/tasks/dashboard/stream") as response,
    ):
        assert response.status_code == 200
        lines = response.iter_lines()
        assert next(lines).startswith("retry:")
        trigger()
        for line in lines:
            if line.startswith("data:") and '"task_id"' in line:
                events.append(line)
            if len(events) >= wanted or time.monotonic() > deadline:
                break
    return events


@pytest.mark.parametrize("mode", ["memory", "sqlite"])
def test_hostile_strings_in_every_field_lose_nothing_and_break_no_route(tmp_path, mode):
    db = str(tmp_path / "tasks.db") if mode == "sqlite" else None
    tm, app = _build(db)
    server = _Server(app)
    ids = []
    try:
        http = server.http
        for value in HOSTILE.values():
            for route in ("/fail", "/odd"):
                response = http.post(route, content=_body(value))
                assert response.status_code == 200, (route, response.text[:300])
                ids.append(response.json()["id"])
        for value in HOSTILE.values():
            # persist=True commits before answering; one key for all: the rest dedupe.
            response = http.post("/persist", content=_body(value))
            assert response.status_code == 200, response.text[:300]
            ids.append(response.json()["id"])
        ids = list(dict.fromkeys(ids))
        wait_until(
            lambda: all(tm.get(i) is None or tm.get(i).status.value in FINAL for i in ids),
            20,
            "every task to finish",
        )
        listed = http.get("/tasks", params={"limit": 500})
        assert listed.status_code == 200, listed.text[:300]
        assert {t["task_id"] for t in listed.json()} >= set(ids)
        for task_id in ids:
            detail = http.get(f"/tasks/{task_id}")
            assert detail.status_code == 200, detail.text[:300]
        errors = [http.get(f"/tasks/{i}").json()["error"] for i in ids]
        assert "RuntimeError: failed for fail\ufffd" in errors
        for query in list(HOSTILE.values())[:4]:
            raw = urllib.parse.quote(query, errors="surrogatepass")
            found = http.get(f"/tasks?q={raw}&func_name={raw}")
            assert found.status_code == 200, found.text[:300]
        missing = http.get("/tasks/%ED%A0%80%00")
        assert missing.status_code == 404, missing.text[:300]
        export = http.get("/tasks/export.csv")
        assert export.status_code == 200
        assert export.text.count("\n") >= len(ids)
        assert http.get("/tasks/metrics").status_code == 200
        assert http.get("/tasks/metrics", params={"format": "prometheus"}).status_code == 200

        def more_hostile_tasks():
            for value in HOSTILE.values():
                response = http.post("/odd", content=_body(value))
                assert response.status_code == 200
                ids.append(response.json()["id"])

        events = _sse_task_events(server.port, more_hostile_tasks, len(HOSTILE))
        assert len(events) >= len(HOSTILE)
        replay = http.post("/tasks/retry-failed")
        assert replay.status_code == 200, replay.text[:300]
        assert replay.json()["dispatched"] >= len(HOSTILE)
        ids.extend(r["task_id"] for r in replay.json()["results"] if "task_id" in r)
        wait_until(
            lambda: all(tm.get(i) is None or tm.get(i).status.value in FINAL for i in ids),
            20,
            "the replays to finish",
        )
    finally:
        server.stop()
    if db is not None:
        stored = {r[0]: r[1] for r in rows(db, "SELECT task_id, status FROM tasks")}
        assert set(ids) <= set(stored), f"{len(set(ids) - set(stored))} accepted tasks not stored"
        assert "pending" not in stored.values() and "running" not in stored.values()
        cleaned = "SELECT count(*) FROM tasks WHERE error LIKE '%fail' || char(65533) || '%'"
        assert scalar(db, cleaned)


@pytest.mark.parametrize("mode", ["memory", "sqlite"])
async def test_a_lone_surrogate_in_an_error_does_not_stop_later_writes(tmp_path, mode):
    # The audit's reproduction: a task failing with the client's string in its error.
    db = tmp_path / "tasks.db" if mode == "sqlite" else None
    tm = TaskManager(snapshot_db=db, snapshot_interval=0.05)

    @tm.task()
    def boom(name):
        raise RuntimeError(f"failed for {name}")

    @tm.task()
    def fine(n):
        return n

    async with started(tm):
        bad = tm.add_task(boom, "fail\ud800")
        assert (await reaches(tm, bad, "failed")).error == "RuntimeError: failed for fail\ufffd"
        await tm.flush()
        later = [tm.add_task(fine, n) for n in range(5)]
        for task_id in later:
            await reaches(tm, task_id, "success")
        await tm.flush()
        page, total = await tm.query(limit=10)
        assert total == 6 and {r.task_id for r in page} == {bad, *later}
    if db is not None:
        assert scalar(db, "SELECT count(*) FROM tasks") == 6
        assert scalar(db, "SELECT count(*) FROM tasks WHERE status = 'pending'") == 0


async def test_one_row_the_database_refuses_never_blocks_the_rest_of_its_batch(tmp_path, caplog):
    db = tmp_path / "tasks.db"
    tm = TaskManager(snapshot_db=db, snapshot_interval=3600)

    @tm.task()
    def fine(n):
        return n

    async with started(tm):
        ids = [tm.add_task(fine, n) for n in range(20)]
        for task_id in ids:
            await reaches(tm, task_id, "success")
        # Values that no path of the module produces, planted to reach the database:
        # text it refuses until cleaned, and a number it refuses outright.
        dirty = tm._store.dirty
        fixable = _thaw(dirty[ids[3]]) if type(dirty[ids[3]]) is tuple else dirty[ids[3]]
        fixable.error = "planted \ud800"
        dirty[ids[3]] = fixable
        hopeless = _thaw(dirty[ids[7]]) if type(dirty[ids[7]]) is tuple else dirty[ids[7]]
        hopeless.retries_used = 2**80
        dirty[ids[7]] = hopeless
        with caplog.at_level("WARNING", logger="taskflow"):
            await tm.flush()
        stored = {r[0]: r[1] for r in rows(db, "SELECT task_id, error FROM tasks")}
        assert set(stored) == set(ids) - {ids[7]}
        assert stored[ids[3]] == "planted \ufffd"
        assert any(ids[7] in r.getMessage() for r in caplog.records)
        # The writer keeps going: later tasks reach the file.
        more = tm.add_task(fine, 99)
        await reaches(tm, more, "success")
        await tm.flush()
        assert scalar(db, "SELECT status FROM tasks WHERE task_id = ?", (more,)) == "success"


def test_clean_keeps_valid_text_and_replaces_what_no_database_stores():
    for text in ("", "plain", "ünïcødé 😀", "x" * 10_000, "tab\tnewline\n"):
        assert _clean(text) is text or _clean(text) == text
    assert _clean("a\ud800b") == "a\ufffdb"
    assert _clean("\udfff") == "\ufffd"
    assert _clean("\ud83d\ude00") == "😀"  # a pair written as two code points is joined
    assert _clean("a\x00b") == "a\ufffdb"
    assert _clean("é\x00\ud800") == "é\ufffd\ufffd"
    for text in HOSTILE.values():
        _clean(text).encode("utf-8")
        assert "\x00" not in _clean(text)


async def test_an_exception_whose_str_raises_still_fails_the_task_cleanly():
    tm = TaskManager()

    class Nasty(Exception):
        def __str__(self):
            raise ValueError("no str for you")

    @tm.task()
    def boom():
        raise Nasty()

    async with started(tm):
        record = await reaches(tm, tm.add_task(boom), "failed")
        assert record.error.startswith("Nasty: <unprintable")
        await asyncio.sleep(0)


def test_an_explicit_task_name_that_no_database_can_store_is_refused_at_registration():
    tm = TaskManager()
    for bad in ("odd\ud800", "nul\x00"):
        with pytest.raises(ValueError, match="name must be storable text"):
            tm.task(name=bad)
