"""Injection: Depends(get_tasks), install(app), the ManagedBackgroundTasks annotation,
add_task's return value, idempotency keys, unregistered functions, several apps."""

from __future__ import annotations

import asyncio
import functools
import gc
import subprocess
import sys
import textwrap
import threading
import uuid
import weakref
from pathlib import Path

import pytest
from apps.engine_support import client, reaches, serve, started, status_of
from fastapi import BackgroundTasks, Depends, FastAPI, Request
from taskflow import ManagedBackgroundTasks, TaskManager, TaskStatus

ROOT = Path(__file__).resolve().parents[1]


def _is_uuid(value) -> bool:
    return isinstance(value, str) and len(value) == 36 and str(uuid.UUID(value)) == value


# -- Depends(task_manager.get_tasks) -------------------------------------------------


@pytest.mark.parametrize("alias", ["get_tasks", "background_tasks"])
async def test_depends_get_tasks_returns_ids_of_tracked_tasks(alias):
    tm = TaskManager()
    app = FastAPI()
    ran: list[int] = []

    async def job(n):
        ran.append(n)

    dependency = getattr(tm, alias)

    @app.post("/go")
    async def go(tasks: ManagedBackgroundTasks = Depends(dependency)):
        assert isinstance(tasks, ManagedBackgroundTasks) and isinstance(tasks, BackgroundTasks)
        return [tasks.add_task(job, 1), tasks.add_task(job, n=2)]

    tm.init_app(app)
    async with serve(app) as http:
        ids = (await http.post("/go")).json() + (await http.post("/go")).json()
        assert all(_is_uuid(i) for i in ids) and len(set(ids)) == 4
        for task_id in ids:
            assert (await reaches(tm, task_id)).status is TaskStatus.SUCCESS
    assert sorted(ran) == [1, 1, 2, 2]


