"""Check the answers before cookiecutter writes anything; on a bad one print one line, exit 1."""

import json
import keyword
import re
import sys

# Each answer arrives as JSON in a raw string, so it stays data: a quote or backslash in an answer
# cannot end the string or change this file. `tojson` escapes every `'`, so `'''` cannot appear;
# the formatter would switch to triple double quotes, which the JSON's own quotes would end.
# fmt: off
PROJECT_NAME = json.loads(r'''{{ cookiecutter.project_name | tojson }}''')
PROJECT_SLUG = json.loads(r'''{{ cookiecutter.project_slug | tojson }}''')
PACKAGE_NAME = json.loads(r'''{{ cookiecutter.package_name | tojson }}''')
DASHBOARD_PATH = json.loads(r'''{{ cookiecutter.dashboard_path | tojson }}''')
# fmt: on

# Import names the generated service already depends on (asyncpg through its postgres extra); a
# package with one of these names would shadow it.
DEPENDENCIES = {
    "taskflow", "fastapi", "starlette", "pydantic", "uvicorn", "aiosqlite", "itsdangerous",
    "jinja2", "markupsafe", "anyio", "httpx", "pytest", "ruff", "asyncpg",
}  # fmt: skip
# Paths the generated app serves itself.
RESERVED_PATHS = {"/docs", "/redoc", "/openapi.json", "/signup", "/reports", "/crm-sync", "/jobs"}


def problem() -> str | None:
    """Return a sentence naming the first bad answer, or None when all answers are usable."""
    if not PROJECT_NAME.strip():
        return "project_name is empty: give the project a name."
    if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?", PROJECT_SLUG):
        return (
            f"project_slug {PROJECT_SLUG!r} is not a valid distribution name: use ASCII letters,"
            " digits, '-', '_' and '.', starting and ending with a letter or digit."
        )
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", PACKAGE_NAME):
        return (
            f"package_name {PACKAGE_NAME!r} is not a valid Python identifier: use ASCII letters,"
            " digits and '_', not starting with a digit."
        )
    if keyword.iskeyword(PACKAGE_NAME):
        return f"package_name {PACKAGE_NAME!r} is a Python keyword: choose another name."
    if PACKAGE_NAME in sys.stdlib_module_names:
        return f"package_name {PACKAGE_NAME!r} would shadow the standard library module."
    if PACKAGE_NAME.lower() in DEPENDENCIES:
        return f"package_name {PACKAGE_NAME!r} would shadow the {PACKAGE_NAME} dependency."
    if not DASHBOARD_PATH.startswith("/"):
        return f"dashboard_path {DASHBOARD_PATH!r} must start with '/', e.g. '/tasks'."
    if DASHBOARD_PATH.endswith("/"):
        return f"dashboard_path {DASHBOARD_PATH!r} must not end with '/', e.g. '/tasks'."
    if not re.fullmatch(r"(/[A-Za-z0-9._~-]+)+", DASHBOARD_PATH):
        return (
            f"dashboard_path {DASHBOARD_PATH!r} may only hold segments of ASCII letters, digits"
            " and '.', '_', '~', '-', separated by single '/'."
        )
    if DASHBOARD_PATH.split("/", 2)[1] in {p.strip("/") for p in RESERVED_PATHS}:
        return f"dashboard_path {DASHBOARD_PATH!r} collides with a route the generated app serves."
    return None


if __name__ == "__main__":
    message = problem()
    if message:
        sys.exit(f"error: {message}")
