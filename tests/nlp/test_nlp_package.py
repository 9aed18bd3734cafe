"""The package's names: every one in `__all__` is there, the spaCy modules load only when one
of their names is read (the pattern redaction and codebooks run without spaCy), and `redact`
is the function however the `nlp.redact` module was imported first."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import nlp

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("spacy", "thinc", "numpy")


def _fresh(code: str) -> dict[str, object]:
    """What `code` prints (JSON) in a new interpreter: nothing of this one's imports."""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def test_every_public_name_is_its_modules_object() -> None:
    for name in nlp.__all__:
        value = getattr(nlp, name)
        source = nlp._LAZY.get(name)
        if source is not None:
            assert value is getattr(importlib.import_module(f"nlp.{source}"), name)
    assert set(nlp.__all__) <= set(dir(nlp))


def test_spacy_loads_only_with_a_name_of_its_modules() -> None:
    seen = _fresh(
        "import json, sys\n"
        "from nlp import Codebook, redact, load_codebook_file\n"
        f"light = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "redacted = redact('mail me at a@example.com').text\n"
        f"after_redact = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "from nlp import Suggester\n"
        "from spacy.language import Language\n"
        "matcher = Language.has_factory('cit_codebook_matcher_v1')\n"
        "print(json.dumps({'light': light, 'after_redact': after_redact, "
        "'redacted': redacted, 'matcher': matcher}))"
    )
    assert seen == {
        "light": [],
        "after_redact": [],
        "redacted": "mail me at [EMAIL]",
        "matcher": True,  # the pipeline's factories are registered with its first name read
    }


def test_redact_is_the_function_when_its_module_was_imported_first() -> None:
    seen = _fresh(
        "import json\n"
        "import nlp.redact\n"
        "from nlp.redact import PLACEHOLDERS\n"
        "import nlp\n"
        "from nlp import redact\n"
        "print(json.dumps({'function': callable(redact) and redact is nlp.redact, "
        "'name': redact.__name__}))"
    )
    assert seen == {"function": True, "name": "redact"}
