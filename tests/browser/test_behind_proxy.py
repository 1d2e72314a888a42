"""The dashboard in Chromium through a real nginx or Caddy, in the set-ups of proxy_harness.py.

For each set-up (nginx: ``plain``, ``host``, ``prefix``, ``mounted``; Caddy: ``caddy``,
``caddy-prefix``) a signed-in browser does what a person does: log in through the form,
watch a task arrive live, cancel one, retry one, replay failures, follow the list's ``Link``
to the next page, sign out, and come back to a bookmarked filtered view. Every request the
page makes is recorded: none may leave the admin's path under the set-up's prefix, and none
may be answered 403 or 404.

The proxy always listens on a port of its own (never 80), so behind nginx the browser's
``Origin`` differs from the ``Host`` the app sees: only ``Sec-Fetch-Site`` (or
``X-Forwarded-Host`` from a proxy uvicorn trusts) tells the app the request is its own.
Cross-site requests stay refused through the same proxies.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from apps.nginx_support import PLAIN
from browser_harness import BASE_PATH, PageLog, expect, row
from dashboard_app import PASSWORD, USERNAME
from proxy_harness import SETUPS, UNAVAILABLE, Deployment, Setup, deploy, serve_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]

EVIL = "http://evil.example"


def need_proxy(setup: Setup) -> None:
    try:
        setup.find_proxy()
    except UNAVAILABLE as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(str(exc), pytrace=False)
        pytest.skip(str(exc))


@pytest.fixture(scope="module", params=list(SETUPS))
def deployment(request, tmp_path_factory) -> Iterator[Deployment]:
    name = request.param
    need_proxy(SETUPS[name])
    with deploy(SETUPS[name], tmp_path_factory.mktemp(f"proxy-{name}")) as d:
        yield d


# --------------------------------------------------------------------------- recording


@dataclass
class Traffic:
    """Every request a page makes and every response it gets (URL, method, status)."""

    requests: list[tuple[str, str, str]] = field(default_factory=list)  # method, type, url
    responses: list[tuple[int, str, str]] = field(default_factory=list)  # status, method, url

    def attach(self, page) -> None:
        page.on("request", lambda r: self.requests.append((r.method, r.resource_type, r.url)))
        page.on(
            "response",
            lambda r: self.responses.append((r.status, r.request.method, r.url)),
        )

    def assert_clean(self, d: Deployment) -> None:
        assert self.requests, "no request was recorded"
        outside = [
            (method, url)
            for method, _, url in self.requests
            if not url.startswith("data:") and not d.under_base(url)
        ]
        assert not outside, f"requests outside {d.base}: {outside}"
        refused = [(s, m, u) for s, m, u in self.responses if s in (403, 404)]
        assert not refused, f"answered 403/404: {refused}\n{d.logs()}"


@pytest.fixture
def traffic(page) -> Traffic:
    t = Traffic()
    t.attach(page)
    return t


# --------------------------------------------------------------------------- helpers


def login_url(d: Deployment, target: str | None = None) -> str:
    return f"{d.base}/auth/login?next={target or f'{d.prefix}{BASE_PATH}/dashboard'}"


def log_in(page, d: Deployment) -> None:
    """Open the dashboard through the proxy, sign in through the form, wait for "Live"."""
    page.goto(d.dashboard)
    expect(page).to_have_url(login_url(d))
    page.fill("#username", USERNAME)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    expect(page).to_have_url(d.dashboard)
    expect(page.locator("#live")).to_have_text("Live")


@contextlib.contextmanager
def admin(d: Deployment) -> Iterator[httpx.Client]:
    with d.admin_client(USERNAME, PASSWORD) as client:
        yield client


def task(d: Deployment, task_id: str) -> dict:
    with admin(d) as client:
        r = client.get(f"{BASE_PATH}/{task_id}")
        r.raise_for_status()
        return r.json()


def login_csrf(client: httpx.Client) -> str:
    """The login form's token, as a browser would have it from the page."""
    page = client.get(f"{BASE_PATH}/auth/login").text
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, page[:500]
    return match.group(1)


# --------------------------------------------------------------------------- a person's session


