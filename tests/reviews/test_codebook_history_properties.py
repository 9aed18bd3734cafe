"""Property tests over random codebook histories (rename, merge, split in any order): every
coder's codings, the stories' final codes and statuses, and the agreement figures equal what a
fresh study, coded directly under the last version, gives; after each change the per-code
figures are checked against scikit-learn, statsmodels and krippendorff."""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable
from typing import Any

import krippendorff
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.metrics import cohen_kappa_score
from sqlalchemy import select
from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa

from app.auth import Principal, create_token
from app.codebooks.service import apply_changes, create_codebook, current_version, get_codebook
from app.incidents.intake import store_story
from app.incidents.service import CleanStory
from app.models import Codebook, Coding, CodingCode, Incident, IncidentCode, Survey
from app.reviews.reliability import reliability_report
from app.reviews.schemas import CodingUpdate
from app.reviews.service import save_coding
from app.surveys import service as surveys
from app.surveys.schemas import SurveyCreate
from tests.reviews.conftest import STORY

START_CODES = ("c0", "c1", "c2", "c3")
counter = itertools.count(1)
# A coder's answer: a set of codes, "none" (no code applies) or None (excluded).
Answer = frozenset[str] | None


def _content(key: str, codes: list[str]) -> dict[str, Any]:
    return {"key": key, "name": key, "codes": [{"key": c, "label": c.upper()} for c in codes]}


def _study(session: Any, codes: list[str]) -> tuple[int, int]:
    """A codebook with these codes and a survey whose every story is double-coded."""
    key = f"prop-{next(counter)}"
    version = create_codebook(session, _content(key, codes), None)
    survey = surveys.create_survey(
        session,
        SurveyCreate(
            title=key, open=True, codebook_id=version.codebook_id, double_coding_share=100
        ),
        None,
    )
    return version.codebook_id, survey.id


def _code(
    session: Any, survey_id: int, answers: list[tuple[Answer, Answer]], coders: list[Principal]
) -> list[int]:
    stored = session.get(Survey, survey_id)
    ids = []
    for pair in answers:
        result = store_story(
            session,
            stored,
            CleanStory(dict(STORY), None),
            submission_key=f"prop-story-{next(counter)}",
            invitation_token=None,
        )
        assert result.incident is not None
        ids.append(result.incident.id)
        for coder, answer in zip(coders, pair, strict=True):
            if answer is None:
                update = CodingUpdate(exclude=True, exclusion_reason="off topic")
            elif not answer:
                update = CodingUpdate(no_code_applies=True)
            else:
                update = CodingUpdate.model_validate(
                    {"codes": [{"code": c} for c in sorted(answer)]}
                )
            save_coding(session, result.incident.id, update, coder, "*")
    return ids


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[tuple[Answer, Answer]], list[list[dict[str, Any]]]]:
    """Stories with both coders' answers, and a list of changes (each a list of operations)
    valid against the codes as they stand, with split assignments for the carrying stories."""
    n = draw(st.integers(2, 6))
    answer = st.one_of(
        st.none(),
        st.just(frozenset()),
        st.frozensets(st.sampled_from(START_CODES), min_size=1, max_size=3),
    )
    answers = [(draw(answer), draw(answer)) for _ in range(n)]
    active = list(START_CODES)
    current = [list(pair) for pair in answers]  # the model: each coder's codes now
    changes = []
    fresh = itertools.count(1)
    for _ in range(draw(st.integers(1, 4))):
        ops = []
        for _ in range(draw(st.integers(1, 2))):
            kinds = ["rename", "merge"] + (["split"] if len(active) >= 3 else [])
            kind = draw(st.sampled_from(kinds))
            if kind == "rename":
                source = draw(st.sampled_from(active))
                target = f"r{next(fresh)}"
                ops.append({"op": "rename", "from": source, "to": target})
                mapping = {i: {source: [target]} for i in range(n)}
                active[active.index(source)] = target
            elif kind == "merge":
                sources = draw(
                    st.lists(st.sampled_from(active), min_size=1, max_size=3, unique=True)
                )
                others = [c for c in active if c not in sources]
                into = draw(st.sampled_from([*others, f"m{next(fresh)}"]))
                ops.append({"op": "merge", "from": sources, "into": into})
                mapping = {i: {s: [into] for s in sources} for i in range(n)}
                position = active.index(sources[0])
                active = [c for c in active if c not in sources]
                if into not in active:
                    active.insert(min(position, len(active)), into)
            else:
                source = draw(st.sampled_from(active))
                into = draw(
                    st.lists(
                        st.sampled_from([c for c in active if c != source]),
                        min_size=2,
                        max_size=2,
                        unique=True,
                    )
                )
                carriers = [
                    i for i, pair in enumerate(current) if any(a and source in a for a in pair)
                ]
                assign = {
                    i: sorted(draw(st.frozensets(st.sampled_from(into), min_size=1)))
                    for i in carriers
                }
                ops.append({"op": "split", "from": source, "into": into, "assign": assign})
                mapping = {i: {source: assign.get(i, [])} for i in range(n)}
                active.remove(source)
            current = [
                [
                    None if a is None else frozenset(t for c in a for t in mapping[i].get(c, [c]))
                    for a in pair
                ]
                for i, pair in enumerate(current)
            ]
        changes.append(ops)
    return answers, changes


