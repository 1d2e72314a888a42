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

    @contextlib.contextmanager
    def admin_client(self, username: str, password: str) -> Iterator[httpx.Client]:
        """An httpx client logged in through the form (a non-browser client needs no CSRF)."""
        with self.client() as client:
            form = {"username": username, "password": password}
            r = client.post(f"{BASE_PATH}/auth/login", data=form)
            assert r.status_code == 303, (r.status_code, r.text[:300])
            yield client


@contextlib.contextmanager
def serve(
    log_dir: Path, ready_timeout: float = 20.0, env: dict[str, str] | None = None
) -> Iterator[Server]:
    """Run ``uvicorn dashboard_app:app`` on a free 127.0.0.1 port until the block ends.

    ``env`` adds environment variables for the server (dashboard_app reads a few).

    The listening socket is bound here (port 0) and handed to uvicorn with ``--fd``, so no
    other process can take the port between choosing and binding it.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    log = log_dir / "uvicorn.log"
    cmd = [
        sys.executable, "-m", "uvicorn", "dashboard_app:app", "--app-dir", str(HERE),
        "--fd", str(sock.fileno()), "--log-level", "info", "--no-access-log",
        "--timeout-graceful-shutdown", "2",
    ]  # fmt: skip
    environ = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, pass_fds=[sock.fileno()],
                                env=environ)  # fmt: skip
    sock.close()  # the child holds its own copy
    server = Server(f"http://127.0.0.1:{port}", proc, log)
    try:
        deadline = time.monotonic() + ready_timeout
        with server.client() as client:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"uvicorn exited with {proc.returncode}:\n{log.read_text()}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get("/demo/ready", timeout=1.0).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"uvicorn not ready in {ready_timeout}s:\n{log.read_text()}")
                time.sleep(0.05)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=8)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


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
