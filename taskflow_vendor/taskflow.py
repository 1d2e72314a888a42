"""taskflow: tracked background tasks for FastAPI, without a broker, in one file.

Copy this file into your application and import it from wherever it lands
(``from app.vendor.taskflow import TaskManager``). It gives FastAPI's
``BackgroundTasks`` task ids, statuses, retries with backoff, SQLite persistence,
requeue after restart, retention, task logs, a JSON API and a live dashboard.

Requires: fastapi (with starlette and pydantic), aiosqlite, itsdangerous, jinja2.
Python 3.10 or newer. ``python taskflow.py --version`` tells which copy you have.

Deliberate choices, documented in docs/design_decisions.md:

* Tasks added during a request start after the response is sent and run one
  after another in the order added, as with FastAPI's own ``BackgroundTasks``;
  a failure does not stop the ones after it.
* ``persist=True`` tasks are committed to SQLite before the response that
  returned their id is sent; everything else is written in batches.
* Cancelling a running *sync* task marks it cancelled and ignores its result; the
  thread itself cannot be stopped and runs to its end.

Copyright (c) 2026 the taskflow authors. SPDX-License-Identifier: MIT
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import contextvars
import csv
import dataclasses
import enum
import functools
import hashlib
import heapq
import hmac
import inspect
import io
import itertools
import json
import logging
import math
import os
import queue
import random
import re
import secrets
import socket
import sqlite3
import struct
import sys
import threading
import time
import traceback
import typing
import urllib.parse
import uuid
from array import array
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from html import escape as html_escape
from typing import Any

import aiosqlite
import fastapi.dependencies.utils as _fastapi_dependency_utils
import jinja2
from fastapi import APIRouter, BackgroundTasks, Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as FastAPIPath
from fastapi.responses import (
    HTMLResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from pydantic import BaseModel, Field, ValidationError
from starlette.background import BackgroundTask

__version__ = "0.1.0"

__all__ = [
    # engine
    "TaskManager",
    "TaskConfig",
    "TaskRecord",
    "TaskStatus",
    "TaskContext",
    "ManagedBackgroundTasks",
    "task_log",
    "task_progress",
    "get_task_context",
    # errors
    "TaskflowError",
    "TaskNotFound",
    "TaskStateError",
    "TaskArgumentError",
    "TaskflowDatabaseError",
    "QueueFull",
    # queues
    "Queue",
    # admin
    "TaskAdmin",
    "TaskAuthBackend",
    "__version__",
]

logger = logging.getLogger(__name__)

_UTC = timezone.utc
_MAX_LOG_LINES = 1000  # per task; older lines are dropped first
_MAX_TRACEBACK = 16 * 1024  # characters kept of a traceback (its head and its tail)
_MAX_ERROR = 2000
_MAX_DAYS = 36_500  # a century: larger windows overflow datetime arithmetic
_MAX_UNWRITTEN = 100_000  # changes kept in memory while the database is unreachable


# =============================================================================
# Models
# =============================================================================


class TaskflowError(Exception):
    """Base class of every error taskflow raises on purpose."""


class TaskNotFound(TaskflowError, KeyError):
    """No task with this id is known (in memory or in the database)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "task not found"


class TaskStateError(TaskflowError, ValueError):
    """The task is in a state that does not allow the requested action."""


class TaskArgumentError(TaskflowError, ValueError):
    """Arguments of a ``persist=True`` task cannot be stored as JSON."""


class TaskflowDatabaseError(TaskflowError, RuntimeError):
    """The ``snapshot_db`` file cannot be used (unreadable, foreign or too new)."""


class QueueFull(TaskflowError, HTTPException):
    """A task was refused because its queue already holds ``max_size`` waiting tasks.

    Raised by ``add_task``; in a route it answers 503 with ``Retry-After`` (it is an
    ``HTTPException``), so a client is told to come back instead of losing the task.
    """

    def __init__(self, queue: str, max_size: int) -> None:
        self.queue = queue
        self.max_size = max_size
        message = (
            f"queue {queue!r} is full: {max_size} tasks are waiting (Queue(max_size={max_size}));"
            " try again later"
        )
        HTTPException.__init__(self, 503, message, headers={"Retry-After": "1"})

    def __str__(self) -> str:
        return str(self.detail)


class TaskStatus(str, enum.Enum):
    """Where a task is in its life: pending (or scheduled, until its ``run_at``),
    running, then one final status."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"
    SCHEDULED = "scheduled"

    def __str__(self) -> str:
        return self.value

    @property
    def is_final(self) -> bool:
        """True for success, failed, cancelled and interrupted."""
        return self in _FINAL


_FINAL = frozenset(
    {TaskStatus.SUCCESS, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.INTERRUPTED}
)
_LIVE = frozenset({TaskStatus.PENDING, TaskStatus.RUNNING, TaskStatus.SCHEDULED})
# A task that ended so frees its idempotency key: a client that retries gets a new task.
_FREES_KEY = frozenset({TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.INTERRUPTED})
# The statuses under plain names, for the paths every task takes: reading a member
# through its class (TaskStatus.PENDING) costs an enum metaclass lookup, ten times
# the cost of a global.
_PENDING, _RUNNING, _SUCCESS, _FAILED, _CANCELLED, _INTERRUPTED, _SCHEDULED = TaskStatus
_STATUS_VALUES = tuple(s.value for s in TaskStatus)


def _name_of(func: Callable[..., Any]) -> str:
    while isinstance(func, functools.partial):
        func = func.func
    return _clean(str(getattr(func, "__name__", None) or type(func).__name__))


def _clean(text: str) -> str:
    """``text`` as every database and response can hold it: lone surrogates and NULs
    become U+FFFD.

    Starlette's JSON parser lets a lone surrogate ("\\ud800") through from any
    request body; neither SQLite's UTF-8 nor PostgreSQL accepts one, and
    PostgreSQL refuses NUL too. Every string the module keeps passes through here
    once, where it enters a record; valid text comes back unchanged.
    """
    if text.isascii():
        return text if "\x00" not in text else text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # A pair written as two code points is joined; a lone half is replaced.
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text.replace("\x00", "\ufffd")


def _text_of(value: Any) -> str:
    """``str(value)``, cleaned; a ``__str__`` that raises must not take a task down."""
    try:
        return _clean(str(value))
    except Exception:
        return f"<unprintable {type(value).__name__}>"


@dataclasses.dataclass(frozen=True)
class TaskConfig:
    """Options of a registered task, as given to ``@task_manager.task(...)``."""

    name: str
    retries: int = 0
    delay: float = 0.0
    backoff: float = 1.0
    persist: bool = False
    requeue_on_interrupt: bool = False
    timeout: float | None = None
    jitter: bool = False
    max_delay: float | None = None
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    queue: str = "default"
    priority: int = 0

    def delay_for(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first retry)."""
        wait = self.delay * self.backoff ** (retry - 1)
        if self.max_delay is not None:
            wait = min(wait, self.max_delay)
        if self.jitter:
            wait = random.uniform(0, wait)  # "full jitter": spreads retries of many tasks
        return wait


_ISO_SECONDS: dict[int, str] = {}  # whole second -> "YYYY-MM-DDTHH:MM:SS"


def _iso(ts: float | None) -> str | None:
    """``datetime.fromtimestamp(ts, timezone.utc).isoformat()``, about twice as fast.

    A page of 100 tasks formats 300 times, the dashboard's stream thousands a
    second: the date part is cached per second, and the microseconds are
    rounded half to even, exactly as ``datetime`` rounds them.
    """
    if ts is None:
        return None
    frac, whole = math.modf(ts)
    micros = round(frac * 1e6)
    if micros >= 1_000_000:
        micros -= 1_000_000
        whole += 1.0
    elif micros < 0:
        micros += 1_000_000
        whole -= 1.0
    second = int(whole)
    head = _ISO_SECONDS.get(second)
    if head is None:
        if len(_ISO_SECONDS) >= 4096:
            _ISO_SECONDS.clear()
        head = _ISO_SECONDS[second] = datetime.fromtimestamp(second, _UTC).isoformat()[:19]
    return f"{head}.{micros:06d}+00:00" if micros else head + "+00:00"


def _duration(started: float | None, ended: float | None) -> float | None:
    return None if started is None or ended is None else max(0.0, ended - started)


def _dt(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, _UTC)


class TaskRecord:
    """One task: what ran, when, how it ended, and what it logged.

    Times are kept as POSIX seconds to keep records small (memory holds up to
    ``max_history`` of them); the ``created_at``/``start_time``/``end_time``
    properties give timezone-aware UTC datetimes.
    """

    __slots__ = (
        "task_id",
        "func_name",
        "status",
        "created",
        "started",
        "ended",
        "retries_used",
        "error",
        "stacktrace",
        "logs",
        "tags",
        "args",
        "kwargs",
        "retry_of",
        "idempotency_key",
        "attempts",
        "persist",
        "requeue",
        "durable",
        "instance",
        "retried_as",
        "by_name",
        "cancel_requested",
        "progress",
        "run_at",
    )

    def __init__(
        self,
        task_id: str,
        func_name: str,
        *,
        status: TaskStatus = TaskStatus.PENDING,
        created: float | None = None,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        tags: dict[str, str] | None = None,
        retry_of: str | None = None,
        idempotency_key: str | None = None,
        persist: bool = False,
    ) -> None:
        self.task_id = task_id
        self.func_name = func_name
        self.status = status
        self.created = time.time() if created is None else created
        self.started: float | None = None
        self.ended: float | None = None
        self.retries_used = 0
        self.error: str | None = None
        self.stacktrace: str | None = None
        self.logs: list[str] | None = None
        self.tags = tags or None
        self.args = args
        self.kwargs = kwargs or _EMPTY_KWARGS
        self.retry_of = retry_of
        self.idempotency_key = idempotency_key
        self.attempts: list[list[Any]] | None = None  # [attempt, start, end, error]
        self.persist = persist
        self.requeue = persist  # run again after a restart if still unfinished
        self.durable = False  # committed to the database at least once
        # The instance (host:pid:random) that owns the task; its TaskManager fills it in.
        self.instance: str | None = None
        self.retried_as: str | None = None  # the id of the task that retried this one
        # Its callable is the function registered under func_name, so the name alone
        # rebuilds it (not so for partials, bound methods, lambdas, unregistered ones).
        self.by_name = True
        # A running sync task asked to cancel: its thread finishes its current call first.
        self.cancel_requested = False
        self.progress: tuple[float, str | None] | None = None  # (fraction, message), running
        self.run_at: float | None = None  # a delayed run's due time (POSIX seconds)

    created_at = property(lambda self: _dt(self.created), doc="Creation time (UTC).")
    start_time = property(lambda self: _dt(self.started), doc="Start of the first attempt.")
    end_time = property(lambda self: _dt(self.ended), doc="When the task reached a final status.")

    @property
    def duration(self) -> float | None:
        """Seconds from start to end (retry waits included), or None."""
        return _duration(self.started, self.ended)

    def to_dict(self, *, include_args: bool = False, brief: bool = False) -> dict[str, Any]:
        """The record as JSON-ready data; ``brief`` leaves out logs and traceback."""
        data = _brief_dict(
            self.task_id,
            self.func_name,
            self.status.value,
            self.created,
            self.started,
            self.ended,
            self.retries_used,
            self.error,
            dict(self.tags) if self.tags else {},
            self.retry_of,
            self.instance,
            self.retried_as,
            self.run_at,
        )
        if self.cancel_requested:
            data["cancel_requested"] = True
        if self.progress is not None:
            data["progress"], data["progress_message"] = self.progress
        if not brief:
            data["logs"] = list(self.logs) if self.logs else []
            data["stacktrace"] = self.stacktrace
            attempts = self.attempts
            if attempts is None and self.started is not None:
                attempts = [[self.retries_used, self.started, self.ended, self.error]]
            data["attempts"] = [
                {"attempt": a[0], "start_time": _iso(a[1]), "end_time": _iso(a[2]), "error": a[3]}
                for a in (attempts or ())
            ]
        if include_args:
            data["args"] = [_display(a) for a in self.args]
            data["kwargs"] = {k: _display(v) for k, v in self.kwargs.items()}
        return data

    def __repr__(self) -> str:
        return f"<TaskRecord {self.task_id} {self.func_name} {self.status.value}>"


_EMPTY_KWARGS: dict[str, Any] = {}


def _brief_dict(
    task_id: str,
    func_name: str,
    status: str,
    created: float,
    started: float | None,
    ended: float | None,
    retries_used: int,
    error: str | None,
    tags: dict[str, str],
    retry_of: str | None,
    instance: str | None,
    retried_as: str | None = None,
    run_at: float | None = None,
) -> dict[str, Any]:
    """``TaskRecord.to_dict(brief=True)`` from its parts: a list page builds it from rows."""
    return {
        "task_id": task_id,
        "func_name": func_name,
        "status": status,
        "created_at": _iso(created),
        "start_time": _iso(started),
        "end_time": _iso(ended),
        "duration": _duration(started, ended),
        "retries_used": retries_used,
        "error": error,
        "tags": tags,
        "retry_of": retry_of,
        "instance": instance,
        "retried_as": retried_as,
        "run_at": _iso(run_at),
    }


class _Unstored(tuple):
    """Arguments read back from a row that could not store them (they were not JSON)."""


_UNSTORED = _Unstored()


def _display(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)


# A finished record is kept as a plain tuple ("frozen"), not a TaskRecord. The
# garbage collector stops tracking a tuple that holds only atomic values, so the
# up to max_history kept records add nothing to its full collections (with
# objects, those pauses grew with the history). It is also a third smaller:
# about 256 bytes with its id, against 384 for the object with its float times.
#   (task_id, func_name, times, args, kwargs, bits, rare)
# times: created, started, ended packed as three doubles (NaN for None);
# bits: status index | persist << 3 | requeue << 4 | durable << 5 (a cached int);
# rare: None or (error, retries_used, stacktrace, logs, tags, retry_of,
#   idempotency_key, attempts, retried_as, run_at): set for a minority of tasks.
# Dicts and lists become flat tuples (kwargs and tags: k1, v1, k2, v2...; attempts:
# 4 values each): the collector keeps tracking a tuple that holds a dict or a
# list, even an empty one.
_F_ID, _F_NAME, _F_TIMES, _F_ARGS, _F_KWARGS, _F_BITS, _F_RARE = range(7)
_TIMES = struct.Struct("<3d")
_STATUSES = tuple(TaskStatus)
_STATUS_INDEX = {s: i for i, s in enumerate(_STATUSES)}
_NAN = float("nan")
_NO_RARE = (None, 0, None, None, None, None, None, None, None, None)


def _flat(mapping: dict[str, Any] | None) -> tuple[Any, ...]:
    return tuple(itertools.chain.from_iterable(mapping.items())) if mapping else ()


def _unflat(flat: tuple[Any, ...]) -> dict[str, Any]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _times(f: tuple[Any, ...]) -> tuple[float, float | None, float | None]:
    """created, started and ended of a frozen record."""
    created, started, ended = _TIMES.unpack(f[_F_TIMES])
    return (
        created,
        None if math.isnan(started) else started,
        None if math.isnan(ended) else ended,
    )


def _frozen_status(f: tuple[Any, ...]) -> TaskStatus:
    return _STATUSES[f[_F_BITS] & 7]


def _found(needle: str, f: tuple[Any, ...], *, name_checked: bool = False) -> bool:
    """Whether lower-case ``needle`` is what ``q`` looks for in frozen record ``f``
    (``name_checked``: the caller already knows the function name does not hold it)."""
    if f[_F_ID].startswith(needle) or (not name_checked and needle in f[_F_NAME].lower()):
        return True
    rare = f[_F_RARE]
    if rare is None:
        return False
    error, tags = rare[0], rare[4]
    return bool(error and needle in error.lower()) or any(
        needle in value.lower() for value in (tags or ())[1::2]
    )


def _id_like(needle: str) -> bool:
    """Whether lower-case ``needle`` could start a task id (lower-case hex and dashes)."""
    return not needle.strip("0123456789abcdef-")


def _created_key(entry: Any) -> tuple[float, str]:
    """A kept entry's sort key by creation, as the database orders: created, then id."""
    if type(entry) is tuple:
        return _TIMES.unpack_from(entry[_F_TIMES])[0], entry[_F_ID]
    return entry.created, entry.task_id


def _entry_status(entry: Any) -> int:
    """The status index of a kept entry: a live TaskRecord or a frozen tuple."""
    return entry[_F_BITS] & 7 if type(entry) is tuple else _STATUS_INDEX[entry.status]


def _frozen_key(f: tuple[Any, ...]) -> str | None:
    rare = f[_F_RARE]
    return rare[6] if rare else None


def _freeze(r: TaskRecord) -> tuple[Any, ...]:
    rare = None
    if (
        r.error
        or r.retries_used
        or r.stacktrace
        or r.logs
        or r.tags
        or r.retry_of
        or r.idempotency_key
        or r.attempts
        or r.retried_as
        or r.run_at
    ):
        rare = (
            r.error,
            r.retries_used,
            r.stacktrace,
            tuple(r.logs) if r.logs else None,
            _flat(r.tags) or None,
            r.retry_of,
            r.idempotency_key,
            tuple(itertools.chain.from_iterable(r.attempts)) if r.attempts else None,
            r.retried_as,
            r.run_at,
        )
    started, ended = r.started, r.ended
    return (
        r.task_id,
        r.func_name,
        _TIMES.pack(
            r.created, _NAN if started is None else started, _NAN if ended is None else ended
        ),
        r.args,
        _flat(r.kwargs),
        _STATUS_INDEX[r.status]
        | r.persist << 3
        | r.requeue << 4
        | r.durable << 5
        | (not r.by_name) << 6,
        rare,
    )


def _attempt_rows(flat: tuple[Any, ...] | None) -> list[tuple[Any, ...]]:
    """Frozen attempts (4 values each) as one tuple per attempt."""
    return [flat[i : i + 4] for i in range(0, len(flat or ()), 4)]


def _thaw(f: tuple[Any, ...]) -> TaskRecord:
    """A TaskRecord from a frozen one (a copy: changing it changes nothing kept)."""
    r = TaskRecord.__new__(TaskRecord)
    r.task_id, r.func_name, _, r.args, kwargs, bits, rare = f
    r.created, r.started, r.ended = _times(f)
    r.kwargs = _unflat(kwargs) if kwargs else _EMPTY_KWARGS
    r.status = _STATUSES[bits & 7]
    r.persist, r.requeue, r.durable = bool(bits & 8), bool(bits & 16), bool(bits & 32)
    r.by_name = not bits & 64
    r.instance = None
    r.cancel_requested = False
    r.progress = None
    if rare is None:
        r.error = r.stacktrace = r.logs = r.tags = r.retry_of = r.idempotency_key = None
        r.retried_as = r.run_at = None
        r.attempts = None
        r.retries_used = 0
    else:
        r.error, r.retries_used, r.stacktrace, logs, tags, r.retry_of = rare[:6]
        r.idempotency_key, attempts, r.retried_as, r.run_at = rare[6:]
        r.tags = _unflat(tags) if tags else None
        r.logs = list(logs) if logs else None
        r.attempts = [list(a) for a in _attempt_rows(attempts)] or None
    return r


@dataclasses.dataclass(frozen=True)
class TaskContext:
    """What a running task can learn about itself through ``get_task_context()``."""

    task_id: str
    func_name: str
    attempt: int
    tags: dict[str, str]


# =============================================================================
# Store: the in-memory view (live tasks plus the newest finished ones),
# counters for metrics, and the change feed the dashboard listens to.
# =============================================================================


class _Ring:
    """The last ``size`` samples, 8 bytes each (for duration percentiles)."""

    __slots__ = ("values", "size", "pos")

    def __init__(self, size: int) -> None:
        self.values = array("d")
        self.size = size
        self.pos = 0

    def add(self, value: float) -> None:
        if len(self.values) < self.size:
            self.values.append(value)
        else:
            self.values[self.pos] = value
            self.pos = (self.pos + 1) % self.size


class _FuncStats:
    """Counters of one function: tasks per status, and durations (all, and recent samples)."""

    __slots__ = ("counts", "dur_n", "dur_sum", "recent")

    def __init__(self) -> None:
        self.counts = dict.fromkeys(TaskStatus, 0)
        self.dur_n = 0
        self.dur_sum = 0.0
        self.recent = _Ring(1000)


class _Store:
    """Records in memory, bounded: live ones plus the newest ``max_history`` finished.

    ``records`` maps a task id to its ``TaskRecord`` while the task is pending or
    running, and to its frozen tuple (see ``_freeze``) once it is final. ``get``
    gives a ``TaskRecord`` either way.
    """

    def __init__(self, max_history: int) -> None:
        self.max_history = max_history
        self.records: dict[str, TaskRecord | tuple[Any, ...]] = {}
        self.finished: deque[str] = deque()
        # changed since the last database write: TaskRecord or frozen tuple
        self.dirty: dict[str, TaskRecord | tuple[Any, ...]] = {}
        self.idempotency: dict[str, str] = {}  # key -> id of a task in memory
        # Final tasks that a retry could not rebuild by name: their callables, while kept.
        self.callables: dict[str, Callable[..., Any]] = {}
        # key -> (id, final status) of tasks that left memory but stay in the database
        self.idempotency_gone: dict[str, tuple[str, TaskStatus]] = {}
        # With a database, changed records wait to be written and evicted ones stay
        # queryable (so they stay counted, and keep their idempotency keys).
        self.persistent = False
        self.seq = 0
        # How many kept records have each status (by _STATUS_INDEX): a page filtered by
        # status alone takes its total from here and stops walking at the page.
        self.kept = [0] * len(_STATUSES)
        # For a q search (see _indexed_search): how many kept records each function has,
        # and the ids of kept records with an error or tags, in no particular order.
        self.kept_names: dict[str, int] = {}
        self.notable: dict[str, None] = {}
        # Ids of the last 4,096 changes; the last one is change number ``seq``.
        self.changes: deque[str] = deque(maxlen=4096)
        self.watchers: set[asyncio.Event] = set()
        # Bumped when other processes changed the shared database (seen through its
        # notifications): open dashboards then reload what they show.
        self.remote_seq = 0
        self.reset_stats()

    def reset_stats(self) -> None:
        self.funcs: dict[str, _FuncStats] = {}
        self.minutes: dict[int, list[int]] = {}  # minute -> [success, failed]
        self.recent = _Ring(min(max(1000, self.max_history), 100_000))
        self.metrics_cache: tuple[Any, dict[str, Any]] | None = None

    def get(self, task_id: str, *, unwritten: bool = False) -> TaskRecord | None:
        """The record of ``task_id`` (with ``unwritten``, also one evicted but not yet written)."""
        entry = self.records.get(task_id)
        if entry is None and unwritten:
            entry = self.dirty.get(task_id)
        if type(entry) is tuple:
            return _thaw(entry)
        return entry  # type: ignore[return-value]

    @property
    def oldest_change(self) -> int:
        """The number of the oldest change still in ``changes``."""
        return self.seq - len(self.changes) + 1

    def func(self, name: str) -> _FuncStats:
        stats = self.funcs.get(name)
        if stats is None:
            stats = self.funcs[name] = _FuncStats()
        return stats

    def keep(self, task_id: str, entry: TaskRecord | tuple[Any, ...]) -> None:
        """Store ``entry`` (live record or frozen tuple) as what is kept of ``task_id``."""
        self.records[task_id] = entry
        if type(entry) is tuple:
            rare = entry[_F_RARE]
            notable = rare is not None and (rare[0] or rare[4])
        else:
            notable = entry.error or entry.tags  # type: ignore[union-attr]
        if notable:
            self.notable[task_id] = None
        elif task_id in self.notable:
            del self.notable[task_id]

    def notify(self, record: TaskRecord) -> None:
        """Record that ``record`` changed: mark it for writing and wake listeners."""
        self.seq += 1
        task_id = record.task_id
        if self.persistent:
            # Once final, the frozen form is what is kept (and written).
            self.dirty[task_id] = self.records.get(task_id) or record
        self.changes.append(task_id)
        for event in self.watchers:
            event.set()

    def page(
        self,
        statuses: list[str],
        func_name: str | None,
        q: str | None,
        lo: float | None,
        hi: float | None,
        sort: str,
        descending: bool,
        limit: int,
        offset: int,
    ) -> tuple[list[TaskRecord | tuple[Any, ...]], int]:
        """``_Storage.query`` over memory: one page of entries (live records or frozen
        tuples) and how many match.

        ``q`` matches, ignoring case, the start of the task id or part of the function
        name, the error or a tag value: the definition the database and the page use,
        over the same window (the newest ``_SEARCH_WINDOW`` tasks within since/until).
        """
        needle = q.lower() if q else None
        records = self.records
        timed = lo is not None or hi is not None
        if sort == "created_at" and not (statuses or func_name or needle or timed):
            # Records are kept in the order they were created: the newest end is walked
            # and the walk stops at the page, so a page costs the page, not the history.
            ordered = reversed(records.values()) if descending else iter(records.values())
            return list(itertools.islice(ordered, offset, offset + limit)), len(records)
        wanted = {_STATUS_INDEX[TaskStatus(s)] for s in statuses}
        named: dict[str, bool] = {}  # function name -> holds the needle (names are few)

        def in_range(f: tuple[Any, ...]) -> bool:
            created = _times(f)[0]
            return (lo is None or created >= lo) and (hi is None or created <= hi)

        def matches(entry: TaskRecord | tuple[Any, ...]) -> bool:
            f = entry if type(entry) is tuple else _freeze(entry)  # type: ignore[arg-type]
            if wanted and f[_F_BITS] & 7 not in wanted:
                return False
            if func_name and f[_F_NAME] != func_name:
                return False
            if needle:
                hit = named.get(f[_F_NAME])
                if hit is None:
                    hit = named[f[_F_NAME]] = needle in f[_F_NAME].lower()
                if not (hit or _found(needle, f, name_checked=True)):
                    return False
            return not timed or in_range(f)

        if sort == "created_at" and needle and not (wanted or func_name or timed):
            indexed = self._indexed_search(needle, descending, limit, offset)
            if indexed is not None:
                return indexed
        candidates: Any = records.values()  # in the order created
        if needle and len(records) > _SEARCH_WINDOW:
            # The database's window: a search looks at the newest _SEARCH_WINDOW tasks
            # within since/until.
            newest: Iterable[Any] = reversed(records.values())
            if timed:
                newest = (e for e in newest if in_range(e if type(e) is tuple else _freeze(e)))
            candidates = list(itertools.islice(newest, _SEARCH_WINDOW))[::-1]
        if sort == "created_at" and needle and not (wanted or func_name or timed):
            # A search alone, the dashboard's search box: one tight loop (the walk must
            # count every match, so its cost per record is what matters).
            return self._search(needle, candidates, descending, limit, offset)
        if sort == "created_at":
            # Newest (or oldest) first, walked until the page is full.
            matching = filter(matches, reversed(candidates) if descending else iter(candidates))
            skipped = sum(1 for _ in itertools.islice(matching, offset))
            found = list(itertools.islice(matching, limit))
            if not (func_name or needle or timed):
                # By status alone: the kept counts give the total; the walk stops here.
                return found, sum(self.kept[i] for i in wanted)
            return found, skipped + len(found) + sum(1 for _ in matching)
        # Other sorts: sort what matches (live records are few; they are frozen too).
        rows = []
        for entry in filter(matches, candidates):
            f = entry if type(entry) is tuple else _freeze(entry)
            created, started, ended = _times(f)
            if sort == "duration":
                value = _duration(started, ended)
            else:
                value = {
                    "start_time": started,
                    "end_time": ended,
                    "func_name": f[_F_NAME],
                    "status": _frozen_status(f).value,
                }[sort]
            rows.append(((value is not None, value if value is not None else 0, created), f))
        rows.sort(key=lambda row: row[0], reverse=descending)
        page = []
        for _, f in rows[offset : offset + limit]:
            live = records.get(f[_F_ID])
            page.append(live if isinstance(live, TaskRecord) else f)
        return page, len(rows)

    def _indexed_search(
        self, needle: str, descending: bool, limit: int, offset: int
    ) -> tuple[list[TaskRecord | tuple[Any, ...]], int] | None:
        """``page`` for ``q`` alone, without testing every record: the records of the
        functions whose name holds the needle are counted from ``kept_names``, and only
        ``notable`` records (an error or tags) are searched. None when the needle could
        start an id (ids have no index) or the store is far beyond the search window."""
        records = self.records
        excess = len(records) - _SEARCH_WINDOW
        if _id_like(needle) or excess > _SEARCH_WINDOW:
            return None
        hits = {name for name in self.kept_names if needle in name.lower()}
        extra = set()
        for task_id in self.notable:
            entry = records[task_id]
            f = entry if type(entry) is tuple else _freeze(entry)  # type: ignore[arg-type]
            if f[_F_NAME] not in hits and _found(needle, f, name_checked=True):
                extra.add(task_id)
        total = len(extra) + sum(self.kept_names[name] for name in hits)
        if excess > 0:
            # The oldest records are outside the window: taken back out of the count.
            for task_id, entry in itertools.islice(records.items(), excess):
                name = entry[_F_NAME] if type(entry) is tuple else entry.func_name  # type: ignore[union-attr]
                if name in hits or task_id in extra:
                    total -= 1
                    extra.discard(task_id)
        if not hits:  # the matches are the few in extra: ordered as the database orders
            found = sorted((records[i] for i in extra), key=_created_key, reverse=descending)
            return found[offset : offset + limit], total
        # Walked from the newest (or oldest) end within the window, until the page is full.
        if descending:
            ordered = itertools.islice(reversed(records.items()), len(records) - max(excess, 0))
        else:
            ordered = itertools.islice(records.items(), max(excess, 0), None)
        page: list[TaskRecord | tuple[Any, ...]] = []
        skip = offset
        for task_id, entry in ordered if limit > 0 else ():
            name = entry[_F_NAME] if type(entry) is tuple else entry.func_name  # type: ignore[union-attr]
            if name in hits or task_id in extra:
                if skip:
                    skip -= 1
                    continue
                page.append(entry)
                if len(page) == limit:
                    break
        return page, total

    def _search(
        self, needle: str, candidates: Any, descending: bool, limit: int, offset: int
    ) -> tuple[list[TaskRecord | tuple[Any, ...]], int]:
        """``page`` for ``q`` alone, sorted by creation: what ``_found`` matches."""
        named: dict[str, bool] = {}  # function name -> holds the needle (names are few)
        id_like = _id_like(needle)
        found: list[TaskRecord | tuple[Any, ...]] = []
        total, stop = 0, offset + limit
        for entry in reversed(candidates) if descending else candidates:
            f = entry if type(entry) is tuple else _freeze(entry)
            name = f[_F_NAME]
            hit = named.get(name)
            if hit is None:
                hit = named[name] = needle in name.lower()
            if not hit:
                rare = f[_F_RARE]
                if not (id_like and f[_F_ID].startswith(needle)) and (
                    rare is None or not _found(needle, f, name_checked=True)
                ):
                    continue
            if offset <= total < stop:
                found.append(entry)
            total += 1
        return found, total

    def changed_elsewhere(self) -> None:
        """Other processes changed the database: counters were reloaded, pages are stale."""
        self.remote_seq += 1
        self.metrics_cache = None
        for event in self.watchers:
            event.set()

    def logged(self, record: TaskRecord) -> None:
        """A log line was added to ``record``; a finished one's frozen form is made again."""
        if type(self.records.get(record.task_id)) is tuple:
            self.keep(record.task_id, _freeze(record))
        self.notify(record)

    def add(self, record: TaskRecord, *, counted: bool = False) -> None:
        """Take in a record; ``counted`` when the database's counters already include it."""
        if not counted:
            self.func(record.func_name).counts[record.status] += 1
        if record.idempotency_key:
            self.idempotency[record.idempotency_key] = record.task_id
        previous = self.records.get(record.task_id)
        if previous is not None and previous is not record:
            self.kept[_entry_status(previous)] -= 1
        else:  # new here (a worker thread may have put it in records already)
            names = self.kept_names
            names[record.func_name] = names.get(record.func_name, 0) + 1
        self.kept[_STATUS_INDEX[record.status]] += 1
        if record.status in _FINAL:
            self.keep(record.task_id, _freeze(record))
            self.finished.append(record.task_id)
        else:
            self.keep(record.task_id, record)
        self.notify(record)

    def move(self, record: TaskRecord, status: TaskStatus) -> None:
        old = record.status
        if old is status:
            return
        stats = self.func(record.func_name)
        counts = stats.counts
        counts[old] -= 1
        counts[status] += 1
        if record.task_id in self.records:
            kept = self.kept
            kept[_STATUS_INDEX[old]] -= 1
            kept[_STATUS_INDEX[status]] += 1
        record.status = status
        if status in _FINAL:
            self._finished(record, stats)
        self.notify(record)

    def _finished(self, record: TaskRecord, stats: _FuncStats) -> None:
        status, ended = record.status, record.ended
        duration = _duration(record.started, ended)
        if duration is not None:
            stats.dur_n += 1
            stats.dur_sum += duration
            stats.recent.add(duration)
            self.recent.add(duration)
        if (status is _SUCCESS or status is _FAILED) and ended:
            minute = int(ended // 60)
            slot = self.minutes.get(minute)
            if slot is None:
                slot = self.minutes[minute] = [0, 0]
                horizon = minute - 60
                for old in [m for m in self.minutes if m < horizon]:
                    del self.minutes[old]
            slot[status is _FAILED] += 1
        task_id = record.task_id
        if task_id in self.records:
            self.keep(task_id, _freeze(record))
            finished = self.finished
            finished.append(task_id)
            while len(finished) > self.max_history:
                self.forget(finished.popleft(), evicted=True)

    def forget(self, task_id: str, *, evicted: bool = False) -> None:
        self.callables.pop(task_id, None)
        entry = self.records.pop(task_id, None)
        if entry is None:
            return
        self.kept[_entry_status(entry)] -= 1
        self.notable.pop(task_id, None)
        if type(entry) is tuple:
            key, name, status = _frozen_key(entry), entry[_F_NAME], _frozen_status(entry)
        else:
            key, name, status = entry.idempotency_key, entry.func_name, entry.status
        names = self.kept_names
        left = names.get(name, 0) - 1  # 0 when a worker thread's add has not reached the loop
        if left > 0:
            names[name] = left
        else:
            names.pop(name, None)
        if key and self.idempotency.get(key) == task_id:
            del self.idempotency[key]
            if evicted and self.persistent:
                self.remember_key(key, task_id, status)
        # Counters count every task this process has run: a record evicted to keep
        # max_history stays counted (pruned or deleted history does not).
        if not evicted:
            self.func(name).counts[status] -= 1

    def remember_key(self, key: str, task_id: str, status: TaskStatus) -> None:
        gone = self.idempotency_gone
        gone.pop(key, None)
        gone[key] = (task_id, status)
        if len(gone) > 100_000:  # bounded: the oldest keys are forgotten first
            del gone[next(iter(gone))]

    def metrics(self) -> dict[str, Any]:
        minute = int(time.time() // 60)
        cached = self.metrics_cache
        if cached is not None and cached[0] == (self.seq, minute, id(self.funcs)):
            return cached[1]
        data = self._metrics(minute)
        self.metrics_cache = ((self.seq, minute, id(self.funcs)), data)
        return data

    def _metrics(self, now_minute: int) -> dict[str, Any]:
        counts = dict.fromkeys(_STATUS_VALUES, 0)
        functions: dict[str, Any] = {}
        dur_n, dur_sum = 0, 0.0
        for name, stats in sorted(self.funcs.items()):
            fc = {s.value: n for s, n in stats.counts.items()}
            total = sum(fc.values())
            if not total:
                continue
            for key, n in fc.items():
                counts[key] += n
            dur_n += stats.dur_n
            dur_sum += stats.dur_sum
            functions[name] = {
                "total": total,
                **fc,
                "success_rate": _rate(fc),
                "avg": round(stats.dur_sum / stats.dur_n, 6) if stats.dur_n else None,
                **_summary(stats.recent.values),
            }
        avg = dur_sum / dur_n if dur_n else 0.0
        per_minute = []
        for minute in range(now_minute - 59, now_minute + 1):
            slot = self.minutes.get(minute, (0, 0))
            per_minute.append(
                {"minute": _iso(minute * 60.0), "success": slot[0], "failed": slot[1]}
            )
        return {
            "total": sum(counts.values()),
            **counts,
            "success_rate": _rate(counts),
            "avg_duration_seconds": round(avg, 6),
            "duration": {"avg": round(avg, 6) if dur_n else None, **_summary(self.recent.values)},
            "functions": functions,
            "per_minute": per_minute,
        }


def _rate(counts: dict[str, int]) -> float:
    done = counts["success"] + counts["failed"] + counts["interrupted"]
    return round(counts["success"] / done, 4) if done else 0.0


def _summary(values: Iterable[float]) -> dict[str, float | None]:
    """min, max, p50 and p95 (nearest rank) of recent duration samples."""
    ordered = sorted(values)
    if not ordered:
        return {"min": None, "max": None, "p50": None, "p95": None}

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)], 6)

    return {
        "min": round(ordered[0], 6),
        "max": round(ordered[-1], 6),
        "p50": pick(0.5),
        "p95": pick(0.95),
    }


# =============================================================================
# Persistence: the database behind ``snapshot_db``. One interface, _Storage, with
# one class per dialect: _SQLiteStorage (a file through aiosqlite, the default) and
# _PostgresStorage (a server through asyncpg, for services on several hosts).
# TaskManager speaks only to _Storage; SQL is written once, with ``?`` marks,
# wherever the dialects agree.
# =============================================================================

