"""Security rules of TaskAdmin: sessions, login, throttling, cross-site and CSRF, escaping, CSP.

One test (or one parametrized family) per rule of issue 5. Real apps, real login forms,
real signed cookies; nothing of taskflow is mocked.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import re
import threading
import time
import urllib.parse
from types import SimpleNamespace

import pytest
from apps.db_support import is_postgres
from apps.engine_support import wait_until
from fastapi import FastAPI
from fastapi.testclient import TestClient
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from taskflow import TaskAdmin, TaskAuthBackend, TaskManager

COOKIE = "taskflow_token"
SECRET = "test-secret-key-0123456789abcdef"
SAME_ORIGIN = "http://testserver"
SCRIPT = "<script>alert('xss')</script>"


def ok():
    return None


def boom(message="boom"):
    raise RuntimeError(message)


def hold(gate):
    gate.wait(30)


@pytest.fixture
def make(tmp_path):
    """Factory: a started app with auth; ``env.client(...)`` opens more clients on it.

    ``db``: a file name in tmp_path, a SQLite path or a PostgreSQL URL (``snapshot_target``);
    a test that takes ``snapshot_target`` names it before ``make``, so that its apps are
    shut down before its database goes.
    """
    stacks = []

    def build(*, auth=("admin", "secret"), db=None, **admin_kwargs):
        target = None if not db else db if is_postgres(db) else str(tmp_path / db)
        tm = TaskManager(shutdown_timeout=2.0, snapshot_db=target)
        for func in (ok, boom, hold):
            tm.task()(func)
        app = FastAPI()
        admin_kwargs.setdefault("secret_key", SECRET)
        TaskAdmin(app, tm, auth=auth, **admin_kwargs)
        gate = threading.Event()
        stack = contextlib.ExitStack()
        stacks.append(stack)
        stack.callback(gate.set)

        def client(**kwargs):
            kwargs.setdefault("follow_redirects", False)
            c = TestClient(app, raise_server_exceptions=False, **kwargs)
            stack.enter_context(c)
            return c

        c = client()
        stack.callback(gate.set)  # before the clients exit: held tasks end first
        return SimpleNamespace(tm=tm, app=app, c=c, client=client, gate=gate, close=stack.close)

    yield build
    for stack in reversed(stacks):
        stack.close()


@pytest.fixture
def env(make):
    return make()


def login(client, username="admin", password="secret", *, next=None, headers=None, path="/tasks"):
    data = {"username": username, "password": password}
    if next is not None:
        data["next"] = next
    return client.post(f"{path}/auth/login", data=data, headers=headers or {})


def logged_in(client, username="admin", password="secret"):
    r = login(client, username, password)
    assert r.status_code == 303, r.text
    return client.cookies[COOKIE]


def run(env, func, *args):
    task_id = env.tm.add_task(func, *args)
    wait_until(lambda: env.tm.get(task_id).status.value in ("success", "failed"))
    return task_id


def hidden(html, name):
    match = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert match, f"no hidden field {name!r} in the page"
    return match.group(1)


def data_csrf(html):
    match = re.search(r'data-csrf="([^"]+)"', html)
    assert match, "the dashboard carries no data-csrf"
    return match.group(1)


def with_cookie(env, value):
    """A fresh client that sends exactly this session cookie (no jar, no expiry handling)."""
    c = env.client()
    c.cookies.set(COOKIE, value)  # no expiry in the jar: always sent
    return c


# --------------------------------------------------------------------------- 401 without session

API_ROUTES = [
    ("GET", "/tasks"),
    ("GET", "/tasks/some-id"),
    ("GET", "/tasks/metrics"),
    ("GET", "/tasks/metrics/prometheus"),
    ("GET", "/tasks/health"),
    ("GET", "/tasks/audit"),
    ("GET", "/tasks/functions"),
    ("GET", "/tasks/export.csv"),
    ("POST", "/tasks/some-id/cancel"),
    ("POST", "/tasks/some-id/retry"),
    ("POST", "/tasks/bulk-retry"),
    ("POST", "/tasks/retry-failed"),
    ("DELETE", "/tasks/history?value=1&unit=day"),
]


@pytest.mark.parametrize(("method", "url"), API_ROUTES)
def test_api_without_session_is_401(env, method, url):
    task_id = run(env, boom)
    url = url.replace("some-id", task_id)
    kwargs = {"json": {"task_ids": [task_id]}} if url.endswith("bulk-retry") else {}
    r = env.c.request(method, url, **kwargs)
    assert r.status_code == 401
    assert "detail" in r.json()
    assert env.tm.get(task_id).status.value == "failed"  # nothing happened
    # The same request with a session gets through (the 401 above is about the session).
    logged_in(env.c)
    r = env.c.request(method, url, **kwargs)
    assert r.status_code < 500 and r.status_code not in (401, 403), r.text


def test_sse_stream_without_session_is_401(env):
    r = env.c.get("/tasks/dashboard/stream")
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("application/json")


# --------------------------------------------------------------------------- login redirects


def test_dashboard_redirects_to_login_with_local_next(env):
    r = env.c.get("/tasks/dashboard")
    assert r.status_code in (302, 303, 307)
    location = urllib.parse.urlsplit(r.headers["location"])
    assert location.path == "/tasks/auth/login"
    assert not location.netloc
    assert urllib.parse.parse_qs(location.query)["next"] == ["/tasks/dashboard"]
    page = env.c.get(r.headers["location"])
    assert page.status_code == 200
    assert hidden(page.text, "next") == "/tasks/dashboard"


def test_login_goes_to_next_then_dashboard_works(env):
    r = login(env.c, next="/tasks/dashboard?tab=failed")
    assert r.status_code == 303
    assert r.headers["location"] == "/tasks/dashboard?tab=failed"
    assert env.c.get("/tasks/dashboard").status_code == 200
    assert env.c.get("/tasks").status_code == 200


def test_login_without_next_goes_to_dashboard(env):
    r = login(env.c)
    assert r.status_code == 303 and r.headers["location"] == "/tasks/dashboard"


def test_wrong_password_is_401_with_the_form(env):
    r = login(env.c, password="wrong")
    assert r.status_code == 401
    assert "<form" in r.text
    assert COOKIE not in r.cookies
    assert env.c.get("/tasks").status_code == 401


def test_unknown_user_and_wrong_password_look_the_same(env):
    unknown = login(env.c, username="nobody", password="secret")
    wrong = env.client(client=("10.9.9.9", 1)).post(
        "/tasks/auth/login", data={"username": "admin", "password": "nope"}
    )
    assert unknown.status_code == wrong.status_code == 401
    strip = re.compile(r'value="[^"]*"')
    assert strip.sub("", unknown.text) == strip.sub("", wrong.text)


EVIL_NEXT = [
    "//evil.com",
    "//evil.com/tasks/dashboard",
    "https://evil.com",
    "http://evil.com/tasks/dashboard",
    "/\\evil.com",
    "\\\\evil.com",
    "/\\/evil.com",
    "///evil.com",
    "/\t/evil.com",
    "/\n/evil.com",
    " //evil.com",
    "https:evil.com",
    "javascript:alert(1)",
    "evil.com",
    "",
]


def is_local(location):
    parts = urllib.parse.urlsplit(location)
    return (
        location.startswith("/")
        and not location.startswith("//")
        and "\\" not in location
        and not parts.scheme
        and not parts.netloc
        and not any(ord(ch) < 33 for ch in location)
    )


@pytest.mark.parametrize("target", EVIL_NEXT)
def test_open_redirect_is_refused(env, target):
    r = login(env.c, next=target)
    assert r.status_code == 303
    location = r.headers["location"]
    assert is_local(location), location
    assert "evil" not in location
    page = env.c.get("/tasks/auth/login", params={"next": target})
    assert page.status_code == 200
    assert "evil" not in hidden(page.text, "next")


def test_redirects_stay_under_a_parent_mount():
    tm = TaskManager()
    sub = FastAPI()
    TaskAdmin(sub, tm, auth=("admin", "secret"), secret_key=SECRET)
    parent = FastAPI()
    parent.mount("/admin", sub)
    c = TestClient(parent, follow_redirects=False)
    r = c.get("/admin/tasks/dashboard")
    assert r.status_code == 303
    assert r.headers["location"] == "/admin/tasks/auth/login?next=/admin/tasks/dashboard"
    r = login(c, next="/admin/tasks/dashboard", path="/admin/tasks")
    assert r.headers["location"] == "/admin/tasks/dashboard"
    page = c.get("/admin/tasks/dashboard").text
    assert 'data-base="/admin/tasks"' in page
    assert 'action="/admin/tasks/auth/logout"' in page
    r = c.get("/admin/tasks/auth/logout")
    assert r.headers["location"] == "/admin/tasks/auth/login"


# --------------------------------------------------------------------------- expired / tampered


def test_expired_session_is_refused(make):
    env = make(token_expiry=1)
    cookie = logged_in(env.c)
    fresh = with_cookie(env, cookie)
    assert fresh.get("/tasks").status_code == 200
    # The server must refuse it by itself: the client keeps sending the old value.
    wait_until(lambda: fresh.get("/tasks").status_code == 401, 10, "the session to expire")
    assert fresh.get("/tasks/dashboard/stream").status_code == 401
    assert fresh.get("/tasks/dashboard").status_code == 303


def crafted(payload, *, age, key=SECRET):
    """A cookie signed like taskflow's, ``age`` seconds old (salt from the implementation)."""

    class OldSigner(TimestampSigner):
        def get_timestamp(self):
            return int(time.time() - age)

    return URLSafeTimedSerializer(key, salt="taskflow-session", signer=OldSigner).dumps(payload)


