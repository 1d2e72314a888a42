"""Drop-in means unchanged: FastAPI's documented background-task examples behave the same with
plain ``BackgroundTasks`` and with ``TaskAdmin(app, TaskManager(), auto_install=True)``.

The apps below are written for this repository from the published behaviour of FastAPI's
"Background Tasks" tutorial (not copied from it): tutorial001 (a route adds
``write_notification(email, message="")``), tutorial002 (a dependency adds a task writing
``found query: {q}``, then the route adds ``write_log`` with ``message to {email}``) and its
``Annotated`` variant, the latter also with sync (``def``) endpoint and dependency. Each writes a
line per task to a log file; tutorial001 appends (the tutorial's ``mode="w"`` would keep only the
last request's line).

Each app runs twice, plainly and with taskflow installed, served by uvicorn in a thread on
127.0.0.1 and driven by 20 real HTTP requests. Once the file holds the expected number of lines
(and, with taskflow, every task is final), the lines of each request must be the same, in the same
order, in both runs. Around them: a request's tasks run one after another, as Starlette runs them;
and ``tags``, ``idempotency_key`` or ``**kwargs`` of the task function reach it unchanged.
"""

import asyncio
import contextlib
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated

import httpx
import pytest
import uvicorn
from apps.engine_support import FINAL, wait_until
from fastapi import BackgroundTasks, Depends, FastAPI
from taskflow import TaskAdmin, TaskManager

pytestmark = pytest.mark.slow

MODES = ("plain", "taskflow")
REQUESTS = 20


def append(log: Path, line: str) -> None:
    with open(log, mode="a", encoding="utf-8") as file:
        file.write(line + "\n")


def read_lines(log: Path) -> list[str]:
    return log.read_text(encoding="utf-8").splitlines() if log.exists() else []


# --------------------------------------------------------------------------- the apps


def tutorial001(log: Path) -> FastAPI:
    app = FastAPI()

    def write_notification(email: str, message=""):
        with open(log, mode="a", encoding="utf-8") as email_file:
            content = f"notification for {email}: {message}\n"
            email_file.write(content)

    @app.post("/send-notification/{email}")
    async def send_notification(email: str, background_tasks: BackgroundTasks):
        background_tasks.add_task(write_notification, email, message="some notification")
        return {"message": "Notification sent in the background"}

    return app


def write_log_to(log: Path) -> Callable[[str], None]:
    def write_log(message: str):
        with open(log, mode="a", encoding="utf-8") as file:
            file.write(message)

    return write_log


def tutorial002(log: Path) -> FastAPI:
    app = FastAPI()
    write_log = write_log_to(log)

    def get_query(background_tasks: BackgroundTasks, q: str | None = None):
        if q:
            message = f"found query: {q}\n"
            background_tasks.add_task(write_log, message)
        return q

    @app.post("/send-notification/{email}")
    async def send_notification(
        email: str, background_tasks: BackgroundTasks, q: str = Depends(get_query)
    ):
        message = f"message to {email}\n"
        background_tasks.add_task(write_log, message)
        return {"message": "Message sent"}

    return app


def tutorial002_an(log: Path) -> FastAPI:
    app = FastAPI()
    write_log = write_log_to(log)

    def get_query(background_tasks: BackgroundTasks, q: str | None = None):
        if q:
            message = f"found query: {q}\n"
            background_tasks.add_task(write_log, message)
        return q

    @app.post("/send-notification/{email}")
    async def send_notification(
        email: str, background_tasks: BackgroundTasks, q: Annotated[str, Depends(get_query)]
    ):
        message = f"message to {email}\n"
        background_tasks.add_task(write_log, message)
        return {"message": "Message sent"}

    return app


def tutorial002_an_sync(log: Path) -> FastAPI:
    """tutorial002_an with a ``def`` endpoint: FastAPI runs it (and the dependency) in a thread."""
    app = FastAPI()
    write_log = write_log_to(log)

    def get_query(background_tasks: BackgroundTasks, q: str | None = None):
        if q:
            background_tasks.add_task(write_log, f"found query: {q}\n")
        return q

    @app.post("/send-notification/{email}")
    def send_notification(
        email: str, background_tasks: BackgroundTasks, q: Annotated[str, Depends(get_query)]
    ):
        background_tasks.add_task(write_log, f"message to {email}\n")
        return {"message": "Message sent"}

    return app


# --------------------------------------------------------------------------- running them


