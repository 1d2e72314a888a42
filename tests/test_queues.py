"""Named queues: concurrency limits, priority within a queue, a bounded size that refuses
with a clear error (503 in a route), and their figures in /metrics and Prometheus."""

from __future__ import annotations

import asyncio

import pytest
from apps.engine_support import lifespan, reaches, serve, started, until
from fastapi import Depends, FastAPI
from taskflow import ManagedBackgroundTasks, Queue, QueueFull, TaskAdmin, TaskManager


async def test_priority_decides_who_starts_next_within_a_queue():
    tm = TaskManager(queues={"one": Queue(concurrency=1)})
    gate = asyncio.Event()
    order: list[str] = []

    @tm.task(queue="one")
    async def blocker():
        await gate.wait()

    def job(label: str, priority: int):
        @tm.task(queue="one", priority=priority, name=f"job-{label}")
        async def run():
            order.append(label)

        return run

    low, high, mid, high2 = job("low", 0), job("high", 10), job("mid", 5), job("high2", 10)
    async with started(tm):
        first = tm.add_task(blocker)
        await reaches(tm, first, "running")
        ids = [tm.add_task(f) for f in (low, high, mid, high2)]
        assert tm.metrics()["queues"]["one"]["waiting"] == 4
        # Each has reached the queue's gate (its asyncio task starts on the next turn).
        await until(lambda: len(tm._lanes["one"].heap) == 4, what="4 at the gate")
        assert all(tm.get(i).status.value == "pending" for i in ids)
        gate.set()
        for task_id in ids:
            await reaches(tm, task_id, "success")
    # Highest first; equal priorities in the order added.
    assert order == ["high", "high2", "mid", "low"]


async def test_a_queue_runs_at_most_concurrency_tasks_and_others_are_unlimited():
    tm = TaskManager(queues={"two": Queue(concurrency=2)})
    running = {"two": 0, "default": 0}
    peak = {"two": 0, "default": 0}

    def make(queue: str):
        @tm.task(queue=queue, name=f"work-{queue}")
        async def work():
            running[queue] += 1
            peak[queue] = max(peak[queue], running[queue])
            await asyncio.sleep(0.02)
            running[queue] -= 1

        return work

    limited, free = make("two"), make("default")
    async with started(tm):
        ids = [tm.add_task(limited) for _ in range(8)] + [tm.add_task(free) for _ in range(8)]
        for task_id in ids:
            await reaches(tm, task_id, "success")
    assert peak == {"two": 2, "default": 8}
    queues = tm.metrics()["queues"]
    assert queues["two"] == {
        "concurrency": 2,
        "max_size": None,
        "waiting": 0,
        "running": 0,
        "done": 8,
        "done_last_minute": queues["two"]["done_last_minute"],
    }
    assert queues["default"]["done"] == 8 and queues["default"]["running"] == 0


async def test_a_full_queue_refuses_with_queuefull_and_a_cancelled_waiter_frees_its_place():
    tm = TaskManager(queues={"mail": Queue(concurrency=1, max_size=2)})
    gate = asyncio.Event()
    ran: list[int] = []

    @tm.task(queue="mail")
    async def send(n):
        await gate.wait()
        ran.append(n)

    async with started(tm):
        first = tm.add_task(send, 1)
        await reaches(tm, first, "running")  # running tasks do not count against max_size
        second, third = tm.add_task(send, 2), tm.add_task(send, 3)
        with pytest.raises(QueueFull) as refused:
            tm.add_task(send, 4)
        assert "queue 'mail' is full" in str(refused.value) and "max_size=2" in str(refused.value)
        assert refused.value.status_code == 503 and refused.value.headers == {"Retry-After": "1"}
        page, total = await tm.query(limit=100)
        assert total == 3, "a refused task leaves no record"

        tm.cancel(second)  # a waiting task cancelled: its place is free again
        fourth = tm.add_task(send, 4)
        gate.set()
        for task_id in (first, third, fourth):
            await reaches(tm, task_id, "success")
        assert (await reaches(tm, second)).status.value == "cancelled"
    assert ran == [1, 3, 4], "the cancelled waiter never ran and took no slot"
    assert tm.metrics()["queues"]["mail"]["waiting"] == 0


async def test_a_route_that_adds_to_a_full_queue_answers_503_with_retry_after():
    tm = TaskManager(queues={"mail": Queue(concurrency=1, max_size=1)})
    gate = asyncio.Event()

    @tm.task(queue="mail")
    async def send(to: str):
        await gate.wait()

    app = FastAPI()
    TaskAdmin(app, tm)

    @app.post("/signup")
    async def signup(to: str, tasks: ManagedBackgroundTasks = Depends(tm.get_tasks)):
        return {"task_id": tasks.add_task(send, to)}

    async with lifespan(app), serve(app) as http:
        first = (await http.post("/signup", params={"to": "a"})).json()["task_id"]
        await reaches(tm, first, "running")
        assert (await http.post("/signup", params={"to": "b"})).status_code == 200
        refused = await http.post("/signup", params={"to": "c"})
        assert refused.status_code == 503
        assert refused.headers["Retry-After"] == "1"
        assert "queue 'mail' is full" in refused.json()["detail"]
        gate.set()
        await until(lambda: tm.metrics()["queues"]["mail"]["done"] == 2, what="both done")
        assert (await http.post("/signup", params={"to": "c"})).status_code == 200

        prometheus = (await http.get("/tasks/metrics/prometheus")).text
        assert 'taskflow_queue_waiting{queue="mail"}' in prometheus
        assert 'taskflow_queue_running{queue="mail"}' in prometheus
        assert 'taskflow_queue_done_total{queue="mail"}' in prometheus
        metrics = (await http.get("/tasks/metrics")).json()
        assert metrics["queues"]["mail"]["max_size"] == 1
        gate.set()


def test_queue_options_are_checked_where_they_are_given():
    with pytest.raises(ValueError, match="concurrency"):
        Queue(concurrency=0)
    with pytest.raises(ValueError, match="max_size"):
        Queue(max_size=0)
    with pytest.raises(TypeError, match="queues must be a dict"):
        TaskManager(queues={"mail": 5})
    tm = TaskManager(queues={"mail": Queue(concurrency=2)})
    with pytest.raises(ValueError, match="queue='mial' is not a queue of this TaskManager"):
        tm.task(queue="mial")
    with pytest.raises(TypeError, match="priority must be an int"):
        tm.task(priority="high")