def binding_of(env, key=SECRET):
    """The credentials binding ("f") that a real login puts in admin's session."""
    cookie = logged_in(env.client())
    return URLSafeTimedSerializer(key, salt="taskflow-session").loads(cookie)["f"]


def test_old_timestamp_cookie_is_refused(make):
    env = make(token_expiry=3600)
    payload = {"u": "admin", "sid": "crafted-sid", "csrf": "x" * 32, "f": binding_of(env)}
    # Control: the same cookie with a fresh timestamp is accepted, so the refusal below is
    # about age, not about the crafted format.
    assert with_cookie(env, crafted(payload, age=0)).get("/tasks").status_code == 200
    assert with_cookie(env, crafted(payload, age=3700)).get("/tasks").status_code == 401


def tampered_variants(cookie):
    payload, ts, sig = cookie.rsplit(".", 2)
    flip = "A" if sig[0] != "A" else "B"
    return {
        "signature": f"{payload}.{ts}.{flip}{sig[1:]}",
        "payload": f"{payload[:-1]}{'A' if payload[-1] != 'A' else 'B'}.{ts}.{sig}",
        "timestamp": f"{payload}.{ts[:-1]}{'A' if ts[-1] != 'A' else 'B'}.{sig}",
        "no-signature": f"{payload}.{ts}",
        "garbage": "not-a-session",
        "empty": "",
        "dots": "...",
        "percent": "%C3%A9.%C3%A9.%C3%A9",
    }


