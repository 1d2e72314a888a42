"""Pattern 1, TaskAdmin: the web app, with the task dashboard and API mounted next to your routes.

Choose this for most services. One call mounts the dashboard and the task API under DASHBOARD_PATH,
behind a login, and ties task_manager.startup()/shutdown() to the app's lifespan. With
auto_install=True, routes keep the plain `BackgroundTasks` parameter they already use, and
`add_task` returns the id of a tracked task.

Run: uvicorn {{ cookiecutter.package_name }}.main:app, then open http://127.0.0.1:8000{{ cookiecutter.dashboard_path }}/dashboard
"""

from typing import Annotated

from fastapi import BackgroundTasks, FastAPI, Query

from .settings import PROJECT_NAME, settings
from .taskflow import ManagedBackgroundTasks, TaskAdmin
from .tasks import (
    build_report,
    export_account_data,
    send_reminder,
    send_welcome_email,
    sync_legacy_crm,
    task_manager,
)

app = FastAPI(title=PROJECT_NAME)

TaskAdmin(
    app,
    task_manager,
    path=settings.dashboard_path,
    auto_install=True,
    auth=(settings.dashboard_user, settings.dashboard_password),
    secret_key=settings.session_secret,
    title=settings.dashboard_title,
)


@app.post("/signup", status_code=202)
def signup(email: str, background_tasks: BackgroundTasks) -> dict[str, str]:
    task_id = background_tasks.add_task(send_welcome_email, email)
    return {"task_id": task_id}


@app.post("/reports", status_code=202)
def request_report(
    account_id: int, background_tasks: BackgroundTasks, period: str = "month"
) -> dict[str, str]:
    task_id = background_tasks.add_task(
        build_report, account_id, period, tags={"account": str(account_id), "period": period}
    )
    return {"task_id": task_id}


@app.post("/crm-sync", status_code=202)
def crm_sync(record_id: int, background_tasks: BackgroundTasks) -> dict[str, str]:
    task_id = background_tasks.add_task(sync_legacy_crm, record_id)
    return {"task_id": task_id}


@app.post("/exports", status_code=202)
def export_account(
    account_id: int,
    background_tasks: BackgroundTasks,
    batches: Annotated[int, Query(ge=1, le=600)] = 60,
) -> dict[str, str]:
    """A slow task (about `batches` seconds) that logs its progress: one to watch, or cancel."""
    task_id = background_tasks.add_task(
        export_account_data, account_id, batches, tags={"account": str(account_id)}
    )
    return {"task_id": task_id}


@app.post("/reminders", status_code=202)
def schedule_reminder(
    email: str,
    background_tasks: ManagedBackgroundTasks,
    seconds: Annotated[int, Query(ge=1, le=7 * 24 * 3600)] = 600,
) -> dict[str, str]:
    """A delayed run: `scheduled` for `seconds` (10 minutes by default), then sent; cancel it before.

    With auto_install=True every BackgroundTasks parameter is a ManagedBackgroundTasks; this one is
    annotated so, for with_options(). That takes the countdown (or run_at=datetime), and add_task
    passes every argument to the task function, so neither name can collide with its parameters.
    """
    task_id = background_tasks.with_options(countdown=seconds).add_task(send_reminder, email)
    return {"task_id": task_id}
