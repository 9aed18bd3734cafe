"""Suggestion quality on the double-coded evaluation set: cold start and a learning curve.

    python -m bench.quality [--sizes 50 100 200 400] [--folds 5] [--json OUT] [--proxy]

Reads `bench/data/eval_stories.jsonl` (which real stories: file, key, SHA-1 of the text; the texts
are read from ../shared/datasets at run time and checked against the SHA-1), the adjudicated
codes `eval_final.jsonl`, and the two independent codings `eval_coding_a.jsonl` /
`eval_coding_b.jsonl` (their per-code kappa is the ceiling). Prints, per code, precision, recall,
F1 and Cohen's kappa with support and the 2x2 counts, overall and per source:

- cold start: the codebook's rules alone, on every story;
- learning curve: 5 outer folds; for each size n, n stories drawn from the other folds are the
  "confirmed" stories a team would have; a suggester is trained on them exactly as `cit nlp
  train` does (inner k-fold selection per code) and scores the held-out fold with each layer
  (rules, model, combined) and with the selected one. Predictions of the 5 folds are pooled.

`--proxy` replaces the evaluation set by data-set labels near our codes (README of the data
sets), drawn from stories *not* in the evaluation set: for development only, never a result.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import random
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench._data import DATASETS
from nlp import (
    CodeMetrics,
    LabelledStory,
    Suggester,
    load_codebook_file,
    macro_summary,
    train_suggester,
)
from nlp.metrics import binary_metrics

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench" / "data"
CODEBOOK = ROOT / "codebooks" / "cit-service-encounters.yaml"
SOURCES = ("airline", "cfpb", "banking77")
VALENCES = ("satisfying", "dissatisfying", "unclear")
LAYERS = ("rules", "model", "combined", "selected")


class EvalSetError(ValueError):
    """The evaluation set cannot be used as it is (missing file, wrong text, bad line)."""


@dataclass(frozen=True)
class Coding:
    include: bool
    exclusion_reason: str | None
    valence: str
    codes: frozenset[str]


@dataclass(frozen=True)
class EvalStory:
    id: str
    source: str
    text: str
    final: Coding
    coder_a: Coding | None = None
    coder_b: Coding | None = None

    def labelled(self, codes: Sequence[str]) -> LabelledStory:
        valence = self.final.valence if self.final.valence != "unclear" else None
        if not self.final.include:
            return LabelledStory.exclusion(self.text, codes, valence=valence, source=self.source)
        return LabelledStory.confirmed(
            self.text, self.final.codes, codes, valence=valence, source=self.source
        )


@dataclass
class EvalSet:
    stories: list[EvalStory]
    codes: tuple[str, ...]
    proxy: bool = False
    notes: list[str] = field(default_factory=list)
    proxy_labels: dict[str, dict[str, bool]] = field(default_factory=dict)
    """With --proxy: the codes a data-set label speaks to, per story (the others are unknown)."""


def sha1(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        raise EvalSetError(f"{path} not found")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EvalSetError(f"{path.name} line {number}: not JSON ({exc.msg})") from exc
        if not isinstance(row, dict) or "id" not in row:
            raise EvalSetError(f"{path.name} line {number}: an object with an id is expected")
        rows.append(row)
    return rows


def _coding(row: Mapping[str, Any], where: str, codes: Sequence[str]) -> Coding:
    include = row.get("include")
    if not isinstance(include, bool):
        raise EvalSetError(f"{where}: include must be true or false")
    valence = row.get("valence")
    if valence not in VALENCES:
        raise EvalSetError(f"{where}: valence must be one of {', '.join(VALENCES)}")
    given = row.get("codes") or []
    unknown = sorted(set(given) - set(codes))
    if unknown:
        raise EvalSetError(f"{where}: unknown codes {', '.join(unknown)}")
    if not include and given:
        raise EvalSetError(f"{where}: an excluded story has no codes")
    return Coding(include, row.get("exclusion_reason"), valence, frozenset(given))


def read_texts(rows: Sequence[Mapping[str, Any]], datasets: Path) -> dict[str, str]:
    """The text of each eval story, read from the data set file and checked against its SHA-1."""
    wanted: dict[tuple[str, str], dict[str, Mapping[str, Any]]] = defaultdict(dict)
    for row in rows:
        wanted[(row["file"], row["key_column"])][str(row["key"])] = row
    texts: dict[str, str] = {}
    for (relative, key_column), by_key in wanted.items():
        path = datasets / relative
        if not path.exists():
            raise EvalSetError(f"{path} not found (the texts are read from the data sets)")
        with path.open(encoding="utf-8", newline="") as handle:
            for index, record in enumerate(csv.DictReader(handle)):
                key = str(index) if key_column == "row" else record.get(key_column, "")
                found = by_key.get(key)
                if found is not None:
                    texts[found["id"]] = record[found["text_column"]]
    missing = [row["id"] for row in rows if row["id"] not in texts]
    if missing:
        raise EvalSetError(f"{len(missing)} stories not found in the data sets: {missing[:5]}")
    wrong = [row["id"] for row in rows if sha1(texts[row["id"]]) != row["sha1"]]
    if wrong:
        raise EvalSetError(f"{len(wrong)} texts differ from their SHA-1: {wrong[:5]}")
    return texts


def load_eval_set(
    data_dir: Path = DATA, datasets: Path = DATASETS, codes: Sequence[str] | None = None
) -> EvalSet:
    """The evaluation set: stories, adjudicated codes, and both coders' codes when present."""
    codes = tuple(codes or [c.key for c in load_codebook_file(CODEBOOK).active_codes])
    stories = _jsonl(data_dir / "eval_stories.jsonl")
    for row in stories:
        if row.get("source") not in SOURCES:
            raise EvalSetError(f"story {row['id']}: source must be one of {', '.join(SOURCES)}")
        for name in ("file", "key_column", "key", "text_column", "sha1"):
            if name not in row:
                raise EvalSetError(f"story {row['id']}: {name} is missing")
    finals = {
        r["id"]: _coding(r, f"eval_final {r['id']}", codes)
        for r in _jsonl(data_dir / "eval_final.jsonl")
    }
    coders: list[dict[str, Coding]] = []
    for name in ("eval_coding_a.jsonl", "eval_coding_b.jsonl"):
        path = data_dir / name
        coders.append(
            {r["id"]: _coding(r, f"{name} {r['id']}", codes) for r in _jsonl(path)}
            if path.exists()
            else {}
        )
    missing = [row["id"] for row in stories if row["id"] not in finals]
    if missing:
        raise EvalSetError(f"{len(missing)} stories have no adjudicated coding: {missing[:5]}")
    texts = read_texts(stories, datasets)
    return EvalSet(
        [
            EvalStory(
                row["id"],
                row["source"],
                texts[row["id"]],
                finals[row["id"]],
                coders[0].get(row["id"]),
                coders[1].get(row["id"]),
            )
            for row in stories
        ],
        codes,
    )


