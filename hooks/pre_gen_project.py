"""The rules for cookiecutter's answers; on a bad answer, one line naming it and exit status 1.

`problem()` holds the rules. They are applied twice:

* while cookiecutter reads the answers, before it creates anything: cookiecutter.json's
  `__answers_checked` runs them through `local_extensions.check_answers`, which prints the line and
  exits with status 1. That is what a user sees: the line alone, no traceback. (A failing hook
  stops generation as well, but cookiecutter then logs a traceback of its own after the line.)
* as the pre-generation hook, when cookiecutter runs this file with the answers rendered into the
  block at the end: a second check for runs that skip reading answers (`cookiecutter --replay`).

Importing this file (as local_extensions does) runs only the definitions: the answers are read in
the `__main__` block, which exists only in the rendered hook.
"""

import json
import keyword
import re
import sys

# Import names the generated service already depends on (asyncpg through its postgres extra); a
# package with one of these names would shadow it.
DEPENDENCIES = {
    "taskflow", "fastapi", "starlette", "pydantic", "uvicorn", "aiosqlite", "itsdangerous",
    "jinja2", "markupsafe", "anyio", "httpx", "pytest", "ruff", "asyncpg",
}  # fmt: skip
# Paths the generated apps serve themselves (main.py, worker.py, lifespan.py).
RESERVED_PATHS = {
    "/docs", "/redoc", "/openapi.json", "/signup", "/reports", "/crm-sync", "/exports", "/jobs",
    "/reminders", "/events",
}  # fmt: skip


def problem(project_name: str, project_slug: str, package_name: str, dashboard_path: str):
    """Return a sentence naming the first bad answer, or None when all answers are usable."""
    if not project_name.strip():
        return "project_name is empty: give the project a name."
    if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?", project_slug):
        return (
            f"project_slug {project_slug!r} is not a valid distribution name: use ASCII letters,"
            " digits, '-', '_' and '.', starting and ending with a letter or digit."
        )
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", package_name):
        return (
            f"package_name {package_name!r} is not a valid Python identifier: use ASCII letters,"
            " digits and '_', not starting with a digit."
        )
    if keyword.iskeyword(package_name):
        return f"package_name {package_name!r} is a Python keyword: choose another name."
    if package_name in sys.stdlib_module_names:
        return f"package_name {package_name!r} would shadow the standard library module."
    if package_name.lower() in DEPENDENCIES:
        return f"package_name {package_name!r} would shadow the {package_name} dependency."
    if not dashboard_path.startswith("/"):
        return f"dashboard_path {dashboard_path!r} must start with '/', e.g. '/tasks'."
    if dashboard_path.endswith("/"):
        return f"dashboard_path {dashboard_path!r} must not end with '/', e.g. '/tasks'."
    if not re.fullmatch(r"(/[A-Za-z0-9._~-]+)+", dashboard_path):
        return (
            f"dashboard_path {dashboard_path!r} may only hold segments of ASCII letters, digits"
            " and '.', '_', '~', '-', separated by single '/'."
        )
    if dashboard_path.split("/", 2)[1] in {p.strip("/") for p in RESERVED_PATHS}:
        return f"dashboard_path {dashboard_path!r} collides with a route the generated app serves."
    return None


if __name__ == "__main__":
    # Each answer arrives as JSON in a raw string, so it stays data: a quote or backslash in an
    # answer cannot end the string or change this file. `tojson` escapes every `'`, so `'''` cannot
    # appear; the formatter would switch to triple double quotes, which the JSON's own quotes would
    # end.
    # fmt: off
    message = problem(
        json.loads(r'''{{ cookiecutter.project_name | tojson }}'''),
        json.loads(r'''{{ cookiecutter.project_slug | tojson }}'''),
        json.loads(r'''{{ cookiecutter.package_name | tojson }}'''),
        json.loads(r'''{{ cookiecutter.dashboard_path | tojson }}'''),
    )
    # fmt: on
    if message:
        sys.exit(f"error: {message}")  # the line on stderr, exit status 1, no traceback
