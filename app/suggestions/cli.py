"""`cit nlp ...` and `cit worker`: batch work on the service's code path."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from sqlalchemy import func, select
from tqdm import tqdm

import nlp
from app.cli_support import fail, ready
from app.codebooks.service import (
    current_version,
    default_codebook,
    find_codebook,
    load_nlp_codebook,
)
from app.db import session_scope
from app.errors import AppError
from app.incidents.redaction import REDACTED_FIELDS, redaction_columns
from app.models import Codebook, Job
from app.observability import configure_logging
from app.suggestions import service
from app.suggestions.engine import SuggesterCache
from app.suggestions.queue import SUGGEST, enqueue_rescoring
from app.suggestions.worker import Worker

nlp_cli = typer.Typer(
    help="Suggestions: train, evaluate, suggest, re-suggest.", no_args_is_help=True
)

CodebookOption = Annotated[
    str | None, typer.Option("--codebook", help="Codebook key (default: the default codebook)")
]


def _codebook(session: Any, key: str | None) -> Codebook:
    codebook = find_codebook(session, key) if key else default_codebook(session)
    if codebook is None:
        fail(f"no codebook {key!r}" if key else "no codebook yet: run `cit codebook import FILE`")
    assert codebook is not None
    return codebook


def worker(
    once: Annotated[bool, typer.Option(help="Run the due jobs, then exit")] = False,
) -> None:
    """Run a job worker (suggestions, training). Several may run side by side on PostgreSQL."""
    settings, factory = ready()
    configure_logging(settings.log_level, settings.log_format)
    job_worker = Worker(factory, settings)
    if once:
        total = job_worker.drain()
        typer.echo(f"{total.done} jobs done, {total.failed} failed")
        return
    try:
        job_worker.run_forever()
    except KeyboardInterrupt:
        job_worker.stop()


@nlp_cli.command("train")
def train(codebook: CodebookOption = None) -> None:
    """Train a text classifier on the researcher-confirmed stories and make it active."""
    settings, factory = ready()
    try:
        with session_scope(factory) as session:
            found = _codebook(session, codebook)
            typer.echo(f"training on {service.count_confirmed(session, found)} confirmed stories…")
            model = service.train_model(session, found, settings, "cli")
            metrics = model.metrics.get("metrics") or {}
            typer.echo(f"model {model.id} active, stored at {model.path}")
            if metrics:
                typer.echo(f"held-out macro F1: {metrics.get('macro_f1')}")
    except AppError as exc:
        fail(exc.detail)


@nlp_cli.command("evaluate")
def evaluate(
    codebook: CodebookOption = None,
    folds: Annotated[int, typer.Option(min=2, max=20)] = 5,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the report as JSON ('-': stdout)")
    ] = None,
) -> None:
    """k-fold cross-validation of the suggestions against the confirmed codes."""
    settings, factory = ready()
    with session_scope(factory, write=False) as session:
        found = _codebook(session, codebook)
        examples = service.confirmed_examples(session, found)
        nlp_codebook = load_nlp_codebook(current_version(session, found))
    if len(examples) < folds:
        fail(f"{len(examples)} confirmed stories: too few for {folds}-fold cross-validation")
    report = nlp.cross_validate(examples, nlp_codebook, k=folds, base=settings.nlp_pipeline)
    if json_out is not None and str(json_out) == "-":
        typer.echo(json.dumps(report.to_dict(), indent=2))
        return
    typer.echo(nlp.format_table(report))
    if json_out is not None:
        json_out.write_text(json.dumps(report.to_dict(), indent=2), encoding="utf-8")
        typer.echo(f"written to {json_out}")


def _story_fields(line: dict[str, Any]) -> dict[str, str | None]:
    if any(line.get(f) for f in REDACTED_FIELDS):
        return {f: line.get(f) for f in REDACTED_FIELDS}
    return {"text": line.get("text")}


@nlp_cli.command("suggest")
def suggest(
    in_path: Annotated[Path, typer.Option("--in", help="JSON Lines: id and text or CIT fields")],
    out_path: Annotated[Path, typer.Option("--out", help="JSON Lines with the suggestions")],
    codebook: CodebookOption = None,
    codebook_file: Annotated[
        Path | None, typer.Option(help="A codebook YAML file instead of the database's")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1)] = 256,
) -> None:
    """Suggest codes for stories in a file, through the same path as the service (redaction,
    then the codebook's rules and the active model)."""
    from app.config import get_settings

    settings = get_settings()
    model_id: int | None = None
    version_number: int | None = None
    if codebook_file is not None:
        try:
            nlp_codebook = nlp.load_codebook_file(codebook_file)
        except (OSError, nlp.CodebookError) as exc:
            fail(str(exc))
        suggester = nlp.Suggester(nlp_codebook, base=settings.nlp_pipeline)
    else:
        settings, factory = ready(settings)
        with session_scope(factory, write=False) as session:
            found = _codebook(session, codebook)
            context = service.scoring_context(session, found, SuggesterCache(settings.nlp_pipeline))
            suggester = context.suggester
            model_id = context.model.id if context.model else None
            version_number = context.version.number
    total = sum(1 for line in in_path.open(encoding="utf-8") if line.strip())
    errors = 0
    with in_path.open(encoding="utf-8") as source, out_path.open("w", encoding="utf-8") as sink:
        batch: list[tuple[Any, nlp.ComposedStory]] = []

        def flush() -> None:
            stories = [story for _, story in batch]
            for (story_id, story), suggestions in zip(
                batch, service.score_stories(suggester, stories, batch_size), strict=True
            ):
                sink.write(
                    json.dumps(
                        {
                            "id": story_id,
                            "codebook": suggester.codebook.key,
                            "codebook_version": version_number,
                            "model_id": model_id,
                            "text": story.text,
                            "suggestions": [service.suggestion_item(story, s) for s in suggestions],
                        },
                        ensure_ascii=False,
                    )
                    + "\n"
                )
            batch.clear()

        for number, line in enumerate(tqdm(source, total=total, unit="story", file=sys.stderr), 1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                fields = _story_fields(data)
                if not any(fields.values()):
                    raise ValueError("no text and no CIT answer fields")
            except (ValueError, AttributeError) as exc:
                typer.echo(f"line {number}: {exc}", err=True)
                errors += 1
                continue
            redacted = (
                redaction_columns(fields)["redacted"]
                if "text" not in fields
                else {"text": nlp.redact(fields["text"] or "").text}
            )
            batch.append((data.get("id"), nlp.compose_story(redacted)))
            if len(batch) >= batch_size:
                flush()
        if batch:
            flush()
    typer.echo(f"wrote {out_path}" + (f"; {errors} lines skipped" if errors else ""))
    if errors:
        raise typer.Exit(1)


@nlp_cli.command("resuggest")
def resuggest(
    survey: Annotated[int | None, typer.Option(help="Only this survey's stories")] = None,
) -> None:
    """Re-score every story not yet coded, now, with a progress bar."""
    settings, factory = ready()
    with session_scope(factory) as session:
        queued = enqueue_rescoring(session, survey_id=survey)
        pending = session.scalar(
            select(func.count()).select_from(Job).where(Job.kind == SUGGEST, Job.status == "queued")
        )
    job_worker = Worker(factory, settings, name="cit-nlp-resuggest")
    with tqdm(total=pending or 0, unit="story", file=sys.stderr) as bar:
        total = job_worker.drain(kinds=(SUGGEST,), progress=lambda b: bar.update(b.claimed))
    typer.echo(f"stories not yet coded: {queued}; scored: {total.done}; failed: {total.failed}")
