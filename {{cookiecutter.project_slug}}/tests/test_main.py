"""Pattern 1, main.py: TaskAdmin runs the lifecycle, tracks the tasks and guards the dashboard."""

import html
import re
import time
from datetime import datetime, timedelta, timezone

from fastapi.testclient import TestClient

from {{ cookiecutter.package_name }} import tasks
from {{ cookiecutter.package_name }}.main import app
from {{ cookiecutter.package_name }}.settings import settings
from {{ cookiecutter.package_name }}.tasks import send_welcome_email, task_manager

BASE = settings.dashboard_path


def log_in(client: TestClient, password: str = "test-password"):
    form = client.get(f"{BASE}/auth/login")
    assert form.status_code == 200
    field = re.search(r'<input[^>]*name="csrf_token"[^>]*>', form.text).group(0)
    data = {
        "username": "admin",
        "password": password,
        "next": f"{BASE}/dashboard",
        "csrf_token": html.unescape(re.search(r'value="([^"]*)"', field).group(1)),
    }
    return client.post(f"{BASE}/auth/login", data=data, follow_redirects=False)


def test_the_app_starts_and_stops_the_task_manager(wait_for):
    # Added outside a request before the app runs: it waits until TaskAdmin's startup.
    task_id = task_manager.add_task(send_welcome_email, "early@example.com")
    assert task_manager.get(task_id).to_dict()["status"] == "pending"
    with TestClient(app):
        assert wait_for(task_manager, task_id)["status"] == "success"


def test_tasks_reach_their_outcomes(wait_for):
    with TestClient(app) as client:
        ids = {
            "email": client.post("/signup", params={"email": "ada@example.com"}),
            "flaky": client.post("/signup", params={"email": "flaky@example.com"}),
            "report": client.post("/reports", params={"account_id": 42}),
            "crm": client.post("/crm-sync", params={"record_id": 7}),
        }
        assert {r.status_code for r in ids.values()} == {202}
        done = {name: wait_for(task_manager, r.json()["task_id"]) for name, r in ids.items()}

    assert done["email"]["status"] == "success"
    assert (done["flaky"]["status"], done["flaky"]["retries_used"]) == ("success", 1)
    assert done["report"]["status"] == "success"
    assert done["report"]["tags"] == {"account": "42", "period": "month"}
    assert any("report ready" in line for line in done["report"]["logs"])
    assert (done["crm"]["status"], done["crm"]["retries_used"]) == ("failed", 2)
    assert "schema version mismatch" in done["crm"]["error"]


def test_history_survives_a_restart(wait_for, reload):
    with TestClient(app) as client:
        task_id = client.post("/signup", params={"email": "lin@example.com"}).json()["task_id"]
        wait_for(task_manager, task_id)
    # The app has shut down; a new manager on the same database still has the task.
    record = reload(task_id)
    assert record is not None
    assert (record["func_name"], record["status"]) == ("send_welcome_email", "success")


def test_dashboard_and_api_require_a_login():
    with TestClient(app) as client:
        assert client.get(BASE).status_code == 401
        assert log_in(client, password="wrong").status_code == 401

        response = log_in(client)
        assert response.status_code == 303
        assert response.headers["location"] == f"{BASE}/dashboard"

        page = client.get(f"{BASE}/dashboard")
        assert page.status_code == 200
        title = re.search(r'data-title="([^"]*)"', page.text).group(1)
        assert html.unescape(title) == settings.dashboard_title
        assert client.get(BASE).status_code == 200

        client.get(f"{BASE}/auth/logout")
        assert client.get(BASE).status_code == 401


