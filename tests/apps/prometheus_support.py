"""Debian's Prometheus for the scrape tests: ``promtool`` checks, and a throwaway server.

``SCRAPE_CONFIG`` is the scrape configuration docs/deployment.md shows, byte for byte (the
app there is at ``127.0.0.1:8000``, the secrets in files under ``/etc/prometheus``);
``scrape_config()`` puts the test server's port and secret files in.

``run_prometheus(config, directory)`` starts ``prometheus`` on a free 127.0.0.1 port with
its data and log in ``directory`` and stops it when the block ends (the package's own
service is never started: ``.ci/run`` installs the package, policy-rc.d keeps it off).

The binaries are found as ``PROMTOOL``/``PROMETHEUS`` (environment), then on ``PATH``;
``.ci/run`` installs Debian's ``prometheus`` package (promtool is in it) when missing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from apps.process_support import free_port, stop_process, wait_http_ready

DOCS_TARGET = "127.0.0.1:8000"
DOCS_TOKEN_FILE = "/etc/prometheus/taskflow-token"
DOCS_PASSWORD_FILE = "/etc/prometheus/taskflow-password"

SCRAPE_CONFIG = """\
scrape_configs:
  - job_name: taskflow
    metrics_path: /tasks/metrics/prometheus
    authorization:
      type: Bearer
      credentials_file: /etc/prometheus/taskflow-token
    static_configs:
      - targets: ["127.0.0.1:8000"]

  - job_name: taskflow-basic-auth
    metrics_path: /tasks/metrics/prometheus
    basic_auth:
      username: prometheus
      password_file: /etc/prometheus/taskflow-password
    static_configs:
      - targets: ["127.0.0.1:8000"]
"""


def scrape_config(port: int, token_file: Path, password_file: Path) -> str:
    """``SCRAPE_CONFIG`` aimed at the test server, with the test's secret files."""
    return (
        SCRAPE_CONFIG.replace(DOCS_TARGET, f"127.0.0.1:{port}")
        .replace(DOCS_TOKEN_FILE, str(token_file))
        .replace(DOCS_PASSWORD_FILE, str(password_file))
    )


def find(name: str) -> str | None:
    """``promtool`` or ``prometheus``: the environment's override, else PATH, else None."""
    candidate = os.environ.get(name.upper()) or shutil.which(name)
    return candidate if candidate and os.access(candidate, os.X_OK) else None


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen
    log: Path

    def api(self, path: str, **params: str) -> dict:
        r = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=5.0)
        r.raise_for_status()
        body = r.json()
        assert body["status"] == "success", body
        return body["data"]  # type: ignore[no-any-return]


@contextlib.contextmanager
def run_prometheus(
    config: str, directory: Path, ready_timeout: float = 20.0
) -> Iterator[Prometheus]:
    binary = find("prometheus")
    if binary is None:
        raise FileNotFoundError("prometheus is not installed (apt-get install prometheus)")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "prometheus.yml").write_text(config)
    port = free_port()
    log = directory / "prometheus.log"
    cmd = [
        binary,
        f"--config.file={directory / 'prometheus.yml'}",
        f"--storage.tsdb.path={directory / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    server = Prometheus(f"http://127.0.0.1:{port}", proc, log)
    try:
        wait_http_ready(proc, f"{server.url}/-/ready", "prometheus", log, ready_timeout, 0.1)
        yield server
    finally:
        stop_process(proc, signal.SIGTERM, timeout=10)