def test_log_in_and_watch_a_task_arrive_live(
    page, page_log: PageLog, traffic: Traffic, deployment: Deployment
):
    d = deployment
    log_in(page, d)
    page.evaluate("window.__sameDocument = true")
    gate = uuid.uuid4().hex
    task_id = d.demo(f"gated/{gate}")["task_id"]

    tr = row(page, task_id)
    expect(tr.locator("td.status")).to_have_text("running")
    expect(tr.locator("td.func")).to_contain_text("wait_for_gate")
    d.demo(f"open/{gate}")
    expect(tr.locator("td.status")).to_have_text("success")
    assert page.evaluate("window.__sameDocument === true"), "the page reloaded"
    traffic.assert_clean(d)
    page_log.assert_clean()


def test_cancel_a_running_task(page, page_log: PageLog, traffic: Traffic, deployment: Deployment):
    d = deployment
    log_in(page, d)
    task_id = d.demo("slow", seconds=60)["task_id"]
    tr = row(page, task_id)
    expect(tr.locator("td.status")).to_have_text("running")
    tr.click()
    expect(page.locator("#detail-status")).to_have_text("running")
    page.click("#detail-cancel")
    expect(page.locator("#detail-status")).to_have_text("cancelled")
    expect(tr.locator("td.status")).to_have_text("cancelled")
    assert task(d, task_id)["status"] == "cancelled"
    traffic.assert_clean(d)
    page_log.assert_clean()


def test_retry_a_failed_task(page, page_log: PageLog, traffic: Traffic, deployment: Deployment):
    d = deployment
    log_in(page, d)
    failed_id = d.demo("failing", reason=f"declined {uuid.uuid4().hex[:6]}")["task_id"]
    tr = row(page, failed_id)
    expect(tr.locator("td.status")).to_have_text("failed")
    tr.click()
    expect(page.locator("#detail-status")).to_have_text("failed")
    page.click("#detail-retry")
    expect(page.locator("#toast")).to_contain_text("Retried as")
    new_id = page.locator("#detail .kv code").inner_text()
    assert new_id != failed_id
    assert task(d, new_id)["retry_of"] == failed_id
    traffic.assert_clean(d)
    page_log.assert_clean()


def test_replay_all_failures(page, page_log: PageLog, traffic: Traffic, deployment: Deployment):
    d = deployment
    log_in(page, d)
    failed_id = d.demo("failing", reason=f"replay {uuid.uuid4().hex[:6]}")["task_id"]
    expect(row(page, failed_id).locator("td.status")).to_have_text("failed")

    page.click("#tab-failed")
    expect(page.locator(f'tr[data-failed-id="{failed_id}"]')).to_have_count(1)
    page.select_option("#replay-window", "1h")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#replay-all")
    expect(page.locator("#toast")).to_contain_text(re.compile(r"Dispatched [1-9]\d*, skipped"))

    with admin(d) as client:
        replays = client.get(BASE_PATH, params={"func_name": "charge_card", "limit": 1000}).json()
    assert failed_id in {t["retry_of"] for t in replays}
    traffic.assert_clean(d)
    page_log.assert_clean()


FOLLOW_LINK = """async (base) => {
  const first = await fetch(base + '?limit=1', { headers: { Accept: 'application/json' } });
  const link = first.headers.get('Link');
  const match = link && /<([^>]*)>\\s*;\\s*rel="next"/.exec(link);
  if (!match) return { status: first.status, link };
  const next = new URL(match[1], first.url).href;
  const second = await fetch(next, { headers: { Accept: 'application/json' } });
  const firstIds = (await first.json()).map((t) => t.task_id);
  const secondIds = second.ok ? (await second.json()).map((t) => t.task_id) : [];
  return { status: first.status, link, target: match[1], next, nextStatus: second.status,
           firstIds, secondIds };
}"""


def test_follow_the_lists_link_to_the_next_page(
    page, page_log: PageLog, traffic: Traffic, deployment: Deployment
):
    d = deployment
    d.demo("quick", n=3)
    log_in(page, d)
    got = page.evaluate(FOLLOW_LINK, d.base)
    assert got["status"] == 200, got
    assert got.get("target"), f"no rel=next Link: {got}"
    # A relative reference (no scheme, no host), starting with the path the browser used.
    target = got["target"]
    assert not urlsplit(target).scheme and not urlsplit(target).netloc, target
    assert target.startswith(f"{d.prefix}{BASE_PATH}?"), target
    assert d.under_base(got["next"]), got
    assert got["nextStatus"] == 200, got
    assert len(got["secondIds"]) == 1 and got["secondIds"] != got["firstIds"], got

    # The same through the API with the session's cookie, as a script would.
    with admin(d) as client:
        first = client.get(BASE_PATH, params={"limit": 1})
        assert first.status_code == 200
        nxt = first.links.get("next", {}).get("url")
        assert nxt, first.headers
        second = client.get(httpx.URL(str(first.url)).join(nxt))
        assert second.status_code == 200, (nxt, second.status_code)
        assert str(second.url).startswith(d.base), (str(second.url), d.base)
    traffic.assert_clean(d)
    page_log.assert_clean()