def test_tampered_cookie_is_refused(env):
    cookie = logged_in(env.c)
    assert with_cookie(env, cookie).get("/tasks").status_code == 200
    for name, value in tampered_variants(cookie).items():
        c = with_cookie(env, value)
        assert c.get("/tasks").status_code == 401, name
        assert c.get("/tasks/dashboard/stream").status_code == 401, name


def test_cookie_signed_with_another_key_is_refused(make):
    env = make(secret_key="another-secret-key-000000000000")
    binding = binding_of(env, key="another-secret-key-000000000000")
    payload = {"u": "admin", "sid": "s", "csrf": "c", "f": binding}
    assert with_cookie(env, crafted(payload, age=0, key=SECRET)).get("/tasks").status_code == 401
    good = crafted(payload, age=0, key="another-secret-key-000000000000")
    assert with_cookie(env, good).get("/tasks").status_code == 200


# --------------------------------------------------------------------------- throttling


def test_five_failures_for_one_username_throttle_that_name_from_that_client_only(env):
    c = env.client(client=("10.0.1.1", 1000))
    for n in range(5):
        assert login(c, password=f"wrong-{n}").status_code == 401
    r = login(c)  # the right password, from the client that failed
    assert r.status_code == 429
    assert int(r.headers["retry-after"]) > 0
    assert COOKIE not in r.cookies
    # Another username from that client is not affected, nor the name from elsewhere:
    # failures from one address never lock a user out everywhere.
    assert login(c, username="nobody", password="x").status_code == 401
    assert login(env.client(client=("10.0.1.2", 1000))).status_code == 303


def test_twenty_failures_from_one_client_throttle_it_for_every_username(env):
    c = env.client(client=("10.0.2.1", 1000))
    for n in range(20):
        assert login(c, username=f"user{n}", password="wrong").status_code == 401
    r = login(c)
    assert r.status_code == 429
    assert int(r.headers["retry-after"]) > 0
    # Another client can still log in as admin: the throttle is per client address.
    other = env.client(client=("10.0.2.2", 1000))
    assert login(other).status_code == 303


def test_four_failures_do_not_throttle(env):
    c = env.client(client=("10.0.3.1", 1000))
    for _ in range(4):
        assert login(c, password="wrong").status_code == 401
    assert login(c).status_code == 303


def test_throttled_login_page_is_429_with_retry_after_for_browsers_too(env):
    c = env.client(client=("10.0.4.1", 1000))
    for _ in range(5):
        assert login(c, password="wrong").status_code == 401
    page = c.get("/tasks/auth/login")
    token = hidden(page.text, "csrf_token")
    r = c.post(
        "/tasks/auth/login",
        data={"username": "admin", "password": "secret", "csrf_token": token},
        headers={"origin": SAME_ORIGIN},
    )
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0


# --------------------------------------------------------------------------- cross-site

CROSS_SITE = [
    {"origin": "https://evil.com"},
    {"origin": "http://testserver.evil.com"},
    {"origin": "null"},
    {"referer": "https://evil.com/page"},
    {"sec-fetch-site": "cross-site"},
    {"origin": SAME_ORIGIN, "sec-fetch-site": "cross-site"},
]

WRITES = [
    ("POST", "/tasks/{id}/cancel", None),
    ("POST", "/tasks/{id}/retry", None),
    ("POST", "/tasks/bulk-retry", {"task_ids": ["{id}"]}),
    ("POST", "/tasks/retry-failed?since=all", None),
    ("DELETE", "/tasks/history?value=1&unit=min", None),
]


def write(client, method, url, body, task_id, headers):
    url = url.replace("{id}", task_id)
    if body is not None:
        body = {"task_ids": [task_id]}
    return client.request(method, url, json=body, headers=headers)


@pytest.mark.parametrize(
    "headers", CROSS_SITE, ids=lambda h: ",".join(f"{k}={v}" for k, v in h.items())
)
@pytest.mark.parametrize(("method", "url", "body"), WRITES, ids=[w[1] for w in WRITES])
def test_cross_site_writes_are_403(env, method, url, body, headers):
    task_id = run(env, boom)
    logged_in(env.c)
    r = write(env.c, method, url, body, task_id, headers)
    assert r.status_code == 403
    assert "detail" in r.json()
    assert env.c.get("/tasks", params={"status": "failed"}).headers["x-total-count"] == "1"
    assert env.c.get("/tasks").headers["x-total-count"] == "1"  # no replay happened


@pytest.mark.parametrize(
    "headers", CROSS_SITE, ids=lambda h: ",".join(f"{k}={v}" for k, v in h.items())
)
def test_cross_site_login_is_403(env, headers):
    page = env.c.get("/tasks/auth/login")
    token = hidden(page.text, "csrf_token")
    r = env.c.post(
        "/tasks/auth/login",
        data={"username": "admin", "password": "secret", "csrf_token": token},
        headers=headers,
    )
    assert r.status_code == 403
    assert COOKIE not in r.cookies


@pytest.mark.parametrize("headers", CROSS_SITE[:3], ids=["origin", "subdomain", "null"])
def test_cross_site_logout_is_refused(env, headers):
    cookie = logged_in(env.c)
    r = env.c.post("/tasks/auth/logout", headers=headers)
    assert r.status_code == 403
    assert with_cookie(env, cookie).get("/tasks").status_code == 200