def test_a_slow_export_logs_its_progress_and_can_be_cancelled(wait_for):
    with TestClient(app) as client:
        assert log_in(client).status_code == 303
        short = client.post("/exports", params={"account_id": 3, "batches": 1})
        slow = client.post("/exports", params={"account_id": 4})  # 60 batches, about a minute
        assert (short.status_code, slow.status_code) == (202, 202)
        done = wait_for(task_manager, short.json()["task_id"])
        assert done["status"] == "success"
        assert any("batch 1/1 exported" in line for line in done["logs"])
        assert "export ready" in done["logs"][-1]

        task_id = slow.json()["task_id"]

        def logs() -> str:
            return "\n".join(client.get(f"{BASE}/{task_id}").json()["logs"])

        deadline = time.monotonic() + 10
        while "batch 1/60 exported" not in logs():
            assert time.monotonic() < deadline, "the export logged no progress within 10 s"
            time.sleep(0.05)
        cancelled = client.post(f"{BASE}/{task_id}/cancel")
        assert (cancelled.status_code, cancelled.json()["task"]["status"]) == (200, "cancelled")
        assert "export ready" not in logs()


def test_the_nightly_cleanup_is_scheduled_and_prunes_old_history(wait_for, monkeypatch):
    with TestClient(app) as client:
        assert log_in(client).status_code == 303
        schedules = client.get(f"{BASE}/schedules").json()
        (cleanup,) = [s for s in schedules if s["name"] == "nightly_cleanup"]
        assert (cleanup["every"], cleanup["paused"]) == (86400, False)
        assert cleanup["next_run"].endswith("T00:00:00+00:00")  # midnight UTC

        recent = client.post("/signup", params={"email": "kept@example.com"}).json()["task_id"]
        assert wait_for(task_manager, recent)["status"] == "success"
        run = wait_for(task_manager, task_manager.run_schedule_now("nightly_cleanup"))
        assert run["status"] == "success"
        assert run["tags"] == {"schedule": "nightly_cleanup", "trigger": "manual"}
        assert "pruned 0 finished tasks" in run["logs"][-1]
        assert client.get(f"{BASE}/{recent}").status_code == 200  # younger than RETENTION_DAYS

        # Keeping no history at all: every finished task goes, that one included.
        monkeypatch.setattr(tasks, "HISTORY_KEPT", timedelta(0))
        run = wait_for(task_manager, task_manager.run_schedule_now("nightly_cleanup"))
        assert run["status"] == "success"
        assert int(re.search(r"pruned (\d+) finished tasks", run["logs"][-1]).group(1)) >= 2
        assert client.get(f"{BASE}/{recent}").status_code == 404


def test_a_reminder_is_scheduled_then_runs_at_its_time(wait_for):
    with TestClient(app) as client:
        assert log_in(client).status_code == 303
        response = client.post("/reminders", params={"email": "ada@example.com", "seconds": 1})
        assert response.status_code == 202
        task_id = response.json()["task_id"]

        scheduled = client.get(f"{BASE}/{task_id}").json()
        assert scheduled["status"] == "scheduled"
        run_at = datetime.fromisoformat(scheduled["run_at"])
        assert timedelta(0) < run_at - datetime.now(timezone.utc) <= timedelta(seconds=1)

        done = wait_for(task_manager, task_id)
        assert done["status"] == "success"
        assert datetime.fromisoformat(done["start_time"]) >= run_at
        assert "reminder sent" in done["logs"][-1]


def test_a_reminder_cancelled_before_its_time_never_runs(wait_for):
    with TestClient(app) as client:
        assert log_in(client).status_code == 303
        response = client.post("/reminders", params={"email": "lin@example.com", "seconds": 2})
        task_id = response.json()["task_id"]
        cancelled = client.post(f"{BASE}/{task_id}/cancel")
        assert (cancelled.status_code, cancelled.json()["task"]["status"]) == (200, "cancelled")

        # Wait until just past its time: it stays cancelled and never started.
        run_at = datetime.fromisoformat(cancelled.json()["task"]["run_at"])
        time.sleep(max(0.0, (run_at - datetime.now(timezone.utc)).total_seconds()) + 0.3)
        record = client.get(f"{BASE}/{task_id}").json()
        assert (record["status"], record["start_time"]) == ("cancelled", None)
        assert not any("sending reminder" in line for line in record["logs"])
