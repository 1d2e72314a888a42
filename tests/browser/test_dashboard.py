"""The dashboard in headless Chromium against a real uvicorn server on 127.0.0.1.

Tasks are enqueued over HTTP with httpx (the app's /demo routes) while the page is open; every
wait is a Playwright `expect` with a deadline, never a sleep.
"""

from __future__ import annotations

import re
import uuid

import pytest
from browser_harness import BASE_PATH, PageLog, Server, enqueue, expect, log_in, row
from dashboard_app import TITLE

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def task(admin, task_id: str) -> dict:
    r = admin.get(f"{BASE_PATH}/{task_id}")
    r.raise_for_status()
    return r.json()


def mark_document(page) -> None:
    """Tag the loaded document; the tag survives everything but a reload or navigation."""
    page.evaluate("window.__sameDocument = true")


def assert_same_document(page, log: PageLog, loads_before: int) -> None:
    assert page.evaluate("window.__sameDocument === true"), "the page was reloaded"
    assert len(log.documents) == loads_before, log.documents


# --------------------------------------------------------------------------- login


def test_login_through_the_form(page, page_log: PageLog, server: Server, context):
    page.goto(server.dashboard)
    expect(page).to_have_url(f"{server.url}{BASE_PATH}/auth/login?next={BASE_PATH}/dashboard")
    expect(page.locator("#username")).to_be_focused()

    page.fill("#username", "admin")
    page.fill("#password", "not-the-password")
    with page.expect_response(f"{server.url}{BASE_PATH}/auth/login") as bad:
        page.click("button[type=submit]")
    assert bad.value.status == 401
    expect(page.locator("p.alert")).to_have_text("Invalid username or password.")
    expect(page.locator("#username")).to_have_value("admin")
    # Chromium reports any 4xx document in the console; this one is the contract (401 + form).
    assert len(page_log.errors) == 1 and "status of 401" in page_log.errors[0], page_log.errors
    page_log.errors.clear()

    page.fill("#password", "secret")
    page.click("button[type=submit]")
    expect(page).to_have_url(server.dashboard)
    expect(page.locator("#live")).to_have_text("Live")
    expect(page.locator('[data-count="total"]')).to_have_text(re.compile(r"^\d[\d,]*$"))

    cookies = {c["name"]: c for c in context.cookies()}
    session = cookies["taskflow_token"]
    assert session["httpOnly"] and session["sameSite"] == "Lax" and not session["secure"]
    page_log.assert_clean()


def test_sign_out_returns_to_the_login_form(dashboard, page_log: PageLog, server: Server):
    dashboard.click("form.logout button[type=submit]")
    expect(dashboard).to_have_url(f"{server.url}{BASE_PATH}/auth/login")
    dashboard.goto(server.dashboard)
    expect(dashboard).to_have_url(f"{server.url}{BASE_PATH}/auth/login?next={BASE_PATH}/dashboard")
    page_log.assert_clean()


# --------------------------------------------------------------------------- title


def test_title_is_shown_escaped(page, page_log: PageLog, server: Server):
    page.goto(server.dashboard)  # the login page shows the title too
    expect(page.locator("h1")).to_have_text(TITLE)
    assert page.locator("h1 b").count() == 0
    assert page.title() == f"Sign in · {TITLE}"

    log_in(page, server)
    expect(page.locator("header h1")).to_have_text(TITLE)
    assert page.locator("h1 b, title b").count() == 0
    assert page.title() == TITLE
    assert page.locator("body").get_attribute("data-title") == TITLE
    page_log.assert_clean()


# --------------------------------------------------------------------------- live updates


