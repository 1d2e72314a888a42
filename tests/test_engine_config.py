"""TaskManager(...) and @task_manager.task(...): defaults, and validation naming the parameter."""

from __future__ import annotations

import inspect
import os
from pathlib import Path

import pytest
from taskflow import TaskConfig, TaskManager

# -- TaskManager(...) ---------------------------------------------------------


def test_constructor_is_keyword_only_with_the_documented_defaults():
    params = inspect.signature(TaskManager).parameters
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params.values())
    defaults = {name: p.default for name, p in params.items()}
    assert defaults["snapshot_db"] is None
    assert defaults["requeue_pending"] is False
    assert defaults["log_file"] is None
    assert defaults["retention_days"] is None
    assert defaults["max_concurrent_tasks"] is None
    for name in ("snapshot_interval", "max_history", "max_sync_threads", "shutdown_timeout"):
        assert name in defaults
    with pytest.raises(TypeError):
        TaskManager("tasks.db")  # type: ignore[misc]


def test_constructor_accepts_paths_and_sane_values(tmp_path: Path):
    tm = TaskManager(
        snapshot_db=tmp_path / "tasks.db",
        snapshot_interval=0.5,
        requeue_pending=True,
        log_file=tmp_path / "tasks.log",
        retention_days=0.5,
        max_history=0,
        max_concurrent_tasks=1,
        max_sync_threads=1,
        shutdown_timeout=0,
    )
    assert tm.snapshot_db == os.fspath(tmp_path / "tasks.db")
    assert tm.log_file == os.fspath(tmp_path / "tasks.log")
    # Construction touches no file: the database is opened by startup().
    assert not (tmp_path / "tasks.db").exists()
    assert not (tmp_path / "tasks.log").exists()


BAD_MANAGER_ARGS = [
    ("snapshot_db", 42, TypeError),
    ("snapshot_db", "", ValueError),
    ("log_file", ["tasks.log"], TypeError),
    ("log_file", "", ValueError),
    ("snapshot_interval", 0, ValueError),
    ("snapshot_interval", -1.0, ValueError),
    ("snapshot_interval", "1", TypeError),
    ("snapshot_interval", float("nan"), ValueError),
    ("requeue_pending", "yes", TypeError),
    ("requeue_pending", 1, TypeError),
    ("retention_days", 0, ValueError),
    ("retention_days", -3, ValueError),
    ("retention_days", "30", TypeError),
    ("retention_days", float("inf"), ValueError),
    ("max_history", -1, ValueError),
    ("max_history", 10.5, TypeError),
    ("max_history", True, TypeError),
    ("max_history", None, TypeError),
    ("max_concurrent_tasks", 0, ValueError),
    ("max_concurrent_tasks", 2.0, TypeError),
    ("max_sync_threads", 0, ValueError),
    ("max_sync_threads", "4", TypeError),
    ("shutdown_timeout", -0.1, ValueError),
    ("shutdown_timeout", None, TypeError),
]


@pytest.mark.parametrize(("name", "value", "error"), BAD_MANAGER_ARGS)
def test_constructor_rejects_bad_values_naming_the_parameter(name, value, error):
    with pytest.raises(error) as info:
        TaskManager(**{name: value})
    assert name in str(info.value), f"message does not name {name}: {info.value}"


def test_unknown_constructor_argument_is_a_type_error():
    with pytest.raises(TypeError, match="snapshot_bd"):
        TaskManager(snapshot_bd="tasks.db")


def test_requeue_pending_without_a_database_is_refused_with_a_reason():
    with pytest.raises(ValueError) as info:
        TaskManager(requeue_pending=True)
    assert "requeue_pending" in str(info.value) and "snapshot_db" in str(info.value)


# -- @task_manager.task(...) ---------------------------------------------------


