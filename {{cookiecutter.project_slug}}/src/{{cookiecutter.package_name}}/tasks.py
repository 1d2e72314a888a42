"""The task manager and the example tasks; every entry point (main, worker, lifespan) imports them.

One TaskManager per process. `@task_manager.task(...)` registers a function with its retry policy and
returns it unchanged, so a task stays a plain function you can call and test directly.
`@task_manager.schedule(...)` registers one that also runs periodically, in every entry point.
"""

import asyncio
import time
from datetime import timedelta

from .settings import settings
from .taskflow import TaskManager, get_task_context, task_log

task_manager = TaskManager(
    snapshot_db=settings.tasks_db,  # history survives restarts, and main and worker share it
    requeue_pending=True,  # tasks still waiting at shutdown run after the next startup
)

# Finished tasks older than this are deleted by nightly_cleanup (RETENTION_DAYS, default 30). It
# replaces TaskManager(retention_days=...), which prunes in each process at start-up and every 6
# hours: the schedule runs once a night for all of them, as a task you can see and run on demand.
HISTORY_KEPT = timedelta(days=settings.retention_days)


@task_manager.task(
    retries=3, delay=0.2, backoff=2.0, jitter=True, retry_on=(ConnectionError,), persist=True
)
def send_welcome_email(address: str) -> None:
    """Sync task: runs in a worker thread, so blocking I/O is fine.

    Retried on ConnectionError only, waiting up to 0.2 s, 0.4 s, then 0.8 s (jitter picks a random
    wait below each). persist=True commits the task to TASKS_DB before the response that returns
    its id is sent, so a crash right after cannot lose it. An address containing "flaky" fails its
    first attempt (attempt 0), as a mail server that drops a connection would.
    """
    context = get_task_context()
    task_log(f"sending welcome email to {address}", attempt=context.attempt)
    if "flaky" in address and context.attempt == 0:
        raise ConnectionError("mail server closed the connection")
    time.sleep(0.05)  # stands in for the SMTP conversation
    task_log("welcome email sent")


@task_manager.task(retries=3, delay=0.2, backoff=2.0, retry_on=(ConnectionError,), persist=True)
def send_reminder(address: str) -> None:
    """The delayed run: added with `with_options(countdown=...)`, it runs once, that much later.

    Until then it is `scheduled`, with its `run_at`, and can be cancelled like a pending task.
    persist=True writes it to TASKS_DB before the response, so it is not lost with this process:
    after a restart it runs at its time (at once if that has passed), and if this process dies,
    another one sharing TASKS_DB takes it over. Either way it runs once.
    """
    task_log(f"sending reminder to {address}")
    time.sleep(0.05)  # stands in for the SMTP conversation
    task_log("reminder sent")


@task_manager.task(retries=1, timeout=30.0)
async def build_report(account_id: int, period: str = "month") -> None:
    """Async task: runs on the event loop, so it must await, never block.

    `task_log` lines show up in the dashboard's detail view; the tags given at enqueue time
    (e.g. {"account": "42"}) are readable here and shown next to the task in the dashboard.
    """
    context = get_task_context()
    task_log("collecting rows", account_id=account_id, period=period, tags=context.tags)
    rows = 0
    for chunk in range(1, 4):
        await asyncio.sleep(0.05)  # stands in for a query
        rows += 100
        task_log(f"chunk {chunk}/3 done", rows=rows)
    task_log("report ready", rows=rows)


@task_manager.task(retries=2, delay=0.1)
def sync_legacy_crm(record_id: int) -> None:
    """Always fails: after three attempts it lands in the dashboard's failed (dead-letter) view.

    From there an operator can read the stack trace and retry it, alone or with every other failure.
    """
    task_log("pushing record to the legacy CRM", record_id=record_id)
    raise RuntimeError(f"legacy CRM rejected record {record_id}: schema version mismatch")


@task_manager.task()
async def export_account_data(account_id: int, batches: int = 60) -> None:
    """Slow on purpose: about a second per batch, a minute by default. The task to cancel.

    Its log grows by a line a second, so the dashboard's detail view shows how far it got. Cancel it
    there (or `POST {dashboard path}/{task_id}/cancel`): an async task stops at its next `await`, so
    the log ends at the batch it was on. A sync task could not be stopped that way: Python cannot
    stop a thread, so a cancelled one is marked cancelled and its thread runs to the end.
    Registered with no options (no retries), so that the dashboard's Retry can find the function
    again for an export that a shutdown interrupted.
    """
    task_log("export started", account_id=account_id, batches=batches)
    rows = 0
    for batch in range(1, batches + 1):
        await asyncio.sleep(1.0)  # stands in for reading one batch and writing it out
        rows += 500
        task_log(f"batch {batch}/{batches} exported", rows=rows)
    task_log("export ready", rows=rows)


# Every day at 00:00 UTC: `every=` counts from the epoch, so every process and host agrees on when.
# For a local hour, a crontab line: schedule(cron="30 3 * * *", timezone="Europe/Berlin", ...),
# which needs `pip install croniter`.
@task_manager.schedule(
    every=timedelta(days=1), name="nightly_cleanup", catch_up=True, retries=2, delay=60.0
)
async def nightly_cleanup() -> None:
    """The periodic task: delete finished tasks older than RETENTION_DAYS from the history.

    Each night runs once in total, however many processes (main, worker, lifespan, other hosts)
    share TASKS_DB: the first to claim it in the database runs it. catch_up=True: a night missed
    while every process was down runs once at the next start, never a backlog of nights. Each run is
    an ordinary task (retried, logged, on the dashboard), tagged `schedule=nightly_cleanup`; to run
    it now: `POST {dashboard path}/schedules/nightly_cleanup/run`, or run_schedule_now().
    Pending, scheduled and running tasks are never deleted.
    """
    deleted = await task_manager.prune(older_than=HISTORY_KEPT)
    task_log(f"pruned {deleted} finished tasks", older_than_days=HISTORY_KEPT.days)
