"""Fixtures for the browser tests: one uvicorn server and one Chromium for the whole session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser_harness import CHROMIUM, CHROMIUM_ARGS, PageLog, Server, log_in, serve
from dashboard_app import PASSWORD, USERNAME

VIEWPORT = {"width": 1280, "height": 800}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serve(tmp_path_factory.mktemp("uvicorn")) as srv:
        yield srv


@pytest.fixture(scope="module")
def admin(server: Server):
    """An httpx client logged in to the admin API, to check what the page did."""
    with server.admin_client(USERNAME, PASSWORD) as client:
        yield client


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists() and not os.environ.get("CI"):
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium); CI installs it")
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=10_000)
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def context(browser):
    ctx = browser.new_context(viewport=VIEWPORT, locale="en-US", timezone_id="UTC")
    ctx.set_default_timeout(10_000)
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def page_log() -> PageLog:
    return PageLog()


@pytest.fixture
def page(context, page_log: PageLog):
    """A fresh page whose requests, console errors and document loads are recorded."""
    pg = context.new_page()
    page_log.attach(pg)
    return pg


@pytest.fixture
def dashboard(page, server: Server):
    """A page signed in to the dashboard, with the live stream connected."""
    log_in(page, server)
    return page