MALFORMED_SOURCE = [
    {"origin": "http://["},
    {"origin": "https://]evil.com"},
    {"referer": "http://[::1/page"},
]


@pytest.mark.parametrize("headers", MALFORMED_SOURCE, ids=lambda h: f"{h}")
def test_malformed_origin_or_referer_is_refused_not_500(env, headers):
    cookie = logged_in(env.c)
    task_id = run(env, boom)
    answers = [
        env.c.post(f"/tasks/{task_id}/retry", headers=headers),
        env.c.delete("/tasks/history", params={"value": 1, "unit": "day"}, headers=headers),
        env.c.post("/tasks/auth/logout", headers=headers),
        env.client().post(
            "/tasks/auth/login", data={"username": "admin", "password": "secret"}, headers=headers
        ),
    ]
    assert [r.status_code for r in answers] == [403, 403, 403, 403]
    assert with_cookie(env, cookie).get("/tasks").status_code == 200


def test_cross_site_writes_are_refused_without_auth_too(make):
    env = make(auth=None)
    task_id = run(env, boom)
    for headers in CROSS_SITE:
        r = env.c.post(f"/tasks/{task_id}/retry", headers=headers)
        assert r.status_code == 403, headers
    assert env.c.get("/tasks").headers["x-total-count"] == "1"
    same = env.c.post(f"/tasks/{task_id}/retry", headers={"origin": SAME_ORIGIN})
    assert same.status_code == 200  # no login, so no session token to check


def test_non_browser_client_with_session_and_no_headers_is_allowed(env):
    task_id = run(env, boom)
    logged_in(env.c)
    r = env.c.post(f"/tasks/{task_id}/retry")
    assert r.status_code == 200
    assert env.c.delete("/tasks/history", params={"value": 1, "unit": "day"}).status_code == 200
    assert env.c.post("/tasks/retry-failed").status_code == 200
    # ... while the same client without a session is refused.
    assert with_cookie(env, "").post(f"/tasks/{task_id}/retry").status_code == 401


def test_dashboard_requests_need_the_csrf_token(env):
    task_id = run(env, boom)
    logged_in(env.c)
    page = env.c.get("/tasks/dashboard")
    assert page.status_code == 200
    token = data_csrf(page.text)
    browser = {"origin": SAME_ORIGIN, "sec-fetch-site": "same-origin"}
    r = env.c.post(f"/tasks/{task_id}/retry", headers=browser)
    assert r.status_code == 403
    r = env.c.post(f"/tasks/{task_id}/retry", headers={**browser, "x-csrf-token": "wrong"})
    assert r.status_code == 403
    r = env.c.post(f"/tasks/{task_id}/retry", headers={"referer": SAME_ORIGIN + "/tasks/dashboard"})
    assert r.status_code == 403  # a Referer alone also marks a browser
    assert env.c.get("/tasks").headers["x-total-count"] == "1"
    r = env.c.post(f"/tasks/{task_id}/retry", headers={**browser, "x-csrf-token": token})
    assert r.status_code == 200
    r = env.c.delete(
        "/tasks/history",
        params={"value": 1, "unit": "day"},
        headers={**browser, "x-csrf-token": token},
    )
    assert r.status_code == 200


def test_csrf_token_of_another_session_is_refused(env):
    task_id = run(env, boom)
    other = env.client()
    logged_in(other)
    foreign = data_csrf(other.get("/tasks/dashboard").text)
    logged_in(env.c)
    mine = data_csrf(env.c.get("/tasks/dashboard").text)
    assert foreign != mine
    browser = {"origin": SAME_ORIGIN, "x-csrf-token": foreign}
    assert env.c.post(f"/tasks/{task_id}/retry", headers=browser).status_code == 403


def test_browser_login_needs_the_form_token(env):
    browser = {"origin": SAME_ORIGIN}
    r = login(env.c, headers=browser)  # no csrf_token field
    assert r.status_code == 403
    assert COOKIE not in r.cookies
    page = env.c.get("/tasks/auth/login")
    token = hidden(page.text, "csrf_token")
    r = env.c.post(
        "/tasks/auth/login",
        data={"username": "admin", "password": "secret", "csrf_token": token},
        headers=browser,
    )
    assert r.status_code == 303
    assert COOKIE in r.cookies


# --------------------------------------------------------------------------- logout


def assert_cookie_cleared(response):
    header = response.headers.get("set-cookie", "")
    assert header.startswith(f"{COOKIE}="), header
    value = header.split(";")[0].split("=", 1)[1].strip('"')
    lowered = header.lower()
    assert value == "" or "max-age=0" in lowered or "expires=thu, 01 jan 1970" in lowered, header


def test_logout_post_clears_cookie_and_revokes_session(storage_target, make):
    env = make(db=storage_target)
    cookie = logged_in(env.c)
    token = data_csrf(env.c.get("/tasks/dashboard").text)
    r = env.c.post(
        "/tasks/auth/logout", data={"csrf_token": token}, headers={"origin": SAME_ORIGIN}
    )
    assert r.status_code in (302, 303)
    assert urllib.parse.urlsplit(r.headers["location"]).path == "/tasks/auth/login"
    assert_cookie_cleared(r)
    copy = with_cookie(env, cookie)  # a copy kept elsewhere stops working too
    assert copy.get("/tasks").status_code == 401
    assert copy.get("/tasks/dashboard/stream").status_code == 401


