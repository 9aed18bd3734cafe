"""The `cit` command: serve, migrate, create tokens and surveys, load the demo."""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import ValidationError
from sqlalchemy import func, make_url, select

from app import migrate
from app.accounts import service as accounts
from app.accounts.cli import person_cli
from app.auth import create_token
from app.cases.cli import alerts_cli, cases_cli
from app.cli_support import fail, load_settings, require_head, session_factory
from app.codebooks.cli import codebook_cli
from app.codebooks.service import ensure_default_codebook
from app.config import Settings
from app.db import session_scope
from app.erasure.cli import incident_cli
from app.errors import AppError
from app.exports.cli import export
from app.imports.cli import import_cli
from app.models import Survey
from app.observability import WORKER_METRICS_DIR, configure_logging
from app.refi.cli import refi_cli
from app.suggestions.cli import nlp_cli, worker
from app.surveys import service as surveys
from app.surveys.schemas import SurveyCreate
from app.webhooks.cli import webhooks_cli

log = logging.getLogger("cit.serve")

cli = typer.Typer(
    help="CIT survey and coding service.", no_args_is_help=True, pretty_exceptions_enable=False
)
db_cli = typer.Typer(help="Database migrations.", no_args_is_help=True)
token_cli = typer.Typer(help="API tokens.", no_args_is_help=True)
survey_cli = typer.Typer(help="Surveys.", no_args_is_help=True)
cli.add_typer(db_cli, name="db")
cli.add_typer(token_cli, name="token")
cli.add_typer(survey_cli, name="survey")
cli.add_typer(nlp_cli, name="nlp")
cli.add_typer(import_cli, name="import")
cli.add_typer(codebook_cli, name="codebook")
cli.add_typer(person_cli, name="person")
reports_cli = typer.Typer(help="Report rollups.", no_args_is_help=True)
cli.add_typer(reports_cli, name="reports")
cli.command()(worker)
cli.add_typer(incident_cli, name="incident")
cli.command("export")(export)
cli.add_typer(refi_cli, name="refi")
cli.add_typer(webhooks_cli, name="webhooks")
cli.add_typer(cases_cli, name="cases")
cli.add_typer(alerts_cli, name="alerts")

DEMO_SURVEY = Path(__file__).parent / "surveys" / "demo.yaml"
DEFAULT_CODEBOOK = (
    Path(__file__).resolve().parent.parent / "codebooks" / "cit-service-encounters.yaml"
)


_settings = load_settings
_fail = fail
_require_head = require_head
_session_factory = session_factory


@db_cli.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply migrations (the only thing that creates or changes the schema)."""
    settings = _settings()
    migrate.upgrade(settings.database_url, revision, settings)
    typer.echo(f"database at revision {migrate.current_revision(settings.database_url)}")


@db_cli.command("downgrade")
def db_downgrade(revision: str) -> None:
    """Revert migrations down to REVISION (`base` empties the database)."""
    settings = _settings()
    migrate.downgrade(settings.database_url, revision, settings)
    typer.echo(f"database at revision {migrate.current_revision(settings.database_url)}")


@db_cli.command("current")
def db_current() -> None:
    """Show the database's revision and the head."""
    settings = _settings()
    typer.echo(
        f"current: {migrate.current_revision(settings.database_url)}  "
        f"head: {migrate.head_revision(settings.database_url)}"
    )


@token_cli.command("create")
def token_create(
    name: Annotated[str, typer.Option(help="Who the token is for")],
    role: Annotated[str, typer.Option(help="admin, researcher, viewer or case_manager")],
) -> None:
    """Create an API token; it is printed once and stored only as a hash."""
    settings = _settings()
    _require_head(settings)
    try:
        with session_scope(_session_factory(settings)) as session:
            principal, token = create_token(session, name=name, role=role)
    except AppError as exc:
        _fail(exc.detail)
    typer.echo(f"token for {principal.name} ({principal.role}), shown once:\n{token}")


