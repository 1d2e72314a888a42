"""log_file: one line per lifecycle event and per task_log call, append-only, multi-process safe."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

from apps.engine_support import reaches, started
from taskflow import TaskManager, task_log

ROOT = Path(__file__).resolve().parents[1]
LINE = re.compile(
    r"^(?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z) "
    r"(?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL) "
    r"task=(?P<task>[0-9a-f-]{36}) "
    r"name=(?P<name>\S+) "
    r"(?P<rest>.*)$"
)


def _parse(path: Path) -> list[re.Match]:
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n")
    lines = text.splitlines()
    parsed = [LINE.match(line) for line in lines]
    bad = [line for line, m in zip(lines, parsed, strict=True) if m is None]
    assert not bad, f"malformed log lines: {bad[:3]}"
    return parsed  # type: ignore[return-value]


async def test_log_file_lines_carry_time_level_id_name_message_and_extras(tmp_path: Path):
    log = tmp_path / "tasks.log"
    tm = TaskManager(log_file=log)

    @tm.task(name="import-users", retries=1)
    async def import_users(source):
        task_log("fetched rows", level="debug", rows=120, source=source)
        task_log("two\nlines", note="has space", empty="")
        raise ValueError("bad row 7")

    @tm.task()
    def sync_job():
        task_log("from a thread", level="warning", thread="worker")

    async with started(tm):
        failing = tm.add_task(import_users, "s3://bucket")
        ok = tm.add_task(sync_job)
        await reaches(tm, failing)
        await reaches(tm, ok)
    start = datetime.now(timezone.utc)
    lines = _parse(log)

    by_task: dict[str, list[re.Match]] = {}
    for m in lines:
        by_task.setdefault(m["task"], []).append(m)
        stamp = datetime.fromisoformat(m["ts"].replace("Z", "+00:00"))
        assert abs(stamp - start) < timedelta(hours=1)  # UTC, not local time
    assert set(by_task) == {failing, ok}
    assert {m["name"] for m in by_task[failing]} == {"import-users"}
    assert {m["name"] for m in by_task[ok]} == {"sync_job"}

    failing_text = [f"{m['level']} {m['rest']}" for m in by_task[failing]]
    assert sum("fetched rows" in t for t in failing_text) == 2  # once per attempt
    fetched = next(t for t in failing_text if "fetched rows" in t)
    assert fetched.startswith("DEBUG fetched rows")
    assert "rows=120" in fetched and "source=s3://bucket" in fetched
    escaped = next(t for t in failing_text if t.startswith("INFO two"))
    assert "two\\nlines" in escaped and 'note="has space"' in escaped and 'empty=""' in escaped
    # lifecycle events: created, running, the failure (with its error) ...
    assert any("created" in t for t in failing_text)
    assert any("running" in t for t in failing_text)
    final = [t for t in failing_text if t.startswith("ERROR") and "failed" in t]
    assert final and "bad row 7" in final[-1]
    ok_text = [f"{m['level']} {m['rest']}" for m in by_task[ok]]
    assert any(t.startswith("WARNING from a thread") and "thread=worker" in t for t in ok_text)
    assert any(t.startswith("INFO success") for t in ok_text)


async def test_log_file_is_append_only(tmp_path: Path):
    log = tmp_path / "tasks.log"
    log.write_text("kept from before\n", encoding="utf-8")

    async def job():
        task_log("hello")

    for _ in range(2):
        tm = TaskManager(log_file=log)
        async with started(tm):
            await reaches(tm, tm.add_task(job))
    text = log.read_text(encoding="utf-8")
    assert text.startswith("kept from before\n")
    assert text.count(" hello") == 2


def test_several_processes_share_one_log_file_without_torn_lines(tmp_path: Path):
    log = tmp_path / "tasks.log"
    script = textwrap.dedent(
        """
        import asyncio, sys
        sys.path.insert(0, sys.argv[1])
        from taskflow import TaskManager, task_log

        async def main():
            tm = TaskManager(log_file=sys.argv[2])

            def chatty(n):
                for i in range(20):
                    task_log("line " + "x" * 300, n=n, i=i, who=sys.argv[3])

            await tm.startup()
            ids = [tm.add_task(chatty, n) for n in range(25)]
            while any(not tm.get(i).status.is_final for i in ids):
                await asyncio.sleep(0.01)
            await tm.shutdown()

        asyncio.run(main())
        """
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(ROOT / "taskflow_vendor"), str(log), who]
        )
        for who in ("p1", "p2")
    ]
    for proc in procs:
        assert proc.wait(timeout=60) == 0
    lines = _parse(log)
    chatter = [m for m in lines if m["rest"].startswith("line ")]
    assert len(chatter) == 2 * 25 * 20
    for who in ("p1", "p2"):
        assert sum(m["rest"].endswith(f"who={who}") for m in chatter) == 500


async def test_task_log_without_a_log_file_still_fills_the_record():
    tm = TaskManager()

    async def job():
        task_log("noted", k=1)

    async with started(tm):
        record = await reaches(tm, tm.add_task(job))
    assert any("noted" in line and "k=1" in line for line in record.logs)
    await asyncio.sleep(0)
