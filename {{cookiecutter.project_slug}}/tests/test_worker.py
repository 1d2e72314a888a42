"""Pattern 2, worker.py: init_app runs the lifecycle and mounts no dashboard or admin routes."""

from fastapi.testclient import TestClient

from {{ cookiecutter.package_name }}.settings import settings
from {{ cookiecutter.package_name }}.tasks import task_manager
from {{ cookiecutter.package_name }}.worker import app

BASE = settings.dashboard_path


def test_no_admin_routes():
    assert not [r.path for r in app.routes if r.path.startswith(BASE)]
    with TestClient(app) as client:
        for path in (BASE, f"{BASE}/dashboard", f"{BASE}/metrics", f"{BASE}/auth/login"):
            assert client.get(path).status_code == 404, path


def test_tasks_run_and_report_their_status(wait_for):
    with TestClient(app) as client:
        response = client.post("/jobs/welcome-email", params={"email": "grace@example.com"})
        assert response.status_code == 202
        task_id = response.json()["task_id"]
        assert wait_for(task_manager, task_id)["status"] == "success"
        assert client.get(f"/jobs/{task_id}").json()["status"] == "success"
        assert client.get("/jobs/no-such-task").status_code == 404


def test_tasks_land_in_the_database_main_reads(wait_for, reload):
    with TestClient(app) as client:
        task_id = client.post("/jobs/report", params={"account_id": 9}).json()["task_id"]
        wait_for(task_manager, task_id)
    record = reload(task_id)
    assert record is not None
    assert (record["func_name"], record["status"]) == ("build_report", "success")