def _load_survey_file(path: Path) -> SurveyCreate:
    try:
        data: Any = yaml.safe_load(path.read_text("utf-8"))
        return SurveyCreate.model_validate(data)
    except OSError as exc:
        _fail(f"cannot read {path}: {exc.strerror}")
    except yaml.YAMLError as exc:
        _fail(f"{path} is not valid YAML: {exc}")
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        _fail(f"{path}: {problems}")
    raise AssertionError("unreachable")


@survey_cli.command("create")
def survey_create(
    file: Annotated[
        Path, typer.Argument(help="Survey definition (YAML), see app/surveys/demo.yaml")
    ],
    open_now: Annotated[bool, typer.Option("--open", help="Open it for responses")] = False,
) -> None:
    """Create a survey from a YAML file."""
    settings = _settings()
    _require_head(settings)
    data = _load_survey_file(file)
    if open_now:
        data = data.model_copy(update={"open": True})
    try:
        with session_scope(_session_factory(settings)) as session:
            survey = surveys.create_survey(session, data, None)
            read = surveys.to_read(survey, settings)
    except AppError as exc:
        _fail(exc.detail)
    typer.echo(f"survey {read.id} created ({read.status}): {read.link}")


@reports_cli.command("rebuild")
def reports_rebuild() -> None:
    """Recompute the report rollups from the stories and final codes (database triggers keep
    them fresh; this is for after a bulk load made with the triggers disabled)."""
    from app.reports.rollups import rebuild

    settings = _settings()
    _require_head(settings)
    with session_scope(_session_factory(settings)) as session:
        rebuild(session)
    typer.echo("report rollups rebuilt")


@cli.command()
def demo() -> None:
    """Load the default codebook, and the demo survey and an admin token into an empty
    database."""
    settings = _settings()
    _require_head(settings)
    with session_scope(_session_factory(settings)) as session:
        ensure_default_codebook(session, DEFAULT_CODEBOOK)
        if (session.scalar(select(func.count()).select_from(Survey)) or 0) > 0:
            existing = surveys.find_by_slug(session, "demo")
            typer.echo("The database already holds surveys; nothing loaded.")
            if existing is not None:
                typer.echo(f"Demo survey: {surveys.to_read(existing, settings).link}")
            typer.echo("Need an admin token? cit token create --name NAME --role admin")
            typer.echo("Need to sign in? cit person link --name demo-admin")
            return
        survey = surveys.create_survey(session, _load_survey_file(DEMO_SURVEY), None)
        link = surveys.to_read(survey, settings).link
        principal, token = create_token(session, name="demo-admin", role="admin")
        admin = accounts.get_person(session, principal.id)
        password = accounts.issue_password_link(session, admin, actor=None, settings=settings)
    typer.echo(
        "\n".join(
            [
                "",
                f"  Demo survey (open it in a browser): {link}",
                f"  Admin API token (shown once, keep it): {token}",
                f"  Workbench: set the demo-admin's password (link works once, until "
                f"{password.expires_at:%Y-%m-%d %H:%M} UTC), then sign in as demo-admin:",
                f"    {password.url}",
                f"  Try: curl -H 'Authorization: Bearer {token}' "
                f"{settings.public_base_url}/api/v1/incidents",
                "",
            ]
        )
    )


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port")] = 8000,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            max=64,
            help="API processes (PostgreSQL, or SQLite on one machine); the job worker runs "
            "as a process of its own beside them",
        ),
    ] = 1,
    run_worker: Annotated[
        bool | None,
        typer.Option(
            "--worker/--no-worker",
            help="Run a job worker process beside the API processes (default: "
            "CIT_WORKER_IN_PROCESS, true)",
        ),
    ] = None,
) -> None:
    """Serve the API and the survey pages (refuses a database behind the migrations)."""
    import uvicorn

    settings = _settings()
    _require_head(settings)
    configure_logging(settings.log_level, settings.log_format)
    typer.echo(
        f"serving on http://{host}:{port} with {workers} process(es) "
        f"(database: {_safe_url(settings.database_url)})",
        err=True,
    )
    with_worker = settings.worker_in_process if run_worker is None else run_worker
    # Our own access log (route templates, never /i/<token>) replaces uvicorn's; client
    # addresses from proxies are taken only from CIT_TRUSTED_PROXIES (app.protection), so
    # uvicorn must not rewrite them from X-Forwarded-For.
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_config": None,
        "access_log": False,
        "proxy_headers": False,
        "server_header": False,
        "timeout_graceful_shutdown": 20,
        # A process loading spaCy on a busy machine takes more than uvicorn's 5 s to answer
        # its first health check; it would be killed and restarted in a loop.
        "timeout_worker_healthcheck": 60,
    }
    # The job worker runs as a process of its own beside the API process(es), never as a thread
    # in one: spaCy scoring in a thread holds the API process's GIL, and one process then uses
    # one of the machine's cores for both (measured in bench/README.md, Ingest: a thread
    # worker halved the API's submissions per second). The processes' metrics are added up
    # through a shared directory; several workers are fine on PostgreSQL (`cit worker` more).
    metrics_dir = tempfile.mkdtemp(prefix="cit-metrics-")
    if workers > 1:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    # One API process has made its metrics already (imports above): the worker alone writes
    # files, which /metrics adds (app.observability.metrics_body).
    elif with_worker:
        os.environ[WORKER_METRICS_DIR] = metrics_dir
    job_worker = _JobWorker(metrics_dir, _worker_nice(settings)) if with_worker else None
    try:
        if workers == 1:
            from app.main import create_app

            uvicorn.run(create_app(settings), **options)
        else:
            uvicorn.run("app.main:app_from_environment", factory=True, workers=workers, **options)
    finally:
        if job_worker is not None:
            job_worker.stop()
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _worker_nice(settings: Settings) -> int:
    if settings.worker_nice is not None:
        return settings.worker_nice
    return 10 if make_url(settings.database_url).get_backend_name() == "postgresql" else 0


