"""Settings: the CIT_ prefix, and a secret key that refuses its default outside development."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.config import DEV_SECRET_KEY, Settings


def test_default_secret_is_for_development_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CIT_SECRET_KEY", raising=False)
    assert Settings(env="development").secret_key == DEV_SECRET_KEY
    for env in ("production", "test"):
        with pytest.raises(ValidationError, match="CIT_SECRET_KEY must be set"):
            Settings(env=env)
    with pytest.raises(ValidationError, match="at least 16 characters"):
        Settings(env="production", secret_key="short")


def test_settings_come_from_cit_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CIT_ENV", "production")
    monkeypatch.setenv("CIT_SECRET_KEY", "a-real-secret-from-the-vault")
    monkeypatch.setenv("CIT_DATABASE_URL", "postgresql+psycopg://cit@db:5432/cit")
    monkeypatch.setenv("CIT_MAX_ANSWER_CHARS", "5000")
    monkeypatch.setenv("CIT_SUBMIT_RATE_LIMIT", "3")
    settings = Settings()
    assert settings.env == "production" and not settings.is_sqlite
    assert (settings.max_answer_chars, settings.submit_rate_limit) == (5000, 3)
    monkeypatch.setenv("CIT_MAX_ANSWER_CHARS", "10")
    with pytest.raises(ValidationError, match="max_answer_chars"):
        Settings()