_APPLICATION_ID = 0x54464C57  # "TFLW" in the SQLite header marks our files
_SCHEMA_VERSION = 7
_STALE_AFTER = 30.0  # seconds without heartbeat before another host's process counts as dead
_COLUMNS = (
    "task_id, func_name, status, created_at, start_time, end_time, duration, retries_used, "
    "error, stacktrace, logs, tags, args, kwargs, retry_of, idempotency_key, attempts, "
    "persist, requeue, owner, retried_as, run_at"
)
_COLUMN_NAMES = tuple(name.strip() for name in _COLUMNS.split(","))
_BRIEF_COLUMNS = (  # _brief_dict's arguments, in order
    "task_id, func_name, status, created_at, start_time, end_time, retries_used, error, tags, "
    "retry_of, owner, retried_as, run_at"
)
_UNFINISHED = "status IN ('pending', 'running', 'scheduled')"
# A q search has no index: it looks at the newest _SEARCH_WINDOW tasks (within since/until),
# so that a page and its total cost the window, not the whole history.
_SEARCH_WINDOW = 10_000
# The rows with an error or tags (a minority): a search's total reads them through this
# index, and the rows of matching functions through tasks_func_created, not every row.
_RARE_INDEX = (
    "CREATE INDEX IF NOT EXISTS tasks_rare ON tasks (created_at) "
    "WHERE error IS NOT NULL OR tags IS NOT NULL"
)
_FINISHED = "status IN ('success', 'failed', 'cancelled', 'interrupted')"
# Login attempts, counted by the throttle on every host (keys are digests).
_LOGIN_ATTEMPTS = [
    """CREATE TABLE IF NOT EXISTS login_attempts (
        id {serial},
        key TEXT NOT NULL,
        ts {real} NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS login_attempts_key ON login_attempts (key, ts)",
]
# One row per occurrence of a periodic task: whoever inserts it runs it, once in the fleet.
_SCHEDULE_RUNS = [
    """CREATE TABLE IF NOT EXISTS schedule_runs (
        name TEXT NOT NULL,
        occurrence {real} NOT NULL,
        owner TEXT NOT NULL,
        task_id TEXT NOT NULL,
        PRIMARY KEY (name, occurrence)
    )""",
]
# Paused schedules, shared by every process and kept across restarts.
_SCHEDULE_STATE = [
    """CREATE TABLE IF NOT EXISTS schedule_state (
        name TEXT PRIMARY KEY,
        paused INTEGER NOT NULL DEFAULT 0,
        changed {real} NOT NULL
    )""",
]
# Tables and indices, for both dialects; {real}, {serial} and {without_rowid} are
# the few words they spell differently.
_TABLES = [
    """CREATE TABLE IF NOT EXISTS tasks (
        task_id TEXT PRIMARY KEY,
        func_name TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at {real} NOT NULL,
        start_time {real},
        end_time {real},
        duration {real},
        retries_used INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        stacktrace TEXT,
        logs TEXT,
        tags TEXT,
        args TEXT,
        kwargs TEXT,
        retry_of TEXT,
        idempotency_key TEXT,
        attempts TEXT,
        persist INTEGER NOT NULL DEFAULT 0,
        requeue INTEGER NOT NULL DEFAULT 0,
        owner TEXT,
        retried_as TEXT,
        run_at {real}
    )""",
    "CREATE INDEX IF NOT EXISTS tasks_created ON tasks (created_at)",
    "CREATE INDEX IF NOT EXISTS tasks_status_created ON tasks (status, created_at)",
    "CREATE INDEX IF NOT EXISTS tasks_func_created ON tasks (func_name, created_at)",
    "CREATE INDEX IF NOT EXISTS tasks_end ON tasks (end_time)",
    "CREATE INDEX IF NOT EXISTS tasks_idem ON tasks (idempotency_key, created_at) "
    "WHERE idempotency_key IS NOT NULL",
    _RARE_INDEX,
    # Counters per function and status, kept by triggers so startup and metrics
    # never count the whole history.
    """CREATE TABLE IF NOT EXISTS task_counts (
        func_name TEXT NOT NULL,
        status TEXT NOT NULL,
        n INTEGER NOT NULL DEFAULT 0,
        dur_n INTEGER NOT NULL DEFAULT 0,
        dur_sum {real} NOT NULL DEFAULT 0,
        PRIMARY KEY (func_name, status)
    ){without_rowid}""",
    """CREATE TABLE IF NOT EXISTS task_minutes (
        minute INTEGER PRIMARY KEY,
        success INTEGER NOT NULL DEFAULT 0,
        failed INTEGER NOT NULL DEFAULT 0
    )""",
    """CREATE TABLE IF NOT EXISTS audit (
        id {serial},
        ts {real} NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        task_id TEXT,
        detail TEXT
    )""",
    """CREATE TABLE IF NOT EXISTS revoked_sessions (
        session_id TEXT PRIMARY KEY,
        until {real} NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS instances (
        owner TEXT PRIMARY KEY,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        heartbeat {real} NOT NULL
    )""",
    *_LOGIN_ATTEMPTS,
    *_SCHEDULE_RUNS,
    *_SCHEDULE_STATE,
]
# Forward migrations, the same SQL on both dialects (with the same words filled
# in): _MIGRATIONS[n] takes a database from schema n to n + 1. A new database is
# created at _SCHEMA_VERSION.
_MIGRATIONS: dict[int, list[str]] = {
    1: ["ALTER TABLE tasks ADD COLUMN retried_as TEXT"],
    2: _LOGIN_ATTEMPTS,
    3: _SCHEDULE_RUNS,
    4: ["ALTER TABLE tasks ADD COLUMN run_at {real}", *_SCHEDULE_STATE],
    5: [_RARE_INDEX],
    # PostgreSQL's claim of an idempotency key, in one round trip (SQLite claims from Python).
    6: ["{claim_function}"],
}
_ROW_MARKS = "(" + ", ".join("?" * len(_COLUMNS.split(","))) + ")"
_ROWS_PER_STATEMENT = 1000  # 20 columns each: below both dialects' limits on parameters
# The newest task of an idempotency key (on the partial index tasks_idem).
_KEY_LOOKUP = (
    "SELECT task_id, status FROM tasks WHERE idempotency_key = ? ORDER BY created_at DESC LIMIT 1"
)
_UPSERT_HEAD = f"INSERT INTO tasks ({_COLUMNS}) VALUES "
# An update sets only what can change after a task is created: indices over the
# other columns (created_at, func_name, idempotency_key) are then left alone.
_UPSERT_TAIL = (
    " ON CONFLICT (task_id) DO UPDATE SET "
    + ", ".join(
        f"{c} = excluded.{c}"
        for c in (
            "status",
            "start_time",
            "end_time",
            "duration",
            "retries_used",
            "error",
            "stacktrace",
            "logs",
            "attempts",
            "requeue",
            "owner",
            "retried_as",
        )
        # A process whose tasks another claimed (it stalled past the heartbeat timeout)
        # no longer writes them: the claimant's rows win.
    )
    # A final row never becomes live again (another host cancelled a scheduled run).
    + " WHERE (tasks.owner IS NULL OR tasks.owner = excluded.owner)"
    + f" AND (excluded.{_FINISHED} OR NOT tasks.{_FINISHED})"
)
_UPSERT_ONE = _UPSERT_HEAD + _ROW_MARKS + _UPSERT_TAIL
# How long add_task waits for SQLite's write lock to claim an idempotency key (another
# process's batch holds it for milliseconds); past it, the task is added unchecked.
_CLAIM_WAIT = 2.0
# Sort keys; the nullable ones sort NULLs as SQLite does (first ascending, last
# descending), so that both dialects give the same page.
_SORTS = {
    "created_at": False,
    "duration": True,
    "func_name": False,
    "status": False,
    "start_time": True,
    "end_time": True,
}


# One encoder for every compact JSON text (json.dumps with options builds one per call).
_compact_json = json.JSONEncoder(separators=(",", ":")).encode
_NO_ARGS = ("[]", "{}")
_EXACT_SCALARS = frozenset({str, int, bool, type(None)})  # JSON gives these back unchanged


def _json_or_none(value: Any) -> str | None:
    if not value:
        return None
    return _compact_json(value)


def _encode_args(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, str] | None:
    """JSON of the arguments, or None when JSON cannot hold them faithfully."""
    if not args and not kwargs:
        return _NO_ARGS
    # Tuples come back as lists, non-str dict keys as str and NaN unequal: refuse what
    # would not round-trip. Plain scalars always do, so only containers are decoded.
    # Any failure (too deep, a hostile __eq__) means "cannot be stored", never a crash.
    try:
        encoded = (_compact_json(list(args)), _compact_json(kwargs))
        if all(
            type(v) in _EXACT_SCALARS or (type(v) is float and math.isfinite(v))
            for v in itertools.chain(args, kwargs.values())
        ):
            return encoded
        if json.loads(encoded[0]) != list(args) or json.loads(encoded[1]) != kwargs:
            return None
    except Exception:
        return None
    return encoded


def _row(frozen: tuple[Any, ...], owner: str) -> tuple[Any, ...]:
    """The ``tasks`` row of a frozen record (see ``_freeze``)."""
    task_id, name, _, args, kwargs, bits, rare = frozen
    created, started, ended = _times(frozen)
    error, retries, stacktrace, logs, tags, retry_of, idem, attempts, retried_as, run_at = (
        rare or _NO_RARE
    )
    encoded = _encode_args(args, _unflat(kwargs))
    return (
        task_id,
        name,
        _STATUSES[bits & 7].value,
        created,
        started,
        ended,
        _duration(started, ended),
        retries,
        error,
        stacktrace,
        _json_or_none(logs),
        _json_or_none(_unflat(tags) if tags else None),
        encoded[0] if encoded else None,
        encoded[1] if encoded else None,
        retry_of,
        idem,
        _json_or_none(_attempt_rows(attempts)),
        int(bool(bits & 8)),
        # requeue holds two flags: 1 run again after a restart, 2 not rebuildable by name.
        int(bool(bits & 16) and encoded is not None) | (2 if bits & 64 else 0),
        owner,
        retried_as,
        run_at,
    )


def _record_from_row(row: Any) -> TaskRecord:
    (
        task_id,
        func_name,
        status,
        created,
        started,
        ended,
        _duration,
        retries_used,
        error,
        stacktrace,
        logs,
        tags,
        args,
        kwargs,
        retry_of,
        idem,
        attempts,
        persist,
        requeue,
        owner,
        retried_as,
        run_at,
    ) = row
    record = TaskRecord(
        task_id,
        func_name,
        status=TaskStatus(status),
        created=created,
        args=(() if args == "[]" else tuple(json.loads(args))) if args is not None else _UNSTORED,
        kwargs=json.loads(kwargs) if kwargs and kwargs != "{}" else None,
        tags=json.loads(tags) if tags else None,
        retry_of=retry_of,
        idempotency_key=idem,
        persist=bool(persist),
    )
    record.requeue = bool(requeue & 1)
    record.by_name = not requeue & 2
    record.started, record.ended = started, ended
    record.retries_used = retries_used
    record.error, record.stacktrace = error, stacktrace
    record.logs = json.loads(logs) if logs else None
    record.attempts = json.loads(attempts) if attempts else None
    record.durable = True
    record.instance = owner
    record.retried_as = retried_as
    record.run_at = run_at
    return record


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return True
    return True


class _Storage:
    """The database behind ``snapshot_db``: what TaskManager needs of it, once.

    A subclass per dialect provides the connection (``open``/``close``), statements
    (``fetch``/``execute``), transactions (``atomic``), its schema, a synchronous
    idempotency-key lookup, and the few expressions that differ. Everything else,
    from batched upserts to claims of a dead process's tasks, is shared here.
    """

    now_sql = ""  # the database's clock in seconds since the epoch: heartbeats use it
    like = "LIKE"  # a case-insensitive LIKE for ``q`` search
    tag_value_like = ""  # true when a value of the JSON ``tags`` is LIKE the parameter
    # What a value in a row can raise when bound or stored; not the database being
    # locked, full or gone, which keep the whole batch for the next turn.
    row_errors: tuple[type[BaseException], ...] = (ValueError, OverflowError)

    def __init__(self, target: str, owner: str) -> None:
        self.target = target  # for messages: never holds a password
        self.owner = owner
        self.stale_after = _STALE_AFTER
        self.runs_pruned = 0.0  # when old schedule occurrences were last deleted (monotonic)
        self.joined = False  # this process's heartbeat row was written

    # -- what each dialect provides ------------------------------------------------

    @property
    def ready(self) -> bool:
        """Open and usable."""
        raise NotImplementedError

    async def open(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def fetch(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    async def execute(self, sql: str, params: Iterable[Any] = ()) -> int:
        """Run one statement; how many rows it changed."""
        raise NotImplementedError

    async def atomic(self, work: Callable[[], Awaitable[Any]]) -> Any:
        """Run ``work`` (which uses ``fetch``/``execute``) in one write transaction."""
        raise NotImplementedError

    def _lookup_key(self, key: str) -> tuple[Any, ...] | None:
        raise NotImplementedError

    def _claim_key(
        self, key: str, row: tuple[Any, ...], freed: str | None
    ) -> tuple[str | None, bool]:
        raise NotImplementedError

    async def listen(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (on the loop) when another process writes; where the
        dialect can tell. Called on every maintenance turn: it re-listens after a
        lost connection."""

    # -- shared ------------------------------------------------------------------------

    def _fail(self, why: str) -> TaskflowDatabaseError:
        return TaskflowDatabaseError(f"snapshot_db={self.target!r}: {why}")

    async def scalar(self, sql: str, params: Iterable[Any] = ()) -> Any:
        rows = await self.fetch(sql, params)
        return rows[0][0] if rows else None

    def find_key(self, key: str) -> tuple[str, TaskStatus] | None:
        """The newest task of idempotency ``key`` in the database: older keys, and other
        processes' keys. Synchronous, as ``add_task`` is: one indexed query, made only
        when memory does not know the key."""
        try:
            row = self._lookup_key(key)
        except Exception:
            logger.warning("cannot look up idempotency key %r in %s", key, self.target)
            return None
        return (row[0], TaskStatus(row[1])) if row else None

    def claim_key(
        self, key: str, row: tuple[Any, ...], freed: str | None
    ) -> tuple[str | None, bool]:
        """Claim idempotency ``key`` for a new task, whose ``tasks`` row is ``row``:
        (the id of the task that holds the key already, or None; whether ``row`` was
        written).

        Finding the key's newest task and writing the new one are one transaction that
        no other process can interleave with: two processes, or two hosts, adding one
        key at once get one task. ``freed`` is this process's own task of the key,
        known to have failed or been cancelled (its end may not be written yet).
        Synchronous, as ``add_task`` is; raises when the database cannot answer.
        """
        try:
            return self._claim_key(key, row, freed)
        except self.row_errors:  # a hostile string in the row: written cleaned
            return self._claim_key(
                key, tuple(_clean(v) if type(v) is str else v for v in row), freed
            )

    async def write(self, rows: list[tuple[Any, ...]], *, heartbeat: bool = False) -> bool:
        """Upsert ``rows`` (and refresh this process's heartbeat).

        Each chunk is one multi-row INSERT: a single statement is atomic on its own,
        so a batch costs one round trip instead of three (BEGIN, executemany,
        COMMIT), and no transaction is ever left open by a cancelled caller. A batch
        cut short by an error is simply written again: upserts are idempotent.
        """
        for start in range(0, len(rows), _ROWS_PER_STATEMENT):
            chunk = rows[start : start + _ROWS_PER_STATEMENT]
            try:
                await self._upsert(chunk)
            except self.row_errors:
                await self._upsert_one_by_one(chunk)
        if heartbeat:
            return await self._beat()
        return True

    async def _beat(self) -> bool:
        """Refresh this process's heartbeat; False when another process had declared it
        dead (its row gone: its tasks were claimed), after which it joins anew."""
        if self.joined and await self.execute(
            f"UPDATE instances SET heartbeat = {self.now_sql} WHERE owner = ?", (self.owner,)
        ):
            return True
        await self.execute(
            "INSERT INTO instances (owner, host, pid, heartbeat) "
            f"VALUES (?, ?, ?, {self.now_sql}) "
            "ON CONFLICT (owner) DO UPDATE SET heartbeat = excluded.heartbeat",
            (self.owner, _clean(socket.gethostname()), os.getpid()),
        )
        evicted, self.joined = self.joined, True
        return not evicted

    async def _upsert(self, chunk: list[tuple[Any, ...]]) -> None:
        await self.execute(
            _UPSERT_HEAD + ", ".join([_ROW_MARKS] * len(chunk)) + _UPSERT_TAIL,
            [value for row in chunk for value in row],
        )

    async def _upsert_one_by_one(self, chunk: list[tuple[Any, ...]]) -> None:
        """A chunk the database refused, row by row: one bad row never blocks the others.

        A refused row is written again with every text cleaned; if the database
        still refuses it, it is logged and skipped (it stays in memory). Errors of
        the database itself (locked, disk full) are not row errors: they propagate
        and the whole batch is tried again later.
        """
        for row in chunk:
            try:
                await self._upsert([row])
                continue
            except self.row_errors as exc:
                first = exc
            try:
                await self._upsert([tuple(_clean(v) if type(v) is str else v for v in row)])
                logger.warning("task %s: stored with its text cleaned (%s)", row[0], first)
            except self.row_errors:
                logger.exception("task %s cannot be stored and is skipped", row[0])

    async def leave(self) -> None:
        """Forget this process's heartbeat, so others may claim what it left pending."""
        await self.execute("DELETE FROM instances WHERE owner = ?", (self.owner,))

    async def _dead_owners(self) -> list[str]:
        owners = [
            r[0]
            for r in await self.fetch(
                f"SELECT DISTINCT owner FROM tasks WHERE {_UNFINISHED} "
                "AND owner IS NOT NULL AND owner != ?",
                (self.owner,),
            )
        ]
        if not owners:
            return []
        alive = {
            r[0]: r[1:]
            for r in await self.fetch(
                f"SELECT owner, host, pid, heartbeat, {self.now_sql} FROM instances"
            )
        }
        host, dead = _clean(socket.gethostname()), []
        for owner in owners:
            info = alive.get(owner)
            if info is None:
                dead.append(owner)  # left gracefully, or its row was never written
            elif (
                info[0] == host and not _pid_alive(info[1]) or info[3] - info[2] > self.stale_after
            ):
                dead.append(owner)
        return dead

    async def claim_orphans(self, names: Iterable[str]) -> list[TaskRecord]:
        """Take over unfinished rows of dead processes; each row goes to one claimant.

        Only rows of functions this process knows are claimed: another process
        sharing the database may be the one that can run them.
        """
        names = list(names)
        dead = await self._dead_owners()
        if not dead or not names:
            return []
        marks = ", ".join("?" * len(names))

        async def work() -> list[TaskRecord]:
            claimed: list[TaskRecord] = []
            for owner in dead:
                # The owner check inside the UPDATE makes the claim atomic across
                # processes: a second claimant finds the owner changed and takes nothing.
                rows = await self.fetch(
                    f"UPDATE tasks SET owner = ? WHERE owner = ? AND {_UNFINISHED} "
                    f"AND func_name IN ({marks}) RETURNING {_COLUMNS}",
                    (self.owner, owner, *names),
                )
                claimed.extend(_record_from_row(r) for r in rows)
                # Its row goes: if it was only stalled, its next heartbeat finds out.
                await self.execute("DELETE FROM instances WHERE owner = ?", (owner,))
            return claimed

        return await self.atomic(work)  # type: ignore[no-any-return]

    async def cancel_scheduled(self, task_id: str) -> bool:
        """Cancel a delayed run that another process holds; it checks the row when due."""

        async def work() -> int:
            return await self.execute(
                "UPDATE tasks SET status = 'cancelled', end_time = ?, error = 'cancelled' "
                "WHERE task_id = ? AND status = 'scheduled'",
                (time.time(), _clean(task_id)),
            )

        return bool(await self.atomic(work))

    async def unfinished_names(self) -> list[str]:
        """Functions that have pending or running rows in the database."""
        return [
            row[0]
            for row in await self.fetch(f"SELECT DISTINCT func_name FROM tasks WHERE {_UNFINISHED}")
        ]

    async def get(self, task_id: str) -> TaskRecord | None:
        rows = await self.fetch(f"SELECT {_COLUMNS} FROM tasks WHERE task_id = ?", (task_id,))
        return _record_from_row(rows[0]) if rows else None

    async def query(
        self,
        statuses: list[str],
        func_name: str | None,
        q: str | None,
        lo: float | None,
        hi: float | None,
        sort: str,
        descending: bool,
        limit: int,
        offset: int,
        *,
        brief: bool = False,
    ) -> tuple[list[Any], int]:
        """One page and the total, in one statement.

        Filtered only by status and function, the total comes from the
        trigger-kept counters instead of a count(*) scan. ``brief``: the page as
        ``to_dict(brief=True)`` dicts, read from the columns they show only
        (tracebacks, logs and arguments stay in the database).
        """
        clauses: list[str] = []
        params: list[Any] = []
        if statuses:
            clauses.append(f"status IN ({', '.join('?' * len(statuses))})")
            params.extend(statuses)
        if func_name:
            clauses.append("func_name = ?")
            params.append(func_name)
        bounds = [("created_at >= ?", lo), ("created_at <= ?", hi)]
        in_range = [(sql, value) for sql, value in bounds if value is not None]
        for sql, value in in_range:
            clauses.append(sql)
            params.append(value)
        head, head_params = "", []
        if q:
            # The window: created at or after the _SEARCH_WINDOW-th newest task in range
            # (any task when there are fewer), read once by a CTE that the page and each
            # part of its count use.
            head = (
                "WITH search_window AS (SELECT coalesce((SELECT created_at FROM tasks"
                + (" WHERE " + " AND ".join(sql for sql, _ in in_range) if in_range else "")
                + f" ORDER BY created_at DESC LIMIT 1 OFFSET {_SEARCH_WINDOW - 1}), 0) AS oldest) "
            )
            head_params = [value for _, value in in_range]
            clauses.append("created_at >= (SELECT oldest FROM search_window)")
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        count_params = params
        if not q:
            if lo is None and hi is None:
                count = f"SELECT coalesce(sum(n), 0) FROM task_counts{where}"
            else:
                count = f"SELECT count(*) FROM tasks{where}"
        else:
            # _Store.page's definition: id prefix, or part of name, error or a tag value.
            # The total is counted in parts that indexes answer: rows of the functions
            # whose name holds q (tasks_func_created), plus the rows with an error or
            # tags (tasks_rare) of the other functions that match, plus id prefixes.
            part = "%" + _like(q) + "%"
            named = (
                f"(func_name IN (SELECT func_name FROM task_counts "
                f"WHERE func_name {self.like} ? ESCAPE '\\'))"
            )
            rare = (
                f"((error IS NOT NULL AND error {self.like} ? ESCAPE '\\') "
                f"OR (tags IS NOT NULL AND {self.tag_value_like}))"
            )
            rare_params = [part, _raw_tags_like(q), part]
            base = where + (" AND " if where else " WHERE ")
            parts = [
                (f"{base}{named}", [*params, part]),
                (
                    f"{base}(error IS NOT NULL OR tags IS NOT NULL) AND NOT {named} AND {rare}",
                    [*params, part, *rare_params],
                ),
            ]
            matches, match_params = [named, rare], [part, *rare_params]
            if _id_like(q.lower()):
                prefix = _like(q).lower() + "%"
                matches.append("task_id LIKE ? ESCAPE '\\'")
                match_params.append(prefix)
                parts.append(
                    (
                        f"{base}task_id LIKE ? ESCAPE '\\' AND NOT {named} AND NOT {rare}",
                        [*params, prefix, part, *rare_params],
                    )
                )
            count = "SELECT " + " + ".join(f"(SELECT count(*) FROM tasks{sql})" for sql, _ in parts)
            count_params = [value for _, values in parts for value in values]
            where = base + "(" + " OR ".join(matches) + ")"
            params = [*params, *match_params]
        direction = "DESC" if descending else "ASC"
        nulls = (" NULLS LAST" if descending else " NULLS FIRST") if _SORTS[sort] else ""
        order = f"{sort} {direction}{nulls}, created_at {direction}, task_id {direction}"
        # The total rides along as an extra column: one round trip.
        rows = await self.fetch(
            f"{head}SELECT {_BRIEF_COLUMNS if brief else _COLUMNS}, ({count}) FROM tasks{where} "
            f"ORDER BY {order} LIMIT ? OFFSET ?",
            (*head_params, *count_params, *params, limit, offset),
        )
        total = rows[0][-1] if rows else await self.scalar(head + count, head_params + count_params)
        if brief:
            page = [_brief_dict(*r[:8], json.loads(r[8]) if r[8] else {}, *r[9:13]) for r in rows]
        else:
            page = [_record_from_row(r[:-1]) for r in rows]
        return page, int(total or 0)

    async def delete_finished_before(self, cutoff: float) -> int:
        async def work() -> int:
            deleted = await self.execute(
                f"DELETE FROM tasks WHERE {_FINISHED} AND end_time < ?", (cutoff,)
            )
            await self.execute(
                "DELETE FROM task_minutes WHERE minute < ?", (int(time.time() // 60) - 120,)
            )
            return deleted

        return await self.atomic(work)  # type: ignore[no-any-return]

    async def load_stats(self, store: _Store) -> None:
        """Rebuild the store's counters from the whole database (indices keep this quick).

        Everything is read first; the counters are then replaced in one synchronous
        step. Resetting them before the reads let tasks that changed meanwhile count
        down from zero (running -1 on a busy dashboard).
        """
        # task_counts is kept exact by triggers, so this never scans the tasks table.
        counts = await self.fetch(
            "SELECT func_name, status, n, dur_n, dur_sum FROM task_counts WHERE n != 0"
        )
        minutes = await self.fetch(
            "SELECT minute, success, failed FROM task_minutes WHERE minute >= ?",
            (int(time.time() // 60) - 60,),
        )
        recent = await self.fetch(
            "SELECT func_name, duration FROM tasks WHERE end_time IS NOT NULL "
            "AND duration IS NOT NULL ORDER BY end_time DESC LIMIT ?",
            (min(store.recent.size, 1000),),
        )
        store.reset_stats()
        for name, status, n, dur_n, dur_sum in counts:
            stats = store.func(name)
            stats.counts[TaskStatus(status)] += n
            stats.dur_n += dur_n
            stats.dur_sum += dur_sum
        for minute, success, failed in minutes:
            store.minutes[minute] = [success, failed]
        for name, duration in reversed(recent):
            store.func(name).recent.add(duration)
            store.recent.add(duration)
        # Records in memory that the database does not hold yet still count.
        for entry in store.dirty.values():
            record = _thaw(entry) if type(entry) is tuple else entry
            if not record.durable:
                store.func(record.func_name).counts[record.status] += 1

    async def revoke(self, session_id: str, until: float) -> None:
        await self.execute("DELETE FROM revoked_sessions WHERE until < ?", (time.time(),))
        await self.execute(
            "INSERT INTO revoked_sessions (session_id, until) VALUES (?, ?) "
            "ON CONFLICT (session_id) DO UPDATE SET until = excluded.until",
            (session_id, until),
        )

    async def is_revoked(self, session_id: str) -> bool:
        value = await self.scalar(
            "SELECT 1 FROM revoked_sessions WHERE session_id = ? AND until >= ?",
            (session_id, time.time()),
        )
        return value is not None

    async def claim_occurrence(self, name: str, occurrence: float, task_id: str) -> bool:
        """Whether this process is the one that runs ``name``'s ``occurrence`` (the first
        to insert it). Old occurrences are forgotten after a day."""
        claimed = await self.fetch(
            "INSERT INTO schedule_runs (name, occurrence, owner, task_id) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (name, occurrence) DO NOTHING RETURNING name",
            (name, occurrence, self.owner, task_id),
        )
        if claimed and time.monotonic() - self.runs_pruned > 3600:
            # Old occurrences go once an hour: a claim is one round trip otherwise.
            self.runs_pruned = time.monotonic()
            await self.execute(
                "DELETE FROM schedule_runs WHERE occurrence < ?", (occurrence - 86400,)
            )
        return bool(claimed)

    async def last_occurrence(self, name: str) -> tuple[float, str] | None:
        """The newest occurrence of schedule ``name`` that a process claimed, and its task."""
        rows = await self.fetch(
            "SELECT occurrence, task_id FROM schedule_runs WHERE name = ? "
            "ORDER BY occurrence DESC LIMIT 1",
            (name,),
        )
        return (rows[0][0], rows[0][1]) if rows else None

    async def paused_schedules(self) -> set[str]:
        return {
            row[0] for row in await self.fetch("SELECT name FROM schedule_state WHERE paused = 1")
        }

    async def set_paused(self, name: str, paused: bool) -> None:
        async def work() -> None:
            await self.execute(
                "INSERT INTO schedule_state (name, paused, changed) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET paused = excluded.paused, "
                "changed = excluded.changed",
                (name, int(paused), time.time()),
            )

        await self.atomic(work)

    async def reserve_login(self, keys: list[tuple[str, int]], window: float) -> tuple[Any, int]:
        """``_Throttle.reserve`` on the database. Each attempt is inserted (committed)
        before it counts the recent ones, so the k-th of concurrent attempts counts
        at least k: more than ``limit`` can never pass, on any host."""
        ids = [
            await self.scalar(
                f"INSERT INTO login_attempts (key, ts) VALUES (?, {self.now_sql}) RETURNING id",
                (key,),
            )
            for key, _ in keys
        ]
        wait = 0.0
        for key, limit in keys:
            rows = await self.fetch(
                f"SELECT ts, {self.now_sql} FROM login_attempts WHERE key = ? "
                f"AND ts > {self.now_sql} - ? ORDER BY ts DESC LIMIT ?",
                (key, window, limit + 1),
            )
            if len(rows) > limit:
                wait = max(wait, rows[-1][0] + window - rows[-1][1])
        if wait:
            await self.release_login(ids)
            return None, max(1, math.ceil(wait))
        await self.execute(f"DELETE FROM login_attempts WHERE ts < {self.now_sql} - ?", (window,))
        return ids, 0

    async def release_login(self, ids: list[int]) -> None:
        await self.execute(
            f"DELETE FROM login_attempts WHERE id IN ({', '.join('?' * len(ids))})", ids
        )

    async def add_audit(self, entry: dict[str, Any]) -> None:
        await self.execute(
            "INSERT INTO audit (ts, actor, action, task_id, detail) VALUES (?, ?, ?, ?, ?)",
            (
                entry["ts"],
                entry["actor"],
                entry["action"],
                entry["task_id"],
                json.dumps(entry["detail"]),
            ),
        )

    async def audit(self, limit: int, offset: int) -> list[dict[str, Any]]:
        rows = await self.fetch(
            "SELECT ts, actor, action, task_id, detail FROM audit ORDER BY id DESC LIMIT ? OFFSET ?",
            (limit, offset),
        )
        return [
            {
                "ts": r[0],
                "actor": r[1],
                "action": r[2],
                "task_id": r[3],
                "detail": json.loads(r[4]) if r[4] else {},
            }
            for r in rows
        ]


def _like(text: str) -> str:
    """``text`` with LIKE's wildcards and escape character escaped (ESCAPE '\\')."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _raw_tags_like(q: str) -> str:
    """The pattern that the raw JSON text of ``tags`` must match for a value to contain
    ``q``: a cheap test before the JSON function. JSON escapes what is not ASCII, so
    only an ASCII ``q`` narrows it (case folding of escapes would not match)."""
    return "%" + _like(_compact_json(q)[1:-1]) + "%" if q.isascii() else "%"


def _storage_for(target: str, owner: str) -> _Storage:
    """The storage ``snapshot_db`` names: a PostgreSQL URL, else a SQLite file path."""
    if _is_postgres_url(target):
        return _PostgresStorage(target, owner)
    return _SQLiteStorage(target, owner)


# -- SQLite --------------------------------------------------------------------------


def _key_holder(found: Any, freed: str | None) -> str | None:
    """The task that holds an idempotency key, given the key's newest task (task_id,
    status) in the database; None when the key is free."""
    if found is None or found[0] == freed or TaskStatus(found[1]) in _FREES_KEY:
        return None
    return found[0]  # type: ignore[no-any-return]


_SQLITE_WORDS = {
    "real": "REAL",
    "serial": "INTEGER PRIMARY KEY AUTOINCREMENT",
    "without_rowid": " WITHOUT ROWID",
    "claim_function": "SELECT 1",  # nothing to create: see _SQLiteStorage._claim_key
}
_COUNT_NEW = """INSERT INTO task_counts (func_name, status, n, dur_n, dur_sum)
        VALUES (NEW.func_name, NEW.status, 1, NEW.duration IS NOT NULL, coalesce(NEW.duration, 0))
        ON CONFLICT (func_name, status) DO UPDATE SET n = n + 1,
        dur_n = dur_n + excluded.dur_n, dur_sum = dur_sum + excluded.dur_sum;"""
_COUNT_OLD = """UPDATE task_counts SET n = n - 1, dur_n = dur_n - (OLD.duration IS NOT NULL),
        dur_sum = dur_sum - coalesce(OLD.duration, 0)
        WHERE func_name = OLD.func_name AND status = OLD.status;"""
# Completions and failures per minute, for the chart of the last hour.
_COUNT_MINUTE = """INSERT INTO task_minutes (minute, success, failed)
        SELECT CAST(NEW.end_time / 60 AS INTEGER), NEW.status = 'success', NEW.status = 'failed'
        WHERE NEW.status IN ('success', 'failed') AND NEW.end_time IS NOT NULL
        AND OLD_STATUS_CHECK
        ON CONFLICT (minute) DO UPDATE SET success = success + excluded.success,
        failed = failed + excluded.failed;"""
_SQLITE_SCHEMA = [
    *(statement.format(**_SQLITE_WORDS) for statement in _TABLES),
    f"""CREATE TRIGGER IF NOT EXISTS tasks_counted AFTER INSERT ON tasks BEGIN
        {_COUNT_NEW}
        {_COUNT_MINUTE.replace("OLD_STATUS_CHECK", "1")}
    END""",
    f"""CREATE TRIGGER IF NOT EXISTS tasks_recounted AFTER UPDATE OF status, duration ON tasks
    WHEN OLD.status IS NOT NEW.status OR OLD.duration IS NOT NEW.duration BEGIN
        {_COUNT_OLD}
        {_COUNT_NEW}
        {_COUNT_MINUTE.replace("OLD_STATUS_CHECK", "OLD.status IS NOT NEW.status")}
    END""",
    f"""CREATE TRIGGER IF NOT EXISTS tasks_uncounted AFTER DELETE ON tasks BEGIN
        {_COUNT_OLD}
    END""",
]


class _SQLiteStorage(_Storage):
    """One SQLite file through aiosqlite (WAL), shared safely by the processes of a host."""

    now_sql = "((julianday('now') - 2440587.5) * 86400.0)"
    # The raw JSON text is tested first: the JSON function runs only on rows it may match.
    tag_value_like = (
        "(tags LIKE ? ESCAPE '\\' AND "
        "EXISTS (SELECT 1 FROM json_each(tags) WHERE value LIKE ? ESCAPE '\\'))"
    )
    row_errors = (
        ValueError,
        OverflowError,
        sqlite3.DataError,
        sqlite3.IntegrityError,
        sqlite3.InterfaceError,
        sqlite3.ProgrammingError,
    )

    def __init__(self, target: str, owner: str) -> None:
        super().__init__(target, owner)
        self.path = target
        self.conn: aiosqlite.Connection | None = None
        self._readers = threading.local()  # read-only sqlite3 connections for key lookups
        self._reader_conns: list[sqlite3.Connection] = []
        self._writers = threading.local()  # and read-write ones for key claims
        self._writer_conns: list[sqlite3.Connection] = []
        self._loop_thread: int | None = None  # the thread whose loop drives self.conn
        self._transacting = False  # self.conn holds the write lock across awaits

    @property
    def ready(self) -> bool:
        return self.conn is not None

    async def open(self) -> None:
        if os.path.exists(self.path) and os.path.getsize(self.path) > 0:
            try:
                with open(self.path, "rb") as fh:
                    header = fh.read(16)
            except OSError as exc:
                raise self._fail(f"cannot be read ({exc.strerror})") from exc
            if header != b"SQLite format 3\x00":
                raise self._fail("is not a SQLite database; refusing to touch it")
        try:
            connection = aiosqlite.connect(self.path, isolation_level=None, timeout=30.0)
            # aiosqlite's worker thread is not a daemon, so a manager that was never shut
            # down kept the interpreter from exiting, for ever. SQLite is crash-safe:
            # exiting without shutdown() then costs what a crash costs, not a hang.
            worker = getattr(connection, "_thread", None)
            if isinstance(worker, threading.Thread) and not worker.is_alive():
                worker.daemon = True
            self.conn = await connection
            self._loop_thread = threading.get_ident()
            await self.conn.execute("PRAGMA busy_timeout = 30000")
            await self.atomic(self._check_and_create)  # one process at a time migrates
            await self._use_wal()
            await self.conn.execute("PRAGMA synchronous = NORMAL")
        except TaskflowDatabaseError:
            await self.close()
            raise
        except (sqlite3.Error, OSError) as exc:
            await self.close()
            raise self._fail(f"cannot be opened as a taskflow database ({exc})") from exc

    async def _use_wal(self) -> None:
        """Switch the file to WAL (it stays so). The switch needs the file to itself and
        SQLite does not wait for that (the busy timeout does not apply): workers that start
        together on a new file retry for a while instead of failing their start-up."""
        assert self.conn is not None
        deadline = time.monotonic() + 30.0
        while True:
            rows = await self.conn.execute_fetchall("PRAGMA journal_mode")
            if rows and str(rows[0][0]).lower() == "wal":
                return
            try:
                await self.conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(random.uniform(0.01, 0.05))

    async def fetch(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        assert self.conn is not None
        return list(await self.conn.execute_fetchall(sql, tuple(params)))

    async def execute(self, sql: str, params: Iterable[Any] = ()) -> int:
        assert self.conn is not None
        cursor = await self.conn.execute(sql, tuple(params))
        return cursor.rowcount

    async def atomic(self, work: Callable[[], Awaitable[Any]]) -> Any:
        """Run ``work`` in one write transaction that a cancellation cannot cut in half.

        Statements already handed to aiosqlite's thread run on even when the awaiting
        task is cancelled; giving the connection up mid-transaction would leave it
        open (every later BEGIN fails) or roll back a COMMIT that already happened.
        So the transaction runs in a shielded task that always ends, and the caller's
        cancellation is delivered after it.
        """
        inner = asyncio.ensure_future(self._transaction(work))
        try:
            return await asyncio.shield(inner)
        except asyncio.CancelledError:
            while not inner.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.shield(inner)
            if not inner.cancelled() and inner.exception() is not None:
                logger.error(
                    "taskflow write failed during cancellation", exc_info=inner.exception()
                )
            raise

    async def _transaction(self, work: Callable[[], Awaitable[Any]]) -> Any:
        assert self.conn is not None
        conn = self.conn
        self._transacting = True
        try:
            await conn.execute("BEGIN IMMEDIATE")  # take the write lock now: no upgrade deadlocks
            try:
                result = await work()
                await conn.execute("COMMIT")
                return result
            except BaseException:
                if conn.in_transaction:
                    await conn.execute("ROLLBACK")
                raise
        finally:
            self._transacting = False

    async def _check_and_create(self) -> None:
        app_id = await self.scalar("PRAGMA application_id")
        version = await self.scalar("PRAGMA user_version")
        tables = await self.scalar("SELECT count(*) FROM sqlite_master")
        if app_id == 0 and version == 0 and tables == 0:
            for statement in _SQLITE_SCHEMA:
                await self.execute(statement)
            await self.execute(f"PRAGMA application_id = {_APPLICATION_ID}")
            await self.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
        elif app_id != _APPLICATION_ID:
            raise self._fail("belongs to another application (it is not a taskflow database)")
        elif version > _SCHEMA_VERSION:
            raise self._fail(
                f"was written by a newer taskflow (schema {version}, this copy knows "
                f"{_SCHEMA_VERSION}); update taskflow.py"
            )
        else:
            while version < _SCHEMA_VERSION:
                for statement in _MIGRATIONS[version]:
                    await self.execute(statement.format(**_SQLITE_WORDS))
                version += 1
                await self.execute(f"PRAGMA user_version = {version}")

    async def close(self) -> None:
        for side in (*self._reader_conns, *self._writer_conns):
            side.close()  # sqlite3 connections may be closed from any thread
        self._reader_conns.clear()
        self._writer_conns.clear()
        self._readers, self._writers = threading.local(), threading.local()
        if self.conn is not None:
            conn, self.conn = self.conn, None
            try:
                await conn.close()
            except Exception:  # closing must never mask the original error
                logger.debug("closing %s failed", self.path, exc_info=True)

    def _lookup_key(self, key: str) -> tuple[Any, ...] | None:
        # A plain read-only sqlite3 query on an index: tens of microseconds.
        conn = getattr(self._readers, "conn", None)
        if conn is None:
            uri = "file:" + urllib.parse.quote(os.path.abspath(self.path)) + "?mode=ro"
            conn = sqlite3.connect(uri, uri=True, timeout=5.0, check_same_thread=False)
            self._readers.conn = conn
            self._reader_conns.append(conn)
        row: tuple[Any, ...] | None = conn.execute(_KEY_LOOKUP, (key,)).fetchone()
        return row

    def _claim_key(
        self, key: str, row: tuple[Any, ...], freed: str | None
    ) -> tuple[str | None, bool]:
        if self._transacting and threading.get_ident() == self._loop_thread:
            # This process's own transaction holds the write lock and needs this loop,
            # which waiting for the lock would block: look the key up, claim nothing.
            return _key_holder(self._lookup_key(key), freed), False
        conn = getattr(self._writers, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self.path, isolation_level=None, timeout=_CLAIM_WAIT, check_same_thread=False
            )
            conn.execute("PRAGMA synchronous = NORMAL")
            self._writers.conn = conn
            self._writer_conns.append(conn)
        # BEGIN IMMEDIATE takes the file's write lock: processes claiming take turns.
        conn.execute("BEGIN IMMEDIATE")
        try:
            holder = _key_holder(conn.execute(_KEY_LOOKUP, (key,)).fetchone(), freed)
            if holder is None:
                conn.execute(_UPSERT_ONE, row)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return holder, holder is None


# -- PostgreSQL ----------------------------------------------------------------------

_FREES_KEY_SQL = ", ".join(sorted(f"'{status.value}'" for status in _FREES_KEY))
# _Storage.claim_key on PostgreSQL, as one call: each statement of a function takes a new
# snapshot, so the lookup sees what the claim that held the lock before it committed (one
# statement taking the lock and looking would look at what was there before it waited).
# The row of a task that is not persist=True is committed without waiting for the disk, as
# its batched writes are: another host sees it at once all the same.
_PG_CLAIM_KEY = f"""CREATE OR REPLACE FUNCTION taskflow_claim_key(
        k TEXT, freed TEXT, new_row JSON, flush BOOLEAN)
    RETURNS TABLE (holder TEXT) LANGUAGE plpgsql AS $$
    DECLARE newest RECORD;
    BEGIN
        IF NOT flush THEN
            PERFORM set_config('synchronous_commit', 'off', true);
        END IF;
        PERFORM pg_advisory_xact_lock(hashtextextended('taskflow-key:' || k, 0));
        SELECT t.task_id, t.status INTO newest FROM tasks t
            WHERE t.idempotency_key = k ORDER BY t.created_at DESC LIMIT 1;
        IF FOUND AND newest.task_id IS DISTINCT FROM freed
                AND newest.status NOT IN ({_FREES_KEY_SQL}) THEN
            RETURN QUERY SELECT newest.task_id;
            RETURN;
        END IF;
        INSERT INTO tasks ({_COLUMNS}) SELECT {_COLUMNS} FROM json_populate_record(NULL::tasks, new_row);
    END $$"""
_PG_WORDS = {
    "real": "DOUBLE PRECISION",
    "serial": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    "without_rowid": "",
    "claim_function": _PG_CLAIM_KEY,
}
_PG_SCHEMA = [
    *(statement.format(**_PG_WORDS) for statement in _TABLES),
    # The same counters as SQLite's triggers, in one trigger function.
    """CREATE OR REPLACE FUNCTION taskflow_count() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP <> 'INSERT' THEN
            UPDATE task_counts SET n = n - 1, dur_n = dur_n - (OLD.duration IS NOT NULL)::int,
                dur_sum = dur_sum - coalesce(OLD.duration, 0)
                WHERE func_name = OLD.func_name AND status = OLD.status;
        END IF;
        IF TG_OP <> 'DELETE' THEN
            INSERT INTO task_counts AS c (func_name, status, n, dur_n, dur_sum)
                VALUES (NEW.func_name, NEW.status, 1, (NEW.duration IS NOT NULL)::int,
                        coalesce(NEW.duration, 0))
                ON CONFLICT (func_name, status) DO UPDATE SET n = c.n + 1,
                dur_n = c.dur_n + excluded.dur_n, dur_sum = c.dur_sum + excluded.dur_sum;
            IF NEW.status IN ('success', 'failed') AND NEW.end_time IS NOT NULL
               AND (TG_OP = 'INSERT' OR OLD.status IS DISTINCT FROM NEW.status) THEN
                INSERT INTO task_minutes AS m (minute, success, failed)
                    VALUES (floor(NEW.end_time / 60)::int, (NEW.status = 'success')::int,
                            (NEW.status = 'failed')::int)
                    ON CONFLICT (minute) DO UPDATE SET success = m.success + excluded.success,
                    failed = m.failed + excluded.failed;
            END IF;
        END IF;
        RETURN NULL;
    END $$""",
    "CREATE TRIGGER tasks_counted AFTER INSERT ON tasks "
    "FOR EACH ROW EXECUTE FUNCTION taskflow_count()",
    "CREATE TRIGGER tasks_recounted AFTER UPDATE OF status, duration ON tasks FOR EACH ROW "
    "WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.duration IS DISTINCT FROM NEW.duration) "
    "EXECUTE FUNCTION taskflow_count()",
    "CREATE TRIGGER tasks_uncounted AFTER DELETE ON tasks "
    "FOR EACH ROW EXECUTE FUNCTION taskflow_count()",
    # Which taskflow schema this is: PostgreSQL has no user_version.
    "CREATE TABLE taskflow_schema (application TEXT NOT NULL, version INTEGER NOT NULL)",
    _PG_CLAIM_KEY,
]
_PG_LOCK = _APPLICATION_ID  # advisory lock: one process at a time creates or migrates
_pg_statements: dict[str, str] = {}  # ``?`` SQL -> ``$n`` SQL


def _is_postgres_url(target: str) -> bool:
    return target.startswith(("postgresql://", "postgres://"))


def _pg_sql(sql: str) -> str:
    """``sql`` with its ``?`` marks numbered as PostgreSQL wants them ($1, $2...)."""
    done = _pg_statements.get(sql)
    if done is None:
        parts = sql.split("?")
        done = parts[0] + "".join(f"${i}{part}" for i, part in enumerate(parts[1:], 1))
        if len(_pg_statements) < 2000:  # a page's IN lists vary; keep the cache bounded
            _pg_statements[sql] = done
    return done


def _split_pg_url(url: str) -> tuple[str, str, str]:
    """(dsn for asyncpg, schema, the URL with its password hidden) of a PostgreSQL URL."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    schema = next((v for k, v in query if k == "schema"), "") or "public"
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", schema):
        raise ValueError(f"snapshot_db: schema must be a plain SQL identifier, got {schema!r}")
    rest = urllib.parse.urlencode([(k, v) for k, v in query if k != "schema"])
    dsn = urllib.parse.urlunsplit(parts._replace(query=rest))
    shown = parts.netloc
    if parts.password is not None:
        shown = shown.replace(":" + parts.password + "@", ":***@", 1)
    return dsn, schema, urllib.parse.urlunsplit(parts._replace(netloc=shown))


def _import_asyncpg() -> Any:
    try:
        import asyncpg  # imported only for a PostgreSQL snapshot_db
    except ImportError as exc:
        raise ImportError(
            "snapshot_db is a PostgreSQL URL, which needs the asyncpg driver: pip install asyncpg"
        ) from exc
    return asyncpg


class _PostgresStorage(_Storage):
    """A PostgreSQL database through an asyncpg pool: one history for every host.

    The schema (``?schema=`` in the URL, default ``public``) holds the same tables
    as the SQLite file. Heartbeats use the server's clock, so hosts whose clocks
    disagree still agree on who is alive.
    """

    now_sql = "extract(epoch from clock_timestamp())::float8"
    like = "ILIKE"
    tag_value_like = (
        "(tags ILIKE ? ESCAPE '\\' AND "
        "EXISTS (SELECT 1 FROM json_each_text(tags::json) AS t WHERE t.value ILIKE ? ESCAPE '\\'))"
    )

    def __init__(self, target: str, owner: str) -> None:
        self.dsn, self.schema, shown = _split_pg_url(target)
        super().__init__(shown, owner)
        self.channel = f"taskflow_{self.schema}"  # one per schema: services do not wake each other
        self.asyncpg = _import_asyncpg()
        self.row_errors = (
            ValueError,
            OverflowError,
            self.asyncpg.DataError,
            self.asyncpg.IntegrityConstraintViolationError,
        )
        self.pool: Any = None
        self._home: asyncio.AbstractEventLoop | None = None  # the pool's event loop
        self._tx: contextvars.ContextVar[Any] = contextvars.ContextVar("taskflow_pg_tx")
        self._keys: tuple[asyncio.AbstractEventLoop, threading.Thread] | None = None
        self._key_conn: Any = None
        self._key_turn: asyncio.Lock | None = None  # one statement at a time on _key_conn
        self._keys_made = threading.Lock()
        self._listener: Any = None

    @property
    def ready(self) -> bool:
        return self.pool is not None

    def _connect_args(self) -> dict[str, Any]:
        return {
            "dsn": self.dsn,
            # JIT compiles the search's scan for tens of milliseconds on every call: off.
            "server_settings": {
                "search_path": self.schema,
                "application_name": "taskflow",
                "jit": "off",
            },
            "timeout": 10.0,
        }

    async def open(self) -> None:
        self._home = asyncio.get_running_loop()
        try:
            self.pool = await self.asyncpg.create_pool(
                min_size=1,
                max_size=4,
                command_timeout=60.0,
                # A 1,000-row upsert is ~150 KB of SQL: cached, it is not parsed again.
                max_cacheable_statement_size=1024 * 1024,
                **self._connect_args(),
            )
            async with self.pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _PG_LOCK)
                # Only when missing: CREATE SCHEMA IF NOT EXISTS needs the CREATE privilege
                # on the database even when the schema exists.
                if not await conn.fetchval(
                    "SELECT 1 FROM pg_namespace WHERE nspname = $1", self.schema
                ):
                    await conn.execute(f'CREATE SCHEMA "{self.schema}"')
                self._tx.set(conn)
                try:
                    await self._check_and_create()
                finally:
                    self._tx.set(None)
        except TaskflowDatabaseError:
            await self.close()
            raise
        except (OSError, asyncio.TimeoutError, self.asyncpg.PostgresError) as exc:
            await self.close()
            raise self._fail(f"cannot be opened as a taskflow database ({exc})") from exc

    async def _check_and_create(self) -> None:
        tables = await self.scalar("SELECT to_regclass('tasks') IS NOT NULL")
        marked = await self.scalar("SELECT to_regclass('taskflow_schema') IS NOT NULL")
        if not tables and not marked:
            for statement in _PG_SCHEMA:
                await self.execute(statement)
            await self.execute(
                "INSERT INTO taskflow_schema (application, version) VALUES ('taskflow', ?)",
                (_SCHEMA_VERSION,),
            )
            return
        version = await self.scalar("SELECT version FROM taskflow_schema") if marked else None
        if version is None:
            raise self._fail(f"schema {self.schema!r} holds a tasks table of another application")
        if version > _SCHEMA_VERSION:
            raise self._fail(
                f"was written by a newer taskflow (schema {version}, this copy knows "
                f"{_SCHEMA_VERSION}); update taskflow.py"
            )
        while version < _SCHEMA_VERSION:
            for statement in _MIGRATIONS[version]:
                await self.execute(statement.format(**_PG_WORDS))
            version += 1
            await self.execute("UPDATE taskflow_schema SET version = ?", (version,))

    async def _upsert(self, chunk: list[tuple[Any, ...]]) -> None:
        # Hosts writing at once update the same counter rows through the trigger, in
        # orders no one controls; PostgreSQL then aborts one of them (deadlock). An
        # upsert is idempotent: try it again, after a short random pause.
        for attempt in range(1, 6):
            try:
                # The other instances' dashboards are told in the same statement (a
                # notification is delivered at commit), not in a second round trip.
                await self.execute(
                    "WITH written AS ("
                    + _UPSERT_HEAD
                    + ", ".join([_ROW_MARKS] * len(chunk))
                    + _UPSERT_TAIL
                    + " RETURNING 1) SELECT pg_notify(?, ?)",
                    [*(value for row in chunk for value in row), self.channel, self.owner],
                )
                return
            except self.asyncpg.TransactionRollbackError:
                if attempt == 5:
                    raise
                await asyncio.sleep(random.uniform(0.002, 0.02) * attempt)

    async def listen(self, callback: Callable[[], None]) -> None:
        if self._listener is not None and not self._listener.is_closed():
            return
        owner = self.owner

        def heard(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
            if payload != owner:
                callback()

        try:
            self._listener = await self.asyncpg.connect(**self._connect_args())
            await self._listener.add_listener(self.channel, heard)
        except (OSError, asyncio.TimeoutError, self.asyncpg.PostgresError):
            self._listener = None
            raise
        callback()  # what changed while nobody listened

    async def close(self) -> None:
        if self._listener is not None:
            listener, self._listener = self._listener, None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(listener.close(), 5)
        if self._keys is not None:
            loop, thread = self._keys
            self._keys = None
            if self._key_conn is not None:
                with contextlib.suppress(Exception):
                    asyncio.run_coroutine_threadsafe(self._key_conn.close(), loop).result(5)
                self._key_conn = None
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
        if self.pool is not None:
            pool, self.pool = self.pool, None
            try:
                await asyncio.wait_for(pool.close(), 10)
            except Exception:
                pool.terminate()

    async def _at_home(self, work: Awaitable[Any]) -> Any:
        # asyncpg connections belong to the loop that opened them. A second event loop
        # in the process (a second TestClient, say) has its statements run there.
        future = asyncio.run_coroutine_threadsafe(work, self._home)  # type: ignore[arg-type]
        return await asyncio.wrap_future(future)

    async def fetch(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        if asyncio.get_running_loop() is not self._home:
            return await self._at_home(self.fetch(sql, params))  # type: ignore[no-any-return]
        conn = self._tx.get(None)
        if conn is not None:
            return [tuple(r) for r in await conn.fetch(_pg_sql(sql), *params)]
        async with self.pool.acquire() as conn:
            return [tuple(r) for r in await conn.fetch(_pg_sql(sql), *params)]

    async def execute(self, sql: str, params: Iterable[Any] = ()) -> int:
        if asyncio.get_running_loop() is not self._home:
            return await self._at_home(self.execute(sql, params))  # type: ignore[no-any-return]
        conn = self._tx.get(None)
        if conn is not None:
            status = await conn.execute(_pg_sql(sql), *params)
        else:
            async with self.pool.acquire() as conn:
                status = await conn.execute(_pg_sql(sql), *params)
        tail = status.rsplit(" ", 1)[-1]
        return int(tail) if tail.isdigit() else -1

    async def atomic(self, work: Callable[[], Awaitable[Any]]) -> Any:
        # A cancelled caller must not cut a transaction in half: it runs in its own
        # task, shielded, and the cancellation is delivered once it has ended.
        if asyncio.get_running_loop() is not self._home:
            return await self._at_home(self.atomic(work))
        inner = asyncio.ensure_future(self._transaction(work))
        try:
            return await asyncio.shield(inner)
        except asyncio.CancelledError:
            with contextlib.suppress(BaseException):
                await inner
            raise

    async def _transaction(self, work: Callable[[], Awaitable[Any]]) -> Any:
        async with self.pool.acquire() as conn, conn.transaction():
            self._tx.set(conn)
            return await work()

    def _on_key_loop(self, work: Callable[[Any], Awaitable[Any]]) -> Any:
        # add_task is synchronous and asyncpg is not: key lookups and claims run on a
        # small loop of their own, with one connection, and this thread waits for them.
        with self._keys_made:  # once, whichever thread asks first
            if self._keys is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name="taskflow-keys", daemon=True
                )
                thread.start()
                self._keys = (loop, thread)

        async def on_loop() -> Any:
            if self._key_turn is None:
                self._key_turn = asyncio.Lock()
            async with self._key_turn:  # sync endpoints' threads may ask at once
                if self._key_conn is None or self._key_conn.is_closed():
                    self._key_conn = await self.asyncpg.connect(**self._connect_args())
                return await work(self._key_conn)

        return asyncio.run_coroutine_threadsafe(on_loop(), self._keys[0]).result(10)

    def _lookup_key(self, key: str) -> tuple[Any, ...] | None:
        async def lookup(conn: Any) -> tuple[Any, ...] | None:
            row = await conn.fetchrow(_pg_sql(_KEY_LOOKUP), key)
            return tuple(row) if row is not None else None

        return self._on_key_loop(lookup)  # type: ignore[no-any-return]

    def _claim_key(
        self, key: str, row: tuple[Any, ...], freed: str | None
    ) -> tuple[str | None, bool]:
        # One round trip: taskflow_claim_key (_PG_CLAIM_KEY) takes a lock on the key for its
        # transaction, looks, and writes the row when the key is free.
        fields = dict(zip(_COLUMN_NAMES, row, strict=True))
        new_row, flush = _compact_json(fields), bool(fields["persist"])

        async def claim(conn: Any) -> tuple[str | None, bool]:
            holder = await conn.fetchval(
                "SELECT holder FROM taskflow_claim_key($1, $2, $3, $4)", key, freed, new_row, flush
            )
            return holder, holder is None

        return self._on_key_loop(claim)  # type: ignore[no-any-return]


# -- Keeping the database in step with memory -------------------------------------


class _Keeper:
    """Writes a _Store's changes to a _Storage: in batches on every maintenance turn,
    at once for ``persist=True`` tasks before their response (one write shared by
    the requests waiting together: a group commit), with the heartbeat; and keeps
    them, bounded, while the database is away.
    """

    def __init__(self, store: _Store, db: _Storage) -> None:
        self.store, self.db = store, db
        # One write at a time: a transaction on SQLite's one connection takes in
        # every statement sent meanwhile.
        self.lock = asyncio.Lock()
        self.problem: str | None = None  # why the last turn failed; /health shows it
        self.elsewhere = False  # another process wrote since the last turn
        self.evicted = False  # others declared this process dead and claimed its tasks

    async def flush(self, *, heartbeat: bool = False) -> int:
        """Write every changed record now; how many rows."""
        if not self.db.ready:
            return 0
        async with self.lock:
            return await self._write(heartbeat)

    async def make_durable(self, records: list[TaskRecord]) -> None:
        """Write ``records`` before a response goes out, unless a write took them
        meanwhile: the first of the waiting requests writes every changed row, the
        others find theirs already durable."""
        if not self.db.ready:
            return
        async with self.lock:
            if any(not r.durable for r in records):
                await self._write(False)

    async def turn(self) -> None:
        """A maintenance turn: listen for other processes, write with the heartbeat."""
        await self.db.listen(self._heard)
        await self.flush(heartbeat=True)
        if self.problem is not None:
            logger.warning("taskflow: %s is reachable again", self.db.target)
            self.problem = None

    def _heard(self) -> None:
        self.elsewhere = True  # handled on the next maintenance turn, at most once

    def failed(self, exc: Exception) -> None:
        """A turn failed: say so once per outage, and bound what waits in memory."""
        if self.problem is None:
            logger.exception("taskflow maintenance step failed; will try again")
        self.problem = f"database unreachable or failing: {type(exc).__name__}"
        dirty = self.store.dirty
        excess = len(dirty) - _MAX_UNWRITTEN
        if excess <= 0:
            return
        dropped = 0
        for task_id in list(itertools.islice(dirty, excess * 2)):
            if type(dirty[task_id]) is tuple and dropped < excess:  # finished ones only
                del dirty[task_id]
                dropped += 1
        logger.warning(
            "taskflow: the database is unreachable and %d changes wait; dropped the %d "
            "oldest finished ones",
            len(dirty),
            dropped,
        )

    async def _write(self, heartbeat: bool) -> int:
        store = self.store
        if not store.dirty and not heartbeat:
            return 0
        batch, store.dirty = store.dirty, {}
        owner = self.db.owner
        try:
            rows = [_row(r if type(r) is tuple else _freeze(r), owner) for r in batch.values()]
        except Exception:
            rows = self._rows_one_by_one(batch)
        try:
            if not await self.db.write(rows, heartbeat=heartbeat):
                self.evicted = True
        except BaseException:
            for task_id, record in batch.items():
                store.dirty.setdefault(task_id, record)
            raise
        for record in batch.values():
            if type(record) is TaskRecord:
                record.durable = True
        return len(rows)

    def _rows_one_by_one(self, batch: dict[str, Any]) -> list[tuple[Any, ...]]:
        """The rows of ``batch``, skipping (and logging) a record that cannot make one."""
        rows = []
        for task_id, r in batch.items():
            try:
                rows.append(_row(r if type(r) is tuple else _freeze(r), self.db.owner))
            except Exception:
                logger.exception("task %s cannot be stored and is skipped", task_id)
        return rows


# =============================================================================
# Task log file: one line per event, appended by a writer thread.
# =============================================================================


class _LogFile:
    """Appends lines to ``path`` from a daemon thread, never blocking the event loop.

    Each line is one ``os.write`` on an ``O_APPEND`` descriptor, so several
    processes can share the file without interleaving inside a line.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.lines: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._drain, name="taskflow-log", daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        while (line := self.lines.get()) is not None:
            try:
                os.write(self.fd, line)
            except OSError:
                logger.exception("cannot write to task log file %s", self.path)

    def write(self, level: str, record: TaskRecord, message: str, extra: dict[str, Any]) -> None:
        stamp = datetime.now(_UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        text = message.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
        parts = [stamp, level.upper(), f"task={record.task_id}", f"name={record.func_name}", text]
        parts.extend(f"{k}={_log_value(v)}" for k, v in extra.items())
        self.lines.put((" ".join(parts) + "\n").encode("utf-8", "replace"))

    def close(self, timeout: float = 2.0) -> None:
        self.lines.put(None)
        self.thread.join(timeout)
        os.close(self.fd)


def _log_value(value: Any) -> str:
    try:
        text = value if isinstance(value, str) else repr(value)
    except Exception:
        text = f"<unprintable {type(value).__name__}>"
    if not text or any(c.isspace() or c in "\"'=" for c in text):
        return json.dumps(text, ensure_ascii=False)
    return text


# =============================================================================
# Execution: a small daemon thread pool for sync tasks, the per-task context,
# and the job each live task carries.
# =============================================================================


class _ThreadPool:
    """A bounded pool of daemon threads, grown on demand up to ``size``.

    ``concurrent.futures.ThreadPoolExecutor`` joins its threads at interpreter exit,
    so one stuck sync task would hang the process after ``shutdown()``; daemon
    threads let ``shutdown()`` keep its ``shutdown_timeout`` promise.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.threads: list[threading.Thread] = []
        self.free = 0  # threads waiting for work and not yet promised a job
        self.lock = threading.Lock()

    def submit(self, loop: asyncio.AbstractEventLoop, fn: Callable[[], Any]) -> asyncio.Future:
        future = loop.create_future()
        with self.lock:
            if self.free:
                self.free -= 1
            elif len(self.threads) < self.size:
                thread = threading.Thread(
                    target=self._work, name=f"taskflow-sync-{len(self.threads)}", daemon=True
                )
                self.threads.append(thread)
                thread.start()
        self.jobs.put((loop, future, fn))
        return future

    def _work(self) -> None:
        while (job := self.jobs.get()) is not None:
            loop, future, fn = job
            try:
                result, error = fn(), None
            except BaseException as exc:  # delivered to the awaiting coroutine
                result, error = None, exc
            with contextlib.suppress(RuntimeError):  # the loop closed while we ran
                loop.call_soon_threadsafe(_settle, future, result, error)
            with self.lock:
                self.free += 1

    def close(self) -> None:
        for _ in self.threads:
            self.jobs.put(None)


def _settle(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


@dataclasses.dataclass(frozen=True)
class Queue:
    """Limits of a named queue: ``TaskManager(queues={"email": Queue(concurrency=5)})``.

    ``concurrency``: at most this many of its tasks run at once (None: no limit).
    ``max_size``: at most this many wait to start; one more is refused with
    ``QueueFull`` (None: no limit). Within a queue, a task of higher ``priority``
    (``@task_manager.task(queue=..., priority=...)``) starts before a lower one;
    equal priorities start in the order added.
    """

    concurrency: int | None = None
    max_size: int | None = None

    def __post_init__(self) -> None:
        _check_number("concurrency", self.concurrency, minimum=1, allow_none=True, integer=True)
        _check_number("max_size", self.max_size, minimum=1, allow_none=True, integer=True)


class _Lane:
    """A queue at run time: its waiting and running tasks, and who starts next."""

    __slots__ = (
        "name",
        "concurrency",
        "max_size",
        "waiting",
        "running",
        "heap",
        "seq",
        "done",
        "minutes",
        "lock",
    )

    def __init__(self, name: str, limits: Queue) -> None:
        self.name = name
        self.concurrency = limits.concurrency
        self.max_size = limits.max_size
        self.waiting = 0  # added, not started (nor finished)
        self.running = 0  # holding one of its concurrency slots
        # Tasks waiting for a slot: (-priority, order, future); the future is set when
        # a finishing task hands its slot over.
        self.heap: list[tuple[int, int, asyncio.Future]] = []
        self.seq = 0
        self.done = 0  # tasks of this queue that reached a final status
        self.minutes: dict[int, int] = {}  # minute -> tasks finished in it
        self.lock = threading.Lock()  # tasks are added from request threads too

    def admit(self) -> None:
        """Count one more waiting task, or refuse it when ``max_size`` are waiting."""
        with self.lock:
            if self.max_size is not None and self.waiting >= self.max_size:
                raise QueueFull(self.name, self.max_size)
            self.waiting += 1

    def started(self) -> None:
        with self.lock:
            self.waiting -= 1

    async def enter(self, priority: int) -> None:
        """Take a slot: at once when one is free and nobody waits, else in priority order."""
        if self.concurrency is None or (self.running < self.concurrency and not self.heap):
            self.running += 1
            return
        future = asyncio.get_running_loop().create_future()
        self.seq += 1
        heapq.heappush(self.heap, (-priority, self.seq, future))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.leave()  # the slot was handed over as this task was cancelled
            raise

    def leave(self) -> None:
        """Give the slot to the next waiting task, or free it."""
        heap = self.heap
        while heap:
            future = heapq.heappop(heap)[2]
            if not future.done():
                future.set_result(None)  # the slot passes on: ``running`` is unchanged
                return
        self.running -= 1

    def finished(self, ended: float) -> None:
        self.done += 1
        minute = int(ended // 60)
        self.minutes[minute] = self.minutes.get(minute, 0) + 1
        if len(self.minutes) > 2:
            for old in [m for m in self.minutes if m < minute - 1]:
                del self.minutes[old]

    def stats(self) -> dict[str, Any]:
        last = int(time.time() // 60) - 1
        return {
            "concurrency": self.concurrency,
            "max_size": self.max_size,
            "waiting": max(self.waiting, 0),
            "running": self.running,
            "done": self.done,
            "done_last_minute": self.minutes.get(last, 0),
        }


# create_task(context=...) exists from Python 3.11; before it, a task copies the
# context it is created in.
_TASK_CONTEXT = sys.version_info >= (3, 11)
_START_PER_TURN = 32  # asyncio tasks created per event loop turn (see _start_released)

_current_task: contextvars.ContextVar[_Job | None] = contextvars.ContextVar(
    "taskflow_current_task", default=None
)


class _Job:
    """Runtime state of a live task; dropped when the task reaches a final status."""

    __slots__ = (
        "manager",
        "record",
        "func",
        "config",
        "is_async",
        "context",
        "handle",
        "held",
        "stop",
        "attempt",
        "next",
        "queued",
        "progress_at",
        "progress_asked",
        "timer",
    )

    def __init__(
        self,
        manager: TaskManager,
        record: TaskRecord,
        func: Callable[..., Any],
        config: TaskConfig,
        is_async: bool,
    ) -> None:
        self.manager = manager
        self.record = record
        self.func = func
        self.config = config
        self.is_async = is_async  # a coroutine function: awaited, not run in a thread
        # A task runs in a copy of the context that releases it (the request's, for a
        # request's task), like FastAPI's own background tasks; kept here until its
        # asyncio task exists.
        self.context: contextvars.Context | None = None
        self.handle: asyncio.Task | None = None
        self.held = True  # not yet released by the response that created it
        self.stop: str | None = None  # "cancel" or "shutdown" when we cancel the handle
        self.attempt = 0
        self.next: _Job | None = None  # the request's next task: released when this one ends
        self.queued = False  # counted as waiting in its queue (until it starts or ends)
        self.progress_at = 0.0  # when listeners were last told of its progress (monotonic)
        self.progress_asked = False  # a progress update waits for its turn on the loop
        self.timer: asyncio.TimerHandle | None = None  # a delayed run's wake-up


def get_task_context() -> TaskContext | None:
    """Inside a running task, who it is (id, name, attempt, tags); elsewhere None."""
    job = _current_task.get()
    if job is None:
        return None
    record = job.record
    return TaskContext(record.task_id, record.func_name, job.attempt, dict(record.tags or {}))


def task_log(message: str, level: str = "info", **extra: Any) -> None:
    """Add a line to the running task's log (and to ``log_file``); safe in sync and async tasks.

    Outside a task the line goes to this module's standard logger instead.
    """
    job = _current_task.get()
    level = level.lower()
    if job is None:
        logger.log(
            logging.getLevelName(level.upper()) if level in _LEVELS else logging.INFO,
            "%s %s",
            message,
            extra or "",
        )
        return
    job.manager._log(job.record, level, str(message), extra)


_LEVELS = ("debug", "info", "warning", "error", "critical")
_PROGRESS_EVERY = 0.25  # seconds: listeners hear a task's progress at most this often


def task_progress(fraction: float, message: str | None = None) -> None:
    """Say how far the running task is: ``fraction`` from 0.0 to 1.0, and an optional
    short ``message`` ("page 3 of 10"); safe in sync and async tasks.

    The record's ``progress`` changes at once; the dashboard and the event stream
    hear of it at most every 0.25 s per task (always with the latest value), so a
    tight loop can call it freely. Outside a task it does nothing.
    """
    if (
        isinstance(fraction, bool)
        or not isinstance(fraction, (int, float))
        or not 0.0 <= fraction <= 1.0
    ):
        raise ValueError(f"task_progress() needs a fraction from 0.0 to 1.0, got {fraction!r}")
    if message is not None:
        message = _text_of(message)[:200]
    job = _current_task.get()
    if job is not None:
        job.manager._progress(job, float(fraction), message)


# =============================================================================
# Injection: how a request gets a tracked BackgroundTasks.
# =============================================================================


class _Adds:
    """``with_options()`` for the two things that add tasks (TaskManager and
    ManagedBackgroundTasks), whose ``_add`` takes the options separately."""

    _add: Callable[..., str]

    def with_options(
        self,
        *,
        idempotency_key: str | None = None,
        tags: dict[str, str] | None = None,
        run_at: datetime | None = None,
        countdown: timedelta | float | None = None,
    ) -> _WithOptions:
        """``.add_task(func, ...)`` with these tracking options; every keyword argument
        of that call goes to ``func``.

        ``run_at`` (a datetime; naive means UTC) or ``countdown`` (seconds or a
        ``timedelta`` from now) delays the task: it is ``scheduled`` until then, can be
        cancelled, and with ``snapshot_db`` survives a restart and runs once, here or on
        another host sharing the database.
        """
        when = _timestamp("run_at", run_at)
        if countdown is not None:
            if when is not None:
                raise ValueError("give run_at or countdown, not both")
            seconds = countdown.total_seconds() if isinstance(countdown, timedelta) else countdown
            _check_number("countdown", seconds)
            when = time.time() + seconds
        return _WithOptions(self._add, idempotency_key, tags, when)


class ManagedBackgroundTasks(_Adds, BackgroundTasks):
    """A ``BackgroundTasks`` whose ``add_task`` tracks the task and returns its id.

    Get one with ``Depends(task_manager.get_tasks)``, or, after
    ``task_manager.install(app)``, through a plain ``BackgroundTasks`` (or
    ``ManagedBackgroundTasks``) parameter.

    The tasks a request adds are held until its response has been sent (and any
    plain background tasks of that response have run), then run one after another
    in the order added, as FastAPI runs them: each starts when the one before it
    has ended (retries included). Unlike FastAPI, a failure does not stop the ones
    after it. Set ``concurrent = True`` on the object (or
    ``TaskManager(concurrent_request_tasks=True)``) to start them all together
    instead. Tasks of different requests always run concurrently.
    ``persist=True`` tasks are committed before the response goes out. If the
    request fails, its held tasks are recorded as cancelled, with the reason, and
    never start.

    Built by hand outside FastAPI's request handling, it starts its tasks when it
    is run as a background (``await tasks()``), or when ``background_tasks`` (a
    ``BackgroundTasks`` it appends itself to) runs.
    """

    def __init__(
        self,
        task_manager: TaskManager | None = None,
        background_tasks: BackgroundTasks | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(task_manager, TaskManager):
            raise TypeError(
                "ManagedBackgroundTasks needs a task_manager: use Depends(task_manager.get_tasks)"
                " or task_manager.install(app)"
            )
        self._manager = task_manager
        self._held: list[_Job] = []  # added, not started yet
        self._durable: list[TaskRecord] | None = None  # persist=True ones, not committed yet
        self._scope: Any = None  # the request's ASGI scope, whose exit stacks it uses
        self._armed = 0  # 1: start/cleanup registered; 2: commit registered too
        self._closed = False  # the request is over: tasks added now start at once
        self.concurrent = task_manager.concurrent_request_tasks
        if background_tasks is not None:  # outside FastAPI's request handling
            # Appended, not add_task(): that may be a managed object's, which tracks.
            background_tasks.tasks.append(BackgroundTask(_start_held, self))

    def add_task(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> str:  # type: ignore[override]
        """Track ``func(*args, **kwargs)``; it starts after the response is sent.

        Returns the task id. ``idempotency_key=`` and ``tags=`` are taken as
        tracking options, unless ``func`` has a parameter of that name (or
        ``**kwargs``): then they are its arguments, as with plain
        ``BackgroundTasks``. ``with_options()`` sets them without that ambiguity.
        With an ``idempotency_key`` already used by a task that did not fail,
        returns that task's id and adds nothing.
        """
        key, tags = _take_options(func, kwargs)
        return self._add(func, args, kwargs, key, tags)

    def _add(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        idempotency_key: str | None,
        tags: dict[str, str] | None,
        run_at: float | None = None,
    ) -> str:
        manager = self._manager
        job, task_id = manager._create(
            func, args, kwargs, idempotency_key, tags, held=True, run_at=run_at
        )
        if job is None:
            return task_id
        if self._closed:
            manager._release_from_any_thread(job)
            return task_id
        self._held.append(job)
        durable = job.record.persist
        if durable:
            if self._durable is None:
                self._durable = []
            self._durable.append(job.record)
        if self._armed < 1 + durable and self._scope is not None:
            self._arm(durable)
        return task_id

    def _arm(self, durable: bool) -> None:
        """Register with the request's exit stacks, at its first task (and first durable one).

        FastAPI keeps two exit stacks in the request scope: one closed after the
        endpoint returns and before the response is sent, one after the response
        (and its background) has run. Registering here, instead of through a
        generator dependency, costs nothing for requests that add no task.
        """
        if not self._armed:
            after = self._scope.get("fastapi_inner_astack")
            if after is not None:
                after.push(self)  # calls __exit__
            self._armed = 1
        if durable:
            before = self._scope.get("fastapi_function_astack") or self._scope.get("fastapi_astack")
            if before is not None:
                before.push_async_exit(self)  # calls __aexit__
            self._armed = 2

    # The request's exit stacks call these. They are dunder methods, not bound
    # methods, because ExitStack.push() of an object with __exit__ is its fast path
    # (a bound method goes through a caught AttributeError on every request).

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        """Before the response: commit the durable tasks; if the request failed, drop them."""
        if exc is not None:
            self._abandon(f"the request failed before its response was sent: {exc!r}")
        else:
            records, self._durable = self._durable, None
            if records:
                try:
                    await self._manager._make_durable(records)
                except Exception as exc:
                    # The client must never get the id of a task that was not stored.
                    logger.error("taskflow: persist=True tasks not stored: %r", exc)
                    self._abandon(f"its commit failed: {type(exc).__name__}")
                    raise HTTPException(
                        503,
                        "the task could not be stored; try again",
                        headers={"Retry-After": "5"},
                    ) from None
        return False

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        """After the response: start the held tasks; if the request failed, drop them."""
        self._closed = True
        if exc is not None:
            self._abandon(f"the request failed: {exc!r}")
        else:
            self._start()
        return False

    async def __call__(self) -> None:
        """Run as a response's background (``install(app)`` makes it the request's)."""
        self._start()
        await super().__call__()

    def _start(self) -> None:
        held, self._held = self._held, []
        release = self._manager._release
        if self.concurrent or len(held) < 2:
            for job in held:
                release(job)
            return
        for job in held:
            if job.record.status is _SCHEDULED:
                release(job)  # a delayed run waits for its time, not for the others
        held = [job for job in held if job.record.status is _PENDING]  # not cancelled meanwhile
        # One after another: each runs in its own copy of this (the request's) context.
        context = contextvars.copy_context()
        for before, job in itertools.pairwise(held):
            job.context = context.copy()
            before.next = job
        if held:
            release(held[0])

    def _abandon(self, reason: str) -> None:
        held, self._held = self._held, []
        for job in held:
            if job.record.status in (_PENDING, _SCHEDULED):  # not cancelled meanwhile
                self._manager._finish(job, TaskStatus.CANCELLED, error=reason[:_MAX_ERROR])


class _WithOptions:
    """What ``with_options()`` returns: an ``add_task`` with tracking options set."""

    __slots__ = ("_add", "_key", "_tags", "_when")

    def __init__(
        self,
        add: Callable[..., str],
        key: str | None,
        tags: dict[str, str] | None,
        when: float | None = None,
    ) -> None:
        self._add, self._key, self._tags, self._when = add, key, tags, when

    def add_task(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> str:
        """Track ``func(*args, **kwargs)`` with the options given; returns the task id."""
        return self._add(func, args, kwargs, self._key, self._tags, self._when)  # type: ignore[no-any-return]


def _take_options(
    func: Callable[..., Any], kwargs: dict[str, Any]
) -> tuple[str | None, dict[str, str] | None]:
    """Pop ``idempotency_key`` and ``tags`` from ``kwargs``, unless ``func`` takes them."""
    if "idempotency_key" not in kwargs and "tags" not in kwargs:
        return None, None
    takes = _parameters(func)
    key = None if takes("idempotency_key") else kwargs.pop("idempotency_key", None)
    tags = None if takes("tags") else kwargs.pop("tags", None)
    return key, tags


def _parameters(func: Callable[..., Any]) -> Callable[[str], bool]:
    """Whether ``func`` takes a keyword argument of a given name."""
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):  # no signature (some builtins): it takes none of ours
        return lambda name: False
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return lambda name: True
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return names.__contains__


async def _start_held(tasks: ManagedBackgroundTasks) -> None:
    """Start a hand-built object's held tasks: run as another object's background."""
    tasks._start()


def _plain_background_tasks() -> BackgroundTasks:
    """Stands in for FastAPI's ``BackgroundTasks()`` once any manager is installed.

    Only requests that pass through an installed app's middleware get a managed
    object, so other apps in the same process keep FastAPI's own class.
    """
    installed = _installed.get()
    if installed is None or installed[1] is None:
        return BackgroundTasks()
    manager, scope = installed
    tasks = ManagedBackgroundTasks(manager)
    tasks._scope = scope  # the same dict FastAPI puts its exit stacks in
    return tasks


# [manager, the request's scope], the scope emptied when the request ends: tasks run in
# copies of the request's context, and must not keep the whole request alive.
_installed: contextvars.ContextVar[list[Any] | None] = contextvars.ContextVar(
    "taskflow_installed", default=None
)


class _InstallMiddleware:
    """ASGI middleware added by ``install(app)``: tells the stand-in which manager serves it."""

    def __init__(self, app: Any, manager: TaskManager) -> None:
        self.app = app
        self.manager = manager

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        installed = [self.manager, scope]
        token = _installed.set(installed)
        try:
            await self.app(scope, receive, send)
        finally:
            installed[1] = None
            _installed.reset(token)


def _make_get_tasks(manager: TaskManager) -> Callable[..., Any]:
    # async: FastAPI runs a plain ``def`` dependency in its thread pool, a thread hop
    # per request for what is a constructor call.
    async def get_tasks(request: Request) -> Any:
        """FastAPI dependency: ``tasks = Depends(task_manager.get_tasks)``."""
        tasks = ManagedBackgroundTasks(manager)
        tasks._scope = request.scope
        return tasks

    return get_tasks


# =============================================================================
# TaskManager: registration, execution, control, queries and lifecycle.
# =============================================================================


class _Schedule:
    """A periodic task: its function, its rhythm, and the last occurrence started here."""

    def __init__(
        self,
        name: str,
        func: Callable[..., Any],
        every: float | None,
        cron: str | None,
        tz: Any,
        run_on_startup: bool,
    ) -> None:
        self.name, self.func, self.every, self.cron, self.tz = name, func, every, cron, tz
        self.run_on_startup = run_on_startup
        self.catch_up = True
        self.last = float("-inf")  # the latest occurrence this process has dealt with
        self.paused = False
        self.last_run: tuple[float, str] | None = None  # (occurrence, task id), started here

    @property
    def rule(self) -> str:
        """The rhythm in words: "every 90 s" or "cron */5 * * * * (Europe/Paris)"."""
        if self.every is not None:
            for unit, size in (("day", 86400), ("h", 3600), ("min", 60)):
                if self.every >= size and self.every % size == 0:
                    n = int(self.every // size)
                    return (
                        f"every {n} {unit}"
                        if unit != "day"
                        else ("every day" if n == 1 else f"every {n} days")
                    )
            return f"every {self.every:g} s"
        return f"cron {self.cron} ({getattr(self.tz, 'key', 'UTC')})"

    def next_after(self, now: float) -> float:
        """The first occurrence after ``now``."""
        if self.every is not None:
            return (math.floor(now / self.every) + 1) * self.every
        return self._cron(now, forward=True)

    def _cron(self, now: float, *, forward: bool) -> float:
        # croniter steps over wall-clock times; given an aware datetime it slips by the
        # offset change across a daylight-saving switch (09:00 became 08:00). So the step
        # is taken in naive local time and the zone applied after (a time skipped in
        # spring runs an hour later, a repeated one in autumn runs once).
        croniter = _import_croniter()
        local = datetime.fromtimestamp(now, self.tz).replace(tzinfo=None)
        steps = croniter.croniter(self.cron, local)
        naive = steps.get_next(datetime) if forward else steps.get_prev(datetime)
        return naive.replace(tzinfo=self.tz).timestamp()

    def latest(self, now: float) -> float:
        """The latest occurrence at or before ``now`` (POSIX seconds)."""
        if self.every is not None:
            return math.floor(now / self.every) * self.every  # aligned: the same on every host
        return self._cron(now, forward=False)


def _zone(name: str) -> Any:
    if name == "UTC":
        return _UTC
    try:
        import zoneinfo

        return zoneinfo.ZoneInfo(name)
    except Exception as exc:
        raise ValueError(f"timezone={name!r} is not a known IANA time zone") from exc


def _import_croniter() -> Any:
    try:
        import croniter  # imported only when cron= is used
    except ImportError as exc:
        raise ImportError("schedule(cron=...) needs croniter: pip install croniter") from exc
    return croniter


def _check_number(
    name: str,
    value: Any,
    *,
    minimum: float = 0.0,
    allow_none: bool = False,
    integer: bool = False,
    strict: bool = False,
    maximum: float | None = None,
) -> None:
    if value is None and allow_none:
        return
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        what = "an integer" if integer else "a number"
        raise TypeError(f"{name} must be {what}{' or None' if allow_none else ''}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if value < minimum or (strict and value == minimum):
        op = ">" if strict else ">="
        raise ValueError(f"{name} must be {op} {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value!r}")


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")


class TaskManager(_Adds):
    """Tracks background tasks: ids, statuses, retries, persistence and lifecycle.

    Every argument is keyword-only and validated here, so a typo fails at import
    time rather than at the first task:

    * ``snapshot_db``: where history, requeue, the audit trail and sessions' revocations
      are kept: the path of a SQLite file, or a ``postgresql://user:password@host/db``
      URL (``postgres://`` too; ``?schema=name`` picks the schema, default ``public``)
      for services on several hosts, which needs ``pip install asyncpg``.
    * ``snapshot_interval``: seconds between batched writes to that file.
    * ``requeue_pending``: at startup, run again the unfinished tasks that a stopped
      or crashed process left in the file (and save pending ones at shutdown).
    * ``log_file``: append one line per task event and per ``task_log()`` call.
    * ``retention_days``: delete finished records older than this, at startup and
      about every 6 hours.
    * ``max_history``: finished records kept in memory (older ones stay in SQLite).
    * ``max_concurrent_tasks``: how many tasks may run at once (others wait, pending).
    * ``max_sync_threads``: size of the thread pool that runs sync functions.
    * ``shutdown_timeout``: seconds ``shutdown()`` waits for running tasks.
    * ``concurrent_request_tasks``: start the tasks one request adds together, instead
      of one after another in the order added (FastAPI's order, the default).
    * ``heartbeat_timeout``: seconds without a heartbeat after which another process
      sharing ``snapshot_db`` counts as dead, and one live process claims its
      unfinished tasks (on the same host a dead PID is noticed at once).
    * ``queues``: named queues and their limits, ``{"email": Queue(concurrency=5,
      max_size=1000)}``; tasks name theirs with ``@task(queue=...)``. A ``"default"``
      queue without limits always exists.
    """

    def __init__(
        self,
        *,
        snapshot_db: str | os.PathLike[str] | None = None,
        snapshot_interval: float = 1.0,
        requeue_pending: bool = False,
        log_file: str | os.PathLike[str] | None = None,
        retention_days: float | None = None,
        max_history: int = 10_000,
        max_concurrent_tasks: int | None = None,
        max_sync_threads: int | None = None,
        shutdown_timeout: float = 10.0,
        heartbeat_timeout: float = _STALE_AFTER,
        concurrent_request_tasks: bool = False,
        queues: dict[str, Queue] | None = None,
    ) -> None:
        for name, value in (("snapshot_db", snapshot_db), ("log_file", log_file)):
            if value is not None and not isinstance(value, (str, os.PathLike)):
                raise TypeError(f"{name} must be a file path (str or os.PathLike), got {value!r}")
            if value is not None and not os.fspath(value):
                raise ValueError(f"{name} must not be empty")
        _check_number("snapshot_interval", snapshot_interval, strict=True)
        _check_bool("requeue_pending", requeue_pending)
        _check_bool("concurrent_request_tasks", concurrent_request_tasks)
        _check_number(
            "retention_days", retention_days, allow_none=True, strict=True, maximum=_MAX_DAYS
        )
        _check_number("max_history", max_history, integer=True)
        _check_number(
            "max_concurrent_tasks", max_concurrent_tasks, minimum=1, allow_none=True, integer=True
        )
        _check_number(
            "max_sync_threads", max_sync_threads, minimum=1, allow_none=True, integer=True
        )
        _check_number("shutdown_timeout", shutdown_timeout)
        _check_number("heartbeat_timeout", heartbeat_timeout, strict=True)
        if requeue_pending and snapshot_db is None:
            raise ValueError(
                "requeue_pending=True needs snapshot_db: pending tasks are saved there"
            )
        if queues is not None and not (
            isinstance(queues, dict)
            and all(isinstance(k, str) and k and isinstance(v, Queue) for k, v in queues.items())
        ):
            raise TypeError(f"queues must be a dict of queue names to Queue(...), got {queues!r}")
        self.snapshot_db = os.fspath(snapshot_db) if snapshot_db is not None else None
        if self.snapshot_db is not None and _is_postgres_url(self.snapshot_db):
            _split_pg_url(self.snapshot_db)  # a bad schema= fails here, not at startup
            _import_asyncpg()  # so does a missing driver
        self.snapshot_interval = float(snapshot_interval)
        self.requeue_pending = requeue_pending
        self.log_file = os.fspath(log_file) if log_file is not None else None
        self.retention_days = retention_days
        self.max_history = max_history
        self.max_concurrent_tasks = max_concurrent_tasks
        self.max_sync_threads = max_sync_threads or min(32, (os.cpu_count() or 1) + 4)
        self.shutdown_timeout = float(shutdown_timeout)
        self.heartbeat_timeout = float(heartbeat_timeout)
        self.concurrent_request_tasks = concurrent_request_tasks
        self.queues: dict[str, Queue] = {"default": Queue(), **(queues or {})}
        self._lanes = {name: _Lane(name, limits) for name, limits in self.queues.items()}

        self._registry: dict[str, tuple[Callable[..., Any], TaskConfig]] = {}
        self._configs: dict[Any, tuple[TaskConfig, bool]] = {}  # func -> (config, is async)
        self._store = _Store(max_history)
        self._store.persistent = self.snapshot_db is not None
        self._jobs: dict[str, _Job] = {}
        self._backlog: list[_Job] = []  # released before startup(): started by it
        self._released: list[_Job] = []  # released, their asyncio tasks not created yet
        self._owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._db: _Storage | None = None
        self._logfile: _LogFile | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._pool: _ThreadPool | None = None
        self._slots: asyncio.Semaphore | None = None
        self._keeper: _Keeper | None = None  # writes to _db, while started with one
        self._maintenance: asyncio.Task | None = None
        self._audit: deque[dict[str, Any]] = deque(maxlen=1000)
        self._started = False
        self._closing = False
        self._lifespan_apps: set[int] = set()
        self._last_refresh = 0.0
        self._poll_interval = 30.0  # re-read a shared database this often (TaskAdmin's)
        self._warned_not_started = False
        self._retried: dict[str, str] = {}  # task id -> its retry's id, newest last
        self._schedules: list[_Schedule] = []
        self._checks: set[asyncio.Future] = set()  # delayed runs being checked when due
        self.get_tasks = _make_get_tasks(self)

    # -- registration -------------------------------------------------------

    def task(
        self,
        *,
        retries: int = 0,
        delay: float = 0.0,
        backoff: float = 1.0,
        name: str | None = None,
        persist: bool = False,
        requeue_on_interrupt: bool = False,
        timeout: float | None = None,
        jitter: bool = False,
        max_delay: float | None = None,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] = (Exception,),
        queue: str = "default",
        priority: int = 0,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register a function's options; returns the function unchanged.

        Retry ``n`` waits ``delay * backoff ** (n - 1)`` seconds, capped by
        ``max_delay`` and randomised between 0 and that when ``jitter``. Only
        exceptions in ``retry_on`` are retried; ``timeout`` fails an attempt that
        runs longer. ``name`` is the name shown everywhere and used to find the
        function again for retry and requeue. ``persist=True`` commits the task
        before the response that returned its id is sent, so it survives a crash.
        ``queue`` names one of ``TaskManager(queues=...)`` (or ``"default"``), whose
        limits its tasks share; within it, higher ``priority`` starts first.
        """
        _check_number("retries", retries, integer=True)
        if queue not in self.queues:
            raise ValueError(
                f"queue={queue!r} is not a queue of this TaskManager; it has "
                + ", ".join(repr(q) for q in self.queues)
                + " (declare it with TaskManager(queues={...: Queue(...)}))"
            )
        if type(priority) is not int:
            raise TypeError(f"priority must be an int, got {priority!r}")
        _check_number("delay", delay)
        _check_number("backoff", backoff, minimum=1.0)
        _check_number("timeout", timeout, allow_none=True, strict=True)
        _check_number("max_delay", max_delay, allow_none=True)
        for flag, value in (
            ("persist", persist),
            ("requeue_on_interrupt", requeue_on_interrupt),
            ("jitter", jitter),
        ):
            _check_bool(flag, value)
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise TypeError(f"name must be a non-empty string or None, got {name!r}")
        if name is not None and _clean(name) != name:
            raise ValueError(f"name must be storable text (no NUL, no lone surrogate): {name!r}")
        if isinstance(retry_on, type):
            retry_on = (retry_on,)
        if not (
            isinstance(retry_on, tuple)
            and retry_on
            and all(isinstance(e, type) and issubclass(e, BaseException) for e in retry_on)
        ):
            raise TypeError(
                f"retry_on must be an exception class or a tuple of them, got {retry_on!r}"
            )

        def register(func: Callable[..., Any]) -> Callable[..., Any]:
            if not callable(func):
                raise TypeError(f"@task_manager.task() decorates a function, got {func!r}")
            task_name = name or _name_of(func)
            if persist and self.snapshot_db is None:
                logger.warning(
                    "task %r has persist=True but the TaskManager has no snapshot_db;"
                    " it will not survive a restart",
                    task_name,
                )
            known = self._registry.get(task_name)
            if (
                known is not None
                and known[0] is not func
                and _qualified(known[0]) != _qualified(func)
            ):
                raise ValueError(
                    f"name={task_name!r} is already registered for {_qualified(known[0])}; "
                    "give one of them another name="
                )
            config = TaskConfig(
                task_name,
                retries,
                float(delay),
                float(backoff),
                persist,
                requeue_on_interrupt,
                timeout,
                jitter,
                max_delay,
                retry_on,
                queue,
                priority,
            )
            self._registry[task_name] = (func, config)
            self._configs[func] = (config, _is_async(func))
            return func

        return register

    def schedule(
        self,
        *,
        every: timedelta | float | None = None,
        cron: str | None = None,
        timezone: str = "UTC",
        run_on_startup: bool = False,
        catch_up: bool = True,
        name: str | None = None,
        **options: Any,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Run a function periodically: ``every`` (a ``timedelta`` or seconds) or ``cron``
        (a crontab line, read with croniter: ``pip install croniter``), exactly one.

        Each occurrence runs once: with ``snapshot_db`` once in the whole fleet (the
        first process to claim it in the database runs it), without it once per
        process. A process that was down does not replay a backlog: it runs at most the
        latest missed occurrence. Each run is an ordinary tracked task; ``options``
        (``retries``, ``delay``, ``backoff``, ``timeout``...) are ``task()``'s, and the
        function is registered like one. ``run_on_startup`` also runs it once when
        each process starts; ``catch_up=False`` skips an occurrence missed while every
        process was down, instead of running it late. Schedules can be paused and
        resumed (``pause_schedule``), and with ``snapshot_db`` that holds for every
        process and across restarts.
        """
        if (every is None) == (cron is None):
            raise ValueError("schedule() needs exactly one of every= and cron=")
        interval = None
        if every is not None:
            interval = every.total_seconds() if isinstance(every, timedelta) else every
            _check_number("every", interval, strict=True)
        tz = _zone(timezone)
        if cron is not None:
            if not isinstance(cron, str) or not cron.strip():
                raise TypeError(f"cron must be a crontab line, got {cron!r}")
            croniter = _import_croniter()
            if not croniter.croniter.is_valid(cron):
                raise ValueError(f"cron={cron!r} is not a valid crontab line")
        _check_bool("run_on_startup", run_on_startup)
        _check_bool("catch_up", catch_up)
        register = self.task(name=name, **options)

        def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
            register(func)
            config, _ = self._configs[func]
            schedule = _Schedule(config.name, func, interval, cron, tz, run_on_startup)
            schedule.catch_up = catch_up
            self._schedules.append(schedule)
            return func

        return decorate

    async def _fire_schedules(self, *, starting: bool = False) -> None:
        """Start each schedule's latest due occurrence that nobody ran yet."""
        now = time.time()
        db = self._db
        if db is not None and not db.ready:
            return  # no claim is possible: run nothing now, the latest occurrence later
        if db is not None:  # paused or resumed by any process, at any time
            paused = await db.paused_schedules()
            for schedule in self._schedules:
                schedule.paused = schedule.name in paused
        for schedule in self._schedules:
            tags = {"schedule": schedule.name}
            if starting:
                if schedule.run_on_startup and not schedule.paused:
                    self._add(schedule.func, (), {}, None, tags)
                if db is None or not schedule.catch_up:  # no catch-up run
                    schedule.last = schedule.latest(now)
                    continue
            due = schedule.latest(now)
            if due <= schedule.last:
                continue
            schedule.last = due
            if schedule.paused:
                continue  # resumed, it runs at its next occurrence, not this one
            task_id = _new_id()
            # With a database the claim comes first: a process that loses it shows no task.
            if db is not None and not await db.claim_occurrence(schedule.name, due, task_id):
                continue
            job, _ = self._create(schedule.func, (), {}, None, tags, held=False, task_id=task_id)
            assert job is not None
            schedule.last_run = (due, task_id)
            self._release(job)

    def _schedule_named(self, name: str) -> _Schedule:
        for schedule in self._schedules:
            if schedule.name == name:
                return schedule
        raise TaskNotFound(f"no schedule named {name!r}")

    async def list_schedules(self) -> list[dict[str, Any]]:
        """Every schedule: ``name``, ``rule`` in words, ``paused``, ``next_run``, and its
        ``last_run`` (the latest occurrence started in the fleet, or a run-now in this
        process if later) with ``last_task_id`` and ``last_status`` (ISO times; None
        before a first run)."""
        now = time.time()
        db = self._db if self._db is not None and self._db.ready else None
        out = []
        for schedule in self._schedules:
            last = schedule.last_run  # the latest started here, a run-now included
            if db is not None:
                found = await db.last_occurrence(schedule.name)
                if found is not None and (last is None or found[0] > last[0]):
                    last = found
            record = await self.fetch(last[1]) if last is not None else None
            out.append(
                {
                    "name": schedule.name,
                    "rule": schedule.rule,
                    "every": schedule.every,
                    "cron": schedule.cron,
                    "timezone": getattr(schedule.tz, "key", "UTC"),
                    "paused": schedule.paused,
                    "next_run": None if schedule.paused else _iso(schedule.next_after(now)),
                    "last_run": _iso(last[0]) if last else None,
                    "last_task_id": last[1] if last else None,
                    "last_status": record.status.value if record is not None else None,
                }
            )
        return out

    async def pause_schedule(self, name: str) -> None:
        """Stop starting ``name``'s occurrences until ``resume_schedule``: in every process
        sharing ``snapshot_db`` (within a second) and after restarts; without a database,
        in this process until it stops. Raises ``TaskNotFound`` for an unknown name."""
        await self._set_paused(name, True)

    async def resume_schedule(self, name: str) -> None:
        """Start ``name``'s occurrences again, from its next one (a paused one is not run late)."""
        await self._set_paused(name, False)

    async def _set_paused(self, name: str, paused: bool) -> None:
        schedule = self._schedule_named(name)
        if self._db is not None and self._db.ready:
            await self._db.set_paused(name, paused)
        if not paused:
            schedule.last = schedule.latest(time.time())  # no late run of a paused occurrence
        schedule.paused = paused

    def run_schedule_now(self, name: str) -> str:
        """Run schedule ``name``'s function now, once, as an ordinary task; returns its id.
        Its occurrences go on as before."""
        schedule = self._schedule_named(name)
        task_id = self._add(schedule.func, (), {}, None, {"schedule": name, "trigger": "manual"})
        schedule.last_run = (time.time(), task_id)
        return task_id

    def _config_for(self, func: Callable[..., Any]) -> tuple[TaskConfig, bool]:
        """``func``'s options, and whether it is a coroutine function (known once registered)."""
        try:
            known = self._configs.get(func)
        except TypeError:  # unhashable callable
            known = None
        return known or (TaskConfig(_name_of(func)), _is_async(func))

    @property
    def background_tasks(self) -> Callable[..., ManagedBackgroundTasks]:
        """Alias of ``get_tasks``: ``tasks = Depends(task_manager.background_tasks)``."""
        return self.get_tasks

    # -- creating and starting tasks -----------------------------------------

    def add_task(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> str:
        """Enqueue ``func(*args, **kwargs)`` outside a request; returns the task id.

        It starts at once when the manager is running; before ``startup()`` it
        waits, pending, and starts when ``startup()`` runs. Safe from any thread.
        ``idempotency_key=`` and ``tags=`` are tracking options unless ``func`` takes
        parameters of those names; ``with_options()`` sets them either way.
        """
        key, tags = _take_options(func, kwargs)
        return self._add(func, args, kwargs, key, tags)

    def _add(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        idempotency_key: str | None,
        tags: dict[str, str] | None,
        run_at: float | None = None,
    ) -> str:
        job, task_id = self._create(
            func, args, kwargs, idempotency_key, tags, held=False, run_at=run_at
        )
        if job is not None:
            self._release_from_any_thread(job)
        return task_id

    def _create(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        idempotency_key: str | None,
        tags: dict[str, str] | None,
        *,
        held: bool,
        retry_of: str | None = None,
        task_id: str | None = None,
        run_at: float | None = None,
    ) -> tuple[_Job | None, str]:
        if not callable(func):
            raise TypeError(f"add_task() needs a callable, got {func!r}")
        if idempotency_key is not None:
            if not isinstance(idempotency_key, str) or not idempotency_key:
                raise TypeError(
                    f"idempotency_key must be a non-empty string, got {idempotency_key!r}"
                )
            idempotency_key = _clean(idempotency_key)
            existing, freed = self._by_idempotency(idempotency_key)
            if existing is not None:
                return None, existing
        if tags is not None:
            if not isinstance(tags, dict):
                raise TypeError(f"tags must be a dict of str to str, got {tags!r}")
            tags = {_text_of(k): _text_of(v) for k, v in tags.items()}
        config, is_async = self._config_for(func)
        lane = self._lanes[config.queue]
        if config.persist and _encode_args(args, kwargs) is None:
            raise TaskArgumentError(
                f"arguments of persist=True task {config.name!r} cannot be stored as JSON "
                f"(args={args!r}, kwargs={kwargs!r}); pass JSON types (str, int, float, bool, "
                "None, list, dict with str keys) or drop persist=True"
            )
        record = TaskRecord(
            task_id or _new_id(),
            config.name,
            args=tuple(args),
            kwargs=dict(kwargs) if kwargs else None,
            tags=tags,
            retry_of=retry_of,
            idempotency_key=idempotency_key,
            persist=config.persist,
        )
        known = self._registry.get(config.name)
        record.by_name = known is not None and known[0] is func
        record.run_at = run_at
        delayed = run_at is not None and run_at > record.created
        if delayed:
            record.status = _SCHEDULED  # it joins its queue when due
        else:
            lane.admit()  # raises QueueFull when max_size tasks wait already
        if idempotency_key is not None and self._db is not None and self._db.ready:
            existing = self._claim_key(record, freed)
            if existing is not None:  # another process's task holds the key
                if not delayed:
                    lane.started()  # not waiting after all
                return None, existing
        job = _Job(self, record, func, config, is_async)
        job.held = held
        job.queued = not delayed
        self._jobs[record.task_id] = job
        if self._loop is not None and threading.get_ident() != self._loop_thread:
            # A sync endpoint runs in a worker thread: make the record visible at once,
            # count it and wake listeners on the loop, which owns the store.
            self._store.records[record.task_id] = record
            self._loop.call_soon_threadsafe(self._store.add, record)
        else:
            self._store.add(record)
        if self._logfile is not None:
            self._event(record, "info", "created")
        return job, record.task_id

    def _by_idempotency(self, key: str) -> tuple[str | None, str | None]:
        """(the task that holds ``key`` as far as this process knows, or None; the task
        of this process that freed it, if any). With the database open, tasks of other
        processes are found by ``_claim_key``, in the same step as the claim."""
        store = self._store
        task_id = store.idempotency.get(key)
        entry = store.records.get(task_id) if task_id is not None else None
        if entry is not None:
            status = _frozen_status(entry) if type(entry) is tuple else entry.status
        elif key in store.idempotency_gone:
            task_id, status = store.idempotency_gone[key]
        elif (
            self._db is not None
            and not self._db.ready
            and (found := self._db.find_key(key)) is not None
        ):
            task_id, status = found
        else:
            return None, None
        # A failed, cancelled or interrupted task frees its key: a client that retries a
        # request whose tasks were cancelled (because the request failed) must get new ones.
        if status in _FREES_KEY:
            return None, task_id
        return task_id, None

    def _claim_key(self, record: TaskRecord, freed: str | None) -> str | None:
        """Claim the new ``record``'s idempotency key in the database, writing its row
        (see ``_Storage.claim_key``); the id of another task that holds the key, or
        None. When the database cannot answer, the task is added unchecked, as
        without a database, and a warning says so."""
        db = self._db
        assert db is not None and record.idempotency_key is not None
        try:
            existing, written = db.claim_key(
                record.idempotency_key, _row(_freeze(record), db.owner), freed
            )
        except Exception as exc:
            logger.warning(
                "taskflow: cannot claim idempotency key %r in %s (%s); the task is added "
                "without checking other processes",
                record.idempotency_key,
                db.target,
                type(exc).__name__,
            )
            return None
        record.durable = written
        return existing

    def _release_from_any_thread(self, job: _Job) -> None:
        """``_release``, handed to the loop when called from another thread."""
        if self._loop is not None and threading.get_ident() != self._loop_thread:
            self._loop.call_soon_threadsafe(self._release, job)
        else:
            self._release(job)

    def _release(self, job: _Job) -> None:
        """Start a task whose request has answered (or that was added directly).

        Its asyncio task is created by ``_start_released``, at the loop's next turn,
        together with the other tasks released meanwhile: a burst of responses then
        holds only records and contexts, not one scheduled asyncio task each.
        """
        job.held = False
        if job.record.status is _SCHEDULED and self._loop is not None and not self._closing:
            self._arm(job)
            return
        if job.record.status is not _PENDING and job.record.status is not _SCHEDULED:
            return  # cancelled while it waited
        if job.context is None:
            job.context = contextvars.copy_context()  # it runs in a copy of this context
        if self._loop is None or self._closing:
            if self._loop is None and not self._warned_not_started and _in_event_loop():
                self._warned_not_started = True
                logger.error(
                    "taskflow: a task was added while an event loop runs, but this "
                    "TaskManager was never started, so it waits. The app's lifespan did not "
                    "run: an app mounted with outer.mount(...) does not get one. Run the "
                    "inner app's lifespan from the outer app's (see docs/lifecycle.md, "
                    "'Mounted apps'), or call task_manager.startup() yourself."
                )
            self._backlog.append(job)
            return
        self._released.append(job)
        if len(self._released) == 1:
            self._loop.call_soon(self._start_released)

    def _arm(self, job: _Job) -> None:
        """Wake a delayed run at its ``run_at`` (at once if that has passed)."""
        assert self._loop is not None and job.record.run_at is not None
        if job.timer is not None:
            job.timer.cancel()
        wait = max(0.0, job.record.run_at - time.time())
        job.timer = self._loop.call_later(wait, self._due, job)

    def _due(self, job: _Job) -> None:
        job.timer = None
        if job.record.status is not _SCHEDULED or self._closing:
            return
        if self._db is not None and self._db.ready:
            # Another host may have cancelled it in the database meanwhile.
            task = asyncio.ensure_future(self._due_checked(job))
            self._checks.add(task)
            task.add_done_callback(self._checks.discard)
        else:
            self._start_due(job)

    async def _due_checked(self, job: _Job) -> None:
        record = job.record
        try:
            row = await self._db.get(record.task_id) if self._db is not None else None
        except Exception as exc:  # the database is away: run it, as promised
            logger.warning("taskflow: could not check delayed task %s: %r", record.task_id, exc)
            row = None
        if record.status is not _SCHEDULED or self._closing:
            return
        if row is not None and row.status is _CANCELLED:
            self._finish(job, _CANCELLED, error=row.error or "cancelled")
        elif row is not None and row.instance not in (None, self._owner):
            # Claimed by another process while this one stalled: it runs it, not us.
            self._jobs.pop(record.task_id, None)
        else:
            self._start_due(job)

    def _start_due(self, job: _Job) -> None:
        """A delayed run is due: it joins its queue (never refused: it was accepted)."""
        lane = self._lanes[job.config.queue]
        with lane.lock:
            lane.waiting += 1
        job.queued = True
        self._store.move(job.record, _PENDING)
        self._release(job)

    def _start_released(self) -> None:
        if self._loop is None or self._closing:
            self._released = []
            return  # shutdown() decides about pending tasks
        # At most _START_PER_TURN per loop turn: a burst of thousands of tasks never
        # stalls the loop, and fewer scheduled tasks live at once for the collector.
        jobs = self._released[:_START_PER_TURN]
        del self._released[:_START_PER_TURN]
        if self._released:
            self._loop.call_soon(self._start_released)
        create = self._loop.create_task
        for job in jobs:
            record = job.record
            if record.status is _PENDING:
                # Named by the task id: asyncio.all_tasks() tells which is which, and
                # asyncio need not format a "Task-N" name for each.
                context, job.context = job.context, None
                if _TASK_CONTEXT:
                    job.handle = create(self._run(job), name=record.task_id, context=context)
                else:
                    job.handle = context.run(  # type: ignore[union-attr]
                        create, self._run(job), name=record.task_id
                    )

    # -- running ---------------------------------------------------------------

    async def _run(self, job: _Job) -> None:
        record, config = job.record, job.config
        _current_task.set(job)
        lane = self._lanes[config.queue]
        limited = lane.concurrency is not None
        if limited:
            try:
                await lane.enter(config.priority)
            except asyncio.CancelledError:
                self._stopped(job)
                return
        else:
            lane.running += 1  # counted only: no slot to wait for
        if self._slots is not None:
            try:
                await self._slots.acquire()
            except asyncio.CancelledError:
                if limited:
                    lane.leave()
                self._stopped(job)
                return
        try:
            if record.status is not _PENDING or self._closing:
                return  # cancelled while waiting, or shutting down: shutdown() decides
            if job.queued:
                job.queued = False
                lane.started()
            record.started = time.time()
            self._store.move(record, _RUNNING)
            if self._logfile is not None:
                self._event(record, "info", "running")
            while True:
                attempt = job.attempt
                if attempt:
                    # One attempt is told by the record's start/end/error; a list of
                    # [attempt, start, end, error] only once there is a retry.
                    record.retries_used = attempt
                    record.attempts.append([attempt, time.time(), None, None])  # type: ignore[union-attr]
                    self._event(record, "info", f"retry {attempt} of {config.retries}")
                try:
                    result = self._call(job)
                    if config.timeout is not None:
                        await asyncio.wait_for(result, config.timeout)
                    else:
                        await result
                except asyncio.CancelledError:
                    if record.attempts:
                        record.attempts[-1][2:] = [time.time(), "cancelled"]
                    self._stopped(job)
                    if job.stop is None:
                        raise  # not ours (event loop teardown): let it propagate
                    return
                except Exception as exc:
                    if job.stop == "cancel":  # cancel requested while its thread ran
                        self._finish(
                            job,
                            TaskStatus.CANCELLED,
                            error=f"cancelled; the thread's error was discarded: {type(exc).__name__}",
                        )
                        return
                    wait = self._failed_attempt(job, exc)
                    if wait is None:
                        return  # recorded failed
                    try:
                        await asyncio.sleep(wait)
                    except asyncio.CancelledError:
                        self._stopped(job)
                        if job.stop is None:
                            raise
                        return
                else:
                    if job.stop == "cancel":  # cancel requested while its thread ran
                        self._finish(
                            job,
                            TaskStatus.CANCELLED,
                            error="cancelled; the thread's result was discarded",
                        )
                        return
                    self._finish(job, _SUCCESS)
                    return
        finally:
            if self._slots is not None:
                self._slots.release()
            if limited:
                lane.leave()
            else:
                lane.running -= 1
            if record.status in _FINAL:
                # Job -> asyncio task -> its context -> job: break the cycle so the
                # task's objects go at once, not at the next garbage collection.
                job.handle = None

    def _failed_attempt(self, job: _Job, exc: Exception) -> float | None:
        """Record a failed attempt; the seconds to wait before the next one, or None
        when there is none (the task is then recorded failed)."""
        record, config = job.record, job.config
        if isinstance(exc, asyncio.TimeoutError) and config.timeout is not None:
            message = f"timed out after {config.timeout:g}s"
        else:
            message = f"{type(exc).__name__}: {_text_of(exc)}"[:_MAX_ERROR]
        attempt = job.attempt
        if attempt < config.retries and isinstance(exc, config.retry_on) and not self._closing:
            ended = time.time()
            if attempt:
                record.attempts[-1][2:] = [ended, message]  # type: ignore[index]
            else:
                record.attempts = [[0, record.started, ended, message]]
            wait = config.delay_for(attempt + 1)
            self._log(
                record,
                "warning",
                f"attempt {attempt} failed: {message}",
                {"retry_in": round(wait, 3)},
            )
            job.attempt += 1
            return wait
        self._finish(job, TaskStatus.FAILED, error=message, stacktrace=_capped_traceback(exc))
        return None

    def _call(self, job: _Job) -> Any:
        func, record = job.func, job.record
        if job.is_async:
            return func(*record.args, **record.kwargs)
        assert self._pool is not None and self._loop is not None
        # The task's context (where _current_task is set), copied for each attempt: a
        # timed-out attempt's thread may still be running in the previous copy.
        context = contextvars.copy_context()

        def run() -> Any:
            result = context.run(func, *record.args, **record.kwargs)
            if inspect.isawaitable(result):  # a sync function that returned a coroutine
                return asyncio.run_coroutine_threadsafe(_await(result), self._loop).result()
            return result

        return self._pool.submit(self._loop, run)

    def _stopped(self, job: _Job) -> None:
        """A task's coroutine was cancelled: by the user, by shutdown, or by the loop."""
        record = job.record
        if record.status in _FINAL:
            return  # cancel() already recorded it
        if job.stop == "cancel":
            self._finish(job, TaskStatus.CANCELLED, error="cancelled")
        elif record.status is TaskStatus.PENDING:
            job.handle = None  # never started: shutdown() decides whether it is kept
        elif job.config.requeue_on_interrupt and self._db is not None:
            record.requeue = True
            self._store.move(record, TaskStatus.PENDING)
            self._event(record, "warning", "interrupted by shutdown; will run again after restart")
            self._jobs.pop(record.task_id, None)
        else:
            self._finish(job, TaskStatus.INTERRUPTED, error="interrupted by shutdown")

    def _finish(
        self,
        job: _Job,
        status: TaskStatus,
        *,
        error: str | None = None,
        stacktrace: str | None = None,
    ) -> None:
        record = job.record
        record.ended = time.time()
        record.error = error
        record.stacktrace = stacktrace
        record.requeue = False
        record.cancel_requested = False
        record.progress = None
        if record.attempts and record.attempts[-1][2] is None:  # close the open attempt
            record.attempts[-1][2:] = [record.ended, error]
        if job.timer is not None:  # a delayed run cancelled before its time
            job.timer.cancel()
            job.timer = None
        lane = self._lanes[job.config.queue]
        if job.queued:  # ended before it started (cancelled, interrupted)
            job.queued = False
            lane.started()
        lane.finished(record.ended)
        self._jobs.pop(record.task_id, None)
        self._store.move(record, status)
        if self._logfile is not None:
            self._event(record, "info" if status is _SUCCESS else "error", status.value, error)
        if not record.by_name and status is not _SUCCESS:
            self._store.callables[record.task_id] = job.func  # for an exact retry
        following = job.next
        if following is not None:  # the request's next task: its turn now
            job.next = None
            self._release(following)

    def _progress(self, job: _Job, fraction: float, message: str | None) -> None:
        """``task_progress``: set the value now; tell listeners on the loop, throttled."""
        job.record.progress = (fraction, message)
        if job.progress_asked or self._loop is None:
            return  # the update already asked for carries the latest value
        job.progress_asked = True
        if threading.get_ident() != self._loop_thread:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self._loop.call_soon_threadsafe(self._progress_told, job)
        else:
            self._progress_told(job)

    def _progress_told(self, job: _Job) -> None:
        wait = job.progress_at + _PROGRESS_EVERY - time.monotonic()
        if wait > 0:
            assert self._loop is not None
            self._loop.call_later(wait, self._progress_told, job)
            return
        job.progress_asked = False
        job.progress_at = time.monotonic()
        if job.record.status is _RUNNING:
            self._store.notify(job.record)

    # -- logging ----------------------------------------------------------------

    def _log(self, record: TaskRecord, level: str, message: str, extra: dict[str, Any]) -> None:
        stamp = datetime.now(_UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        text = _clean(message + "".join(f" {k}={_log_value(v)}" for k, v in extra.items()))
        logs = record.logs
        if logs is None:
            logs = record.logs = []
        logs.append(f"{stamp} {level.upper()} {text}")
        if len(logs) > _MAX_LOG_LINES:
            del logs[: len(logs) - _MAX_LOG_LINES]
        if self._logfile is not None:
            self._logfile.write(level, record, message, extra)
        if self._loop is not None and threading.get_ident() != self._loop_thread:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._store.logged, record)
        else:
            self._store.logged(record)

    def _event(
        self, record: TaskRecord, level: str, message: str, error: str | None = None
    ) -> None:
        # A lifecycle line for log_file. The calls every task makes test _logfile
        # first: without a log file they cost nothing.
        if self._logfile is not None:
            self._logfile.write(level, record, message, {"error": error} if error else {})

    # -- control ---------------------------------------------------------------

    def get(self, task_id: str) -> TaskRecord | None:
        """The record of a live or recent task, from memory; None if not there.

        A finished task's record is a copy made for this call: it no longer changes.
        """
        return self._own(self._store.get(task_id))

    def _own(self, record: TaskRecord | None) -> TaskRecord | None:
        """``record``, which memory holds: this instance owns it."""
        if record is not None and record.instance is None:
            record.instance = self._owner
        return record

    async def fetch(self, task_id: str) -> TaskRecord | None:
        """The record of any known task: memory first, then the database."""
        record = self._own(self._store.get(task_id, unwritten=True))
        if record is None and self._db is not None and self._db.ready:
            record = await self._db.get(_clean(task_id))
        return record

    def cancel(self, task_id: str) -> TaskRecord:
        """Cancel a scheduled, pending or running task; returns its record (now ``cancelled``).

        A scheduled or pending task never starts. A running async task is cancelled at its
        next ``await``. A running sync task is marked cancelled and its result
        ignored, but its thread runs to the end: Python cannot stop a thread.
        Raises ``TaskNotFound`` or ``TaskStateError``.
        """
        record = self._store.get(task_id)
        job = self._jobs.get(task_id)
        if record is None:
            raise TaskNotFound(f"no live task with id {task_id!r}")
        if record.status not in _LIVE or job is None:
            raise TaskStateError(
                "only scheduled, pending or running tasks can be cancelled; "
                f"{task_id} is {record.status.value}"
            )
        job.stop = "cancel"
        if record.status is _RUNNING and not job.is_async:
            # Python cannot stop a thread: say what is true until it returns, then record
            # the task cancelled and its result discarded (see _run).
            record.cancel_requested = True
            self._log(
                record, "warning", "cancel requested; the thread finishes its current call", {}
            )
            return record
        self._finish(job, TaskStatus.CANCELLED, error="cancelled")
        if job.handle is not None and not job.handle.done():
            job.handle.cancel()
        return record

    async def retry(self, task_id: str) -> str:
        """Run a failed, cancelled or interrupted task again as a new task; returns its id.

        The new record's ``retry_of`` names the original, and the original's
        ``retried_as`` the new one. While that retry is still pending or running,
        retrying the original again returns its id instead of starting another.

        It runs exactly what ran: the original callable while this process still has
        it; otherwise (after a restart) only the registered function of that name, and
        only when that is what the task was. Raises ``TaskNotFound``, or
        ``TaskStateError`` when the task is not in a final, unsuccessful state or its
        callable or arguments cannot be rebuilt exactly.
        """
        record = await self.fetch(task_id)
        if record is None:
            raise TaskNotFound(f"no task with id {task_id!r}")
        if record.status not in (TaskStatus.FAILED, TaskStatus.INTERRUPTED, TaskStatus.CANCELLED):
            raise TaskStateError(
                f"only failed, interrupted or cancelled tasks can be retried; {task_id} is "
                f"{record.status.value}"
            )
        # Checked again after the await above, synchronously up to the new task's creation:
        # concurrent replays of one task make one retry.
        previous = self._retried.get(task_id) or record.retried_as
        if previous is not None:
            existing = self._store.get(previous, unwritten=True)
            if existing is not None and existing.status in _LIVE:
                return previous
        func = self._callable_for(record)
        if record.args is _UNSTORED:
            raise TaskStateError(
                f"the arguments of {task_id} were not JSON, so they were not stored and the "
                "task cannot be run again"
            )
        job, new_id = self._create(
            func,
            record.args,
            dict(record.kwargs),
            None,
            record.tags,
            held=False,
            retry_of=record.task_id,
        )
        assert job is not None
        self._mark_retried(record, new_id)
        self._release(job)
        return new_id

    def _callable_for(self, record: TaskRecord) -> Callable[..., Any]:
        """What ran as ``record``, exactly, or ``TaskStateError`` saying why it cannot be had."""
        kept = self._store.callables.get(record.task_id)
        if kept is not None:
            return kept  # type: ignore[no-any-return]
        known = self._registry.get(record.func_name)
        if known is None:
            raise TaskStateError(
                f"function {record.func_name!r} is not registered with @task_manager.task() in "
                "this process, so it cannot be found again"
            )
        if not record.by_name:
            raise TaskStateError(
                f"{record.task_id} ran a callable that its name cannot rebuild (a partial, a "
                "bound method, a lambda or an unregistered function), and this process no "
                f"longer holds it: retrying would run the registered {record.func_name!r} "
                "with other arguments"
            )
        return known[0]

    def _mark_retried(self, record: TaskRecord, new_id: str) -> None:
        """Record that ``record`` was retried as ``new_id``, in memory and (by the next
        write) in the database."""
        task_id = record.task_id
        retried = self._retried
        retried[task_id] = new_id
        if len(retried) > 10_000:
            del retried[next(iter(retried))]
        record.retried_as = new_id
        store = self._store
        if task_id in store.records:
            store.keep(task_id, _freeze(record))
            store.notify(record)
        elif store.persistent:
            store.dirty[task_id] = _freeze(record)

    # -- queries ---------------------------------------------------------------

    async def query(
        self,
        *,
        status: str | TaskStatus | Iterable[str | TaskStatus] | None = None,
        func_name: str | None = None,
        q: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
        sort: str = "-created_at",
    ) -> tuple[list[TaskRecord], int]:
        """One page of tasks, newest first by default, and how many match in all.

        ``status`` takes one status or several; ``q`` matches, ignoring case, the
        start of a task id or part of the function name, the error or a tag value,
        among the newest 10,000 tasks within since/until (a search has no index);
        ``since``/``until`` bound ``created_at``. With ``snapshot_db`` the query runs
        in the database over the whole history; without it, over the records in memory.
        """
        return await self._page(status, func_name, q, since, until, limit, offset, sort)

    async def _page(
        self,
        status: str | TaskStatus | Iterable[str | TaskStatus] | None,
        func_name: str | None,
        q: str | None,
        since: datetime | None,
        until: datetime | None,
        limit: int,
        offset: int,
        sort: str,
        *,
        brief: bool = False,
    ) -> tuple[list[Any], int]:
        """``query``; ``brief``: the page as ``to_dict(brief=True)`` dicts (the list endpoint)."""
        statuses = _statuses(status)
        q = _clean(q) if q else q
        func_name = _clean(func_name) if func_name else func_name
        _check_number("limit", limit, minimum=1, integer=True)
        _check_number("offset", offset, integer=True)
        descending = sort.startswith("-")
        key = sort.lstrip("-")
        if key not in _SORTS:
            raise ValueError(f"sort must be one of {sorted(_SORTS)} (prefix - for descending)")
        # Bounds widen by a microsecond: records expose created_at at microsecond
        # precision, and a record's own created_at must match it.
        lo = _timestamp("since", since)
        hi = _timestamp("until", until)
        lo = lo - 1e-6 if lo is not None else None
        hi = hi + 1e-6 if hi is not None else None
        if self._db is not None and self._db.ready:
            await self.flush()
            rows, total = await self._db.query(
                statuses, func_name, q, lo, hi, key, descending, limit, offset, brief=brief
            )
            if brief and self._jobs:
                # A task running here shows its progress, which only memory holds.
                jobs = self._jobs
                rows = [
                    jobs[row["task_id"]].record.to_dict(brief=True)
                    if row["status"] == "running"
                    and row["task_id"] in jobs
                    and jobs[row["task_id"]].record.progress is not None
                    else row
                    for row in rows
                ]
            return rows, total
        page: list[Any] = []
        entries, total = self._store.page(
            statuses, func_name, q, lo, hi, key, descending, limit, offset
        )
        for entry in entries:
            record = self._own(entry if type(entry) is TaskRecord else _thaw(entry))
            page.append(record.to_dict(brief=True) if brief else record)  # type: ignore[union-attr]
        return page, total

    def metrics(self) -> dict[str, Any]:
        """Counts per status, success rate, durations, per-function figures, per-minute series.

        Built from counters kept as tasks change (and rebuilt from the database at
        startup and on ``refresh()``), never by scanning every record. ``queues``
        gives each queue's limits, its waiting and running tasks and how many finished
        (in this process).
        """
        return {
            **self._store.metrics(),
            "queues": {name: lane.stats() for name, lane in self._lanes.items()},
        }

    async def refresh(self) -> None:
        """Write pending changes and rebuild counters from the database.

        Picks up tasks that other processes sharing ``snapshot_db`` finished.
        """
        if self._db is None or not self._db.ready:
            return
        await self.flush()
        assert self._keeper is not None
        async with self._keeper.lock:
            await self._db.load_stats(self._store)
        self._last_refresh = time.monotonic()

    async def prune(self, *, older_than: timedelta) -> int:
        """Delete finished records that ended before ``now - older_than``; returns how many.

        Pending and running tasks are never touched.
        """
        if not isinstance(older_than, timedelta):
            raise TypeError(f"older_than must be a datetime.timedelta, got {older_than!r}")
        if older_than < timedelta(0):
            raise ValueError(f"older_than must not be negative, got {older_than!r}")
        try:
            cutoff = (datetime.now(_UTC) - older_than).timestamp()
        except OverflowError:
            cutoff = float("-inf")
        store = self._store
        gone = [
            f[_F_ID]
            for f in store.records.values()
            if type(f) is tuple and (ended := _times(f)[2]) is not None and ended < cutoff
        ]
        for task_id in gone:
            store.forget(task_id)
            store.dirty.pop(task_id, None)
        if gone:
            ids = set(gone)
            store.finished = deque(i for i in store.finished if i not in ids)
        deleted = len(gone)
        if self._db is not None and self._db.ready:
            await self.flush()
            assert self._keeper is not None
            async with self._keeper.lock:
                deleted = await self._db.delete_finished_before(cutoff)
                await self._db.load_stats(store)
        if deleted:
            logger.info("pruned %d finished task records older than %s", deleted, older_than)
        return deleted

    # -- audit trail -------------------------------------------------------------

    async def audit(
        self,
        actor: str,
        action: str,
        task_id: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Record who did what (kept in SQLite with ``snapshot_db``, else the last 1,000)."""
        entry = {
            "ts": time.time(),
            "actor": _text_of(actor),
            "action": _text_of(action),
            "task_id": _text_of(task_id) if task_id is not None else None,
            "detail": detail or {},
        }
        self._audit.appendleft(entry)
        if self._keeper is not None:
            async with self._keeper.lock:
                await self._keeper.db.add_audit(entry)

    async def audit_log(self, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        """Audit entries, newest first, each ``{timestamp, actor, action, task_id, detail}``."""
        if self._db is not None and self._db.ready:
            entries = await self._db.audit(limit, offset)
        else:
            entries = list(self._audit)[offset : offset + limit]
        return [
            {
                "timestamp": _iso(e["ts"]),
                "actor": e["actor"],
                "action": e["action"],
                "task_id": e["task_id"],
                "detail": e["detail"],
            }
            for e in entries
        ]

    async def _revoke(self, session_id: str, until: float) -> None:
        if self._keeper is not None:
            async with self._keeper.lock:
                await self._keeper.db.revoke(session_id, until)

    async def _is_revoked(self, session_id: str) -> bool:
        if self._db is None or not self._db.ready:
            return False
        return await self._db.is_revoked(session_id)

    # -- persistence -------------------------------------------------------------

    async def flush(self) -> int:
        """Write every changed record to ``snapshot_db`` now; returns how many rows."""
        return await self._keeper.flush() if self._keeper is not None else 0

    async def _make_durable(self, records: list[TaskRecord]) -> None:
        if self._keeper is not None:
            await self._keeper.make_durable(records)

    async def _maintain(self) -> None:
        """Background loop: batched writes, heartbeat, claims, retention, other
        processes' changes."""
        last_claim = last_prune = time.monotonic()
        keeper = self._keeper
        while True:
            await asyncio.sleep(self.snapshot_interval)
            try:
                if keeper is not None:
                    await keeper.turn()
                    if keeper.evicted:
                        keeper.evicted = False
                        self._yield_claimed()
                    # Other processes' changes: heard of (PostgreSQL), or looked for every
                    # poll interval, so /metrics tells the truth to a scraper alone.
                    heard = keeper.elsewhere
                    if heard or time.monotonic() - self._last_refresh >= self._poll_interval:
                        keeper.elsewhere = False
                        before = _counts(self.metrics())
                        await self.refresh()
                        if heard or _counts(self.metrics()) != before:
                            self._store.changed_elsewhere()  # open pages reload
                if self._schedules:
                    await self._fire_schedules()
                now = time.monotonic()
                if keeper is not None and now - last_claim >= 5.0:
                    # Dead processes' unfinished tasks, delayed runs among them.
                    last_claim = now
                    await self._claim()
                if self.retention_days is not None and now - last_prune >= 6 * 3600:
                    last_prune = now
                    await self.prune(older_than=timedelta(days=self.retention_days))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if keeper is None:
                    logger.exception("taskflow maintenance step failed; will try again")
                else:
                    keeper.failed(exc)

    def _yield_claimed(self) -> None:
        """This process stalled past heartbeat_timeout and another claimed its unfinished
        tasks: it must not start the pending ones too (their rows are the claimant's now,
        and its own writes of them are ignored). Running ones cannot be stopped."""
        pending = [j for j in self._jobs.values() if j.record.status is _PENDING]
        logger.error(
            "taskflow: this process was declared dead by the others sharing %s (no heartbeat "
            "for %gs) and its unfinished tasks were claimed; %d pending task(s) will not "
            "start here",
            self._db.target if self._db is not None else "the database",
            self.heartbeat_timeout,
            len(pending),
        )
        for job in pending:
            job.next = None  # the claimant runs what followed
            self._finish(
                job,
                TaskStatus.INTERRUPTED,
                error="claimed by another process while this one stalled",
            )

    async def _claim(self) -> None:
        """Adopt unfinished tasks of dead processes: run them again or mark them interrupted.

        With ``requeue_pending`` only tasks of functions registered here are claimed
        (another process sharing the file may be the one that can run them);
        without it every orphan is claimed, to be marked interrupted.
        """
        assert self._db is not None and self._keeper is not None
        names = set(self._registry)
        if not self.requeue_pending:
            names |= set(await self._db.unfinished_names())
        async with self._keeper.lock:
            records = await self._db.claim_orphans(names)
        for record in records:
            func, config = self._registry.get(record.func_name) or (
                _noop,
                TaskConfig(record.func_name),
            )
            was_running = record.status is TaskStatus.RUNNING
            record.durable = True
            self._store.add(record, counted=True)  # the file counted it
            rerun = (
                record.requeue
                and record.by_name
                and self.requeue_pending
                and (not was_running or config.requeue_on_interrupt)
            )
            job = _Job(self, record, func, config, _is_async(func))
            self._jobs[record.task_id] = job
            if record.status is _SCHEDULED and record.by_name and func is not _noop:
                # A delayed run keeps its time: due ones run now, once.
                record.instance = None
                self._log(record, "info", "delayed run taken over from a stopped process", {})
                self._arm(job)
            elif rerun:
                if was_running:
                    self._store.move(record, TaskStatus.PENDING)
                record.started = record.ended = None
                record.error = record.stacktrace = None
                record.retries_used = 0
                self._log(record, "warning", "requeued after the process that owned it stopped", {})
                self._release(job)
            else:
                self._finish(
                    job,
                    TaskStatus.INTERRUPTED,
                    error="the process running this task stopped before it finished",
                )
        if records:
            logger.info("taskflow claimed %d unfinished task(s) of stopped processes", len(records))

    # -- lifecycle ---------------------------------------------------------------

    async def startup(self) -> None:
        """Open the database, requeue, prune and start the background loop.

        Called for you by ``TaskAdmin`` and ``init_app``. A second call while
        running logs a warning and does nothing.
        """
        if self._started:
            logger.warning("TaskManager.startup() called while already running; ignored")
            return
        self._started = True
        self._closing = False
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._pool = _ThreadPool(self.max_sync_threads)
        if self.max_concurrent_tasks:
            self._slots = asyncio.Semaphore(self.max_concurrent_tasks)
        try:
            if self.log_file:
                self._logfile = _LogFile(self.log_file)
            if self.snapshot_db:
                self._db = _storage_for(self.snapshot_db, self._owner)
                self._db.stale_after = self.heartbeat_timeout
                await self._db.open()
                self._keeper = _Keeper(self._store, self._db)
                await self._keeper.flush(heartbeat=True)
                async with self._keeper.lock:
                    await self._db.load_stats(self._store)
                await self._claim()
            if self.retention_days is not None:
                await self.prune(older_than=timedelta(days=self.retention_days))
        except BaseException:
            await self._close_resources()
            self._started = False
            self._loop = None
            raise
        if self._schedules:
            await self._fire_schedules(starting=True)
        self._maintenance = asyncio.create_task(self._maintain(), name="taskflow-maintenance")
        backlog, self._backlog = self._backlog, []
        for job in backlog:
            self._release(job)

    async def shutdown(self) -> None:
        """Stop: wait up to ``shutdown_timeout`` for running tasks, then interrupt the rest.

        Pending tasks are saved to run after the next start when
        ``requeue_pending=True`` (or ``persist=True``), else marked interrupted.
        Everything is written to the database before this returns.
        """
        if not self._started or self._closing:
            return
        self._closing = True
        try:
            running = [
                j.handle
                for j in list(self._jobs.values())
                if j.handle is not None
                and not j.handle.done()
                and j.record.status is TaskStatus.RUNNING
            ]
            if running:
                await asyncio.wait(running, timeout=self.shutdown_timeout)
            stopping = []
            for job in list(self._jobs.values()):
                if job.handle is not None and not job.handle.done():
                    job.stop = "shutdown"
                    job.handle.cancel()
                    stopping.append(job.handle)
            if stopping:
                await asyncio.wait(stopping, timeout=1.0)
            for job in list(self._jobs.values()):
                record = job.record
                if record.status is TaskStatus.RUNNING:
                    self._stopped(job)  # its coroutine did not answer the cancellation
                elif record.status is _PENDING or record.status is _SCHEDULED:
                    # A delayed run is kept whenever there is a database: that is its promise.
                    keep = self._db is not None and (
                        self.requeue_pending or record.persist or record.status is _SCHEDULED
                    )
                    if job.timer is not None:
                        job.timer.cancel()
                        job.timer = None
                    # Kept to run after a restart only if its name can rebuild it there.
                    rebuilt = record.by_name and record.func_name in self._registry
                    stored = _encode_args(record.args, record.kwargs) is not None
                    if keep and rebuilt and stored:
                        record.requeue = True
                        self._store.notify(record)
                        self._jobs.pop(record.task_id, None)
                    else:
                        why = "not started before shutdown"
                        if keep and not stored:
                            why += "; its arguments cannot be stored as JSON to run it later"
                        elif keep:
                            why += (
                                "; it is not a function registered with @task_manager.task(), "
                                "so a restart could not find it to run it later"
                            )
                        self._finish(job, TaskStatus.INTERRUPTED, error=why)
            self._backlog.clear()
            self._released.clear()
            if self._maintenance is not None:
                self._maintenance.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._maintenance
                self._maintenance = None
            if self._db is not None and self._db.ready:
                await self.flush()
                await self._db.leave()
        finally:
            await self._close_resources()
            self._started = False
            self._loop = None
            self._jobs.clear()

    async def _close_resources(self) -> None:
        self._keeper = None
        if self._db is not None:
            await self._db.close()
            self._db = None
        if self._logfile is not None:
            self._logfile.close()
            self._logfile = None
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        self._slots = None

    def init_app(self, app: FastAPI) -> None:
        """Run ``startup()``/``shutdown()`` with the app's lifespan, inside the app's own.

        Wraps ``app.router.lifespan_context``, so it also works for apps built
        with ``FastAPI(lifespan=...)``: the manager starts after the app's
        lifespan has started and stops before it ends. Calling it again for the
        same app does nothing.
        """
        if not isinstance(app, FastAPI):
            raise TypeError(f"init_app() needs a FastAPI app, got {app!r}")
        if id(app) in self._lifespan_apps:
            return
        self._lifespan_apps.add(id(app))
        inner = app.router.lifespan_context
        manager = self

        @asynccontextmanager
        async def lifespan(app_: Any) -> Any:
            async with inner(app_) as state:
                _refuse_unbound_annotations(app)
                started_here = not manager._started  # a manual lifespan may have started it
                if started_here:
                    await manager.startup()
                try:
                    yield state
                finally:
                    if started_here:
                        await manager.shutdown()

        app.router.lifespan_context = lifespan

    def install(self, app: FastAPI) -> None:
        """Give this app's plain ``BackgroundTasks`` parameters a ``ManagedBackgroundTasks``.

        Affects only requests to ``app``: other apps in the process keep FastAPI's
        own class. Call it before the app starts serving.
        """
        if not isinstance(app, FastAPI):
            raise TypeError(f"install() needs a FastAPI app, got {app!r}")
        if getattr(app.state, "taskflow_installed", None) is self:
            return
        # FastAPI builds the request's BackgroundTasks through this module-level name;
        # our stand-in returns FastAPI's own class unless the request came through an
        # installed app's middleware.
        _fastapi_dependency_utils.BackgroundTasks = _plain_background_tasks  # type: ignore[misc]
        app.add_middleware(_InstallMiddleware, manager=self)
        app.state.taskflow_installed = self


def _refuse_unbound_annotations(app: FastAPI) -> None:
    """Fail at startup, not silently per request, when ``ManagedBackgroundTasks`` cannot work.

    Without ``install(app)`` FastAPI hands such a parameter its own ``BackgroundTasks``,
    whose ``add_task`` returns None and tracks nothing.
    """
    if getattr(app.state, "taskflow_installed", None) is not None:
        return
    found = []
    for route in app.routes:
        pending = [getattr(route, "dependant", None)]
        while pending:
            dependant = pending.pop()
            if dependant is None:
                continue
            pending.extend(dependant.dependencies)
            name = dependant.background_tasks_param_name
            if not name or dependant.call is None:
                continue
            try:
                annotation = typing.get_type_hints(dependant.call).get(name)
            except Exception:  # unresolvable hints: FastAPI would have failed already
                annotation = None
            if isinstance(annotation, type) and issubclass(annotation, ManagedBackgroundTasks):
                found.append(f"{getattr(route, 'path', '?')} ({name})")
    if found:
        raise RuntimeError(
            "these routes declare a ManagedBackgroundTasks parameter, which needs "
            "task_manager.install(app) or TaskAdmin(..., auto_install=True): "
            + ", ".join(found)
            + "; or use Depends(task_manager.get_tasks)"
        )


# A UUID's variant digit keeps the low two bits of a random hex digit: 8, 9, a or b.
_UUID_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def _new_id() -> str:
    """A random version-4 UUID as text, like ``str(uuid.uuid4())`` at a third of the cost."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_UUID_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _is_async(func: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
        getattr(func, "__call__", None)  # noqa: B004 - async callable objects
    )


def _capped_traceback(exc: BaseException) -> str:
    """The formatted traceback, at most _MAX_TRACEBACK characters: its head and its tail."""
    text = _clean("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    if len(text) <= _MAX_TRACEBACK:
        return text
    half = _MAX_TRACEBACK // 2
    return f"{text[:half]}\n... [{len(text) - 2 * half} characters cut] ...\n{text[-half:]}"


def _noop() -> None:
    return None


async def _await(awaitable: Any) -> Any:
    return await awaitable


def _qualified(func: Callable[..., Any]) -> str:
    return f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', _name_of(func))}"


def _statuses(status: Any) -> list[str]:
    if status is None:
        return []
    values = [status] if isinstance(status, (str, TaskStatus)) else list(status)
    out = []
    for value in values:
        text = value.value if isinstance(value, TaskStatus) else str(value)
        if text not in _STATUS_VALUES:
            raise ValueError(f"status must be one of {list(_STATUS_VALUES)}, got {value!r}")
        out.append(text)
    return out


def _timestamp(name: str, value: datetime | None) -> float | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, got {value!r}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=_UTC)  # naive datetimes are read as UTC
    return value.timestamp()


# =============================================================================
# Auth: credential backends, signed sessions, login throttling, CSRF.
# =============================================================================


class TaskAuthBackend:
    """Base class for custom dashboard authentication.

    Subclass it and implement ``authenticate_user(username, password) -> bool``,
    as a plain method (run in a worker thread, so it may block) or as
    ``async def`` (awaited on the event loop).

    To end a user's sessions when they are removed or their credentials change,
    also implement ``session_fingerprint(username)``.
    """

    def authenticate_user(self, username: str, password: str) -> bool:
        """Return True when ``username`` may log in with ``password``."""
        raise NotImplementedError("subclass TaskAuthBackend and implement authenticate_user()")

    def session_fingerprint(self, username: str) -> str | None:
        """A string that changes when ``username``'s credentials change; None once the
        user no longer exists.

        A session is signed with the fingerprint its user had at login and is
        refused once it differs. It is asked on every authenticated request, so keep
        it cheap (``async def`` is awaited, a plain method is called on the event
        loop). The default, ``""`` for everyone, binds nothing: sessions then last
        until logout or ``token_expiry``.
        """
        return ""


class _StaticAuth(TaskAuthBackend):
    """Users given in code: passwords are kept only as keyed digests, compared in constant time."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._key = os.urandom(32)
        self._users = {user: self._digest(password) for user, password in pairs}
        self._missing = self._digest(uuid.uuid4().hex)
        # The same on every process and restart given the same entry; it only ever
        # leaves memory HMAC-ed with the secret_key (see _Admin.bind).
        self._fingerprints = {
            user: hashlib.sha256(
                f"{user}\x00{password}".encode("utf-8", "surrogatepass")
            ).hexdigest()
            for user, password in pairs
        }

    def session_fingerprint(self, username: str) -> str | None:
        return self._fingerprints.get(username)

    def _digest(self, password: str) -> bytes:
        return hmac.new(self._key, password.encode("utf-8", "surrogatepass"), "sha256").digest()

    def authenticate_user(self, username: str, password: str) -> bool:
        expected = self._users.get(username)
        # Unknown users cost the same comparison, so timing does not reveal who exists.
        same = hmac.compare_digest(self._digest(password), expected or self._missing)
        return same and expected is not None


def _auth_backend(auth: Any) -> TaskAuthBackend | None:
    if auth is None or isinstance(auth, TaskAuthBackend):
        return auth
    pairs = [auth] if isinstance(auth, tuple) else auth
    if (
        isinstance(pairs, list)
        and pairs
        and all(
            isinstance(p, tuple) and len(p) == 2 and all(isinstance(x, str) and x for x in p)
            for p in pairs
        )
    ):
        return _StaticAuth(pairs)
    raise TypeError(
        "auth must be None, a (username, password) tuple of non-empty strings, a list of such "
        f"tuples, or a TaskAuthBackend instance; got {type(auth).__name__}"
    )


class _Throttle:
    """Failed logins per client address and per (address, username), in ``window`` seconds.

    Keyed by address so that nobody elsewhere can lock a user out: at most
    ``pair_limit`` failures for one name from one address, ``client_limit`` for
    all names from one address. An attempt is counted *before* its password is
    checked and released when it succeeds, so a burst of concurrent guesses cannot
    all be checked before the first failure counts. Keys are fixed-size digests and
    at most ``max_keys`` are kept (oldest evicted first), so memory stays bounded.
    With ``snapshot_db`` the counts live in the database and hold on every host.
    """

    def __init__(
        self,
        manager: TaskManager,
        pair_limit: int = 5,
        client_limit: int = 20,
        window: float = 15 * 60,
        max_keys: int = 10_000,
    ) -> None:
        self.manager = manager
        self.pair_limit, self.client_limit = pair_limit, client_limit
        self.window = window
        self.max_keys = max_keys
        self.attempts: dict[str, deque[float]] = {}

    def keys(self, client: str, username: str) -> list[tuple[str, int]]:
        def digest(*parts: str) -> str:
            text = "\x00".join(parts).encode("utf-8", "surrogatepass")
            return hashlib.blake2b(text, digest_size=16).hexdigest()

        return [
            ("c" + digest(client), self.client_limit),
            ("p" + digest(client, username.casefold()), self.pair_limit),
        ]

    async def reserve(self, keys: list[tuple[str, int]]) -> tuple[Any, int]:
        """Count an attempt now: (a token for ``release``, 0), or (None, seconds to wait)."""
        db = self.manager._db
        if db is not None and db.ready:
            return await db.reserve_login(keys, self.window)
        now = time.monotonic()
        wait = 0.0
        for key, limit in keys:
            stamps = self._recent(key, now)
            if len(stamps) >= limit:
                wait = max(wait, stamps[-limit] + self.window - now)
        if wait:
            return None, max(1, math.ceil(wait))
        for key, limit in keys:
            stamps = self.attempts.pop(key, None) or deque(maxlen=limit)
            stamps.append(now)
            self.attempts[key] = stamps  # now the newest key: evicted last
        while len(self.attempts) > self.max_keys:
            del self.attempts[next(iter(self.attempts))]
        return (keys, now), 0

    async def release(self, token: Any) -> None:
        """The attempt succeeded: it does not count as a failure."""
        if isinstance(token, list):  # ids of the attempt's rows in the database
            db = self.manager._db
            if db is not None and db.ready:
                await db.release_login(token)
            return
        keys, stamp = token
        for key, _ in keys:
            stamps = self.attempts.get(key)
            if stamps is not None and stamp in stamps:
                stamps.remove(stamp)

    def _recent(self, key: str, now: float) -> deque[float]:
        stamps = self.attempts.get(key)
        if stamps is None:
            return deque()
        while stamps and stamps[0] <= now - self.window:
            stamps.popleft()
        if not stamps:
            del self.attempts[key]
        return stamps


_SESSION_COOKIE = "taskflow_token"  # the peer's name: proxies and tests that name it keep working


def _same_site(request: Request, allowed_origins: frozenset[str] = frozenset()) -> bool:
    """False when the browser tells us the request comes from another site.

    Modern browsers say so in ``Sec-Fetch-Site``, which no page can forge and no
    proxy rewrites: that decides when present. Otherwise ``Origin`` (or ``Referer``)
    must name this site: the ``Host`` the app sees, the ``X-Forwarded-Host`` of a
    proxy uvicorn trusts (``--forwarded-allow-ips``), or one of ``allowed_origins``.
    A request with none of these headers is not from a browser: allowed.
    """
    headers = request.headers
    source = headers.get("origin") or headers.get("referer")
    fetch_site = headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site in ("same-origin", "none"):
        return True
    if fetch_site is None and not source:
        return source is None
    if not source or source == "null":
        return False
    try:
        parsed = urllib.parse.urlsplit(source)
    except ValueError:  # e.g. "http://[": unparseable, so not provably ours
        return False
    if parsed.scheme not in ("http", "https"):
        return False
    if f"{parsed.scheme}://{parsed.netloc}".lower() in allowed_origins:
        return True
    if fetch_site is not None:
        return False  # cross-site or same-site (another subdomain): only allowed_origins
    netloc = parsed.netloc.lower()
    return netloc == headers.get("host", "").lower() or (
        _proxy_trusted(request) and netloc == headers.get("x-forwarded-host", "").lower()
    )


def _proxy_trusted(request: Request) -> bool:
    """Whether uvicorn applied this request's X-Forwarded-For (so it trusts the proxy):
    it then reports the forwarded client as the request's client."""
    forwarded = request.headers.get("x-forwarded-for")
    client = request.client.host if request.client else None
    return bool(forwarded and client) and client in (h.strip() for h in forwarded.split(","))


_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def _host_name(host: str) -> str:
    """The name of a Host header, without its port or IPv6 brackets, in lower case."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _allowed_hosts(hosts: Any) -> frozenset[str]:
    return _names(
        "allowed_hosts",
        hosts,
        r"\*|[A-Za-z0-9._-]+|[0-9A-Fa-f:]+",
        "bare host names or addresses (no scheme, port or path), or '*'",
    )


def _allowed_origins(origins: Any) -> frozenset[str]:
    return _names(
        "allowed_origins",
        origins,
        r"https?://[^/?#\s]+",
        "origins like 'https://tasks.example.com' (scheme, host and optional port; no path)",
    )


def _names(param: str, values: Any, pattern: str, takes: str) -> frozenset[str]:
    """A TaskAdmin list setting as a set of lower-case strings, each matching ``pattern``."""
    if values is None:
        return frozenset()
    if isinstance(values, str) or not isinstance(values, (list, tuple, set, frozenset)):
        raise TypeError(f"{param} must be a list, got {values!r}")
    for value in values:
        if not isinstance(value, str) or not re.fullmatch(pattern, value):
            raise ValueError(f"{param} takes {takes}; got {value!r}")
    return frozenset(v.lower() for v in values)


def _from_browser(request: Request) -> bool:
    headers = request.headers
    return any(h in headers for h in ("origin", "referer", "sec-fetch-site", "sec-fetch-mode"))


def _local_path(target: str | None, default: str) -> str:
    """``target`` if it is a path on this site, else ``default`` (no open redirects)."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return default
    if "\\" in target or any(ord(c) < 32 for c in target):
        return default
    parts = urllib.parse.urlsplit(target)
    if parts.scheme or parts.netloc:
        return default
    return target


# =============================================================================
# HTTP API: JSON routes under the admin path.
# =============================================================================


class TaskOut(BaseModel):
    """A task as the JSON API returns it."""

    task_id: str
    func_name: str
    status: TaskStatus
    created_at: datetime
    start_time: datetime | None = None
    end_time: datetime | None = None
    duration: float | None = None
    retries_used: int = 0
    error: str | None = None
    tags: dict[str, str] = {}
    retry_of: str | None = None
    instance: str | None = None
    retried_as: str | None = None
    logs: list[str] = []
    stacktrace: str | None = None
    attempts: list[dict[str, Any]] = []
    args: list[Any] | None = None
    kwargs: dict[str, Any] | None = None


class CancelOut(BaseModel):
    """A cancelled task (the peer's shape)."""

    task_id: str
    task: TaskOut


class RetryOut(BaseModel):
    """The new task created by a retry (the peer's shape, plus ``retry_of``)."""

    task_id: str
    retry_of: str
    task: TaskOut


class BulkRetryIn(BaseModel):
    """Body of ``POST {path}/bulk-retry``."""

    task_ids: list[str] = Field(max_length=1000)


class BulkRetryOut(BaseModel):
    """What a bulk replay did."""

    dispatched: int
    skipped: int
    results: list[dict[str, str]]


class DeletedOut(BaseModel):
    """How many history records a delete removed."""

    deleted: int


class AuditOut(BaseModel):
    """One audit entry: who did what, when."""

    timestamp: str
    actor: str
    action: str
    task_id: str | None = None
    detail: dict[str, Any] = {}


_MAX_REPLAY = 1000
_UNITS = {"min": 60, "hour": 3600, "day": 86400}


def _json(data: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_json_text(data).encode(), status_code, headers, media_type="application/json")


def _json_text(data: Any) -> str:
    """Compact JSON that always encodes as UTF-8: a task's own arguments may hold lone
    surrogates, which then go out as \\u escapes (ASCII) instead of failing the response."""
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            return json.dumps(data, separators=(",", ":"))
    return text


def _prometheus(metrics: dict[str, Any]) -> str:
    def label(value: str) -> str:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')

    lines = ["# HELP taskflow_tasks Tasks known, by status.", "# TYPE taskflow_tasks gauge"]
    lines += [f'taskflow_tasks{{status="{s}"}} {metrics[s]}' for s in _STATUS_VALUES]
    lines += [
        "# HELP taskflow_function_tasks Tasks known, by function and status.",
        "# TYPE taskflow_function_tasks gauge",
    ]
    for name, fm in metrics["functions"].items():
        lines += [
            f'taskflow_function_tasks{{func_name="{label(name)}",status="{s}"}} {fm[s]}'
            for s in _STATUS_VALUES
        ]
    lines += [
        "# HELP taskflow_task_duration_seconds Task duration quantiles (recent tasks).",
        "# TYPE taskflow_task_duration_seconds summary",
    ]
    duration = metrics["duration"]
    for quantile, key in (("0.5", "p50"), ("0.95", "p95")):
        if duration[key] is not None:
            lines.append(f'taskflow_task_duration_seconds{{quantile="{quantile}"}} {duration[key]}')
    queues = metrics.get("queues", {})
    for metric, key, kind, text in (
        ("taskflow_queue_waiting", "waiting", "gauge", "Tasks waiting to start, by queue."),
        ("taskflow_queue_running", "running", "gauge", "Tasks running, by queue."),
        ("taskflow_queue_done_total", "done", "counter", "Tasks finished, by queue."),
    ):
        lines += [f"# HELP {metric} {text}", f"# TYPE {metric} {kind}"]
        lines += [
            f'{metric}{{queue="{label(name)}"}} {stats[key]}'
            for name, stats in queues.items()
            if stats[key] is not None
        ]
    lines += [
        "# HELP taskflow_success_ratio Successful share of finished tasks.",
        "# TYPE taskflow_success_ratio gauge",
        f"taskflow_success_ratio {metrics['success_rate']}",
    ]
    return "\n".join(lines) + "\n"


# A well-typed value that means nothing answers 400 with a string detail (FastAPI's
# 422 and its list of errors are for values of the wrong type or range).
_BAD_VALUE: dict[int | str, dict[str, Any]] = {
    400: {
        "description": "A value of the right type that means nothing (e.g. since=6x)",
        "content": {
            "application/json": {
                "schema": {"type": "object", "properties": {"detail": {"type": "string"}}}
            }
        },
    }
}


def _parse_since(since: str) -> timedelta | None:
    if since == "all":
        return None
    match = re.fullmatch(r"(\d{1,5})([hd])", since)
    if not match:
        # 400, like the peer: a well-typed value that means nothing (FastAPI's 422 is for types).
        raise HTTPException(400, "since must look like 6h, 2d or all")
    amount = int(match.group(1))
    return timedelta(hours=amount) if match.group(2) == "h" else timedelta(days=amount)


class _Admin:
    """Everything TaskAdmin mounts; TaskAdmin itself only validates and wires."""

    def __init__(
        self,
        manager: TaskManager,
        path: str,
        backend: TaskAuthBackend | None,
        secret: str,
        token_expiry: int,
        poll_interval: float,
        title: str,
        display_func_args: bool,
        allowed_hosts: frozenset[str] = frozenset(),
        allowed_origins: frozenset[str] = frozenset(),
        metrics_token: str | None = None,
    ) -> None:
        self.manager = manager
        self.path = path
        self.allowed_hosts = allowed_hosts
        self.allowed_origins = allowed_origins
        self.metrics_token = metrics_token.encode() if metrics_token else None
        self.backend = backend
        self.secret = secret.encode("utf-8", "surrogatepass")
        self.sessions = URLSafeTimedSerializer(secret, salt="taskflow-session")
        self.forms = URLSafeTimedSerializer(secret, salt="taskflow-login-form")
        self.token_expiry = token_expiry
        self.poll_interval = poll_interval
        # The manager re-reads the shared database this often, dashboard open or not.
        manager._poll_interval = min(manager._poll_interval, poll_interval)
        self.title = title
        self.display_func_args = display_func_args
        self.throttle = _Throttle(manager)
        self.revoked: dict[str, float] = {}  # session id -> when its cookie would expire
        self.event_cache: dict[str, tuple[int, str]] = {}  # task id -> (change seq, JSON)
        self.metrics_cache: tuple[int, Any, str, float] | None = None
        # Change numbers (SSE ids, X-Change-Seq) count this process's changes: the page
        # compares a list's with its stream's only when both name the same source.
        self.changes_source = uuid.uuid4().hex[:12]
        self.templates = jinja2.Environment(
            loader=jinja2.DictLoader(
                {"dashboard.html": _DASHBOARD_HTML, "login.html": _LOGIN_HTML}
            ),
            autoescape=True,
        )
        self.asset_version = hashlib.sha256((_APP_JS + _APP_CSS).encode()).hexdigest()[:12]

    # -- sessions ------------------------------------------------------------

    async def session(self, request: Request) -> dict[str, Any] | None:
        """The valid session of this request, or None.

        Signature and age are checked by itsdangerous; revocation (logout) is checked
        in memory and, with ``snapshot_db``, in the database, so a logout holds in
        every worker sharing the file and across restarts.
        """
        if "taskflow.session" in request.scope:
            return request.scope["taskflow.session"]  # type: ignore[no-any-return]
        if self.backend is None:
            return None  # no login, no sessions (a cookie left from one means nothing)
        data = None
        cookie = request.cookies.get(_SESSION_COOKIE)
        if cookie:
            try:
                data = self.sessions.loads(cookie, max_age=self.token_expiry)
            except (BadSignature, SignatureExpired, ValueError):
                data = None
        if not (
            isinstance(data, dict)
            and all(isinstance(data.get(k), str) for k in ("u", "sid", "csrf"))
            and data["sid"] not in self.revoked
            and await self.bound(data)
            and not await self.manager._is_revoked(data["sid"])
        ):
            data = None
        request.scope["taskflow.session"] = data
        return data

    async def fingerprint(self, username: str) -> str | None:
        """The session binding of ``username``'s current credentials; None: no such user."""
        assert self.backend is not None
        found = self.backend.session_fingerprint(username)
        if inspect.isawaitable(found):
            found = await found
        if found is None:
            return None
        mac = hmac.new(self.secret, str(found).encode("utf-8", "surrogatepass"), "sha256")
        return mac.hexdigest()[:32]

    async def bound(self, data: dict[str, Any]) -> bool:
        """Whether session ``data`` still belongs to its user's current credentials."""
        current = await self.fingerprint(data["u"])
        return current is not None and hmac.compare_digest(current, str(data.get("f", "")))

    async def user(self, request: Request) -> str:
        """Dependency: the logged-in user (``anonymous`` without auth), or 401."""
        if self.backend is None:
            return "anonymous"
        session = await self.session(request)
        if session is None:
            raise HTTPException(401, "Unauthorized", headers={"Cache-Control": "no-store"})
        return str(session["u"])

    async def machine(self, request: Request) -> str:
        """Dependency of the routes tools read (metrics, Prometheus, health): a session,
        or ``Authorization: Bearer <metrics_token>``, or HTTP Basic with a user."""
        if self.backend is None:
            return "anonymous"
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer" and self.metrics_token is not None:
            if hmac.compare_digest(credentials.strip().encode(), self.metrics_token):
                return "metrics-token"
        elif scheme == "basic":
            try:
                decoded = base64.b64decode(credentials.strip(), validate=True).decode()
            except (ValueError, UnicodeDecodeError):
                decoded = ""
            username, sep, password = decoded.partition(":")
            client = request.client.host if request.client else "?"
            keys = self.throttle.keys(client, username)
            token, wait = await self.throttle.reserve(keys)
            if wait:
                raise HTTPException(
                    429, "Too many failed attempts", headers={"Retry-After": str(wait)}
                )
            if sep and username and password and await self.check(username, password):
                await self.throttle.release(token)
                return username
        elif not scheme:
            return await self.user(request)
        raise HTTPException(
            401,
            "Unauthorized",
            headers={"WWW-Authenticate": 'Basic realm="taskflow"', "Cache-Control": "no-store"},
        )

    async def guard_write(self, request: Request) -> str:
        """Dependency for state-changing routes: cross-site check, CSRF token, then user."""
        if not _same_site(request, self.allowed_origins):
            raise HTTPException(403, "cross-site request refused")
        if self.backend is None and not self.host_allowed(request):
            # Without a login, DNS rebinding would pass the same-site check (Host and
            # Origin both the attacker's name): only known names may change anything.
            raise HTTPException(403, "host not allowed to change tasks without auth")
        user = await self.user(request)
        if self.backend is not None and _from_browser(request):
            session = await self.session(request) or {}
            token = request.headers.get("x-csrf-token", "")
            if not hmac.compare_digest(token.encode(), str(session.get("csrf", "")).encode()):
                raise HTTPException(403, "missing or wrong CSRF token")
        return user

    def host_allowed(self, request: Request) -> bool:
        host = _host_name(request.headers.get("host", ""))
        server = request.scope.get("server")
        return (
            host in _LOOPBACK_NAMES
            or "*" in self.allowed_hosts
            or host in self.allowed_hosts
            or (server is not None and host == str(server[0]).lower())
        )

    async def csrf_for(self, request: Request) -> str:
        session = await self.session(request)
        return str(session["csrf"]) if session else ""

    def base(self, request: Request) -> str:
        return request.scope.get("root_path", "").rstrip("/") + self.path

    # -- routers -------------------------------------------------------------

    def api_router(self) -> APIRouter:
        """The JSON API, in route groups; ``/{task_id}`` routes last, so that the fixed
        paths above them win."""
        router = APIRouter(prefix=self.path, tags=["taskflow"])
        self._listing_routes(router)
        self._monitoring_routes(router)
        self._bulk_routes(router)
        self._schedule_routes(router)
        self._task_routes(router)
        return router

    def _listing_routes(self, router: APIRouter) -> None:
        """The task list and its CSV export, with the same filters."""
        read = [Depends(self.user)]
        manager = self.manager

        @router.get(
            "", response_model=list[TaskOut], dependencies=read, summary="List tasks, newest first"
        )
        async def list_tasks(
            request: Request,
            status: list[TaskStatus] | None = Query(None, description="repeatable"),
            func_name: str | None = Query(None, max_length=500),
            q: str | None = Query(
                None,
                max_length=500,
                description="task id prefix, or part of the function name, error or a tag value",
            ),
            since: datetime | None = None,
            until: datetime | None = None,
            limit: int = Query(100, ge=1, le=1000),
            offset: int = Query(0, ge=0, le=10**9),
            sort: str = Query(
                "-created_at",
                pattern=r"^-?(created_at|start_time|end_time|"
                r"duration|func_name|status)$",
            ),
        ) -> Response:
            args = self.display_func_args
            seq = manager._store.seq  # the page reflects at least every change up to this one
            page, total = await manager._page(
                status, func_name, q, since, until, limit, offset, sort, brief=not args
            )
            headers = {
                "X-Total-Count": str(total),
                "X-Change-Seq": str(seq),
                "X-Change-Source": self.changes_source,
            }
            if q:  # a search looks at the newest tasks only (within since/until)
                headers["X-Search-Window"] = str(_SEARCH_WINDOW)
            if offset + limit < total:
                # Relative (RFC 8288): right behind any proxy, port or prefix.
                url = request.url.include_query_params(offset=offset + limit, limit=limit)
                headers["Link"] = f'<{self.base(request)}?{url.query}>; rel="next"'
            if args:
                page = [r.to_dict(include_args=True, brief=True) for r in page]
            return _json(page, 200, headers)

        @router.get("/export.csv", dependencies=read, summary="Tasks matching filters, as CSV")
        async def export(
            status: list[TaskStatus] | None = Query(None),
            func_name: str | None = Query(None, max_length=500),
            q: str | None = Query(None, max_length=500),
            since: datetime | None = None,
            until: datetime | None = None,
            limit: int = Query(10_000, ge=1, le=100_000),
        ) -> Response:
            records, _ = await manager.query(
                status=status, func_name=func_name, q=q, since=since, until=until, limit=limit
            )
            out = io.StringIO()
            writer = csv.writer(out)
            writer.writerow(
                [
                    "task_id",
                    "func_name",
                    "status",
                    "created_at",
                    "start_time",
                    "end_time",
                    "duration",
                    "retries_used",
                    "error",
                ]
            )
            for r in records:
                writer.writerow(
                    [
                        r.task_id,
                        _csv_safe(r.func_name),
                        r.status.value,
                        _iso(r.created),
                        _iso(r.started),
                        _iso(r.ended),
                        r.duration,
                        r.retries_used,
                        _csv_safe(r.error or ""),
                    ]
                )
            stamp = datetime.now(_UTC).strftime("%Y%m%d-%H%M%S")
            return Response(
                out.getvalue(),
                media_type="text/csv; charset=utf-8",
                headers={"Content-Disposition": f'attachment; filename="tasks-{stamp}.csv"'},
            )

    def _monitoring_routes(self, router: APIRouter) -> None:
        """Metrics (JSON and Prometheus), health, the audit trail, registered functions."""
        read = [Depends(self.user)]
        machine = [Depends(self.machine)]  # also a metrics_token or HTTP Basic
        manager = self.manager

        @router.get("/health/live", summary="Liveness: 200 while the manager runs (no auth)")
        async def live() -> Response:
            # Status only, no task data: safe for a probe that cannot log in.
            running = manager._started and not manager._closing
            return _json({"status": "ok" if running else "stopped"}, 200 if running else 503)

        @router.get("/metrics", dependencies=machine, summary="Counts, rates and durations")
        async def metrics() -> dict[str, Any]:
            return manager.metrics()

        @router.get(
            "/metrics/prometheus",
            dependencies=machine,
            response_class=PlainTextResponse,
            summary="Metrics in the Prometheus text format",
        )
        async def prometheus() -> PlainTextResponse:
            return PlainTextResponse(
                _prometheus(manager.metrics()), media_type="text/plain; version=0.0.4"
            )

        @router.get("/health", dependencies=machine, summary="200 when healthy, 503 when not")
        async def health() -> Response:
            now = time.time()
            stuck = [
                j.record.task_id
                for j in list(manager._jobs.values())
                if j.record.status is TaskStatus.RUNNING
                and j.record.started
                and now - j.record.started > (j.config.timeout or 3600) * 2
            ]
            recent = manager.metrics()["per_minute"][-15:]
            done = sum(m["success"] + m["failed"] for m in recent)
            failed = sum(m["failed"] for m in recent)
            rate = failed / done if done else 0.0
            problems = []
            if stuck:
                problems.append(f"{len(stuck)} task(s) running far longer than expected")
            if done >= 10 and rate > 0.5:
                problems.append(f"{rate:.0%} of tasks failed in the last 15 minutes")
            if not manager._started:
                problems.append("task manager is not running")
            if manager._keeper is not None and manager._keeper.problem is not None:
                problems.append(manager._keeper.problem)
            body = {
                "status": "degraded" if problems else "ok",
                "problems": problems,
                "stuck_task_ids": stuck[:20],
                "failure_rate_15m": round(rate, 4),
                "finished_15m": done,
            }
            return _json(body, 503 if problems else 200)

        @router.get(
            "/audit",
            response_model=list[AuditOut],
            dependencies=read,
            summary="Who did what, newest first",
        )
        async def audit(
            limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0, le=10**9)
        ) -> Any:
            return await manager.audit_log(limit, offset)

        @router.get("/functions", dependencies=read, summary="Registered task functions")
        async def functions() -> list[dict[str, Any]]:
            return [
                {
                    "name": c.name,
                    "retries": c.retries,
                    "delay": c.delay,
                    "backoff": c.backoff,
                    "persist": c.persist,
                    "requeue_on_interrupt": c.requeue_on_interrupt,
                    "timeout": c.timeout,
                    "jitter": c.jitter,
                    "max_delay": c.max_delay,
                }
                for _, c in sorted(manager._registry.values(), key=lambda fc: fc[1].name)
            ]

    def _bulk_routes(self, router: APIRouter) -> None:
        """Actions over many tasks: replay chosen ones, replay failures, delete history."""
        write = Depends(self.guard_write)
        manager = self.manager

        # The body is parsed here rather than by FastAPI: its default error handler answers
        # 500 when a body that is not UTF-8 fails validation.
        body_schema = {
            "content": {"application/json": {"schema": BulkRetryIn.model_json_schema()}},
            "required": True,
        }

        @router.post(
            "/bulk-retry",
            response_model=BulkRetryOut,
            summary="Replay chosen tasks",
            openapi_extra={"requestBody": body_schema},
        )
        async def bulk_retry(
            request: Request,
            include_replayed: bool = Query(False, description="also tasks already retried"),
            user: str = write,
        ) -> Any:
            body = await _read_json(request, BulkRetryIn)
            result = await self.replay(
                dict.fromkeys(body.task_ids), include_replayed=include_replayed
            )
            await manager.audit(
                user,
                "bulk_retry",
                None,
                {
                    "dispatched": result["dispatched"],
                    "skipped": result["skipped"],
                    "task_ids": body.task_ids[:20],
                },
            )
            return result

        @router.post(
            "/retry-failed",
            response_model=BulkRetryOut,
            summary="Replay failed tasks created within a window",
            responses=_BAD_VALUE,
        )
        async def retry_failed(
            since: str = Query("6h", max_length=10),
            func_name: str | None = Query(None, max_length=500),
            include_replayed: bool = Query(False, description="also failures already retried"),
            user: str = write,
        ) -> Any:
            window = _parse_since(since)
            start = datetime.now(_UTC) - window if window is not None else None
            records, _ = await manager.query(
                status=["failed", "interrupted"],
                func_name=func_name,
                since=start,
                limit=_MAX_REPLAY,
            )
            result = await self.replay(
                [r.task_id for r in records], include_replayed=include_replayed
            )
            await manager.audit(
                user,
                "retry_failed",
                None,
                {
                    "since": since,
                    "func_name": func_name,
                    "dispatched": result["dispatched"],
                    "skipped": result["skipped"],
                },
            )
            return result

        @router.delete(
            "/history",
            response_model=DeletedOut,
            summary="Delete finished tasks older than a window",
            responses=_BAD_VALUE,
        )
        async def delete_history(
            value: int = Query(..., ge=1, le=1_000_000),
            unit: str = Query(..., max_length=10, description="min, hour or day"),
            user: str = write,
        ) -> Any:
            if unit not in _UNITS:
                raise HTTPException(400, "unit must be min, hour or day")
            seconds = value * _UNITS[unit]
            if seconds > 100 * 365 * 86400:
                raise HTTPException(400, "window too large: at most 100 years")
            deleted = await manager.prune(older_than=timedelta(seconds=seconds))
            await manager.audit(
                user, "delete_history", None, {"value": value, "unit": unit, "deleted": deleted}
            )
            return {"deleted": deleted}

    def _schedule_routes(self, router: APIRouter) -> None:
        """Periodic tasks: list them, pause, resume, run one now (audited)."""
        read = [Depends(self.user)]
        write = Depends(self.guard_write)
        manager = self.manager

        @router.get("/schedules", dependencies=read, summary="Periodic tasks and their runs")
        async def schedules() -> Response:
            return _json(await manager.list_schedules())

        async def act(name: str, action: str, user: str) -> Response:
            try:
                if action == "pause":
                    await manager.pause_schedule(name)
                elif action == "resume":
                    await manager.resume_schedule(name)
                else:
                    task_id = manager.run_schedule_now(name)
            except TaskNotFound:
                raise HTTPException(404, "Schedule not found") from None
            detail: dict[str, Any] = {"schedule": name}
            if action == "run":
                detail["task_id"] = task_id
            await manager.audit(user, f"schedule_{action}", detail.get("task_id"), detail)
            found = [s for s in await manager.list_schedules() if s["name"] == name]
            return _json({**detail, "state": found[0]})

        def endpoint_for(action: str) -> Callable[..., Awaitable[Response]]:
            async def endpoint(
                name: str = FastAPIPath(..., max_length=500), user: str = write
            ) -> Response:
                return await act(name, action, user)

            return endpoint

        for action, summary in (
            ("pause", "Pause a periodic task (in every process)"),
            ("resume", "Resume a paused periodic task"),
            ("run", "Run a periodic task now, once"),
        ):
            router.add_api_route(
                f"/schedules/{{name}}/{action}",
                endpoint_for(action),
                methods=["POST"],
                summary=summary,
            )

    def _task_routes(self, router: APIRouter) -> None:
        """One task: its detail, cancel and retry."""
        read = [Depends(self.user)]
        write = Depends(self.guard_write)
        manager = self.manager

        @router.get(
            "/{task_id}",
            response_model=TaskOut,
            dependencies=read,
            summary="One task, with logs and traceback",
        )
        async def get_task(task_id: str = FastAPIPath(..., max_length=100)) -> Response:
            record = await manager.fetch(task_id)
            if record is None:
                raise HTTPException(404, "Task not found")
            return _json(record.to_dict(include_args=self.display_func_args))

        @router.post("/{task_id}/cancel", response_model=CancelOut, summary="Cancel a task")
        async def cancel(
            task_id: str = FastAPIPath(..., max_length=100), user: str = write
        ) -> Response:
            try:
                record = manager._own(manager.cancel(task_id))
            except TaskNotFound:
                db = manager._db
                if db is not None and db.ready and await db.cancel_scheduled(task_id):
                    # A delayed run held by another host: cancelled in the database.
                    record = await manager.fetch(task_id)
                elif await manager.fetch(task_id) is None:
                    raise HTTPException(404, "Task not found") from None
                else:
                    raise HTTPException(
                        409, "only scheduled, pending or running tasks can be cancelled"
                    ) from None
            except TaskStateError as exc:
                raise HTTPException(409, str(exc)) from None
            await manager.audit(user, "cancel", task_id)
            return _json(
                {"task_id": task_id, "task": record.to_dict(include_args=self.display_func_args)}
            )

        @router.post("/{task_id}/retry", response_model=RetryOut, summary="Run a task again")
        async def retry(task_id: str = FastAPIPath(..., max_length=100), user: str = write) -> Any:
            try:
                new_id = await manager.retry(task_id)
            except TaskNotFound:
                raise HTTPException(404, "Task not found") from None
            except TaskStateError as exc:
                raise HTTPException(409, str(exc)) from None
            await manager.audit(user, "retry", task_id, {"new_task_id": new_id})
            new = await manager.fetch(new_id)
            task = new.to_dict(include_args=self.display_func_args) if new else None
            return _json({"task_id": new_id, "retry_of": task_id, "task": task})

    async def replay(
        self, task_ids: Iterable[str], *, include_replayed: bool = False
    ) -> dict[str, Any]:
        """Retry failed and interrupted tasks; by default not those already retried (a
        replay that ran a charge must not run it again at the next click)."""
        results, skipped = [], 0
        manager = self.manager
        for task_id in list(task_ids)[:_MAX_REPLAY]:
            record = await manager.fetch(task_id)
            if (
                record is None
                or record.status not in (TaskStatus.FAILED, TaskStatus.INTERRUPTED)
                or (not include_replayed and (record.retried_as or task_id in manager._retried))
            ):
                skipped += 1
                continue
            try:
                new_id = await self.manager.retry(task_id)
            except TaskflowError:
                skipped += 1
                continue
            results.append({"original_task_id": task_id, "new_task_id": new_id})
        return {"dispatched": len(results), "skipped": skipped, "results": results}

    # -- pages -----------------------------------------------------------------

    def page(self, html: str, status_code: int = 200) -> HTMLResponse:
        return HTMLResponse(html, status_code, headers=_PAGE_HEADERS)

    def dashboard_router(self) -> APIRouter:
        router = APIRouter(prefix=self.path, include_in_schema=False)

        @router.get("/dashboard")
        async def dashboard(request: Request) -> Response:
            base = self.base(request)
            if self.backend is not None and await self.session(request) is None:
                # The whole view, filters included: a bookmarked filter survives the login.
                view = base + "/dashboard" + (f"?{request.url.query}" if request.url.query else "")
                target = urllib.parse.quote(view, safe="/")
                return RedirectResponse(f"{base}/auth/login?next={target}", 303)
            html = self.templates.get_template("dashboard.html").render(
                title=self.title,
                base=base,
                csrf_token=await self.csrf_for(request),
                show_args=self.display_func_args,
                auth_enabled=self.backend is not None,
                asset_version=self.asset_version,
            )
            return self.page(html)

        @router.get("/dashboard/static/{name}")
        async def static(name: str) -> Response:
            assets = {"app.js": (_APP_JS, "text/javascript"), "app.css": (_APP_CSS, "text/css")}
            if name not in assets:
                raise HTTPException(404, "Not found")
            body, media = assets[name]
            return Response(
                body,
                media_type=f"{media}; charset=utf-8",
                headers={**_PAGE_HEADERS, "Cache-Control": "public, max-age=86400"},
            )

        @router.get("/dashboard/stream")
        async def stream(request: Request, user: str = Depends(self.user)) -> Response:
            last = request.headers.get("last-event-id", "")
            return StreamingResponse(
                self.events(last, await self.session(request)),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )

        return router

    async def events(self, last_event_id: str, session: dict[str, Any] | None = None) -> Any:
        """The SSE stream: one small event per changed task, coalesced, with heartbeats.

        With a login, the session is checked again before every batch (revocations
        in memory, the user's credentials; the database's revocations every few
        seconds): the stream ends when the session does.
        """
        store, manager = self.manager._store, self.manager
        wake = asyncio.Event()
        checked_at = time.monotonic()
        try:
            seen, remote = store.seq, store.remote_seq
            yield "retry: 1000\n\n"
            if re.fullmatch(r"[0-9]{1,18}", last_event_id):  # ASCII digits that fit an int64
                resume = int(last_event_id)
                if resume > store.seq or store.oldest_change > resume + 1:
                    yield _sse("refresh", {}, seen)  # too old (or another process): reload
                else:
                    seen = resume
            text, fresh = self.metrics_event(seen)
            yield text
            metrics_at = beat_at = time.monotonic()
            metrics_due = not fresh
            # Streams end after a minute and the browser reconnects with Last-Event-ID: a
            # server's graceful shutdown waits for open responses, so none may be endless.
            ends_at = time.monotonic() + 60
            while time.monotonic() < ends_at and not manager._closing:
                if session is not None:
                    if session["sid"] in self.revoked or not await self.bound(session):
                        return
                    if time.monotonic() - checked_at >= 5.0:
                        checked_at = time.monotonic()
                        if await manager._is_revoked(session["sid"]):
                            return
                # Sleep until a change, or until throttled metrics are due, or a heartbeat.
                timeout = max(0.05, 1.0 - (time.monotonic() - metrics_at)) if metrics_due else 1.0
                if store.seq == seen:
                    # Listen only while waiting: a busy app notifies thousands of times a
                    # second, and a stream between two batches needs no wake-up.
                    wake.clear()
                    store.watchers.add(wake)
                    try:
                        with contextlib.suppress(asyncio.TimeoutError):
                            await asyncio.wait_for(wake.wait(), timeout=timeout)
                    finally:
                        store.watchers.discard(wake)
                now = time.monotonic()
                if store.remote_seq != remote:  # other processes wrote: reload the page
                    remote = store.remote_seq
                    yield _sse("refresh", {}, store.seq)
                    metrics_due = True
                if store.seq != seen:
                    latest = _changes_since(store, seen, limit=100)
                    seen = store.seq
                    if latest is None:
                        yield _sse("refresh", {}, seen)  # cheaper for the page to reload
                    else:
                        yield "".join(
                            self.task_event(task_id, at, seen) for task_id, at in latest.items()
                        )
                    beat_at = now
                    metrics_due = True
                    await asyncio.sleep(0.25)  # coalesce bursts: at most ~4 batches a second
                    now = time.monotonic()
                if metrics_due and now - metrics_at >= 1.0:
                    metrics_at = beat_at = now
                    text, fresh = self.metrics_event(seen)
                    metrics_due = not fresh  # a shared, slightly older one: send again
                    yield text
                elif now - beat_at >= 15.0:
                    beat_at = now
                    yield ": ping\n\n"
        finally:
            store.watchers.discard(wake)

    def task_event(self, task_id: str, changed_at: int, event_id: int) -> str:
        """A ``task`` event; its JSON is built once for all connected clients."""
        cached = self.event_cache.get(task_id)
        if cached is None or cached[0] != changed_at:
            store = self.manager._store
            record = self.manager._own(store.get(task_id, unwritten=True))
            if record is None:
                return ""  # evicted meanwhile: the page's next reload shows it
            if len(self.event_cache) > 4096:
                self.event_cache.clear()
            payload = _compact_json(record.to_dict(brief=True))
            cached = self.event_cache[task_id] = (changed_at, payload)
        return f"id: {event_id}\nevent: task\ndata: {cached[1]}\n\n"

    def metrics_event(self, seen: int) -> tuple[str, bool]:
        """A ``metrics`` event, and whether it counts change ``seen`` already.

        Built at most twice a second for all connected clients: on a busy app each
        client has seen a later change than the last event built, and building one
        sorts up to 10,000 duration samples.

        Beyond ``/metrics``, it carries ``seq``, the change it counts up to (the page
        shows the new tasks it counts together with it), ``source`` (whose change
        numbers), and ``kept``, the task list's total without filters at that change:
        lower than ``total`` when counters include records dropped from memory to keep
        ``max_history``.
        """
        manager = self.manager
        store = manager._store
        cached = self.metrics_cache
        now = time.monotonic()
        # Counters rebuilt from the database (refresh, prune) get a new funcs dict.
        if (
            cached is None
            or cached[1] is not store.funcs
            or (cached[0] < seen and now - cached[3] >= 0.5)
        ):
            data = manager.metrics()
            db = manager._db
            kept = data["total"] if db is not None and db.ready else len(store.records)
            extra = {
                "seq": store.seq,
                "source": self.changes_source,
                "kept": kept,
                "manager_running": manager._started,
            }
            metrics = _sse("metrics", {**data, **extra})
            cached = self.metrics_cache = (store.seq, store.funcs, metrics, now)
        return cached[2], cached[0] >= seen

    def auth_router(self) -> APIRouter:
        router = APIRouter(prefix=self.path + "/auth", include_in_schema=False)

        @router.get("/login")
        async def login_page(request: Request, next: str | None = None) -> Response:
            return self.login_form(request, next)

        @router.post("/login")
        async def login(request: Request) -> Response:
            if not _same_site(request, self.allowed_origins):
                return self.refused(request)
            form = await _read_form(request)
            if isinstance(form, Response):
                return form
            username, password = form.get("username", ""), form.get("password", "")
            target = form.get("next")
            if _from_browser(request):
                try:
                    self.forms.loads(form.get("csrf_token", ""), max_age=3600)
                except (BadSignature, SignatureExpired):
                    return self.login_form(
                        request, target, "The form expired; please try again.", username, 403
                    )
            client = request.client.host if request.client else "?"
            keys = self.throttle.keys(client, username)
            token, wait = await self.throttle.reserve(keys)
            if wait:
                response = self.login_form(
                    request, target, "Too many failed attempts; try again later.", username, 429
                )
                response.headers["Retry-After"] = str(wait)
                return response
            if not username or not password or not await self.check(username, password):
                return self.login_form(  # the reserved attempt stays counted
                    request, target, "Invalid username or password.", username, 401
                )
            await self.throttle.release(token)
            sid = secrets.token_urlsafe(16)
            binding = await self.fingerprint(username) or ""
            cookie = self.sessions.dumps(
                {"u": username, "sid": sid, "csrf": secrets.token_urlsafe(24), "f": binding}
            )
            base = self.base(request)
            response = RedirectResponse(_local_path(target, base + "/dashboard"), 303)
            response.set_cookie(
                _SESSION_COOKIE,
                cookie,
                max_age=self.token_expiry,
                path="/",
                httponly=True,
                samesite="lax",
                secure=request.url.scheme == "https",
            )
            await self.manager.audit(username, "login")
            return response

        async def logout(request: Request) -> Response:
            session = await self.session(request)
            if session is not None:
                now = time.time()
                for sid in [s for s, until in self.revoked.items() if until < now]:
                    del self.revoked[sid]
                self.revoked[session["sid"]] = now + self.token_expiry
                await self.manager._revoke(session["sid"], now + self.token_expiry)
                await self.manager.audit(str(session["u"]), "logout")
            response = RedirectResponse(self.base(request) + "/auth/login", 303)
            response.delete_cookie(_SESSION_COOKIE, path="/", httponly=True, samesite="lax")
            return response

        @router.post("/logout")
        async def logout_post(request: Request) -> Response:
            if not _same_site(request, self.allowed_origins):
                return self.refused(request)
            return await logout(request)

        @router.get("/logout")
        async def logout_get(request: Request) -> Response:
            # A link may sign out, but only one on this site: a top-level navigation
            # from another site would otherwise log anyone out.
            if not _same_site(request, self.allowed_origins):
                return self.refused(request)
            return await logout(request)

        return router

    def refused(self, request: Request) -> Response:
        """403 for a cross-site form: a readable page for a browser, JSON otherwise."""
        if "text/html" not in request.headers.get("accept", ""):
            return _json({"detail": "cross-site request refused"}, 403)
        login = html_escape(self.base(request) + "/auth/login")
        return self.page(
            "<!doctype html><meta charset=utf-8><title>Request refused</title>"
            "<h1>Request refused</h1><p>This form was sent from another site, so it was not "
            "accepted. If you use this dashboard through a proxy that changes the address, "
            "see the allowed_origins setting.</p>"
            f'<p><a href="{login}">Back to sign-in</a></p>',
            403,
        )

    async def check(self, username: str, password: str) -> bool:
        assert self.backend is not None
        method = self.backend.authenticate_user
        if inspect.iscoroutinefunction(method):
            return bool(await method(username, password))
        return bool(await asyncio.to_thread(method, username, password))

    def login_form(
        self,
        request: Request,
        target: str | None,
        error: str | None = None,
        username: str = "",
        status_code: int = 200,
    ) -> HTMLResponse:
        base = self.base(request)
        html = self.templates.get_template("login.html").render(
            title=self.title,
            base=base,
            csrf_token=self.forms.dumps("login"),
            next=_local_path(target, base + "/dashboard"),
            error=error,
            username=username,
            asset_version=self.asset_version,
        )
        return self.page(html, status_code)


def _changes_since(store: _Store, seen: int, limit: int) -> dict[str, int] | None:
    """Task ids changed after ``seen``, each with its latest change.

    None when the log lost some of them, or when more than ``limit`` tasks changed
    (the page then reloads instead: cheaper than that many events).
    """
    oldest = store.oldest_change
    if not store.changes or oldest > seen + 1:
        return None
    # Change numbers are consecutive, so the start is an offset, not a search.
    start = seen + 1 - oldest
    latest: dict[str, int] = {}
    for i, task_id in enumerate(itertools.islice(store.changes, start, None), oldest + start):
        latest[task_id] = i
        if len(latest) > limit:
            return None
    return latest


def _counts(metrics: dict[str, Any]) -> tuple[int, ...]:
    return tuple(metrics[s] for s in _STATUS_VALUES)


def _sse(event: str, data: Any, event_id: int | None = None) -> str:
    payload = _json_text(data)
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {payload}\n\n"


def _csv_safe(text: str) -> str:
    # Spreadsheets run cells that start with these as formulas.
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


async def _read_json(request: Request, model: type[BaseModel]) -> Any:
    """A JSON body validated by ``model``; 413/415/422 with a JSON detail otherwise."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise HTTPException(415, "expected an application/json body")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > 1024 * 1024:
            raise HTTPException(413, "body too large")
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        problems = [
            {"loc": ["body", *e["loc"]], "msg": e["msg"], "type": e["type"]} for e in exc.errors()
        ]
        raise HTTPException(422, problems) from None


async def _read_form(request: Request) -> dict[str, str] | Response:
    """Parse a urlencoded form with the standard library (no python-multipart needed)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        return _json({"detail": "expected an application/x-www-form-urlencoded form"}, 415)
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > 16 * 1024:
            return _json({"detail": "form too large"}, 413)
    try:
        pairs = urllib.parse.parse_qsl(
            body.decode("utf-8"), keep_blank_values=True, max_num_fields=20
        )
    except (UnicodeDecodeError, ValueError):
        return _json({"detail": "malformed form"}, 400)
    return dict(pairs)


_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


# =============================================================================
# Admin: TaskAdmin wires routes, auth and lifecycle into an app.
# =============================================================================


class TaskAdmin:
    """Mount the task API, the live dashboard and (optionally) a login on ``app``.

    All set-up happens here; there is no need to keep the object. It also
    registers the manager's lifecycle like ``init_app`` (never twice), applies
    ``retention_days`` to the manager, and with ``auto_install=True`` lets plain
    ``BackgroundTasks`` parameters return task ids.
    """

    def __init__(
        self,
        app: FastAPI,
        task_manager: TaskManager,
        path: str = "/tasks",
        auto_install: bool = False,
        auth: Any = None,
        secret_key: str | None = None,
        token_expiry: int = 86400,
        poll_interval: float = 30.0,
        title: str = "fastapi-taskflow",
        retention_days: float | None = None,
        display_func_args: bool = False,
        allowed_hosts: list[str] | None = None,
        allowed_origins: list[str] | None = None,
        metrics_token: str | None = None,
    ) -> None:
        if not isinstance(app, FastAPI):
            raise TypeError(f"app must be a FastAPI application, got {app!r}")
        if not isinstance(task_manager, TaskManager):
            raise TypeError(f"task_manager must be a TaskManager, got {task_manager!r}")
        if not isinstance(path, str) or not re.fullmatch(
            r"(/(?!\.\.?(/|$))[A-Za-z0-9._~-]+)+", path
        ):
            raise ValueError(
                f"path must start with '/', have no trailing '/', no '.' or '..' segment, and "
                f"use only letters, digits and . _ ~ - in its segments; got {path!r}"
            )
        _check_bool("auto_install", auto_install)
        _check_bool("display_func_args", display_func_args)
        _check_number("token_expiry", token_expiry, minimum=1, integer=True)
        _check_number("poll_interval", poll_interval, strict=True)
        _check_number(
            "retention_days", retention_days, allow_none=True, strict=True, maximum=_MAX_DAYS
        )
        if not isinstance(title, str) or not title.strip():
            raise TypeError(f"title must be a non-empty string, got {title!r}")
        if secret_key is not None and (not isinstance(secret_key, str) or len(secret_key) < 16):
            raise ValueError("secret_key must be a string of at least 16 characters")
        hosts = _allowed_hosts(allowed_hosts)
        origins = _allowed_origins(allowed_origins)
        if metrics_token is not None and (
            not isinstance(metrics_token, str) or len(metrics_token) < 16
        ):
            raise ValueError("metrics_token must be a string of at least 16 characters")
        backend = _auth_backend(auth)
        if backend is not None and secret_key is None:
            logger.warning(
                "TaskAdmin: no secret_key given; using a random one, so dashboard sessions end "
                "when this process restarts and do not work across worker processes"
            )
        if backend is not None and task_manager.snapshot_db is None:
            logger.warning(
                "TaskAdmin: auth without snapshot_db: a logout holds only in the process that "
                "served it and until it restarts; set snapshot_db (a file or PostgreSQL) to "
                "make it hold in every worker and across restarts"
            )
        if backend is None:
            logger.warning(
                "TaskAdmin: no auth configured; the task API and dashboard at %s can be read "
                "by anyone who can reach this app, and changed (cancel, retry, delete) only "
                "through loopback names, the server's own address and allowed_hosts",
                path,
            )
        if retention_days is not None:
            task_manager.retention_days = retention_days
        if auto_install:
            task_manager.install(app)
        admin = _Admin(
            task_manager,
            path,
            backend,
            secret_key or secrets.token_hex(32),
            token_expiry,
            float(poll_interval),
            title,
            display_func_args,
            hosts,
            origins,
            metrics_token,
        )
        before = list(app.router.routes)
        if backend is not None:
            app.include_router(admin.auth_router())
        app.include_router(admin.dashboard_router())  # before the API's /{task_id}
        app.include_router(admin.api_router())
        _match_last(app, [r for r in app.router.routes if r not in before])
        task_manager.init_app(app)


def _match_last(app: FastAPI, routes: list[Any]) -> None:
    """At startup, move ``routes`` after the app's own, keeping their order.

    Starlette tries routes in order: the admin's routes, registered before the
    app declares its own, would be matched (and paid for) on every app request.
    Last, they cost app requests nothing and never shadow an app route.
    """
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app_: Any) -> Any:
        ids = {id(r) for r in routes}
        current = app.router.routes
        current[:] = [r for r in current if id(r) not in ids] + [r for r in current if id(r) in ids]
        async with inner(app_) as state:
            yield state

    app.router.lifespan_context = lifespan


# =============================================================================
# Embedded templates and assets (the dashboard and login page; no external files).
# =============================================================================

_DASHBOARD_HTML = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="same-origin">
<meta name="robots" content="noindex">
<title>{{ title }}</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{{ base }}/dashboard/static/app.css?v={{ asset_version }}">
<script src="{{ base }}/dashboard/static/app.js?v={{ asset_version }}" defer></script>
</head>
<body class="dash" data-base="{{ base }}" data-stream="{{ base }}/dashboard/stream" data-csrf="{{ csrf_token }}" data-show-args="{{ '1' if show_args else '0' }}" data-auth="{{ '1' if auth_enabled else '0' }}" data-title="{{ title }}">
<a class="skip" href="#view-all">Skip to tasks</a>
<header class="topbar">
  <div class="brand"><span class="logo" aria-hidden="true"></span><h1>{{ title }}</h1></div>
  <div class="top-actions">
    <span id="live" class="live" role="status" aria-live="polite" data-state="connecting">Connecting…</span>
    {% if auth_enabled %}
    <form class="logout" method="post" action="{{ base }}/auth/logout">
      <input type="hidden" name="csrf_token" value="{{ csrf_token }}">
      <button type="submit" class="btn ghost">Sign out</button>
    </form>
    {% endif %}
  </div>
</header>

<main id="main">
  <section class="cards" aria-label="Task counts">
    <button type="button" class="card" data-filter=""><span class="card-label">Total</span><strong class="card-value" data-count="total">–</strong></button>
    <button type="button" class="card s-pending" data-filter="pending"><span class="card-label">Pending</span><strong class="card-value" data-count="pending">–</strong></button>
    <button type="button" class="card s-scheduled" data-filter="scheduled"><span class="card-label">Scheduled</span><strong class="card-value" data-count="scheduled">–</strong></button>
    <button type="button" class="card s-running" data-filter="running"><span class="card-label">Running</span><strong class="card-value" data-count="running">–</strong></button>
    <button type="button" class="card s-success" data-filter="success"><span class="card-label">Success</span><strong class="card-value" data-count="success">–</strong></button>
    <button type="button" class="card s-failed" data-filter="failed"><span class="card-label">Failed</span><strong class="card-value" data-count="failed">–</strong></button>
    <button type="button" class="card s-interrupted" data-filter="interrupted"><span class="card-label">Interrupted</span><strong class="card-value" data-count="interrupted">–</strong></button>
    <button type="button" class="card s-cancelled" data-filter="cancelled"><span class="card-label">Cancelled</span><strong class="card-value" data-count="cancelled">–</strong></button>
    <div class="card static"><span class="card-label">Success rate</span><strong class="card-value" data-count="success_rate">–</strong></div>
  </section>

  <section id="queues" class="panel queues-panel" aria-labelledby="queues-title" hidden>
    <div class="panel-head">
      <h2 id="queues-title">Queues</h2>
      <span class="muted note">limits and counts of the process serving this page</span>
    </div>
    <div class="table-wrap">
      <table id="queues-table" class="tasks queues">
        <caption class="sr-only">Queues: waiting and running tasks, and their limits</caption>
        <thead>
          <tr>
            <th scope="col">Queue</th>
            <th scope="col" class="num">Waiting</th>
            <th scope="col" class="num">Max waiting</th>
            <th scope="col" class="num">Running</th>
            <th scope="col" class="num">Concurrency</th>
            <th scope="col" class="num">Done</th>
            <th scope="col" class="num">Done last minute</th>
          </tr>
        </thead>
        <tbody id="queue-rows"></tbody>
      </table>
    </div>
  </section>

  <section class="panel chart-panel" aria-labelledby="chart-title">
    <div class="panel-head">
      <h2 id="chart-title">Last 60 minutes</h2>
      <ul class="legend">
        <li><span class="swatch ok" aria-hidden="true"></span>Completed <strong id="sum-ok">0</strong></li>
        <li><span class="swatch fail" aria-hidden="true"></span>Failed <strong id="sum-fail">0</strong></li>
      </ul>
      <dl class="figures">
        <div><dt>p50</dt><dd id="fig-p50">–</dd></div>
        <div><dt>p95</dt><dd id="fig-p95">–</dd></div>
        <div><dt>avg</dt><dd id="fig-avg">–</dd></div>
        <div><dt>max</dt><dd id="fig-max">–</dd></div>
      </dl>
    </div>
    <div class="chart-box">
      <span class="chart-peak" id="chart-peak" aria-hidden="true"></span>
      <svg id="chart" class="chart" viewBox="0 0 600 120" preserveAspectRatio="none" role="img" aria-label="Completions and failures per minute"></svg>
      <div class="chart-axis" aria-hidden="true"><span>60 min ago</span><span>now</span></div>
    </div>
  </section>

  <div class="tabs" role="tablist" aria-label="Views">
    <button type="button" role="tab" id="tab-all" aria-controls="view-all" aria-selected="true">All tasks</button>
    <button type="button" role="tab" id="tab-failed" aria-controls="view-failed" aria-selected="false" tabindex="-1">Failed <span class="badge" id="failed-badge"></span></button>
    <button type="button" role="tab" id="tab-schedules" aria-controls="view-schedules" aria-selected="false" tabindex="-1" hidden>Schedules <span class="badge neutral" id="paused-badge" title="Paused schedules"></span></button>
  </div>

  <section id="view-all" class="panel" role="tabpanel" aria-labelledby="tab-all">
    <form class="filters" id="filters" role="search">
      <label>Status
        <select id="status-filter" name="status">
          <option value="">All statuses</option>
          <option value="scheduled">Scheduled</option>
          <option value="pending">Pending</option>
          <option value="running">Running</option>
          <option value="success">Success</option>
          <option value="failed">Failed</option>
          <option value="interrupted">Interrupted</option>
          <option value="cancelled">Cancelled</option>
        </select>
      </label>
      <label>Function
        <select id="func-filter" name="func_name"><option value="">All functions</option></select>
      </label>
      <label class="grow">Search
        <input id="search" name="q" type="search" placeholder="Id, function, error or tag…" autocomplete="off" spellcheck="false">
      </label>
      <label>Created within
        <select id="window-filter" name="window">
          <option value="15m">15 minutes</option>
          <option value="1h">1 hour</option>
          <option value="24h">24 hours</option>
          <option value="7d">7 days</option>
          <option value="all" selected>All time</option>
        </select>
      </label>
      <a id="export" class="btn" href="{{ base }}/export.csv" download>Export CSV</a>
    </form>

    <div class="table-wrap">
      <table id="tasks" class="tasks">
        <caption class="sr-only">Tasks. Select a row to see its details.</caption>
        <thead>
          <tr>
            <th scope="col" aria-sort="none"><button type="button" class="sort" data-sort="func_name">Function</button></th>
            <th scope="col" aria-sort="none"><button type="button" class="sort" data-sort="status">Status</button></th>
            <th scope="col">Task id</th>
            <th scope="col" aria-sort="descending"><button type="button" class="sort" data-sort="created_at">Created</button></th>
            <th scope="col" class="num" aria-sort="none"><button type="button" class="sort" data-sort="duration">Duration</button></th>
            <th scope="col" class="num">Retries</th>
            <th scope="col">Error</th>
          </tr>
        </thead>
        <tbody id="task-rows"></tbody>
      </table>
      <p id="empty" class="empty" hidden>No tasks match these filters.</p>
    </div>
    <nav class="pager" aria-label="Pagination">
      <div class="pager-info">
        <span id="range" aria-live="polite">0 of 0</span>
        <span id="history-note" class="note" hidden></span>
      </div>
      <button type="button" class="btn" id="prev">‹ Prev</button>
      <button type="button" class="btn" id="next">Next ›</button>
    </nav>
  </section>

  <section id="view-failed" class="panel" role="tabpanel" aria-labelledby="tab-failed" hidden>
    <div class="toolbar">
      <button type="button" class="btn primary" id="replay-selected" disabled>Replay selected</button>
      <span class="sep" aria-hidden="true"></span>
      <label>Replay all failed since
        <select id="replay-window">
          <option value="1h">1 hour</option>
          <option value="6h" selected>6 hours</option>
          <option value="24h">24 hours</option>
          <option value="7d">7 days</option>
          <option value="all">ever</option>
        </select>
      </label>
      <button type="button" class="btn" id="replay-all">Replay all</button>
      <span id="failed-info" class="muted" aria-live="polite"></span>
    </div>
    <div class="table-wrap">
      <table id="failed-table" class="tasks">
        <caption class="sr-only">Failed and interrupted tasks</caption>
        <thead>
          <tr>
            <th scope="col" class="check"><input type="checkbox" id="failed-all" aria-label="Select all failed tasks"></th>
            <th scope="col">Function</th>
            <th scope="col">Status</th>
            <th scope="col">Task id</th>
            <th scope="col">Ended</th>
            <th scope="col">Error</th>
          </tr>
        </thead>
        <tbody id="failed-rows"></tbody>
      </table>
      <p id="failed-empty" class="empty" hidden>No failed tasks. Nice.</p>
    </div>
  </section>

  <section id="view-schedules" class="panel" role="tabpanel" aria-labelledby="tab-schedules" hidden>
    <div class="toolbar">
      <span class="muted">Each occurrence runs once. A paused schedule skips its occurrences until resumed; Run now starts one extra run.</span>
      <button type="button" class="linkish" id="show-delayed" hidden></button>
    </div>
    <div class="table-wrap">
      <table id="schedules-table" class="tasks schedules">
        <caption class="sr-only">Periodic tasks, their rules and runs</caption>
        <thead>
          <tr>
            <th scope="col">Schedule</th>
            <th scope="col">Rule</th>
            <th scope="col">Next run</th>
            <th scope="col">Last run</th>
            <th scope="col">Last status</th>
            <th scope="col">State</th>
            <th scope="col"><span class="sr-only">Actions</span></th>
          </tr>
        </thead>
        <tbody id="schedule-rows"></tbody>
      </table>
      <p id="schedules-empty" class="empty" hidden>No periodic tasks: add one with <code>@task_manager.schedule(...)</code>.</p>
    </div>
  </section>
</main>

<div id="detail" class="detail" role="dialog" aria-labelledby="detail-title" tabindex="-1" hidden>
  <div class="detail-head">
    <h2 id="detail-title">Task</h2>
    <button type="button" class="btn ghost icon" id="detail-close" aria-label="Close details">✕</button>
  </div>
  <div class="detail-actions">
    <button type="button" class="btn danger" id="detail-cancel" hidden>Cancel task</button>
    <button type="button" class="btn primary" id="detail-retry" hidden>Retry task</button>
  </div>
  <div id="detail-body" class="detail-body"></div>
</div>

<div id="toast" class="toast" role="status" aria-live="polite" hidden></div>
</body>
</html>
"""


_LOGIN_HTML = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="same-origin">
<meta name="robots" content="noindex">
<title>Sign in · {{ title }}</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{{ base }}/dashboard/static/app.css{% if asset_version is defined %}?v={{ asset_version }}{% endif %}">
</head>
<body class="login">
<main class="login-card">
  <div class="brand"><span class="logo" aria-hidden="true"></span><h1>{{ title }}</h1></div>
  <p class="muted">Sign in to the task dashboard.</p>
  {% if error %}<p class="alert" role="alert">{{ error }}</p>{% endif %}
  <form method="post" action="{{ base }}/auth/login">
    <input type="hidden" name="csrf_token" value="{{ csrf_token }}">
    <input type="hidden" name="next" value="{{ next }}">
    <label for="username">Username</label>
    <input id="username" name="username" type="text" value="{{ username or '' }}" autocomplete="username" autocapitalize="none" spellcheck="false" required{% if not username %} autofocus{% endif %}>
    <label for="password">Password</label>
    <input id="password" name="password" type="password" autocomplete="current-password" required{% if username %} autofocus{% endif %}>
    <button type="submit" class="btn primary block">Sign in</button>
  </form>
</main>
</body>
</html>
"""


_APP_CSS = r"""/* taskflow dashboard: system fonts only, light and dark themes, no external assets. */
:root {
  color-scheme: light dark;
  --bg: #f6f7f9;
  --surface: #ffffff;
  --surface-2: #f1f3f6;
  --border: #e2e5ea;
  --text: #1b1f24;
  --muted: #5f6b7a;
  --accent: #4f46e5;
  --accent-text: #ffffff;
  --focus: #6366f1;
  --ok: #15803d;
  --fail: #b91c1c;
  --warn: #d97706;
  --warn-text: #b45309; /* --warn on --warn-bg is too faint for text */
  --info: #1d4ed8;
  --idle: #475569;
  --ok-bg: #dcfce7;
  --fail-bg: #fee2e2;
  --warn-bg: #fef3c7;
  --info-bg: #dbeafe;
  --idle-bg: #e2e8f0;
  --flash: #eef2ff;
  --shadow: 0 1px 2px rgb(15 23 42 / 6%), 0 4px 16px rgb(15 23 42 / 6%);
  --radius: 10px;
  --font: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
  --mono: ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace;
}

@media (prefers-color-scheme: dark) {
  :root {
    --bg: #0f1216;
    --surface: #171b21;
    --surface-2: #1e232b;
    --border: #2a313b;
    --text: #e6e9ee;
    --muted: #98a2b3;
    --accent: #818cf8;
    --accent-text: #0f1216;
    --focus: #a5b4fc;
    --ok: #4ade80;
    --fail: #fca5a5;
    --warn: #fbbf24;
    --warn-text: #fbbf24;
    --info: #60a5fa;
    --idle: #94a3b8;
    --ok-bg: rgb(74 222 128 / 14%);
    --fail-bg: rgb(248 113 113 / 14%);
    --warn-bg: rgb(251 191 36 / 14%);
    --info-bg: rgb(96 165 250 / 14%);
    --idle-bg: rgb(148 163 184 / 14%);
    --flash: rgb(129 140 248 / 16%);
    --shadow: 0 1px 2px rgb(0 0 0 / 40%), 0 8px 24px rgb(0 0 0 / 30%);
  }
}

*, *::before, *::after { box-sizing: border-box; }
[hidden] { display: none !important; }
html { -webkit-text-size-adjust: 100%; }
body {
  margin: 0;
  background: var(--bg);
  color: var(--text);
  font: 14px/1.45 var(--font);
}
h1, h2, h3 { margin: 0; font-weight: 600; }
h1 { font-size: 17px; }
h2 { font-size: 15px; }
h3 { font-size: 12px; text-transform: uppercase; letter-spacing: .06em; color: var(--muted); margin-bottom: 6px; }
a { color: var(--accent); }
code, pre, .mono { font-family: var(--mono); font-size: 12.5px; }
.muted { color: var(--muted); }
.sr-only {
  position: absolute; width: 1px; height: 1px; padding: 0; margin: -1px;
  overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; border: 0;
}
.skip { position: absolute; left: -999px; top: 8px; z-index: 50; }
.skip:focus { left: 8px; background: var(--surface); padding: 6px 10px; border-radius: 6px; }

:focus-visible { outline: 2px solid var(--focus); outline-offset: 2px; }
tr:focus-visible { outline-offset: -2px; }

/* ---------- buttons and inputs ---------- */
button, input, select { font: inherit; color: inherit; }
.btn, .tabs button, .sort {
  cursor: pointer;
}
.btn {
  display: inline-flex; align-items: center; gap: 6px;
  padding: 6px 12px; min-height: 32px;
  border: 1px solid var(--border); border-radius: 8px;
  background: var(--surface); color: var(--text);
  text-decoration: none; white-space: nowrap;
}
.btn:hover:not(:disabled) { background: var(--surface-2); }
.btn:disabled { opacity: .5; cursor: not-allowed; }
.btn.primary { background: var(--accent); border-color: var(--accent); color: var(--accent-text); }
.btn.primary:hover:not(:disabled) { filter: brightness(1.08); background: var(--accent); }
.btn.danger { color: var(--fail); border-color: currentColor; }
.btn.ghost { background: transparent; border-color: transparent; }
.btn.ghost:hover { background: var(--surface-2); }
.btn.icon { padding: 4px 8px; min-height: 28px; }
.btn.block { width: 100%; justify-content: center; margin-top: 18px; min-height: 38px; }

input[type="search"], input[type="text"], input[type="password"], select {
  min-height: 32px; padding: 5px 9px;
  border: 1px solid var(--border); border-radius: 8px;
  background: var(--surface); color: var(--text);
}
input[type="checkbox"] { width: 16px; height: 16px; accent-color: var(--accent); margin: 0; }
label { display: flex; flex-direction: column; gap: 4px; font-size: 12px; color: var(--muted); }
.toolbar label { flex-direction: row; align-items: center; gap: 8px; }

/* ---------- layout ---------- */
.topbar {
  position: sticky; top: 0; z-index: 10;
  display: flex; align-items: center; justify-content: space-between; gap: 12px;
  padding: 10px 24px;
  background: color-mix(in srgb, var(--surface) 88%, transparent);
  backdrop-filter: blur(8px);
  border-bottom: 1px solid var(--border);
}
.brand { display: flex; align-items: center; gap: 10px; min-width: 0; }
.brand h1 { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.logo {
  width: 22px; height: 22px; border-radius: 6px; flex: none;
  background: linear-gradient(135deg, var(--accent), var(--ok));
}
.top-actions { display: flex; align-items: center; gap: 12px; }
.logout { margin: 0; }

.live { display: inline-flex; align-items: center; gap: 6px; font-size: 12px; color: var(--muted); }
.live::before { content: ""; width: 8px; height: 8px; border-radius: 50%; background: var(--idle); }
.live[data-state="live"] { color: var(--ok); }
.live[data-state="live"]::before { background: var(--ok); box-shadow: 0 0 0 3px var(--ok-bg); }
.live[data-state="reconnecting"]::before, .live[data-state="connecting"]::before { background: var(--warn); }
.live[data-state="offline"], .live[data-state="stopped"] { color: var(--fail); }
.linkish { background: none; border: 0; padding: 0; color: inherit; text-decoration: underline; cursor: pointer; font: inherit; }
.replayed { font-size: 0.85em; }
.live[data-state="stopped"]::before { background: var(--fail); }
.live[data-state="offline"]::before { background: var(--fail); }

main {
  max-width: 1400px; margin: 0 auto; padding: 20px 24px 48px;
  display: grid; grid-template-columns: minmax(0, 1fr); gap: 16px;
}
.panel {
  background: var(--surface); border: 1px solid var(--border);
  border-radius: var(--radius); box-shadow: var(--shadow);
}

/* ---------- count cards ---------- */
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(120px, 1fr)); gap: 10px; }
.card {
  display: flex; flex-direction: column; align-items: flex-start; gap: 2px;
  padding: 12px 14px; text-align: left;
  background: var(--surface); border: 1px solid var(--border);
  border-radius: var(--radius); box-shadow: var(--shadow);
  border-top: 3px solid var(--border);
}
button.card { cursor: pointer; }
button.card:hover { background: var(--surface-2); }
.card-label { font-size: 12px; color: var(--muted); }
.card-value { font-size: 22px; font-weight: 650; font-variant-numeric: tabular-nums; }
.card.s-success { border-top-color: var(--ok); }
.card.s-failed { border-top-color: var(--fail); }
.card.s-running { border-top-color: var(--info); }
.card.s-pending, .card.s-interrupted { border-top-color: var(--warn); }
.card.s-cancelled { border-top-color: var(--idle); }
.card.s-scheduled { border-top-color: var(--accent); }
.card.static { border-top-color: var(--accent); }

/* ---------- chart ---------- */
.chart-panel { padding: 14px 16px 10px; }
.panel-head { display: flex; flex-wrap: wrap; align-items: center; gap: 8px 20px; margin-bottom: 8px; }
.legend { display: flex; gap: 14px; margin: 0; padding: 0; list-style: none; font-size: 12px; color: var(--muted); }
.legend li { display: flex; align-items: center; gap: 6px; }
.legend strong { color: var(--text); }
.swatch { width: 10px; height: 10px; border-radius: 3px; }
.swatch.ok { background: var(--ok); }
.swatch.fail { background: var(--fail); }
.figures { display: flex; flex-wrap: wrap; gap: 4px 16px; margin: 0 0 0 auto; }
.figures div { display: flex; gap: 6px; align-items: baseline; }
.figures dt { font-size: 12px; color: var(--muted); }
.figures dd { margin: 0; white-space: nowrap; font-weight: 600; font-variant-numeric: tabular-nums; }
.chart-box { position: relative; }
.chart { display: block; width: 100%; height: 120px; }
.chart .grid { stroke: var(--border); stroke-width: 1; stroke-dasharray: 3 3; vector-effect: non-scaling-stroke; }
.chart .hit { fill: transparent; }
.chart .slot:hover .hit { fill: var(--surface-2); }
.chart .bar.ok { fill: var(--ok); }
.chart .bar.fail { fill: var(--fail); }
.chart-peak { position: absolute; top: -2px; left: 0; font-size: 11px; color: var(--muted); }
.chart-axis { display: flex; justify-content: space-between; font-size: 11px; color: var(--muted); margin-top: 4px; }

/* ---------- tabs, filters, tables ---------- */
.tabs { display: flex; gap: 4px; border-bottom: 1px solid var(--border); }
.tabs button {
  padding: 8px 14px; border: 0; background: none; color: var(--muted);
  border-bottom: 2px solid transparent; margin-bottom: -1px; font-weight: 500;
}
.tabs button[aria-selected="true"] { color: var(--text); border-bottom-color: var(--accent); }
.badge {
  display: inline-block; min-width: 18px; padding: 0 6px; border-radius: 9px;
  background: var(--fail-bg); color: var(--fail); font-size: 11px; text-align: center;
}
.badge:empty { display: none; }
.badge.neutral { background: var(--warn-bg); color: var(--text); }

.filters, .toolbar {
  display: flex; flex-wrap: wrap; align-items: flex-end; gap: 10px 12px;
  padding: 12px 14px; border-bottom: 1px solid var(--border);
}
.toolbar { align-items: center; }
.filters .grow { flex: 1 1 220px; }
.filters .btn { margin-left: auto; }
.sep { width: 1px; align-self: stretch; background: var(--border); }

.table-wrap { overflow-x: auto; }
table.tasks { width: 100%; border-collapse: collapse; font-variant-numeric: tabular-nums; }
.tasks th, .tasks td { padding: 8px 12px; text-align: left; border-bottom: 1px solid var(--border); white-space: nowrap; }
.tasks th { font-size: 12px; font-weight: 600; color: var(--muted); background: var(--surface-2); position: sticky; top: 0; }
.tasks th.num, .tasks td.num { text-align: right; }
.tasks th.check, .tasks td.check { width: 36px; }
.tasks tbody tr { cursor: pointer; }
.tasks tbody tr:hover { background: var(--surface-2); }
.tasks tbody tr.selected { background: var(--flash); box-shadow: inset 3px 0 0 var(--accent); }
.tasks tbody tr:last-child td { border-bottom: 0; }
.tasks td.err { max-width: 360px; overflow: hidden; text-overflow: ellipsis; color: var(--fail); }
.tasks td.err.neutral { color: var(--muted); }
.tasks td.id, .tasks td.time { color: var(--muted); }
.fname { font-weight: 500; }
.sort {
  display: inline-flex; align-items: center; gap: 4px; padding: 0; border: 0;
  background: none; color: inherit; font-weight: inherit;
}
.sort::after { content: "↕"; opacity: .35; font-size: 11px; }
th[aria-sort="ascending"] .sort::after { content: "↑"; opacity: 1; }
th[aria-sort="descending"] .sort::after { content: "↓"; opacity: 1; }
th[aria-sort="ascending"], th[aria-sort="descending"] { color: var(--text); }

.tag {
  display: inline-block; margin-left: 6px; padding: 0 6px; border-radius: 4px;
  background: var(--surface-2); border: 1px solid var(--border);
  color: var(--muted); font-size: 11px; font-family: var(--mono);
}
dd .tag { margin: 0 6px 4px 0; }

.pill {
  display: inline-flex; align-items: center; gap: 5px;
  padding: 1px 8px; border-radius: 999px; font-size: 12px; font-weight: 500;
  background: var(--idle-bg); color: var(--idle);
}
.pill::before { content: ""; width: 6px; height: 6px; border-radius: 50%; background: currentColor; }
.progress { display: block; width: 6rem; height: 6px; margin-top: 4px; accent-color: var(--info); }
.pill.s-success { background: var(--ok-bg); color: var(--ok); }
.pill.s-failed { background: var(--fail-bg); color: var(--fail); }
.pill.s-running { background: var(--info-bg); color: var(--info); }
.pill.s-running::before { animation: pulse 1.2s ease-in-out infinite; }
.pill.s-pending, .pill.s-interrupted, .pill.s-paused { background: var(--warn-bg); color: var(--warn-text); }
.pill.s-active { background: var(--ok-bg); color: var(--ok); }

/* ---------- schedules and queues ---------- */
.schedules tbody tr, .queues tbody tr { cursor: default; }
.schedules .actions { display: flex; gap: 6px; justify-content: flex-end; }
.btn.small { min-height: 28px; padding: 3px 10px; }
.schedules .rule-raw { display: block; font-size: 12px; color: var(--muted); }
.schedules .when { display: block; font-size: 12px; color: var(--muted); }
.schedules .fname.linkish { color: var(--accent); text-decoration: none; }
.schedules .fname.linkish:hover { text-decoration: underline; }
.queues-panel .panel-head { padding: 12px 16px 0; margin-bottom: 8px; }
.queues-panel .note { font-size: 12px; }
.queues td.full { color: var(--fail); font-weight: 600; }
.queues .none { color: var(--muted); }
.queues-panel table.tasks { width: auto; min-width: min(100%, 760px); }
.queues tbody th { position: static; background: none; color: var(--text); font-size: 14px; font-weight: 500; }
.queues tbody tr:last-child th { border-bottom: 0; }

.empty { padding: 28px; margin: 0; text-align: center; color: var(--muted); }
.pager { display: flex; align-items: center; justify-content: flex-end; gap: 8px; padding: 10px 14px; border-top: 1px solid var(--border); }
.pager-info { margin-right: auto; display: flex; flex-wrap: wrap; align-items: baseline; gap: 2px 12px; color: var(--muted); font-size: 13px; }
.pager-info .note { font-size: 12px; }

tr.flash { animation: flash 1.2s ease-out; }
@keyframes flash { from { background: var(--flash); } to { background: transparent; } }
@keyframes pulse { 50% { opacity: .3; } }

/* ---------- detail panel ---------- */
.detail {
  position: fixed; top: 0; right: 0; bottom: 0; z-index: 20;
  width: min(560px, 100vw); overflow-y: auto;
  background: var(--surface); border-left: 1px solid var(--border);
  box-shadow: -8px 0 32px rgb(0 0 0 / 18%);
  animation: slide-in .18s ease-out;
}
.detail:focus { outline: none; }
.detail:focus-visible { outline: 2px solid var(--focus); outline-offset: -2px; }
@keyframes slide-in { from { transform: translateX(24px); opacity: 0; } }
.detail-head {
  position: sticky; top: 0; z-index: 1;
  display: flex; align-items: center; justify-content: space-between; gap: 8px;
  padding: 14px 18px; background: var(--surface); border-bottom: 1px solid var(--border);
}
.detail-head h2 { font-family: var(--mono); overflow-wrap: anywhere; }
.detail-actions { display: flex; gap: 8px; padding: 12px 18px 0; }
.detail-actions:not(:has(button:not([hidden]))) { display: none; }
.detail-body { padding: 6px 18px 24px; }
.kv { display: grid; grid-template-columns: 120px 1fr; gap: 6px 12px; margin: 10px 0 4px; }
.kv dt { color: var(--muted); font-size: 13px; }
.kv dd { margin: 0; overflow-wrap: anywhere; }
.select { user-select: all; }
.d-section { margin-top: 18px; }
details.d-section summary { cursor: pointer; font-size: 12px; font-weight: 600; text-transform: uppercase; letter-spacing: .06em; color: var(--muted); }
pre {
  margin: 6px 0 0; padding: 10px 12px; max-height: 320px; overflow: auto;
  background: var(--surface-2); border: 1px solid var(--border); border-radius: 8px;
  white-space: pre-wrap; overflow-wrap: anywhere;
}
pre.error { color: var(--fail); background: var(--fail-bg); border-color: transparent; }

.timeline { list-style: none; margin: 0; padding: 0 0 0 14px; border-left: 2px solid var(--border); }
.timeline li { position: relative; display: flex; flex-wrap: wrap; gap: 2px 10px; padding: 3px 0 8px; }
.timeline li::before {
  content: ""; position: absolute; left: -20px; top: 8px;
  width: 10px; height: 10px; border-radius: 50%; background: var(--accent); border: 2px solid var(--surface);
}
.timeline li.open::before { background: var(--surface); border-color: var(--idle); }
.tl-label { font-weight: 500; }
.timeline time { color: var(--muted); font-size: 12.5px; font-variant-numeric: tabular-nums; }
.tl-note { flex-basis: 100%; color: var(--muted); font-size: 12.5px; overflow-wrap: anywhere; }
.timeline pre { flex-basis: 100%; margin-top: 2px; font-size: 12.5px; }

/* ---------- toast ---------- */
.toast {
  position: fixed; left: 50%; bottom: 20px; z-index: 30; transform: translateX(-50%);
  max-width: min(560px, 92vw); padding: 10px 16px; border-radius: 8px;
  background: var(--text); color: var(--bg); box-shadow: var(--shadow);
}
.toast.error { background: var(--fail); color: #fff; }

/* ---------- login ---------- */
body.login { min-height: 100vh; display: grid; place-items: center; padding: 24px; }
.login-card {
  width: min(380px, 100%); padding: 28px; display: block;
  background: var(--surface); border: 1px solid var(--border);
  border-radius: 14px; box-shadow: var(--shadow);
}
.login-card p { margin: 8px 0 16px; }
.login-card form { display: grid; gap: 6px; }
.login-card label { display: block; margin-top: 8px; font-size: 13px; color: var(--text); font-weight: 500; }
.login-card input { width: 100%; min-height: 38px; }
.alert { padding: 8px 12px; border-radius: 8px; background: var(--fail-bg); color: var(--fail); }

/* ---------- responsive and motion ---------- */
@media (max-width: 720px) {
  .topbar { padding: 10px 14px; }
  main { padding: 14px 12px 32px; }
  .figures { margin-left: 0; }
  .filters label, .filters .grow { flex: 1 1 140px; }
  .filters .btn { margin-left: 0; }
  .tasks td.err { max-width: 200px; }
  .kv { grid-template-columns: 96px 1fr; }
}
@media (prefers-reduced-motion: reduce) {
  *, *::before, *::after { animation: none !important; transition: none !important; }
}
"""


_APP_JS = r"""// taskflow dashboard: vanilla ES2020, no dependencies, no innerHTML with server data.
(() => {
  'use strict';

  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));
  const ds = document.body.dataset;
  const NL = String.fromCharCode(10); // no backslashes here: this file is embedded in a Python string
  const cfg = {
    base: (ds.base || '').split('/').filter(Boolean).map((p) => `/${p}`).join(''),
    stream: ds.stream,
    csrf: ds.csrf || '',
    showArgs: ds.showArgs === '1',
  };
  const STATUSES = ['scheduled', 'pending', 'running', 'success', 'failed', 'interrupted', 'cancelled'];
  const FINAL = ['success', 'failed', 'interrupted', 'cancelled']; // a task's last status
  const CANCELLABLE = ['scheduled', 'pending', 'running'];
  const RETRYABLE = ['failed', 'interrupted'];
  const WINDOWS = { '15m': 9e5, '1h': 36e5, '24h': 864e5, '7d': 6048e5, all: 0 };
  const SORTS = ['created_at', 'duration', 'func_name', 'status'];
  const DEFAULT_SORT = '-created_at';
  const PAGE = 50;
  const VIEWS = ['all', 'failed', 'schedules'];

  const state = {
    status: '', func: '', q: '', win: 'all', sort: DEFAULT_SORT, offset: 0, total: 0,
    view: 'all', detailId: null, returnTo: null, metrics: null, functions: new Set(), schedules: null,
    kept: null, // the unfiltered list's total as of the cards' counts (the stream's metrics)
  };

  const el = {
    rows: $('#task-rows'), empty: $('#empty'), range: $('#range'), note: $('#history-note'),
    prev: $('#prev'), next: $('#next'),
    status: $('#status-filter'), func: $('#func-filter'), search: $('#search'), win: $('#window-filter'),
    exportLink: $('#export'), live: $('#live'), chart: $('#chart'),
    detail: $('#detail'), detailTitle: $('#detail-title'), detailBody: $('#detail-body'),
    cancel: $('#detail-cancel'), retry: $('#detail-retry'), close: $('#detail-close'),
    tablist: $('.tabs[role="tablist"]'), tabAll: $('#tab-all'), tabFailed: $('#tab-failed'),
    tabSchedules: $('#tab-schedules'), viewAll: $('#view-all'), viewFailed: $('#view-failed'),
    viewSchedules: $('#view-schedules'), scheduleRows: $('#schedule-rows'), schedulesEmpty: $('#schedules-empty'),
    pausedBadge: $('#paused-badge'), showDelayed: $('#show-delayed'), queues: $('#queues'), queueRows: $('#queue-rows'),
    failedRows: $('#failed-rows'), failedAll: $('#failed-all'), failedEmpty: $('#failed-empty'),
    failedInfo: $('#failed-info'), replaySel: $('#replay-selected'), replayAll: $('#replay-all'),
    replayWin: $('#replay-window'), toast: $('#toast'),
  };

  // ---------------------------------------------------------------- helpers

  function h(tag, attrs, ...kids) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null || v === false) continue;
      if (k === 'class') node.className = v;
      else if (k === 'text') node.textContent = String(v);
      else node.setAttribute(k, v === true ? '' : String(v));
    }
    for (const kid of kids.flat()) {
      if (kid != null && kid !== false) node.append(kid instanceof Node ? kid : String(kid));
    }
    return node;
  }

  function s(tag, attrs) {
    const node = document.createElementNS(el.chart.namespaceURI, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    return node;
  }

  // Calls fn once calls stop for ms; with maxWait, at least that often while they go on
  // (a task reporting progress sends an event every 0.25 s: its detail still updates).
  function debounce(fn, ms, maxWait = Infinity) {
    let t = 0, first = 0;
    return (...args) => {
      const now = Date.now();
      if (!t) first = now;
      clearTimeout(t);
      t = setTimeout(() => { t = 0; fn(...args); }, Math.max(0, Math.min(ms, first + maxWait - now)));
    };
  }

  function apiUrl(path, params) {
    const u = new URL((cfg.base + path) || '/', location.href);
    for (const [k, v] of Object.entries(params || {})) {
      for (const item of [].concat(v)) if (item != null && item !== '') u.searchParams.append(k, item);
    }
    return u.pathname + u.search;
  }

  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  async function api(path, { method = 'GET', params, body } = {}) {
    const opts = { method, credentials: 'same-origin', headers: { Accept: 'application/json' } };
    if (method !== 'GET') opts.headers['X-CSRF-Token'] = cfg.csrf;
    if (body !== undefined) {
      opts.headers['Content-Type'] = 'application/json';
      opts.body = JSON.stringify(body);
    }
    const res = await fetch(apiUrl(path, params), opts);
    if (res.status === 401) {
      const next = location.pathname + location.search;
      location.assign(apiUrl('/auth/login', { next }));
      throw new ApiError(401, 'Signed out');
    }
    if (!res.ok) {
      let detail = res.statusText || `HTTP ${res.status}`;
      try {
        const data = await res.json();
        if (typeof data.detail === 'string') detail = data.detail;
        else if (Array.isArray(data.detail) && data.detail[0]?.msg) detail = data.detail[0].msg;
      } catch (_) { /* not JSON */ }
      throw new ApiError(res.status, detail);
    }
    return res;
  }

  const numFmt = new Intl.NumberFormat();
  const timeFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
  const dateFmt = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
  const fullFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });

  const toDate = (iso) => (iso ? new Date(iso) : null);
  function fmtTime(iso) {
    const d = toDate(iso);
    if (!d || isNaN(d)) return '—';
    return d.toDateString() === new Date().toDateString() ? timeFmt.format(d) : dateFmt.format(d);
  }
  const fmtFull = (iso) => { const d = toDate(iso); return d && !isNaN(d) ? fullFmt.format(d) : '—'; };
  function fmtDur(sec) {
    if (sec == null || !isFinite(sec)) return '—';
    if (sec < 1) return `${Math.round(sec * 1000)} ms`;
    if (sec < 60) return `${sec.toFixed(2)} s`;
    if (sec < 3600) return `${Math.floor(sec / 60)}m ${Math.round(sec % 60)}s`;
    return `${Math.floor(sec / 3600)}h ${Math.round((sec % 3600) / 60)}m`;
  }
  const fmtVal = (v) => (typeof v === 'string' ? v : JSON.stringify(v, null, 2));
  const firstLine = (text) => (text ? String(text).split(NL)[0].slice(0, 160) : '');
  const shortId = (id) => String(id || '').slice(0, 8);
  const pill = (status) => h('span', { class: `pill s-${status}`, text: status });
  // Successes among finished tasks that can fail (not cancelled ones); none finished: '–'.
  const rate = (c, digits = 1) => ((c.success || 0) + (c.failed || 0) + (c.interrupted || 0)
    ? `${((c.success_rate || 0) * 100).toFixed(digits)}%` : '–');

  let toastTimer = 0;
  function toast(message, isError = false) {
    el.toast.textContent = message;
    el.toast.classList.toggle('error', isError);
    el.toast.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { el.toast.hidden = true; }, isError ? 6000 : 3500);
  }
  const fail = (err) => { if (!(err instanceof ApiError && err.status === 401)) toast(err.message || String(err), true); };

  // ------------------------------------------------------- filters and URL

  function filterParams() {
    const p = { status: state.status, func_name: state.func, q: state.q };
    if (WINDOWS[state.win]) p.since = new Date(Date.now() - WINDOWS[state.win]).toISOString();
    return p;
  }

  function readUrl() {
    const p = new URLSearchParams(location.search);
    state.status = STATUSES.includes(p.get('status')) ? p.get('status') : '';
    state.func = p.get('func_name') || '';
    state.q = p.get('q') || '';
    state.win = p.get('window') in WINDOWS ? p.get('window') : 'all';
    const sort = p.get('sort') || '';
    state.sort = SORTS.includes(sort.replace(/^-/, '')) ? sort : DEFAULT_SORT;
    state.view = VIEWS.includes(p.get('view')) ? p.get('view') : 'all';
    el.status.value = state.status;
    el.search.value = state.q;
    el.win.value = state.win;
    if (state.func) addFunctions([state.func]);
  }

  function writeUrl() {
    const p = new URLSearchParams();
    if (state.status) p.set('status', state.status);
    if (state.func) p.set('func_name', state.func);
    if (state.q) p.set('q', state.q);
    if (state.win !== 'all') p.set('window', state.win);
    if (state.sort !== DEFAULT_SORT) p.set('sort', state.sort);
    if (state.view !== 'all') p.set('view', state.view);
    const qs = p.toString();
    history.replaceState(null, '', location.pathname + (qs ? `?${qs}` : '') + location.hash);
  }

  function updateExport() {
    el.exportLink.href = apiUrl('/export.csv', { ...filterParams(), sort: state.sort });
  }

  function filtersChanged() {
    state.offset = 0;
    writeUrl();
    updateExport();
    loadPage();
  }

  function matchesFilters(t) {
    if (state.status && t.status !== state.status) return false;
    if (state.func && t.func_name !== state.func) return false;
    if (WINDOWS[state.win] && new Date(t.created_at) < Date.now() - WINDOWS[state.win]) return false;
    if (state.q) {  // the server's q: id prefix, or part of name, error or a tag value
      const q = state.q.toLowerCase();
      const has = (v) => typeof v === 'string' && v.toLowerCase().includes(q);
      if (!(t.task_id.startsWith(q) || has(t.func_name) || has(t.error) || Object.values(t.tags || {}).some(has))) return false;
    }
    return true;
  }

  function addFunctions(names) {
    let changed = false;
    for (const n of names) if (n && !state.functions.has(n)) { state.functions.add(n); changed = true; }
    if (!changed) return;
    const all = [...state.functions].sort((a, b) => a.localeCompare(b));
    el.func.replaceChildren(h('option', { value: '', text: 'All functions' }),
      ...all.map((n) => h('option', { value: n, text: n })));
    el.func.value = state.func;
  }

  async function loadFunctions() {
    try {
      const data = await (await api('/functions')).json();
      const list = Array.isArray(data) ? data : Object.keys(data || {});
      addFunctions(list.map((f) => (typeof f === 'string' ? f : f?.name || f?.func_name)));
    } catch (err) { fail(err); }
  }

  // ------------------------------------------------------------- task table

  function fillRow(tr, t) {
    tr.dataset.status = t.status;
    tr.setAttribute('aria-label', `${t.func_name} ${t.status}, task ${shortId(t.task_id)}`);
    const tags = Object.entries(t.tags || {}).slice(0, 3).map(([k, v]) => h('span', { class: 'tag', text: `${k}=${v}` }));
    tr.replaceChildren(
      h('td', { class: 'func' }, h('span', { class: 'fname', text: t.func_name }), tags),
      h('td', { class: 'status' }, pill(t.status), progressBar(t)),
      h('td', { class: 'mono id', title: t.task_id, text: shortId(t.task_id) }),
      h('td', { class: 'time', title: fmtFull(t.created_at), text: fmtTime(t.created_at) }),
      h('td', { class: 'num', text: fmtDur(t.duration) }),
      h('td', { class: 'num', text: t.retries_used || 0 }),
      // A cancelled task's reason is no failure: shown plainly, not as an error; a
      // scheduled one shows when it runs.
      t.status === 'scheduled'
        ? h('td', { class: 'err neutral', title: fmtFull(t.run_at), text: `runs ${fmtTime(t.run_at)}` })
        : h('td', { class: t.status === 'cancelled' ? 'err neutral' : 'err', title: t.error || null, text: firstLine(t.error) }),
    );
  }

  // A running task that reports task_progress(): a bar, with its message as the label.
  function progressBar(t) {
    if (t.status !== 'running' || t.progress == null) return null;
    const label = progressLabel(t);
    return h('progress', { class: 'progress', max: 100, value: Math.round(t.progress * 100), 'aria-label': label, title: label });
  }
  function progressLabel(t) {
    const pct = Math.round(t.progress * 100);
    return t.progress_message ? `${pct}% – ${t.progress_message}` : `${pct}%`;
  }

  function makeRow(t) {
    const tr = h('tr', { tabindex: 0, 'data-task-id': t.task_id, 'data-created': t.created_at || '' });
    fillRow(tr, t);
    return tr;
  }

  const rowById = (root, id) => $$('tr[data-task-id]', root).find((tr) => tr.dataset.taskId === id);
  // A final status is a task's last: a row showing one never takes an earlier state
  // (from a list fetched before the change, or an event that arrived while it loaded).
  const older = (tr, t) => FINAL.includes(tr.dataset.status) && !FINAL.includes(t.status);
  const unfiltered = () => !state.status && !state.func && !state.q && !WINDOWS[state.win];

  let listed = false; // the list loaded once: before, the pager has nothing to say
  function updatePager() {
    if (!listed) return;
    const n = el.rows.children.length;
    // Without filters the total is the one the cards' counts go with (same change).
    if (unfiltered() && state.kept != null) state.total = state.kept;
    el.range.textContent = (n ? `${state.offset + 1}–${state.offset + n} of ${numFmt.format(state.total)}`
      : `0 of ${numFmt.format(state.total)}`)
      // A search looks at the newest tasks only (X-Search-Window): say so once there are more.
      + (state.q && state.window && state.kept > state.window
        ? ` in the newest ${numFmt.format(state.window)}` : '');
    el.prev.disabled = state.offset === 0;
    el.next.disabled = state.offset + n >= state.total;
    el.empty.hidden = n > 0;
    // Without snapshot_db only the last max_history finished tasks stay listable;
    // the counters count every task this process ran.
    const m = state.metrics;
    const dropped = m && state.kept != null && state.kept < m.total;
    el.note.hidden = !dropped;
    el.note.textContent = dropped
      ? `Only the last ${numFmt.format(state.kept)} tasks are kept in memory; the counters include older ones.` : '';
  }

  function updateSortHeaders() {
    const key = state.sort.replace(/^-/, '');
    for (const btn of $$('button.sort')) {
      const th = btn.closest('th');
      th.setAttribute('aria-sort', btn.dataset.sort !== key ? 'none'
        : state.sort.startsWith('-') ? 'descending' : 'ascending');
    }
  }

  // Task events that arrive while the list loads may be newer than what it returns:
  // they are applied again on top of it (id -> { seq, t }, for the latest request),
  // except those the list reflects (its X-Change-Seq, when it counts the stream's changes).
  let listSeq = 0, inflight = null;
  async function loadPage() {
    const seq = ++listSeq;
    const during = inflight = new Map();
    updateSortHeaders();
    try {
      const res = await api('', { params: { ...filterParams(), sort: state.sort, limit: PAGE, offset: state.offset } });
      const tasks = await res.json();
      if (seq !== listSeq) return;
      inflight = null;
      listed = true;
      state.total = Number(res.headers.get('X-Total-Count') ?? tasks.length) || 0;
      state.window = Number(res.headers.get('X-Search-Window')) || null;
      if (!tasks.length && state.offset > 0 && state.total > 0) {
        state.offset = Math.floor((state.total - 1) / PAGE) * PAGE;
        return loadPage();
      }
      const focusedId = document.activeElement?.closest?.('#task-rows tr')?.dataset.taskId;
      const shown = new Map($$('tr[data-task-id]', el.rows).map((tr) => [tr.dataset.taskId, tr]));
      el.rows.replaceChildren(...tasks.map((t) => {
        const tr = shown.get(t.task_id);
        return tr && older(tr, t) ? tr : makeRow(t);
      }));
      const same = streamSource && res.headers.get('X-Change-Source') === streamSource;
      const upTo = same ? Number(res.headers.get('X-Change-Seq')) : NaN;
      for (const { seq: at, t } of during.values()) {
        if (at <= upTo) continue;
        const tr = rowById(el.rows, t.task_id);
        if (tr) { if (!older(tr, t)) fillRow(tr, t); } else if (!arrivals.has(t.task_id)) arrivals.set(t.task_id, { seq: at, t });
      }
      addFunctions(tasks.map((t) => t.func_name));
      state.total += flushArrivals(countedUpTo ?? -1); // new ones the cards count already
      if (focusedId) rowById(el.rows, focusedId)?.focus();
      markSelected();
      updatePager();
    } catch (err) {
      if (seq === listSeq) { inflight = null; fail(err); }
    }
  }

  function markSelected() {
    for (const tr of $$('tr.selected')) tr.classList.remove('selected');
    if (state.detailId) $$('tr[data-task-id], tr[data-failed-id]')
      .filter((tr) => (tr.dataset.taskId || tr.dataset.failedId) === state.detailId)
      .forEach((tr) => tr.classList.add('selected'));
  }

  function flash(tr) {
    tr.classList.remove('flash');
    void tr.offsetWidth; // restart the animation
    tr.classList.add('flash');
  }

  const listsNew = () => state.offset === 0 && state.sort === DEFAULT_SORT;

  // Put a task the page does not show yet in its place (newest first); true if it went in.
  function insertRow(t) {
    if (!listsNew() || !matchesFilters(t) || rowById(el.rows, t.task_id)) return false;
    const created = new Date(t.created_at);
    const before = $$('tr[data-task-id]', el.rows).find((r) => new Date(r.dataset.created) < created);
    if (!before && el.rows.children.length >= PAGE) return false;
    const row = makeRow(t);
    el.rows.insertBefore(row, before || null);
    flash(row);
    while (el.rows.children.length > PAGE) el.rows.lastElementChild.remove();
    return true;
  }

  // New tasks wait for the metrics event that counts them (id -> { seq, t }): the rows,
  // the list's total and the cards then change together.
  const arrivals = new Map();
  let countedUpTo = null; // the change the last metrics event from the stream counts up to
  let streamSource = null; // whose change numbers the stream's ids are
  function flushArrivals(upTo) {
    let added = 0;
    for (const [id, { seq, t }] of arrivals) {
      if (upTo != null && seq > upTo) continue;
      arrivals.delete(id);
      if (insertRow(t)) added += 1;
    }
    return added;
  }

  // Apply one `task` event from the stream (`seq`: its id, the change number) to the page.
  function onTask(t, seq) {
    if (!t || !t.task_id) return;
    if (inflight) inflight.set(t.task_id, { seq, t });
    const tr = rowById(el.rows, t.task_id);
    const waiting = arrivals.get(t.task_id);
    if (tr) {
      if (!older(tr, t)) {
        // A running task's progress (or log) changes often: its bar moves, the row does not flash.
        const quiet = t.status === 'running' && tr.dataset.status === 'running';
        fillRow(tr, t);
        if (!quiet) flash(tr);
        if (!matchesFilters(t)) scheduleRefresh();
      }
    } else if (waiting) {
      if (!FINAL.includes(waiting.t.status) || FINAL.includes(t.status)) waiting.t = t;
    } else if (listsNew() && matchesFilters(t)) {
      arrivals.set(t.task_id, { seq, t });
    }
    addFunctions([t.func_name]);
    if (state.detailId === t.task_id) reloadDetail();
    if (state.view === 'failed' && (RETRYABLE.includes(t.status)
      || $$('tr[data-failed-id]', el.failedRows).some((r) => r.dataset.failedId === t.task_id))) reloadFailed();
  }

  // ------------------------------------------------------ metrics and chart

  // A metrics event from the stream: the new tasks it counts join the list, and the
  // list's total and the cards change together, from the same change.
  function onMetrics(m) {
    if (!m) return;
    countedUpTo = m.seq ?? null;
    streamSource = m.source ?? null;
    const added = flushArrivals(countedUpTo);
    state.kept = m.kept ?? null;
    // The page is served but the task manager never started (e.g. a mounted app whose
    // lifespan did not run): tasks wait, so say so instead of "Live".
    if (m.manager_running === false) {
      setLive('stopped');
      el.live.title = 'The task manager is not running: tasks wait. See docs/lifecycle.md, "Mounted apps".';
    } else if (el.live.dataset.state === 'stopped') setLive('live');
    state.total += added; // updatePager takes `kept` instead when nothing is filtered
    renderMetrics(m);
    if (state.view === 'schedules') reloadSchedules(); // a run started or ended, maybe
    // Rows of tasks dropped from memory (max_history) get no event: reload without them.
    if (listed && unfiltered() && state.kept != null && state.offset + el.rows.children.length > state.kept) loadPage();
  }

  function renderMetrics(m) {
    if (!m) return;
    state.metrics = m;
    for (const key of ['total', ...STATUSES]) {
      const node = $(`[data-count="${key}"]`);
      if (node) node.textContent = numFmt.format(m[key] || 0);
    }
    $('[data-count="success_rate"]').textContent = rate(m);
    updatePager();
    $('#failed-badge').textContent = m.failed || m.interrupted ? numFmt.format((m.failed || 0) + (m.interrupted || 0)) : '';
    const d = m.duration || {};
    $('#fig-p50').textContent = fmtDur(d.p50);
    $('#fig-p95').textContent = fmtDur(d.p95);
    $('#fig-avg').textContent = fmtDur(d.avg ?? m.avg_duration_seconds);
    $('#fig-max').textContent = fmtDur(d.max);
    addFunctions(Object.keys(m.functions || {}));
    renderChart(Array.isArray(m.per_minute) ? m.per_minute : []);
    renderQueues(m.queues);
    const delayed = m.scheduled || 0;
    el.showDelayed.hidden = !delayed;
    el.showDelayed.textContent = delayed === 1 ? 'Show the delayed one-off run'
      : `Show the ${numFmt.format(delayed)} delayed one-off runs`;
  }

  // The queues of the process serving the page: only worth a panel with more than the
  // default one, or limits on it.
  function renderQueues(queues) {
    const entries = Object.entries(queues || {});
    const show = entries.length > 1 || entries.some(([, q]) => q.concurrency != null || q.max_size != null);
    el.queues.hidden = !show;
    if (!show) return;
    const limit = (n) => (n == null ? h('span', { class: 'none', text: 'no limit' }) : numFmt.format(n));
    el.queueRows.replaceChildren(...entries.map(([name, q]) => {
      const full = q.max_size != null && q.waiting >= q.max_size;
      return h('tr', { 'data-queue': name },
        h('th', { scope: 'row', text: name }),
        h('td', { class: full ? 'num full' : 'num', 'data-col': 'waiting', title: full ? 'Full: new tasks are refused (503)' : null },
          numFmt.format(q.waiting || 0), full ? ' (full)' : ''),
        h('td', { class: 'num', 'data-col': 'max_size' }, limit(q.max_size)),
        h('td', { class: 'num', 'data-col': 'running', text: numFmt.format(q.running || 0) }),
        h('td', { class: 'num', 'data-col': 'concurrency' }, limit(q.concurrency)),
        h('td', { class: 'num', 'data-col': 'done', text: numFmt.format(q.done || 0) }),
        h('td', { class: 'num', 'data-col': 'done_last_minute', text: numFmt.format(q.done_last_minute || 0) }));
    }));
  }

  function renderChart(series) {
    const W = 600, H = 120, n = Math.max(series.length, 1), bw = W / n;
    const peak = Math.max(1, ...series.map((p) => (p.success || 0) + (p.failed || 0)));
    let sumOk = 0, sumFail = 0;
    const nodes = [0.5, 1].map((f) => s('line', { x1: 0, x2: W, y1: H - f * (H - 4), y2: H - f * (H - 4), class: 'grid' }));
    series.forEach((p, i) => {
      const ok = p.success || 0, bad = p.failed || 0;
      sumOk += ok; sumFail += bad;
      const g = s('g', { class: 'slot' });
      const title = s('title');
      title.textContent = `${fmtTime(p.minute)}: ${ok} completed, ${bad} failed`;
      g.append(title, s('rect', { x: i * bw, y: 0, width: bw, height: H, class: 'hit' }));
      const hOk = (ok / peak) * (H - 4), hBad = (bad / peak) * (H - 4), x = i * bw + bw * 0.15, w = bw * 0.7;
      if (ok) g.append(s('rect', { x, y: H - hOk, width: w, height: hOk, class: 'bar ok' }));
      if (bad) g.append(s('rect', { x, y: H - hOk - hBad, width: w, height: hBad, class: 'bar fail' }));
      nodes.push(g);
    });
    el.chart.replaceChildren(...nodes);
    el.chart.setAttribute('aria-label', `Last ${series.length} minutes: ${sumOk} completed, ${sumFail} failed`);
    $('#chart-peak').textContent = `${peak}/min`;
    $('#sum-ok').textContent = numFmt.format(sumOk);
    $('#sum-fail').textContent = numFmt.format(sumFail);
  }

  // Before the stream's first metrics event only: later counts come with the stream.
  async function loadMetrics() {
    try {
      const m = await (await api('/metrics')).json();
      if (!state.metrics) renderMetrics(m);
    } catch (err) { fail(err); }
  }

  // ------------------------------------------------------------ detail panel

  const kv = (label, value) => [h('dt', { text: label }), h('dd', {}, value)];
  const section = (title, ...kids) => h('section', { class: 'd-section' }, h('h3', { text: title }), ...kids);
  const taskLink = (id) => h('a', { href: `#task=${encodeURIComponent(id)}`, class: 'mono', title: id, text: shortId(id) });

  function offset(from, iso) {
    const a = toDate(from), b = toDate(iso);
    return a && b ? `+${fmtDur(Math.max(0, (b - a) / 1000))}` : '';
  }

  // Created, then each attempt once with how it ended (its error in full), then the end.
  // One attempt is just Started: its error, if any, is the task's, shown below.
  function timeline(t) {
    const attempts = t.attempts || [];
    const items = [['Created', t.created_at, null]];
    if (attempts.length > 1) {
      for (const a of attempts) {
        const took = a.start_time && a.end_time ? ` after ${fmtDur((toDate(a.end_time) - toDate(a.start_time)) / 1000)}` : '';
        const note = a.error && a.error !== 'cancelled'
          ? [h('span', { class: 'tl-note', text: `failed${took}` }), h('pre', { class: 'error', text: a.error })]
          : h('span', { class: 'tl-note', text: a.error ? `cancelled${took}` : a.end_time ? `ok${took}` : 'in progress' });
        items.push([`Attempt ${a.attempt}`, a.start_time, note]);
      }
    } else if (t.start_time) items.push(['Started', t.start_time, null]);
    if (t.end_time) items.push([`Ended (${t.status})`, t.end_time, null]);
    else items.push([t.status === 'running' ? 'Running…' : 'Waiting…', null, null]);
    return h('ol', { class: 'timeline' }, items.map(([label, iso, note]) => h('li', { class: iso ? '' : 'open' },
      h('span', { class: 'tl-label', text: label }),
      h('time', { datetime: iso || null, title: fmtFull(iso), text: iso ? `${fmtTime(iso)} ${offset(t.created_at, iso)}` : '' }),
      note)));
  }

  function renderDetail(t) {
    el.detailTitle.textContent = t.func_name;
    el.cancel.hidden = !CANCELLABLE.includes(t.status);
    el.retry.hidden = !RETRYABLE.includes(t.status);
    const tags = Object.entries(t.tags || {});
    const fn = state.metrics?.functions?.[t.func_name];
    const logs = t.logs || [];
    // A cancelled task's reason is no failure; "cancelled" alone repeats the status.
    const reason = t.status === 'cancelled' ? (t.error !== 'cancelled' && t.error) : null;
    const parts = [
      h('dl', { class: 'kv' },
        kv('Status', h('span', { id: 'detail-status', class: `pill s-${t.status}`, text: t.cancel_requested ? 'cancel requested — the thread finishes its current call' : t.status })),
        kv('Task id', h('code', { class: 'mono select', text: t.task_id })),
        kv('Created', fmtFull(t.created_at)),
        t.run_at ? kv('Runs at', t.status === 'scheduled' ? `${fmtFull(t.run_at)} (${fromNow(t.run_at)})` : fmtFull(t.run_at)) : [],
        t.status === 'running' && t.progress != null
          ? kv('Progress', [progressBar(t), h('span', { id: 'detail-progress', text: progressLabel(t) })]) : [],
        kv('Started', fmtFull(t.start_time)),
        kv('Ended', fmtFull(t.end_time)),
        kv('Duration', fmtDur(t.duration)),
        kv('Retries used', String(t.retries_used || 0)),
        tags.length ? kv('Tags', tags.map(([k, v]) => h('span', { class: 'tag', text: `${k}=${v}` }))) : [],
        t.retry_of ? kv('Retry of', taskLink(t.retry_of)) : [],
        t.retried_as ? kv('Replayed as', taskLink(t.retried_as)) : [],
        t.instance ? kv('Instance', h('span', { class: 'mono', text: t.instance })) : [],
        fn ? kv('This function', `${fn.total} runs · ${rate(fn, 0)} ok · p50 ${fmtDur(fn.p50)} · p95 ${fmtDur(fn.p95)}`) : []),
      section('Timeline', timeline(t)),
      cfg.showArgs ? section('Arguments', h('pre', { class: 'code', text: [
        ...[].concat(t.args ?? []).map(fmtVal),
        ...Object.entries(t.kwargs || {}).map(([k, v]) => `${k} = ${fmtVal(v)}`),
      ].join(NL) || '(none)' })) : null,
      section(`Logs (${logs.length})`, logs.length ? h('pre', { class: 'code logs', text: logs.join(NL) })
        : h('p', { class: 'muted', text: 'No log lines.' })),
      reason ? section('Reason', h('pre', { class: 'code', text: reason }))
        : t.error && t.status !== 'cancelled' ? section('Error', h('pre', { class: 'error', text: t.error })) : null,
      t.stacktrace ? h('details', { class: 'd-section', 'data-key': 'stack' },
        h('summary', { text: 'Stack trace' }), h('pre', { class: 'code', text: t.stacktrace })) : null,
    ];
    const open = new Set($$('details[open]', el.detailBody).map((d) => d.dataset.key));
    const scroll = el.detail.scrollTop;
    el.detailBody.replaceChildren(...parts.filter(Boolean));
    for (const d of $$('details', el.detailBody)) if (open.has(d.dataset.key)) d.open = true;
    el.detail.scrollTop = scroll;
  }

  let detailSeq = 0;
  async function openDetail(id, { focus = true } = {}) {
    if (!id) return;
    const seq = ++detailSeq;
    if (el.detail.hidden) state.returnTo = document.activeElement;
    if (state.detailId !== id) {
      el.detailTitle.textContent = 'Loading…';
      el.detailBody.replaceChildren();
      el.cancel.hidden = el.retry.hidden = true;
    }
    state.detailId = id;
    el.detail.hidden = false;
    document.body.classList.add('detail-open');
    if (location.hash !== `#task=${encodeURIComponent(id)}`) {
      history.replaceState(null, '', `${location.pathname}${location.search}#task=${encodeURIComponent(id)}`);
    }
    markSelected();
    if (focus) el.detail.focus();
    try {
      const t = await (await api(`/${encodeURIComponent(id)}`)).json();
      if (seq === detailSeq && state.detailId === id) renderDetail(t);
    } catch (err) {
      if (seq !== detailSeq) return;
      if (err.status === 404) {
        el.detailTitle.textContent = 'Task not found';
        el.detailBody.replaceChildren(h('p', { class: 'muted', text: `No task with id ${id}.` }));
      } else fail(err);
    }
  }

  const reloadDetail = debounce(() => { if (state.detailId) openDetail(state.detailId, { focus: false }); }, 400, 1000);

  function closeDetail() {
    if (el.detail.hidden) return;
    const id = state.detailId;
    state.detailId = null;
    el.detail.hidden = true;
    document.body.classList.remove('detail-open');
    history.replaceState(null, '', location.pathname + location.search);
    markSelected();
    const back = state.returnTo && document.contains(state.returnTo) ? state.returnTo
      : rowById(el.rows, id) || $$('tr[data-failed-id]').find((r) => r.dataset.failedId === id);
    back?.focus?.();
  }

  async function act(button, path, body) {
    button.disabled = true;
    try {
      return await (await api(path, { method: 'POST', body })).json();
    } finally {
      button.disabled = false;
    }
  }

  el.cancel.addEventListener('click', async () => {
    const id = state.detailId;
    try {
      await act(el.cancel, `/${encodeURIComponent(id)}/cancel`);
      toast(`Cancel requested for ${shortId(id)}`);
      openDetail(id, { focus: false });
    } catch (err) { fail(err); }
  });

  el.retry.addEventListener('click', async () => {
    const id = state.detailId;
    try {
      const res = await act(el.retry, `/${encodeURIComponent(id)}/retry`);
      toast(`Retried as ${shortId(res.task_id)}`);
      await openDetail(res.task_id, { focus: false });
      el.detail.focus();
    } catch (err) { fail(err); }
  });

  el.close.addEventListener('click', closeDetail);
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && !el.detail.hidden) { e.preventDefault(); closeDetail(); }
  });
  window.addEventListener('hashchange', () => {
    const m = /^#task=(.+)$/.exec(location.hash);
    if (m) openDetail(decodeURIComponent(m[1]));
  });

  // Rows: click or Enter opens the detail panel; arrow keys move between rows.
  function wireRows(tbody, idOf) {
    tbody.addEventListener('click', (e) => {
      if (e.target.closest('input, a, button, label')) return;
      const tr = e.target.closest('tr');
      if (tr) openDetail(idOf(tr));
    });
    tbody.addEventListener('keydown', (e) => {
      const tr = e.target.closest('tr');
      if (!tr || e.target !== tr) return;
      if (e.key === 'Enter') { e.preventDefault(); openDetail(idOf(tr)); }
      else if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
        e.preventDefault();
        (e.key === 'ArrowDown' ? tr.nextElementSibling : tr.previousElementSibling)?.focus();
      }
    });
  }
  wireRows(el.rows, (tr) => tr.dataset.taskId);
  wireRows(el.failedRows, (tr) => tr.dataset.failedId);

  // ------------------------------------------------------------ failed view

  let failedSeq = 0;
  let showReplayed = false;
  el.failedInfo.addEventListener('click', (e) => {
    if (e.target.id === 'toggle-replayed') { showReplayed = !showReplayed; loadFailed(); }
  });
  async function loadFailed() {
    const seq = ++failedSeq;
    try {
      const res = await api('', { params: { status: RETRYABLE, sort: '-created_at', limit: 200 } });
      const all = await res.json();
      if (seq !== failedSeq) return;
      // Failures already replayed are hidden unless asked: replaying them again repeats work.
      const replayed = all.filter((t) => t.retried_as).length;
      const tasks = showReplayed ? all : all.filter((t) => !t.retried_as);
      const total = (Number(res.headers.get('X-Total-Count') ?? all.length) || 0) - (showReplayed ? 0 : replayed);
      const checked = new Set($$('input[name="replay"]:checked', el.failedRows).map((c) => c.value));
      el.failedRows.replaceChildren(...tasks.map((t) => h('tr', { tabindex: 0, 'data-failed-id': t.task_id },
        h('td', { class: 'check' }, h('input', { type: 'checkbox', name: 'replay', value: t.task_id,
          checked: checked.has(t.task_id), 'aria-label': `Select ${t.func_name} ${shortId(t.task_id)}` })),
        h('td', { class: 'func' }, h('span', { class: 'fname', text: t.func_name })),
        h('td', {}, pill(t.status), t.retried_as ? h('span', { class: 'replayed' }, ' replayed as ', taskLink(t.retried_as)) : null),
        h('td', { class: 'mono id', title: t.task_id, text: shortId(t.task_id) }),
        h('td', { class: 'time', title: fmtFull(t.end_time), text: fmtTime(t.end_time) }),
        h('td', { class: 'err', title: t.error || null, text: firstLine(t.error) }))));
      el.failedEmpty.hidden = tasks.length > 0;
      el.failedInfo.replaceChildren(
        tasks.length < total ? `Showing ${tasks.length} of ${numFmt.format(total)} ` : '',
        replayed ? h('button', { type: 'button', class: 'linkish', id: 'toggle-replayed',
          text: showReplayed ? 'Hide replayed' : `Show ${replayed} already replayed` }) : '');
      markSelected();
      updateSelection();
    } catch (err) {
      if (seq === failedSeq) fail(err);
    }
  }
  const reloadFailed = debounce(loadFailed, 500);

  function updateSelection() {
    const boxes = $$('input[name="replay"]', el.failedRows);
    const n = boxes.filter((b) => b.checked).length;
    el.replaySel.disabled = n === 0;
    el.replaySel.textContent = n ? `Replay selected (${n})` : 'Replay selected';
    el.failedAll.checked = n > 0 && n === boxes.length;
    el.failedAll.indeterminate = n > 0 && n < boxes.length;
  }

  el.failedRows.addEventListener('change', updateSelection);
  el.failedAll.addEventListener('change', () => {
    for (const b of $$('input[name="replay"]', el.failedRows)) b.checked = el.failedAll.checked;
    updateSelection();
  });

  const replayed = (r) => toast(`Dispatched ${r.dispatched}, skipped ${r.skipped}`);

  el.replaySel.addEventListener('click', async () => {
    const ids = $$('input[name="replay"]:checked', el.failedRows).map((b) => b.value);
    if (!ids.length) return;
    try {
      replayed(await act(el.replaySel, '/bulk-retry', { task_ids: ids }));
      for (const b of $$('input[name="replay"]', el.failedRows)) b.checked = false;
      loadFailed();
    } catch (err) { fail(err); }
  });

  el.replayAll.addEventListener('click', async () => {
    const since = el.replayWin.value;
    const label = el.replayWin.selectedOptions[0].textContent;
    const scope = state.func ? ` of ${state.func}` : '';
    const when = since === 'all' ? 'ever' : `in the last ${label}`;
    if (!window.confirm(`Replay every failed or interrupted task${scope} created ${when}?`)) return;
    try {
      const params = new URLSearchParams({ since });
      if (state.func) params.set('func_name', state.func);
      replayed(await act(el.replayAll, `/retry-failed?${params}`));
      loadFailed();
    } catch (err) { fail(err); }
  });

  // ------------------------------------------------------------ schedules

  const WEEKDAYS = ['Sunday', 'Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday'];
  const MONTHS = ['January', 'February', 'March', 'April', 'May', 'June', 'July', 'August',
    'September', 'October', 'November', 'December'];
  const SPANS = [[604800, 'week'], [86400, 'day'], [3600, 'hour'], [60, 'minute'], [1, 'second']];
  const CRON_ALIASES = { '@hourly': '0 * * * *', '@daily': '0 0 * * *', '@midnight': '0 0 * * *',
    '@weekly': '0 0 * * 0', '@monthly': '0 0 1 * *', '@yearly': '0 0 1 1 *', '@annually': '0 0 1 1 *' };
  const plural = (n, unit) => (n === 1 ? unit : `${numFmt.format(n)} ${unit}s`);

  // A schedule's rhythm in words: "every 5 minutes", "every day at 03:00 (Europe/Paris)".
  function everyWords(sec) {
    for (const [n, unit] of SPANS) if (sec >= n && sec % n === 0) return `every ${plural(sec / n, unit)}`;
    return `every ${numFmt.format(sec)} seconds`;
  }

  // The common crontab lines in words; null for the others (shown as written).
  function cronWords(line) {
    const f = (CRON_ALIASES[line.trim().toLowerCase()] || line).split(' ').filter(Boolean);
    if (f.length !== 5) return null;
    const [mi, ho, dom, mon, dow] = f;
    const num = (x) => /^[0-9]+$/.test(x);
    const step = (x) => (x.startsWith('*/') && num(x.slice(2)) ? Number(x.slice(2)) : 0);
    const at = num(mi) && num(ho) ? `${ho.padStart(2, '0')}:${mi.padStart(2, '0')}` : null;
    if (dom === '*' && mon === '*' && dow === '*') {
      if (mi === '*' && ho === '*') return 'every minute';
      if (step(mi) && ho === '*') return `every ${plural(step(mi), 'minute')}`;
      if (num(mi) && ho === '*') return `every hour at minute ${Number(mi)}`;
      if (num(mi) && step(ho)) return `every ${plural(step(ho), 'hour')} at minute ${Number(mi)}`;
      return at && `every day at ${at}`;
    }
    if (!at) return null;
    if (dom === '*' && mon === '*' && num(dow) && Number(dow) <= 7) return `every ${WEEKDAYS[Number(dow) % 7]} at ${at}`;
    if (dom === '*' && mon === '*' && dow === '1-5') return `every weekday at ${at}`;
    if (num(dom) && mon === '*' && dow === '*') return `on day ${Number(dom)} of every month at ${at}`;
    if (num(dom) && num(mon) && dow === '*' && MONTHS[Number(mon) - 1]) return `every year on ${MONTHS[Number(mon) - 1]} ${Number(dom)} at ${at}`;
    return null;
  }

  function ruleParts(sc) {
    if (sc.every != null) return [everyWords(sc.every)];
    if (!sc.cron) return [sc.rule || '—'];
    const words = cronWords(sc.cron), zone = ` (${sc.timezone || 'UTC'})`;
    return words ? [words + zone, h('code', { class: 'rule-raw', text: sc.cron })] : [`cron ${sc.cron}${zone}`];
  }

  // "in 5m 3s", "2h 4m ago": kept current by the refreshes (data-rel holds the time).
  function fromNow(iso) {
    const d = toDate(iso);
    if (!d || isNaN(d)) return '';
    const sec = Math.round((d - Date.now()) / 1000);
    const span = (n) => (n < 60 ? `${n} s` : fmtDur(n));
    return sec >= 1 ? `in ${span(sec)}` : sec <= -1 ? `${span(-sec)} ago` : 'now';
  }
  const when = (iso) => h('span', { class: 'when', 'data-rel': iso, text: fromNow(iso) });

  // Rows stay in place across refreshes (only changed cells are rebuilt), so a focused
  // button or link keeps its focus.
  function scheduleRow(name) {
    const tr = h('tr', { 'data-schedule': name },
      h('td', {}, h('button', { type: 'button', class: 'linkish fname', 'data-act': 'runs', title: 'Show its runs in All tasks' },
        name, h('span', { class: 'sr-only', text: ': show its runs' }))),
      ...['rule', 'next', 'last', 'last-status', 'state'].map((k) => h('td', { class: `sc-${k}` })),
      h('td', {}, h('div', { class: 'actions' },
        h('button', { type: 'button', class: 'btn small', 'data-act': 'toggle' }),
        h('button', { type: 'button', class: 'btn small', 'data-act': 'run', text: 'Run now', 'aria-label': `Run now: ${name}` }))));
    return tr;
  }

  function setCell(td, key, build) {
    if (td.dataset.key === key) return;
    td.dataset.key = key;
    td.replaceChildren(...[].concat(build()));
  }

  function fillSchedule(tr, sc) {
    const cell = (k) => $(`.sc-${k}`, tr);
    cell('rule').title = sc.rule || '';
    setCell(cell('rule'), `${sc.rule}`, () => ruleParts(sc));
    setCell(cell('next'), `${sc.paused}|${sc.next_run}`, () => (sc.paused || !sc.next_run
      ? h('span', { class: 'muted', text: sc.paused ? 'paused' : '—' })
      : [h('time', { datetime: sc.next_run, title: fmtFull(sc.next_run), text: fmtTime(sc.next_run) }), when(sc.next_run)]));
    setCell(cell('last'), `${sc.last_run}|${sc.last_task_id}`, () => (sc.last_run
      ? [h('time', { datetime: sc.last_run, title: fmtFull(sc.last_run), text: fmtTime(sc.last_run) }),
        h('span', { class: 'when' }, h('span', { 'data-rel': sc.last_run, text: fromNow(sc.last_run) }),
          sc.last_task_id ? [' · ', taskLink(sc.last_task_id)] : [])]
      : h('span', { class: 'muted', text: 'not yet' })));
    setCell(cell('last-status'), `${sc.last_status}`, () => (sc.last_status ? pill(sc.last_status) : h('span', { class: 'muted', text: '—' })));
    setCell(cell('state'), `${sc.paused}`, () => h('span', { class: `pill s-${sc.paused ? 'paused' : 'active'}`, text: sc.paused ? 'paused' : 'active' }));
    const toggle = $('button[data-act="toggle"]', tr);
    toggle.textContent = sc.paused ? 'Resume' : 'Pause';
    toggle.setAttribute('aria-label', `${sc.paused ? 'Resume' : 'Pause'} ${sc.name}`);
    toggle.dataset.next = sc.paused ? 'resume' : 'pause';
    for (const node of $$('[data-rel]', tr)) node.textContent = fromNow(node.dataset.rel);
  }

  function renderSchedules(list) {
    state.schedules = list;
    el.tabSchedules.hidden = !list.length;
    if (!list.length && state.view === 'schedules') setView('all');
    const shown = new Map($$('tr[data-schedule]', el.scheduleRows).map((tr) => [tr.dataset.schedule, tr]));
    const rows = list.map((sc) => {
      const tr = shown.get(sc.name) || scheduleRow(sc.name);
      fillSchedule(tr, sc);
      return tr;
    });
    if (rows.length !== el.scheduleRows.children.length || rows.some((tr, i) => el.scheduleRows.children[i] !== tr)) {
      el.scheduleRows.replaceChildren(...rows);
    }
    el.schedulesEmpty.hidden = list.length > 0;
    const paused = list.filter((sc) => sc.paused).length;
    el.pausedBadge.textContent = paused ? `${numFmt.format(paused)} paused` : '';
  }

  // The tab shows once the app is known to have schedules (none: no tab at all).
  let schedulesSeq = 0;
  async function loadSchedules() {
    const seq = ++schedulesSeq;
    try {
      const list = await (await api('/schedules')).json();
      if (seq === schedulesSeq) renderSchedules(Array.isArray(list) ? list : []);
    } catch (err) {
      if (seq === schedulesSeq && state.view === 'schedules') fail(err);
    }
  }
  const reloadSchedules = debounce(loadSchedules, 500, 2000);
  // Next and last runs move with time: refresh while the tab is shown.
  setInterval(() => { if (state.view === 'schedules' && !document.hidden) loadSchedules(); }, 5000);

  // Show All tasks with other filters: the button that asked is gone, the changed filter gets focus.
  function showTasks({ status = '', func = '' }, focus) {
    if (func) addFunctions([func]);
    state.status = el.status.value = status;
    state.func = el.func.value = func;
    setView('all');
    filtersChanged();
    focus.focus();
  }
  el.showDelayed.addEventListener('click', () => showTasks({ status: 'scheduled' }, el.status));

  el.scheduleRows.addEventListener('click', async (e) => {
    const button = e.target.closest('button[data-act]');
    const tr = button?.closest('tr[data-schedule]');
    if (!tr) return;
    const name = tr.dataset.schedule;
    if (button.dataset.act === 'runs') { showTasks({ func: name }, el.func); return; }
    const path = `/schedules/${encodeURIComponent(name)}`;
    try {
      if (button.dataset.act === 'run') {
        const res = await act(button, `${path}/run`);
        toast(`Started ${name} as ${shortId(res.task_id)}`);
        reloadSchedules();
        if (document.activeElement === document.body) button.focus(); // closing the detail returns here
        await openDetail(res.task_id, { focus: false });
        el.detail.focus();
        return;
      }
      const action = button.dataset.next;
      const res = await act(button, `${path}/${action}`);
      ++schedulesSeq; // a list fetched before the change must not undo it
      if (res.state) renderSchedules((state.schedules || []).map((sc) => (sc.name === name ? res.state : sc)));
      toast(`${action === 'pause' ? 'Paused' : 'Resumed'} ${name}`);
      if (document.activeElement === document.body) button.focus();
    } catch (err) {
      fail(err);
      loadSchedules();
    }
  });

  // ------------------------------------------------------------ tabs

  const TABS = [['all', el.tabAll, el.viewAll], ['failed', el.tabFailed, el.viewFailed],
    ['schedules', el.tabSchedules, el.viewSchedules]];
  function setView(view) {
    state.view = view;
    for (const [name, tab, panel] of TABS) {
      const on = name === view;
      tab.setAttribute('aria-selected', String(on));
      tab.tabIndex = on ? 0 : -1; // one stop in the tab order: arrow keys move between tabs
      panel.hidden = !on;
    }
    writeUrl();
    if (view === 'failed') loadFailed();
    if (view === 'schedules') loadSchedules();
  }
  for (const [name, tab] of TABS) tab.addEventListener('click', () => setView(name));
  el.tablist.addEventListener('keydown', (e) => {
    const tabs = TABS.map(([, tab]) => tab).filter((tab) => !tab.hidden);
    const i = tabs.indexOf(e.target.closest('[role="tab"]'));
    const to = { ArrowRight: i + 1, ArrowLeft: i - 1 + tabs.length, Home: 0, End: tabs.length - 1 }[e.key];
    if (i < 0 || to == null) return;
    e.preventDefault();
    const tab = tabs[to % tabs.length];
    tab.focus();
    setView(TABS.find(([, t]) => t === tab)[0]);
  });

  // ------------------------------------------------------------ controls

  el.status.addEventListener('change', () => { state.status = el.status.value; filtersChanged(); });
  el.func.addEventListener('change', () => { state.func = el.func.value; filtersChanged(); });
  el.win.addEventListener('change', () => { state.win = el.win.value; filtersChanged(); });
  const onSearch = debounce(() => {
    const q = el.search.value.trim();
    if (q !== state.q) { state.q = q; filtersChanged(); }
  }, 300);
  el.search.addEventListener('input', onSearch);
  $('#filters').addEventListener('submit', (e) => { e.preventDefault(); onSearch(); });
  el.exportLink.addEventListener('click', updateExport); // refresh `since` at click time

  for (const btn of $$('button.sort')) {
    btn.addEventListener('click', () => {
      const key = btn.dataset.sort;
      const current = state.sort.replace(/^-/, '');
      const descFirst = key === 'created_at' || key === 'duration';
      state.sort = key === current ? (state.sort.startsWith('-') ? key : `-${key}`) : (descFirst ? `-${key}` : key);
      filtersChanged();
    });
  }

  for (const card of $$('button.card[data-filter]')) {
    card.addEventListener('click', () => {
      state.status = card.dataset.filter;
      el.status.value = state.status;
      if (state.view !== 'all') setView('all');
      filtersChanged();
    });
  }

  el.prev.addEventListener('click', () => { state.offset = Math.max(0, state.offset - PAGE); loadPage(); });
  el.next.addEventListener('click', () => { state.offset += PAGE; loadPage(); });

  // ------------------------------------------------------------ live stream

  function setLive(mode) {
    const text = { live: 'Live', connecting: 'Connecting…', reconnecting: 'Reconnecting…', offline: 'Offline', stopped: 'Not running' };
    el.live.dataset.state = mode;
    el.live.textContent = text[mode];
  }

  const refreshAll = () => {
    loadPage(); // the stream sends metrics after what made it refresh
    if (state.view === 'failed') loadFailed();
    if (state.view === 'schedules') loadSchedules();
    if (state.detailId) reloadDetail();
  };
  const scheduleRefresh = debounce(refreshAll, 300);

  function parse(data) {
    try { return JSON.parse(data); } catch (_) { return null; }
  }

  let resync = false;
  function connect() {
    if (!cfg.stream || !window.EventSource) { setLive('offline'); return; }
    setLive('connecting');
    const es = new EventSource(cfg.stream);
    es.addEventListener('open', () => {
      setLive('live');
      // Change numbers are one process's: a new stream (maybe another process) counts anew.
      countedUpTo = streamSource = null;
      state.total += flushArrivals(null);
      updatePager();
      if (resync) { resync = false; scheduleRefresh(); }
    });
    es.addEventListener('error', () => {
      if (es.readyState !== EventSource.CLOSED) { setLive('reconnecting'); return; }
      // The server refused the stream (e.g. session expired): check auth, then start a fresh one.
      setLive('offline');
      resync = true;
      setTimeout(() => api('/metrics').then(() => connect(), () => setTimeout(connect, 5000)), 3000);
    });
    es.addEventListener('task', (e) => onTask(parse(e.data), Number(e.lastEventId) || 0));
    es.addEventListener('metrics', (e) => onMetrics(parse(e.data)));
    es.addEventListener('refresh', scheduleRefresh);
  }

  // ------------------------------------------------------------ start

  readUrl();
  updateExport();
  setView(state.view);
  if (state.view !== 'schedules') loadSchedules(); // does the app have any? (shows the tab)
  loadPage();
  loadMetrics();
  loadFunctions();
  connect();
  const m = /^#task=(.+)$/.exec(location.hash);
  if (m) openDetail(decodeURIComponent(m[1]));
})();
"""


if __name__ == "__main__":
    import sys

    if sys.argv[1:] in ([], ["--version"]):
        print(f"taskflow {__version__}")
    else:
        sys.exit("usage: python taskflow.py --version")
