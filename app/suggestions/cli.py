"""`cit nlp ...` and `cit worker`: batch work on the service's code path."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from sqlalchemy import func, select
from tqdm import tqdm

import nlp
from app.cli_support import (
    fail,
    load_settings,
    ready,
    require_head,
    session_factory,
    wait_for_head,
)
from app.codebooks.service import (
    current_version,
    default_codebook,
    find_codebook,
    load_nlp_codebook,
)
from app.db import session_scope
from app.errors import AppError
from app.incidents.redaction import REDACTED_FIELDS, redaction_columns, required_redaction
from app.models import Codebook, Job
from app.observability import configure_logging
from app.suggestions import service
from app.suggestions.engine import SuggesterCache
from app.suggestions.queue import SUGGEST, enqueue_rescoring
from app.suggestions.worker import Worker
from app.webhooks.delivery import WebhookDispatcher

log = logging.getLogger("cit.worker")

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
    """Run a job worker (suggestions, training, webhook deliveries). Several may run side by
    side on PostgreSQL."""
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    if once:
        require_head(settings)
    else:  # a long-running worker waits for its database rather than exiting
        wait_for_head(settings, log)
    factory = session_factory(settings)
    job_worker = Worker(factory, settings)
    if once:
        total = job_worker.drain()
        typer.echo(f"{total.done} jobs done, {total.failed} failed")
        dispatcher = WebhookDispatcher(factory, settings, job_worker.name)
        try:
            steps = dispatcher.drain()
        finally:
            dispatcher.close()
        if steps:
            typer.echo(f"webhooks: {steps} events fanned out, deliveries queued or sent")
        return
    try:
        job_worker.run_forever()
    except KeyboardInterrupt:
        job_worker.stop()


@nlp_cli.command("train")
def train(codebook: CodebookOption = None) -> None:
    """Train on what coders decided; per code, cross-validate rules, model and combined, keep
    the best; activate the model if allowed and no code gets worse than the layer in use."""
    settings, factory = ready()
    try:
        with session_scope(factory) as session:
            found = _codebook(session, codebook)
            typer.echo(f"training on {service.count_confirmed(session, found)} confirmed stories…")
            model = service.train_model(session, found, settings, "cli")
            typer.echo(nlp.format_table(model.metrics["evaluation"]))
            activation = model.metrics["activation"]
            state = "active" if model.active else "stored, not active"
            typer.echo(f"model {model.id} {state} ({activation['reason']}); at {model.path}")
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
    """k-fold figures of rules, model and combined per code against the confirmed codes (the
    same run as training, nothing stored); with too few stories, the rules alone."""
    settings, factory = ready()
    with session_scope(factory, write=False) as session:
        found = _codebook(session, codebook)
        stories = service.training_stories(session, found)
        nlp_codebook = load_nlp_codebook(current_version(session, found))
    n_final = sum(1 for s in stories if s.final)
    if n_final < max(folds, nlp.MIN_CONFIRMED_FOR_MODEL):
        metrics = nlp.evaluate_rules(stories, nlp_codebook, base=settings.nlp_pipeline)
        data: dict[str, Any] = {
            "layer": "rules",
            "n_final": n_final,
            "codes": [m.to_dict() for m in metrics],
            "macro": nlp.macro_summary(metrics),
            "note": f"{n_final} confirmed stories, fewer than {nlp.MIN_CONFIRMED_FOR_MODEL} for "
            "a model: the rule layer on all of them",
        }
        text = (
            data["note"] + "\n" + nlp.format_metrics_table([(m.code, "rules", m) for m in metrics])
        )
    else:
        report = nlp.cross_validate(stories, nlp_codebook, k=folds, base=settings.nlp_pipeline)
        data = report.to_dict()
        text = nlp.format_table(report)
    if json_out is not None and str(json_out) == "-":
        typer.echo(json.dumps(data, indent=2))
        return
    typer.echo(text)
    if json_out is not None:
        json_out.write_text(json.dumps(data, indent=2), encoding="utf-8")
        typer.echo(f"written to {json_out}")


@nlp_cli.command("models")
def models(codebook: CodebookOption = None) -> None:
    """List the trained models: which is active, per-code layers and macro kappa."""
    _, factory = ready()
    with session_scope(factory, write=False) as session:
        found = _codebook(session, codebook)
        rows = service.list_models(session, found.id)
        typer.echo(
            f"codebook {found.key}: automatic activation {'on' if found.auto_activate else 'off'}"
        )
        if not rows:
            typer.echo("no model trained yet: the rules suggest every code")
        for model in rows:
            evaluation = model.metrics.get("evaluation") or {}
            layers = ", ".join(f"{c['code']}={c['layer']}" for c in evaluation.get("codes", []))
            macro = (evaluation.get("macro") or {}).get("selected") or {}
            kappa = macro.get("kappa")
            typer.echo(
                f"{'*' if model.active else ' '} {model.id:>4}  {model.created_at:%Y-%m-%d %H:%M}  "
                f"{model.n_examples:>5} stories  macro F1 {macro.get('f1', 0):.3f} "
                f"kappa {'-' if kappa is None else f'{kappa:.3f}'}  {layers or 'format 1'}"
            )


@nlp_cli.command("activate")
def activate(
    model_id: Annotated[int, typer.Argument(help="Model id (see `cit nlp models`)")],
) -> None:
    """Make a stored model active (also an earlier one: a roll-back)."""
    _, factory = ready()
    try:
        with session_scope(factory) as session:
            model = service.activate_model(session, model_id, None)
            typer.echo(f"model {model.id} active; stories not yet coded queued for re-scoring")
    except AppError as exc:
        fail(exc.detail)


@nlp_cli.command("deactivate")
def deactivate(codebook: CodebookOption = None) -> None:
    """Go back to the rules: no model active for the codebook."""
    _, factory = ready()
    try:
        with session_scope(factory) as session:
            found = _codebook(session, codebook)
            active = service.active_model(session, found.id)
            if active is None:
                fail(f"no model is active for {found.key}: the rules already suggest")
            assert active is not None
            service.deactivate_model(session, active.id, None)
            typer.echo(f"model {active.id} deactivated; the rules suggest for {found.key}")
    except AppError as exc:
        fail(exc.detail)


@nlp_cli.command("auto-activate")
def auto_activate(
    state: Annotated[str, typer.Argument(help="on or off")],
    codebook: CodebookOption = None,
) -> None:
    """Whether training may activate its model by itself (for one codebook)."""
    if state not in ("on", "off"):
        fail("say on or off")
    _, factory = ready()
    with session_scope(factory) as session:
        found = _codebook(session, codebook)
        service.set_auto_activate(session, found, state == "on", None)
    typer.echo(f"automatic activation {state} for {found.key}")


@nlp_cli.command("redact")
def redact_command(
    batch_size: Annotated[int, typer.Option(min=1)] = 256,
) -> None:
    """Re-redact every stored story with the configured pipeline (person names too, when it
    has NER), now, with a progress bar; until then researchers cannot read those stories."""
    settings, factory = ready()
    required = required_redaction(settings.nlp_pipeline)
    if required is None:
        typer.echo(f"{settings.nlp_pipeline} has no NER: the redaction at submission is complete")
        return
    job_worker = Worker(factory, settings, name="cit-nlp-redact")
    with session_scope(factory, write=False) as session:
        total = service.count_stale_redactions(session, required)
    with tqdm(total=total, unit="story", file=sys.stderr) as bar:
        done = job_worker.redact_all(batch_size, progress=bar.update)
    typer.echo(f"{done} stories redacted with {required}")


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
    kappas: dict[str, float | None] = {}
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
            kappas = service.layer_kappas(context.model)
    total = sum(1 for line in in_path.open(encoding="utf-8") if line.strip())
    errors = 0
    with in_path.open(encoding="utf-8") as source, out_path.open("w", encoding="utf-8") as sink:
        batch: list[tuple[Any, nlp.ComposedStory, str | None]] = []
        # The worker's redaction: patterns, plus person names when the pipeline has NER.
        ner = suggester.nlp if "ner" in suggester.nlp.pipe_names else None

        def flush() -> None:
            stories = [story for _, story, _ in batch]
            valences = [valence for _, _, valence in batch]
            for (story_id, story, _), scored in zip(
                batch, service.score_stories(suggester, stories, batch_size, valences), strict=True
            ):
                sink.write(
                    json.dumps(
                        {
                            "id": story_id,
                            "codebook": suggester.codebook.key,
                            "codebook_version": version_number,
                            "model_id": model_id,
                            "text": story.text,
                            "suggestions": [
                                service.suggestion_item(story, s, kappas.get(s.code))
                                for s in scored.codes
                            ],
                            "exclusion": scored.exclude.to_dict() if scored.exclude else None,
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
                redaction_columns(fields, ner)["redacted"]
                if "text" not in fields
                else {"text": nlp.redact(fields["text"] or "", ner).text}
            )
            valence = data.get("valence") if data.get("valence") in nlp.VALENCES else None
            batch.append((data.get("id"), nlp.compose_story(redacted), valence))
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
