"""Settings from the environment (prefix CIT_), one class for the whole service."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from fastapi import Request
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
    max_upload_bytes: int = Field(
        200_000_000, ge=10_000, description="largest file upload (imports, REFI-QDA files)"
    )
    submit_rate_limit: int = Field(20, ge=1, description="submissions per client per window")
    submit_rate_window_seconds: int = Field(60, ge=1)
    max_invitations_per_call: int = Field(10_000, ge=1)

    # Suggestions and the worker.
    nlp_pipeline: str = Field(
        "blank:en",
        description="spaCy base pipeline: blank:en (offline default) or an installed package "
        "name; a pipeline with NER also redacts person names",
    )
    worker_in_process: bool = Field(True, description="`cit serve` runs one worker thread")
    worker_batch_size: int = Field(512, ge=1, le=10_000)
    worker_poll_seconds: float = Field(1.0, gt=0)
    job_lease_seconds: int = Field(600, ge=10)

    # Reports.
    min_cell: int = Field(5, ge=1, description="small-cell suppression threshold of the reports")

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
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


@lru_cache
def get_settings() -> Settings:
    return Settings()


def app_settings(request: Request) -> Settings:
    """The settings the running app was created with (tests create apps with their own)."""
    settings: Settings = request.app.state.settings
    return settings
