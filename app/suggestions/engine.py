"""Loaded suggesters, one per (codebook version, model), kept for the life of the process."""

from __future__ import annotations

import gc
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from spacy.language import Language

import nlp
from nlp import Suggester
from nlp.pipeline import load_base

MAX_CACHED = 4
log = logging.getLogger(__name__)


class SuggesterCache:
    """Building a spaCy pipeline takes a while; workers reuse them across batches."""

    def __init__(self, base: str) -> None:
        self.base = base
        self._items: OrderedDict[tuple[int, int | None], Suggester] = OrderedDict()
        self._lock = threading.Lock()
        self._base: Language | None = None

    def get_base(self) -> Language:
        """The configured base pipeline alone (for redaction with its NER), loaded once."""
        with self._lock:
            if self._base is None:
                self._base = load_base(self.base)
            return self._base

    def get(
        self,
        version_id: int,
        codebook: nlp.Codebook | Callable[[], nlp.Codebook],
        model_id: int | None = None,
        model_dir: Path | None = None,
    ) -> Suggester:
        """The suggester of this version and model; `codebook` may be a function that parses
        it, called only when the suggester must be built (parsing cost a few percent of every
        worker round when done each time)."""
        key = (version_id, model_id)
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
                return found
        if callable(codebook):
            codebook = codebook()
        suggester = Suggester(codebook, model_dir=model_dir, base=self.base)
        for warning in suggester.warnings:
            log.warning("model %s: %s", model_id, warning)
        # The pipeline (vocabulary, tables, matchers) lives as long as the worker: moving it out
        # of the cyclic collector's reach keeps each collection from rescanning it (measured: a
        # tenth of the batch time went to collections that found nothing to free).
        gc.freeze()
        with self._lock:
            self._items[key] = suggester
            while len(self._items) > MAX_CACHED:
                self._items.popitem(last=False)
        return suggester
