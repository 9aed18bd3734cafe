"""The bytes of many report shapes over HTTP, hashed: run it on a loaded database before and
after a change to the reports and compare the two outputs (they must be identical).

    python -m bench.reports_hashes sqlite:///var/bench/reports-scale.db > before.txt
    ... change the code ...
    python -m bench.reports_hashes sqlite:///var/bench/reports-scale.db > after.txt
    diff before.txt after.txt

Trends by month, quarter, week and day, ungrouped and by every single dimension, survey, the
pairs and the triple of dimensions, with from/to inside months, a survey filter, CSV, a
codebook version; cross-tabs by each dimension, the Bitner table and co-occurrence; each as a
viewer (suppressed; weeks and days: an admin's suppressed report) and exact (`suppress=false`).
One line per shape: name, status, body length, SHA-256 of the body.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import text

from app.auth import create_token
from app.config import Settings
from app.db import session_scope
from app.main import create_app

ROOT = Path(__file__).resolve().parent.parent
API = "/api/v1/reports"
GROUPINGS = (
    "",
    "survey",
    "touchpoint",
    "channel",
    "segment",
    "touchpoint,channel",
    "channel,touchpoint",
    "channel,segment",
    "touchpoint,segment",
    "survey,touchpoint",
    "survey,channel,segment",
    "touchpoint,channel,segment",
    "segment,touchpoint,channel",
    "survey,touchpoint,channel,segment",
)


def shapes(survey_id: int, version_id: int | None) -> list[tuple[str, str, dict[str, Any]]]:
    """(name, path, params) of every shape; `viewer` or `exact` is added by the caller."""
    found: list[tuple[str, str, dict[str, Any]]] = []
    for period in ("month", "quarter"):
        for grouping in GROUPINGS:
            params = {"period": period, **({"group_by": grouping} if grouping else {})}
            found.append((f"trends {period} by [{grouping}]", "trends", params))
    for grouping in ("", "touchpoint", "touchpoint,channel"):
        for period in ("week", "day"):
            params = {
                "period": period,
                "from": "2025-03-03",
                "to": "2025-04-20",
                **({"group_by": grouping} if grouping else {}),
            }
            found.append((f"trends {period} Mar-Apr by [{grouping}]", "trends", params))
    inside = {"from": "2024-02-10", "to": "2024-11-03"}
    for period, grouping in (
        ("month", ""),
        ("month", "channel,segment"),
        ("quarter", "touchpoint"),
    ):
        params = {"period": period, **inside, **({"group_by": grouping} if grouping else {})}
        found.append((f"trends {period} inside months by [{grouping}]", "trends", params))
    for period, grouping in (("month", "touchpoint,channel"), ("quarter", "segment")):
        params = {"period": period, "survey_id": survey_id, "group_by": grouping}
        found.append((f"trends {period} survey {survey_id} by [{grouping}]", "trends", params))
    for grouping in ("", "touchpoint,channel"):
        params = {
            "period": "month",
            "format": "csv",
            **({"group_by": grouping} if grouping else {}),
        }
        found.append((f"trends month csv by [{grouping}]", "trends", params))
    if version_id is not None:
        for period, grouping in (("quarter", "segment"), ("month", "touchpoint,channel")):
            params = {"period": period, "group_by": grouping, "codebook_version_id": version_id}
            found.append((f"trends {period} version by [{grouping}]", "trends", params))
    for by in ("touchpoint", "channel", "segment"):
        for period in ("quarter", "month", "all"):
            found.append((f"crosstab {by} {period}", "crosstab", {"by": by, "period": period}))
    found.append(
        ("crosstab channel quarter survey", "crosstab", {"by": "channel", "survey_id": survey_id})
    )
    if version_id is not None:
        found.append(("bitner quarter", "bitner", {"codebook_version_id": version_id}))
        found.append(("cooccurrence quarter", "cooccurrence", {"codebook_version_id": version_id}))
    found.append(("cooccurrence quarter plain", "cooccurrence", {"period": "quarter"}))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("database_url")
    parser.add_argument("--only", default="", help="only shapes whose name contains this")
    args = parser.parse_args(argv)
    app = create_app(Settings(database_url=args.database_url, data_dir=ROOT / "var" / "bench"))
    with session_scope(app.state.sessionmaker) as session:
        _, viewer_token = create_token(session, name="hash-viewer", role="viewer")
        _, admin_token = create_token(session, name="hash-admin", role="admin")
        survey_id = int(session.scalar(text("SELECT min(id) FROM surveys")))
        version = session.scalar(text("SELECT min(id) FROM codebook_versions"))
    viewer = {"Authorization": f"Bearer {viewer_token}"}
    admin = {"Authorization": f"Bearer {admin_token}"}
    with TestClient(app) as client:
        for name, path, params in shapes(survey_id, None if version is None else int(version)):
            if args.only not in name:
                continue
            team_only = params.get("period") in ("day", "week")
            for who, headers, extra in (
                (
                    "viewer" if not team_only else "admin suppressed",
                    viewer if not team_only else admin,
                    {},
                ),
                ("exact", admin, {"suppress": "false"}),
            ):
                response = client.get(f"{API}/{path}", params={**params, **extra}, headers=headers)
                digest = hashlib.sha256(response.content).hexdigest()
                print(
                    f"{name} | {who} | {response.status_code} | {len(response.content)} | {digest}"
                )
                sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