def test_logout_get_clears_cookie_and_revokes_session(storage_target, make):
    env = make(db=storage_target)
    cookie = logged_in(env.c)
    r = env.c.get("/tasks/auth/logout")
    assert r.status_code in (302, 303)
    assert urllib.parse.urlsplit(r.headers["location"]).path == "/tasks/auth/login"
    assert_cookie_cleared(r)
    assert with_cookie(env, cookie).get("/tasks").status_code == 401
    # Logging in again gives a new, working session.
    assert with_cookie(env, logged_in(env.c)).get("/tasks").status_code == 200


def test_logout_revokes_the_session_in_other_workers(snapshot_target, make):
    worker_a = make(db=snapshot_target)
    worker_b = make(db=snapshot_target)
    cookie = logged_in(worker_a.c)
    assert with_cookie(worker_b, cookie).get("/tasks").status_code == 200  # sessions are shared
    assert worker_a.c.get("/tasks/auth/logout").status_code == 303
    assert with_cookie(worker_a, cookie).get("/tasks").status_code == 401
    assert with_cookie(worker_b, cookie).get("/tasks").status_code == 401


def test_logout_revocation_survives_a_restart(snapshot_target, make):
    first = make(db=snapshot_target)
    cookie = logged_in(first.c)
    assert first.c.get("/tasks/auth/logout").status_code == 303
    first.close()
    second = make(db=snapshot_target)
    assert with_cookie(second, cookie).get("/tasks").status_code == 401


# --------------------------------------------------------------------------- passwords


def test_non_ascii_passwords(make):
    env = make(auth=[("jürgen", "pässwörd-🔑-пароль"), ("名前", "密码")])
    assert login(env.c, "jürgen", "pässwörd-🔑-пароль").status_code == 303
    assert env.c.get("/tasks").status_code == 200
    other = env.client(client=("10.1.0.1", 1))
    assert login(other, "名前", "密码").status_code == 303
    bad = env.client(client=("10.1.0.2", 1))
    assert login(bad, "jürgen", "passwörd-🔑-пароль").status_code == 401
    assert login(bad, "jürgen", "pässwörd-🔑-пароль\u0301").status_code == 401


