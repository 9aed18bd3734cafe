"""The agreement and study reports as tidy CSV tables (the trends CSV lives with the trends)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from app.exports.formats import csv_chunks

AGREEMENT_HEADER = ["section", "code", "statistic", "coders", "value", "n_units", "reason"]
STUDY_HEADER = ["section", "item", "value"]
_STATISTICS = (
    "percent_agreement",
    "fleiss_kappa",
    "krippendorff_alpha",
    "perreault_leigh_ir",
    "scott_pi",
)


def _figures(section: str, code: str, figures: Mapping[str, Any]) -> Iterator[list[Any]]:
    for name in _STATISTICS:
        stat = figures.get(name)
        if isinstance(stat, Mapping):
            yield [
                section,
                code,
                name,
                "",
                stat.get("value"),
                stat.get("n_units"),
                stat.get("reason"),
            ]
    for pair in figures.get("cohen_kappa") or []:
        coders = " & ".join(pair.get("coders") or ())
        yield [
            section,
            code,
            "cohen_kappa",
            coders,
            pair.get("value"),
            pair.get("n_units"),
            pair.get("reason"),
        ]


def agreement_rows(report: Mapping[str, Any]) -> Iterator[list[Any]]:
    """One row per section (inter_coder, model_vs_final), code (or overall) and statistic,
    with the units it rests on beside every value."""
    for section, data in (
        ("inter_coder", report),
        ("model_vs_final", report.get("model_vs_final")),
    ):
        if not isinstance(data, Mapping):
            continue
        yield from _figures(section, "(overall)", data.get("overall") or {})
        for code, figures in (data.get("per_code") or {}).items():
            yield from _figures(section, code, figures)
        single = data.get("single_label") or {}
        if single.get("applicable"):
            yield from _figures(f"{section}.single_label", "(code as one label)", single)
    exclusions = report.get("exclusions") or {}
    for key in ("units", "all_excluded", "none_excluded", "split", "agreement"):
        if key in exclusions:
            yield ["exclusions", "", key, "", exclusions[key], exclusions.get("units"), None]


def agreement_csv(report: Mapping[str, Any]) -> bytes:
    return b"".join(csv_chunks(AGREEMENT_HEADER, agreement_rows(report)))


def _leaves(prefix: str, value: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(value, Mapping):
        for key, inner in value.items():
            yield from _leaves(f"{prefix}.{key}" if prefix else str(key), inner)
    elif isinstance(value, list) and any(isinstance(v, Mapping | list) for v in value):
        for index, inner in enumerate(value):
            yield from _leaves(f"{prefix}[{index}]", inner)
    else:
        yield prefix, value


def study_rows(report: Mapping[str, Any]) -> Iterator[list[Any]]:
    """Every figure of the study report as (section, item, value): the checklist's tables in
    one long table that a spreadsheet can pivot."""
    for section, content in report.items():
        for item, value in _leaves("", content):
            yield [section, item, value]


def study_csv(report: Mapping[str, Any]) -> bytes:
    return b"".join(csv_chunks(STUDY_HEADER, study_rows(report)))