@contextlib.contextmanager
def served(app: FastAPI) -> Iterator[httpx.Client]:
    """``app`` served by uvicorn in a thread on 127.0.0.1 (lifespan on), and a client for it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), 10, "uvicorn to start")
        assert server.started, "uvicorn did not start"
        port = sock.getsockname()[1]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            yield http
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


def tracked(http: httpx.Client) -> list[dict]:
    """Every task taskflow knows of, through its API (no auth in these apps)."""
    response = http.get("/tasks", params={"limit": 1000})
    assert response.status_code == 200, response.text
    return response.json()


def run(
    factory: Callable[[Path], FastAPI],
    mode: str,
    log: Path,
    paths: list[str],
    lines: int,
    tasks: int,
) -> tuple[list[str], list[dict]]:
    """POST each of ``paths`` in turn, wait for ``lines`` lines in ``log``; (lines, responses).

    With taskflow, also wait until all ``tasks`` tasks it tracked are final, and check that they
    succeeded; plainly, check that there is no taskflow at all.
    """
    app = factory(log)
    if mode == "taskflow":
        TaskAdmin(app, TaskManager(), auto_install=True)
    with served(app) as http:
        responses = []
        for path in paths:
            response = http.post(path)
            assert response.status_code == 200, f"{mode}: POST {path}: {response.text}"
            responses.append(response.json())
        try:
            wait_until(lambda: len(read_lines(log)) >= lines, 10, f"{lines} lines ({mode})")
            if mode == "taskflow":
                wait_until(
                    lambda: (
                        len(found := tracked(http)) == tasks
                        and all(t["status"] in FINAL for t in found)
                    ),
                    10,
                    f"{tasks} final tasks",
                )
        except AssertionError as exc:
            found = tracked(http) if mode == "taskflow" else "(plain)"
            raise AssertionError(f"{exc}; log: {read_lines(log)}; tasks: {found}") from None
        if mode == "taskflow":
            failed = [t for t in tracked(http) if t["status"] != "success"]
            assert not failed, f"tasks that did not succeed: {failed}"
        else:
            assert http.get("/tasks").status_code == 404, "the plain run has taskflow installed"
    return read_lines(log), responses


def by_request(lines: list[str], pattern: str) -> dict[int, list[str]]:
    """The lines of each request, in file order; ``pattern``'s one group is the request number."""
    grouped: dict[int, list[str]] = {}
    for line in lines:
        match = re.search(pattern, line)
        assert match, f"a line of no request: {line!r}"
        grouped.setdefault(int(match.group(1)), []).append(line)
    return grouped


# --------------------------------------------------------------------------- the tutorials


def test_tutorial001_same_lines_per_request(tmp_path):
    paths = [f"/send-notification/user{i}@example.com" for i in range(REQUESTS)]
    expected = {i: [f"notification for user{i}@example.com: some notification"] for i in range(20)}
    effects = {}
    for mode in MODES:
        lines, responses = run(
            tutorial001, mode, tmp_path / f"{mode}.log", paths, REQUESTS, REQUESTS
        )
        assert responses == [{"message": "Notification sent in the background"}] * REQUESTS
        effects[mode] = by_request(lines, r"user(\d+)@")
        assert effects[mode] == expected, mode
    assert effects["taskflow"] == effects["plain"]


def tutorial002_requests() -> tuple[list[str], dict[int, list[str]]]:
    """20 requests, two in three with a query; each one's expected lines, in order."""
    paths, expected = [], {}
    for i in range(REQUESTS):
        email = f"user{i}@example.com"
        q = f"query-{i}" if i % 3 else None
        paths.append(f"/send-notification/{email}" + (f"?q={q}" if q else ""))
        expected[i] = ([f"found query: {q}"] if q else []) + [f"message to {email}"]
    return paths, expected


@pytest.mark.parametrize("factory", [tutorial002, tutorial002_an, tutorial002_an_sync])
def test_tutorial002_dependency_line_before_route_line(tmp_path, factory):
    paths, expected = tutorial002_requests()
    total = sum(len(v) for v in expected.values())
    effects = {}
    for mode in MODES:
        lines, responses = run(factory, mode, tmp_path / f"{mode}.log", paths, total, total)
        assert responses == [{"message": "Message sent"}] * REQUESTS
        assert len(lines) == total
        effects[mode] = by_request(lines, r"(?:query-|user)(\d+)")
        assert effects[mode] == expected, f"{mode}: lines per request, in file order"
    assert effects["taskflow"] == effects["plain"]
    assert sorted(lines) == sorted(line for v in expected.values() for line in v)