class _JobWorker:
    """The job worker child of `cit serve`, started again whenever it exits while the server
    runs (after 1 s, doubling up to a minute while it keeps exiting soon after its start):
    without it stories would go unsuggested, reports unfolded and webhooks unsent until someone
    restarted the server."""

    RAN_WELL_SECONDS = 60.0
    MAX_PAUSE_SECONDS = 60.0

    def __init__(self, metrics_dir: str, nice: int = 0) -> None:
        self._metrics_dir = metrics_dir
        self._nice = nice
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.process = _start_job_worker(metrics_dir, nice)
        self._started = time.monotonic()
        self._watcher = threading.Thread(target=self._watch, name="cit-worker-watch", daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        pause = 1.0
        while True:
            code = self.process.wait()
            if self._stopping.is_set():
                return
            if time.monotonic() - self._started >= self.RAN_WELL_SECONDS:
                pause = 1.0
            log.warning("the job worker exited (code %s); starting it again in %.0f s", code, pause)
            if self._stopping.wait(pause):
                return
            with self._lock:
                if self._stopping.is_set():
                    return
                self.process = _start_job_worker(self._metrics_dir, self._nice)
                self._started = time.monotonic()
            pause = min(pause * 2, self.MAX_PAUSE_SECONDS)

    def stop(self) -> None:
        with self._lock:
            self._stopping.set()
            process = self.process
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        self._watcher.join(timeout=5)


def _start_job_worker(metrics_dir: str, nice: int = 0) -> subprocess.Popen[bytes]:
    """`cit worker` as a child that dies with this process (Linux: PR_SET_PDEATHSIG), at
    niceness `nice`."""

    def die_with_parent() -> None:
        try:
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except OSError:
            pass
        if nice:
            os.nice(nice)

    # A process group of its own: Ctrl-C in a terminal reaches `cit serve` alone, which stops
    # the worker itself (the watcher would otherwise start it again during the shutdown).
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", "worker"],
        preexec_fn=die_with_parent,
        process_group=0,
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": metrics_dir},
    )


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def main() -> None:
    try:
        cli()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
