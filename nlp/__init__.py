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
from .evaluate import cross_validate, format_metrics_table, format_table
from .labels import EXCLUDE, VALENCES, LabelledStory
from .metrics import CodeMetrics, cohen_kappa, macro_summary
from .pipeline import (
    LEMMATIZER_FACTORY,
    MATCHER_FACTORY,
    CodebookMatcher,
    RuleHit,
    build_pipeline,
    evidence_count,
    rule_score,
)
from .redact import RedactedSpan, Redaction, luhn_valid, redact, redact_many
from .selection import MIN_SUPPORT, CodeSelection, SelectionReport, regressions
from .suggest import (
    MODEL_META_FILE,
    CodeSuggestion,
    Evidence,
    ExclusionSuggestion,
    ScoredStory,
    Suggester,
)
from .text import ComposedStory, compose_story
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
