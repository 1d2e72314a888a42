"""Pattern 2, init_app: the same tasks behind an internal API, with no dashboard and no admin routes.

Choose this for a second process that runs tasks but must not serve the task UI or the cancel and
retry endpoints, e.g. an internal service that other services call. `init_app` ties
task_manager.startup()/shutdown() to the app's lifespan and mounts nothing. It writes the same
TASKS_DB as `main`, so main's dashboard shows these tasks too.

Run: uvicorn {{ cookiecutter.package_name }}.worker:app --port 8001
"""

from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException

from .settings import PROJECT_NAME
from .taskflow import ManagedBackgroundTasks
from .tasks import build_report, send_welcome_email, task_manager

app = FastAPI(title=f"{PROJECT_NAME} (worker)")
task_manager.init_app(app)

# Explicit injection: no BackgroundTasks patching on this app, the dependency says what it is.
Tasks = Annotated[ManagedBackgroundTasks, Depends(task_manager.get_tasks)]


@app.post("/jobs/welcome-email", status_code=202)
def enqueue_welcome_email(email: str, tasks: Tasks) -> dict[str, str]:
    return {"task_id": tasks.add_task(send_welcome_email, email)}


@app.post("/jobs/report", status_code=202)
def enqueue_report(account_id: int, tasks: Tasks, period: str = "month") -> dict[str, str]:
    task_id = tasks.add_task(build_report, account_id, period, tags={"account": str(account_id)})
    return {"task_id": task_id}


@app.get("/jobs/{task_id}")
async def job_status(task_id: str) -> dict:
    """The task as the dashboard would show it; found in memory or, after a restart, in TASKS_DB."""
    record = await task_manager.fetch(task_id)
    if record is None:
        raise HTTPException(status_code=404, detail=f"no task {task_id}")
    return record.to_dict()
