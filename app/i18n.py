"""Respondent-facing text in each supported language; templates never hard-code words."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import yaml

LOCALES_DIR = Path(__file__).parent / "locales"
DEFAULT_LANGUAGE = "en"
SUPPORTED_LANGUAGES = ("en", "de")

Translator = Callable[..., str]


@cache
def catalog(language: str) -> dict[str, str]:
    data: dict[str, Any] = yaml.safe_load((LOCALES_DIR / f"{language}.yaml").read_text("utf-8"))
    return _flatten(data)


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = str(value)
    return flat


def translator(language: str) -> Translator:
    """`t("form.submit")`; `t("errors.too_long", max=10000)` fills {max}. Falls back to English."""
    own = catalog(language if language in SUPPORTED_LANGUAGES else DEFAULT_LANGUAGE)
    fallback = catalog(DEFAULT_LANGUAGE)

    def t(key: str, **params: Any) -> str:
        text = own.get(key) or fallback.get(key) or key
        return text.format(**params) if params else text

    return t
