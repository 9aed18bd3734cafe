"""Learning curve: complaint F1 of the trained model as researchers confirm more stories."""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

from bench._data import airline_complaint_examples
from nlp import Suggester, fit_textcat, load_codebook_file
from nlp.metrics import CodeMetrics, code_metrics
from nlp.train import DEFAULT_EPOCHS, predict_codes

CODEBOOK = Path(__file__).resolve().parent.parent / "codebooks" / "cit-service-encounters.yaml"
COMPLAINT = frozenset({"complaint"})
NONE: frozenset[str] = frozenset()


def complaint_metrics(gold: list[bool], predicted: list[frozenset[str]]) -> CodeMetrics:
    confirmed = [COMPLAINT if label else NONE for label in gold]
    return code_metrics(confirmed, predicted, ["complaint"])[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 200, 1000])
    parser.add_argument("--timed-size", type=int, default=5000)
    parser.add_argument("--draws", type=int, default=3, help="training samples per size")
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    codebook = load_codebook_file(CODEBOOK)
    examples = airline_complaint_examples()
    random.Random(args.seed).shuffle(examples)
    n_test = len(examples) // 5
    test, pool = examples[:n_test], examples[n_test:]
    test_texts = [text for text, _ in test]
    test_gold = [label for _, label in test]
    share = sum(test_gold) / len(test_gold)
    print(
        f"airline tweets: {len(examples)} labelled (complaint: negative reason set and not "
        f'"Can\'t Tell"; not complaint: positive), held out {n_test} ({share:.1%} complaints), '
        f"pool {len(pool)}; {args.epochs} epochs, codebook examples added to each training set"
    )

    rows: list[tuple[str, str, str, str, str, str]] = []
    everything = complaint_metrics(test_gold, [COMPLAINT] * len(test_gold))
    rows.append(("always complaint", "-", f"{everything.f1:.3f}", "-", "-", "-"))
    rules = Suggester(codebook)
    rule_predictions = [
        frozenset(s.code for s in suggestions if s.suggested)
        for suggestions in rules.suggest_many(test_texts)
    ]
    ruled = complaint_metrics(test_gold, rule_predictions)
    rows.append(
        ("rules only", "0", f"{ruled.f1:.3f}", f"{ruled.precision:.3f}", f"{ruled.recall:.3f}", "-")
    )

    def train_and_score(size: int, draw: int) -> tuple[CodeMetrics, float]:
        sample = random.Random(args.seed + draw).sample(pool, min(size, len(pool)))
        labelled = [(text, COMPLAINT if label else NONE) for text, label in sample]
        started = time.perf_counter()
        model = fit_textcat(labelled, codebook, epochs=args.epochs, seed=args.seed)
        seconds = time.perf_counter() - started
        return complaint_metrics(test_gold, predict_codes(model, test_texts, codebook)), seconds

    for size in [*args.sizes, args.timed_size]:
        draws = args.draws if size != args.timed_size else 1
        results = [train_and_score(size, draw) for draw in range(draws)]
        f1 = statistics.median(m.f1 for m, _ in results)
        precision = statistics.median(m.precision for m, _ in results)
        recall = statistics.median(m.recall for m, _ in results)
        seconds = statistics.median(s for _, s in results)
        label = f"model, median of {draws}" if draws > 1 else "model"
        rows.append(
            (label, str(size), f"{f1:.3f}", f"{precision:.3f}", f"{recall:.3f}", f"{seconds:.2f}")
        )

    header = ("layer", "trained on", "F1", "precision", "recall", "train s")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print(
            "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
