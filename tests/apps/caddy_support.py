"""A throwaway Caddy in front of a test server: Debian's caddy, its own Caddyfile in a temp dir.

``run_caddy(SITE, upstream_port, directory)`` starts ``caddy run`` as a child process with a
Caddyfile that serves plain HTTP on 127.0.0.1 only (``bind``), on a free port, with no admin
endpoint, no automatic HTTPS and every file Caddy writes (storage, autosave) inside
``directory``; the block's end stops it. The package's own service is never started.

The site bodies below are the ones docs/deployment.md shows, byte for byte (inside a site
block there, upstream ``127.0.0.1:8000``): tests/test_deployment_docs.py keeps them in step.
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

# The app at the site's root. Caddy passes the Host through and sets X-Forwarded-For,
# -Proto and -Host itself; it flushes text/event-stream responses as they come.
PLAIN = """\
reverse_proxy 127.0.0.1:8000
"""

# The app under /svc/: handle_path strips the prefix; uvicorn runs with --root-path /svc.
PREFIX = """\
handle_path /svc/* {
	reverse_proxy 127.0.0.1:8000
}
"""


class CaddyUnavailable(RuntimeError):
    """No caddy binary here, or the throwaway server did not start."""


def find_caddy() -> str:
    for candidate in (os.environ.get("CADDY"), shutil.which("caddy")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise CaddyUnavailable("caddy is not installed (apt-get install caddy); CI installs it")


def render_caddyfile(directory: Path, port: int, site_body: str) -> str:
    body = "".join(f"\t{line}\n" if line else "\n" for line in site_body.splitlines())
    return f"""\
{{
\tadmin off
\tauto_https off
\tstorage file_system {directory}/data
}}

http://127.0.0.1:{port} {{
\tbind 127.0.0.1
{body}}}
"""


class Caddy(ProxyServer):
    """A running Caddy: ``error_log`` is its log's text (it has no access log)."""

    ERROR_LOG = "caddy.log"


@contextlib.contextmanager
def run_caddy(
    site_body: str, upstream_port: int, directory: Path, ready_timeout: float = 10.0
) -> Iterator[Caddy]:
    binary = find_caddy()
    directory.mkdir(parents=True, exist_ok=True)
    caddyfile = directory / "Caddyfile"
    body = site_body.replace(DOCS_UPSTREAM, f"127.0.0.1:{upstream_port}")
    # Caddy keeps its autosave and data under HOME / XDG dirs: keep them in the temp dir.
    env = {
        **os.environ,
        "HOME": str(directory),
        "XDG_DATA_HOME": str(directory / "xdg-data"),
        "XDG_CONFIG_HOME": str(directory / "xdg-config"),
    }

    def start(port: int) -> subprocess.Popen:
        caddyfile.write_text(render_caddyfile(directory, port, body))
        with open(directory / "caddy.log", "wb") as out:
            cmd = [binary, "run", "--config", str(caddyfile), "--adapter", "caddyfile"]
            return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)

    def output() -> str:
        return (directory / "caddy.log").read_text(errors="replace")

    with run_listening(
        "caddy", start, output, "address already in use", CaddyUnavailable, ready_timeout
    ) as (port, proc):
        yield Caddy(f"http://127.0.0.1:{port}", port, proc, directory)