def test_enqueued_task_appears_and_changes_status_without_reload(
    dashboard, page_log: PageLog, server: Server, admin
):
    mark_document(dashboard)
    loads = len(page_log.documents)
    gate = uuid.uuid4().hex
    task_id = enqueue(server, f"gated/{gate}")

    tr = row(dashboard, task_id)
    expect(tr).to_have_count(1)
    expect(tr.locator("td.status")).to_have_text("running")
    expect(tr.locator("td.func")).to_contain_text("wait_for_gate")
    expect(tr.locator("td.func")).to_contain_text(f"gate={gate}")
    # New tasks go on top of the default newest-first page.
    expect(dashboard.locator("tr[data-task-id]").first).to_have_attribute("data-task-id", task_id)

    with server.client() as client:
        client.post(f"/demo/open/{gate}").raise_for_status()
    expect(tr.locator("td.status")).to_have_text("success")
    assert task(admin, task_id)["status"] == "success"

    # Several at once: all of them arrive and finish.
    with server.client() as client:
        ids = client.post("/demo/quick", params={"n": 3}).json()["task_ids"]
    for quick_id in ids:
        expect(row(dashboard, quick_id).locator("td.status")).to_have_text("success")

    assert_same_document(dashboard, page_log, loads)
    page_log.assert_clean()


def count(admin, status: str) -> str:
    return f"{admin.get(f'{BASE_PATH}/metrics').json()[status]:,}"


def test_count_cards_follow_the_stream(dashboard, page_log: PageLog, server: Server, admin):
    """The cards show the server's counts after every change, including the last one."""
    gate = uuid.uuid4().hex
    enqueue(server, f"gated/{gate}")
    running = dashboard.locator('[data-count="running"]')
    # A fixed server sends metrics at most ~1 s after a change; 5 s is plenty.
    expect(running).to_have_text(count(admin, "running"), timeout=5_000)
    # A metrics event just arrived: the next change comes well within a second of it.
    with server.client() as client:
        client.post(f"/demo/open/{gate}").raise_for_status()
    expect(dashboard.locator(f'#task-rows td.func:has-text("gate={gate}")')).to_have_count(1)
    expect(dashboard.locator('[data-count="success"]')).to_have_text(
        count(admin, "success"), timeout=5_000
    )
    expect(running).to_have_text(count(admin, "running"), timeout=5_000)
    page_log.assert_clean()


# --------------------------------------------------------------------------- cancel


def test_cancel_a_running_task_from_the_detail_panel(
    dashboard, page_log: PageLog, server: Server, admin
):
    mark_document(dashboard)
    loads = len(page_log.documents)
    task_id = enqueue(server, "slow", seconds=60)
    tr = row(dashboard, task_id)
    expect(tr.locator("td.status")).to_have_text("running")

    tr.click()
    detail = dashboard.locator("#detail")
    expect(detail).to_be_visible()
    expect(dashboard.locator("#detail-status")).to_have_text("running")
    expect(detail.locator(".kv code")).to_have_text(task_id)
    expect(dashboard.locator("#detail-retry")).to_be_hidden()

    dashboard.click("#detail-cancel")
    expect(dashboard.locator("#detail-status")).to_have_text("cancelled")
    expect(dashboard.locator("#detail-cancel")).to_be_hidden()
    expect(dashboard.locator("#toast")).to_contain_text(f"Cancel requested for {task_id[:8]}")
    expect(tr.locator("td.status")).to_have_text("cancelled")
    assert task(admin, task_id)["status"] == "cancelled"

    dashboard.click("#detail-close")
    expect(detail).to_be_hidden()
    assert_same_document(dashboard, page_log, loads)
    page_log.assert_clean()


# --------------------------------------------------------------------------- retry


def test_retry_a_failed_task_from_the_detail_panel(
    dashboard, page_log: PageLog, server: Server, admin
):
    reason = f"declined {uuid.uuid4().hex[:6]}"
    failed_id = enqueue(server, "failing", reason=reason)
    tr = row(dashboard, failed_id)
    expect(tr.locator("td.status")).to_have_text("failed")
    expect(tr.locator("td.err")).to_contain_text(reason)

    tr.click()
    expect(dashboard.locator("#detail-status")).to_have_text("failed")
    expect(dashboard.locator("#detail-cancel")).to_be_hidden()
    expect(dashboard.locator("#detail-body")).to_contain_text("UpstreamError")

    dashboard.click("#detail-retry")
    expect(dashboard.locator("#toast")).to_contain_text("Retried as")
    # The panel now shows the new task, linked to the one it replays.
    retry_link = dashboard.locator("#detail a[href^='#task=']")
    expect(retry_link).to_have_attribute("title", failed_id)
    new_id = dashboard.locator("#detail .kv code").inner_text()
    assert new_id != failed_id
    new = task(admin, new_id)
    assert new["retry_of"] == failed_id and new["func_name"] == "charge_card"

    expect(row(dashboard, new_id)).to_have_count(1)
    # The function always fails, so the replay fails as well, and the page says so.
    expect(row(dashboard, new_id).locator("td.status")).to_have_text("failed")
    expect(dashboard.locator("#detail-status")).to_have_text("failed")

    # Following the link goes back to the original.
    retry_link.click()
    expect(dashboard.locator("#detail .kv code")).to_have_text(failed_id)
    page_log.assert_clean()


