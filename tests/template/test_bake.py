"""Bake the template with cookiecutter's Python API and hold each bake to its own gates."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cookiecutter.exceptions import FailedHookException
from cookiecutter.main import cookiecutter

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
def bake(tmp_path_factory):
    """Return `bake(**answers) -> Path`; cookiecutter's config and replay files stay in tmp."""
    home = tmp_path_factory.mktemp("cookiecutter-home")
    config = home / "config.yaml"
    config.write_text(f"cookiecutters_dir: '{home}/templates'\nreplay_dir: '{home}/replay'\n")

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


def run(project: Path, *args: str) -> subprocess.CompletedProcess:
    # No bytecode: the bake stays exactly what cookiecutter wrote, whatever order tests run in.
    env = dict(os.environ, PYTHONPATH=str(project / "src"), PYTHONDONTWRITEBYTECODE="1")
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


def test_answers_cannot_inject_code_into_the_hooks(bake):
    project = bake(project_name="x'''); open('pwned', 'w'); ('''")
    assert project.name == "x-open-pwned-w"
    assert not list(project.parent.rglob("pwned")) and not Path("pwned").exists()


@pytest.mark.parametrize(
    ("answers", "message"),
    [
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
    ],
)
def test_invalid_answers_fail_with_the_hooks_message(bake, capfd, answers, message):
    with pytest.raises(FailedHookException):
        bake(**answers)
    err = capfd.readouterr().err
    assert f"error: {message}" in err
