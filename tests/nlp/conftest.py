"""Fixtures for the nlp tests: the default and a small codebook, suggesters, synthetic stories."""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nlp import Codebook, Suggester, load_codebook_file, parse_codebook

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CODEBOOK = REPO / "codebooks" / "cit-service-encounters.yaml"

SMALL: dict[str, Any] = {
    "key": "small",
    "name": "Small test codebook",
    "description": "",
    "language": "en",
    "codes": [
        {
            "key": "complaint",
            "label": "Complaint",
            "examples": [
                "The flight was cancelled and nobody helped us.",
                "I was charged twice and still have no refund.",
            ],
            "indicators": {
                "phrases": ["refund", "charged twice", "not acceptable"],
                "lemma_phrases": ["lose bag"],
                "patterns": [[{"LEMMA": "cancel"}], [{"LOWER": "never"}, {"LEMMA": "arrive"}]],
            },
        },
        {
            "key": "extra_mile",
            "label": "Extra mile",
            "threshold": 0.7,
            "examples": [
                "The agent went above and beyond to find us seats.",
                "She drove my phone to the hotel after her shift, amazing service.",
            ],
            "indicators": {"phrases": ["above and beyond", "amazing service", "didn't have to"]},
        },
        {
            "key": "old_code",
            "label": "Retired code",
            "retired": True,
            "indicators": {"phrases": ["refund"]},
        },
    ],
}


@pytest.fixture(scope="session")
def default_codebook() -> Codebook:
    return load_codebook_file(DEFAULT_CODEBOOK)


@pytest.fixture(scope="session")
def default_suggester(default_codebook: Codebook) -> Suggester:
    return Suggester(default_codebook)


@pytest.fixture
def small_data() -> dict[str, Any]:
    return copy.deepcopy(SMALL)


@pytest.fixture(scope="session")
def small_codebook() -> Codebook:
    return parse_codebook(copy.deepcopy(SMALL))


@pytest.fixture(scope="session")
def small_suggester(small_codebook: Codebook) -> Suggester:
    return Suggester(small_codebook)


COMPLAINT_TEMPLATES = [
    "the {thing} was {bad} and the staff would not help",
    "I waited {n} hours because the {thing} was {bad}",
    "they {failed} my {thing} and nobody answered the phone",
]
PRAISE_TEMPLATES = [
    "the {person} was wonderful and brought us {gift} without asking",
    "a kind {person} surprised my family with {gift}",
    "our {person} stayed late and gave us {gift}, lovely people",
]
FILL: dict[str, list[str]] = {
    "thing": ["flight", "luggage", "booking", "payment", "seat", "transfer"],
    "bad": ["cancelled", "delayed", "broken", "missing", "wrong", "lost"],
    "failed": ["cancelled", "lost", "delayed", "damaged"],
    "n": ["two", "three", "five", "six"],
    "person": ["waiter", "pilot", "steward", "clerk", "nurse", "driver"],
    "gift": ["cake", "blankets", "flowers", "a free dessert", "chocolates", "a card"],
}

Stories = list[tuple[str, frozenset[str]]]
Synthetic = Callable[[int, int], Stories]


def make_synthetic(n: int, seed: int) -> Stories:
    """`n` confirmed stories, complaint and extra_mile in turn, from templates (seeded)."""
    rng = random.Random(seed)
    stories = []
    for index in range(n):
        complaint = index % 2 == 0
        template = rng.choice(COMPLAINT_TEMPLATES if complaint else PRAISE_TEMPLATES)
        text = template.format(**{key: rng.choice(values) for key, values in FILL.items()})
        stories.append((text, frozenset({"complaint" if complaint else "extra_mile"})))
    return stories


@pytest.fixture(scope="session")
def synthetic() -> Synthetic:
    return make_synthetic
