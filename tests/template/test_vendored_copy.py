"""Fast checks on the template's sources: the shipped taskflow.py and the answer filters."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from jinja2 import Environment

ROOT = Path(__file__).resolve().parents[2]
VENDORED = ROOT / "taskflow_vendor" / "taskflow.py"
TEMPLATE_COPY = (
    ROOT / "{{cookiecutter.project_slug}}" / "src" / "{{cookiecutter.package_name}}" / "taskflow.py"
)


def test_template_ships_the_vendored_module_byte_for_byte():
    assert TEMPLATE_COPY.read_bytes() == VENDORED.read_bytes(), "run `make sync`"


@pytest.fixture(scope="module")
def render():
    """Return `render(filter, value)`: the template's own filter applied to `value`."""
    sys.path.insert(0, str(ROOT))
    try:
        import local_extensions
    finally:
        sys.path.remove(str(ROOT))
    env = Environment(extensions=[local_extensions.python_string, local_extensions.toml_escape])
    return lambda name, value: env.from_string(f"{{{{ v | {name} }}}}").render(v=value)


NASTY = [
    "plain",
    "O'Connor",
    'say "hi"',
    'O\'Connor "Bob" says "hi"',
    "ends with a backslash \\",
    '\\"',
    "'''",
    '"""',
    "Zoë — 東京 🚀",
    "two\nlines\tand a tab",
    "control \x00 and delete \x7f",
]


@pytest.mark.parametrize("value", NASTY)
def test_python_string_reads_back_unchanged_and_ruff_format_keeps_it(render, value):
    literal = render("python_string", value)
    assert ast.literal_eval(literal) == value
    source = f"X = {literal}\n"
    formatted = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--no-cache", "-"],
        input=source,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert formatted == source


@pytest.mark.parametrize("value", NASTY)
def test_toml_escape_reads_back_unchanged(render, value):
    tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")
    assert tomllib.loads(f'x = "{render("toml_escape", value)}"')["x"] == value
