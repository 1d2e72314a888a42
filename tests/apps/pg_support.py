"""A throwaway PostgreSQL cluster for the tests: initdb in a temp dir, pg_ctl on a free port.

``PostgresServer().start()`` makes a fresh cluster that only this test session uses:
TCP on 127.0.0.1 with password (scram-sha-256) authentication for user ``postgres``,
its unix socket inside the temp dir, and settings that trade durability for speed
(``fsync=off``). ``create_database()`` hands out one empty database per test.

The binaries are found at runtime (``PG_BINDIR``, ``pg_config --bindir``, the newest
``/usr/lib/postgresql/*/bin``, then ``initdb`` on ``PATH``). PostgreSQL refuses to run
as root, so as root every server command runs as the ``postgres`` user via ``runuser``.

asyncpg is imported only when a database is created or queried, so importing this
module costs nothing when no test needs PostgreSQL.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

T = TypeVar("T")

SERVER_BINARIES = ("initdb", "pg_ctl", "postgres")
OS_USER_WHEN_ROOT = "postgres"
SUPERUSER = "postgres"

# Settings for a disposable test cluster: no durability, room for many pools, small memory.
SERVER_SETTINGS = {
    "fsync": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "32MB",
    "max_parallel_workers_per_gather": "0",  # containers often have a tiny /dev/shm
    "TimeZone": "UTC",
    "log_min_messages": "warning",
}


class PostgresUnavailable(RuntimeError):
    """No usable PostgreSQL here, or the throwaway cluster failed to start."""


def run_sync(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """Run the coroutine ``fn(*args)`` to completion in a fresh thread with its own loop.

    Works from plain code and from inside a running event loop (an async test) alike.
    """
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, fn(*args)).result()


def _version_key(path: Path) -> tuple[int, ...]:
    """``/usr/lib/postgresql/15/bin`` -> ``(15,)``; unknown layouts sort first."""
    return tuple(int(part) for part in re.findall(r"\d+", path.parent.name))


def has_server_binaries(bindir: Path) -> bool:
    """Whether ``bindir`` holds executable ``initdb``, ``pg_ctl`` and ``postgres``."""
    return all(os.access(bindir / name, os.X_OK) for name in SERVER_BINARIES)


def find_bindir() -> Path:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``, or PostgresUnavailable.

    ``PATH`` comes last and is resolved through symlinks: Debian puts wrappers on it
    that are not the server binaries.
    """
    candidates: list[Path] = []
    if os.environ.get("PG_BINDIR"):
        candidates.append(Path(os.environ["PG_BINDIR"]))
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
            if out:
                candidates.append(Path(out))
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).resolve().parent)
    for bindir in candidates:
        if has_server_binaries(bindir):
            return bindir
    tried = ", ".join(str(c) for c in candidates) or "nothing"
    raise PostgresUnavailable(
        f"no PostgreSQL server binaries ({', '.join(SERVER_BINARIES)}) found; tried {tried}. "
        "Install Debian's 'postgresql' package or set PG_BINDIR."
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def dbname_of(url_or_name: str) -> str:
    """The database name in a ``postgresql://`` URL (a bare name is returned as is)."""
    if "://" not in url_or_name:
        return url_or_name
    return urlsplit(url_or_name).path.lstrip("/")


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class PostgresServer:
    """One throwaway PostgreSQL cluster: ``start()``, then ``url``/``create_database()``.

    ``stop()``/``start()`` and ``restart()`` keep the data dir and the port, so URLs
    handed out before stay valid; ``kill()`` stops it the way a crash would;
    ``cleanup()`` stops it and deletes its temp dir.
    """

    def __init__(self, bindir: Path | str | None = None, *, start_timeout: float = 60.0) -> None:
        self._bindir = Path(bindir) if bindir else None
        self.start_timeout = start_timeout
        self.password = secrets.token_urlsafe(18)
        self.port: int | None = None
        self.base: Path | None = None  # the temp dir: data/, socket/, server.log
        self._as_user: str | None = None
        self.version = ""

    # -- paths and URLs ------------------------------------------------------------------

    @property
    def bindir(self) -> Path:
        """Where the server binaries are: as given, else ``find_bindir()``."""
        if self._bindir is None:
            self._bindir = find_bindir()
        elif not has_server_binaries(self._bindir):
            raise PostgresUnavailable(f"{self._bindir} lacks {', '.join(SERVER_BINARIES)}")
        return self._bindir

    @property
    def datadir(self) -> Path:
        return self._base() / "data"

    @property
    def socket_dir(self) -> Path:
        return self._base() / "socket"

    @property
    def logfile(self) -> Path:
        return self._base() / "server.log"

    @property
    def url(self) -> str:
        """The URL of the ``postgres`` maintenance database, as the superuser."""
        return self.url_for("postgres")

    def url_for(self, dbname: str) -> str:
        """``postgresql://postgres:<password>@127.0.0.1:<port>/<dbname>``."""
        if self.port is None:
            raise RuntimeError("the server has not been started")
        user, password = quote(SUPERUSER, safe=""), quote(self.password, safe="")
        return f"postgresql://{user}:{password}@127.0.0.1:{self.port}/{quote(dbname, safe='')}"

    def _base(self) -> Path:
        if self.base is None:
            raise RuntimeError("the server has not been started")
        return self.base

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether pg_ctl sees a server running on the data dir."""
        if self.base is None or not self.datadir.exists():
            return False
        return self._pg_ctl("status", check=False).returncode == 0

    def start(self) -> PostgresServer:
        """Create the cluster on first use (initdb), then start it and wait until it answers.

        The first start picks a free port (and retries with another if it was taken
        in between); later starts reuse the port and the data dir.
        """
        if self.base is None:
            self._init_cluster()
            atexit.register(self.cleanup)
        if self.port is not None:
            self._start_on(self.port)
            return self
        for attempt in range(3):
            self.port = free_port()
            try:
                self._start_on(self.port)
                return self
            except PostgresUnavailable:
                self.port = None
                if attempt == 2:
                    raise
        return self  # unreachable

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``pg_ctl stop -m fast``: disconnect clients, checkpoint)."""
        if self.running:
            self._pg_ctl("stop", "-m", mode, "-t", str(int(self.start_timeout)))

    def kill(self) -> None:
        """Stop like a crash (``-m immediate``): no checkpoint; the next start recovers."""
        self.stop(mode="immediate")

    def restart(self) -> None:
        """``stop()`` then ``start()``: same data dir, same port, same URLs."""
        self.stop()
        self.start()

    def cleanup(self) -> None:
        """Stop the server if it runs and delete its temp dir. Safe to call twice."""
        if self.base is None:
            return
        with contextlib.suppress(Exception):
            self.stop(mode="immediate")
        shutil.rmtree(self.base, ignore_errors=True)
        self.base = None
        with contextlib.suppress(Exception):
            atexit.unregister(self.cleanup)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    # -- databases -------------------------------------------------------------------------

    def create_database(self, prefix: str = "test") -> str:
        """Create an empty database with a random name; returns its URL."""
        name = f"{prefix}_{secrets.token_hex(6)}"
        run_sync(self._create, name)
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        """Drop a database (by name or URL), disconnecting whoever is still connected to it."""
        run_sync(self._drop, dbname_of(name))

    async def _create(self, name: str) -> None:
        async with self._admin() as conn:
            await conn.execute(f"CREATE DATABASE {_quote_ident(name)}")

    async def _drop(self, name: str) -> None:
        async with self._admin() as conn:
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = $1 AND pid <> pg_backend_pid()",
                name,
            )
            force = " WITH (FORCE)" if conn.get_server_version().major >= 13 else ""
            await conn.execute(f"DROP DATABASE IF EXISTS {_quote_ident(name)}{force}")

    @contextlib.asynccontextmanager
    async def _admin(self) -> AsyncIterator[Any]:
        """An asyncpg connection to the ``postgres`` database, as the superuser."""
        import asyncpg

        conn = await asyncpg.connect(self.url, timeout=30)
        try:
            yield conn
        finally:
            await conn.close()

    # -- internals -------------------------------------------------------------------------

    def _init_cluster(self) -> None:
        bindir = self.bindir  # fail before making anything if there are no binaries
        if os.geteuid() == 0:
            self._as_user = OS_USER_WHEN_ROOT
            try:
                owner = pwd.getpwnam(OS_USER_WHEN_ROOT)
            except KeyError:
                raise PostgresUnavailable(
                    f"running as root, and there is no {OS_USER_WHEN_ROOT!r} user to run "
                    "PostgreSQL as (Debian's postgresql package creates it)"
                ) from None
            if shutil.which("runuser") is None:
                raise PostgresUnavailable("running as root, and runuser is not installed")
        self.base = Path(tempfile.mkdtemp(prefix="taskflow-pg-"))
        try:
            self.socket_dir.mkdir()
            pwfile = self.base / "pwfile"
            pwfile.write_text(self.password + "\n")
            if self._as_user:
                for path in (self.base, self.socket_dir, pwfile):
                    os.chown(path, owner.pw_uid, owner.pw_gid)
            self._run(
                bindir / "initdb",
                "-D",
                self.datadir,
                "-U",
                SUPERUSER,
                f"--pwfile={pwfile}",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
                what="initdb",
            )
            pwfile.unlink()
            self.version = self._run(bindir / "postgres", "--version", what="postgres").strip()
        except BaseException:
            self.cleanup()
            raise

    def _start_on(self, port: int) -> None:
        settings = {
            **SERVER_SETTINGS,
            "listen_addresses": "127.0.0.1",
            "port": str(port),
            "unix_socket_directories": str(self.socket_dir),
        }
        options = " ".join(f"-c {key}={value}" for key, value in settings.items())
        timeout = str(int(self.start_timeout))
        result = self._pg_ctl(
            "start", "-w", "-t", timeout, "-l", self.logfile, "-o", options, check=False
        )
        if result.returncode != 0:
            raise PostgresUnavailable(
                f"pg_ctl start failed on port {port}: {result.stdout}{result.stderr}"
                f"{self._log_tail()}"
            )
        self._wait_accepting(port)

    def _wait_accepting(self, port: int) -> None:
        """Wait until a TCP connection to the server succeeds (pg_ctl -w already waited)."""
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise PostgresUnavailable(
                        f"the server does not accept connections on port {port}: {exc}"
                        f"{self._log_tail()}"
                    ) from None
                time.sleep(0.05)

    def _pg_ctl(self, *args: Any, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self._run(self.bindir / "pg_ctl", "-D", self.datadir, *args, check=check, raw=True)

    def _run(self, *cmd: Any, what: str = "", check: bool = True, raw: bool = False) -> Any:
        """Run a server binary, as the ``postgres`` user when we are root; stdout, or the result."""
        argv = [str(part) for part in cmd]
        if self._as_user:
            argv = ["runuser", "-u", self._as_user, "--", *argv]
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        try:
            result = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                env=env,
                cwd=self.base,  # the postgres user may not be able to enter ours
                timeout=self.start_timeout + 30,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise PostgresUnavailable(f"{what or argv[0]} could not run: {exc}") from exc
        if check and result.returncode != 0:
            raise PostgresUnavailable(
                f"{what or ' '.join(argv)} failed ({result.returncode}): "
                f"{result.stdout}{result.stderr}".strip()
            )
        return result if raw else result.stdout

    def _log_tail(self, lines: int = 20) -> str:
        try:
            text = self.logfile.read_text(errors="replace")
        except OSError:
            return ""
        return "\nserver log:\n" + "\n".join(text.splitlines()[-lines:])
