"""Draw the evaluation set: 630 real stories for two coders to code independently.

`python -m bench.eval_sample [--check] [--coders-file PATH] [--validate FILE]`

Writes `bench/data/eval_stories.jsonl`: one object per story, pointers into the data sets in
`../shared/datasets` (``CIT_DATASETS`` overrides it) and the SHA-1 of each text, never the text
itself (the data sets are not copied into the project). `bench._data.eval_texts()` reads the
texts back and checks every SHA-1. `--coders-file PATH` also writes `{"id", "source", "text"}`
per line, in the same order, for the coders; keep that file outside the repository. `--check`
draws again and fails if the committed file differs (the draw is reproducible). `--validate FILE`
checks a coder's answers against `bench/data/CODING_GUIDE.md` (fields, values, every id once).

Rules of the draw (seed ``SEED``; each stratum draws with its own generator seeded by
``f"{SEED}:{stratum}"``, so changing one quota leaves the other strata's picks alone):

- Texts are the exact cell values as the csv module reads them (UTF-8, ``newline=""``); the
  SHA-1 is over their UTF-8 bytes. Exact duplicate texts are dropped before drawing: the first
  occurrence in file order is kept; an airline tweet whose copies carry different labels is dropped
  altogether (its stratum is undefined). No text appears twice in the set.
- Airline tweets, 220 (`airline-tweets/Tweets.csv`, key ``tweet_id``), strata from the data set's
  own ``airline_sentiment`` and ``negativereason``:
  negative with a reason other than "Can't Tell": 70 over the nine reasons, 4 each and the rest in
  proportion to their size (complaint candidates); negative "Can't Tell": 8;
  positive mentioning staff (``STAFF_WORDS``: crew, agent, attendant, pilot, gate, customer
  service, he/she, ...): 80 (extra_mile candidates); other positive: 12;
  neutral with a request word (``REQUEST_WORDS``: change, rebook, seat, upgrade, can I, could you,
  please, help, ...): 40 (special_request candidates); other neutral: 10.
  The word lists pick candidates for a stratum only; they are not the codebook's indicators, but
  some words overlap, so a rule suggester may find the keyword strata easier than a random tweet.
- BANKING77 queries, 205, from the test split (`banking77/test.csv`, key ``row``: the 0-based
  data-row index, header excluded), strata by intent: the six intents the data sets README lists
  near owner_error, 12 each (72); the five near complaint, 8 each (40); the six near
  special_request, 8 each (48); and 45 of the other 60 intents chosen at random, one query each.
  The test split is used so that nothing trained on the train split is evaluated on its own data.
- CFPB narratives, 205 (`cfpb-complaints/complaints_sample.csv`, key ``Complaint ID``): rows with
  a non-empty "Consumer complaint narrative" of at most 450 words (whitespace tokens; a narrative
  whose spaces were lost in the published file counts one word per 7 characters). Four length
  bands (1-60, 61-150, 151-300, 301-450 words) get an equal share, 52/51/51/51, so short and long
  letters are both well represented; within a band the share is split over the ``Product`` values
  in proportion to their size (largest remainder).
- The 630 stories are then shuffled together (seed ``f"{SEED}:order"``) so that sources mix.

Every line of the output also carries ``stratum`` (the data set label the story was drawn under),
for analysis only: the set is not a proportional sample, so a figure over it describes the set,
not the data sets. The coders' file leaves the stratum out so that labels cannot steer coding.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from bench._data import EVAL_STORIES, REPO, _rows, eval_stories, eval_texts

SEED = 20261201

AIRLINE_FILE = "airline-tweets/Tweets.csv"
BANKING_FILE = "banking77/test.csv"
CFPB_FILE = "cfpb-complaints/complaints_sample.csv"
CFPB_TEXT = "Consumer complaint narrative"

AIRLINE_NEGATIVE_WITH_REASON = 70
AIRLINE_NEGATIVE_MIN_PER_REASON = 4
AIRLINE_QUOTAS = {
    "negative:Can't Tell": 8,
    "positive:staff": 80,
    "positive:other": 12,
    "neutral:request": 40,
    "neutral:other": 10,
}
STAFF_WORDS = re.compile(
    r"\b(crews?|staff|agents?|attendants?|FAs?|pilots?|captain|employees?|team|gate|reps?"
    r"|representatives?|desk|counter|supervisor|manager|stewardess(?:es)?|steward|she|he|her"
    r"|him|his|customer service)\b",
    re.IGNORECASE,
)
REQUEST_WORDS = re.compile(
    r"\b(change|changed|changing|rebook|re-book|switch|move|upgrade|seats?|standby|stand-by"
    r"|earlier|later|add|bring|pets?|dog|cat|wheelchair|infant|baby|stroller|refund|cancel"
    r"|can i|could i|can you|could you|can we|is it possible|would like|i'd like|please|pls|plz"
    r"|help|need|want)\b",
    re.IGNORECASE,
)

BANKING_INTENTS = {
    "owner_error": (
        [
            "passcode_forgotten",
            "lost_or_stolen_card",
            "lost_or_stolen_phone",
            "pin_blocked",
            "cancel_transfer",
            "card_swallowed",
        ],
        12,
    ),
    "complaint": (
        [
            "extra_charge_on_statement",
            "transaction_charged_twice",
            "wrong_amount_of_cash_received",
            "card_payment_wrong_exchange_rate",
            "Refund_not_showing_up",
        ],
        8,
    ),
    "special_request": (
        [
            "request_refund",
            "order_physical_card",
            "getting_spare_card",
            "change_pin",
            "terminate_account",
            "edit_personal_details",
        ],
        8,
    ),
}
BANKING_OTHER_INTENTS = 45

CFPB_TOTAL = 205
CFPB_MAX_WORDS = 450
CFPB_BANDS = [(1, 60), (61, 150), (151, 300), (301, 450)]


@dataclass(frozen=True)
class Candidate:
    source: str
    file: str
    key_column: str
    key: str
    text_column: str
    text: str
    stratum: str

    @property
    def id(self) -> str:
        if self.source == "airline":
            return f"air-{self.key}"
        if self.source == "banking77":
            split = Path(self.file).stem
            return f"b77-{split}-{self.key}"
        return f"cfpb-{self.key}"

    def record(self) -> dict[str, str]:
        return {
            "id": self.id,
            "source": self.source,
            "file": self.file,
            "key_column": self.key_column,
            "key": self.key,
            "text_column": self.text_column,
            "sha1": sha1(self.text),
            "stratum": self.stratum,
        }


def sha1(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def allocate(total: int, sizes: dict[str, int], minimum: int = 0) -> dict[str, int]:
    """Split `total` over strata: `minimum` each, the rest in proportion to `sizes`.

    Largest remainder rounding.
    A stratum never gets more than its size; ties in the remainder go to the stratum name that
    sorts first, so the result does not depend on dict order.
    """
    names = sorted(sizes)
    quota = {name: min(minimum, sizes[name]) for name in names}
    left = total - sum(quota.values())
    if left < 0 or total > sum(sizes.values()):
        raise ValueError(f"cannot draw {total} from strata of sizes {sizes} with {minimum} each")
    while left > 0:
        open_ = [n for n in names if quota[n] < sizes[n]]
        weight = sum(sizes[n] for n in open_)
        share = {n: left * sizes[n] / weight for n in open_}
        floors = {n: min(int(share[n]), sizes[n] - quota[n]) for n in open_}
        given = sum(floors.values())
        for n in open_:
            quota[n] += floors[n]
        left -= given
        by_remainder = sorted(open_, key=lambda n: (-(share[n] - int(share[n])), n))
        for n in by_remainder:
            if left == 0:
                break
            if quota[n] < sizes[n]:
                quota[n] += 1
                left -= 1
    return quota


def draw(pools: dict[str, list[Candidate]], quotas: dict[str, int]) -> list[Candidate]:
    """`quotas[s]` candidates from each stratum `s`, each stratum with its own seeded generator."""
    picked: list[Candidate] = []
    for stratum in sorted(quotas):
        pool = sorted(pools[stratum], key=lambda c: (c.file, _sort_key(c.key)))
        if quotas[stratum] > len(pool):
            raise ValueError(f"stratum {stratum!r} has {len(pool)}, needs {quotas[stratum]}")
        rng = random.Random(f"{SEED}:{stratum}")
        picked.extend(rng.sample(pool, quotas[stratum]))
    return picked


def _sort_key(key: str) -> tuple[int, str]:
    return (int(key), "") if key.isdigit() else (0, key)


def _first_unique(items: Iterable[Candidate], *, conflicting_labels_drop: bool) -> list[Candidate]:
    """One candidate per exact text: the first in file order; optionally drop label conflicts."""
    by_text: dict[str, list[Candidate]] = defaultdict(list)
    for item in items:
        by_text[item.text].append(item)
    kept = []
    for copies in by_text.values():
        if conflicting_labels_drop and len({c.stratum for c in copies}) > 1:
            continue
        kept.append(copies[0])
    return kept


def airline_pool() -> dict[str, list[Candidate]]:
    items = []
    for row in _rows(AIRLINE_FILE):
        sentiment, reason, text = row["airline_sentiment"], row["negativereason"], row["text"]
        if sentiment == "negative":
            stratum = f"negative:{reason}"
        elif sentiment == "positive":
            stratum = "positive:staff" if STAFF_WORDS.search(text) else "positive:other"
        else:
            stratum = "neutral:request" if REQUEST_WORDS.search(text) else "neutral:other"
        items.append(
            Candidate("airline", AIRLINE_FILE, "tweet_id", row["tweet_id"], "text", text, stratum)
        )
    pools: dict[str, list[Candidate]] = defaultdict(list)
    for item in _first_unique(items, conflicting_labels_drop=True):
        pools[item.stratum].append(item)
    return pools


def airline_quotas(pools: dict[str, list[Candidate]]) -> dict[str, int]:
    reasons = {
        s: len(p) for s, p in pools.items() if s.startswith("negative:") and s not in AIRLINE_QUOTAS
    }
    quotas = allocate(AIRLINE_NEGATIVE_WITH_REASON, reasons, AIRLINE_NEGATIVE_MIN_PER_REASON)
    return {**quotas, **AIRLINE_QUOTAS}


def banking_pool() -> dict[str, list[Candidate]]:
    near = {intent: group for group, (intents, _) in BANKING_INTENTS.items() for intent in intents}
    items = [
        Candidate(
            "banking77",
            BANKING_FILE,
            "row",
            str(index),
            "text",
            row["text"],
            f"{near.get(row['category'], 'other')}:{row['category']}",
        )
        for index, row in enumerate(_rows(BANKING_FILE))
    ]
    pools: dict[str, list[Candidate]] = defaultdict(list)
    for item in _first_unique(items, conflicting_labels_drop=True):
        pools[item.stratum].append(item)
    return pools


def banking_quotas(pools: dict[str, list[Candidate]]) -> dict[str, int]:
    quotas = {
        f"{group}:{intent}": per_intent
        for group, (intents, per_intent) in BANKING_INTENTS.items()
        for intent in intents
    }
    others = sorted(s for s in pools if s.startswith("other:"))
    chosen = random.Random(f"{SEED}:banking77-other-intents").sample(others, BANKING_OTHER_INTENTS)
    quotas.update(dict.fromkeys(chosen, 1))
    return quotas


def words(text: str) -> int:
    """Whitespace tokens, or one per 7 characters where the published text lost its spaces."""
    return max(len(text.split()), len(text) // 7)


def cfpb_band(n_words: int) -> str | None:
    for low, high in CFPB_BANDS:
        if low <= n_words <= high:
            return f"words {low:03d}-{high:03d}"
    return None


def cfpb_pool() -> dict[str, list[Candidate]]:
    items = []
    for row in _rows(CFPB_FILE):
        text = row[CFPB_TEXT]
        if not text.strip():
            continue
        band = cfpb_band(words(text))
        if band is None:
            continue
        items.append(
            Candidate(
                "cfpb",
                CFPB_FILE,
                "Complaint ID",
                row["Complaint ID"],
                CFPB_TEXT,
                text,
                f"{band}|{row['Product']}",
            )
        )
    pools: dict[str, list[Candidate]] = defaultdict(list)
    for item in _first_unique(items, conflicting_labels_drop=False):
        pools[item.stratum].append(item)
    return pools


def cfpb_quotas(pools: dict[str, list[Candidate]]) -> dict[str, int]:
    bands = [f"words {low:03d}-{high:03d}" for low, high in CFPB_BANDS]
    per_band = {
        band: CFPB_TOTAL // len(bands) + (i < CFPB_TOTAL % len(bands))
        for i, band in enumerate(bands)
    }
    quotas: dict[str, int] = {}
    for band in bands:
        sizes = {s: len(p) for s, p in pools.items() if s.startswith(f"{band}|")}
        quotas.update(allocate(per_band[band], sizes))
    return {s: q for s, q in quotas.items() if q}


def select() -> list[Candidate]:
    """The 630 stories, in their shuffled order."""
    picked: list[Candidate] = []
    for pool_of, quotas_of in (
        (airline_pool, airline_quotas),
        (banking_pool, banking_quotas),
        (cfpb_pool, cfpb_quotas),
    ):
        pools = pool_of()
        picked.extend(draw(pools, quotas_of(pools)))
    texts = Counter(c.text for c in picked)
    if (dupes := [t for t, n in texts.items() if n > 1]) or len({c.id for c in picked}) != len(
        picked
    ):
        raise ValueError(f"duplicate stories in the selection ({len(dupes)} repeated texts)")
    picked.sort(key=lambda c: c.id)
    random.Random(f"{SEED}:order").shuffle(picked)
    return picked


def render(stories: list[Candidate]) -> str:
    return "".join(json.dumps(c.record(), ensure_ascii=False) + "\n" for c in stories)


def summary(stories: list[Candidate]) -> str:
    lines = [f"{len(stories)} stories"]
    for source, n in sorted(Counter(c.source for c in stories).items()):
        lines.append(f"  {source}: {n}")
        strata = Counter(c.stratum for c in stories if c.source == source)
        lines.extend(f"    {stratum}: {k}" for stratum, k in sorted(strata.items()))
    return "\n".join(lines)


def write_coders_file(path: Path) -> int:
    """`{"id", "source", "text"}` per line in the set's order, texts read back and checked."""
    texts = eval_texts()
    sources = {record["id"]: record["source"] for record in eval_stories()}
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for story_id, text in texts.items():
            row = {"id": story_id, "source": sources[story_id], "text": text}
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    return len(texts)


