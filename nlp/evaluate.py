"""Cross-validated quality of the suggestions against researcher-confirmed codes, as tables."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .codebook import Codebook
from .metrics import CodeMetrics
from .selection import DEFAULT_FOLDS, LAYERS, SelectionReport
from .train import DEFAULT_EPOCHS, evaluate_suggester

__all__ = ["cross_validate", "format_metrics_table", "format_table"]


def cross_validate(
    examples: Sequence[Any],
    codebook: Codebook,
    k: int = DEFAULT_FOLDS,
    seed: int = 0,
    base: str = "blank:en",
    *,
    epochs: int = DEFAULT_EPOCHS,
) -> SelectionReport:
    """k-fold figures of rules, model and combined per code, and the layer each would get."""
    return evaluate_suggester(examples, codebook, base=base, k=k, seed=seed, epochs=epochs)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


HEADER = (
    f"{'code':<16} {'layer':<9} {'sup':>4} {'tp':>4} {'fp':>4} {'fn':>4} {'tn':>5}  "
    f"{'P':>5} {'R':>5} {'F1':>5} {'kappa':>6}"
)


def _row(name: str, layer: str, m: Mapping[str, Any], flag: str = "") -> str:
    return (
        f"{name:<16} {layer:<9} {m['support']:>4} {m['tp']:>4} {m['fp']:>4} {m['fn']:>4} "
        f"{m['tn']:>5}  {m['precision']:>5.3f} {m['recall']:>5.3f} {m['f1']:>5.3f} "
        f"{_number(m['kappa']):>6}  {flag}"
    ).rstrip()


def format_metrics_table(rows: Sequence[tuple[str, str, CodeMetrics]]) -> str:
    """Any (code, layer, metrics) rows as one table, with their denominators."""
    lines = [HEADER, "-" * len(HEADER)]
    lines += [
        _row(code, layer, m.to_dict(), "no support" if m.support == 0 else "")
        for code, layer, m in rows
    ]
    return "\n".join(lines)


def _selection_lines(selection: Mapping[str, Any]) -> list[str]:
    lines: list[str] = []
    for layer in LAYERS:
        candidate = selection["candidates"].get(layer)
        if candidate is None:
            continue
        mark = "<- active" if layer == selection["layer"] else ""
        if selection["support"] == 0:
            mark = (mark + " (no support)").strip()
        lines.append(_row("" if lines else selection["code"], layer, candidate, mark))
    lines.append(f"{'':<16} {selection['reason']}")
    return lines


def format_table(report: SelectionReport | Mapping[str, Any]) -> str:
    """A plain-text table: per code the three candidates side by side, the active one marked,
    then the macro figures of each layer over all codes. Takes a report or its `to_dict()`
    (as stored in `cit-model.json` under "evaluation")."""
    data = report.to_dict() if isinstance(report, SelectionReport) else report
    lines = [
        f"{data['k']}-fold cross-validation on {data['n_final']} confirmed stories "
        f"({data['n_excluded']} excluded); {data['n_partial']} stories with one coder's "
        f"decisions and {data['n_codebook_examples']} codebook examples used for training only"
        + ("; the model uses the pipeline's vectors" if data.get("uses_vectors") else ""),
        HEADER,
        "-" * len(HEADER),
    ]
    for selection in data["codes"]:
        lines += _selection_lines(selection)
    if data.get("exclude") is not None:
        lines += _selection_lines(data["exclude"])
    lines.append("-" * len(HEADER))
    for layer in ("selected", *LAYERS):
        macro = data["macro"][layer]
        flagged = macro["codes_without_support"]
        note = f"  (counted with F1 0, no support: {', '.join(flagged)})" if flagged else ""
        lines.append(
            f"{'macro ' + layer:<26} P {macro['precision']:.3f}  R {macro['recall']:.3f}  "
            f"F1 {macro['f1']:.3f}  kappa {_number(macro['kappa'])} over "
            f"{macro['n_codes']} codes{note}"
        )
    return "\n".join(lines)
