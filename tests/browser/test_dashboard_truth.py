"""The dashboard tells the truth: search, the failed-task view, and numbers during a burst.

Same setup as test_dashboard.py (one uvicorn for the module, tasks enqueued with httpx).
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from browser_harness import BASE_PATH, FINAL, PageLog, Server, enqueue, expect, row, wait_final

pytestmark = [pytest.mark.browser, pytest.mark.slow]


# --------------------------------------------------------------------------- search


def test_search_over_error_text_on_load_live_and_after_reload(
    dashboard, page_log: PageLog, server: Server, admin
):
    word = f"zebra{uuid.uuid4().hex[:6]}"  # only in these failures' errors
    first = enqueue(server, "failing", reason=f"gateway {word} timeout")
    wait_final(admin, first)
    dashboard.goto(f"{server.dashboard}?q={word}")
    expect(dashboard.locator("#live")).to_have_text("Live")
    expect(dashboard.locator("input#search")).to_have_value(word)
    rows = dashboard.locator("#task-rows tr[data-task-id]")
    expect(rows).to_have_count(1)  # on first load: the server's q matches the error
    expect(row(dashboard, first).locator("td.err")).to_contain_text(word)

    # Live: a failure whose error matches (in other case) shows; others do not.
    other_failure = enqueue(server, "failing", reason="card declined")
    with server.client() as client:
        (other_ok,) = client.post("/demo/quick", params={"n": 1}).json()["task_ids"]
    late = enqueue(server, "failing", reason=f"upstream {word.upper()} refused")
    expect(row(dashboard, late).locator("td.status")).to_have_text("failed")
    wait_final(admin, other_failure)
    wait_final(admin, other_ok)
    expect(dashboard.locator("#range")).to_have_text("1–2 of 2")
    expect(row(dashboard, other_failure)).to_have_count(0)
    expect(row(dashboard, other_ok)).to_have_count(0)
    expect(rows).to_have_count(2)

    # After a reload the server agrees with what the stream showed.
    dashboard.reload()
    expect(dashboard.locator("#live")).to_have_text("Live")
    expect(rows).to_have_count(2)
    expect(row(dashboard, first)).to_have_count(1)
    expect(row(dashboard, late)).to_have_count(1)
    expect(dashboard.locator("#range")).to_have_text("1–2 of 2")
    page_log.assert_clean()


# --------------------------------------------------------------------------- failed task view


def test_failed_task_shows_each_attempt_once_and_the_error_once(
    dashboard, page_log: PageLog, server: Server, admin
):
    reason = f"warehouse {uuid.uuid4().hex[:8]} unreachable"
    task_id = enqueue(server, "retrying", reason=reason)
    done = wait_final(admin, task_id)
    assert done["status"] == "failed" and done["retries_used"] == 2
    assert len(done["attempts"]) == 3
    assert all(reason in a["error"] for a in done["attempts"])

    row(dashboard, task_id).click()
    expect(dashboard.locator("#detail-status")).to_have_text("failed")
    body = dashboard.locator("#detail-body")
    attempts = body.locator(".timeline li", has_text="Attempt")
    expect(attempts).to_have_count(3)
    for n in range(3):
        expect(attempts.nth(n).locator("pre.error")).to_have_text(f"UpstreamError: {reason}")
    errors = body.locator("section.d-section", has=dashboard.locator("h3", has_text="Error"))
    expect(errors).to_have_count(1)
    expect(errors.locator("pre.error")).to_have_text(f"UpstreamError: {reason}")

    # Visible text: the error once per attempt, once as the task's. The logs stay, with
    # the engine's line for each retried attempt ("attempt 0 failed: …").
    logs = body.locator("pre.logs")
    expect(logs).to_contain_text("asking the warehouse")
    in_logs = logs.inner_text().count(reason)
    assert in_logs == 2, logs.inner_text()
    assert body.inner_text().count(reason) - in_logs == 3 + 1, body.inner_text()

    # The traceback is folded: not visible (nor in the visible text) until opened.
    stack = body.locator("details[data-key=stack]")
    expect(stack).to_have_count(1)
    expect(stack).not_to_have_attribute("open", "")
    expect(stack.locator("pre")).to_be_hidden()
    stack.locator("summary").click()
    expect(stack.locator("pre")).to_be_visible()
    expect(stack.locator("pre")).to_contain_text("Traceback")
    page_log.assert_clean()


# --------------------------------------------------------------------------- burst

WATCH_ROWS = """() => {
  const FINAL = new Set(['success', 'failed', 'interrupted', 'cancelled']);
  window.__finalSeen = new Set();
  window.__regressions = [];
  const check = () => {
    for (const tr of document.querySelectorAll('#task-rows tr[data-task-id]')) {
      const id = tr.dataset.taskId, status = tr.dataset.status;
      if (FINAL.has(status)) window.__finalSeen.add(id);
      else if (window.__finalSeen.has(id)) window.__regressions.push([id, status]);
    }
  };
  new MutationObserver(check).observe(document.querySelector('#task-rows'),
    { subtree: true, childList: true, attributes: true, attributeFilter: ['data-status'] });
  check();
  // Every frame painted: the Total card and the list's "of N" (no filter: the same number).
  window.__drift = [];
  const frame = () => {
    const card = document.querySelector('[data-count="total"]').textContent;
    const listed = document.querySelector('#range').textContent.split(' of ').pop();
    if (card !== listed) window.__drift.push([card, listed]);
    requestAnimationFrame(frame);
  };
  requestAnimationFrame(frame);
}"""

# The list answers late (a slow network or database): the stream's newer events arrive
# while it is on its way, and the page must not let the older list undo them.
SLOW_LIST = """() => {
  const fetchNow = window.fetch;
  window.fetch = async (url, opts) => {
    const res = await fetchNow(url, opts);
    const list = new URL(url, location.href).pathname === '/tasks';
    if (list) await new Promise((r) => setTimeout(r, 800));
    return res;
  };
}"""

SAMPLE_ROWS = """() => Array.from(document.querySelectorAll('#task-rows tr[data-task-id]'),
  (tr) => [tr.dataset.taskId, tr.dataset.status])"""

# The Total card and the list's "of N", read in one go (no filter: the same number).
SAMPLE_TOTALS = """() => [document.querySelector('[data-count="total"]').textContent,
  document.querySelector('#range').textContent.split(' of ').pop()]"""


def test_after_a_burst_cards_and_list_agree_and_no_finished_row_goes_back(
    dashboard, page_log: PageLog, server: Server, admin
):
    dashboard.evaluate(SLOW_LIST)
    dashboard.evaluate(WATCH_ROWS)
    final_seen: set[str] = set()
    regressions: list[tuple[str, str]] = []
    drift: list[list[str]] = []

    def sample() -> None:
        for task_id, status in dashboard.evaluate(SAMPLE_ROWS):
            if status in FINAL:
                final_seen.add(task_id)
            elif task_id in final_seen:
                regressions.append((task_id, status))
        card, listed = dashboard.evaluate(SAMPLE_TOTALS)
        if card != listed:
            drift.append([card, listed])

    ids: list[str] = []

    def feed() -> None:  # small bursts (task events) and now and then a big one (a reload)
        with server.client() as client:
            for i in range(60):
                n = 150 if i % 20 == 10 else 12
                params = {"n": n, "spread": 0.06}
                ids.extend(client.post("/demo/burst", params=params).json()["task_ids"])
                time.sleep(0.05)

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        while feeder.is_alive():
            sample()
            dashboard.click('button.card[data-filter=""]')  # the Total card reloads the list
            dashboard.wait_for_timeout(900)
    finally:
        feeder.join()
    deadline = time.monotonic() + 30
    while True:
        sample()
        m = admin.get(f"{BASE_PATH}/metrics").json()
        if m["pending"] == 0 and m["running"] == 0:
            break
        assert time.monotonic() < deadline, m
        dashboard.wait_for_timeout(50)
    for _ in range(10):  # and while the last events and counts arrive
        sample()
        dashboard.wait_for_timeout(100)

    m = admin.get(f"{BASE_PATH}/metrics").json()
    listed = int(admin.get(BASE_PATH, params={"limit": 1}).headers["X-Total-Count"])
    assert m["total"] == listed  # nothing dropped from memory on this server
    total = f"{m['total']:,}"
    expect(dashboard.locator('[data-count="total"]')).to_have_text(total)
    expect(dashboard.locator("#range")).to_have_text(f"1–50 of {total}")
    expect(dashboard.locator('[data-count="success"]')).to_have_text(f"{m['success']:,}")
    expect(dashboard.locator("#history-note")).to_be_hidden()
    # The newest 50 are shown, all finished.
    shown = dashboard.evaluate(SAMPLE_ROWS)
    assert len(shown) == 50 and all(status == "success" for _, status in shown), shown
    assert {task_id for task_id, _ in shown} <= set(ids)

    assert not regressions, regressions[:10]
    assert not drift, drift[:10]  # the cards and the list's total change together
    assert dashboard.evaluate("window.__regressions") == []
    assert dashboard.evaluate("window.__drift") == []
    assert dashboard.evaluate("window.__finalSeen.size") >= 50
    page_log.assert_clean()
