"""Settings come from the environment, and production refuses guessable credentials."""

import pytest

from {{ cookiecutter.package_name }}.settings import PLACEHOLDER, Settings, SettingsError, load

STRONG_SECRET = "s" * 40


def test_development_runs_on_defaults():
    settings = Settings.from_env({})
    assert settings.dashboard_password == PLACEHOLDER
    assert settings.session_secret is None
    assert settings.dashboard_path.startswith("/")


def test_environment_overrides_defaults():
    settings = Settings.from_env({"TASKS_DB": "other.db", "RETENTION_DAYS": "7"})
    assert (settings.tasks_db, settings.retention_days) == ("other.db", 7)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://tasks:p%40ss@db.internal:5432/tasks",
        "postgres://tasks@db.internal/tasks?schema=taskflow",
    ],
)
def test_a_postgresql_url_in_tasks_db_is_kept_as_is(url):
    assert Settings.from_env({"TASKS_DB": url}).tasks_db == url


def test_production_refuses_the_placeholder_password():
    with pytest.raises(SettingsError, match="DASHBOARD_PASSWORD"):
        Settings.from_env({"APP_ENV": "production", "SESSION_SECRET": STRONG_SECRET})


def test_production_refuses_to_run_without_a_secret():
    environ = {"APP_ENV": "production", "DASHBOARD_PASSWORD": "correct horse"}
    with pytest.raises(SettingsError, match="SESSION_SECRET is unset"):
        Settings.from_env(environ)


@pytest.mark.parametrize("environment", ["development", "production"])
@pytest.mark.parametrize("secret", [PLACEHOLDER, "short"])
def test_a_short_secret_is_refused_everywhere(environment, secret):
    environ = {"APP_ENV": environment, "DASHBOARD_PASSWORD": "correct horse"}
    with pytest.raises(SettingsError, match="SESSION_SECRET must be at least 32"):
        Settings.from_env({**environ, "SESSION_SECRET": secret})


def test_production_starts_with_real_credentials():
    environ = {
        "APP_ENV": "production",
        "DASHBOARD_PASSWORD": "correct horse",
        "SESSION_SECRET": STRONG_SECRET,
    }
    assert Settings.from_env(environ).production


@pytest.mark.parametrize(
    ("environ", "name"),
    [({"RETENTION_DAYS": "a month"}, "RETENTION_DAYS"), ({"APP_ENV": "prod"}, "APP_ENV")],
)
def test_malformed_values_are_named(environ, name):
    with pytest.raises(SettingsError, match=name):
        Settings.from_env(environ)


def test_a_refused_start_prints_one_line_and_exits_1(monkeypatch, capsys):
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.setenv("SESSION_SECRET", STRONG_SECRET)
    monkeypatch.delenv("DASHBOARD_PASSWORD", raising=False)
    with pytest.raises(SystemExit) as refused:
        load()
    assert refused.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: DASHBOARD_PASSWORD is unset") and err.count("\n") == 1
