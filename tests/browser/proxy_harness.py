"""The four deployments the proxy tests drive: uvicorn behind a throwaway nginx.

- ``plain``: nginx's bare ``proxy_pass`` (the app sees the upstream's Host, port and all).
- ``host``: ``proxy_set_header Host $host`` (the browser's host name, without its port).
- ``prefix``: nginx serves the app under ``/svc/``; uvicorn runs with ``--root-path /svc``
  and ``--forwarded-allow-ips 127.0.0.1`` (it trusts nginx's X-Forwarded-* headers).
- ``mounted``: an outer app mounts dashboard_app at ``/svc`` and runs its lifespan
  (mounted_app.py), behind the plain block.
- ``caddy`` and ``caddy-prefix``: Caddy's ``reverse_proxy``, at the root and under ``/svc``
  (``handle_path``), uvicorn as for ``plain`` and ``prefix``.

The proxy listens on a port of its own, never 80: behind nginx the browser's Origin then
differs from whatever Host the app sees, which is what these set-ups are about.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from apps import caddy_support
from apps.caddy_support import Caddy, CaddyUnavailable, find_caddy, run_caddy
from apps.nginx_support import (
    HOST,
    MOUNTED,
    PLAIN,
    PREFIX,
    Nginx,
    NginxUnavailable,
    find_nginx,
    run_nginx,
)
from browser_harness import BASE_PATH

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Setup:
    name: str
    app: str  # uvicorn's APP argument, from tests/browser
    block: str  # the nginx location block or Caddy site body (apps/*_support.py)
    prefix: str  # where the app's own routes are, seen from the browser
    uvicorn_args: tuple[str, ...] = ()
    ready: str = "/demo/ready"  # asked of uvicorn directly
    proxy: str = "nginx"  # or "caddy"

    def find_proxy(self) -> str:
        """The proxy's binary; NginxUnavailable or CaddyUnavailable when it is missing."""
        return find_caddy() if self.proxy == "caddy" else find_nginx()


ROOT_PATH_ARGS = ("--root-path", "/svc", "--forwarded-allow-ips", "127.0.0.1")


SETUPS = {
    "plain": Setup("plain", "dashboard_app:app", PLAIN, ""),
    "host": Setup("host", "dashboard_app:app", HOST, ""),
    "prefix": Setup("prefix", "dashboard_app:app", PREFIX, "/svc", ROOT_PATH_ARGS),
    "mounted": Setup("mounted", "mounted_app:app", MOUNTED, "/svc", ready="/ready"),
    "caddy": Setup("caddy", "dashboard_app:app", caddy_support.PLAIN, "", proxy="caddy"),
    "caddy-prefix": Setup(
        "caddy-prefix",
        "dashboard_app:app",
        caddy_support.PREFIX,
        "/svc",
        ROOT_PATH_ARGS,
        proxy="caddy",
    ),
}
UNAVAILABLE = (NginxUnavailable, CaddyUnavailable)


@dataclass
class Upstream:
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
    """``uvicorn APP`` on a socket bound here (``--fd``), like browser_harness.serve."""
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
    sock.close()
    upstream = Upstream(f"http://127.0.0.1:{port}", port, proc, log)
    try:
        deadline = time.monotonic() + ready_timeout
        with httpx.Client(base_url=upstream.url, timeout=2.0) as client:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"uvicorn exited with {proc.returncode}:\n{upstream.text()}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(ready, timeout=1.0).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"uvicorn not ready in {ready_timeout}s:\n{upstream.text()}")
                time.sleep(0.05)
        yield upstream
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=8)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


@dataclass
class Deployment:
    setup: Setup
    proxy: Nginx | Caddy
    upstream: Upstream

    @property
    def url(self) -> str:
        """The proxy's origin, what the browser sees: http://127.0.0.1:<port>."""
        return self.proxy.url

    @property
    def prefix(self) -> str:
        return self.setup.prefix

    @property
    def base(self) -> str:
        """The admin's URL through nginx: http://127.0.0.1:<port>[/svc]/tasks."""
        return f"{self.url}{self.prefix}{BASE_PATH}"

    @property
    def dashboard(self) -> str:
        return f"{self.base}/dashboard"

    def under_base(self, url: str) -> bool:
        """Whether ``url`` is the admin's own: its list or anything below it."""
        return url == self.base or url.startswith((self.base + "/", self.base + "?"))

    def client(self) -> httpx.Client:
        """An httpx client to the proxy, at the deployment's prefix."""
        return httpx.Client(base_url=f"{self.url}{self.prefix}", timeout=10.0)

    def demo(self, kind: str, **params) -> dict:
        """POST one of dashboard_app's /demo routes through the proxy."""
        with self.client() as client:
            r = client.post(f"/demo/{kind}", params=params)
            r.raise_for_status()
            return r.json()

    @contextlib.contextmanager
    def admin_client(self, username: str, password: str) -> Iterator[httpx.Client]:
        """Logged in through the proxy (no Origin, no Sec-Fetch-*: not a browser, no CSRF)."""
        with self.client() as client:
            form = {"username": username, "password": password}
            r = client.post(f"{BASE_PATH}/auth/login", data=form)
            assert r.status_code == 303, (r.status_code, r.text[:300])
            yield client

    def logs(self) -> str:
        return (
            f"--- uvicorn ({self.setup.name}) ---\n{self.upstream.text()[-4000:]}\n"
            f"--- {self.setup.proxy} log ---\n{self.proxy.error_log[-4000:]}"
        )


@contextlib.contextmanager
def deploy(
    setup: Setup, directory: Path, env: dict[str, str] | None = None
) -> Iterator[Deployment]:
    run_proxy = run_caddy if setup.proxy == "caddy" else run_nginx
    with (
        serve_app(
            setup.app, directory / "uvicorn", setup.uvicorn_args, env, ready=setup.ready
        ) as upstream,
        run_proxy(setup.block, upstream.port, directory / setup.proxy) as proxy,
    ):
        yield Deployment(setup, proxy, upstream)
