"""The install lines of docs/vendoring.md, installed exactly as written, run the page's example app.

The page marks its blocks with an HTML comment right above them (invisible once rendered):
`<!-- docs-test: install -->` over the `sh` block of install lines, and
`<!-- docs-test: example-app your_app/main.py -->` over the example app, which names the file it is.
The slow test installs those lines into a fresh virtual environment, lays out `your_app/` as the
page says (the vendored taskflow.py and the example), serves it with that environment's uvicorn on
127.0.0.1, adds one task through the example's route and polls the task API until it succeeds.
"""

from __future__ import annotations

import html
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
VENDORING = ROOT / "docs" / "vendoring.md"
SAME_LINES = [ROOT / "README.md", ROOT / "docs" / "quickstart.md"]
VENDORED = ROOT / "taskflow_vendor" / "taskflow.py"

MARKED = re.compile(r"<!-- docs-test: ([\w-]+)([^>]*)-->\n```(\w+)\n(.*?)```", re.S)
# pip's words for "the network is not there", as opposed to a wrong name or version in the docs.
OFFLINE = (
    "NewConnectionError",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "No route to host",
    "ProxyError",
)


def marked_blocks() -> dict[str, tuple[str, str]]:
    """{kind: (argument, code)} of the page's marked code blocks."""
    blocks = {}
    for kind, argument, _language, code in MARKED.findall(VENDORING.read_text(encoding="utf-8")):
        assert kind not in blocks, f"two blocks marked {kind!r} in {VENDORING.name}"
        blocks[kind] = (argument.strip(), code)
    assert {"install", "example-app"} <= set(blocks), f"marked blocks: {sorted(blocks)}"
    return blocks


def pip_commands(block: str) -> list[list[str]]:
    """The block's `pip install` lines as argument lists; comment lines are prose."""
    commands = []
    for line in block.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        words = shlex.split(line, comments=True)
        assert words[:2] == ["pip", "install"], f"not a pip install line: {line!r}"
        commands.append(words[2:])
    assert commands, "the install block holds no pip install line"
    return commands


def test_readme_and_quickstart_show_the_tested_install_lines():
    _, block = marked_blocks()["install"]
    fence = f"```sh\n{block}```"
    for path in SAME_LINES:
        assert fence in path.read_text(encoding="utf-8"), (
            f"{path.relative_to(ROOT)} does not show the install lines of docs/vendoring.md"
        )
    assert "uvicorn" in block and "asyncpg" in block


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def log_in(client: httpx.Client, user: str, password: str) -> None:
    form = client.get("/tasks/auth/login")
    assert form.status_code == 200, form.text
    field = re.search(r'<input[^>]*name="csrf_token"[^>]*>', form.text).group(0)
    token = html.unescape(re.search(r'value="([^"]*)"', field).group(1))
    data = {"username": user, "password": password, "next": "/tasks", "csrf_token": token}
    response = client.post("/tasks/auth/login", data=data, follow_redirects=False)
    assert response.status_code == 303, response.text


@pytest.mark.slow
def test_the_install_lines_run_the_example_app(tmp_path):
    blocks = marked_blocks()
    commands = pip_commands(blocks["install"][1])
    target, example = blocks["example-app"]

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / ("Scripts" if os.name == "nt" else "bin") / "python"
    for arguments in commands:
        result = subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", *arguments],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if result.returncode and any(word in result.stderr for word in OFFLINE):
            if os.environ.get("CI") == "true":
                pytest.fail(f"pip cannot reach the package index:\n{result.stderr[-2000:]}")
            pytest.skip("pip cannot reach the package index")
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]

    app_dir = tmp_path / "app"
    main = app_dir / target
    main.parent.mkdir(parents=True)
    shutil.copyfile(VENDORED, main.parent / "taskflow.py")
    main.write_text(example, encoding="utf-8")
    user, password = re.search(r'auth=\("([^"]+)", "([^"]+)"\)', example).groups()
    module = ".".join(Path(target).with_suffix("").parts)

    port = free_port()
    log = tmp_path / "uvicorn.log"
    with log.open("w") as output:
        server = subprocess.Popen(
            [str(python), "-m", "uvicorn", f"{module}:app", "--host", "127.0.0.1"]
            + ["--port", str(port)],
            cwd=app_dir,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            deadline = time.monotonic() + 30
            while True:
                assert server.poll() is None, f"uvicorn exited:\n{log.read_text()[-3000:]}"
                try:
                    client.get("/openapi.json").raise_for_status()
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, f"no answer:\n{log.read_text()[-3000:]}"
                    time.sleep(0.1)

            response = client.post("/signup", params={"email": "ada@example.com"})
            assert response.status_code == 200, response.text
            task_id = response.json()["task_id"]
            log_in(client, user, password)
            deadline = time.monotonic() + 15
            while True:
                task = client.get(f"/tasks/{task_id}")
                assert task.status_code == 200, task.text
                if task.json()["status"] == "success":
                    break
                assert task.json()["status"] in ("pending", "running"), task.json()
                assert time.monotonic() < deadline, f"still {task.json()['status']} after 15 s"
                time.sleep(0.05)
        assert task.json()["func_name"] == "send_welcome_email"
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    assert (app_dir / "tasks.db").is_file(), "the example's snapshot_db was not written"
