"""Settings from the environment (prefix CIT_), one class for the whole service."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_SECRET_KEY = "dev-insecure-change-me"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CIT_", env_file=".env", extra="ignore")

    env: Literal["development", "test", "production"] = "development"
    database_url: str = "sqlite:///./var/cit.db"
    data_dir: Path = Path("./var")
    secret_key: str = DEV_SECRET_KEY
    public_base_url: str = "http://127.0.0.1:8000"

    # Respondent-side limits.
    max_answer_chars: int = Field(10_000, ge=100)
    max_request_bytes: int = Field(1_000_000, ge=10_000)
    submit_rate_limit: int = Field(20, ge=1, description="submissions per client per window")
    submit_rate_window_seconds: int = Field(60, ge=1)
    max_invitations_per_call: int = Field(10_000, ge=1)

    # API paging.
    page_size_default: int = Field(50, ge=1)
    page_size_max: int = Field(500, ge=1)

    @model_validator(mode="after")
    def _refuse_default_secret(self) -> Settings:
        if self.env != "development" and self.secret_key == DEV_SECRET_KEY:
            raise ValueError(
                f"CIT_SECRET_KEY must be set when CIT_ENV={self.env} "
                "(the built-in default is for development only)"
            )
        if len(self.secret_key) < 16:
            raise ValueError("CIT_SECRET_KEY must be at least 16 characters")
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


@lru_cache
def get_settings() -> Settings:
    return Settings()
