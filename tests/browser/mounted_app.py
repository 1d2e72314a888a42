"""dashboard_app mounted at /svc inside an outer FastAPI app, for the proxy tests.

Run it with ``uvicorn mounted_app:app --app-dir tests/browser``. Starlette runs only the
outer app's lifespan, never a mounted app's, so the outer lifespan enters the inner app's
``router.lifespan_context``, as docs/deployment.md shows: that starts the task manager.

``TASKFLOW_DEMO_INNER_LIFESPAN=0`` leaves that out (the common mistake): the manager then
never starts, which the dashboard and the log must say plainly.

The outer app answers ``GET /ready`` itself; the inner app's routes are under ``/svc``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from dashboard_app import app as inner
from fastapi import FastAPI

PREFIX = "/svc"
RUN_INNER_LIFESPAN = os.environ.get("TASKFLOW_DEMO_INNER_LIFESPAN", "1") != "0"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    if RUN_INNER_LIFESPAN:
        async with inner.router.lifespan_context(inner):
            yield
    else:
        yield


app = FastAPI(title="outer app", lifespan=lifespan)


@app.get("/ready")
async def ready() -> dict[str, bool]:
    return {"ready": True}


app.mount(PREFIX, inner)
