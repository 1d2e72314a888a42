"""Checks on the vendored module as a file: version, public names, allowed imports."""

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENDOR = ROOT / "taskflow_vendor" / "taskflow.py"
ALLOWED = {"fastapi", "starlette", "pydantic", "aiosqlite", "itsdangerous", "jinja2", "markupsafe"}


def test_imports_only_stdlib_and_declared_dependencies():
    tree = ast.parse(VENDOR.read_text(encoding="utf-8"))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    foreign = {r for r in roots if r not in ALLOWED and r not in sys.stdlib_module_names}
    assert not foreign, f"taskflow.py imports undeclared modules: {sorted(foreign)}"


def test_version_is_declared():
    import taskflow

    parts = taskflow.__version__.split(".")
    assert len(parts) == 3 and all(p.isdigit() for p in parts)
    assert "__version__" in taskflow.__all__
