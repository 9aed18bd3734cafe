"""monthly detail rollups: the detail rollups summed per calendar month

report_story_months_detail / report_code_months_detail (survey, month, valence, touchpoint,
channel, segment): month, quarter and whole-range reports grouped by two or more dimensions read
them instead of the daily detail (issue 12: such a report read about a million daily rows at a
million stories and took 2-6 s). Derived data, filled here from the daily detail and kept by the
worker's fold from the same delta rows in the same transaction, as migration 1203's tables.

The fill holds the fold's advisory lock on PostgreSQL (see 1203); stop workers still running
the previous code for the upgrade, or run `cit reports rebuild` after it.

Revision ID: 1204
Revises: 1203
Create Date: 2026-12-02 16:00:00+00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '1204'
down_revision: str | None = '1203'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# app.reports.rollups._FOLD_LOCK
FOLD_LOCK = 7_301_911
KEY = ('survey_id', 'month', 'valence', 'touchpoint', 'channel', 'segment')


def _key() -> list[sa.Column]:
    return [
        sa.Column('survey_id', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('month', sa.Date(), nullable=False),
        sa.Column('valence', sa.String(length=16), nullable=False),
        sa.Column('touchpoint', sa.String(length=200), nullable=False),
        sa.Column('channel', sa.String(length=200), nullable=False),
        sa.Column('segment', sa.String(length=200), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        'report_story_months_detail',
        *_key(),
        sa.Column('stories', sa.Integer(), nullable=False),
        sa.Column('confirmed', sa.Integer(), nullable=False),
        sa.Column('excluded', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(*KEY, name=op.f('pk_report_story_months_detail')),
        sqlite_with_rowid=False,
    )
    op.create_table(
        'report_code_months_detail',
        *_key(),
        sa.Column('codebook_version_id', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('code', sa.String(length=100), nullable=False),
        sa.Column('n', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(
            *KEY, 'codebook_version_id', 'code', name=op.f('pk_report_code_months_detail')
        ),
        sqlite_with_rowid=False,
    )
    bind = op.get_bind()
    if bind.dialect.name == 'postgresql':
        op.execute(f'SELECT pg_advisory_xact_lock({FOLD_LOCK})')
        month = "CAST(date_trunc('month', day) AS date)"
    else:
        month = "strftime('%Y-%m-01', day)"
    key = ', '.join(KEY)
    op.execute(
        f'INSERT INTO report_story_months_detail ({key}, stories, confirmed, excluded) '
        f'SELECT survey_id, {month}, valence, touchpoint, channel, segment, SUM(stories), '
        'SUM(confirmed), SUM(excluded) FROM report_story_days_detail GROUP BY 1, 2, 3, 4, 5, 6'
    )
    op.execute(
        f'INSERT INTO report_code_months_detail ({key}, codebook_version_id, code, n) '
        f'SELECT survey_id, {month}, valence, touchpoint, channel, segment, '
        'codebook_version_id, code, SUM(n) FROM report_code_days_detail '
        'GROUP BY 1, 2, 3, 4, 5, 6, 7, 8'
    )


def downgrade() -> None:
    op.drop_table('report_code_months_detail')
    op.drop_table('report_story_months_detail')