CODES = ("complaint", "special_request", "extra_mile", "owner_error")
EXCLUSION_REASONS = (
    "not_an_incident",
    "no_interaction",
    "insufficient_detail",
    "unclear_valence",
    "several_episodes",
)
VALENCES = ("satisfying", "dissatisfying", "unclear")
CODING_FIELDS = {"id", "coder", "include", "exclusion_reason", "valence", "codes", "note"}


def validate_coding(path: Path) -> list[str]:
    """Problems of a coder's file against bench/data/CODING_GUIDE.md; empty when it is valid."""
    expected = {record["id"] for record in eval_stories()}
    problems: list[str] = []
    seen: set[str] = set()
    coders: set[str] = set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            problems.append(f"{where}: not JSON ({error.msg})")
            continue
        if not isinstance(row, dict):
            problems.append(f"{where}: not a JSON object")
            continue
        if missing := CODING_FIELDS - row.keys():
            problems.append(f"{where}: missing {', '.join(sorted(missing))}")
            continue
        if extra := row.keys() - CODING_FIELDS:
            problems.append(f"{where}: unknown field(s) {', '.join(sorted(extra))}")
        story, where = row["id"], f"line {number} ({row['id']})"
        if story not in expected:
            problems.append(f"{where}: not a story of the set")
        elif story in seen:
            problems.append(f"{where}: coded twice")
        seen.add(story)
        coders.add(str(row["coder"]))
        include, reason, codes, note = (
            row[k] for k in ("include", "exclusion_reason", "codes", "note")
        )
        if row["valence"] not in VALENCES:
            problems.append(f"{where}: valence must be one of {', '.join(VALENCES)}")
        if not isinstance(codes, list) or any(code not in CODES for code in codes):
            problems.append(f"{where}: codes must be a list of {', '.join(CODES)}")
            codes = []
        elif len(set(codes)) != len(codes):
            problems.append(f"{where}: a code is repeated")
        if note is not None and (not isinstance(note, str) or len(note) > 200):
            problems.append(f"{where}: note must be null or a string of at most 200 characters")
        if include is True:
            if reason is not None:
                problems.append(f"{where}: an included story has exclusion_reason null")
            if not codes and not (isinstance(note, str) and note.startswith("no code:")):
                problems.append(f"{where}: included with no code needs a note 'no code: ...'")
        elif include is False:
            if reason not in EXCLUSION_REASONS:
                problems.append(f"{where}: exclusion_reason must be one of the guide's list")
            if codes:
                problems.append(f"{where}: an excluded story has no codes")
        else:
            problems.append(f"{where}: include must be true or false")
    if missing_ids := expected - seen:
        problems.append(f"{len(missing_ids)} stories not coded, e.g. {sorted(missing_ids)[0]}")
    if len(coders) > 1:
        problems.append(f"more than one coder name in the file: {', '.join(sorted(coders))}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed set differs")
    parser.add_argument("--coders-file", type=Path, help="also write the texts for the coders")
    parser.add_argument(
        "--validate", type=Path, metavar="FILE", help="check a coder's file against the guide"
    )
    args = parser.parse_args(argv)
    if args.validate:
        problems = validate_coding(args.validate)
        for problem in problems:
            print(problem, file=sys.stderr)
        print(f"{args.validate}: {len(problems)} problem(s)")
        return 1 if problems else 0
    coders_file = args.coders_file.resolve() if args.coders_file else None
    if coders_file and coders_file.is_relative_to(REPO):
        print(f"{coders_file} is inside the repository: texts must stay out", file=sys.stderr)
        return 2
    stories = select()
    rendered = render(stories)
    if args.check:
        current = EVAL_STORIES.read_text(encoding="utf-8") if EVAL_STORIES.exists() else ""
        if current != rendered:
            print(f"{EVAL_STORIES} differs from a fresh draw", file=sys.stderr)
            return 1
        print(f"{EVAL_STORIES}: matches a fresh draw of {len(stories)} stories")
    else:
        EVAL_STORIES.parent.mkdir(parents=True, exist_ok=True)
        EVAL_STORIES.write_text(rendered, encoding="utf-8")
        print(summary(stories))
        print(f"wrote {EVAL_STORIES}")
    if coders_file:
        print(f"wrote {write_coders_file(coders_file)} stories to {coders_file}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
