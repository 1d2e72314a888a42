"""A throwaway nginx in front of a test server: Debian's nginx, its own config in a temp dir.

``run_nginx(LOCATION, upstream_port, directory)`` starts ``nginx -p DIR -c DIR/nginx.conf``
as a child process (``daemon off``), listening on 127.0.0.1 only, on a free port, with its
pid file, temp dirs, access and error logs all inside ``directory``; the block's end stops
it (SIGTERM: a fast shutdown, open event streams and all; SIGKILL if that hangs). Nothing
of the system's nginx set-up (``/etc/nginx``, ``/var/log/nginx``, the service) is read
or touched.

The location blocks below are the ones docs/deployment.md shows, byte for byte (the
upstream there is ``127.0.0.1:8000``; ``locations()`` puts the test server's port in):
tests/test_deployment_docs.py keeps the two in step.

The binary is found as ``NGINX`` (environment), ``/usr/sbin/nginx``, then ``nginx`` on
``PATH``; ``.ci/run`` installs Debian's ``nginx`` package when none is there.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from apps.proxy_support import ProxyServer, run_listening

DOCS_UPSTREAM = "127.0.0.1:8000"

# (a) nginx in front of the app, nothing else: the app sees Host: 127.0.0.1:8000 (the
# upstream), while the browser's Origin names nginx. X-Accel-Buffering: no, which the event
# stream sends, is what keeps nginx from buffering it.
PLAIN = """\
location / {
    proxy_pass http://127.0.0.1:8000;
    proxy_http_version 1.1;
}
"""

# (b) The usual snippet: the browser's host name is passed on, without its port ($host).
HOST = """\
location / {
    proxy_pass http://127.0.0.1:8000;
    proxy_http_version 1.1;
    proxy_set_header Host $host;
}
"""

# (c) The app under /svc/ (nginx strips the prefix; uvicorn runs with --root-path /svc and
# --forwarded-allow-ips 127.0.0.1, so it trusts the X-Forwarded-* headers below).
PREFIX = """\
location /svc/ {
    proxy_pass http://127.0.0.1:8000/;
    proxy_http_version 1.1;
    proxy_set_header Host $host;
    proxy_set_header X-Forwarded-Host $http_host;
    proxy_set_header X-Forwarded-Proto $scheme;
    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
}
"""

# (d) An outer app that mounts the taskflow app at /svc sits behind the plain block (a).
MOUNTED = PLAIN

ALL = {"plain": PLAIN, "host": HOST, "prefix": PREFIX}


class NginxUnavailable(RuntimeError):
    """No nginx binary here, or the throwaway server did not start."""


def find_nginx() -> str:
    """The nginx binary to run, or NginxUnavailable."""
    for candidate in (os.environ.get("NGINX"), "/usr/sbin/nginx", shutil.which("nginx")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise NginxUnavailable("nginx is not installed (apt-get install nginx); CI installs it")


def locations(block: str, upstream_port: int) -> str:
    """``block`` with the docs' upstream replaced by the test server's."""
    assert DOCS_UPSTREAM in block, block
    return block.replace(DOCS_UPSTREAM, f"127.0.0.1:{upstream_port}")


def render_config(directory: Path, port: int, server_body: str) -> str:
    """A complete nginx.conf that keeps every file nginx writes inside ``directory``."""
    d = directory
    # Workers switch to `user`; as root, keep root so they can read the 0700 temp dir.
    # Not as root the directive is meaningless (nginx warns), so it is left out.
    user = "user root;\n" if os.geteuid() == 0 else ""
    body = "".join(f"        {line}\n" if line else "\n" for line in server_body.splitlines())
    return f"""\
{user}daemon off;
master_process on;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;

events {{
    worker_connections 256;
}}

http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    default_type application/octet-stream;

    server {{
        listen 127.0.0.1:{port};
        server_name localhost;

{body}    }}
}}
"""


class Nginx(ProxyServer):
    """A running nginx: ``error_log`` and ``access_log`` are its logs' text."""

    ERROR_LOG = "error.log"

    @property
    def access_log(self) -> str:
        return self.read("access.log")


@contextlib.contextmanager
def run_nginx(
    block: str, upstream_port: int, directory: Path, ready_timeout: float = 10.0
) -> Iterator[Nginx]:
    """Serve ``block`` (a location block from above) in front of ``upstream_port``.

    nginx binds its own port, so a free one is chosen first; if another process takes it
    in between, nginx exits at once and the next try picks another.
    """
    binary = find_nginx()
    directory.mkdir(parents=True, exist_ok=True)
    conf = directory / "nginx.conf"
    server_body = locations(block, upstream_port)

    def start(port: int) -> subprocess.Popen:
        conf.write_text(render_config(directory, port, server_body))
        with open(directory / "nginx.out", "wb") as out:
            cmd = [
                binary,
                "-p",
                f"{directory}/",
                "-c",
                str(conf),
                "-e",
                str(directory / "error.log"),
            ]
            return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)

    def output() -> str:
        text = (directory / "nginx.out").read_text(errors="replace")
        return text + (directory / "error.log").read_text(errors="replace")

    # SIGTERM at the end: a fast shutdown; a graceful one (SIGQUIT) would wait for open
    # event streams.
    with run_listening(
        "nginx", start, output, "Address already in use", NginxUnavailable, ready_timeout
    ) as (port, proc):
        yield Nginx(f"http://127.0.0.1:{port}", port, proc, directory)
