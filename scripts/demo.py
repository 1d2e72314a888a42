"""`make demo`: serve a baked project with uvicorn and feed it a mix of tasks over HTTP.

Usage: python scripts/demo.py BAKE_DIR   (BAKE_DIR holds one baked project, e.g. build/demo)

Runs until Ctrl-C. The load lasts DEMO_SECONDS (default 600) so the dashboard shows tasks
succeeding, being retried and failing, and, every EXPORT_EVERY seconds, a slow export (about a
minute, a log line a second) to watch and cancel: every button of the dashboard has something to
act on. The server keeps running after the load stops.
"""

import os
import random
import secrets
import subprocess
import sys
import time
from pathlib import Path

import httpx

HOST, PORT = "127.0.0.1", 8000
BASE = f"http://{HOST}:{PORT}"
DASHBOARD_PATH = "/tasks"  # the template's default; the demo bakes the defaults
USER, PASSWORD = "admin", "demo"

# (weight, route, query): mostly successes, some retried, a few that always fail.
LOAD = [
    (50, "/signup", lambda n: {"email": f"user{n}@example.com"}),
    (15, "/signup", lambda n: {"email": f"flaky{n}@example.com"}),
    (25, "/reports", lambda n: {"account_id": n % 50, "period": random.choice(["week", "month"])}),
    (10, "/crm-sync", lambda n: {"record_id": n}),
]
# Besides: one slow export at the start and then every EXPORT_EVERY seconds. Each runs about
# EXPORT_BATCHES seconds, so one is nearly always running, there to be cancelled.
EXPORT_EVERY = 45.0
EXPORT_BATCHES = 60


def wait_until_up(server: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"uvicorn exited with status {server.returncode}; is port {PORT} in use?")
        try:
            httpx.get(f"{BASE}/openapi.json", timeout=1).raise_for_status()
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    sys.exit(f"uvicorn did not answer on {BASE} within {timeout:.0f} s")


def feed(server: subprocess.Popen, seconds: float) -> None:
    weights = [weight for weight, _, _ in LOAD]
    deadline, n = time.monotonic() + seconds, 0
    next_export = time.monotonic()
    with httpx.Client(base_url=BASE, timeout=5) as client:

        def post(route: str, query: dict) -> None:
            try:
                client.post(route, params=query).raise_for_status()
            except httpx.HTTPError as exc:
                print(f"demo load: {route} failed: {exc}", file=sys.stderr)

        while time.monotonic() < deadline and server.poll() is None:
            n += 1
            if time.monotonic() >= next_export:
                next_export += EXPORT_EVERY
                post("/exports", {"account_id": n % 50, "batches": EXPORT_BATCHES})
            _, route, query = random.choices(LOAD, weights)[0]
            post(route, query(n))
            time.sleep(random.uniform(0.1, 0.6))


def main() -> None:
    (project,) = [p for p in Path(sys.argv[1]).iterdir() if (p / "pyproject.toml").is_file()]
    (package,) = [p.name for p in (project / "src").iterdir() if (p / "main.py").is_file()]
    env = dict(
        os.environ,
        APP_ENV="development",
        DASHBOARD_USER=USER,
        DASHBOARD_PASSWORD=PASSWORD,
        SESSION_SECRET=secrets.token_urlsafe(32),
        TASKS_DB="tasks.db",
    )
    command = [sys.executable, "-m", "uvicorn", f"{package}.main:app", "--host", HOST]
    command += ["--port", str(PORT), "--log-level", "warning"]
    server = subprocess.Popen(command, cwd=project, env=env)
    try:
        wait_until_up(server)
        print(
            f"\n  Dashboard:  {BASE}{DASHBOARD_PATH}/dashboard"
            f"\n  Log in as:  {USER} / {PASSWORD}"
            f"\n  API docs:   {BASE}/docs"
            f"\n  Slow task:  an export_account_data every {EXPORT_EVERY:.0f} s, about"
            f" {EXPORT_BATCHES} s long: open it to watch its log, or cancel it"
            f"\n  Project:    {project}  (Ctrl-C stops the demo)\n",
            flush=True,
        )
        feed(server, float(os.environ.get("DEMO_SECONDS", "600")))
        print("demo load finished; the server keeps running (Ctrl-C stops it)", flush=True)
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(timeout=15)


if __name__ == "__main__":
    main()
