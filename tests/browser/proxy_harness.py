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
from browser_harness import BASE_PATH, Upstream, serve_app, signed_in


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

    def admin_client(
        self, username: str, password: str
    ) -> contextlib.AbstractContextManager[httpx.Client]:
        """Logged in through the proxy (no Origin, no Sec-Fetch-*: not a browser, no CSRF)."""
        return signed_in(self.client(), username, password)

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