# Proxy labels, for development before (or beside) the evaluation set ---------------------------

BANKING_NEAR = {
    "owner_error": {
        "passcode_forgotten",
        "lost_or_stolen_card",
        "lost_or_stolen_phone",
        "pin_blocked",
        "cancel_transfer",
        "card_swallowed",
    },
    "complaint": {
        "extra_charge_on_statement",
        "transaction_charged_twice",
        "wrong_amount_of_cash_received",
        "card_payment_wrong_exchange_rate",
        "Refund_not_showing_up",
    },
    "special_request": {
        "request_refund",
        "order_physical_card",
        "getting_spare_card",
        "change_pin",
        "terminate_account",
        "edit_personal_details",
    },
}


def proxy_labels(
    per_source: int, seed: int, exclude_ids: set[str], datasets: Path = DATASETS
) -> list[tuple[str, str, str, dict[str, bool], str | None]]:
    """(id, source, text, labels, valence) with data-set labels near our codes, a few codes known
    per story (see the data sets' README), none of them in `exclude_ids`."""
    rng = random.Random(seed)
    out: list[tuple[str, str, str, dict[str, bool], str | None]] = []
    with (datasets / "airline-tweets" / "Tweets.csv").open(encoding="utf-8", newline="") as f:
        tweets = [r for r in csv.DictReader(f) if f"air-{r['tweet_id']}" not in exclude_ids]
    tweets = [r for r in tweets if r["airline_sentiment"] in ("positive", "negative")]
    for r in rng.sample(tweets, min(per_source, len(tweets))):
        negative = r["airline_sentiment"] == "negative"
        if negative and r["negativereason"] in ("", "Can't Tell"):
            continue
        labels = {"complaint": negative}
        if negative:
            labels["extra_mile"] = False
        out.append(
            (
                f"air-{r['tweet_id']}",
                "airline",
                r["text"],
                labels,
                "dissatisfying" if negative else "satisfying",
            )
        )
    rows = []
    for split in ("train", "test"):
        with (datasets / "banking77" / f"{split}.csv").open(encoding="utf-8", newline="") as f:
            rows += [
                (f"b77-{split}-{i}", r)
                for i, r in enumerate(csv.DictReader(f))
                if f"b77-{split}-{i}" not in exclude_ids
            ]
    for story_id, r in rng.sample(rows, min(per_source, len(rows))):
        labels = {"extra_mile": False}
        for code, intents in BANKING_NEAR.items():
            if r["category"] in intents:
                labels[code] = True
                labels.update({other: False for other in BANKING_NEAR if other != code})
        out.append((story_id, "banking77", r["text"], labels, None))
    with (datasets / "cfpb-complaints" / "complaints_sample.csv").open(
        encoding="utf-8", newline=""
    ) as f:
        narratives = [
            r
            for r in csv.DictReader(f)
            if r["Consumer complaint narrative"].strip()
            and f"cfpb-{r['Complaint ID']}" not in exclude_ids
        ]
    for r in rng.sample(narratives, min(per_source, len(narratives))):
        out.append(
            (
                f"cfpb-{r['Complaint ID']}",
                "cfpb",
                r["Consumer complaint narrative"],
                {"complaint": True, "extra_mile": False},
                "dissatisfying",
            )
        )
    return out


