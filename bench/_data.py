"""Loaders for the real-text data sets in ../shared/datasets, for benchmarks and evaluation only."""

from __future__ import annotations

import csv
import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DATASETS",
    "AirlineTweet",
    "airline_complaint_examples",
    "airline_tweets",
    "banking77",
    "cfpb_narratives",
    "load_stories",
]

REPO = Path(__file__).resolve().parent.parent
DATASETS = Path(os.environ.get("CIT_DATASETS", REPO.parent / "shared" / "datasets"))
"""`../shared/datasets` relative to the repository; CIT_DATASETS overrides it."""


def _rows(relative: str) -> Iterator[dict[str, str]]:
    path = DATASETS / relative
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: the benchmarks read ../shared/datasets")
    with path.open(encoding="utf-8", newline="") as handle:
        yield from csv.DictReader(handle)


@dataclass(frozen=True)
class AirlineTweet:
    text: str
    sentiment: str
    negative_reason: str

    @property
    def complaint(self) -> bool | None:
        """True: a negative reason other than "Can't Tell"; False: a positive tweet; else None."""
        if (
            self.sentiment == "negative"
            and self.negative_reason
            and self.negative_reason != "Can't Tell"
        ):
            return True
        if self.sentiment == "positive":
            return False
        return None


def airline_tweets() -> list[AirlineTweet]:
    """Twitter US Airline Sentiment, 14,640 tweets, in file order."""
    return [
        AirlineTweet(row["text"], row["airline_sentiment"], row["negativereason"])
        for row in _rows("airline-tweets/Tweets.csv")
    ]


def airline_complaint_examples() -> list[tuple[str, bool]]:
    """(tweet, is complaint) for the tweets whose labels say either way (unclear ones left out)."""
    return [(t.text, t.complaint) for t in airline_tweets() if t.complaint is not None]


def banking77(split: str = "train") -> list[tuple[str, str]]:
    """BANKING77 (text, intent) pairs; split "train" (10,003) or "test" (3,080)."""
    return [(row["text"], row["category"]) for row in _rows(f"banking77/{split}.csv")]


def cfpb_narratives() -> list[str]:
    """The non-empty consumer complaint narratives of the CFPB sample (1,532)."""
    return [
        narrative
        for row in _rows("cfpb-complaints/complaints_sample.csv")
        if (narrative := row["Consumer complaint narrative"].strip())
    ]


def load_stories(n: int) -> list[str]:
    """`n` real stories, tweets, banking queries and CFPB narratives in turn (each cycled if short).

    The mix is a third of each: short tweets, very short queries and long letters (median about
    140 words), so throughput figures are neither best nor worst case.
    """
    sources = [
        itertools.cycle([t.text for t in airline_tweets()]),
        itertools.cycle([text for text, _ in banking77("train")]),
        itertools.cycle(cfpb_narratives()),
    ]
    return [next(sources[i % len(sources)]) for i in range(n)]
