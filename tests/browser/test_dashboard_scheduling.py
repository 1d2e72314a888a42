"""Schedules, queues, delayed runs and progress on the dashboard, in Chromium.

The module's server runs dashboard_app with its periodic tasks and its limited ``email``
queue (TASKFLOW_DEMO_SCHEDULES, TASKFLOW_DEMO_QUEUES). Tasks are driven over HTTP with
httpx while the page is open; every wait is a Playwright ``expect`` or a poll with a
deadline, never a sleep.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator

import pytest
from browser_harness import BASE_PATH, PageLog, Server, expect, serve

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SCHEDULING = {"TASKFLOW_DEMO_SCHEDULES": "1", "TASKFLOW_DEMO_QUEUES": "1"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serve(tmp_path_factory.mktemp("uvicorn"), env=SCHEDULING) as srv:
        yield srv


def row(page, task_id: str):
    return page.locator(f'#task-rows tr[data-task-id="{task_id}"]')


def post(server: Server, path: str, **params) -> dict:
    with server.client() as client:
        r = client.post(path, params=params)
        r.raise_for_status()
        return r.json()


def task(admin, task_id: str) -> dict:
    r = admin.get(f"{BASE_PATH}/{task_id}")
    r.raise_for_status()
    return r.json()


def schedule(admin, name: str) -> dict:
    r = admin.get(f"{BASE_PATH}/schedules")
    r.raise_for_status()
    (found,) = [s for s in r.json() if s["name"] == name]
    return found


def wait_for(check, what: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
        time.sleep(0.05)


def mark_document(page) -> None:
    page.evaluate("window.__sameDocument = true")


def assert_same_document(page, log: PageLog, loads_before: int) -> None:
    assert page.evaluate("window.__sameDocument === true"), "the page was reloaded"
    assert len(log.documents) == loads_before, log.documents


# --------------------------------------------------------------------------- schedules


def test_schedules_tab_lists_rules_pauses_resumes_and_runs_now(
    dashboard, page_log: PageLog, server: Server, admin
):
    tab = dashboard.locator("#tab-schedules")
    expect(tab).to_be_visible()
    tab.click()
    expect(tab).to_have_attribute("aria-selected", "true")
    expect(dashboard.locator("#view-schedules")).to_be_visible()
    expect(dashboard.locator("#view-all")).to_be_hidden()
    expect(dashboard).to_have_url(re.compile(r"[?&]view=schedules"))

    nightly = dashboard.locator('#schedule-rows tr[data-schedule="nightly_cleanup"]')
    weekly = dashboard.locator('#schedule-rows tr[data-schedule="weekly_report"]')
    # The rule in words (the server's own wording as the cell's title).
    expect(nightly.locator(".sc-rule")).to_have_text("every day")
    expect(nightly.locator(".sc-rule")).to_have_attribute("title", "every day")
    expect(weekly.locator(".sc-rule")).to_contain_text("every Monday at 06:30 (Europe/Paris)")
    expect(weekly.locator(".sc-rule code")).to_have_text("30 6 * * 1")
    # Next run: the API's time, and how far off it is; no run yet.
    api_next = schedule(admin, "nightly_cleanup")["next_run"]
    expect(nightly.locator(".sc-next time")).to_have_attribute("datetime", api_next)
    expect(nightly.locator(".sc-next .when")).to_have_text(re.compile(r"^in \d"))
    expect(nightly.locator(".sc-last")).to_have_text("not yet")
    expect(nightly.locator(".sc-state")).to_have_text("active")
    expect(dashboard.locator("#paused-badge")).to_have_text("1 paused")  # heartbeat

    # Pause: the row, the badge and the API agree; the button keeps the focus.
    nightly.get_by_role("button", name="Pause nightly_cleanup").click()
    expect(nightly.locator(".sc-state")).to_have_text("paused")
    expect(nightly.locator(".sc-next")).to_have_text("paused")
    expect(dashboard.locator("#paused-badge")).to_have_text("2 paused")
    expect(dashboard.locator("#toast")).to_have_text("Paused nightly_cleanup")
    resume = nightly.get_by_role("button", name="Resume nightly_cleanup")
    expect(resume).to_be_focused()
    assert schedule(admin, "nightly_cleanup")["paused"] is True
    assert schedule(admin, "weekly_report")["paused"] is False

    # The state is the server's, not the page's: a reload shows it paused still.
    dashboard.reload()
    expect(dashboard.locator("#live")).to_have_text("Live")
    expect(dashboard.locator("#tab-schedules")).to_have_attribute("aria-selected", "true")
    expect(nightly.locator(".sc-state")).to_have_text("paused")

    resume.click()
    expect(nightly.locator(".sc-state")).to_have_text("active")
    expect(nightly.locator(".sc-next time")).to_have_attribute(
        "datetime", re.compile(r"^\d{4}-\d\d-\d\dT")
    )
    expect(dashboard.locator("#paused-badge")).to_have_text("1 paused")
    expect(dashboard.locator("#toast")).to_have_text("Resumed nightly_cleanup")
    assert schedule(admin, "nightly_cleanup")["paused"] is False

    # Run now: a new task, shown in the detail panel until it succeeds.
    mark_document(dashboard)
    loads = len(page_log.documents)
    nightly.get_by_role("button", name="Run now: nightly_cleanup").click()
    expect(dashboard.locator("#toast")).to_have_text(re.compile(r"^Started nightly_cleanup as "))
    expect(dashboard.locator("#detail")).to_be_visible()
    expect(dashboard.locator("#detail-title")).to_have_text("nightly_cleanup")
    expect(dashboard.locator("#detail-status")).to_have_text("success")
    expect(dashboard.locator("#detail-body")).to_contain_text("trigger=manual")
    run_id = re.search(r"#task=([0-9a-f-]{36})$", dashboard.url).group(1)
    ran = task(admin, run_id)
    assert ran["status"] == "success", ran
    assert ran["tags"] == {"schedule": "nightly_cleanup", "trigger": "manual"}
    dashboard.keyboard.press("Escape")
    expect(dashboard.locator("#detail")).to_be_hidden()
    expect(nightly.get_by_role("button", name="Run now: nightly_cleanup")).to_be_focused()
    # The last run is now that run (the tab refreshes every 5 s)
    expect(nightly.locator(".sc-last a")).to_have_attribute(
        "href", re.compile(run_id), timeout=15_000
    )

    # The schedule's name shows its runs in All tasks, where the new one is listed.
    nightly.get_by_role("button", name=re.compile("^nightly_cleanup")).click()
    expect(dashboard.locator("#view-all")).to_be_visible()
    expect(dashboard.locator("#func-filter")).to_have_value("nightly_cleanup")
    expect(dashboard.locator("#func-filter")).to_be_focused()
    expect(row(dashboard, run_id).locator("td.status")).to_have_text("success")
    assert_same_document(dashboard, page_log, loads)

    # The audit trail has each action, by the signed-in user.
    entries = admin.get(f"{BASE_PATH}/audit").json()
    actions = [(e["action"], e["detail"].get("schedule"), e["actor"]) for e in entries]
    for action in ("schedule_pause", "schedule_resume", "schedule_run"):
        assert (action, "nightly_cleanup", "admin") in actions, actions
    (run_entry,) = [e for e in entries if e["action"] == "schedule_run"]
    assert run_entry["task_id"] == run_id
    page_log.assert_clean()


def test_a_schedule_that_ran_shows_its_last_run_and_links_to_it(
    dashboard, page_log: PageLog, server: Server, admin
):
    dashboard.click("#tab-schedules")
    beat = dashboard.locator('#schedule-rows tr[data-schedule="heartbeat"]')
    expect(beat.locator(".sc-rule")).to_have_text("every second")
    expect(beat.locator(".sc-state")).to_have_text("paused")
    expect(beat.locator(".sc-last")).to_have_text("not yet")

    beat.get_by_role("button", name="Resume heartbeat").click()
    expect(beat.locator(".sc-state")).to_have_text("active")
    # Its next occurrence runs and ends within seconds: the tab shows it while open.
    expect(beat.locator(".sc-last a")).to_have_attribute("href", re.compile(r"^#task="))
    expect(beat.locator(".sc-last-status")).to_have_text("success")
    beat.get_by_role("button", name="Pause heartbeat").click()
    expect(beat.locator(".sc-state")).to_have_text("paused")

    last = wait_for(
        lambda: (s := schedule(admin, "heartbeat"))["last_status"] == "success" and s,
        "heartbeat's last run",
    )
    link = beat.locator(".sc-last a")
    expect(link).to_have_attribute("href", f"#task={last['last_task_id']}")
    expect(beat.locator(".sc-last time")).to_have_attribute("datetime", last["last_run"])
    expect(beat.locator(".sc-last .when")).to_contain_text(" ago")
    link.click()
    expect(dashboard.locator("#detail-title")).to_have_text("heartbeat")
    expect(dashboard.locator("#detail-status")).to_have_text("success")
    expect(dashboard.locator("#detail-body")).to_contain_text("schedule=heartbeat")
    assert task(admin, last["last_task_id"])["tags"] == {"schedule": "heartbeat"}
    page_log.assert_clean()


def test_tabs_follow_the_arrow_keys(dashboard, page_log: PageLog):
    tabs = ["#tab-all", "#tab-failed", "#tab-schedules"]
    expect(dashboard.locator("#tab-schedules")).to_be_visible()
    # One stop in the tab order: the selected tab.
    assert [dashboard.locator(t).get_attribute("tabindex") for t in tabs] == ["0", "-1", "-1"]
    dashboard.locator("#tab-all").focus()
    for key, selected in (
        ("ArrowRight", "#tab-failed"),
        ("ArrowRight", "#tab-schedules"),
        ("ArrowRight", "#tab-all"),
        ("ArrowLeft", "#tab-schedules"),
        ("Home", "#tab-all"),
        ("End", "#tab-schedules"),
    ):
        dashboard.keyboard.press(key)
        expect(dashboard.locator(selected)).to_be_focused()
        expect(dashboard.locator(selected)).to_have_attribute("aria-selected", "true")
        expect(dashboard.locator(selected)).to_have_attribute("tabindex", "0")
        panel = dashboard.locator(selected).get_attribute("aria-controls")
        expect(dashboard.locator(f"#{panel}")).to_be_visible()
    expect(dashboard.locator("#schedule-rows tr")).to_have_count(3)
    page_log.assert_clean()


# --------------------------------------------------------------------------- progress


def test_a_progress_bar_moves_live_and_goes_when_the_task_succeeds(
    dashboard, page_log: PageLog, server: Server, admin
):
    mark_document(dashboard)
    loads = len(page_log.documents)
    gate = f"steps-{uuid.uuid4().hex[:8]}"
    task_id = post(server, f"/demo/stepped/{gate}", steps=4)["task_id"]
    tr = row(dashboard, task_id)
    expect(tr).to_have_attribute("data-status", "running")
    bar = tr.locator("td.status progress")
    expect(bar).to_have_count(0)  # no progress reported yet

    for step in range(1, 5):
        post(server, f"/demo/open/{gate}:{step}")
        pct = step * 25
        expect(bar).to_have_attribute("value", str(pct))
        expect(bar).to_have_attribute("aria-label", f"{pct}% – step {step} of 4")
        assert bar.evaluate("(node) => node.value") == pct
        if step == 2:  # the detail panel follows too
            tr.click()
            expect(dashboard.locator("#detail-progress")).to_have_text("50% – step 2 of 4")
    expect(dashboard.locator("#detail-progress")).to_have_text("100% – step 4 of 4")
    assert task(admin, task_id)["progress"] == 1.0

    post(server, f"/demo/open/{gate}:done")
    expect(tr).to_have_attribute("data-status", "success")
    expect(bar).to_have_count(0)
    expect(dashboard.locator("#detail-status")).to_have_text("success")
    expect(dashboard.locator("#detail-progress")).to_have_count(0)
    assert_same_document(dashboard, page_log, loads)
    page_log.assert_clean()


# --------------------------------------------------------------------------- queues


def test_queues_panel_follows_a_limited_queue(dashboard, page_log: PageLog, server: Server, admin):
    panel = dashboard.locator("#queues")
    expect(panel).to_be_visible()
    email = panel.locator('tr[data-queue="email"]')
    default = panel.locator('tr[data-queue="default"]')

    def cell(queue_row, col: str):
        return queue_row.locator(f'td[data-col="{col}"]')

    expect(cell(email, "concurrency")).to_have_text("1")
    expect(cell(email, "max_size")).to_have_text("3")
    expect(cell(default, "concurrency")).to_have_text("no limit")
    expect(cell(default, "max_size")).to_have_text("no limit")
    expect(cell(email, "waiting")).to_have_text("0")
    expect(cell(email, "running")).to_have_text("0")
    done_before = int(cell(email, "done").inner_text())

    mark_document(dashboard)
    loads = len(page_log.documents)
    prefix = f"mail-{uuid.uuid4().hex[:6]}"
    gates = [f"{prefix}-{i}" for i in range(4)]
    for gate in gates:  # one runs, three wait: the queue is full
        post(server, f"/demo/queued/{gate}")
    expect(cell(email, "running")).to_have_text("1")
    expect(cell(email, "waiting")).to_have_text("3 (full)")
    expect(cell(email, "waiting")).to_have_class(re.compile(r"\bfull\b"))
    with server.client() as client:
        refused = client.post(f"/demo/queued/{prefix}-refused")
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1", refused.text

    def open_running(what):
        """Open the gate of the newsletter that runs now."""
        running = wait_for(
            lambda: admin.get(
                BASE_PATH, params={"status": "running", "func_name": "send_newsletter"}
            ).json(),
            what,
        )
        post(server, f"/demo/open/{running[0]['tags']['gate']}")

    # Open the running task's gate, one at a time: the counts follow.
    for waiting in (2, 1, 0):
        open_running("a running newsletter")
        expect(cell(email, "waiting")).to_have_text(str(waiting))
        expect(cell(email, "running")).to_have_text("1")
    open_running("the last newsletter")
    expect(cell(email, "running")).to_have_text("0")
    expect(cell(email, "waiting")).to_have_text("0")
    expect(cell(email, "done")).to_have_text(str(done_before + 4))
    assert_same_document(dashboard, page_log, loads)
    page_log.assert_clean()


# --------------------------------------------------------------------------- delayed runs


def test_a_delayed_run_shows_when_it_runs_and_cancels_from_the_detail_panel(
    dashboard, page_log: PageLog, server: Server, admin
):
    task_id = post(server, "/demo/later", seconds=3600)["task_id"]
    run_at = task(admin, task_id)["run_at"]
    assert run_at and task(admin, task_id)["status"] == "scheduled"
    expect(dashboard.locator('[data-count="scheduled"]')).not_to_have_text("0")

    # The Schedules tab points at the delayed runs too.
    dashboard.click("#tab-schedules")
    link = dashboard.locator("#show-delayed")
    expect(link).to_have_text(re.compile(r"^Show the (\d+ )?delayed one-off runs?$"))
    link.click()
    expect(dashboard.locator("#view-all")).to_be_visible()
    expect(dashboard.locator("#status-filter")).to_have_value("scheduled")
    expect(dashboard).to_have_url(re.compile(r"[?&]status=scheduled"))

    tr = row(dashboard, task_id)
    expect(tr.locator("td.status")).to_have_text("scheduled")
    expect(tr.locator("td.err")).to_have_text(re.compile(r"^runs .*\d\d:\d\d:\d\d"))
    expect(tr.locator("td.err")).not_to_have_text("runs —")

    tr.click()
    expect(dashboard.locator("#detail-status")).to_have_text("scheduled")
    label = dashboard.locator("#detail-body .kv dt", has_text="Runs at")
    runs_at = label.locator("xpath=following-sibling::dd[1]")
    expect(runs_at).to_have_text(re.compile(r"\(in (59m|1h 0m)"))
    cancel = dashboard.locator("#detail-cancel")
    expect(cancel).to_be_visible()
    expect(dashboard.locator("#detail-retry")).to_be_hidden()
    cancel.click()
    expect(dashboard.locator("#detail-status")).to_have_text("cancelled")
    expect(cancel).to_be_hidden()
    assert task(admin, task_id)["status"] == "cancelled"
    # Filtered on scheduled, the list lets it go.
    expect(tr).to_have_count(0)
    expect(dashboard.locator('[data-count="cancelled"]')).not_to_have_text("0")
    page_log.assert_clean()