def test_depends_pattern_patches_nothing_in_fastapi():
    """Run in a fresh interpreter: no install() anywhere, so FastAPI must stay untouched."""
    script = textwrap.dedent(
        """
        import asyncio, sys
        sys.path.insert(0, sys.argv[1])
        import fastapi.dependencies.utils as du
        import fastapi, starlette.background
        original = du.BackgroundTasks
        from fastapi import Depends, FastAPI
        from fastapi.testclient import TestClient
        from taskflow import TaskManager
        tm = TaskManager()
        app = FastAPI()
        tm.init_app(app)
        def job():
            pass
        @app.post("/go")
        def go(tasks=Depends(tm.get_tasks)):
            return tasks.add_task(job)
        with TestClient(app) as http:
            assert len(http.post("/go").json()) == 36
        assert du.BackgroundTasks is original, du.BackgroundTasks
        assert fastapi.BackgroundTasks is original
        print("clean")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(ROOT / "taskflow_vendor")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "clean"


# -- install(app) and the annotation ----------------------------------------------------


@pytest.mark.parametrize("endpoint", ["async", "sync"])
async def test_install_gives_plain_background_tasks_a_managed_object(endpoint):
    tm = TaskManager()
    app = FastAPI()
    tm.install(app)
    ran: list[str] = []

    def job(label):
        ran.append(label)

    if endpoint == "async":

        @app.post("/signup")
        async def signup(email: str, background_tasks: BackgroundTasks):
            return {"task_id": background_tasks.add_task(job, email)}

    else:

        @app.post("/signup")
        def signup(email: str, background_tasks: BackgroundTasks):
            return {"task_id": background_tasks.add_task(job, email)}

    tm.init_app(app)
    async with serve(app) as http:
        task_id = (await http.post("/signup", params={"email": "a@b.c"})).json()["task_id"]
        assert _is_uuid(task_id)
        assert (await reaches(tm, task_id)).status is TaskStatus.SUCCESS
    assert ran == ["a@b.c"]


async def test_managed_background_tasks_annotation_with_install():
    tm = TaskManager()
    app = FastAPI()
    tm.install(app)

    async def job():
        return None

    @app.post("/go")
    async def go(background_tasks: ManagedBackgroundTasks):
        return {"task_id": background_tasks.add_task(job), "cls": type(background_tasks).__name__}

    @app.post("/both")
    async def both(plain: BackgroundTasks, tasks=Depends(tm.get_tasks)):
        # One request, two ways in: both add to the same tracked batch.
        return [plain.add_task(job), tasks.add_task(job)]

    tm.init_app(app)
    async with serve(app) as http:
        body = (await http.post("/go")).json()
        assert body["cls"] == "ManagedBackgroundTasks" and _is_uuid(body["task_id"])
        assert (await reaches(tm, body["task_id"])).status is TaskStatus.SUCCESS
        ids = (await http.post("/both")).json()
        assert all(_is_uuid(i) for i in ids) and ids[0] != ids[1]
        for task_id in ids:
            assert (await reaches(tm, task_id)).status is TaskStatus.SUCCESS


async def test_managed_background_tasks_annotation_without_install_is_not_silently_untracked():
    tm = TaskManager()
    app = FastAPI()
    ran: list[int] = []

    async def job():
        ran.append(1)

    try:

        @app.post("/go")
        async def go(background_tasks: ManagedBackgroundTasks):
            return {"task_id": background_tasks.add_task(job)}

    except Exception:
        return  # refusing the route loudly is acceptable

    tm.init_app(app)
    # The app refuses to start, naming the route and the fix, instead of tracking nothing.
    with pytest.raises(RuntimeError, match=r"(?s)install\(app\).*/go \(background_tasks\)"):
        async with serve(app):
            pass


@pytest.mark.parametrize("setup", ["install", "depends"])
async def test_a_running_task_does_not_keep_its_request_alive(setup):
    """A task runs in a copy of its request's context; that copy must not hold the
    request (its scope, state, body) for as long as the task runs."""
    tm = TaskManager()
    app = FastAPI()
    if setup == "install":
        tm.install(app)
    release = asyncio.Event()
    refs: list[weakref.ref] = []

    class Bulky:  # what an endpoint may hang on its request: a parsed upload, a session
        pass

    async def job():
        await release.wait()

    if setup == "install":

        @app.post("/go")
        async def go(request: Request, background_tasks: BackgroundTasks):
            request.state.bulky = bulky = Bulky()
            refs.append(weakref.ref(bulky))
            return {"task_id": background_tasks.add_task(job)}

    else:

        @app.post("/go")
        async def go(request: Request, tasks=Depends(tm.get_tasks)):
            request.state.bulky = bulky = Bulky()
            refs.append(weakref.ref(bulky))
            return {"task_id": tasks.add_task(job)}

    tm.init_app(app)
    async with serve(app) as http:
        task_id = (await http.post("/go")).json()["task_id"]
        await reaches(tm, task_id, "running")
        gc.collect()
        alive = refs[0]() is not None
        release.set()
        assert (await reaches(tm, task_id)).status is TaskStatus.SUCCESS
    assert not alive, "the running task kept its request's objects alive"


async def test_two_apps_in_one_process_each_follow_their_own_setup():
    tm_a, tm_b = TaskManager(), TaskManager()
    installed, plain, installed_b = FastAPI(), FastAPI(), FastAPI()
    tm_a.install(installed)
    tm_b.install(installed_b)
    ran: list[str] = []

    def job(label):
        ran.append(label)

    for app in (installed, plain, installed_b):

        @app.post("/go")
        async def go(label: str, background_tasks: BackgroundTasks):
            return {
                "task_id": background_tasks.add_task(job, label),
                "cls": type(background_tasks).__name__,
            }

    @plain.post("/tracked")
    async def tracked(tasks=Depends(tm_b.get_tasks)):
        return {"task_id": tasks.add_task(job, "plain-depends")}

    async with started(tm_a), started(tm_b):
        async with client(installed) as a, client(plain) as p, client(installed_b) as b:
            body_a = (await a.post("/go", params={"label": "a"})).json()
            body_p = (await p.post("/go", params={"label": "p"})).json()
            body_b = (await b.post("/go", params={"label": "b"})).json()
            body_t = (await p.post("/tracked")).json()
        assert body_a["cls"] == "ManagedBackgroundTasks" and _is_uuid(body_a["task_id"])
        assert body_p == {"task_id": None, "cls": "BackgroundTasks"}  # FastAPI's own behaviour
        assert _is_uuid(body_b["task_id"]) and _is_uuid(body_t["task_id"])
        await reaches(tm_a, body_a["task_id"])
        await reaches(tm_b, body_b["task_id"])
        await reaches(tm_b, body_t["task_id"])
        # Each task belongs to its own app's manager only.
        assert tm_b.get(body_a["task_id"]) is None
        assert tm_a.get(body_b["task_id"]) is None and tm_a.get(body_t["task_id"]) is None
        await asyncio.sleep(0.01)
    assert sorted(ran) == ["a", "b", "p", "plain-depends"]


# -- add_task: idempotency, unregistered functions, argument checks -------------------------


async def test_idempotency_key_returns_the_existing_task_and_enqueues_nothing():
    tm = TaskManager()
    app = FastAPI()
    gate = asyncio.Event()
    runs: list[str] = []

    @tm.task()
    async def send_invoice(order):
        runs.append(order)
        await gate.wait()

    @app.post("/orders/{order}")
    async def order(order: str, tasks=Depends(tm.get_tasks)):
        return tasks.add_task(send_invoice, order, idempotency_key=f"invoice-{order}")

    async with started(tm), client(app) as http:
        first = (await http.post("/orders/1")).json()
        await reaches(tm, first, "running")
        assert (await http.post("/orders/1")).json() == first  # while running
        other = (await http.post("/orders/2")).json()
        assert other != first
        gate.set()
        await reaches(tm, first)
        await reaches(tm, other)
        assert (await http.post("/orders/1")).json() == first  # after success
        assert tm.add_task(send_invoice, "1", idempotency_key="invoice-1") == first
        total = (await tm.query())[1]
    assert sorted(runs) == ["1", "2"]
    assert total == 2


async def test_idempotency_key_dedupes_while_pending():
    tm = TaskManager()
    runs = []

    async def job():
        runs.append(1)

    first = tm.add_task(job, idempotency_key="k")  # pending: not started yet
    assert tm.add_task(job, idempotency_key="k") == first
    async with started(tm):
        await reaches(tm, first)
        assert tm.add_task(job, idempotency_key="k") == first
    assert runs == [1]


async def test_idempotency_key_of_a_failed_task_may_be_used_again():
    tm = TaskManager()
    attempts = []

    @tm.task()
    async def job():
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("first run fails")

    async with started(tm):
        first = tm.add_task(job, idempotency_key="k")
        assert (await reaches(tm, first)).status is TaskStatus.FAILED
        second = tm.add_task(job, idempotency_key="k")
        assert second != first
        assert (await reaches(tm, second)).status is TaskStatus.SUCCESS
        assert tm.add_task(job, idempotency_key="k") == second


async def test_idempotency_key_of_a_cancelled_task_may_be_used_again():
    # Deliberate (docs/design_decisions.md): a failed, cancelled or interrupted task frees its
    # key, so a client retrying a request whose tasks were cancelled gets new tasks.
    tm = TaskManager()

    async def job():
        return None

    first = tm.add_task(job, idempotency_key="k")
    tm.cancel(first)
    second = tm.add_task(job, idempotency_key="k")
    assert second != first
    assert tm.add_task(job, idempotency_key="k") == second


async def test_idempotency_key_of_a_failed_task_evicted_from_memory_may_be_used_again(
    tmp_path: Path,
):
    tm = TaskManager(snapshot_db=tmp_path / "tasks.db", max_history=1)

    async def boom():
        raise RuntimeError("x")

    async def fine():
        return None

    async with started(tm):
        first = tm.add_task(boom, idempotency_key="k")
        await reaches(tm, first)
        for _ in range(3):
            await reaches(tm, tm.add_task(fine))
        assert tm.get(first) is None  # evicted; the database still knows it failed
        assert tm.add_task(boom, idempotency_key="k") != first


class _CallableJob:
    def __init__(self):
        self.calls = 0

    def __call__(self, n):
        self.calls += n


@pytest.mark.parametrize("host", ["itself", "a plain BackgroundTasks"])
async def test_a_hand_built_managed_object_starts_its_tasks_when_run_as_a_background(host):
    # Outside FastAPI's request handling there are no exit stacks: the object holds its
    # tasks until it (or the BackgroundTasks it joined) is run, as Starlette would.
    tm = TaskManager()
    ran: list[int] = []

    async def job(n):
        ran.append(n)

    with pytest.raises(TypeError, match="task_manager"):
        ManagedBackgroundTasks()
    async with started(tm):
        plain = BackgroundTasks()
        tasks = ManagedBackgroundTasks(tm, plain if host != "itself" else None)
        ids = [tasks.add_task(job, n) for n in range(3)]
        await asyncio.sleep(0.05)
        assert ran == [] and {status_of(tm, i) for i in ids} == {"pending"}
        await (tasks() if host == "itself" else plain())
        for task_id in ids:
            assert (await reaches(tm, task_id)).status is TaskStatus.SUCCESS
    assert ran == [0, 1, 2]


async def test_unregistered_functions_are_accepted_with_default_options():
    tm = TaskManager()
    calls = []

    def unregistered(x):
        calls.append(x)
        raise ValueError("no retries by default")

    def add(a, b):
        calls.append(a + b)

    obj = _CallableJob()
    async with started(tm):
        failing = await reaches(tm, tm.add_task(unregistered, 1))
        partial = await reaches(tm, tm.add_task(functools.partial(add, 2), 3))
        lam = await reaches(tm, tm.add_task(lambda: calls.append("lambda")))
        called = await reaches(tm, tm.add_task(obj, 4))
    assert failing.status is TaskStatus.FAILED and failing.retries_used == 0
    assert failing.func_name == "unregistered"
    assert partial.status is TaskStatus.SUCCESS and partial.func_name == "add"
    assert lam.status is TaskStatus.SUCCESS and called.status is TaskStatus.SUCCESS
    assert calls == [1, 5, "lambda"] and obj.calls == 4


async def test_add_task_rejects_bad_arguments_clearly():
    tm = TaskManager()
    with pytest.raises(TypeError, match="callable"):
        tm.add_task("not a function")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="idempotency_key"):
        tm.add_task(print, idempotency_key=5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="tags"):
        tm.add_task(print, tags=["a"])  # type: ignore[arg-type]
    assert (await tm.query())[1] == 0


async def test_add_task_from_another_thread_runs_on_the_loop():
    tm = TaskManager()
    ids: list[str] = []

    async def job():
        return None

    async with started(tm):
        thread = threading.Thread(target=lambda: ids.append(tm.add_task(job)))
        thread.start()
        await asyncio.to_thread(thread.join)
        assert status_of(tm, ids[0]) in ("pending", "running", "success")
        assert (await reaches(tm, ids[0])).status is TaskStatus.SUCCESS


# -- keyword names the tracking options also use ---------------------------------------


@pytest.mark.parametrize("name", ["tags", "idempotency_key"])
async def test_a_functions_own_parameter_named_like_an_option_gets_its_argument(name):
    tm = TaskManager()
    got: list = []

    def index_post(post_id, tags=None, idempotency_key=None):
        got.append((post_id, tags if name == "tags" else idempotency_key))

    def takes_anything(post_id, **kwargs):
        got.append((post_id, kwargs[name]))

    value = ["python", "fastapi"] if name == "tags" else "key-1"
    async with started(tm):
        for func in (index_post, takes_anything):
            record = await reaches(tm, tm.add_task(func, 1, **{name: value}))
            assert record.status.value == "success"
            assert record.tags is None and record.idempotency_key is None
    assert got == [(1, value), (1, value)]


async def test_options_still_apply_to_functions_without_such_parameters_and_through_with_options():
    tm = TaskManager()

    def plain(n):
        return n

    def takes_tags(n, tags):
        return tags

    async with started(tm):
        first = await reaches(tm, tm.add_task(plain, 1, tags={"a": "b"}, idempotency_key="k"))
        assert first.tags == {"a": "b"} and first.idempotency_key == "k"
        assert tm.add_task(plain, 2, idempotency_key="k") == first.task_id
        both = tm.with_options(tags={"c": "d"}, idempotency_key="k2")
        second = await reaches(tm, both.add_task(takes_tags, 3, tags=["own"]))
        assert second.tags == {"c": "d"} and second.idempotency_key == "k2"
        assert second.kwargs == {"tags": ["own"]}
