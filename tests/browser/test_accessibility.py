"""axe-core on the dashboard's pages, in Chromium, light and dark.

axe (tests/browser/vendor/axe.min.js, see the README there) is injected into each page and
run over the whole document. A violation of impact critical, serious or moderate fails
the test; its message lists each rule with its targets and, for colour contrast, the
colours, the ratio found and the ratio needed. Minor ones are printed, not failed.

The pages' Content-Security-Policy (script-src 'self') forbids the injected script: the
test's browser context bypasses CSP (``bypass_csp=True``), for these tests only.

The server runs with periodic tasks and a limited queue, so the Schedules tab and the
Queues panel are on the pages checked.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser_harness import Server, expect, log_in, serve

pytestmark = [pytest.mark.browser, pytest.mark.slow]

AXE = Path(__file__).resolve().parent / "vendor" / "axe.min.js"
FAILING_IMPACTS = ("critical", "serious", "moderate")

RUN_AXE = """async () => {
  const result = await axe.run(document, { resultTypes: ['violations'] });
  return result.violations.map((v) => ({
    id: v.id,
    impact: v.impact,
    help: v.help,
    nodes: v.nodes.map((n) => ({
      target: n.target.join(' '),
      impact: n.impact,
      html: n.html.slice(0, 160),
      data: [...n.any, ...n.all, ...n.none].map((c) => c.data).filter((d) => d),
    })),
  }));
}"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"TASKFLOW_DEMO_SCHEDULES": "1", "TASKFLOW_DEMO_QUEUES": "1"}
    with serve(tmp_path_factory.mktemp("uvicorn"), env=env) as srv:
        yield srv


@pytest.fixture(scope="module")
def populated(server: Server) -> Server:
    """Tasks of every status: rows, badges, the chart and the failed view all have content;
    a progress bar, a delayed run, tasks waiting in a queue and a paused schedule too."""
    with server.client() as client:
        client.post("/demo/populate").raise_for_status()
        client.post("/demo/failing", params={"reason": "gateway timeout"}).raise_for_status()
        client.post("/demo/retrying").raise_for_status()
        slow = client.post("/demo/slow").json()["task_id"]
        client.post("/demo/stepped/a11y").raise_for_status()
        client.post("/demo/open/a11y:1").raise_for_status()
        client.post("/demo/later", params={"seconds": 3600}).raise_for_status()
        for n in range(3):  # one runs, two wait (pending)
            client.post(f"/demo/queued/a11y-{n}").raise_for_status()
    with server.admin_client("admin", "secret") as admin:
        admin.post(f"/tasks/{slow}/cancel").raise_for_status()
        admin.post("/tasks/schedules/nightly_cleanup/run").raise_for_status()
        # heartbeat (every second, paused) runs once: its row has a last run and status.
        admin.post("/tasks/schedules/heartbeat/resume").raise_for_status()
        deadline = time.monotonic() + 10
        while not any(
            s["name"] == "heartbeat" and s["last_status"] == "success"
            for s in admin.get("/tasks/schedules").json()
        ):
            assert time.monotonic() < deadline, "heartbeat did not run"
            time.sleep(0.05)
        admin.post("/tasks/schedules/heartbeat/pause").raise_for_status()
        admin.post("/tasks/schedules/weekly_report/pause").raise_for_status()
    return server


@pytest.fixture(params=["light", "dark"])
def scheme(request) -> str:
    return request.param


@pytest.fixture
def axe_page(browser, scheme: str):
    ctx = browser.new_context(
        viewport={"width": 1280, "height": 800},
        locale="en-US",
        timezone_id="UTC",
        color_scheme=scheme,
        reduced_motion="reduce",
        bypass_csp=True,  # lets the test inject axe; the pages' CSP is unchanged
    )
    ctx.set_default_timeout(10_000)
    try:
        yield ctx.new_page()
    finally:
        ctx.close()


def contrast(data: dict) -> str:
    return (
        f"fg {data.get('fgColor')} on bg {data.get('bgColor')}: {data.get('contrastRatio')}:1, "
        f"needs {data.get('expectedContrastRatio')} ({data.get('fontSize')}, "
        f"{data.get('fontWeight')})"
    )


