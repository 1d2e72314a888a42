"""Counts on a fresh server that keeps few finished tasks in memory (max_history=5).

The module has its own uvicorn: its first test needs a server where nothing has finished.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from browser_harness import BASE_PATH, PageLog, Server, enqueue, expect, row, serve, wait_final

pytestmark = [pytest.mark.browser, pytest.mark.slow]

MAX_HISTORY = 5


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"TASKFLOW_DEMO_MAX_HISTORY": str(MAX_HISTORY)}
    with serve(tmp_path_factory.mktemp("uvicorn"), env=env) as srv:
        yield srv


def test_cancelled_is_no_error_and_no_rate_before_anything_finished(
    dashboard, page_log: PageLog, server: Server, admin
):
    rate = dashboard.locator('[data-count="success_rate"]')
    expect(dashboard.locator('[data-count="total"]')).to_have_text("0")
    expect(rate).to_have_text("–")

    gate = uuid.uuid4().hex
    running = enqueue(server, f"gated/{gate}")
    expect(row(dashboard, running).locator("td.status")).to_have_text("running")
    expect(dashboard.locator('[data-count="running"]')).to_have_text("1")
    expect(rate).to_have_text("–")  # one task, none finished: no rate, not 0.0%

    # A cancelled task: neutral in the Error column, and it does not make a rate either.
    slow = enqueue(server, "slow", seconds=60)
    expect(row(dashboard, slow).locator("td.status")).to_have_text("running")
    admin.post(f"{BASE_PATH}/{slow}/cancel").raise_for_status()
    cancelled = row(dashboard, slow)
    expect(cancelled.locator("td.status")).to_have_text("cancelled")
    expect(cancelled.locator("td.err")).to_have_class("err neutral")
    expect(dashboard.locator('[data-count="cancelled"]')).to_have_text("1")
    expect(rate).to_have_text("–")

    failed = enqueue(server, "failing", reason="card declined")
    expect(row(dashboard, failed).locator("td.status")).to_have_text("failed")
    expect(row(dashboard, failed).locator("td.err")).to_have_class("err")
    color = "el => getComputedStyle(el).color"
    fail_color = row(dashboard, failed).locator("td.err").evaluate(color)
    cancel_color = cancelled.locator("td.err").evaluate(color)
    muted_color = dashboard.locator("td.id").first.evaluate(color)
    assert cancel_color != fail_color and cancel_color == muted_color, (cancel_color, fail_color)
    expect(rate).to_have_text("0.0%")

    with server.client() as client:
        client.post(f"/demo/open/{gate}").raise_for_status()
    expect(row(dashboard, running).locator("td.status")).to_have_text("success")
    expect(rate).to_have_text("50.0%")

    # The detail panel shows no error for it either.
    cancelled.click()
    expect(dashboard.locator("#detail-status")).to_have_text("cancelled")
    expect(dashboard.locator("#detail-body pre.error")).to_have_count(0)
    expect(dashboard.locator("#detail-body h3", has_text="Error")).to_have_count(0)
    page_log.assert_clean()


def test_footer_says_when_the_list_holds_fewer_tasks_than_the_counters(
    dashboard, page_log: PageLog, server: Server, admin
):
    with server.client() as client:
        ids = client.post("/demo/quick", params={"n": 8}).json()["task_ids"]
    wait_final(admin, ids[-1])  # a request's tasks run in turn: the last one ends last
    m = admin.get(f"{BASE_PATH}/metrics").json()
    kept = int(admin.get(BASE_PATH, params={"limit": 1}).headers["X-Total-Count"])
    assert kept == MAX_HISTORY < m["total"]  # nothing running: only the last 5 finished

    expect(dashboard.locator('[data-count="total"]')).to_have_text(f"{m['total']:,}")
    expect(dashboard.locator("#range")).to_have_text(f"1–{kept} of {kept}")
    note = dashboard.locator("#history-note")
    expect(note).to_be_visible()
    expect(note).to_have_text(
        f"Only the last {kept} tasks are kept in memory; the counters include older ones."
    )

    # After a reload too: it comes with the stream's first counts.
    dashboard.reload()
    expect(dashboard.locator("#live")).to_have_text("Live")
    expect(dashboard.locator("#range")).to_have_text(f"1–{kept} of {kept}")
    expect(note).to_be_visible()
    page_log.assert_clean()
