"""Checks on the vendored module as a file: version, public names, allowed imports."""

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENDOR = ROOT / "taskflow_vendor" / "taskflow.py"
ALLOWED = {"fastapi", "starlette", "pydantic", "aiosqlite", "itsdangerous", "jinja2", "markupsafe"}


LAZY = {"asyncpg", "croniter"}  # imported inside functions: a PostgreSQL URL, cron=


def test_imports_only_stdlib_and_declared_dependencies():
    tree = ast.parse(VENDOR.read_text(encoding="utf-8"))
    roots = set()
    for node in tree.body:  # the module's own imports, run when it is imported
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    foreign = {r for r in roots if r not in ALLOWED and r not in sys.stdlib_module_names}
    assert not foreign, f"taskflow.py imports undeclared modules: {sorted(foreign)}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    foreign = {r for r in roots if r not in ALLOWED | LAZY and r not in sys.stdlib_module_names}
    assert not foreign, f"taskflow.py imports undeclared modules: {sorted(foreign)}"


def test_the_module_works_without_asyncpg_and_a_postgres_url_names_the_fix(tmp_path):
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        sys.modules["asyncpg"] = None  # as if it were not installed
        sys.path.insert(0, {str(VENDOR.parent)!r})
        import taskflow

        async def main():
            tm = taskflow.TaskManager(snapshot_db={str(tmp_path / "t.db")!r})
            await tm.startup()
            tm.add_task(print, "ran")
            await asyncio.sleep(0.1)
            await tm.shutdown()
            try:
                taskflow.TaskManager(snapshot_db="postgresql://u:secret@localhost/db")
            except ImportError as exc:
                assert "pip install asyncpg" in str(exc) and "secret" not in str(exc), exc
                print("refused")

        asyncio.run(main())
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["ran", "refused"]


def test_version_is_declared():
    import taskflow

    parts = taskflow.__version__.split(".")
    assert len(parts) == 3 and all(p.isdigit() for p in parts)
    assert "__version__" in taskflow.__all__