@pytest.mark.parametrize(
    "body",
    [
        b"username=admin&password=%FF%FE",
        b"username=%ED%A0%80&password=secret",
        b"username=admin&password=%00",
        b"username=admin&password=" + b"%F0%9F%94%91" * 2000,
        b"username=admin&password=\xff",
        b"username=admin&password",
        b"&&&&=&=",
        b"a=" + b"&a=".join([b"1"] * 100),
        b"username=admin&password=" + b"x" * 20_000,
        b"",
    ],
)
def test_odd_login_forms_never_500(env, body):
    r = env.c.post(
        "/tasks/auth/login",
        content=body,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code < 500, r.text
    assert r.status_code != 303
    assert COOKIE not in r.cookies


@pytest.mark.parametrize(
    "ctype", ["application/json", "multipart/form-data; boundary=x", "text/plain", ""]
)
def test_login_with_other_content_types_never_500(env, ctype):
    r = env.c.post(
        "/tasks/auth/login",
        content=b'{"username": "admin", "password": "secret"}',
        headers={"content-type": ctype},
    )
    assert 400 <= r.status_code < 500
    assert COOKIE not in r.cookies


# --------------------------------------------------------------------------- custom backends


class SyncBackend(TaskAuthBackend):
    def __init__(self):
        self.calls = []

    def authenticate_user(self, username, password):
        try:
            asyncio.get_running_loop()
            on_loop = True
        except RuntimeError:
            on_loop = False
        self.calls.append((username, on_loop))
        return username == "sync-user" and password == "sync-pw"


class AsyncBackend(TaskAuthBackend):
    def __init__(self):
        self.calls = []

    async def authenticate_user(self, username, password):
        await asyncio.sleep(0)
        self.calls.append(username)
        return username == "async-user" and password == "async-pw"


def test_sync_backend_runs_off_the_event_loop(make):
    backend = SyncBackend()
    env = make(auth=backend)
    assert login(env.c, "sync-user", "nope").status_code == 401
    assert login(env.c, "sync-user", "sync-pw").status_code == 303
    assert env.c.get("/tasks").status_code == 200
    assert backend.calls == [("sync-user", False), ("sync-user", False)]


def test_async_backend_is_awaited(make):
    backend = AsyncBackend()
    env = make(auth=backend)
    assert login(env.c, "async-user", "nope").status_code == 401
    assert login(env.c, "async-user", "async-pw").status_code == 303
    assert env.c.get("/tasks").status_code == 200
    assert backend.calls == ["async-user", "async-user"]


def test_backend_sees_non_ascii_passwords_intact(make):
    seen = []

    class Recorder(TaskAuthBackend):
        def authenticate_user(self, username, password):
            seen.append((username, password))
            return password == "ünïcödé-🔑"

    env = make(auth=Recorder())
    assert login(env.c, "zoë", "ünïcödé-🔑").status_code == 303
    assert seen == [("zoë", "ünïcödé-🔑")]


# --------------------------------------------------------------------------- cookie flags


def set_cookie_header(response):
    headers = [v for k, v in response.headers.multi_items() if k == "set-cookie"]
    ours = [h for h in headers if h.startswith(f"{COOKIE}=")]
    assert len(ours) == 1, headers
    return ours[0]


def test_cookie_flags_over_http(make):
    env = make(token_expiry=1234)
    header = set_cookie_header(login(env.c)).lower()
    assert "httponly" in header
    assert "samesite=lax" in header
    assert "secure" not in header
    assert "max-age=1234" in header


def test_cookie_is_secure_over_https(env):
    c = env.client(base_url="https://testserver")
    header = set_cookie_header(login(c)).lower()
    assert "secure" in header and "httponly" in header and "samesite=lax" in header


# --------------------------------------------------------------------------- secret_key


def test_secret_key_shares_sessions_between_apps(make):
    first = make()
    second = make()  # another process or a restart, with the same key
    cookie = logged_in(first.c)
    assert with_cookie(second, cookie).get("/tasks").status_code == 200
    third = make(secret_key="a-different-secret-key-0000000000")
    assert with_cookie(third, cookie).get("/tasks").status_code == 401


def test_without_secret_key_sessions_are_per_instance_and_a_warning_is_logged(make, caplog):
    with caplog.at_level("WARNING", logger="taskflow"):
        first = make(secret_key=None)
    assert any("secret_key" in r.getMessage() for r in caplog.records)
    second = make(secret_key=None)
    cookie = logged_in(first.c)
    assert with_cookie(first, cookie).get("/tasks").status_code == 200
    assert with_cookie(second, cookie).get("/tasks").status_code == 401


# --------------------------------------------------------------------------- escaping


def test_script_in_title_is_escaped(make):
    env = make(title=SCRIPT)
    login_page = env.c.get("/tasks/auth/login")
    assert login_page.status_code == 200
    assert SCRIPT not in login_page.text
    assert "&lt;script&gt;" in login_page.text
    logged_in(env.c)
    page = env.c.get("/tasks/dashboard")
    assert page.status_code == 200
    assert SCRIPT not in page.text
    assert "&lt;script&gt;" in page.text


def test_script_in_task_names_errors_and_logs_is_never_served_as_html(make):
    env = make()
    sneaky = env.tm.task(name=SCRIPT)(boom)
    task_id = run(env, sneaky, SCRIPT)
    logged_in(env.c)
    task = env.c.get(f"/tasks/{task_id}")
    assert task.json()["func_name"] == SCRIPT and SCRIPT in task.json()["error"]
    # Data travels only as JSON, CSV or SSE: never as a page a browser would render.
    for url in (f"/tasks/{task_id}", "/tasks", "/tasks/metrics", "/tasks/export.csv"):
        r = env.c.get(url)
        ctype = r.headers["content-type"]
        assert not ctype.startswith("text/html"), url
    # The served pages do not carry it (the dashboard fills itself in from the API).
    page = env.c.get("/tasks/dashboard")
    assert SCRIPT not in page.text and "alert(" not in page.text
    # The page's script writes server data as text, never as markup.
    js = env.c.get("/tasks/dashboard/static/app.js").text
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in js.replace("no innerHTML", ""), sink


def test_script_in_login_fields_is_escaped(env):
    r = login(env.c, username=SCRIPT, password="x", next="/" + SCRIPT + '"><img src=x>')
    assert r.status_code == 401
    assert SCRIPT not in r.text
    assert "<img src=x>" not in r.text
    page = env.c.get("/tasks/auth/login", params={"next": '/"><script>alert(1)</script>'})
    assert "<script>alert(1)</script>" not in page.text


# --------------------------------------------------------------------------- assets and CSP

URL_ATTR = re.compile(r"""(?:src|href|action|poster|data)\s*=\s*["']([^"']*)["']""", re.I)


def served(env):
    logged_in(env.c)
    return {
        "dashboard": env.c.get("/tasks/dashboard"),
        "login": env.client().get("/tasks/auth/login"),
        "css": env.c.get("/tasks/dashboard/static/app.css"),
        "js": env.c.get("/tasks/dashboard/static/app.js"),
    }


def test_no_external_asset_in_served_html_css_js(env):
    for name, r in served(env).items():
        assert r.status_code == 200, name
        assert not re.search(r"https?://", r.text, re.I), f"absolute URL in {name}"
        assert not re.search(r"(?<![:\w])//[a-z0-9.-]+\.[a-z]{2,}", r.text, re.I), name
        assert "@import" not in r.text, name
        for url in URL_ATTR.findall(r.text):
            assert url.startswith(("/", "#", "data:")) or url == "", (name, url)
        for url in re.findall(r"url\(\s*['\"]?([^'\")]+)", r.text):
            assert url.startswith(("data:", "#")), (name, url)


def test_content_security_policy_is_strict(env):
    for name, r in served(env).items():
        csp = r.headers.get("content-security-policy", "")
        assert csp, f"no CSP on {name}"
        directives = {
            d.strip().split()[0]: d.strip().split()[1:] for d in csp.split(";") if d.strip()
        }
        assert directives["default-src"] == ["'none'"], name
        assert directives["script-src"] == ["'self'"], name
        assert "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp, name
        assert directives.get("frame-ancestors") == ["'none'"], name
        assert r.headers.get("x-content-type-options") == "nosniff", name


def test_pages_have_no_inline_script_or_style(env):
    pages = served(env)
    for name in ("dashboard", "login"):
        html = pages[name].text
        for attrs, body in re.findall(r"<script([^>]*)>(.*?)</script>", html, re.S | re.I):
            assert "src=" in attrs and not body.strip(), name
        assert not re.search(r"<style", html, re.I), name
        assert not re.search(r"\son[a-z]+\s*=", html, re.I), name
        assert not re.search(r"\sstyle\s*=", html, re.I), name


# --------------------------------------------------------------------------- sessions follow users


def test_a_removed_user_loses_their_session(make):
    first = make(auth=[("admin", "secret"), ("bob", "pw-bob")])
    cookie = logged_in(first.c, "bob", "pw-bob")
    assert with_cookie(first, cookie).get("/tasks").status_code == 200
    first.close()
    # Restarted with the same secret_key, without bob.
    second = make(auth=[("admin", "secret")])
    assert with_cookie(second, cookie).get("/tasks").status_code == 401
    assert (
        with_cookie(second, cookie)
        .delete("/tasks/history", params={"value": 1, "unit": "day"})
        .status_code
        == 401
    )


def test_a_changed_password_ends_the_old_sessions(make):
    first = make(auth=[("admin", "secret"), ("bob", "old-pw")])
    cookie = logged_in(first.c, "bob", "old-pw")
    first.close()
    second = make(auth=[("admin", "secret"), ("bob", "new-pw")])
    assert with_cookie(second, cookie).get("/tasks").status_code == 401
    assert (
        with_cookie(second, logged_in(second.c, "bob", "new-pw")).get("/tasks").status_code == 200
    )
    # Unchanged users keep their sessions across the same restart.
    third = make(auth=[("admin", "secret"), ("bob", "new-pw")])
    admin_cookie = logged_in(second.c)
    assert with_cookie(third, admin_cookie).get("/tasks").status_code == 200


def test_a_custom_backend_can_end_sessions_through_its_fingerprint(make):
    class Directory(TaskAuthBackend):
        def __init__(self):
            self.users = {"carol": ("pw", 1)}  # password, credentials version

        def authenticate_user(self, username, password):
            entry = self.users.get(username)
            return entry is not None and entry[0] == password

        def session_fingerprint(self, username):
            entry = self.users.get(username)
            return None if entry is None else str(entry[1])

    directory = Directory()
    env = make(auth=directory)
    cookie = logged_in(env.c, "carol", "pw")
    assert with_cookie(env, cookie).get("/tasks").status_code == 200
    directory.users["carol"] = ("pw", 2)  # e.g. the password was reset
    assert with_cookie(env, cookie).get("/tasks").status_code == 401
    cookie = logged_in(env.c, "carol", "pw")  # a new session, on the new credentials
    assert with_cookie(env, cookie).get("/tasks").status_code == 200
    del directory.users["carol"]  # removed: no session of hers works
    assert with_cookie(env, cookie).get("/tasks").status_code == 401


@pytest.mark.parametrize(
    "payload",
    [
        {"sid": "s", "csrf": "c"},  # no user
        {"u": 5, "sid": "s", "csrf": "c"},
        {"u": "admin", "csrf": "c"},
        {"u": "admin", "sid": "s"},
        {"u": "admin", "sid": ["s"], "csrf": "c"},
        ["admin", "s"],
        "admin",
        None,
    ],
)
def test_a_malformed_but_signed_session_is_401_never_500(make, payload):
    env = make()
    c = with_cookie(env, crafted(payload, age=0))
    assert c.get("/tasks").status_code == 401
    assert c.get("/tasks/dashboard/stream").status_code == 401
    assert c.post("/tasks/auth/logout").status_code in (303, 401)
    assert c.get("/tasks/dashboard", follow_redirects=False).status_code in (302, 303)


def test_get_logout_from_another_site_is_refused(env):
    cookie = logged_in(env.c)
    for headers in CROSS_SITE:
        r = with_cookie(env, cookie).get("/tasks/auth/logout", headers=headers)
        assert r.status_code == 403, headers
        assert with_cookie(env, cookie).get("/tasks").status_code == 200, headers
    # A same-site link still signs out.
    r = with_cookie(env, cookie).get(
        "/tasks/auth/logout", headers={"sec-fetch-site": "same-origin"}
    )
    assert r.status_code == 303
    assert with_cookie(env, cookie).get("/tasks").status_code == 401


# --------------------------------------------------------------------------- hosts without auth


def test_without_auth_writes_refuse_a_host_that_is_not_allowed(make):
    # DNS rebinding: Host and Origin both the attacker's name.
    env = make(auth=None)
    task_id = run(env, boom)
    evil = {"host": "rebind.evil.example", "origin": "http://rebind.evil.example"}
    assert env.c.post(f"/tasks/{task_id}/retry", headers=evil).status_code == 403
    assert env.c.post("/tasks/retry-failed", headers=evil).status_code == 403
    # Reads stay open (auth is off); the server's own name and loopback names may write.
    assert env.c.get("/tasks", headers=evil).status_code == 200
    for host in ("testserver", "localhost", "127.0.0.1:8000", "[::1]:8000"):
        r = env.c.post(f"/tasks/{task_id}/retry", headers={"host": host})
        assert r.status_code == 200, host


def test_allowed_hosts_names_the_hosts_that_may_write_without_auth(make):
    env = make(auth=None, allowed_hosts=["tasks.internal"])
    task_id = run(env, boom)
    ok_host = {"host": "tasks.internal", "origin": "http://tasks.internal"}
    assert env.c.post(f"/tasks/{task_id}/retry", headers=ok_host).status_code == 200
    other = {"host": "other.internal"}
    assert env.c.post(f"/tasks/{task_id}/retry", headers=other).status_code == 403


def test_allowed_hosts_is_validated_at_construction():
    tm = TaskManager()
    with pytest.raises(TypeError, match="allowed_hosts"):
        TaskAdmin(FastAPI(), tm, allowed_hosts="tasks.internal")
    with pytest.raises(ValueError, match="allowed_hosts"):
        TaskAdmin(FastAPI(), tm, allowed_hosts=["http://tasks.internal/"])


# --------------------------------------------------------------------------- behind proxies


def test_a_same_origin_browser_request_is_accepted_behind_a_proxy_that_rewrites_host(env):
    # nginx `proxy_pass` sends Host 127.0.0.1:8101; the browser's Origin is :8080.
    task_id = run(env, boom)
    cookie = logged_in(env.c)
    page_token = data_csrf(with_cookie(env, cookie).get("/tasks/dashboard").text)
    proxied = {
        "host": "127.0.0.1:8101",
        "origin": "http://127.0.0.1:8080",
        "sec-fetch-site": "same-origin",
        "x-csrf-token": page_token,
    }
    r = with_cookie(env, cookie).post(f"/tasks/{task_id}/retry", headers=proxied)
    assert r.status_code == 200, r.text
    # Without Sec-Fetch-Site (an older browser) the Origin must match: refused ...
    old = {k: v for k, v in proxied.items() if k != "sec-fetch-site"}
    assert with_cookie(env, cookie).post(f"/tasks/{task_id}/retry", headers=old).status_code == 403
    # ... unless the origin is allowed explicitly.
    # Real cross-site requests stay refused however the proxy sets Host.
    evil = {**proxied, "origin": "http://evil.example", "sec-fetch-site": "cross-site"}
    assert with_cookie(env, cookie).post(f"/tasks/{task_id}/retry", headers=evil).status_code == 403


def test_allowed_origins_accept_an_unusual_proxy_set_up(make):
    env = make(allowed_origins=["https://tasks.example.com"])
    task_id = run(env, boom)
    cookie = logged_in(env.c)
    token = data_csrf(with_cookie(env, cookie).get("/tasks/dashboard").text)
    headers = {"origin": "https://tasks.example.com", "x-csrf-token": token}
    assert (
        with_cookie(env, cookie).post(f"/tasks/{task_id}/retry", headers=headers).status_code == 200
    )
    headers["origin"] = "https://other.example.com"
    assert (
        with_cookie(env, cookie).post(f"/tasks/{task_id}/retry", headers=headers).status_code == 403
    )
    with pytest.raises(ValueError, match="allowed_origins"):
        make(allowed_origins=["tasks.example.com/path"])


def test_a_refused_browser_form_gets_a_readable_page(env):
    r = env.c.post(
        "/tasks/auth/login",
        data={"username": "admin", "password": "secret"},
        headers={"origin": "https://evil.com", "accept": "text/html,*/*"},
    )
    assert r.status_code == 403
    assert r.headers["content-type"].startswith("text/html")
    assert "Request refused" in r.text and "allowed_origins" in r.text


def test_a_bookmarked_filtered_view_survives_the_login(env):
    r = env.c.get("/tasks/dashboard?status=failed&q=abc", follow_redirects=False)
    assert r.status_code in (302, 303)
    login_url = r.headers["location"]
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(login_url).query)
    assert query["next"] == ["/tasks/dashboard?status=failed&q=abc"]
    page = env.c.get(login_url)
    token = hidden(page.text, "csrf_token")
    done = env.c.post(
        "/tasks/auth/login",
        data={
            "username": "admin",
            "password": "secret",
            "csrf_token": token,
            "next": html.unescape(hidden(page.text, "next")),
        },
        headers={"origin": SAME_ORIGIN},
    )
    assert done.status_code == 303
    assert done.headers["location"] == "/tasks/dashboard?status=failed&q=abc"