def proxy_eval_set(per_source: int, seed: int, data_dir: Path = DATA) -> EvalSet:
    codes = tuple(c.key for c in load_codebook_file(CODEBOOK).active_codes)
    exclude: set[str] = set()
    ids_file = data_dir / "eval_stories.jsonl"
    if ids_file.exists():
        exclude = {row["id"] for row in _jsonl(ids_file)}
    stories = []
    known: dict[str, dict[str, bool]] = {}
    for story_id, source, text, labels, valence in proxy_labels(per_source, seed, exclude):
        known[story_id] = labels
        codes_known = frozenset(code for code, present in labels.items() if present)
        stories.append(
            EvalStory(
                story_id,
                source,
                text,
                Coding(True, None, valence or "unclear", codes_known),
            )
        )
    eval_set = EvalSet(stories, codes, proxy=True, proxy_labels=known)
    eval_set.notes.append(
        f"PROXY labels from the data sets ({len(exclude)} evaluation ids left out): a development "
        "aid, not a result; only the codes a data-set label speaks to are known per story"
    )
    return eval_set


def labelled(eval_set: EvalSet, story: EvalStory) -> LabelledStory:
    if eval_set.proxy:
        known = eval_set.proxy_labels[story.id]
        valence = story.final.valence if story.final.valence != "unclear" else None
        return LabelledStory(story.text, dict(known), valence=valence, source=story.source)
    return story.labelled(eval_set.codes)


# Measuring --------------------------------------------------------------------------------------


def metrics_for(
    stories: Sequence[LabelledStory], predicted: Sequence[frozenset[str]], codes: Sequence[str]
) -> list[CodeMetrics]:
    out = []
    for code in codes:
        rows = [i for i, s in enumerate(stories) if s.label(code) is not None]
        out.append(
            binary_metrics(
                code,
                [bool(stories[i].label(code)) for i in rows],
                [code in predicted[i] for i in rows],
            )
        )
    return out


def rule_predictions(codebook: Any, stories: Sequence[LabelledStory]) -> list[frozenset[str]]:
    suggester = Suggester(codebook)
    return [
        frozenset(s.code for s in suggestions if s.suggested)
        for suggestions in suggester.suggest_many([s.text for s in stories])
    ]


