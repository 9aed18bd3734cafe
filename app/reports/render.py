"""Report bodies in other formats: trends as CSV; the study report as Markdown and HTML, from
the Jinja2 templates in app/templates/reports/ (autoescaped HTML; Markdown cells escaped)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from app.reports.schemas import TrendsReport

CSV_BASE_COLUMNS = ("period", "code", "valence")
CSV_GROUP_COLUMNS = {"survey": "survey_id", "touchpoint": "touchpoint", "channel": "channel"}
CSV_VALUE_COLUMNS = ("count", "base", "share", "ci_low", "ci_high", "suppressed")
CSV_CHANGE_COLUMNS = ("change_diff", "change_z", "change_p_value")


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def trends_csv(report: TrendsReport) -> str:
    """The tidy rows, one per line; group columns only for the fields grouped by."""
    groups = [CSV_GROUP_COLUMNS.get(g, g) for g in report.query.group_by]
    if report.rollups:  # parent roll-up rows share their code's name: say which is which
        groups.append("level")
    header = [*CSV_BASE_COLUMNS, *groups, *CSV_VALUE_COLUMNS, *CSV_CHANGE_COLUMNS]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for row in report.rows:
        data = row.model_dump(mode="json")
        change = data.pop("change_from_previous") or {}
        values = [data[c] for c in (*CSV_BASE_COLUMNS, *groups, *CSV_VALUE_COLUMNS)]
        values += [change.get("diff"), change.get("z"), change.get("p_value")]
        writer.writerow([_csv_value(v) for v in values])
    return out.getvalue()


# --- Study report: Jinja2 templates (app/templates/reports/) ---------------------------------

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"


def number(value: Any) -> str:
    """A count or figure as printed: a suppressed (null) count says so."""
    if value is None:
        return "suppressed"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _md(value: Any) -> str:
    """A Markdown table cell or inline text: no pipe or line break breaks the table."""
    return "n/a" if value is None else str(value).replace("|", "\\|").replace("\n", " ")


def _environment(autoescape: bool) -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=autoescape,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=StrictUndefined,
    )
    env.filters["md"] = _md
    return env


_MARKDOWN = _environment(autoescape=False)


def _scalar(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


# --- Reliability: a table when the report has the review domain's shape ----------------------

STATISTICS = (
    "percent_agreement",
    "cohen_kappa",
    "scott_pi",
    "fleiss_kappa",
    "krippendorff_alpha",
    "perreault_leigh_ir",
)


def _interval(entry: dict[str, Any]) -> str:
    ci = entry.get("ci95")
    if not isinstance(ci, dict):
        return ""
    return f" [{ci['low']:.3f}, {ci['high']:.3f}]"


def _statistic(entry: Any) -> str:
    if isinstance(entry, list):  # Cohen's kappa per pair of coders
        if not entry:
            return "n/a"
        return "; ".join(
            f"{'/'.join(map(str, e.get('coders', [])))}: {_statistic(e)}"
            if isinstance(e, dict) and e.get("coders")
            else _statistic(e)
            for e in entry
        )
    if isinstance(entry, dict):
        value = entry.get("value")
        if isinstance(value, int | float):
            return f"{value:.3f}{_interval(entry)}"
        return f"n/a ({entry.get('reason') or 'undefined'})"
    return _scalar(entry)


def _share(entry: Any) -> str:
    if not isinstance(entry, dict) or not entry.get("stories"):
        return "n/a (no story)"
    return f"{entry['agreed']} of {entry['stories']} ({entry['share']:.3f}{_interval(entry)})"


def reliability_summary(rel: dict[str, Any]) -> tuple[list[str], list[list[str]], list[str]] | None:
    """(table header, rows: statistic x overall/per code, summary lines), or None when the report
    does not have the expected shape (then its keys are listed)."""
    if not isinstance(rel.get("overall"), dict):
        return None
    sections: list[tuple[str, dict[str, Any]]] = [("overall (mean of codes)", rel["overall"])]
    single = rel.get("single_label")
    if isinstance(single, dict) and single.get("applicable"):
        sections.append(("single label", single))
    per_code = rel.get("per_code")
    left_out = rel.get("left_out_of_overall") or {}
    if isinstance(per_code, dict):
        sections += [
            (f"{code} (not in overall)" if code in left_out else str(code), v)
            for code, v in per_code.items()
            if isinstance(v, dict)
        ]
    header = ["Statistic", *(name for name, _s in sections)]
    rows = [
        [stat, *(_statistic(section[stat]) if stat in section else "" for _n, section in sections)]
        for stat in STATISTICS
        if any(stat in section for _n, section in sections)
    ]
    lines = [
        f"Available: {'yes' if rel.get('available') else 'no'}"
        + (f" ({rel['reason']})" if rel.get("reason") else ""),
        f"Coders: {', '.join(map(str, rel.get('coders', []))) or 'none'}; stories coded by two or "
        f"more: {rel.get('n_units', 0)}; codings: {rel.get('n_codings', 'n/a')}; "
        f"k (codes in the codebook): {rel.get('k', 'n/a')}",
    ]
    story = rel.get("story_level")
    if isinstance(story, dict):
        lines.append(
            "Story-level agreement (identical code sets): "
            f"{_share(story.get('exclusion_missing'))} of the stories every coder included; "
            f"{_share(story.get('exclusion_as_category'))} counting an exclusion as an answer"
        )
    include = rel.get("include_exclude")
    if isinstance(include, dict) and include.get("percent_agreement", {}).get("n_units"):
        lines.append(
            "Include / exclude decision: agreement "
            f"{_statistic(include['percent_agreement'])}, Krippendorff's alpha "
            f"{_statistic(include.get('krippendorff_alpha'))}"
        )
    exclusions = rel.get("exclusions")
    if isinstance(exclusions, dict) and exclusions.get("units"):
        lines.append(
            f"Exclusion decisions on {exclusions['units']} stories: "
            f"{exclusions.get('all_excluded', 0)} excluded by every coder, "
            f"{exclusions.get('split', 0)} split"
        )
    adjudication = rel.get("adjudication")
    if isinstance(adjudication, dict):
        lines.append(
            f"Adjudicated: {adjudication.get('adjudicated', 0)} stories "
            f"({adjudication.get('adjudicated_coded', 0)} coded, "
            f"{adjudication.get('adjudicated_excluded', 0)} excluded), "
            f"{adjudication.get('pending', 0)} waiting; {adjudication.get('method', '')}"
        )
    if left_out:
        lines.append(
            "Left out of the overall means: "
            + ", ".join(f"{code} ({why})" for code, why in left_out.items())
        )
    parent = rel.get("parent_level")
    if isinstance(parent, dict) and parent.get("available") and parent.get("section"):
        overall = parent["section"].get("overall", {})
        lines.append(
            "Parent-level agreement (top categories, sub-codes rolled up): Krippendorff's "
            f"alpha {_statistic(overall.get('krippendorff_alpha'))}, percent agreement "
            f"{_statistic(overall.get('percent_agreement'))}"
        )
    boot = rel.get("bootstrap")
    if isinstance(boot, dict):
        lines.append(
            f"95 % intervals in brackets: alpha by {boot.get('alpha_method')}, kappa and the "
            f"means by {boot.get('method')} ({boot.get('resamples')} resamples), seed "
            f"{boot.get('seed')}; shares by the Wilson score interval"
        )
    model = rel.get("model_vs_final")
    if isinstance(model, dict) and model.get("n_units") and isinstance(model.get("overall"), dict):
        alpha = model["overall"].get("krippendorff_alpha")
        lines.append(
            f"Model suggestions against final codes ({model['n_units']} stories): "
            f"Krippendorff's alpha {_statistic(alpha)}"
        )
    lines += [str(note) for note in rel.get("notes", []) or []]
    return header, rows, lines


# The report as a document of sections and blocks (paragraphs, lists, tables) that both
# templates render; every value is turned into text here, so neither can print a None.

Block = dict[str, Any]


def cell(value: Any) -> dict[str, str]:
    if value is None:
        return {"text": "suppressed", "kind": "suppressed"}
    if isinstance(value, int | float) and not isinstance(value, bool):
        return {"text": number(value), "kind": "num"}
    return {"text": str(value), "kind": "text"}


def _p(text: str, *, missing: bool = False) -> Block:
    return {"kind": "p", "text": text, "missing": missing}


def _ul(items: list[str]) -> Block:
    return {"kind": "ul", "items": items}


def _table(header: list[str], rows: list[list[Any]]) -> Block:
    return {"kind": "table", "header": header, "rows": [[cell(c) for c in row] for row in rows]}


def _section(heading: str, blocks: list[Block], level: int = 2) -> dict[str, Any]:
    return {"heading": heading, "level": level, "blocks": blocks}


def _missing(what: str) -> Block:
    return _p(f"Missing: {what}.", missing=True)


def _criteria(items: list[str] | None, what: str) -> list[Block]:
    return [_ul(list(items))] if items else [_missing(what)]


def _mapping_text(entry: dict[str, Any]) -> str:
    olds, news = ", ".join(entry["from"]), ", ".join(entry["to"])
    if entry["kind"] == "rename":
        return f"renamed {olds} to {news}"
    if entry["kind"] == "merge":
        return f"merged {olds} into {news}"
    return f"split {olds} into {news}"


def _code_name(code: dict[str, Any]) -> str:
    marks = [
        m
        for m, on in (
            ("retired", code.get("retired")),
            ("not codable", not code.get("codable", True)),
        )
        if on
    ]
    return f"{code['key']} ({code.get('label') or code['key']})" + (
        f" [{', '.join(marks)}]" if marks else ""
    )


def _classification(versions: list[dict[str, Any]]) -> list[Block]:
    if not versions:
        return [_p("No codebook yet.")]
    blocks: list[Block] = []
    for v in versions:
        current = " (current)" if v.get("current") else ""
        counts = (
            "counts per version withheld (suppression)"
            if v["stories"] is None
            else f"{v['stories']} stories, {v['final_codes']} final codes made under it"
        )
        blocks.append(
            {
                "kind": "p",
                "missing": False,
                "text": f"{v['codebook_name']} ({v['codebook']}), version {v['number']}"
                f"{current}: created by {v['created_by']} on {v['created_at'][:10]}; {counts}.",
            }
        )
        blocks.append(_p(f"Change note: {v['change_note'] or '(none)'}"))
        if v["mapping"]:
            blocks.append(
                _p(
                    "Mapping from the previous version: "
                    + "; ".join(map(_mapping_text, v["mapping"]))
                )
            )
        blocks.append(_p("Codes: " + ", ".join(_code_name(c) for c in v["codes"])))
    return blocks


def _appendix(codes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    sections = []
    for code in codes:
        blocks: list[Block] = []
        where = [
            f"{label}: {value}"
            for label, value in (
                ("Parent", code.get("parent")),
                ("Bitner group", code.get("bitner_group")),
            )
            if value
        ]
        if where:
            blocks.append(_p("; ".join(where)))
        blocks.append(
            _p(f"Definition: {code['definition']}")
            if code.get("definition")
            else _missing("no definition")
        )
        blocks.append(_p("Include when:"))
        blocks += _criteria(code.get("inclusion"), "no inclusion criteria")
        blocks.append(_p("Exclude when:"))
        blocks += _criteria(code.get("exclusion"), "no exclusion criteria")
        blocks.append(
            _p(f"Example: {code['example']}") if code.get("example") else _missing("no example")
        )
        sections.append(_section(_code_name(code), blocks, level=3))
    return sections


def _reliability(rel: dict[str, Any]) -> list[Block]:
    summary = reliability_summary(rel)
    if summary is None:
        return [_ul([f"{key}: {_scalar(value)}" for key, value in rel.items()])]
    header, rows, lines = summary
    blocks: list[Block] = [_ul(lines), _table(header, rows)]
    parent = rel.get("parent_level")
    if isinstance(parent, dict) and parent.get("available") and parent.get("section"):
        parent_summary = reliability_summary(parent["section"])
        if parent_summary is not None:
            blocks.append(_p("At parent level (each top category rolls up the codes below it):"))
            blocks.append(_table(parent_summary[0], parent_summary[1]))
    return blocks


def study_document(report: dict[str, Any]) -> dict[str, Any]:
    survey, study = report["survey"], report["study"]
    r, inc, val, co, sat = (
        report["respondents"],
        report["incidents"],
        report["valence"],
        report["coders"],
        report["saturation"],
    )
    intro: list[Block] = [
        {"kind": "quote", "text": report["note"]},
        _p(
            f"Survey {survey['slug']} (id {survey['id']}, {survey['status']}, language "
            f"{survey['language']})."
        ),
    ]
    if report["suppression"]["applied"]:
        intro.append(
            _p(
                f"Counts below {report['suppression']['min_cell']} are suppressed (and "
                "complementary counts so that none can be recovered)."
            )
        )
    sections = [
        _section(
            "Reporting checklist (Gremler 2004)",
            [_table(["Item", "Reported"], [[i["item"], i["status"]] for i in report["checklist"]])],
        ),
        _section(
            "Definition of a critical incident",
            [_p(study["incident_definition"])]
            if study["incident_definition"]
            else [
                _missing("the team has not entered the study's definition of a critical incident")
            ],
        ),
        _section(
            "Inclusion criteria",
            _criteria(study["inclusion_criteria"], "no inclusion criteria entered"),
        ),
        _section(
            "Exclusion criteria",
            _criteria(study["exclusion_criteria"], "no exclusion criteria entered"),
        ),
        _section(
            "Data collection",
            [_p(study["data_collection_method"])]
            if study["data_collection_method"]
            else [_missing("the data-collection method is not described")],
        ),
        _section(
            "Instructions",
            [
                _p(f"To interviewers: {study['interviewer_instructions']}")
                if study["interviewer_instructions"]
                else _missing("no instructions to interviewers entered"),
                _p(f"To respondents: {study['respondent_instructions']}")
                if study["respondent_instructions"]
                else _missing("no instructions to respondents entered"),
            ],
        ),
        _section(
            "Questions asked",
            [_table(["Field", "Question"], [[q["field"], q["text"]] for q in report["questions"]])]
            if report["questions"]
            else [_missing("no question wording")],
        ),
        _section(
            "Respondents",
            [
                _table(
                    ["Figure", "Value"],
                    [
                        ["Stories (submitted forms)", r["stories"]],
                        ["Invitations sent", r["invitations_sent"]],
                        ["Invitations used", r["invitations_used"]],
                        ["Stories via a personal invitation", r["stories_via_invitation"]],
                        ["Stories via the open link", r["stories_via_open_link"]],
                        ["Stories imported from a file", r["stories_imported"]],
                    ],
                ),
                _p(r["note"]),
            ],
        ),
    ]
    for attribute in r["by_attribute"]:
        sections.append(
            _section(
                f"Respondents by {attribute['attribute']}",
                [
                    _table(
                        [attribute["attribute"], "Stories"],
                        [[v["value"], v["stories"]] for v in attribute["values"]],
                    )
                ]
                if attribute["tabulated"]
                else [
                    _p(
                        f"Not tabulated: {attribute['distinct_values']} distinct values (an "
                        "identifier or free text, not a respondent characteristic)."
                    )
                ],
                level=3,
            )
        )
    sections += [
        _section(
            "Incidents",
            [
                _table(
                    ["Figure", "Stories"],
                    [
                        ["Reported", inc["reported"]],
                        ["Included (coded)", inc["included"]],
                        ["Excluded", inc["excluded"]],
                        ["Pending (not yet coded)", inc["pending"]],
                        *([f"Status {s}", v] for s, v in inc["by_status"].items()),
                    ],
                )
            ],
        ),
        _section(
            "Exclusion reasons",
            [
                _table(
                    ["Reason", "Stories"],
                    [
                        [x["reason"] or "(no reason given)", x["stories"]]
                        for x in inc["exclusion_reasons"]
                    ],
                )
            ]
            if inc["exclusion_reasons"]
            else [_p("No story was excluded.")],
            level=3,
        ),
        _section(
            "Favourable / unfavourable split",
            [
                _table(
                    ["Valence", "Reported", "Included"],
                    [[v, val["reported"][v], val["included"][v]] for v in val["reported"]],
                )
            ],
        ),
        _section("Context", []),
        *(
            _section(
                f"By {name}",
                [
                    _table(
                        [name.capitalize(), "Stories"],
                        [[e["value"] or "(not given)", e["stories"]] for e in entries],
                    )
                ],
                level=3,
            )
            for name, entries in report["context"].items()
        ),
        _section(
            "Time between incident and report",
            [
                _table(
                    ["Time since the incident", "Stories"],
                    [[t["bucket"], t["stories"]] for t in report["time_since"]],
                )
            ],
        ),
        _section("Classification: codebook history", _classification(report["classification"])),
        _section(
            "Incidents per category (final codes)",
            [
                _table(
                    ["Code", "Stories", "Satisfying", "Dissatisfying"],
                    [
                        [c["code"], c["stories"], c["satisfying"], c["dissatisfying"]]
                        for c in report["codes"]
                    ],
                )
            ]
            if report["codes"]
            else [_p("No final codes yet.")],
        ),
        *_tables_sections(report.get("tables") or {}),
        _section(
            "Judges",
            [
                _p(
                    f"{co['coders']} coders, {co['codings']} codings, "
                    f"{co['double_coded_stories']} stories coded independently by two or more."
                )
            ],
        ),
        _section("Reliability", _reliability(report["reliability"])),
        _section("Saturation", _saturation(sat)),
        _section(
            "Appendix: categories",
            [] if report["appendix"] else [_missing("the survey has no codebook")],
        ),
        *_appendix(report["appendix"]),
    ]
    return {"title": f"CIT study report: {survey['title']}", "intro": intro, "sections": sections}


def _cell_share(figure: dict[str, Any]) -> str:
    """count / base (share), or "suppressed"."""
    if figure["count"] is None or figure["base"] is None:
        return "suppressed"
    if not figure["base"]:
        return "0"
    return f"{figure['count']} / {figure['base']} ({figure['count'] / figure['base']:.0%})"


def _tables_sections(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The Bitner category table, co-occurrence and the cross-tabs, whole study."""
    sections = []
    bitner = data.get("bitner")
    if bitner and bitner["tables"]:
        part = bitner["tables"][0]
        sections.append(
            _section(
                "Category table (Bitner group x valence)",
                [
                    _p(
                        "Stories carrying any code of the group (a child code counts in its "
                        "parent's group), each once, over the confirmed stories of the valence."
                    ),
                    _table(
                        ["Group", "Satisfying", "Dissatisfying"],
                        [
                            [
                                row["group"],
                                _cell_share(row["satisfying"]),
                                _cell_share(row["dissatisfying"]),
                            ]
                            for row in part["rows"]
                        ],
                    ),
                ],
            )
        )
    pairs = data.get("cooccurrence") or {}
    for part in pairs.get("tables", []):
        codes = part["codes"]
        sections.append(
            _section(
                f"Code co-occurrence ({part['valence']} stories)",
                [
                    _table(
                        ["Code", *codes],
                        [
                            [a, *(number(v) for v in line)]
                            for a, line in zip(codes, part["matrix"], strict=True)
                        ],
                    )
                ],
                level=3,
            )
        )
    for by, table in (data.get("crosstabs") or {}).items():
        for part in table.get("tables", []):
            columns = part["columns"]
            sections.append(
                _section(
                    f"Codes by {by} ({part['valence']} stories)",
                    [
                        _table(
                            ["Code", *(c["label"] for c in columns)],
                            [
                                [
                                    row["code"]
                                    + (" (with children)" if row["level"] == "rollup" else ""),
                                    *(_cell_share(cell) for cell in row["cells"]),
                                ]
                                for row in part["rows"]
                            ],
                        )
                    ],
                    level=3,
                )
            )
    return sections


def _saturation(sat: dict[str, Any]) -> list[Block]:
    blocks = [_p(f"{sat['rule']}.")]
    if sat.get("saturated") is None:
        blocks.append(_p(f"Not judged: {sat.get('reason') or 'no data'}."))
    else:
        verdict = "reached" if sat["saturated"] else "not reached"
        blocks.append(
            _p(
                f"Saturation {verdict}: the last 100 coded stories added "
                f"{sat['new_codes_in_last_100']} new codes ({sat['distinct_codes']} distinct "
                f"codes in {number(sat['stories_coded'])} coded stories)."
            )
        )
    blocks.append(
        _table(
            ["Stories coded", "Distinct codes", "New codes"],
            [[p["stories_coded"], p["distinct_codes"], p["new_codes"]] for p in sat["points"]],
        )
    )
    return blocks


def study_markdown(report: dict[str, Any]) -> str:
    return _MARKDOWN.get_template("reports/study.md.j2").render(doc=study_document(report))
