"""Bake the template with cookiecutter's Python API and hold each bake to its own gates."""

import ast
import json
import os
import re
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest
from cookiecutter.exceptions import FailedHookException
from cookiecutter.main import cookiecutter
from jinja2 import Environment

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "{{cookiecutter.project_slug}}"
VENDORED = ROOT / "taskflow_vendor" / "taskflow.py"
# Copied without rendering (`_copy_without_render`): they hold Jinja and `${{ }}` of their own.
COPIED = ["src/{{cookiecutter.package_name}}/taskflow.py", ".github/workflows/ci.yml"]

HOSTILE = {
    "project_name": 'Zoë\'s "Quoted" \\ Service — 東京 🚀',
    "description": 'Says "hi", it\'s fine, ends in a backslash \\',
    "author_name": 'O\'Connor "Bob" \\ Ünal',
    "dashboard_title": "Ops <b>&</b> 'tasks' \"board\" 🚀",
    "dashboard_path": "/ops/background-jobs",
}
CASES = {
    "defaults": ({}, "task-service", "task_service"),
    "hostile": (HOSTILE, "zoe-s-quoted-service-dong-jing", "zoe_s_quoted_service_dong_jing"),
}


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    """A cookiecutter config file that keeps its replay files and template cache in tmp."""
    home = tmp_path_factory.mktemp("cookiecutter-home")
    config = home / "config.yaml"
    config.write_text(f"cookiecutters_dir: '{home}/templates'\nreplay_dir: '{home}/replay'\n")
    return config


@pytest.fixture(scope="module")
def bake(tmp_path_factory, config):
    """Return `bake(**answers) -> Path`; cookiecutter's config and replay files stay in tmp."""

    def bake(**answers) -> Path:
        out = tmp_path_factory.mktemp("bake")
        project = cookiecutter(
            str(ROOT),
            no_input=True,
            extra_context=answers,
            output_dir=str(out),
            config_file=str(config),
        )
        return Path(project)

    return bake


@pytest.fixture(scope="module", params=list(CASES))
def case(request, bake):
    answers, slug, package = CASES[request.param]
    project = bake(**answers)
    assert (project.name, project.joinpath("src", package).is_dir()) == (slug, True)
    return answers, project, package


