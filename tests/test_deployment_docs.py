"""docs/deployment.md shows the configurations the tests run, byte for byte.

The nginx location blocks and Caddy site bodies are tests/apps/{nginx,caddy}_support.py's,
the scrape configuration is tests/apps/prometheus_support.py's; in the page they may sit
inside a ``server { }`` or site block, so one level of indentation (or two for Caddy's
prefix block) is allowed and nothing else.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
from apps import caddy_support, nginx_support, prometheus_support

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "deployment.md"


def code_blocks(text: str) -> list[str]:
    return [m.group(1) for m in re.finditer(r"```[a-z]*\n(.*?)```", text, re.S)]


def shown(snippet: str, indents: tuple[str, ...]) -> bool:
    blocks = code_blocks(PAGE.read_text())
    return any(textwrap.indent(snippet, i) in block for block in blocks for i in indents)


@pytest.mark.parametrize("name", ["PLAIN", "HOST", "PREFIX"])
def test_nginx_blocks_are_the_tested_ones(name):
    assert shown(getattr(nginx_support, name), ("", "    ")), f"nginx {name} not in {PAGE}"


@pytest.mark.parametrize("name", ["PLAIN", "PREFIX"])
def test_caddy_bodies_are_the_tested_ones(name):
    assert shown(getattr(caddy_support, name), ("\t", "\t\t")), f"caddy {name} not in {PAGE}"


def test_scrape_config_is_the_tested_one():
    assert shown(prometheus_support.SCRAPE_CONFIG, ("",)), f"scrape config not in {PAGE}"


def test_uvicorn_flags_for_a_prefix_are_the_tested_ones():
    # tests/browser/proxy_harness.py: ROOT_PATH_ARGS
    harness = (ROOT / "tests" / "browser" / "proxy_harness.py").read_text()
    assert '("--root-path", "/svc", "--forwarded-allow-ips", "127.0.0.1")' in harness
    assert "--root-path /svc --forwarded-allow-ips 127.0.0.1" in PAGE.read_text()


def test_the_mounting_lifespan_is_the_tested_one():
    page = PAGE.read_text()
    mounted = (ROOT / "tests" / "browser" / "mounted_app.py").read_text()
    line = "async with inner.router.lifespan_context(inner):"
    assert line in page and line in mounted
    assert 'outer.mount("/svc", inner)' in page and "app.mount(PREFIX, inner)" in mounted


def test_the_page_is_linked():
    assert "(deployment.md)" in (ROOT / "docs" / "index.md").read_text()
    assert "(docs/deployment.md)" in (ROOT / "README.md").read_text()
