"""Report bodies in other formats: trends as CSV, the study report as Markdown and HTML."""

from __future__ import annotations

import csv
import html
import io
import json
from collections.abc import Iterable
from typing import Any

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


# --- Study report ---------------------------------------------------------------------------


def _n(value: Any) -> str:
    if value is None:
        return "suppressed"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _md_escape(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_table(header: list[str], rows: Iterable[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in rows]
    return [*lines, ""]


def _md_nested(value: Any, indent: int = 0) -> list[str]:
    """A JSON-ready value of unknown shape (the reliability report) as nested bullets."""
    pad = "  " * indent
    if isinstance(value, dict):
        lines = []
        for key, item in value.items():
            if isinstance(item, dict | list) and item:
                lines.append(f"{pad}- **{key}**:")
                lines += _md_nested(item, indent + 1)
            else:
                lines.append(f"{pad}- **{key}**: {_scalar(item)}")
        return lines
    if isinstance(value, list):
        lines = []
        for item in value:
            if isinstance(item, dict | list):
                lines.append(f"{pad}-")
                lines += _md_nested(item, indent + 1)
            else:
                lines.append(f"{pad}- {_scalar(item)}")
        return lines
    return [f"{pad}- {_scalar(value)}"]


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


def _statistic(entry: Any) -> str:
    if isinstance(entry, list):  # Cohen's kappa per pair of coders
        return "; ".join(
            f"{'/'.join(map(str, e.get('coders', [])))}: {_statistic(e)}"
            if isinstance(e, dict) and e.get("coders")
            else _statistic(e)
            for e in entry
        )
    if isinstance(entry, dict):
        value = entry.get("value")
        if isinstance(value, int | float):
            return f"{value:.3f}"
        return f"n/a ({entry.get('reason') or 'undefined'})"
    return _scalar(entry)


def reliability_summary(rel: dict[str, Any]) -> tuple[list[str], list[list[str]], list[str]] | None:
    """(table header, rows: statistic x overall/per code, summary lines), or None when the report
    does not have the expected shape (then it is shown as nested lists)."""
    if not isinstance(rel.get("overall"), dict):
        return None
    sections: list[tuple[str, dict[str, Any]]] = [("overall (mean of codes)", rel["overall"])]
    single = rel.get("single_label")
    if isinstance(single, dict) and single.get("applicable"):
        sections.append(("single label", single))
    per_code = rel.get("per_code")
    if isinstance(per_code, dict):
        sections += [(str(code), v) for code, v in per_code.items() if isinstance(v, dict)]
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
    exclusions = rel.get("exclusions")
    if isinstance(exclusions, dict) and exclusions.get("units"):
        lines.append(
            f"Exclusion decisions on {exclusions['units']} stories: agreement "
            f"{_statistic({'value': exclusions.get('agreement')})}"
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


def study_markdown(report: dict[str, Any]) -> str:
    survey = report["survey"]
    out = [f"# CIT study report: {survey['title']}", "", f"> {report['note']}", ""]
    out += [
        f"Survey `{survey['slug']}` (id {survey['id']}, {survey['status']}, language "
        f"{survey['language']}).",
        "",
    ]
    if report["suppression"]["applied"]:
        out += [
            f"Counts below {report['suppression']['min_cell']} are suppressed "
            "(and complementary counts so that none can be recovered).",
            "",
        ]
    out += ["## Reporting checklist (Gremler 2004)", ""]
    out += _md_table(
        ["Item", "Reported"],
        ([item["item"], "yes" if item["reported"] else "no"] for item in report["checklist"]),
    )
    out += ["## Definition of a critical incident", "", report["incident_definition"], ""]
    out += ["## Inclusion criteria", ""]
    out += [f"- {c}" for c in report["inclusion_criteria"]] + [""]
    out += ["## Questions asked", ""]
    out += _md_table(["Field", "Question"], ([q["field"], q["text"]] for q in report["questions"]))
    r = report["respondents"]
    out += ["## Respondents", ""]
    out += _md_table(
        ["Figure", "Value"],
        [
            ["Stories (submitted forms)", _n(r["stories"])],
            ["Invitations sent", _n(r["invitations_sent"])],
            ["Invitations used", _n(r["invitations_used"])],
            ["Stories via a personal invitation", _n(r["stories_via_invitation"])],
            ["Stories via the open link", _n(r["stories_via_open_link"])],
            ["Stories imported from files", _n(r.get("stories_imported"))],
        ],
    )
    out += [r["note"], ""]
    inc = report["incidents"]
    out += ["## Incidents", ""]
    out += _md_table(
        ["Figure", "Stories"],
        [
            ["Reported", _n(inc["reported"])],
            ["Included (coded)", _n(inc["included"])],
            ["Excluded", _n(inc["excluded"])],
            ["Pending (not yet coded)", _n(inc["pending"])],
            *([f"Status {s}", _n(v)] for s, v in inc["by_status"].items()),
        ],
    )
    out += ["### Exclusion reasons", ""]
    if inc["exclusion_reasons"]:
        out += _md_table(
            ["Reason", "Stories"],
            (
                [x["reason"] or "(no reason given)", _n(x["stories"])]
                for x in inc["exclusion_reasons"]
            ),
        )
    else:
        out += ["No story was excluded.", ""]
    val = report["valence"]
    out += ["## Favourable / unfavourable split", ""]
    out += _md_table(
        ["Valence", "Reported", "Included"],
        ([v, _n(val["reported"][v]), _n(val["included"][v])] for v in val["reported"]),
    )
    out += ["## Context", ""]
    for name, entries in report["context"].items():
        out += [f"### By {name}", ""]
        out += _md_table(
            [name.capitalize(), "Stories"],
            ([e["value"] or "(not given)", _n(e["stories"])] for e in entries),
        )
    out += ["## Time between incident and report", ""]
    out += _md_table(
        ["Time since the incident", "Stories"],
        ([t["bucket"], _n(t["stories"])] for t in report["time_since"]),
    )
    out += ["## Classification", ""]
    if not report["classification"]:
        out += ["No final codes yet.", ""]
    for v in report["classification"]:
        out += [
            f"### {v['codebook_name']} (`{v['codebook']}`), version {v['number']}",
            "",
            f"Created by {v['created_by']} on {v['created_at'][:10]}; "
            f"{v['stories']} stories, {v['final_codes']} final codes.",
            "",
            f"Change note: {v['change_note'] or '(none)'}",
            "",
            "Codes: " + ", ".join(f"`{c['key']}` ({c['label']})" for c in v["codes"]),
            "",
        ]
    out += ["## Incidents per category (final codes)", ""]
    out += _md_table(
        ["Code", "Stories", "Satisfying", "Dissatisfying"],
        (
            [c["code"], _n(c["stories"]), _n(c["satisfying"]), _n(c["dissatisfying"])]
            for c in report["codes"]
        ),
    )
    co = report["coders"]
    out += ["## Judges", ""]
    out += [
        f"{co['coders']} coders, {co['codings']} codings, "
        f"{co['double_coded_stories']} stories coded independently by two or more.",
        "",
    ]
    out += ["## Reliability", ""]
    summary = reliability_summary(report["reliability"])
    if summary is None:
        out += [*_md_nested(report["reliability"]), ""]
    else:
        header, rows, lines = summary
        out += [*(f"- {line}" for line in lines), ""]
        out += _md_table(header, rows)
    s = report["saturation"]
    out += ["## Saturation", "", s["rule"] + ".", ""]
    if s.get("saturated") is None:
        out += [f"Not judged: {s.get('reason', 'no data')}.", ""]
    else:
        verdict = "reached" if s["saturated"] else "not reached"
        out += [
            f"Saturation {verdict}: the last 100 coded stories added "
            f"{s['new_codes_in_last_100']} new codes ({s['distinct_codes']} distinct codes in "
            f"{s['stories_coded']} coded stories).",
            "",
        ]
    out += _md_table(
        ["Stories coded", "Distinct codes", "New codes"],
        ([p["stories_coded"], p["distinct_codes"], p["new_codes"]] for p in s["points"]),
    )
    return "\n".join(out)


# --- HTML: the same content, every value escaped ------------------------------------------

_STYLE = (
    "body{font:16px/1.5 system-ui,sans-serif;max-width:60rem;margin:0 auto;padding:1rem;"
    "color:#1d2330}table{border-collapse:collapse;margin:.5rem 0 1rem}th,td{border:1px solid "
    "#c5cbd5;padding:.25rem .6rem;text-align:left}td.num{text-align:right}blockquote{margin:0;"
    "padding:.5rem 1rem;border-left:4px solid #2f6fde;background:#eef3fd}"
    ".suppressed{color:#5b6472;font-style:italic}"
)


def _h(value: Any) -> str:
    return html.escape(str(value))


def _cell(value: Any) -> str:
    if value is None:
        return '<td class="suppressed">suppressed</td>'
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f'<td class="num">{_h(_n(value))}</td>'
    return f"<td>{_h(value)}</td>"


def _html_table(header: list[str], rows: Iterable[list[Any]]) -> str:
    head = "".join(f"<th>{_h(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html_nested(value: Any) -> str:
    if isinstance(value, dict):
        items = "".join(f"<dt>{_h(k)}</dt><dd>{_html_nested(v)}</dd>" for k, v in value.items())
        return f"<dl>{items}</dl>"
    if isinstance(value, list):
        return "<ul>" + "".join(f"<li>{_html_nested(v)}</li>" for v in value) + "</ul>"
    return _h(_scalar(value))


def _html_reliability(rel: dict[str, Any]) -> str:
    summary = reliability_summary(rel)
    if summary is None:
        return _html_nested(rel)
    header, rows, lines = summary
    items = "".join(f"<li>{_h(line)}</li>" for line in lines)
    return f"<ul>{items}</ul>" + _html_table(header, rows)


def study_html(report: dict[str, Any]) -> str:
    survey = report["survey"]
    inc, val, co, sat = (
        report["incidents"],
        report["valence"],
        report["coders"],
        report["saturation"],
    )
    r = report["respondents"]
    parts = [
        '<!doctype html><html lang="en"><head><meta charset="utf-8">',
        f"<title>CIT study report: {_h(survey['title'])}</title><style>{_STYLE}</style>",
        "</head><body>",
        f"<h1>CIT study report: {_h(survey['title'])}</h1>",
        f"<blockquote>{_h(report['note'])}</blockquote>",
        f"<p>Survey <code>{_h(survey['slug'])}</code> (id {_h(survey['id'])}, "
        f"{_h(survey['status'])}, language {_h(survey['language'])}).</p>",
    ]
    if report["suppression"]["applied"]:
        parts.append(
            f"<p>Counts below {_h(report['suppression']['min_cell'])} are suppressed (and "
            "complementary counts so that none can be recovered).</p>"
        )
    parts += [
        "<h2>Reporting checklist (Gremler 2004)</h2>",
        _html_table(
            ["Item", "Reported"],
            ([i["item"], "yes" if i["reported"] else "no"] for i in report["checklist"]),
        ),
        "<h2>Definition of a critical incident</h2>",
        f"<p>{_h(report['incident_definition'])}</p>",
        "<h2>Inclusion criteria</h2><ul>",
        *(f"<li>{_h(c)}</li>" for c in report["inclusion_criteria"]),
        "</ul><h2>Questions asked</h2>",
        _html_table(["Field", "Question"], ([q["field"], q["text"]] for q in report["questions"])),
        "<h2>Respondents</h2>",
        _html_table(
            ["Figure", "Value"],
            [
                ["Stories (submitted forms)", r["stories"]],
                ["Invitations sent", r["invitations_sent"]],
                ["Invitations used", r["invitations_used"]],
                ["Stories via a personal invitation", r["stories_via_invitation"]],
                ["Stories via the open link", r["stories_via_open_link"]],
                ["Stories imported from files", r.get("stories_imported")],
            ],
        ),
        f"<p>{_h(r['note'])}</p>",
        "<h2>Incidents</h2>",
        _html_table(
            ["Figure", "Stories"],
            [
                ["Reported", inc["reported"]],
                ["Included (coded)", inc["included"]],
                ["Excluded", inc["excluded"]],
                ["Pending (not yet coded)", inc["pending"]],
                *([f"Status {s}", v] for s, v in inc["by_status"].items()),
            ],
        ),
        "<h3>Exclusion reasons</h3>",
        _html_table(
            ["Reason", "Stories"],
            ([x["reason"] or "(no reason given)", x["stories"]] for x in inc["exclusion_reasons"]),
        )
        if inc["exclusion_reasons"]
        else "<p>No story was excluded.</p>",
        "<h2>Favourable / unfavourable split</h2>",
        _html_table(
            ["Valence", "Reported", "Included"],
            ([v, val["reported"][v], val["included"][v]] for v in val["reported"]),
        ),
        "<h2>Context</h2>",
    ]
    for name, entries in report["context"].items():
        parts += [
            f"<h3>By {_h(name)}</h3>",
            _html_table(
                [name.capitalize(), "Stories"],
                ([e["value"] or "(not given)", e["stories"]] for e in entries),
            ),
        ]
    parts += [
        "<h2>Time between incident and report</h2>",
        _html_table(
            ["Time since the incident", "Stories"],
            ([t["bucket"], t["stories"]] for t in report["time_since"]),
        ),
        "<h2>Classification</h2>",
    ]
    if not report["classification"]:
        parts.append("<p>No final codes yet.</p>")
    for v in report["classification"]:
        codes = ", ".join(f"{c['key']} ({c['label']})" for c in v["codes"])
        parts += [
            f"<h3>{_h(v['codebook_name'])} ({_h(v['codebook'])}), version {_h(v['number'])}</h3>",
            f"<p>Created by {_h(v['created_by'])} on {_h(v['created_at'][:10])}; "
            f"{_h(v['stories'])} stories, {_h(v['final_codes'])} final codes.</p>",
            f"<p>Change note: {_h(v['change_note'] or '(none)')}</p>",
            f"<p>Codes: {_h(codes)}</p>",
        ]
    parts += [
        "<h2>Incidents per category (final codes)</h2>",
        _html_table(
            ["Code", "Stories", "Satisfying", "Dissatisfying"],
            (
                [c["code"], c["stories"], c["satisfying"], c["dissatisfying"]]
                for c in report["codes"]
            ),
        ),
        "<h2>Judges</h2>",
        f"<p>{_h(co['coders'])} coders, {_h(co['codings'])} codings, "
        f"{_h(co['double_coded_stories'])} stories coded independently by two or more.</p>",
        "<h2>Reliability</h2>",
        _html_reliability(report["reliability"]),
        "<h2>Saturation</h2>",
        f"<p>{_h(sat['rule'])}.</p>",
    ]
    if sat.get("saturated") is None:
        parts.append(f"<p>Not judged: {_h(sat.get('reason', 'no data'))}.</p>")
    else:
        verdict = "reached" if sat["saturated"] else "not reached"
        parts.append(
            f"<p>Saturation {verdict}: the last 100 coded stories added "
            f"{_h(sat['new_codes_in_last_100'])} new codes ({_h(sat['distinct_codes'])} distinct "
            f"codes in {_h(sat['stories_coded'])} coded stories).</p>"
        )
    parts += [
        _html_table(
            ["Stories coded", "Distinct codes", "New codes"],
            ([p["stories_coded"], p["distinct_codes"], p["new_codes"]] for p in sat["points"]),
        ),
        "</body></html>",
    ]
    return "\n".join(parts)
