"""What the throwaway proxies (nginx_support.py, caddy_support.py) share.

A proxy binds its own port, so a free one is chosen first; if another process takes it in
between, the proxy exits at once and ``run_listening`` tries again on another.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from apps.process_support import free_port, stop_process


@dataclass
class ProxyServer:
    """A running proxy; every file it writes is in ``directory``."""

    url: str  # http://127.0.0.1:<port>, no trailing slash
    port: int
    process: subprocess.Popen
    directory: Path

    ERROR_LOG: ClassVar[str]  # each proxy's: its log file in ``directory``

    def read(self, name: str) -> str:
        """The text of the file ``name`` in ``directory``, or "" if there is none yet."""
        path = self.directory / name
        return path.read_text(errors="replace") if path.exists() else ""

    @property
    def error_log(self) -> str:
        return self.read(self.ERROR_LOG)


def listening(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:``port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def run_listening(
    name: str,
    start: Callable[[int], subprocess.Popen],
    output: Callable[[], str],
    in_use: str,
    unavailable: type[Exception],
    ready_timeout: float,
) -> Iterator[tuple[int, subprocess.Popen]]:
    """``start(port)`` on a free port until it listens there; stop it when the block ends.

    Up to five tries: when the process exits and ``output()`` says ``in_use`` (the port was
    taken meanwhile), another port is tried; any other exit, or no port after
    ``ready_timeout`` seconds, raises ``unavailable``. Yields the port and the process.
    """
    last_error = ""
    for _attempt in range(5):
        port = free_port()
        proc = start(port)
        deadline = time.monotonic() + ready_timeout
        while proc.poll() is None and not listening(port):
            if time.monotonic() > deadline:
                stop_process(proc)
                raise unavailable(f"{name} did not listen in {ready_timeout}s")
            time.sleep(0.02)
        if proc.poll() is None:
            try:
                yield port, proc
            finally:
                stop_process(proc)
            return
        last_error = output()
        if in_use not in last_error:
            break
    raise unavailable(f"{name} failed to start:\n{last_error}")
