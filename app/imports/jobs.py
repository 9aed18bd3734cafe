"""The upload's job: the worker runs the same import as `cit import incidents`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.errors import AppError
from app.imports.service import ImportFailed, ImportOptions, import_file


class ImportJobFailed(AppError):
    status = 422
    title = "Import failed"
    type_slug = "import-failed"


def run_import_job(
    factory: sessionmaker[Session], settings: Settings, payload: dict[str, Any]
) -> dict[str, Any]:
    path = Path(payload["path"])
    try:
        report = import_file(
            factory,
            path,
            int(payload["survey_id"]),
            settings,
            ImportOptions.from_dict(payload.get("options") or {}),
            imported_by=str(payload["imported_by"]),
            file_name=str(payload.get("file_name") or path.name),
            run_id=int(payload["import_id"]),
        )
    except ImportFailed as exc:
        raise ImportJobFailed(str(exc)) from exc
    # The upload has served its purpose; the stories hold what the research needs.
    path.unlink(missing_ok=True)
    return {
        "import_id": report.import_id,
        "stored": report.stored,
        "duplicates": report.duplicates,
        "error_count": report.error_count,
    }
