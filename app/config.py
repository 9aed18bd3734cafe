"""Settings from the environment (prefix CIT_), one class for the whole service."""

from __future__ import annotations

from functools import lru_cache
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Literal

from fastapi import Request
from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app import encryption

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
    worker_in_process: bool = Field(
        True, description="`cit serve` starts one job worker process beside the API"
    )
    # The worker process `cit serve` starts yields the CPU to the API processes when both want it
    # (the respondents' submissions first; suggestions catch up after a burst). None: 10 on
    # PostgreSQL, 0 on SQLite, where the worker holds the one write lock while it writes and
    # must not be kept waiting for the CPU with it (measured in bench/README.md, Ingest).
    worker_nice: int | None = Field(None, ge=0, le=19)
    worker_batch_size: int = Field(512, ge=1, le=10_000)
    worker_poll_seconds: float = Field(1.0, gt=0)
    job_lease_seconds: int = Field(600, ge=10)
    # A suggestion batch takes seconds: a worker killed in the middle of one leaves its jobs to
    # another after this long (scoring twice is harmless; the stories are scored once stored).
    suggest_lease_seconds: int = Field(60, ge=5)

    # Webhooks (delivered by the worker; see README "Webhooks").
    webhook_timeout_seconds: float = Field(
        10.0, gt=0, le=120, description="one delivery attempt: connect + read timeout"
    )
    webhook_max_attempts: int = Field(
        8, ge=1, le=50, description="attempts per delivery before it is given up (failed)"
    )
    webhook_backoff_base_seconds: float = Field(
        10.0, ge=0, description="delay before the 2nd attempt; doubles each attempt, +-jitter"
    )
    webhook_backoff_max_seconds: float = Field(3600.0, ge=0)
    webhook_disable_after: int = Field(
        20, ge=1, description="consecutive failed attempts that disable a subscription"
    )
    webhook_concurrency: int = Field(
        4, ge=1, le=64, description="deliveries a worker sends at once"
    )
    webhook_allow_private_addresses: bool = Field(
        False,
        description="deliver to loopback/private/link-local addresses too (a receiver on this "
        "machine or network); by default only public addresses (see README Webhooks)",
    )
    webhook_retention_days: int = Field(
        30, ge=1, description="delivered and given-up deliveries (and their log) kept this long"
    )

    # Database use per process: at most `db_concurrency` requests hold a session at once; the
    # others wait (on the event loop) up to `db_queue_timeout_seconds`, then get 503.
    db_concurrency: int = Field(20, ge=1, le=500)
    db_queue_timeout_seconds: float = Field(10.0, gt=0)
    db_lock_timeout_seconds: float = Field(10.0, gt=0, description="wait for a lock, then 503")
    db_statement_timeout_seconds: float = Field(
        30.0, gt=0, description="PostgreSQL statement_timeout for API requests"
    )
    # Move what the API process made at start-up out of the cyclic garbage collector's reach
    # (gc.freeze, app.main): a full collection then scans only what requests made since.
    # Tests turn it off (each test's app would freeze the test process's objects).
    gc_freeze: bool = True

    # Operations.
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "text"] = "json"
    log_access: bool = Field(True, description="one JSON line per request (route, status, ms)")
    trusted_proxies: str = Field(
        "",
        description="comma-separated addresses or networks (CIDR) of reverse proxies whose "
        "X-Forwarded-For names the client; empty: trust none, the peer is the client",
    )

    # Reports.
    min_cell: int = Field(5, ge=1, description="small-cell suppression threshold of the reports")
    # Finished trends reports and tables kept per API process (app.reports.cache), keyed by the
    # query and the state of their inputs in the database; 0 turns the cache off.
    report_cache_mb: int = Field(64, ge=0, description="MB of report bodies per process; 0: off")
    report_cache_entries: int = Field(256, ge=1, description="most reports kept per process")

    # Values encrypted at rest (app.encryption): Fernet keys, newest first, comma-separated.
    # Every key decrypts, the first encrypts: put a new key in front to rotate, keep the old
    # ones until the re-encryption command has run. Empty: a key derived from CIT_SECRET_KEY
    # (which itself refuses its default outside development) with a label of the setting's own;
    # that derived key always decrypts too, last.
    # Respondents' contacts (app.cases.crypto): `cit cases new-key`, `cit cases rotate-keys`.
    contact_keys: str = Field("", repr=False)
    # Webhook subscriptions' signing secrets (app.webhooks): `cit webhooks new-key`,
    # `cit webhooks rotate-keys`.
    webhook_secret_keys: str = Field("", repr=False)

    # Alerts on trends (app.alerts): evaluated by the worker after a fold, over at most this
    # many recent periods of a rule (a backfill of old stories does not re-evaluate years).
    alert_max_periods: int = Field(6, ge=1, le=120)

    # People signing in (browser sessions).
    session_idle_minutes: int = Field(
        60, ge=1, description="a browser session ends after this long without a request"
    )
    session_max_hours: int = Field(12, ge=1, description="... and this long after sign-in")
    password_link_hours: int = Field(72, ge=1, description="how long a set-password link works")
    signin_failures_per_account: int = Field(5, ge=1)
    signin_failures_per_client: int = Field(20, ge=1)
    signin_window_seconds: int = Field(900, ge=1)

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
        try:
            self.trusted_proxy_networks  # noqa: B018 - validates the setting
        except ValueError as error:
            raise ValueError(f"CIT_TRUSTED_PROXIES: {error}") from None
        if len(self.secret_key) < 16:
            raise ValueError("CIT_SECRET_KEY must be at least 16 characters")
        for purpose in (encryption.CONTACTS, encryption.WEBHOOK_SECRETS):
            encryption.parse_keys(getattr(self, purpose.setting), purpose)
        return self

    @property
    def db_pool_size(self) -> int:
        """Connections per process: every admitted request, the in-process worker, and spares
        for the readiness probe and the CLI-style sessions the app opens itself."""
        return self.db_concurrency + 4

    @property
    def worker_threads(self) -> int:
        """Threads for sync endpoints and dependencies: above the admitted requests, so that a
        request holding a transaction always finds a thread for its next step."""
        return max(40, self.db_concurrency * 2 + 8)

    @property
    def trusted_proxy_networks(self) -> tuple[IPv4Network | IPv6Network, ...]:
        return tuple(
            ip_network(part.strip(), strict=False)
            for part in self.trusted_proxies.split(",")
            if part.strip()
        )

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def secure_cookies(self) -> bool:
        return self.public_base_url.startswith("https://")

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