def test_machines_read_metrics_and_health_with_a_token_or_basic_auth(make):
    import base64

    env = make(metrics_token="scrape-token-0123456789")
    anonymous = env.client()
    for route in ("/tasks/metrics", "/tasks/metrics/prometheus", "/tasks/health"):
        assert anonymous.get(route).status_code == 401, route
        bearer = {"authorization": "Bearer scrape-token-0123456789"}
        assert anonymous.get(route, headers=bearer).status_code in (200, 503), route
        wrong = {"authorization": "Bearer scrape-token-0123456780"}
        assert anonymous.get(route, headers=wrong).status_code == 401, route
        basic = {"authorization": "Basic " + base64.b64encode(b"admin:secret").decode()}
        assert anonymous.get(route, headers=basic).status_code in (200, 503), route
    # The token opens nothing else.
    assert anonymous.get("/tasks", headers=bearer).status_code == 401
    assert anonymous.post("/tasks/retry-failed", headers=bearer).status_code == 401
    # Liveness needs nothing and tells nothing about tasks.
    live = anonymous.get("/tasks/health/live")
    assert live.status_code == 200 and live.json() == {"status": "ok"}
    with pytest.raises(ValueError, match="metrics_token"):
        make(metrics_token="short")


def test_without_snapshot_db_logout_holds_in_its_process_only_and_says_so(make, caplog):
    with caplog.at_level("WARNING", logger="taskflow"):
        first = make()
    assert any("logout holds only in the process" in r.getMessage() for r in caplog.records)
    cookie = logged_in(first.c)
    assert first.c.get("/tasks/auth/logout", headers={"sec-fetch-site": "same-origin"})
    assert with_cookie(first, cookie).get("/tasks").status_code == 401
    first.close()
    # A restart (or another worker) has no record of the logout: the documented limit.
    second = make()
    assert with_cookie(second, cookie).get("/tasks").status_code == 200
