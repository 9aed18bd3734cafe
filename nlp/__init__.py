"""CIT coding suggestions: a codebook and story text in, suggested codes with evidence out.

A library: it never imports the web app, FastAPI or a database. Typical use::

    codebook = load_codebook_file("codebooks/cit-service-encounters.yaml")
    suggester = Suggester(codebook)                  # rules only
    for suggestions in suggester.suggest_many(stories):
        ...
    train_textcat(confirmed, codebook, Path("var/models/x"))   # once enough stories are confirmed
    suggester = Suggester(codebook, model_dir=Path("var/models/x"))
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
from .evaluate import EvaluationReport, cross_validate, format_table
from .metrics import CodeMetrics, cohen_kappa
from .pipeline import (
    LEMMATIZER_FACTORY,
    MATCHER_FACTORY,
    CodebookMatcher,
    RuleHit,
    build_pipeline,
    rule_score,
)
from .redact import RedactedSpan, Redaction, luhn_valid, redact, redact_many
from .suggest import MODEL_META_FILE, CodeSuggestion, Evidence, Suggester
from .text import ComposedStory, compose_story
from .train import (
    MIN_CONFIRMED_FOR_MODEL,
    HeldOutMetrics,
    TrainResult,
    fit_textcat,
    train_textcat,
)

__all__ = [
    "DEFAULT_THRESHOLD",
    "LEMMATIZER_FACTORY",
    "MATCHER_FACTORY",
    "MIN_CONFIRMED_FOR_MODEL",
    "MODEL_META_FILE",
    "CodeMetrics",
    "CodeSpec",
    "CodeSuggestion",
    "Codebook",
    "CodebookError",
    "CodebookMatcher",
    "CodebookProblem",
    "ComposedStory",
    "EvaluationReport",
    "Evidence",
    "HeldOutMetrics",
    "Indicators",
    "RedactedSpan",
    "Redaction",
    "RuleHit",
    "Suggester",
    "TrainResult",
    "build_pipeline",
    "codebook_to_dict",
    "codebook_to_yaml",
    "cohen_kappa",
    "compose_story",
    "cross_validate",
    "fit_textcat",
    "format_table",
    "load_codebook_file",
    "luhn_valid",
    "parse_codebook",
    "redact",
    "redact_many",
    "rule_score",
    "train_textcat",
]
