"""The worker: claims jobs from the database queue and runs them in batches.

`cit worker` runs one as a process (several may run side by side on PostgreSQL); `cit serve`
runs one in a thread unless told not to, so the embedded set-up stays one command."""

from __future__ import annotations

import logging
import os
import socket
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.db import session_scope
from app.errors import AppError
from app.incidents.redaction import required_redaction
from app.jobs import queue
from app.jobs.queue import ClaimedJob
from app.models import Codebook
from app.suggestions import service
from app.suggestions.engine import SuggesterCache
from app.suggestions.queue import REDACT, SUGGEST, TRAIN, enqueue_suggestions

log = logging.getLogger("cit.worker")


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

    # One round ----------------------------------------------------------------------------------

    def run_once(self, kinds: tuple[str, ...] = (SUGGEST, TRAIN, REDACT)) -> BatchResult:
        """Run one batch of due jobs; returns what happened (claimed 0 = nothing was due)."""
        result = BatchResult()
        if SUGGEST in kinds:
            self._suggest_batch(result)
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
                elif job.kind == REDACT:
                    self._run_redaction(job, result)
                else:
                    self._record_failure(job, f"unknown job kind {job.kind!r}", result, final=True)
        return result

    def _suggest_batch(self, result: BatchResult) -> None:
        """Lock a batch of suggestion jobs, score the stories and delete the jobs, all in one
        transaction (no lease round trip); if the batch fails, its jobs run one by one with
        leases so that one broken story cannot hold back the others."""
        size = self.settings.worker_batch_size
        try:
            with session_scope(self.factory) as session:
                jobs = queue.lock_due(session, kinds=(SUGGEST,), limit=size)
                if jobs:
                    service.score_incidents(
                        session,
                        [j.payload["incident_id"] for j in jobs],
                        self.cache,
                        size,
                    )
                    queue.finish(session, [j.id for j in jobs])
            if jobs:
                result.claimed += len(jobs)
                result.done += len(jobs)
                return
        except Exception:
            log.warning("a suggestion batch failed; running its jobs one by one")
        # Also the way back for jobs whose lease ran out (their worker died mid-job).
        with session_scope(self.factory) as session:
            leased = queue.claim(
                session,
                self.name,
                kinds=(SUGGEST,),
                limit=size,
                lease_seconds=self.settings.job_lease_seconds,
            )
        result.claimed += len(leased)
        for job in leased:
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
            with session_scope(self.factory) as session:
                ids = service.stale_redaction_ids(session, marker, batch_size)
                if ids:
                    service.redact_stories(session, ids, suggester, marker)
                    enqueue_suggestions(session, service.uncoded(session, ids))
            if not ids:
                return done
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
        kinds: tuple[str, ...] = (SUGGEST, TRAIN, REDACT),
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
        try:
            if self.queue_redaction() is not None:
                log.info(
                    "stories not yet redacted with %s: re-redaction queued", self.required_redaction
                )
        except Exception:
            log.exception("could not check the redaction of stored stories")
        while not self._stop.is_set():
            try:
                batch = self.run_once()
            except Exception:  # the database may be away for a moment; keep the worker alive
                log.exception("worker round failed")
                batch = BatchResult()
            if batch.claimed == 0:
                self._stop.wait(self.settings.worker_poll_seconds)
        log.info("worker %s stopped", self.name)

    def stop(self) -> None:
        self._stop.set()

    def start_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.run_forever, name="cit-worker", daemon=True)
        thread.start()
        return thread
