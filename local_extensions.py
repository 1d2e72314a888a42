"""Jinja filters for the template; cookiecutter imports this file through `_extensions`.

Answers are free text, so they enter generated files only as string literals built here, which
read back as exactly the answer whatever quotes, backslashes or characters it holds.
"""

import json

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