def human_ceiling(eval_set: EvalSet) -> list[CodeMetrics] | None:
    pairs = [(s.coder_a, s.coder_b) for s in eval_set.stories if s.coder_a and s.coder_b]
    if not pairs:
        return None
    return [
        binary_metrics(
            code, [code in b.codes for _, b in pairs], [code in a.codes for a, _ in pairs]
        )
        for code in eval_set.codes
    ]


def learning_curve(
    eval_set: EvalSet,
    codebook: Any,
    sizes: Sequence[int],
    folds: int,
    seed: int,
    epochs: int,
    log: Any = sys.stderr,
    base: str = "blank:en",
) -> tuple[dict[int, dict[str, list[frozenset[str] | None]]], dict[int, list[dict[str, str]]]]:
    """Per size, per layer, the pooled held-out predictions (None: story never held out), and
    per size the layer each outer fold's suggester selected per code."""
    stories = [labelled(eval_set, s) for s in eval_set.stories]
    order = list(range(len(stories)))
    random.Random(seed).shuffle(order)
    outer = [order[f::folds] for f in range(folds)]
    results: dict[int, dict[str, list[frozenset[str] | None]]] = {}
    chosen: dict[int, list[dict[str, str]]] = {}
    for size in sizes:
        chosen[size] = []
        predicted: dict[str, list[frozenset[str] | None]] = {
            layer: [None] * len(stories) for layer in LAYERS
        }
        started = time.perf_counter()
        for f, held in enumerate(outer):
            pool = [i for g, fold in enumerate(outer) if g != f for i in fold]
            if size > len(pool):
                raise EvalSetError(f"size {size} is larger than the {len(pool)} training stories")
            train = random.Random(seed * 1000 + size * 10 + f).sample(pool, size)
            with tempfile.TemporaryDirectory() as tmp:
                trained = train_suggester(
                    [stories[i] for i in train],
                    codebook,
                    Path(tmp) / "m",
                    seed=seed,
                    epochs=epochs,
                    base=base,
                )
                chosen[size].append(trained.evaluation.layers())
                suggester = Suggester(codebook, model_dir=Path(tmp) / "m", base=base)
                texts = [stories[i].text for i in held]
                valences = [stories[i].valence for i in held]
                for layer in LAYERS:
                    if layer != "selected":
                        suggester.force_layer(layer)  # type: ignore[arg-type]
                    else:
                        suggester.load_model(Path(tmp) / "m")
                    for i, suggestions in zip(
                        held, suggester.suggest_many(texts, valences=valences), strict=True
                    ):
                        predicted[layer][i] = frozenset(s.code for s in suggestions if s.suggested)
        print(
            f"  trained {folds} suggesters on {size} stories "
            f"in {time.perf_counter() - started:.0f} s",
            file=log,
        )
        results[size] = predicted
    return results, chosen


# Printing ---------------------------------------------------------------------------------------


def _fmt(value: float | None) -> str:
    return "   -  " if value is None else f"{value:6.3f}"


def table(title: str, columns: Mapping[str, Sequence[CodeMetrics]], codes: Sequence[str]) -> str:
    """Codes down, layers across: P, R, F1, kappa; support and counts per layer."""
    lines = [title]
    header = f"  {'code':<16}{'n':>5}{'sup':>5}"
    for name in columns:
        header += f" | {name:<8}{'P':>6}{'R':>6}{'F1':>6}{'kappa':>7}{'tp/fp/fn':>12}"
    lines.append(header)
    for index, code in enumerate(codes):
        first = next(iter(columns.values()))[index]
        n = first.tp + first.fp + first.fn + first.tn
        row = f"  {code:<16}{n:>5}{first.support:>5}"
        for metrics in columns.values():
            m = metrics[index]
            counts = f"{m.tp}/{m.fp}/{m.fn}"
            row += f" | {'':<8}{m.precision:6.3f}{m.recall:6.3f}{m.f1:6.3f}"
            row += f"{_fmt(m.kappa):>7}{counts:>12}"
        lines.append(row)
    row = f"  {'macro':<16}{'':>5}{'':>5}"
    for metrics in columns.values():
        macro = macro_summary(list(metrics))
        row += (
            f" | {'':<8}{macro['precision']:6.3f}{macro['recall']:6.3f}{macro['f1']:6.3f}"
            f"{_fmt(macro['kappa']):>7}{'':>12}"
        )
    lines.append(row)
    flagged = {name: macro_summary(list(m))["codes_without_support"] for name, m in columns.items()}
    if any(flagged.values()):
        lines.append(f"  (codes without support count with F1 0: {next(iter(flagged.values()))})")
    return "\n".join(lines)


