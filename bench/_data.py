"""Loaders for the real-text data sets in ../shared/datasets, for benchmarks and evaluation only."""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DATASETS",
    "EVAL_STORIES",
    "AirlineTweet",
    "EvalSetError",
    "airline_complaint_examples",
    "airline_tweets",
    "banking77",
    "cfpb_narratives",
    "eval_stories",
    "eval_texts",
    "load_stories",
]

REPO = Path(__file__).resolve().parent.parent
DATASETS = Path(os.environ.get("CIT_DATASETS", REPO.parent / "shared" / "datasets"))
"""`../shared/datasets` relative to the repository; CIT_DATASETS overrides it."""
EVAL_STORIES = REPO / "bench" / "data" / "eval_stories.jsonl"
"""The evaluation set: pointers into DATASETS and SHA-1s, no text (see bench/eval_sample.py)."""


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


class EvalSetError(RuntimeError):
    """The evaluation set cannot be read back as it was drawn (missing row, changed text)."""


def eval_stories() -> list[dict[str, str]]:
    """The records of `bench/data/eval_stories.jsonl`, in the set's (shuffled) order."""
    return [
        json.loads(line)
        for line in EVAL_STORIES.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]


def eval_texts() -> dict[str, str]:
    """`{story id: text}` for the evaluation set, read from DATASETS, in the set's order.

    Each text is checked against the SHA-1 recorded when the set was drawn (UTF-8 bytes of the
    exact cell); a missing file, a missing key or a changed text raises EvalSetError naming the
    story, so an evaluation never runs on other texts than the ones that were coded.
    """
    records = eval_stories()
    wanted: dict[tuple[str, str, str], set[str]] = {}
    for record in records:
        column = (record["file"], record["key_column"], record["text_column"])
        wanted.setdefault(column, set()).add(record["key"])
    found: dict[tuple[str, str, str, str], str] = {}
    for (relative, key_column, text_column), keys in wanted.items():
        try:
            rows = _rows(relative)
            for index, row in enumerate(rows):
                key = str(index) if key_column == "row" else row[key_column]
                if key in keys:
                    found.setdefault((relative, key_column, text_column, key), row[text_column])
        except (FileNotFoundError, KeyError) as error:
            raise EvalSetError(f"cannot read {relative} for the evaluation set: {error}") from error
    texts: dict[str, str] = {}
    for record in records:
        key = (record["file"], record["key_column"], record["text_column"], record["key"])
        if key not in found:
            raise EvalSetError(
                f"eval story {record['id']}: no row with {record['key_column']} = "
                f"{record['key']!r} in {DATASETS / record['file']}"
            )
        text = found[key]
        digest = hashlib.sha1(text.encode("utf-8")).hexdigest()
        if digest != record["sha1"]:
            raise EvalSetError(
                f"eval story {record['id']}: the text of {record['key_column']} = "
                f"{record['key']!r} in {DATASETS / record['file']} has SHA-1 {digest}, the set "
                f"expects {record['sha1']}: the data set file is not the one the set was drawn "
                "from; restore it (or re-draw and re-code the set)"
            )
        texts[record["id"]] = text
    return texts
