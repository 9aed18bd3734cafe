"""CIT coding suggestions: a codebook and story text in, suggested codes with evidence out.

A library: it never imports the web app, FastAPI or a database. Typical use::

    codebook = load_codebook_file("codebooks/cit-service-encounters.yaml")
    suggester = Suggester(codebook)                  # rules only
    for suggestions in suggester.suggest_many(stories):
        ...
    train_suggester(stories, codebook, Path("var/models/x"))   # once enough are confirmed
    suggester = Suggester(codebook, model_dir=Path("var/models/x"))  # per code: rules, model
                                                                     # or combined, by k-fold CV
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .codebook import (
    DEFAULT_THRESHOLD,
    Codebook,
    CodebookError,
    CodebookProblem,
    CodeSpec,
    Indicators,
    codebook_to_dict,
    codebook_to_yaml,
    load_codebook_file,
    parse_codebook,
)
from .labels import EXCLUDE, VALENCES, LabelledStory
from .metrics import CodeMetrics, cohen_kappa, macro_summary
from .redact import RedactedSpan, Redaction, luhn_valid, redact, redact_many
from .text import ComposedStory, compose_story

# Names from the modules that import spaCy, thinc or numpy are read from them when first asked
# for (PEP 562), so that the light ones (codebooks, labels, metrics, the pattern redaction, story
# text) load in ~0.05 s instead of ~0.7 s: the export's second process (app.exports.side) needs
# only those. spaCy's factories (`cit_codebook_matcher`, ...) are registered when `nlp.pipeline`
# is imported, which every user of a pipeline (`build_pipeline`, `Suggester`, `train_suggester`)
# does before it builds or loads one.
_LAZY = {
    "cross_validate": "evaluate",
    "format_metrics_table": "evaluate",
    "format_table": "evaluate",
    "LEMMATIZER_FACTORY": "pipeline",
    "MATCHER_FACTORY": "pipeline",
    "CodebookMatcher": "pipeline",
    "RuleHit": "pipeline",
    "build_pipeline": "pipeline",
    "evidence_count": "pipeline",
    "rule_score": "pipeline",
    "MIN_SUPPORT": "selection",
    "CodeSelection": "selection",
    "SelectionReport": "selection",
    "regressions": "selection",
    "MODEL_META_FILE": "suggest",
    "CodeSuggestion": "suggest",
    "Evidence": "suggest",
    "ExclusionSuggestion": "suggest",
    "ScoredStory": "suggest",
    "Suggester": "suggest",
    "MIN_CONFIRMED_FOR_MODEL": "train",
    "TrainResult": "train",
    "evaluate_rules": "train",
    "evaluate_suggester": "train",
    "fit_textcat": "train",
    "train_suggester": "train",
}

if TYPE_CHECKING:
    from .evaluate import cross_validate, format_metrics_table, format_table
    from .pipeline import (
        LEMMATIZER_FACTORY,
        MATCHER_FACTORY,
        CodebookMatcher,
        RuleHit,
        build_pipeline,
        evidence_count,
        rule_score,
    )
    from .selection import MIN_SUPPORT, CodeSelection, SelectionReport, regressions
    from .suggest import (
        MODEL_META_FILE,
        CodeSuggestion,
        Evidence,
        ExclusionSuggestion,
        ScoredStory,
        Suggester,
    )
    from .train import (
        MIN_CONFIRMED_FOR_MODEL,
        TrainResult,
        evaluate_rules,
        evaluate_suggester,
        fit_textcat,
        train_suggester,
    )

__all__ = [
    "DEFAULT_THRESHOLD",
    "EXCLUDE",
    "LEMMATIZER_FACTORY",
    "MATCHER_FACTORY",
    "MIN_CONFIRMED_FOR_MODEL",
    "MIN_SUPPORT",
    "MODEL_META_FILE",
    "VALENCES",
    "CodeMetrics",
    "CodeSelection",
    "CodeSpec",
    "CodeSuggestion",
    "Codebook",
    "CodebookError",
    "CodebookMatcher",
    "CodebookProblem",
    "ComposedStory",
    "Evidence",
    "ExclusionSuggestion",
    "Indicators",
    "LabelledStory",
    "RedactedSpan",
    "Redaction",
    "RuleHit",
    "ScoredStory",
    "SelectionReport",
    "Suggester",
    "TrainResult",
    "build_pipeline",
    "codebook_to_dict",
    "codebook_to_yaml",
    "cohen_kappa",
    "compose_story",
    "cross_validate",
    "evaluate_rules",
    "evaluate_suggester",
    "evidence_count",
    "fit_textcat",
    "format_metrics_table",
    "format_table",
    "load_codebook_file",
    "luhn_valid",
    "macro_summary",
    "parse_codebook",
    "redact",
    "redact_many",
    "regressions",
    "rule_score",
    "train_suggester",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # read once: later reads find it without this hook
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
