"""Jinja filters for the template; cookiecutter imports this file through `_extensions`.

Answers are free text, so they enter generated files only as string literals built here, which
read back as exactly the answer whatever quotes, backslashes or characters it holds.
"""

import importlib.util
import json
import sys
from pathlib import Path

from cookiecutter.utils import simple_filter


def _escaped(value) -> str:
    # JSON escaping covers quotes, backslashes and control characters. `ensure_ascii=False` keeps
    # characters outside the BMP whole: escaped as ASCII they become a surrogate pair, which Python
    # reads as two lone surrogates and TOML rejects. TOML also forbids a raw DEL; JSON leaves it be.
    return json.dumps(str(value), ensure_ascii=False).replace("\x7f", "\\u007f")


@simple_filter
def toml_escape(value):
    """Return `value` escaped for the inside of a TOML basic string ("...").

    The template writes the quotes itself, so its pyproject.toml stays valid TOML that tools can
    read before it is rendered.
    """
    return _escaped(value)[1:-1]


@simple_filter
def python_string(value):
    """Return `value` as a Python string literal, quoted the way `ruff format` leaves it.

    Double quotes, unless the text holds more double than single quotes: then single quotes, which
    need fewer escapes.
    """
    literal = _escaped(value)
    if str(value).count('"') <= str(value).count("'"):
        return literal
    # Every `"` in the body is escaped and its escape is the backslash right before it.
    return "'" + literal[1:-1].replace('\\"', '"').replace("'", "\\'") + "'"


def _answer_rules():
    """hooks/pre_gen_project.py as a module: its `problem()` holds the rules for the answers."""
    path = Path(__file__).resolve().with_name("hooks") / "pre_gen_project.py"
    spec = importlib.util.spec_from_file_location("_taskflow_template_answer_rules", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@simple_filter
def check_answers(answers):
    """Stop cookiecutter with one line on stderr and exit status 1 when an answer is unusable.

    cookiecutter.json renders `__answers_checked` with this filter right after the questions, before
    anything is created. The hook alone would stop generation too, but cookiecutter answers a failed
    hook with a traceback of its own; exiting here leaves the line alone.
    """
    message = _answer_rules().problem(
        str(answers["project_name"]),
        str(answers["project_slug"]),
        str(answers["package_name"]),
        str(answers["dashboard_path"]),
    )
    if message:
        print(f"error: {message}", file=sys.stderr, flush=True)
        raise SystemExit(1)
    return "yes"
