"""report generation: one number that the writes changing a report's inputs raise

report_generation holds one row (id 1). The API's report cache (app.reports.cache) keys each
finished trends report and table by it and by the pending delta rows (count and highest id of
report_story_deltas / report_code_deltas), so a repeated request answers from memory and an
If-None-Match from the cached ETag without computing anything.

What raises it, each in the writing transaction:
- the fold and `rebuild` (app.reports.rollups), which move or drop delta rows: the figures stay
  the same, but the delta count the key holds falls and could later come back with other rows;
- these triggers, on any insert, update or delete of codebook_versions: a report under a
  codebook version maps every recorded code through the codebook's versions (vocabulary), read
  at read time, and a new version changes how the older ones map.
Stories and final codes do not raise it (issue 11: no shared row on the submission path); their
triggers append delta rows, which the key counts.

Revision ID: 1402
Revises: 1401
Create Date: 2026-12-06 21:30:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "1402"
down_revision: str | None = "1401"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TRIGGERS = (
    ("report_generation_codebook_versions_insert", "INSERT"),
    ("report_generation_codebook_versions_update", "UPDATE"),
    ("report_generation_codebook_versions_delete", "DELETE"),
)
# The row may be missing (a test emptying every table): put it back, then raise it.
BUMP_SQLITE = (
    "INSERT OR IGNORE INTO report_generation (id, generation) VALUES (1, 0);\n"
    "  UPDATE report_generation SET generation = generation + 1 WHERE id = 1"
)
BUMP_POSTGRES = (
    "INSERT INTO report_generation (id, generation) VALUES (1, 1) "
    "ON CONFLICT (id) DO UPDATE SET generation = report_generation.generation + 1"
)


def upgrade() -> None:
    op.create_table(
        "report_generation",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_report_generation")),
    )
    op.execute("INSERT INTO report_generation (id, generation) VALUES (1, 0)")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION report_generation_bump() RETURNS trigger LANGUAGE plpgsql AS $$\n"
            f"BEGIN\n  {BUMP_POSTGRES};\n  RETURN NULL;\nEND\n$$"
        )
        # Once per statement: a codebook change writes its version in one.
        op.execute(
            "CREATE TRIGGER report_generation_codebook_versions AFTER INSERT OR UPDATE OR "
            "DELETE OR TRUNCATE ON codebook_versions FOR EACH STATEMENT "
            "EXECUTE FUNCTION report_generation_bump()"
        )
        return
    for name, event in TRIGGERS:
        op.execute(
            f"CREATE TRIGGER {name} AFTER {event} ON codebook_versions FOR EACH ROW\n"
            f"BEGIN\n  {BUMP_SQLITE};\nEND"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER report_generation_codebook_versions ON codebook_versions")
        op.execute("DROP FUNCTION report_generation_bump()")
    else:
        for name, _event in TRIGGERS:
            op.execute(f"DROP TRIGGER {name}")
    op.drop_table("report_generation")