def _subset(items: Sequence[Any], rows: Iterable[int]) -> list[Any]:
    return [items[i] for i in rows]


def report(eval_set: EvalSet, args: argparse.Namespace) -> dict[str, Any]:
    codebook = load_codebook_file(args.codebook)
    print(f"codebook: {args.codebook} ({codebook.key}, fingerprint {codebook.fingerprint()[:12]})")
    codes = list(eval_set.codes)
    stories = [labelled(eval_set, s) for s in eval_set.stories]
    by_source = {
        src: [i for i, s in enumerate(eval_set.stories) if s.source == src] for src in SOURCES
    }
    out: dict[str, Any] = {"proxy": eval_set.proxy, "notes": eval_set.notes, "n": len(stories)}
    for note in eval_set.notes:
        print(note)
    n_excluded = sum(1 for s in stories if s.excluded)
    print(
        f"{len(stories)} stories ({', '.join(f'{src} {len(r)}' for src, r in by_source.items())}); "
        f"{n_excluded} excluded (negatives for every code)"
    )
    ceiling = human_ceiling(eval_set)
    if ceiling is not None:
        print(table("human ceiling: coder A against coder B", {"A vs B": ceiling}, codes))
        out["ceiling"] = [m.to_dict() for m in ceiling]

    rules = rule_predictions(codebook, stories)
    cold = {"all": metrics_for(stories, rules, codes)}
    for src, rows in by_source.items():
        cold[src] = metrics_for(_subset(stories, rows), _subset(rules, rows), codes)
    print(table("cold start (codebook rules only), all sources", {"rules": cold["all"]}, codes))
    for src in SOURCES:
        print(table(f"cold start, {src}", {"rules": cold[src]}, codes))
    out["cold_start"] = {
        key: {"codes": [m.to_dict() for m in value], "macro": macro_summary(value)}
        for key, value in cold.items()
    }
    if args.sizes:
        print(f"learning curve: {args.folds} outer folds, sizes {args.sizes}", file=sys.stderr)
        curve, chosen = learning_curve(
            eval_set, codebook, args.sizes, args.folds, args.seed, args.epochs, base=args.base
        )
        out["learning_curve"] = {}
        for size, predicted in curve.items():
            entry: dict[str, Any] = {}
            for scope, rows in [("all", list(range(len(stories)))), *by_source.items()]:
                columns = {
                    layer: metrics_for(
                        _subset(stories, rows),
                        [p or frozenset() for p in _subset(predicted[layer], rows)],
                        codes,
                    )
                    for layer in LAYERS
                }
                print(table(f"{size} confirmed stories, {scope}", columns, codes))
                entry[scope] = {
                    layer: {"codes": [m.to_dict() for m in ms], "macro": macro_summary(ms)}
                    for layer, ms in columns.items()
                }
            layers = chosen[size]
            summary = {code: dict(Counter(fold[code] for fold in layers)) for code in codes}
            print(f"  layers selected in the {args.folds} outer folds: {summary}")
            entry["selected_layers"] = summary
            out["learning_curve"][str(size)] = entry
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="*", default=[50, 100, 200, 400])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--data-dir", type=Path, default=DATA)
    parser.add_argument("--codebook", type=Path, default=CODEBOOK)
    parser.add_argument("--base", default="blank:en", help="spaCy base pipeline (CIT_NLP_PIPELINE)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    parser.add_argument("--proxy", action="store_true", help="data-set labels (development only)")
    parser.add_argument("--proxy-per-source", type=int, default=300)
    args = parser.parse_args(argv)
    try:
        eval_set = (
            proxy_eval_set(args.proxy_per_source, args.seed, args.data_dir)
            if args.proxy
            else load_eval_set(args.data_dir)
        )
    except EvalSetError as exc:
        print(f"evaluation set: {exc}", file=sys.stderr)
        return 2
    out = report(eval_set, args)
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
