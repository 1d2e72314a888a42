"""Configuration from environment variables, read once at import.

Every setting has a development default, so the service runs with no set-up. With APP_ENV=production
it refuses to start while the dashboard password or the session secret is missing or a placeholder.
A refused start prints one line naming the setting and exits with status 1.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass

# Answers given when the project was generated.
PROJECT_NAME = {{ cookiecutter.project_name | python_string }}
DASHBOARD_TITLE = {{ cookiecutter.dashboard_title | python_string }}
DASHBOARD_PATH = {{ cookiecutter.dashboard_path | python_string }}

PLACEHOLDER = "change-me"
MIN_SECRET_LENGTH = 32
KEYGEN_HINT = 'make one with: python -c "import secrets; print(secrets.token_urlsafe(32))"'


class SettingsError(RuntimeError):
    """A setting is malformed, or unsafe for the environment the service runs in."""


@dataclass(frozen=True)
class Settings:
    environment: str = "development"
    tasks_db: str = "tasks.db"  # task history: a SQLite path or a PostgreSQL URL, kept as given
    app_db: str = "app.db"  # the application's own data (see lifespan.py)
    dashboard_user: str = "admin"
    dashboard_password: str = PLACEHOLDER
    session_secret: str | None = None  # None: a random key per start (development only)
    retention_days: int = 30
    dashboard_title: str = DASHBOARD_TITLE
    dashboard_path: str = DASHBOARD_PATH

    @property
    def production(self) -> bool:
        return self.environment == "production"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        """Build the settings from `environ` and check them; raise SettingsError on a bad value."""
        raw_days = environ.get("RETENTION_DAYS", str(cls.retention_days))
        try:
            retention_days = int(raw_days)
        except ValueError:
            raise SettingsError(
                f"RETENTION_DAYS must be a whole number, not {raw_days!r}"
            ) from None
        settings = cls(
            environment=environ.get("APP_ENV", cls.environment),
            tasks_db=environ.get("TASKS_DB", cls.tasks_db),
            app_db=environ.get("APP_DB", cls.app_db),
            dashboard_user=environ.get("DASHBOARD_USER", cls.dashboard_user),
            dashboard_password=environ.get("DASHBOARD_PASSWORD", cls.dashboard_password),
            session_secret=environ.get("SESSION_SECRET") or None,
            retention_days=retention_days,
        )
        settings.check()
        return settings

    def check(self) -> None:
        """Raise SettingsError on a malformed value, or when production has guessable credentials."""
        if self.environment not in ("development", "production"):
            raise SettingsError(
                f"APP_ENV must be 'development' or 'production', not {self.environment!r}"
            )
        if self.retention_days < 1:
            raise SettingsError(f"RETENTION_DAYS must be at least 1, not {self.retention_days}")
        if self.session_secret is not None and len(self.session_secret) < MIN_SECRET_LENGTH:
            raise SettingsError(
                f"SESSION_SECRET must be at least {MIN_SECRET_LENGTH} characters; {KEYGEN_HINT}"
            )
        if not self.production:
            return
        if self.dashboard_password in ("", PLACEHOLDER):
            raise SettingsError(
                "DASHBOARD_PASSWORD is unset or the placeholder: set a real password to run"
                " with APP_ENV=production"
            )
        if self.session_secret is None:
            raise SettingsError(
                "SESSION_SECRET is unset: with APP_ENV=production it must be fixed, so logins"
                f" survive restarts and work across workers; {KEYGEN_HINT}"
            )


def load() -> Settings:
    """The settings of this process; on a bad value, print one line to stderr and exit with status 1.

    A traceback would only bury the message, which already names the variable to fix.
    """
    try:
        return Settings.from_env()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None


settings = load()
