"""Imports of files as research teams have them: the airline tweets' and CFPB complaints' CSV
shapes, a cp1252 copy, a ';' copy, UTF-16, an xlsx copy; mapping, defaults, dry runs, clear
errors at the record's first line, the API upload as a job with progress."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from typer.testing import CliRunner

from app.config import Settings, get_settings
from app.imports.service import ImportFailed, ImportOptions, dry_run, import_file
from app.models import ImportRun, Incident, Survey
from app.suggestions.worker import Worker

# A few rows shaped like the published files (written here; the data sets stay outside).
TWEETS = [
    ["tweet_id", "airline_sentiment", "negativereason", "airline", "text", "tweet_created"],
    [
        "570306133677760513",
        "neutral",
        "",
        "Virgin America",
        "@VirginAmerica What @dhepburn said.",
        "2015-02-24 11:35:52 -0800",
    ],
    [
        "570301130888122368",
        "positive",
        "",
        "Virgin America",
        "@VirginAmerica plus you've added commercials to the experience... tacky. Café crème ☕",
        "2015-02-24 11:15:59 -0800",
    ],
    [
        "570301083672813571",
        "negative",
        "Late Flight",
        "United",
        "@united my flight was Cancelled Flightled, nobody at the gate \u2013 naïve of me",
        "2015-02-24 11:15:48 -0800",
    ],
]
CFPB = [
    [
        "Date received",
        "Product",
        "Issue",
        "Consumer complaint narrative",
        "Company",
        "State",
        "Complaint ID",
    ],
    [
        "2023-01-05",
        "Credit card",
        "Fees",
        "I was charged a late fee of {$35.00} although I paid on XX/XX/2022.\n"
        "The bank refused to reverse it.\n\nI want it refunded.",
        "BANK A",
        "CA",
        "6400001",
    ],
    ["2023-01-06", "Mortgage", "Servicing", "", "BANK B", "TX", "6400002"],
    [
        "2023-01-07",
        "Checking",
        "Account",
        "They closed my account without telling me. XXXX told me to call back.",
        "BANK C",
        "NY",
        "6400003",
    ],
]


def _write_csv(
    path: Path, rows: list[list[str]], *, encoding: str = "utf-8", delimiter: str = ","
) -> Path:
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=delimiter, lineterminator="\r\n").writerows(rows)
    path.write_bytes(buffer.getvalue().encode(encoding))
    return path


def _stories(db: Callable[[], Any]) -> list[Incident]:
    with db() as session:
        found = list(session.scalars(select(Incident).order_by(Incident.id)))
        session.expunge_all()
        return found


def _run(app: FastAPI, path: Path, survey: Survey, settings: Settings, **options: Any) -> Any:
    return import_file(
        app.state.sessionmaker,
        path,
        survey.id,
        settings,
        ImportOptions(**options),
        imported_by="tester",
    )


def test_airline_tweets_with_a_valence_mapping_keep_neutral_stories(
    app: FastAPI,
    settings: Settings,
    make_survey: Callable[..., Survey],
    db: Callable[[], Any],
    tmp_path: Path,
) -> None:
    survey = make_survey()
    path = _write_csv(tmp_path / "Tweets.csv", TWEETS)
    report = _run(
        app, path, survey, settings, mapping={"airline_sentiment": "valence", "tweet_id": "id"}
    )
    assert report.error_count == 0 and report.stored == 3
    stories = _stories(db)
    assert [s.valence for s in stories] == ["neutral", "satisfying", "dissatisfying"]
    assert all(s.source == "import" and s.consent == "unknown" for s in stories)
    assert stories[1].what_happened.endswith("Café crème ☕")
    assert stories[2].attributes["negativereason"] == "Late Flight"
    assert stories[2].attributes["airline"] == "United"
    with db() as session:
        run = session.get(ImportRun, report.import_id)
        assert (run.file_name, run.status, run.stored, run.imported_by) == (
            "Tweets.csv",
            "done",
            3,
            "tester",
        )
        assert run.details["delimiter"] == "," and run.details["encoding"] == "utf-8"
    assert {s.import_id for s in stories} == {report.import_id}


def test_without_a_valence_column_stories_are_stored_as_unknown(
    app: FastAPI,
    settings: Settings,
    make_survey: Callable[..., Survey],
    db: Callable[[], Any],
    tmp_path: Path,
) -> None:
    survey = make_survey()
    path = _write_csv(tmp_path / "plain.csv", [["text"], ["The driver waited for me."]])
    assert _run(app, path, survey, settings).stored == 1
    assert _stories(db)[0].valence == "unknown" and _stories(db)[0].status == "new"


def test_cfpb_needs_its_story_column_mapped_and_errors_name_the_first_line(
    app: FastAPI,
    settings: Settings,
    make_survey: Callable[..., Survey],
    db: Callable[[], Any],
    tmp_path: Path,
) -> None:
    survey = make_survey()
    path = _write_csv(tmp_path / "complaints_sample.csv", CFPB)
    with pytest.raises(ImportFailed) as refused:
        _run(app, path, survey, settings)
    assert "Consumer complaint narrative" in str(refused.value) and "--map" in str(refused.value)
    assert _stories(db) == []
    report = _run(
        app,
        path,
        survey,
        settings,
        mapping={
            "Consumer complaint narrative": "what_happened",
            "Complaint ID": "id",
            "Date received": "submitted_at",
        },
        defaults={"valence": "dissatisfying"},
    )
    assert report.stored == 2
    # The empty narrative is the record on line 6 (the first record spans lines 2-5).
    assert [(e.line, e.column) for e in report.errors] == [(6, "what_happened")]
    stories = _stories(db)
    assert (
        stories[0].what_happened.startswith("I was charged")
        and "\n\nI want" in stories[0].what_happened
    )
    assert (
        stories[0].valence == "dissatisfying" and stories[0].attributes["Product"] == "Credit card"
    )
    assert stories[0].submitted_at.date().isoformat() == "2023-01-05"


@pytest.mark.parametrize(
    ("encoding", "delimiter", "found"),
    [
        ("cp1252", ",", "cp1252"),
        ("utf-8-sig", ";", "utf-8-sig"),
        ("utf-16", "\t", "utf-16"),
        ("utf-8", ";", "utf-8"),
    ],
)
def test_encodings_and_delimiters_are_found(
    app: FastAPI,
    settings: Settings,
    make_survey: Callable[..., Survey],
    db: Callable[[], Any],
    tmp_path: Path,
    encoding: str,
    delimiter: str,
    found: str,
) -> None:
    survey = make_survey()
    rows = [
        ["what_happened", "valence", "segment"],
        [
            "Le café était froid \u2013 service naïf, 5 €",
            "dissatisfying",
            "a;b" if delimiter != ";" else "ab",
        ],
    ]
    path = _write_csv(tmp_path / "copy.csv", rows, encoding=encoding, delimiter=delimiter)
    report = _run(app, path, survey, settings)
    assert report.error_count == 0, report.errors
    assert report.table.encoding == found and report.table.delimiter == delimiter
    assert _stories(db)[0].what_happened == "Le café était froid \u2013 service naïf, 5 €"


def test_xlsx_copy_imports_and_a_broken_workbook_is_one_clear_error(
    app: FastAPI,
    settings: Settings,
    make_survey: Callable[..., Survey],
    db: Callable[[], Any],
    tmp_path: Path,
) -> None:
    survey = make_survey()
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    for number, row in enumerate(TWEETS):
        # Ids as numbers (Excel keeps 15 digits: small ones here), counts as floats.
        sheet.append(
            [row[0] if number == 0 else 1000 + number, *row[1:], "retweets" if number == 0 else 2.0]
        )
    workbook.save(tmp_path / "tweets.xlsx")
    report = _run(
        app,
        tmp_path / "tweets.xlsx",
        survey,
        settings,
        mapping={"airline_sentiment": "valence", "tweet_id": "id"},
    )
    assert (report.stored, report.error_count) == (3, 0)
    first = _stories(db)[0]
    assert (
        first.attributes["import_id"] == "1001" and first.attributes["retweets"] == "2"
    )  # not 2.0
    broken = tmp_path / "broken.xlsx"
    broken.write_bytes(b"this is not a workbook")
    with pytest.raises(ImportFailed, match="not an Excel workbook"):
        _run(app, broken, survey, settings)


def test_dry_run_previews_and_stores_nothing(
    app: FastAPI,
    settings: Settings,
    make_survey: Callable[..., Survey],
    db: Callable[[], Any],
    tmp_path: Path,
) -> None:
    survey = make_survey()
    rows = [["text", "valence"], ["One", "positive"], ["", "negative"], ["Three", "sideways"]]
    path = _write_csv(tmp_path / "d.csv", rows)
    report = dry_run(app.state.sessionmaker, path, survey.id, settings, ImportOptions())
    assert [p["what_happened"] for p in report.preview] == ["One"]
    assert report.preview[0]["valence"] == "satisfying"
    assert [(e.line, e.column, e.value) for e in report.errors] == [
        (3, "what_happened", None),
        (4, "valence", "sideways"),
    ]
    assert _stories(db) == []


def test_cli_import_with_map_default_and_dry_run(
    app: FastAPI,
    settings: Settings,
    make_survey: Callable[..., Survey],
    db: Callable[[], Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from app.cli import cli

    survey = make_survey()
    path = _write_csv(tmp_path / "complaints.csv", CFPB)
    monkeypatch.setenv("CIT_DATABASE_URL", settings.database_url)
    get_settings.cache_clear()
    try:
        args = [
            "import",
            "incidents",
            str(path),
            "--survey",
            str(survey.id),
            "--map",
            "Consumer complaint narrative=what_happened",
            "--default",
            "valence=dissatisfying",
        ]
        preview = CliRunner().invoke(cli, [*args, "--dry-run"])
        assert preview.exit_code == 1 and "line 6" in preview.output and "dry run" in preview.output
        assert "I was charged" in preview.output
        assert _stories(db) == []
        done = CliRunner().invoke(cli, args)
        assert done.exit_code == 1 and "2 stories imported" in done.output  # one record is bad
        unreadable = tmp_path / "x.xlsx"
        unreadable.write_bytes(b"\x00\x01")
        failed = CliRunner().invoke(
            cli, ["import", "incidents", str(unreadable), "--survey", str(survey.id)]
        )
        assert failed.exit_code == 1 and "Traceback" not in failed.output
        assert "not an Excel workbook" in failed.output
    finally:
        get_settings.cache_clear()
    assert len(_stories(db)) == 2


def test_api_upload_is_a_job_with_progress_and_the_study_report_tells_sources_apart(
    app: FastAPI,
    client: TestClient,
    settings: Settings,
    make_survey: Callable[..., Survey],
    admin: dict[str, str],
    db: Callable[[], Any],
    tmp_path: Path,
) -> None:
    survey = make_survey()
    client.post(
        f"/api/v1/public/surveys/{survey.slug}/incidents",
        json={"what_happened": "Typed in the form.", "valence": "satisfying"},
    )
    data = _write_csv(tmp_path / "Tweets.csv", TWEETS).read_bytes()
    url = f"/api/v1/surveys/{survey.id}/imports"
    files = {"file": ("Tweets.csv", data, "text/csv")}
    form = {"map": ["airline_sentiment=valence", "tweet_id=id"]}
    checked = client.post(url, files=files, data={**form, "dry_run": "true"}, headers=admin)
    assert checked.status_code == 200, checked.text
    assert checked.json()["would_import"] == 3 and len(checked.json()["preview"]) == 3
    bad = client.post(url, files=files, data={"map": ["airline_sentiment=mood"]}, headers=admin)
    assert bad.status_code == 400 and "mood" in bad.json()["detail"]
    queued = client.post(url, files=files, data=form, headers=admin)
    assert queued.status_code == 202, queued.text
    run = queued.json()
    assert (
        run["status"] == "queued" and queued.headers["location"] == f"/api/v1/imports/{run['id']}"
    )
    Worker(app.state.sessionmaker, settings, name="test").drain()
    done = client.get(f"/api/v1/imports/{run['id']}", headers=admin).json()
    assert (done["status"], done["stored"], done["progress"], done["rows_total"]) == (
        "done",
        3,
        1.0,
        3,
    )
    assert (
        client.get(f"/api/v1/surveys/{survey.id}/imports", headers=admin).json()[0]["id"]
        == run["id"]
    )
    assert not any((settings.data_dir / "imports").iterdir())  # the upload is gone
    report = client.get(
        "/api/v1/reports/study", params={"survey_id": survey.id}, headers=admin
    ).json()
    respondents = report["respondents"]
    assert (
        respondents["stories_via_open_link"],
        respondents["stories_imported"],
        respondents["stories_via_invitation"],
    ) == (1, 3, 0)
    with db() as session:
        assert session.scalar(select(func.count()).select_from(Incident)) == 4
    # Trends count only stories with a clear valence.
    trends = client.get(
        "/api/v1/reports/trends", params={"survey_id": survey.id}, headers=admin
    ).json()
    assert {v for p in trends["periods"] for v in p["valences"]} <= {"satisfying", "dissatisfying"}


def test_an_upload_that_cannot_be_read_fails_its_job_with_one_message(
    app: FastAPI,
    client: TestClient,
    settings: Settings,
    make_survey: Callable[..., Survey],
    admin: dict[str, str],
    db: Callable[[], Any],
) -> None:
    survey = make_survey()
    queued = client.post(
        f"/api/v1/surveys/{survey.id}/imports",
        files={
            "file": ("old.xlsx", b"PK\x03\x04 not really a workbook", "application/octet-stream")
        },
        headers=admin,
    )
    assert queued.status_code == 202, queued.text
    Worker(app.state.sessionmaker, settings, name="test").drain()
    run = client.get(f"/api/v1/imports/{queued.json()['id']}", headers=admin).json()
    assert run["status"] == "failed" and "not an Excel workbook" in run["failure"]
    assert "Traceback" not in run["failure"]
    job = client.get(f"/api/v1/jobs/{run['job_id']}", headers=admin).json()
    assert job["status"] == "failed" and job["attempts"] == 1  # explained: not retried
    with db() as session:
        assert session.scalar(select(func.count()).select_from(Incident)) == 0