def test_sign_out(page, page_log: PageLog, traffic: Traffic, deployment: Deployment):
    d = deployment
    log_in(page, d)
    page.click("form.logout button[type=submit]")
    expect(page).to_have_url(f"{d.base}/auth/login")
    page.goto(d.dashboard)
    expect(page).to_have_url(login_url(d))
    traffic.assert_clean(d)
    page_log.assert_clean()


def test_a_bookmarked_filtered_view_survives_login(
    page, page_log: PageLog, traffic: Traffic, deployment: Deployment
):
    d = deployment
    page.goto(f"{d.dashboard}?status=failed&q=abc")
    parts = urlsplit(page.url)
    assert f"{d.url}{parts.path}" == f"{d.base}/auth/login", page.url
    assert parse_qs(parts.query) == {
        "next": [f"{d.prefix}{BASE_PATH}/dashboard?status=failed&q=abc"]
    }
    page.fill("#username", USERNAME)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{d.dashboard}?status=failed&q=abc")
    expect(page.locator("#live")).to_have_text("Live")
    expect(page.locator("select#status-filter")).to_have_value("failed")
    expect(page.locator("input#search")).to_have_value("abc")
    traffic.assert_clean(d)
    page_log.assert_clean()


# --------------------------------------------------------------------------- cross-site


def test_cross_site_requests_are_refused_through_the_proxy(deployment: Deployment):
    d = deployment
    with d.client() as client:
        form = {"username": USERNAME, "password": PASSWORD, "csrf_token": login_csrf(client)}
        for headers in (
            {"Origin": EVIL},
            {"Origin": EVIL, "Sec-Fetch-Site": "cross-site"},
            {"Referer": f"{EVIL}/page", "Sec-Fetch-Site": "cross-site"},
            {"Origin": "null", "Sec-Fetch-Site": "cross-site"},
        ):
            r = client.post(f"{BASE_PATH}/auth/login", data=form, headers=headers)
            assert r.status_code == 403, (headers, r.status_code, r.text[:200])
            assert "taskflow_token" not in r.cookies

    failed_id = d.demo("failing", reason=f"cross {uuid.uuid4().hex[:6]}")["task_id"]
    with admin(d) as client:
        for headers in ({"Origin": EVIL}, {"Origin": EVIL, "Sec-Fetch-Site": "cross-site"}):
            r = client.post(f"{BASE_PATH}/{failed_id}/retry", headers=headers)
            assert r.status_code == 403, (headers, r.status_code, r.text[:200])
            r = client.post(f"{BASE_PATH}/retry-failed", params={"since": "1h"}, headers=headers)
            assert r.status_code == 403, (headers, r.status_code, r.text[:200])
        # A link on another site does not sign anyone out.
        r = client.get(f"{BASE_PATH}/auth/logout", headers={"Sec-Fetch-Site": "cross-site"})
        assert r.status_code == 403
        assert client.get(f"{BASE_PATH}/{failed_id}").status_code == 200  # still signed in
        replays = client.get(BASE_PATH, params={"func_name": "charge_card", "limit": 1000}).json()
        assert failed_id not in {t["retry_of"] for t in replays}


EVIL_PAGE = """<!doctype html><html><body>
<form id="f" method="post" action="{action}">
<input name="username" value="admin"><input name="password" value="secret">
<button type="submit">Win a prize</button></form></body></html>"""


def test_a_refused_cross_site_form_gets_a_readable_page(page, context, deployment: Deployment):
    """A form on another site posts to the login through the proxy: 403, as an HTML page."""
    d = deployment
    evil_origin = "http://evil.localhost"  # served by Playwright below: nothing leaves the host
    context.route(
        f"{evil_origin}/**",
        lambda route: route.fulfill(
            status=200,
            content_type="text/html",
            body=EVIL_PAGE.format(action=f"{d.base}/auth/login"),
        ),
    )
    page.goto(f"{evil_origin}/")
    with page.expect_response(f"{d.base}/auth/login") as refused:
        page.click("button[type=submit]")
    response = refused.value
    assert response.status == 403
    assert response.request.headers.get("origin") == evil_origin
    assert response.headers["content-type"].startswith("text/html"), response.headers
    body = page.locator("body")
    expect(body).to_contain_text(re.compile(r"\w+ \w+ \w+"))  # words, not {"detail": ...}
    assert not page.inner_text("body").lstrip().startswith("{")
    assert not [c for c in context.cookies() if c["name"] == "taskflow_token"]


