"""The worker: claims jobs from the database queue and runs them in batches.

`cit worker` runs one as a process (several may run side by side on PostgreSQL); `cit serve`
runs one in a thread unless told not to, so the embedded set-up stays one command."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from app.alerts.service import fold_and_evaluate
from app.cases.service import due_cases, open_due_cases
from app.config import Settings
from app.db import session_scope
from app.errors import DATABASE_UNAVAILABLE, AppError
from app.incidents.redaction import redaction_columns_many, required_redaction
from app.jobs import queue
from app.jobs.queue import ClaimedJob
from app.models import Codebook
from app.observability import JOB_FAILURES
from app.suggestions import service
from app.suggestions.engine import SuggesterCache
from app.suggestions.queue import ALL_KINDS, IMPORT, REDACT, SUGGEST, TRAIN, enqueue_suggestions
from app.webhooks.delivery import WebhookDispatcher

log = logging.getLogger("cit.worker")
# How long a worker lets stories gather after a round that found only a few.
BATCH_GATHER_SECONDS = 0.25
# SQLite's query planner needs table statistics (ANALYZE) to pick, say, the date index for an
# export of one quarter instead of walking every story of the survey; nothing else keeps them.
# The worker refreshes them when it starts and then every hour, sampling a bounded number of
# index rows (`analysis_limit`: milliseconds at a million stories). PostgreSQL's autovacuum
# does this by itself.
STATISTICS_SECONDS = 3600.0
ANALYSIS_LIMIT = 1000


class _LeaseLost(Exception):
    pass


@dataclass
class BatchResult:
    claimed: int = 0
    done: int = 0
    failed: int = 0


class Worker:
    def __init__(
        self,
        factory: sessionmaker[Session],
        settings: Settings,
        *,
        name: str | None = None,
        cache: SuggesterCache | None = None,
    ) -> None:
        self.factory = factory
        self.settings = settings
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"
        self.cache = cache or SuggesterCache(settings.nlp_pipeline)
        self.required_redaction = required_redaction(settings.nlp_pipeline)
        self._stop = threading.Event()
        self._statistics_at: float | None = None

    # One round ----------------------------------------------------------------------------------

    def run_once(self, kinds: tuple[str, ...] = ALL_KINDS) -> BatchResult:
        """Run one batch of due jobs; returns what happened (claimed 0 = nothing was due)."""
        result = BatchResult()
        if SUGGEST in kinds:
            self._suggest_batch(result)
        self.fold_rollups()
        self.refresh_statistics()
        # One other job (training) every round, so that a steady stream of new stories cannot
        # starve it.
        other = tuple(k for k in kinds if k != SUGGEST)
        if other:
            with session_scope(self.factory) as session:
                jobs = queue.claim(
                    session,
                    self.name,
                    kinds=other,
                    limit=1,
                    lease_seconds=self.settings.job_lease_seconds,
                )
            result.claimed += len(jobs)
            for job in jobs:
                if job.kind == TRAIN:
                    self._run_single(job, self._train, result)
                elif job.kind == IMPORT:
                    self._run_import(job, result)
                elif job.kind == REDACT:
                    self._run_redaction(job, result)
                else:
                    self._record_failure(job, f"unknown job kind {job.kind!r}", result, final=True)
        return result

    def fold_rollups(self) -> int:
        """Fold the report deltas written since the last round into the rollup tables (reports
        are exact without it; folding keeps what they read small)."""
        with session_scope(self.factory) as session:
            folded, _fired = fold_and_evaluate(session, self.settings)
        # Asked in a read transaction: the write lock (SQLite) is taken only when a case is due.
        with session_scope(self.factory, write=False) as session:
            due = due_cases(session)
        if due:
            with session_scope(self.factory) as session:
                open_due_cases(session)
        return folded

    def refresh_statistics(self, *, force: bool = False) -> bool:
        """SQLite: `ANALYZE` with a sampling limit when due (at start, then hourly); returns
        whether it ran."""
        now = time.monotonic()
        due = self._statistics_at is None or now - self._statistics_at >= STATISTICS_SECONDS
        if not (force or due):
            return False
        self._statistics_at = now
        if self.factory.kw["bind"].dialect.name != "sqlite":
            return False
        with session_scope(self.factory) as session:
            session.connection().exec_driver_sql(f"PRAGMA analysis_limit={ANALYSIS_LIMIT}")
            session.connection().exec_driver_sql("ANALYZE")
        return True

    def _suggest_batch(self, result: BatchResult) -> None:
        """Claim a batch of suggestion jobs (a lease, in a short transaction), read the
        stories, score them with no transaction open, then store the scores and delete the jobs
        in another short one: the write lock (SQLite) and row locks are never held while spaCy
        runs, so submissions do not wait for the worker. If the batch fails, its jobs run one
        by one so that one broken story cannot hold back the others; a worker that dies leaves
        its jobs to be claimed again when the lease runs out."""
        size = self.settings.worker_batch_size
        with session_scope(self.factory) as session:
            jobs = queue.claim(
                session,
                self.name,
                kinds=(SUGGEST,),
                limit=size,
                lease_seconds=self.settings.suggest_lease_seconds,
            )
        if not jobs:
            return
        result.claimed += len(jobs)
        job_ids = [j.id for j in jobs]
        try:
            with session_scope(self.factory, write=False) as session:
                work = service.read_scoring_work(
                    session, [j.payload["incident_id"] for j in jobs], self.cache
                )
            scored = [service.compute_scores(w, size) for w in work]
            with session_scope(self.factory) as session:
                for w in scored:
                    service.store_scores(session, w)
                queue.finish(session, job_ids, worker=self.name)
            result.done += len(jobs)
            return
        except Exception:
            log.warning("a suggestion batch failed; running its jobs one by one")
        for job in jobs:
            self._run_single(job, self._suggest_one, result, keep=False)

    def _suggest_one(self, session: Session, job: ClaimedJob) -> dict[str, object]:
        scored = service.score_incidents(session, [job.payload["incident_id"]], self.cache)
        return {"scored": scored}

    def _train(self, session: Session, job: ClaimedJob) -> dict[str, object]:
        codebook = session.get(Codebook, job.payload["codebook_id"])
        if codebook is None:
            raise AppError(f"codebook {job.payload['codebook_id']} no longer exists")
        model = service.train_model(
            session, codebook, self.settings, job.payload.get("requested_by", "worker")
        )
        evaluation = model.metrics.get("evaluation") or {}
        return {
            "model_id": model.id,
            "n_examples": model.n_examples,
            "active": model.active,
            "activation": model.metrics.get("activation"),
            "layers": {c["code"]: c["layer"] for c in evaluation.get("codes", [])},
            "macro": (evaluation.get("macro") or {}).get("selected"),
        }

    # Redaction ------------------------------------------------------------------------------

    def queue_redaction(self) -> int | None:
        """With an NER pipeline, queue the re-redaction of every story not yet redacted with it
        (once: a queued job is not queued again); returns the job id, or None."""
        marker = self.required_redaction
        if marker is None:
            return None
        with session_scope(self.factory) as session:
            if service.count_stale_redactions(session, marker) == 0:
                return None
            return queue.enqueue(
                session,
                REDACT,
                {"marker": marker},
                subject="redaction",
                dedupe=True,
                max_attempts=5,
            )

    def redact_all(
        self, batch_size: int = 256, progress: Callable[[int], None] | None = None
    ) -> int:
        """Re-redact, batch by batch (one transaction each), every story not yet redacted with
        the configured NER pipeline; returns how many were redacted."""
        marker = self.required_redaction
        if marker is None:
            return 0
        suggester = self.cache.get_base()
        done = 0
        while True:
            # Read, redact with no transaction open (NER takes seconds a batch), then write in
            # a short transaction: submissions never wait for this job.
            with session_scope(self.factory, write=False) as session:
                ids, originals = service.stale_redactions(session, marker, batch_size)
            if not ids:
                return done
            columns = redaction_columns_many(originals, suggester)
            with session_scope(self.factory) as session:
                service.store_redactions(session, dict(zip(ids, columns, strict=True)), marker)
                enqueue_suggestions(session, service.uncoded(session, ids))
            done += len(ids)
            if progress is not None:
                progress(len(ids))

    def _run_redaction(self, job: ClaimedJob, result: BatchResult) -> None:
        """The redaction job: progress ({"done", "remaining"}) is written after every batch, and
        the lease renewed, so `GET /api/v1/jobs/{id}` shows how far it is."""
        state = {"done": 0}

        def report(n: int) -> None:
            state["done"] += n
            with session_scope(self.factory) as session:
                remaining = service.count_stale_redactions(session, job.payload["marker"])
                queue.heartbeat(
                    session,
                    job,
                    self.name,
                    self.settings.job_lease_seconds,
                    {"done": state["done"], "remaining": remaining},
                )

        try:
            if job.payload.get("marker") != self.required_redaction:
                raise AppError(
                    f"job asks for redaction {job.payload.get('marker')!r}, this worker is "
                    f"configured for {self.required_redaction!r}"
                )
            self.redact_all(self.settings.worker_batch_size, progress=report)
            with session_scope(self.factory) as session:
                queue.finish(
                    session,
                    [job.id],
                    keep=True,
                    result={"done": state["done"], "remaining": 0},
                    worker=self.name,
                )
            result.done += 1
        except AppError as exc:
            self._record_failure(job, exc.detail, result, final=True)
        except Exception:
            self._record_failure(job, traceback.format_exc(limit=5), result)

    def _run_import(self, job: ClaimedJob, result: BatchResult) -> None:
        """An upload commits chunk by chunk in its own transactions (so that its progress can
        be read while it runs); a rerun after a crash skips what is stored already."""
        from app.imports.jobs import run_import_job

        try:
            outcome = run_import_job(self.factory, self.settings, job.payload)
        except AppError as exc:
            self._record_failure(job, exc.detail, result, final=True)
            return
        except Exception:
            self._record_failure(job, traceback.format_exc(limit=5), result)
            return
        with session_scope(self.factory) as session:
            queue.finish(session, [job.id], keep=True, result=outcome, worker=self.name)
        result.done += 1

    def _run_single(
        self,
        job: ClaimedJob,
        work: Callable[[Session, ClaimedJob], dict[str, object]],
        result: BatchResult,
        *,
        keep: bool = True,
    ) -> None:
        try:
            with session_scope(self.factory) as session:
                outcome = work(session, job)
                if not queue.finish(session, [job.id], keep=keep, result=outcome, worker=self.name):
                    # Our lease ran out and another worker took the job: its run counts.
                    raise _LeaseLost
            result.done += 1
        except _LeaseLost:
            log.warning("job %s: lease lost to another worker; this run was rolled back", job.id)
        except AppError as exc:  # an explained failure: retrying would only repeat it
            self._record_failure(job, exc.detail, result, final=True)
        except Exception:
            self._record_failure(job, traceback.format_exc(limit=5), result)

    def _record_failure(
        self, job: ClaimedJob, error: str, result: BatchResult, *, final: bool = False
    ) -> None:
        with session_scope(self.factory) as session:
            status = queue.fail(session, job, error, final=final, worker=self.name)
        result.failed += 1
        JOB_FAILURES.labels(job.kind).inc()
        log.warning(
            "job %s (%s) failed, now %s: %s",
            job.id,
            job.kind,
            status,
            error.strip().splitlines()[-1] if error.strip() else "",
        )

    # Loops ---------------------------------------------------------------------------------------

    def drain(
        self,
        kinds: tuple[str, ...] = ALL_KINDS,
        progress: Callable[[BatchResult], None] | None = None,
    ) -> BatchResult:
        """Run until no due job is left (used by `cit nlp resuggest` and tests)."""
        total = BatchResult()
        while True:
            batch = self.run_once(kinds)
            if batch.claimed == 0:
                return total
            total.claimed += batch.claimed
            total.done += batch.done
            total.failed += batch.failed
            if progress is not None:
                progress(batch)

    def run_forever(self) -> None:
        log.info("worker %s started", self.name)
        # Webhooks go out from a thread of their own: a slow receiver holds back no other job.
        dispatcher = WebhookDispatcher(self.factory, self.settings, self.name)
        webhooks = dispatcher.start_thread(self._stop)
        redaction_checked = False
        while not self._stop.is_set():
            try:
                if not redaction_checked:  # once, at the first round the database answers
                    self._check_redaction()
                    redaction_checked = True
                batch = self.run_once()
            except DATABASE_UNAVAILABLE as error:
                # The database is away for a moment: say so in one line, try again later.
                log.warning("database unavailable (%s); retrying", type(error).__name__)
                batch = BatchResult()
            except Exception:  # keep the worker alive; the traceback says where it failed
                log.exception("worker round failed")
                batch = BatchResult()
            if batch.claimed == 0:
                self._stop.wait(self.settings.worker_poll_seconds)
            elif batch.claimed < self.settings.worker_batch_size // 2:
                # Stories arrive one by one: let a few more come before the next round, so that
                # a round's fixed cost (five short transactions) is shared by more of them.
                self._stop.wait(BATCH_GATHER_SECONDS)
        webhooks.join(timeout=self.settings.webhook_timeout_seconds + 5)
        dispatcher.close()
        log.info("worker %s stopped", self.name)

    def _check_redaction(self) -> None:
        """Queue re-redaction of stories stored under an older redaction. The database being
        away is raised (the round says so in one line, and the check runs again next round);
        any other failure is logged and not tried again."""
        try:
            if self.queue_redaction() is not None:
                log.info(
                    "stories not yet redacted with %s: re-redaction queued", self.required_redaction
                )
        except DATABASE_UNAVAILABLE:
            raise
        except Exception:
            log.exception("could not check the redaction of stored stories")

    def stop(self) -> None:
        self._stop.set()

    def start_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.run_forever, name="cit-worker", daemon=True)
        thread.start()
        return thread