def test_task_decorator_defaults_match_the_contract():
    params = inspect.signature(TaskManager().task).parameters
    assert {name: p.default for name, p in params.items()} == {
        "retries": 0,
        "delay": 0.0,
        "backoff": 1.0,
        "name": None,
        "persist": False,
        "requeue_on_interrupt": False,
        "timeout": None,
        "jitter": False,
        "max_delay": None,
        "retry_on": (Exception,),
        "queue": "default",
        "priority": 0,
    }


def test_task_returns_the_function_unchanged_and_still_callable():
    tm = TaskManager()

    def plain(x, y=2):
        return x * y

    async def coro(x):
        return x + 1

    assert tm.task()(plain) is plain
    assert tm.task(retries=3, delay=0.1, name="other")(coro) is coro
    assert plain(3) == 6
    assert plain.__name__ == "plain"


def test_same_name_for_two_different_functions_is_refused():
    tm = TaskManager()

    @tm.task(name="job")
    def first():
        pass

    def second():
        pass

    with pytest.raises(ValueError, match="job"):
        tm.task(name="job")(second)
    # Registering the same function again (e.g. a module reload) is fine.
    assert tm.task(name="job")(first) is first


BAD_TASK_ARGS = [
    ("retries", -1, ValueError),
    ("retries", 1.5, TypeError),
    ("retries", True, TypeError),
    ("delay", -0.5, ValueError),
    ("delay", "1", TypeError),
    ("backoff", 0.5, ValueError),
    ("backoff", None, TypeError),
    ("timeout", 0, ValueError),
    ("timeout", -1, ValueError),
    ("timeout", "5", TypeError),
    ("max_delay", -1, ValueError),
    ("max_delay", "1", TypeError),
    ("persist", 1, TypeError),
    ("requeue_on_interrupt", "no", TypeError),
    ("jitter", None, TypeError),
    ("name", "", TypeError),
    ("name", "   ", TypeError),
    ("name", 7, TypeError),
    ("retry_on", "ValueError", TypeError),
    ("retry_on", (), TypeError),
    ("retry_on", (ValueError, 3), TypeError),
    ("retry_on", int, TypeError),
    ("retry_on", [ValueError], TypeError),
]


@pytest.mark.parametrize(("name", "value", "error"), BAD_TASK_ARGS)
def test_task_rejects_bad_values_naming_the_parameter(name, value, error):
    tm = TaskManager()
    with pytest.raises(error) as info:
        tm.task(**{name: value})
    assert name in str(info.value), f"message does not name {name}: {info.value}"


def test_task_must_decorate_a_callable():
    tm = TaskManager()
    with pytest.raises(TypeError):
        tm.task()(42)  # type: ignore[arg-type]


def test_retry_on_accepts_one_class_or_a_tuple():
    tm = TaskManager()
    tm.task(retry_on=ValueError)(lambda: None)
    tm.task(retry_on=(ValueError, KeyError), name="two")(lambda: None)


# -- the backoff formula, on the public TaskConfig ------------------------------


def test_delay_for_follows_delay_times_backoff_power():
    config = TaskConfig("x", retries=5, delay=0.5, backoff=3.0)
    assert [config.delay_for(n) for n in (1, 2, 3, 4)] == [0.5, 1.5, 4.5, 13.5]


def test_delay_for_is_capped_by_max_delay():
    config = TaskConfig("x", retries=5, delay=1.0, backoff=10.0, max_delay=25.0)
    assert [config.delay_for(n) for n in (1, 2, 3, 4)] == [1.0, 10.0, 25.0, 25.0]


def test_jitter_randomises_between_zero_and_the_capped_delay():
    config = TaskConfig("x", retries=5, delay=2.0, backoff=2.0, max_delay=5.0, jitter=True)
    samples = [config.delay_for(3) for _ in range(300)]  # 8.0 capped to 5.0
    assert all(0.0 <= s <= 5.0 for s in samples)
    assert len(set(samples)) > 250
    assert min(samples) < 2.5 < max(samples)