def test_replay_selected_from_the_failed_view(dashboard, page_log: PageLog, server: Server, admin):
    ids = [enqueue(server, "failing", reason=f"bulk {i}") for i in range(2)]
    for task_id in ids:
        expect(row(dashboard, task_id).locator("td.status")).to_have_text("failed")

    dashboard.click("#tab-failed")
    expect(dashboard.locator("#view-failed")).to_be_visible()
    expect(dashboard.locator("#replay-selected")).to_be_disabled()
    for task_id in ids:
        dashboard.locator(f'tr[data-failed-id="{task_id}"] input[name="replay"]').check()
    expect(dashboard.locator("#replay-selected")).to_have_text("Replay selected (2)")
    dashboard.click("#replay-selected")
    expect(dashboard.locator("#toast")).to_contain_text("Dispatched 2, skipped 0")

    replays = admin.get(BASE_PATH, params={"func_name": "charge_card", "limit": 1000}).json()
    assert {t["retry_of"] for t in replays} >= set(ids)
    # Replayed failures leave the list (replaying them again would repeat work) ...
    for task_id in ids:
        expect(dashboard.locator(f'tr[data-failed-id="{task_id}"]')).to_have_count(0)
    # ... until asked for, each then saying what replayed it.
    toggle = dashboard.locator("#toggle-replayed")
    expect(toggle).to_contain_text("already replayed")
    toggle.click()
    for task_id in ids:
        link = dashboard.locator(f'tr[data-failed-id="{task_id}"] .replayed a')
        expect(link).to_be_visible()
        expect(dashboard.locator(f'tr[data-failed-id="{task_id}"] .replayed')).to_contain_text(
            "replayed as"
        )
    page_log.assert_clean()


# --------------------------------------------------------------------------- filters


def test_filter_by_status_and_search(dashboard, page_log: PageLog, server: Server, admin):
    with server.client() as client:
        (ok_id,) = client.post("/demo/quick", params={"n": 1}).json()["task_ids"]
    failed_id = enqueue(server, "failing", reason="filter me")
    expect(row(dashboard, ok_id).locator("td.status")).to_have_text("success")
    expect(row(dashboard, failed_id).locator("td.status")).to_have_text("failed")

    rows = dashboard.locator("#task-rows tr[data-task-id]")
    dashboard.select_option("select#status-filter", "failed")
    expect(dashboard).to_have_url(f"{server.dashboard}?status=failed")
    expect(row(dashboard, ok_id)).to_have_count(0)
    expect(row(dashboard, failed_id)).to_have_count(1)
    expect(rows.filter(has_not=dashboard.locator("td.status", has_text="failed"))).to_have_count(0)
    failed_total = admin.get(BASE_PATH, params={"status": "failed", "limit": 1}).headers[
        "X-Total-Count"
    ]
    expect(dashboard.locator("#range")).to_contain_text(f"of {int(failed_total):,}")

    # While filtered, live events only add matching tasks.
    with server.client() as client:
        (late_ok,) = client.post("/demo/quick", params={"n": 1}).json()["task_ids"]
    late_failed = enqueue(server, "failing", reason="late")
    expect(row(dashboard, late_failed).locator("td.status")).to_have_text("failed")
    assert task(admin, late_ok)["status"] == "success"
    expect(row(dashboard, late_ok)).to_have_count(0)

    dashboard.select_option("select#status-filter", "success")
    expect(row(dashboard, ok_id)).to_have_count(1)
    expect(row(dashboard, failed_id)).to_have_count(0)
    expect(rows.filter(has_not=dashboard.locator("td.status", has_text="success"))).to_have_count(0)

    dashboard.select_option("select#status-filter", "")
    expect(dashboard).to_have_url(server.dashboard)
    expect(row(dashboard, failed_id)).to_have_count(1)

    # Search by a task id prefix narrows to that task.
    dashboard.fill("input#search", failed_id[:13])
    expect(rows).to_have_count(1)
    expect(row(dashboard, failed_id)).to_have_count(1)
    dashboard.fill("input#search", "")
    expect(row(dashboard, ok_id)).to_have_count(1)

    # The count cards filter too.
    dashboard.click('button.card[data-filter="failed"]')
    expect(dashboard.locator("select#status-filter")).to_have_value("failed")
    expect(row(dashboard, ok_id)).to_have_count(0)
    page_log.assert_clean()


