"""The marks file of the uvicorn test apps (crash_app, fleet_app, schedule_app).

Each app appends one line per event to the file its test names (TASKFLOW_TEST_RAN), and
the test counts the lines. The apps run in processes of their own, started with
tests/apps on PYTHONPATH (``uvicorn crash_app:app --app-dir tests/apps``), so they import
this module by its bare name, ``run_marks``, not as ``apps.run_marks``.
"""

from __future__ import annotations

import asyncio
import os

from taskflow import get_task_context


def append_line(path: str, line: str) -> None:
    """Append ``line`` to ``path`` as one ``O_APPEND`` write, so that lines from concurrent
    processes never interleave."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def mark(path: str, event: str, *fields: object) -> None:
    """Append ``<event> <task_id> <fields...>`` for the task running now (see append_line)."""
    task_id = get_task_context().task_id
    append_line(path, " ".join([event, task_id, *map(str, fields)]) + "\n")


async def wait_for_file(path: str) -> None:
    """Return once ``path`` exists: a gated task's test creates it to let the task finish."""
    while not os.path.exists(path):
        await asyncio.sleep(0.01)