def describe(violations: list[dict]) -> str:
    """Each rule, its elements grouped by finding (the same colours on 30 rows: one line)."""
    lines = []
    for v in violations:
        lines.append(f"[{v['impact']}] {v['id']}: {v['help']} ({len(v['nodes'])} element(s))")
        groups: dict[str, list[str]] = {}
        for node in v["nodes"]:
            found = [
                contrast(d) if isinstance(d, dict) and "contrastRatio" in d else str(d)
                for d in node["data"]
            ]
            groups.setdefault("; ".join(found) or node["html"], []).append(node["target"])
        for finding, targets in groups.items():
            more = f" and {len(targets) - 3} more" if len(targets) > 3 else ""
            lines.append(f"    {finding}")
            lines.append(f"      at {', '.join(targets[:3])}{more}")
    return "\n".join(lines)


def check(page, what: str) -> None:
    page.add_script_tag(path=str(AXE))
    violations = page.evaluate(RUN_AXE)
    failing = [v for v in violations if v["impact"] in FAILING_IMPACTS]
    minor = [v for v in violations if v["impact"] not in FAILING_IMPACTS]
    if minor:
        print(f"{what}: minor axe findings\n{describe(minor)}")
    assert not failing, f"{what}: axe violations\n{describe(failing)}"


def status_cells(page, status: str):
    return page.locator(f'#task-rows tr[data-status="{status}"] td.status')


def test_login_page(axe_page, server: Server, scheme: str):
    axe_page.goto(server.dashboard)
    expect(axe_page.locator("#username")).to_be_visible()
    check(axe_page, f"login page ({scheme})")


def test_login_page_with_an_error(axe_page, server: Server, scheme: str):
    axe_page.goto(server.dashboard)
    axe_page.fill("#username", "admin")
    axe_page.fill("#password", "wrong")
    axe_page.click("button[type=submit]")
    expect(axe_page.locator("p.alert")).to_be_visible()
    check(axe_page, f"login page with an error ({scheme})")


def test_dashboard(axe_page, populated: Server, scheme: str):
    log_in(axe_page, populated)
    expect(status_cells(axe_page, "failed").first).to_be_visible()
    expect(status_cells(axe_page, "running").first).to_be_visible()
    expect(status_cells(axe_page, "pending").first).to_be_visible()
    expect(status_cells(axe_page, "scheduled").first).to_be_visible()
    expect(axe_page.locator("#task-rows progress").first).to_be_visible()
    expect(axe_page.locator("#chart rect").first).to_be_attached()
    expect(axe_page.locator('#queues tr[data-queue="email"]')).to_be_visible()
    check(axe_page, f"dashboard ({scheme})")


def test_detail_panel_of_a_failed_task(axe_page, populated: Server, scheme: str):
    log_in(axe_page, populated)
    axe_page.locator('#task-rows tr[data-status="failed"]').first.click()
    expect(axe_page.locator("#detail")).to_be_visible()
    expect(axe_page.locator("#detail-status")).to_have_text("failed")
    expect(axe_page.locator("#detail-body")).to_contain_text(re.compile("Error"))
    check(axe_page, f"detail panel, failed task ({scheme})")


def test_failed_tab(axe_page, populated: Server, scheme: str):
    log_in(axe_page, populated)
    axe_page.click("#tab-failed")
    expect(axe_page.locator("#view-failed")).to_be_visible()
    expect(axe_page.locator("#failed-rows tr").first).to_be_visible()
    axe_page.locator('#failed-rows input[name="replay"]').first.check()
    check(axe_page, f"failed tab ({scheme})")


def test_schedules_tab(axe_page, populated: Server, scheme: str):
    log_in(axe_page, populated)
    axe_page.click("#tab-schedules")
    expect(axe_page.locator("#view-schedules")).to_be_visible()
    rows = axe_page.locator("#schedule-rows tr")
    expect(rows).to_have_count(3)
    # Active and paused rows, a finished last run, the badge and the delayed-runs link.
    expect(axe_page.locator("#schedule-rows .sc-state", has_text="paused").first).to_be_visible()
    expect(axe_page.locator("#schedule-rows .sc-state", has_text="active").first).to_be_visible()
    expect(axe_page.locator("#paused-badge")).to_have_text("2 paused")
    expect(axe_page.locator('tr[data-schedule="heartbeat"] .sc-last a')).to_be_visible()
    expect(axe_page.locator("#show-delayed")).to_be_visible()
    check(axe_page, f"schedules tab ({scheme})")