# --------------------------------------------------------------------------- hygiene


def test_no_console_errors_and_nothing_fetched_off_host(
    dashboard, page_log: PageLog, server: Server
):
    """Exercise most of the page; every request stays on 127.0.0.1 and nothing logs an error."""
    task_id = enqueue(server, "failing", reason="hygiene")
    expect(row(dashboard, task_id).locator("td.status")).to_have_text("failed")
    expect(dashboard.locator('[data-count="total"]')).not_to_have_text("–")
    expect(dashboard.locator("#chart rect").first).to_be_attached()

    row(dashboard, task_id).click()
    expect(dashboard.locator("#detail-status")).to_have_text("failed")
    dashboard.keyboard.press("Escape")
    expect(dashboard.locator("#detail")).to_be_hidden()

    dashboard.click("button.sort[data-sort=func_name]")
    expect(dashboard.locator("th[aria-sort=ascending]")).to_have_count(1)
    dashboard.click("#tab-failed")
    expect(dashboard.locator(f'tr[data-failed-id="{task_id}"]')).to_have_count(1)
    dashboard.click("#tab-all")
    dashboard.emulate_media(color_scheme="dark")
    dashboard.reload()
    expect(dashboard.locator("#live")).to_have_text("Live")

    hosts = {r.split("/")[2] for r in page_log.requests if r.startswith("http")}
    assert hosts == {server.url.split("/")[2]}, hosts
    page_log.assert_clean()


def test_no_schedules_tab_nor_queues_panel_without_them(
    dashboard, page_log: PageLog, server: Server, admin
):
    """This app has no periodic task and only the default queue, without limits."""
    assert admin.get(f"{BASE_PATH}/schedules").json() == []
    expect(dashboard.locator('[data-count="total"]')).not_to_have_text("–")
    with dashboard.expect_response(lambda r: r.url.endswith(f"{BASE_PATH}/schedules")):
        dashboard.reload()
    expect(dashboard.locator("#live")).to_have_text("Live")
    expect(dashboard.locator("#tab-schedules")).to_be_hidden()
    expect(dashboard.locator("#queues")).to_be_hidden()
    # A link to the tab falls back to All tasks.
    dashboard.goto(f"{server.dashboard}?view=schedules")
    expect(dashboard.locator("#tab-all")).to_have_attribute("aria-selected", "true")
    expect(dashboard.locator("#view-all")).to_be_visible()
    expect(dashboard.locator("#view-schedules")).to_be_hidden()
    expect(dashboard).not_to_have_url(re.compile("view=schedules"))
    page_log.assert_clean()


def test_screenshot_of_a_populated_dashboard(page, page_log: PageLog, server: Server, tmp_path):
    """screenshot.py's steps work (it writes docs/img/dashboard.png; this writes to tmp)."""
    from screenshot import populate, shoot

    populate(server)
    log_in(page, server)
    path = tmp_path / "dashboard.png"
    shoot(page, path)
    png = path.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (1280, 800)
    page_log.assert_clean()