def _apply_model(
    answers: list[tuple[Answer, Answer]], ops: list[dict[str, Any]]
) -> list[tuple[Answer, Answer]]:
    out = []
    for i, pair in enumerate(answers):
        mapped = []
        for a in pair:
            if a is None:
                mapped.append(None)
                continue
            codes = set(a)
            for op in ops:
                if op["op"] == "rename":
                    sources, targets = [op["from"]], [op["to"]]
                elif op["op"] == "merge":
                    sources, targets = op["from"], [op["into"]]
                else:
                    sources, targets = [op["from"]], op["assign"].get(i, [])
                if codes & set(sources):
                    codes = (codes - set(sources)) | set(targets)
            mapped.append(frozenset(codes))
        out.append((mapped[0], mapped[1]))
    return out


def _db_answers(session: Any, ids: list[int], coders: list[Principal]) -> list[tuple[Any, ...]]:
    rows = session.execute(
        select(Coding.incident_id, Coding.coder_id, Coding.excluded, Coding.id).where(
            Coding.incident_id.in_(ids)
        )
    ).all()
    codes: dict[int, set[str]] = {}
    for coding_id, code in session.execute(
        select(CodingCode.coding_id, CodingCode.code).where(
            CodingCode.coding_id.in_([r.id for r in rows])
        )
    ):
        codes.setdefault(coding_id, set()).add(code)
    by = {
        (r.incident_id, r.coder_id): None if r.excluded else frozenset(codes.get(r.id, ()))
        for r in rows
    }
    return [tuple(by[(i, c.id)] for c in coders) for i in ids]


def _reference_checks(answers: list[tuple[Answer, Answer]], report: dict[str, Any]) -> None:
    """Per-code figures against scikit-learn, statsmodels and krippendorff."""
    included = [(a, b) for a, b in answers if a is not None and b is not None]
    for code in report["overall_codes"]:
        figures = report["per_code"][code]
        x = [int(code in a) for a, _ in included]
        y = [int(code in b) for _, b in included]
        alpha = figures["krippendorff_alpha"]["value"]
        if len(set(x + y)) > 1:
            expected = krippendorff.alpha(
                reliability_data=np.array([x, y], dtype=float), level_of_measurement="nominal"
            )
            assert math.isclose(alpha, expected, abs_tol=1e-9), (code, alpha, expected)
            table, _ = aggregate_raters(np.array([x, y]).T)
            fleiss = figures["fleiss_kappa"]["value"]
            assert math.isclose(fleiss, fleiss_kappa(table), abs_tol=1e-9)
        kappas = figures["cohen_kappa"]
        if len(set(x)) > 1 or len(set(y)) > 1:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                expected_kappa = cohen_kappa_score(x, y)
            if kappas and kappas[0]["value"] is not None:
                assert math.isclose(kappas[0]["value"], expected_kappa, abs_tol=1e-9)
        po = figures["percent_agreement"]["value"]
        assert math.isclose(po, sum(p == q for p, q in zip(x, y, strict=True)) / len(x))


COMPARED = (
    "codes",
    "k",
    "n_units",
    "overall_codes",
    "overall",
    "per_code",
    "story_level",
    "single_label",
    "exclusions",
    "include_exclude",
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(history=histories())
def test_codebook_histories_equal_a_fresh_study(
    history: tuple[list[tuple[Answer, Answer]], list[list[dict[str, Any]]]],
    db: Callable[[], Any],
    coders: list[Principal],
) -> None:
    answers, changes = history
    with db() as session:
        codebook_id, survey_id = _study(session, list(START_CODES))
        ids = _code(session, survey_id, answers, coders)
    expected = answers
    for ops in changes:
        with_ids = [
            {**op, "assign": {ids[i]: codes for i, codes in op["assign"].items()}}
            if op["op"] == "split"
            else op
            for op in ops
        ]
        with db() as session:
            apply_changes(session, session.get(Codebook, codebook_id), with_ids, None, "change")
        expected = _apply_model(expected, ops)
        with db() as session:
            assert _db_answers(session, ids, coders) == [tuple(p) for p in expected]
            report = reliability_report(
                session,
                survey_id=survey_id,
                codebook_version_id=None,
                submitted_from=None,
                submitted_to=None,
            )
        _reference_checks(expected, report)

    with db() as session:
        final_codes = [
            c["key"]
            for c in current_version(session, get_codebook(session, codebook_id)).content["codes"]
            if not c["retired"]
        ]
        _fresh_codebook, fresh_survey = _study(session, final_codes)
        fresh_ids = _code(session, fresh_survey, expected, coders)
    with db() as session:
        for story, fresh in zip(ids, fresh_ids, strict=True):
            mine, theirs = session.get(Incident, story), session.get(Incident, fresh)
            assert mine is not None and theirs is not None
            assert mine.status == theirs.status, (story, mine.status, theirs.status)
            finals = [
                set(session.scalars(select(IncidentCode.code).where(IncidentCode.incident_id == i)))
                for i in (story, fresh)
            ]
            assert finals[0] == finals[1]
        reports = [
            reliability_report(
                session,
                survey_id=s,
                codebook_version_id=None,
                submitted_from=None,
                submitted_to=None,
            )
            for s in (survey_id, fresh_survey)
        ]
    for key in COMPARED:
        assert reports[0][key] == reports[1][key], key


def _coders(db: Callable[[], Any]) -> list[Principal]:
    with db() as session:
        return [create_token(session, name=n, role="researcher")[0] for n in ("ann", "ben")]


@pytest.fixture
def coders(db: Callable[[], Any]) -> list[Principal]:
    return _coders(db)
