"""Save a screenshot of a populated dashboard (1280x800) as docs/img/dashboard.png.

    .venv/bin/python tests/browser/screenshot.py [output.png]

Starts dashboard_app under uvicorn on a free 127.0.0.1 port, enqueues a few dozen tasks of
various statuses, signs in with headless Chromium and takes the picture.
test_dashboard.py runs the same steps into a temporary file, so this script keeps working.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import time
from pathlib import Path

# This folder (browser_harness, dashboard_app) and tests/ (apps/, which the harness uses).
sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]

from browser_harness import (  # noqa: E402
    BASE_PATH,
    CHROMIUM,
    CHROMIUM_ARGS,
    Server,
    log_in,
    serve,
)
from dashboard_app import PASSWORD, USERNAME  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
OUTPUT = ROOT / "docs" / "img" / "dashboard.png"
VIEWPORT = {"width": 1280, "height": 800}


def populate(server: Server, timeout: float = 15.0) -> None:
    """Enqueue the mix of /demo/populate, cancel one slow task, wait until the rest settle."""
    with server.client() as client:
        client.post("/demo/populate").raise_for_status()
    with server.admin_client(USERNAME, PASSWORD) as admin:
        deadline = time.monotonic() + timeout
        while True:
            running = {"status": "running", "func_name": "rebuild_search_index"}
            slow = admin.get(BASE_PATH, params=running).json()
            busy = {"status": ["pending", "running"], "func_name": "send_welcome_email"}
            quick = admin.get(BASE_PATH, params=busy).json()
            if len(slow) >= 3 and not quick:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"tasks did not settle: {len(slow)} slow, {len(quick)} quick")
            time.sleep(0.05)
        admin.post(f"{BASE_PATH}/{slow[-1]['task_id']}/cancel").raise_for_status()


def shoot(page, path: Path) -> None:
    """Screenshot the signed-in dashboard once its table, counts and chart are drawn."""
    from playwright.sync_api import expect

    page.set_viewport_size(VIEWPORT)
    expect(page.locator("#live")).to_have_text("Live")
    expect(page.locator("#task-rows tr[data-task-id]").nth(20)).to_be_attached()
    expect(page.locator('[data-count="cancelled"]')).not_to_have_text("0")
    expect(page.locator('[data-count="success_rate"]')).to_have_text(re.compile(r"%$"))
    expect(page.locator("#task-rows td.status", has_text="cancelled")).not_to_have_count(0)
    page.mouse.move(0, 0)  # no hover highlight
    page.evaluate("document.activeElement && document.activeElement.blur()")
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), animations="disabled", caret="hide")


def main(output: Path = OUTPUT) -> None:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp, serve(Path(tmp)) as server:
        populate(server)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                         args=CHROMIUM_ARGS)  # fmt: skip
            try:
                page = browser.new_page(viewport=VIEWPORT, locale="en-US", color_scheme="light")
                log_in(page, server)
                shoot(page, output)
            finally:
                browser.close()
    print(f"wrote {output}")


if __name__ == "__main__":
    os.environ.setdefault("TASKFLOW_DEMO_TITLE", "Orders service")
    main(Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else OUTPUT)