def run(project: Path, *args: str, environ=None) -> subprocess.CompletedProcess:
    # No bytecode: the bake stays exactly what cookiecutter wrote, whatever order tests run in.
    env = dict(environ or os.environ, PYTHONPATH=str(project / "src"), PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run(
        [sys.executable, *args], cwd=project, env=env, capture_output=True, text=True, timeout=240
    )


def generated_files(project: Path, package: str) -> list[Path]:
    copied = {c.replace("{{cookiecutter.package_name}}", package) for c in COPIED}
    return [
        p
        for p in sorted(project.rglob("*"))
        if p.is_file() and p.relative_to(project).as_posix() not in copied
    ]


def test_no_template_syntax_is_left(case):
    _, project, package = case
    files = generated_files(project, package)
    assert len(files) > 10
    for path in files:
        text = path.read_text(encoding="utf-8")
        for token in ("{{", "{%", "cookiecutter."):
            assert token not in text, f"{path.relative_to(project)} still holds {token!r}"


def test_copied_files_are_byte_identical(case):
    _, project, package = case
    assert (project / "src" / package / "taskflow.py").read_bytes() == VENDORED.read_bytes()
    workflow = ".github/workflows/ci.yml"
    assert (project / workflow).read_bytes() == (TEMPLATE / workflow).read_bytes()


def test_answers_arrive_intact(case):
    answers, project, package = case
    settings = ast.parse((project / "src" / package / "settings.py").read_text(encoding="utf-8"))
    constants = {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in settings.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
    }
    name = answers.get("project_name", "Task Service")
    assert constants["PROJECT_NAME"] == name
    assert constants["DASHBOARD_TITLE"] == answers.get("dashboard_title", name)
    assert constants["DASHBOARD_PATH"] == answers.get("dashboard_path", "/tasks")
    readme = (project / "README.md").read_text(encoding="utf-8")
    assert readme.startswith(f"# {name}\n")

    tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")
    meta = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert meta["description"] == answers.get("description", meta["description"])
    assert meta["authors"] == [{"name": answers.get("author_name", "Your Name")}]


def test_the_bake_passes_its_own_tests(case):
    _, project, _ = case
    # The bake's dev extra has no pytest-asyncio; keep this environment's copy out of its run.
    result = run(project, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:asyncio")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_the_bake_passes_its_own_linters(case):
    _, project, _ = case
    for command in (["check", "--no-cache", "."], ["format", "--no-cache", "--check", "."]):
        result = run(project, "-m", "ruff", *command)
        assert result.returncode == 0, result.stdout + result.stderr


# Run in the bake: every route of each entry point outside the dashboard path, with its query
# parameters ({name: required}), from the app's own OpenAPI document.
ROUTES = r"""
import importlib, json, sys
package, dashboard = sys.argv[1:]
found = {}
for module in ("main", "worker", "lifespan"):
    paths = importlib.import_module(f"{package}.{module}").app.openapi()["paths"]
    found[module] = {
        f"{method.upper()} {path}": {
            p["name"]: p.get("required", False)
            for p in op.get("parameters", [])
            if p["in"] == "query"
        }
        for path, methods in paths.items()
        if path != dashboard and not path.startswith(dashboard + "/")
        for method, op in methods.items()
    }
print(json.dumps(found))
"""


def test_the_readme_shows_every_route_and_its_curl_lines_work(case):
    answers, project, package = case
    dashboard = answers.get("dashboard_path", "/tasks")
    result = run(project, "-c", ROUTES, package, dashboard)
    assert result.returncode == 0, result.stderr[-3000:]
    routes = json.loads(result.stdout)
    readme = (project / "README.md").read_text(encoding="utf-8")

    # Which module serves which port: the README's uvicorn lines (8000 when none is given).
    ports = {}
    serve = rf"uvicorn {package}\.(\w+):app(?:[^\n`]*--port (\d+))?"
    for module, port in re.findall(serve, readme):
        assert ports.setdefault(int(port or 8000), module) == module, f"port {port} serves two apps"
    assert set(ports.values()) == set(routes), f"run commands in the README: {ports}"

    curls = re.findall(r"^curl .*$", readme, re.M)
    shown = set()
    for line in curls:
        method = "POST" if "-X POST" in line else "GET"
        url = urllib.parse.urlsplit(re.search(r"'(http[^']+)'", line).group(1))
        module = ports[url.port]
        given = set(urllib.parse.parse_qs(url.query))
        for key, params in routes[module].items():
            template = re.sub(r"\\{\w+\\}", "[^/]+", re.escape(key.split(" ", 1)[1]))
            if key.startswith(method + " ") and re.fullmatch(template, url.path):
                required = {name for name, needed in params.items() if needed}
                assert given <= set(params) and required <= given, (line, params)
                shown.add(module)
                break
        else:
            raise AssertionError(f"{line!r}: {module}.py has no route {method} {url.path}")
    assert shown == set(routes), "every entry point has curl lines"

    for module, found in routes.items():
        for key in found:  # in a route table: `METHOD /path?query=` or `METHOD /path`
            documented = re.search(re.escape(f"`{key}") + r"[?`]", readme)
            assert documented, f"{module}.py serves {key}; the README does not say so"


def test_answers_cannot_inject_code_into_the_hooks(bake):
    project = bake(project_name="x'''); open('pwned', 'w'); ('''")
    assert project.name == "x-open-pwned-w"
    assert not list(project.parent.rglob("pwned")) and not Path("pwned").exists()


@pytest.mark.parametrize("module", ["main", "worker", "lifespan"])
def test_a_refused_production_start_prints_one_line_and_exits_1(case, module):
    _, project, package = case
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("APP_", "DASHBOARD_"))}
    environ.update(APP_ENV="production", SESSION_SECRET="s" * 40)  # no DASHBOARD_PASSWORD
    result = run(
        project, "-m", "uvicorn", f"{package}.{module}:app", "--port", "0", environ=environ
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: DASHBOARD_PASSWORD is unset or the placeholder"), line


# Each bad answer and the start of the one line that names it.
INVALID = [
    ({"package_name": "class"}, "package_name 'class' is a Python keyword"),
    ({"package_name": "my-app"}, "package_name 'my-app' is not a valid Python identifier"),
    ({"project_name": "2048"}, "package_name '2048' is not a valid Python identifier"),
    ({"package_name": "json"}, "package_name 'json' would shadow the standard library"),
    ({"package_name": "taskflow"}, "package_name 'taskflow' would shadow the taskflow"),
    ({"project_slug": "-bad-"}, "project_slug '-bad-' is not a valid distribution name"),
    ({"dashboard_path": "tasks"}, "dashboard_path 'tasks' must start with '/'"),
    ({"dashboard_path": "/tasks/"}, "dashboard_path '/tasks/' must not end with '/'"),
    ({"dashboard_path": "/"}, "dashboard_path '/' must not end with '/'"),
    ({"dashboard_path": "/a//b"}, "dashboard_path '/a//b' may only hold segments"),
    ({"dashboard_path": "/docs"}, "dashboard_path '/docs' collides with a route"),
    ({"dashboard_path": "/exports"}, "dashboard_path '/exports' collides with a route"),
    ({"dashboard_path": "/reminders"}, "dashboard_path '/reminders' collides with a route"),
    ({"dashboard_path": "/events/x"}, "dashboard_path '/events/x' collides with a route"),
]


@pytest.mark.parametrize(("answers", "message"), INVALID)
def test_invalid_answers_stop_with_one_line(bake, capfd, answers, message):
    with pytest.raises(SystemExit) as stopped:
        bake(**answers)
    assert stopped.value.code == 1
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err
    (line,) = err.splitlines()
    assert line.startswith(f"error: {message}"), line


def test_the_cookiecutter_command_prints_the_one_line_and_creates_nothing(config, tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "cookiecutter", "--no-input", "--config-file", str(config)]
        + ["--output-dir", str(out), str(ROOT), "package_name=class"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stdout == "" and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        "error: package_name 'class' is a Python keyword: choose another name."
    ]
    assert not out.exists() or not any(out.iterdir())


def render_hook(tmp_path: Path, **answers) -> Path:
    """hooks/pre_gen_project.py rendered the way cookiecutter renders it (`tojson` is Jinja's)."""
    context = {
        "project_name": "Task Service",
        "project_slug": "task-service",
        "package_name": "task_service",
        "dashboard_path": "/tasks",
        **answers,
    }
    source = (ROOT / "hooks" / "pre_gen_project.py").read_text(encoding="utf-8")
    hook = tmp_path / "pre_gen_project.py"
    hook.write_text(Environment().from_string(source).render(cookiecutter=context))
    return hook


@pytest.mark.parametrize(("answers", "message"), [INVALID[0], INVALID[5], INVALID[-1]])
def test_the_hook_alone_exits_1_with_the_line(tmp_path, answers, message):
    result = subprocess.run(
        [sys.executable, str(render_hook(tmp_path, **answers))], capture_output=True, text=True
    )
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: {message}") and result.stdout == ""


def test_the_hook_passes_good_answers(tmp_path):
    result = subprocess.run([sys.executable, str(render_hook(tmp_path))], capture_output=True)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")


def test_a_replay_with_a_bad_answer_is_stopped_by_the_hook(config, tmp_path, capfd):
    # A replay skips reading the answers, so the hook is the check that runs.
    template = json.loads((ROOT / "cookiecutter.json").read_text(encoding="utf-8"))
    answers = {
        "project_name": "Task Service",
        "project_slug": "task-service",
        "package_name": "class",
        "description": "d",
        "author_name": "a",
        "dashboard_title": "t",
        "dashboard_path": "/tasks",
        "__answers_checked": "yes",
    }
    for key in ("_extensions", "_copy_without_render"):
        answers[key] = template[key]
    replay = tmp_path / "taskflow.json"
    replay.write_text(json.dumps({"cookiecutter": answers}))
    out = tmp_path / "out"
    with pytest.raises(FailedHookException):
        cookiecutter(str(ROOT), replay=str(replay), output_dir=str(out), config_file=str(config))
    err = capfd.readouterr().err
    assert "error: package_name 'class' is a Python keyword" in err
    assert not any(out.iterdir())
