"""Child servers for the tests: a free port, waiting until one answers, stopping it.

Used by the throwaway proxies (proxy_support.py), Prometheus (prometheus_support.py) and
the browser tests' uvicorn (tests/browser/browser_harness.py).
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now (another process may take it later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http_ready(
    proc: subprocess.Popen, url: str, what: str, log: Path, timeout: float, interval: float
) -> None:
    """Ask ``GET url`` every ``interval`` seconds until it answers 200.

    RuntimeError, with ``log``'s text, if ``proc`` exits first or ``timeout`` seconds pass.
    """
    deadline = time.monotonic() + timeout
    with httpx.Client() as client:
        while True:
            if proc.poll() is not None:
                output = log.read_text(errors="replace")
                raise RuntimeError(f"{what} exited with {proc.returncode}:\n{output}")
            with contextlib.suppress(httpx.HTTPError):
                if client.get(url, timeout=1.0).status_code == 200:
                    return
            if time.monotonic() > deadline:
                output = log.read_text(errors="replace")
                raise RuntimeError(f"{what} not ready in {timeout}s:\n{output}")
            time.sleep(interval)


def stop_process(
    proc: subprocess.Popen, sig: signal.Signals = signal.SIGTERM, timeout: float = 5
) -> None:
    """Send ``sig`` unless ``proc`` has exited; SIGKILL it if it is not gone in ``timeout`` s."""
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