# --------------------------------------------------------------------------- one after another


def sequenced(log: Path) -> FastAPI:
    """Three tasks per request, sync, async, sync, each taking a while: their lines must not mix."""
    app = FastAPI()

    def slow_sync(name: str) -> None:
        append(log, f"{name} start")
        time.sleep(0.05)
        append(log, f"{name} end")

    async def slow_async(name: str) -> None:
        append(log, f"{name} start")
        await asyncio.sleep(0.05)
        append(log, f"{name} end")

    @app.post("/jobs/{n}")
    async def work(n: int, background_tasks: BackgroundTasks):
        background_tasks.add_task(slow_sync, f"{n}:a")
        background_tasks.add_task(slow_async, f"{n}:b")
        background_tasks.add_task(slow_sync, f"{n}:c")
        return {"ok": True}

    return app


def test_a_requests_tasks_run_one_after_another_in_the_order_added(tmp_path):
    n = 5
    expected = {
        i: [f"{i}:{t} {edge}" for t in "abc" for edge in ("start", "end")] for i in range(n)
    }
    effects = {}
    for mode in MODES:
        paths = [f"/jobs/{i}" for i in range(n)]
        lines, _ = run(sequenced, mode, tmp_path / f"{mode}.log", paths, 6 * n, 3 * n)
        effects[mode] = by_request(lines, r"^(\d+):")
        assert effects[mode] == expected, f"{mode}: each task ends before the next starts"
    assert effects["taskflow"] == effects["plain"]


# --------------------------------------------------------------------------- keyword arguments


def keywords(log: Path) -> FastAPI:
    """Task functions whose own parameters are named like taskflow's options."""
    app = FastAPI()

    def record(func: str, *args, **kwargs) -> None:
        append(log, json.dumps({"func": func, "args": list(args), "kwargs": kwargs}))

    def index_post(post_id, tags):
        record("index_post", post_id, tags=tags)

    def charge(order_id, idempotency_key):
        record("charge", order_id, idempotency_key=idempotency_key)

    async def audit(**kwargs):
        record("audit", **kwargs)

    @app.post("/posts/{n}")
    async def publish(n: int, background_tasks: BackgroundTasks):
        background_tasks.add_task(index_post, n, tags=["python", "fastapi"])
        return {"ok": True}

    @app.post("/orders/{n}")
    def pay(n: int, background_tasks: BackgroundTasks):
        # The same key every time: it is the function's argument, not a reason to skip a task.
        background_tasks.add_task(charge, n, idempotency_key="order-key")
        return {"ok": True}

    @app.post("/audit/{n}")
    async def log_event(n: int, background_tasks: BackgroundTasks):
        background_tasks.add_task(
            audit, n=n, tags=["python", "fastapi"], idempotency_key="audit-key", user="ada"
        )
        return {"ok": True}

    return app


KEYWORD_CASES = {
    "tags": (
        "/posts/{n}",
        lambda n: {"func": "index_post", "args": [n], "kwargs": {"tags": ["python", "fastapi"]}},
    ),
    "idempotency_key": (
        "/orders/{n}",
        lambda n: {"func": "charge", "args": [n], "kwargs": {"idempotency_key": "order-key"}},
    ),
    "var_keyword": (
        "/audit/{n}",
        lambda n: {
            "func": "audit",
            "args": [],
            "kwargs": {
                "n": n,
                "tags": ["python", "fastapi"],
                "idempotency_key": "audit-key",
                "user": "ada",
            },
        },
    ),
}


@pytest.mark.parametrize("case", list(KEYWORD_CASES))
def test_a_functions_own_keyword_arguments_reach_it_unchanged(tmp_path, case):
    route, call = KEYWORD_CASES[case]
    n = 5
    effects = {}
    for mode in MODES:
        paths = [route.format(n=i) for i in range(n)]
        lines, _ = run(keywords, mode, tmp_path / f"{mode}.log", paths, n, n)
        calls = [json.loads(line) for line in lines]
        key = "n" if case == "var_keyword" else None
        effects[mode] = sorted(calls, key=lambda c: c["kwargs"][key] if key else c["args"][0])
        assert effects[mode] == [call(i) for i in range(n)], mode
    assert effects["taskflow"] == effects["plain"]
