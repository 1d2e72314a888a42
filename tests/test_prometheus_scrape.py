"""Machines read the metrics: Prometheus with a bearer token or HTTP Basic, probes without.

A real uvicorn (in a thread) serves TaskAdmin with a login and a ``metrics_token``. The
Prometheus text is scraped as Prometheus would and parsed by ``prometheus_client``'s
parser; with Debian's ``prometheus`` package, ``promtool`` checks the text and the
documented scrape configuration, and a throwaway Prometheus server scrapes the app with
both kinds of credentials. ``{path}/health/live`` answers anyone, and says nothing else.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import uvicorn
from apps.engine_support import wait_until
from apps.prometheus_support import find, run_prometheus, scrape_config
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from taskflow import TaskAdmin, TaskManager

pytestmark = pytest.mark.slow

TOKEN = "scrape-token-0123456789abcdef0123456789"
ADMIN = ("admin", "admin-password")
SCRAPER = ("prometheus", "scraper-password")
SECRET_KEY = "prometheus-tests-secret-0123456789"
ODD_NAME = 'report "q1" \\ north'  # a label value that needs escaping
STATUSES = {"pending", "running", "success", "failed", "cancelled", "interrupted", "scheduled"}


def make_app() -> tuple[FastAPI, TaskManager]:
    tm = TaskManager(shutdown_timeout=1.0)

    @tm.task(name="send_invoice")
    def send_invoice(n: int) -> int:
        return n

    @tm.task(name=ODD_NAME)
    def report() -> None:
        raise RuntimeError("north is closed")

    app = FastAPI()
    TaskAdmin(app, tm, auth=[ADMIN, SCRAPER], secret_key=SECRET_KEY, metrics_token=TOKEN)

    @app.post("/enqueue")
    async def enqueue() -> dict[str, list[str]]:
        return {"ids": [tm.add_task(send_invoice, 1), tm.add_task(send_invoice, 2),
                        tm.add_task(report)]}  # fmt: skip

    return app, tm


@pytest.fixture(scope="module")
def served() -> Iterator[SimpleNamespace]:
    """The app under uvicorn on a free 127.0.0.1 port, with three finished tasks."""
    app, tm = make_app()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_until(lambda: server.started or not thread.is_alive(), 10, "uvicorn to start")
    assert server.started, "uvicorn did not start"
    port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    try:
        ids = httpx.post(f"{url}/enqueue", timeout=5).json()["ids"]
        wait_until(
            lambda: all(tm.get(i) and tm.get(i).status.value in ("success", "failed") for i in ids),
            10,
            "the tasks to finish",
        )
        yield SimpleNamespace(url=url, port=port, tm=tm, ids=ids)
    finally:
        server.should_exit = True
        thread.join(10)


def get(served, path: str, **kwargs) -> httpx.Response:
    return httpx.get(f"{served.url}{path}", timeout=5, **kwargs)


BEARER = {"Authorization": f"Bearer {TOKEN}"}


def parse(text: str) -> dict:
    return {family.name: family for family in text_string_to_metric_families(text)}


def check_families(text: str) -> None:
    families = parse(text)
    assert {"taskflow_tasks", "taskflow_function_tasks", "taskflow_success_ratio"} <= set(
        families
    ), sorted(families)
    assert families["taskflow_tasks"].type == "gauge"
    # Per queue: the default queue always exists (no limit: no running gauge).
    assert families["taskflow_queue_done"].type == "counter"
    assert {s.labels["queue"] for s in families["taskflow_queue_waiting"].samples} == {"default"}
    by_status = {s.labels["status"]: s.value for s in families["taskflow_tasks"].samples}
    assert set(by_status) == STATUSES
    assert by_status["success"] >= 2 and by_status["failed"] >= 1, by_status

    per_function = {
        (s.labels["func_name"], s.labels["status"]): s.value
        for s in families["taskflow_function_tasks"].samples
    }
    assert per_function[("send_invoice", "success")] >= 2
    assert per_function[(ODD_NAME, "failed")] >= 1  # escaped on the way out, intact here
    assert {status for (_, status) in per_function} == STATUSES

    ratio = families["taskflow_success_ratio"]
    assert ratio.type == "gauge" and 0.0 <= ratio.samples[0].value <= 1.0
    duration = families.get("taskflow_task_duration_seconds")
    assert duration is not None and duration.type == "summary", sorted(families)
    assert {s.labels.get("quantile") for s in duration.samples} >= {"0.5", "0.95"}


# --------------------------------------------------------------------------- scraping


def test_scrape_with_the_bearer_token(served):
    r = get(served, "/tasks/metrics/prometheus", headers=BEARER)
    assert r.status_code == 200, r.text[:300]
    assert r.headers["content-type"].startswith("text/plain")
    assert "version=0.0.4" in r.headers["content-type"]
    check_families(r.text)


def test_scrape_with_http_basic(served):
    r = get(served, "/tasks/metrics/prometheus", auth=SCRAPER)
    assert r.status_code == 200, r.text[:300]
    check_families(r.text)


@pytest.mark.parametrize("path", ["/tasks/metrics", "/tasks/health"])
def test_the_other_read_only_routes_take_the_same_credentials(served, path):
    for kwargs in ({"headers": BEARER}, {"auth": SCRAPER}):
        r = get(served, path, **kwargs)
        assert r.status_code == 200, (path, kwargs, r.status_code, r.text[:300])
        assert r.headers["content-type"].startswith("application/json")


@pytest.mark.parametrize("path", ["/tasks/metrics/prometheus", "/tasks/metrics", "/tasks/health"])
def test_no_or_wrong_credentials_are_refused(served, path):
    attempts = [
        {},
        {"headers": {"Authorization": f"Bearer {TOKEN[:-1]}x"}},
        {"headers": {"Authorization": f"Bearer {TOKEN}extra"}},
        {"headers": {"Authorization": "Bearer"}},
        {"auth": (SCRAPER[0], "wrong")},
        {"headers": {"Authorization": f"Basic {TOKEN}"}},  # the token is no Basic credential
    ]
    for kwargs in attempts:
        r = get(served, path, **kwargs)
        assert r.status_code == 401, (path, kwargs, r.status_code, r.text[:300])
        assert "taskflow_tasks" not in r.text and "send_invoice" not in r.text


def test_machine_credentials_open_nothing_else(served):
    """The token and Basic read metrics and health only: not tasks, not the dashboard, and
    they change nothing."""
    task_id = served.ids[0]
    for kwargs in ({"headers": BEARER}, {"auth": SCRAPER}):
        for path in ("/tasks", f"/tasks/{task_id}", "/tasks/export.csv", "/tasks/audit",
                     "/tasks/dashboard/stream"):  # fmt: skip
            r = get(served, path, **kwargs)
            assert r.status_code == 401, (path, kwargs, r.status_code, r.text[:200])
        r = get(served, "/tasks/dashboard", follow_redirects=False, **kwargs)
        assert r.status_code in (303, 307) and "/auth/login" in r.headers["location"], r
        r = httpx.post(f"{served.url}/tasks/retry-failed", params={"since": "1h"}, timeout=5,
                       **kwargs)  # fmt: skip
        assert r.status_code in (401, 403), (kwargs, r.status_code, r.text[:200])
    with httpx.Client(base_url=served.url, timeout=5) as admin:
        form = {"username": ADMIN[0], "password": ADMIN[1]}
        assert admin.post("/tasks/auth/login", data=form).status_code == 303
        tasks = admin.get("/tasks", params={"limit": 1000}).json()
    assert not [t for t in tasks if t.get("retry_of")], "a machine credential replayed tasks"


# --------------------------------------------------------------------------- probes


def test_liveness_needs_no_credentials_and_says_nothing_else(served):
    r = get(served, "/tasks/health/live")
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "ok"}
    for secret in [*served.ids, "send_invoice", ODD_NAME, "north", "admin", "prometheus"]:
        assert secret not in r.text


def test_health_without_credentials_is_refused(served):
    assert get(served, "/tasks/health").status_code == 401


async def test_liveness_is_503_when_the_manager_does_not_run():
    app, tm = make_app()  # never started: httpx's ASGI transport runs no lifespan
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        r = await client.get("/tasks/health/live")
    assert r.status_code == 503, r.text
    assert r.json().get("status") != "ok"
    await asyncio.sleep(0)


# --------------------------------------------------------------------------- promtool


def need(name: str) -> str:
    path = find(name)
    if path is None:
        message = f"{name} is not installed (apt-get install prometheus); CI installs it"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return path


def test_promtool_accepts_the_scraped_text(served):
    promtool = need("promtool")
    text = get(served, "/tasks/metrics/prometheus", headers=BEARER).text
    done = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                          text=True, timeout=30)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert not done.stdout.strip() and not done.stderr.strip(), done.stdout + done.stderr


def secret_files(directory: Path) -> tuple[Path, Path]:
    token_file, password_file = directory / "token", directory / "password"
    token_file.write_text(TOKEN + "\n")
    password_file.write_text(SCRAPER[1] + "\n")
    return token_file, password_file


def test_promtool_accepts_the_documented_scrape_config(tmp_path: Path):
    promtool = need("promtool")
    config = tmp_path / "prometheus.yml"
    config.write_text(scrape_config(8000, *secret_files(tmp_path)))
    done = subprocess.run([promtool, "check", "config", str(config)], capture_output=True,
                          text=True, timeout=30)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout + done.stderr


def test_prometheus_scrapes_the_app_with_either_credential(served, tmp_path: Path):
    need("prometheus")
    config = "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\n" + scrape_config(
        served.port, *secret_files(tmp_path)
    )
    with run_prometheus(config, tmp_path / "prometheus") as prom:

        def all_up():
            targets = prom.api("targets")["activeTargets"]
            health = {t["labels"]["job"]: (t["health"], t["lastError"]) for t in targets}
            jobs = {"taskflow", "taskflow-basic-auth"}
            return (
                health
                if set(health) == jobs and all(h == "up" for h, _ in health.values())
                else None
            )

        deadline = time.monotonic() + 20
        while not all_up():
            if time.monotonic() > deadline:
                raise AssertionError(f"targets not up: {prom.api('targets')}")
            time.sleep(0.2)
        result = prom.api("query", query='taskflow_tasks{status="success"}')["result"]
        jobs = {r["metric"]["job"]: float(r["value"][1]) for r in result}
        assert set(jobs) == {"taskflow", "taskflow-basic-auth"}, result
        assert all(value >= 2 for value in jobs.values()), jobs
