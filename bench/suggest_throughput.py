"""Suggestion throughput on one core: raw `nlp.pipe` against `Suggester.suggest_many`."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path

from bench._data import load_stories
from nlp import Suggester, load_codebook_file

CODEBOOK = Path(__file__).resolve().parent.parent / "codebooks" / "cit-service-encounters.yaml"
TARGET_RATIO = 0.8
TARGET_PER_SECOND = 2_000


def pin_to_one_core() -> str:
    """Run on one CPU so the figure means "per core"; returns what was done."""
    if hasattr(os, "sched_setaffinity"):
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return f"pinned to CPU {cpu}"
    return "not pinned (no sched_setaffinity on this platform)"


def consume(items: Iterable[object]) -> None:
    deque(items, maxlen=0)


def timed(run: Callable[[], None]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def _train(codebook: object, n: int, base: str) -> Path:
    import json
    import tempfile

    from bench.quality import DATA, proxy_labels
    from nlp import LabelledStory, train_suggester

    codes = [c.key for c in codebook.active_codes]  # type: ignore[attr-defined]
    ids = {
        json.loads(line)["id"]
        for line in (DATA / "eval_stories.jsonl").read_text().splitlines()
        if line.strip()
    }
    rows = proxy_labels(n // 3 + 100, 5, ids)[:n]
    stories = [
        LabelledStory.confirmed(text, {c for c, v in labels.items() if v}, codes, valence=valence)
        for _, _, text, labels, valence in rows
    ]
    out = Path(tempfile.mkdtemp(prefix="cit-bench-model-")) / "m"
    train_suggester(stories, codebook, out, base=base)  # type: ignore[arg-type]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stories", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--model-dir", type=Path, default=None, help="score with a trained model")
    parser.add_argument(
        "--train",
        type=int,
        default=0,
        help="first train a model (train_suggester) on this many real stories outside the "
        "evaluation set, labelled by their data sets, and score with it",
    )
    parser.add_argument(
        "--layer",
        choices=["rules", "model", "combined"],
        default=None,
        help="with a model: score every code with this layer (combined: classifier + stacker)",
    )
    parser.add_argument("--base", default="blank:en", help="spaCy base pipeline")
    args = parser.parse_args(argv)

    pinned = pin_to_one_core()
    stories = load_stories(args.stories)
    words = sum(len(story.split()) for story in stories)
    codebook = load_codebook_file(CODEBOOK)
    model_dir = args.model_dir
    if args.train:
        model_dir = _train(codebook, args.train, args.base)
    suggester = Suggester(codebook, model_dir=model_dir, base=args.base)
    if args.layer:
        suggester.force_layer(args.layer)
    nlp = suggester.nlp

    def raw() -> None:
        consume(nlp.pipe(stories, batch_size=args.batch_size))

    def full() -> None:
        consume(suggester.suggest_many(stories, batch_size=args.batch_size))

    raw()  # warm-up: vocab, lemma cache and string store see the stories once
    raw_times: list[float] = []
    full_times: list[float] = []
    for repeat in range(args.repeats):
        # Alternate the order so that drift (thermal, caches) does not favour either path.
        order = [(raw, raw_times), (full, full_times)]
        for run, times in order if repeat % 2 == 0 else reversed(order):
            times.append(timed(run))

    raw_rate = len(stories) / statistics.median(raw_times)
    full_rate = len(stories) / statistics.median(full_times)
    ratio = full_rate / raw_rate
    print(f"stories: {len(stories)} ({words} words), pipeline: {nlp.pipe_names}")
    print(f"layer: {suggester.layer} {suggester.layers}")
    print(
        f"python {platform.python_version()}, {pinned}, batch size {args.batch_size}, "
        f"median of {args.repeats} alternating repetitions"
    )
    print(f"(a) nlp.pipe                  {raw_rate:10,.0f} stories/s")
    print(f"(b) Suggester.suggest_many    {full_rate:10,.0f} stories/s")
    print(f"ratio (b)/(a)                 {ratio:10.3f}   (target >= {TARGET_RATIO})")
    met = ratio >= TARGET_RATIO and full_rate >= TARGET_PER_SECOND
    print(
        f"targets (ratio >= {TARGET_RATIO}, >= {TARGET_PER_SECOND:,} stories/s): "
        f"{'met' if met else 'NOT met'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