# --------------------------------------------------------------------------- origins


def test_an_origin_only_browser_is_accepted_through_a_trusted_proxy(tmp_path):
    """No Sec-Fetch-Site (an older browser): Origin matches nginx's X-Forwarded-Host, which
    the app believes because uvicorn trusts nginx (--forwarded-allow-ips)."""
    need_proxy(SETUPS["prefix"])
    with deploy(SETUPS["prefix"], tmp_path) as d, d.client() as client:
        form = {"username": USERNAME, "password": PASSWORD, "csrf_token": login_csrf(client)}
        r = client.post(f"{BASE_PATH}/auth/login", data=form, headers={"Origin": d.url})
        assert r.status_code == 303, (r.status_code, r.text[:300], d.logs())
        assert r.headers["location"] == f"{d.prefix}{BASE_PATH}/dashboard"


@pytest.fixture(scope="module")
def untrusting(tmp_path_factory) -> Iterator[str]:
    """uvicorn that trusts no proxy on this machine, with allowed_origins set."""
    args = ("--forwarded-allow-ips", "192.0.2.1")  # a documentation address: nobody here
    env = {"TASKFLOW_DEMO_ALLOWED_ORIGINS": "https://tasks.example.com"}
    with serve_app("dashboard_app:app", tmp_path_factory.mktemp("untrusting"), args, env) as up:
        yield up.url


def test_forwarded_host_from_an_untrusted_peer_is_ignored(untrusting: str):
    with httpx.Client(base_url=untrusting, timeout=10.0) as client:
        form = {"username": USERNAME, "password": PASSWORD, "csrf_token": login_csrf(client)}
        headers = {
            "Origin": EVIL,
            "X-Forwarded-Host": "evil.example",
            "X-Forwarded-For": "203.0.113.9",
            "X-Forwarded-Proto": "http",
        }
        r = client.post(f"{BASE_PATH}/auth/login", data=form, headers=headers)
        assert r.status_code == 403, (r.status_code, r.text[:300])


def test_allowed_origins_admits_a_named_origin_only(untrusting: str):
    with httpx.Client(base_url=untrusting, timeout=10.0) as client:
        form = {"username": USERNAME, "password": PASSWORD, "csrf_token": login_csrf(client)}
        r = client.post(f"{BASE_PATH}/auth/login", data=form, headers={"Origin": EVIL})
        assert r.status_code == 403, (r.status_code, r.text[:300])
        r = client.post(
            f"{BASE_PATH}/auth/login", data=form, headers={"Origin": "https://tasks.example.com"}
        )
        assert r.status_code == 303, (r.status_code, r.text[:300])


# --------------------------------------------------------------------------- mounted, no lifespan


def test_a_mount_without_the_inner_lifespan_says_not_running(
    page, page_log: PageLog, tmp_path: Path
):
    """The common mistake: outer.mount() alone. One clear error in the log at the first
    task, "not running" on the dashboard instead of "Live", 503 from health/live."""
    setup = Setup("mounted-no-lifespan", "mounted_app:app", PLAIN, "/svc", ready="/ready")
    need_proxy(setup)
    env = {"TASKFLOW_DEMO_INNER_LIFESPAN": "0"}
    with deploy(setup, tmp_path, env) as d:
        with d.client() as client:
            assert client.get(f"{BASE_PATH}/health/live").status_code == 503
        d.demo("quick", n=1)
        d.demo("quick", n=1)
        log = d.upstream.text()
        mentions = [line for line in log.splitlines() if re.search(r"(?i)\blifespan\b", line)]
        assert len(mentions) == 1, log
        assert re.search(r"(?i)mount", mentions[0]), mentions[0]

        page.goto(d.dashboard)
        page.fill("#username", USERNAME)
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
        expect(page).to_have_url(d.dashboard)
        expect(page.locator("body")).to_contain_text(re.compile(r"not running", re.IGNORECASE))
        expect(page.locator("#live")).not_to_have_text("Live")
        page_log.assert_clean()
