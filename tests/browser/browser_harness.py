"""Serve dashboard_app with a real uvicorn and record what a page does (tests, screenshot.py)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from apps.process_support import stop_process, wait_http_ready

HERE = Path(__file__).resolve().parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
BASE_PATH = "/tasks"
FINAL = ("success", "failed", "interrupted", "cancelled")  # a task in these is done


@contextlib.contextmanager
def signed_in(client: httpx.Client, username: str, password: str) -> Iterator[httpx.Client]:
    """``client``, logged in through the login form; closed when the block ends.

    Not a browser (no Origin, no Sec-Fetch-*), so it needs no CSRF token.
    """
    with client:
        form = {"username": username, "password": password}
        r = client.post(f"{BASE_PATH}/auth/login", data=form)
        assert r.status_code == 303, (r.status_code, r.text[:300])
        yield client


@dataclass
class Server:
    url: str  # http://127.0.0.1:<port>
    process: subprocess.Popen
    log: Path

    @property
    def dashboard(self) -> str:
        return f"{self.url}{BASE_PATH}/dashboard"

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10.0)

    def admin_client(
        self, username: str, password: str
    ) -> contextlib.AbstractContextManager[httpx.Client]:
        """An httpx client logged in through the form (a non-browser client needs no CSRF)."""
        return signed_in(self.client(), username, password)


@dataclass
class Upstream:
    """A uvicorn process that ``serve_app`` started."""

    url: str  # http://127.0.0.1:<port>
    port: int
    process: subprocess.Popen
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def serve_app(
    app: str,
    log_dir: Path,
    args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    ready: str = "/demo/ready",
    ready_timeout: float = 20.0,
) -> Iterator[Upstream]:
    """Run ``uvicorn APP ARGS`` (APP from tests/browser) on a free 127.0.0.1 port.

    Yields once ``GET ready`` answers 200; the block's end stops it (SIGINT, then SIGKILL).
    ``env`` adds environment variables for the server (dashboard_app reads a few).

    The listening socket is bound here (port 0) and handed to uvicorn with ``--fd``, so no
    other process can take the port between choosing and binding it.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / "uvicorn.log"
    cmd = [
        sys.executable, "-m", "uvicorn", app, "--app-dir", str(HERE),
        "--fd", str(sock.fileno()), "--log-level", "info", "--no-access-log",
        "--timeout-graceful-shutdown", "2", *args,
    ]  # fmt: skip
    environ = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, pass_fds=[sock.fileno()],
                                env=environ)  # fmt: skip
    sock.close()  # the child holds its own copy
    upstream = Upstream(f"http://127.0.0.1:{port}", port, proc, log)
    try:
        wait_http_ready(proc, f"{upstream.url}{ready}", "uvicorn", log, ready_timeout, 0.05)
        yield upstream
    finally:
        stop_process(proc, signal.SIGINT, timeout=8)


@contextlib.contextmanager
def serve(
    log_dir: Path, ready_timeout: float = 20.0, env: dict[str, str] | None = None
) -> Iterator[Server]:
    """Run ``uvicorn dashboard_app:app`` (``serve_app``) until the block ends."""
    with serve_app("dashboard_app:app", log_dir, env=env, ready_timeout=ready_timeout) as up:
        yield Server(up.url, up.process, up.log)


@dataclass
class PageLog:
    """What a page did: every request URL, document loads, console errors and exceptions."""

    requests: list[str] = field(default_factory=list)
    documents: list[str] = field(default_factory=list)  # page loads (not history.replaceState)
    errors: list[str] = field(default_factory=list)

    def attach(self, page) -> None:
        page.on("request", self._request)
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))

    def _request(self, request) -> None:
        self.requests.append(request.url)
        if request.resource_type == "document":
            self.documents.append(request.url)

    def _console(self, msg) -> None:
        if msg.type in ("error", "assert"):
            self.errors.append(f"console.{msg.type}: {msg.text} @ {msg.location}")

    def off_host(self) -> list[str]:
        """Requests that did not go to 127.0.0.1 (``data:`` URLs never leave the page)."""
        bad = []
        for url in self.requests:
            parts = urlsplit(url)
            if parts.scheme == "data":
                continue
            if parts.scheme not in ("http", "https", "ws", "wss") or parts.hostname != "127.0.0.1":
                bad.append(url)
        return bad

    def assert_clean(self) -> None:
        assert self.requests, "no request was recorded: the listener is not attached"
        assert not self.off_host(), f"requests off 127.0.0.1: {self.off_host()}"
        assert not self.errors, "console errors:\n" + "\n".join(self.errors)


def log_in(page, server: Server, username: str = "admin", password: str = "secret") -> None:
    """Open the dashboard, get sent to the login form, sign in, wait for the live stream."""
    from playwright.sync_api import expect

    page.goto(server.dashboard)
    expect(page).to_have_url(f"{server.url}{BASE_PATH}/auth/login?next={BASE_PATH}/dashboard")
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("button[type=submit]")
    expect(page).to_have_url(server.dashboard)
    expect(page.locator("#live")).to_have_text("Live")


# --------------------------------------------------------------------------- test helpers


def expect(*args, **kwargs):
    """Playwright's ``expect``, imported when first called, not when the module is."""
    from playwright.sync_api import expect as _expect

    return _expect(*args, **kwargs)


def row(page, task_id: str):
    """The dashboard's table row of ``task_id`` (a locator)."""
    return page.locator(f'tr[data-task-id="{task_id}"]')


def enqueue(server: Server, kind: str, **params) -> str:
    """Start a task with dashboard_app's ``POST /demo/<kind>`` (httpx): its task id."""
    with server.client() as client:
        r = client.post(f"/demo/{kind}", params=params)
        r.raise_for_status()
        return r.json()["task_id"]


def wait_final(admin, task_id: str, timeout: float = 10.0) -> dict:
    """Ask the admin API (``admin``, a logged-in client) until ``task_id`` is FINAL: the task."""
    deadline = time.monotonic() + timeout
    while True:
        r = admin.get(f"{BASE_PATH}/{task_id}")
        r.raise_for_status()
        if r.json()["status"] in FINAL:
            return r.json()
        assert time.monotonic() < deadline, f"{task_id} not finished in {timeout}s"
        time.sleep(0.05)
