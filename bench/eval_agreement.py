"""Agreement of the two coders of the evaluation set, before adjudication (and against the final).

`python -m bench.eval_agreement [--final | --no-final]`

Reads `bench/data/eval_coding_a.jsonl` and `bench/data/eval_coding_b.jsonl` (the coders'
independent files, see `bench/data/CODING_GUIDE.md`) in the order of `bench/data/eval_stories.jsonl`
and prints, over all 630 stories and per source (airline, banking77, cfpb), as Markdown tables:

- the include/exclude decision: its 2 x 2 table, percent agreement Po and Cohen's kappa; the
  six-way decision (included, or the exclusion reason) and the reason over stories both excluded;
- valence (three values, recorded for every story): Po and kappa;
- per code, on present/absent: support (stories each coder gave the code), Po, Cohen's kappa and
  Krippendorff's alpha over all stories (an excluded story has no codes), and Po and kappa over
  the stories both coders included; the mean of the defined per-code kappas;
- story-level agreement: the share of stories whose two code sets are identical, over all stories
  and over those both included, and the share with the whole coding identical.

With `bench/data/eval_final.jsonl` present (the adjudicated reference), it also prints each coder
against the final coding (per-code kappa with support, include/exclude kappa, valence and
story-level agreement); `--no-final` skips that part, `--final` requires the file.

Statistics come from `app.reviews.agreement` (pure Python, the definitions of
`../shared/docs/cit-method.md`, tested against its test vectors): Cohen's kappa
``(Po - Pe) / (1 - Pe)`` with each coder's own marginals, undefined (printed "n/a", never 1)
when ``Pe = 1``. scikit-learn is not a dependency of the project, so its ``cohen_kappa_score``
is not used. Every figure is printed with its denominator.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Hashable, Sequence
from pathlib import Path

from app.reviews.agreement import cohen_kappa, krippendorff_alpha_nominal
from bench._data import REPO, eval_stories

DATA = REPO / "bench" / "data"
CODING_A = DATA / "eval_coding_a.jsonl"
CODING_B = DATA / "eval_coding_b.jsonl"
FINAL = DATA / "eval_final.jsonl"
CODES = ("complaint", "special_request", "extra_mile", "owner_error")
SOURCES = ("airline", "banking77", "cfpb")
FIELDS = ("include", "exclusion_reason", "valence", "codes")

Coding = dict[str, dict]


def read_coding(path: Path, ids: Sequence[str]) -> Coding:
    """`{id: row}` of a coding file; every id of the set exactly once, nothing else."""
    rows: Coding = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        row = json.loads(line)
        if "text" in row:
            raise SystemExit(f"{path}:{number}: a coding file must not carry story text")
        if row["id"] in rows:
            raise SystemExit(f"{path}:{number}: {row['id']} appears twice")
        rows[row["id"]] = row
    if missing := set(ids) - rows.keys():
        raise SystemExit(f"{path}: {len(missing)} stories missing, e.g. {sorted(missing)[0]}")
    if extra := rows.keys() - set(ids):
        raise SystemExit(f"{path}: {len(extra)} ids not in the set, e.g. {sorted(extra)[0]}")
    return rows


def fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def share(agree: int, n: int) -> str:
    return f"{agree}/{n} = {agree / n:.3f}" if n else "0/0 = n/a"


def agreement(a: Sequence[Hashable], b: Sequence[Hashable]) -> tuple[int, int, float | None]:
    """(units agreed, units, Cohen's kappa) of two equally long label sequences."""
    agree = sum(1 for x, y in zip(a, b, strict=True) if x == y)
    return agree, len(a), cohen_kappa(a, b).value


def decision(row: dict) -> str:
    return "included" if row["include"] else row["exclusion_reason"]


def code_sets(rows: Sequence[dict]) -> list[frozenset[str]]:
    return [frozenset(row["codes"]) if row["include"] else frozenset() for row in rows]


def table(header: Sequence[str], lines: Sequence[Sequence[object]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    out += ["| " + " | ".join(str(cell) for cell in line) + " |" for line in lines]
    return "\n".join(out)


def report_pair(a: Sequence[dict], b: Sequence[dict], names: tuple[str, str]) -> str:
    """All pre-adjudication figures for one subset of stories, coded by two coders."""
    n = len(a)
    na, nb = names
    parts: list[str] = []

    inc_a = [row["include"] for row in a]
    inc_b = [row["include"] for row in b]
    cells = {(x, y): 0 for x in (True, False) for y in (True, False)}
    for x, y in zip(inc_a, inc_b, strict=True):
        cells[(x, y)] += 1
    agree, _, kappa = agreement(inc_a, inc_b)
    parts.append(
        table(
            [f"{na} \\ {nb}", "included", "excluded", "total"],
            [
                ["included", cells[(True, True)], cells[(True, False)], sum(inc_a)],
                ["excluded", cells[(False, True)], cells[(False, False)], n - sum(inc_a)],
                ["total", sum(inc_b), n - sum(inc_b), n],
            ],
        )
    )
    lines = [["include / exclude", n, share(agree, n), fmt(kappa)]]
    agree, _, kappa = agreement([decision(r) for r in a], [decision(r) for r in b])
    lines.append(["decision (included or reason, 6 values)", n, share(agree, n), fmt(kappa)])
    both_out = [i for i in range(n) if not a[i]["include"] and not b[i]["include"]]
    agree, m, kappa = agreement(
        [a[i]["exclusion_reason"] for i in both_out], [b[i]["exclusion_reason"] for i in both_out]
    )
    lines.append(["exclusion reason, both excluded", m, share(agree, m), fmt(kappa)])
    agree, _, kappa = agreement([r["valence"] for r in a], [r["valence"] for r in b])
    lines.append(["valence (3 values), all stories", n, share(agree, n), fmt(kappa)])
    both_in = [i for i in range(n) if a[i]["include"] and b[i]["include"]]
    agree, m, kappa = agreement(
        [a[i]["valence"] for i in both_in], [b[i]["valence"] for i in both_in]
    )
    lines.append(["valence, both included", m, share(agree, m), fmt(kappa)])
    parts.append(table(["decision", "n", "Po", "kappa"], lines))

    sets_a, sets_b = code_sets(a), code_sets(b)
    lines = []
    kappas_all: list[float] = []
    kappas_in: list[float] = []
    for code in CODES:
        xa = [int(code in s) for s in sets_a]
        xb = [int(code in s) for s in sets_b]
        agree, _, kappa = agreement(xa, xb)
        alpha = krippendorff_alpha_nominal([xa, xb]).value
        ia = [xa[i] for i in both_in]
        ib = [xb[i] for i in both_in]
        agree_in, m, kappa_in = agreement(ia, ib)
        kappas_all += [kappa] if kappa is not None else []
        kappas_in += [kappa_in] if kappa_in is not None else []
        lines.append(
            [
                code,
                f"{sum(xa)} / {sum(xb)}",
                share(agree, n),
                fmt(kappa),
                fmt(alpha),
                f"{sum(ia)} / {sum(ib)}",
                share(agree_in, m),
                fmt(kappa_in),
            ]
        )
    lines.append(
        [
            f"mean of defined kappas ({len(kappas_all)} / {len(kappas_in)} codes)",
            "",
            "",
            fmt(sum(kappas_all) / len(kappas_all) if kappas_all else None),
            "",
            "",
            "",
            fmt(sum(kappas_in) / len(kappas_in) if kappas_in else None),
        ]
    )
    m = len(both_in)
    parts.append(
        table(
            [
                "code",
                f"support {na} / {nb} (n={n})",
                f"Po (n={n})",
                "kappa",
                "alpha",
                f"support, both included (n={m})",
                f"Po (n={m})",
                "kappa",
            ],
            lines,
        )
    )

    same_all = sum(1 for x, y in zip(sets_a, sets_b, strict=True) if x == y)
    same_in = sum(1 for i in both_in if sets_a[i] == sets_b[i])
    whole = sum(1 for x, y in zip(a, b, strict=True) if all(x[f] == y[f] for f in FIELDS))
    parts.append(
        table(
            ["story-level agreement", "identical / stories"],
            [
                ["code sets identical, all stories (excluded = no codes)", share(same_all, n)],
                ["code sets identical, both included", share(same_in, m)],
                ["whole coding identical (include, reason, valence, codes)", share(whole, n)],
            ],
        )
    )
    return "\n\n".join(parts)


def report_against_final(coders: dict[str, list[dict]], final: list[dict]) -> str:
    """Each coder against the adjudicated final coding, over all stories."""
    n = len(final)
    sets_f = code_sets(final)
    header = ["coder vs final"] + [f"{code} kappa (support coder / final)" for code in CODES]
    header += ["mean kappa", "include kappa", "valence Po", "code sets identical"]
    lines = []
    for name, rows in coders.items():
        sets_c = code_sets(rows)
        line: list[object] = [name]
        kappas: list[float] = []
        for code in CODES:
            xc = [int(code in s) for s in sets_c]
            xf = [int(code in s) for s in sets_f]
            _, _, kappa = agreement(xc, xf)
            kappas += [kappa] if kappa is not None else []
            line.append(f"{fmt(kappa)} ({sum(xc)} / {sum(xf)})")
        line.append(f"{fmt(sum(kappas) / len(kappas) if kappas else None)} ({len(kappas)} codes)")
        _, _, kappa = agreement([r["include"] for r in rows], [r["include"] for r in final])
        agree_v = sum(1 for x, y in zip(rows, final, strict=True) if x["valence"] == y["valence"])
        same = sum(1 for x, y in zip(sets_c, sets_f, strict=True) if x == y)
        line += [fmt(kappa), share(agree_v, n), share(same, n)]
        lines.append(line)
    decided = Counter(row["decided_by"] for row in final)
    counts = ", ".join(f"{k} {v}" for k, v in sorted(decided.items()))
    return f"n = {n} stories; decided_by: {counts}\n\n" + table(header, lines)


def final_frequencies(final: list[dict], source_of: dict[str, str]) -> str:
    """Included stories and code counts of the final coding, per source."""
    lines = []
    for source in (*SOURCES, "all"):
        rows = [r for r in final if source == "all" or source_of[r["id"]] == source]
        included = [r for r in rows if r["include"]]
        line: list[object] = [source, len(rows), len(included)]
        line += [sum(1 for r in included if code in r["codes"]) for code in CODES]
        line.append(sum(1 for r in included if not r["codes"]))
        lines.append(line)
    return table(["source", "stories", "included", *CODES, "included, no code"], lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--final", action="store_true", help=f"require {FINAL.name}")
    group.add_argument("--no-final", action="store_true", help="skip the comparison with it")
    args = parser.parse_args(argv)

    stories = eval_stories()
    ids = [record["id"] for record in stories]
    source_of = {record["id"]: record["source"] for record in stories}
    coding_a = read_coding(CODING_A, ids)
    coding_b = read_coding(CODING_B, ids)
    a = [coding_a[i] for i in ids]
    b = [coding_b[i] for i in ids]
    names = (a[0]["coder"], b[0]["coder"])

    print("# Agreement before adjudication\n")
    print(f"{CODING_A.name} ({names[0]}) vs {CODING_B.name} ({names[1]}), {len(ids)} stories\n")
    print(f"## All sources (n = {len(ids)})\n")
    print(report_pair(a, b, names))
    for source in SOURCES:
        keep = [k for k, i in enumerate(ids) if source_of[i] == source]
        print(f"\n## {source} (n = {len(keep)})\n")
        print(report_pair([a[k] for k in keep], [b[k] for k in keep], names))

    if args.no_final or (not args.final and not FINAL.exists()):
        return 0
    if not FINAL.exists():
        print(f"{FINAL} is missing", file=sys.stderr)
        return 1
    coding_f = read_coding(FINAL, ids)
    final = [coding_f[i] for i in ids]
    print("\n# Each coder against the final (adjudicated) coding\n")
    print(report_against_final({names[0]: a, names[1]: b}, final))
    for source in SOURCES:
        keep = [k for k, i in enumerate(ids) if source_of[i] == source]
        print(f"\n## {source} (n = {len(keep)})\n")
        print(
            report_against_final(
                {names[0]: [a[k] for k in keep], names[1]: [b[k] for k in keep]},
                [final[k] for k in keep],
            )
        )
    print("\n# Final code frequencies (included stories)\n")
    print(final_frequencies(final, source_of))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
