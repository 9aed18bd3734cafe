"""monthly rollups: the narrow and by-dimension rollups summed per calendar month

report_story_months / report_code_months (survey, month, valence) and report_story_months_by /
report_code_months_by (as the _days_by tables, per month): month, quarter and whole-range
reports read a thirtieth of the daily rows (issue 12: a month report grouped by touchpoint read
124,000 daily rows at a million stories). `month` is the month's first day. Derived data, like
the other rollups: filled here from the daily tables, kept by the worker's fold from the same
delta rows in the same transaction (no trigger change, no new row on the write path); pending
deltas are read on top of both, so an upgraded database reports exactly at once.

The fill holds the fold's advisory lock on PostgreSQL, so no fold moves deltas into the daily
tables between their reading here and the commit. A worker still running the previous code
would fold into the daily tables only: stop the workers for the upgrade (or run
`cit reports rebuild` after it).

Revision ID: 1203
Revises: 1202
Create Date: 2026-12-02 04:00:00+00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '1203'
down_revision: str | None = '1202'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# app.reports.rollups._FOLD_LOCK
FOLD_LOCK = 7_301_911


def _key(by: bool) -> list[sa.Column]:
    columns = [
        sa.Column('survey_id', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('month', sa.Date(), nullable=False),
        sa.Column('valence', sa.String(length=16), nullable=False),
    ]
    if by:
        columns.insert(0, sa.Column('dimension', sa.String(length=16), nullable=False))
        columns.append(sa.Column('value', sa.String(length=200), nullable=False))
    return columns


def _story_counts() -> list[sa.Column]:
    return [
        sa.Column('stories', sa.Integer(), nullable=False),
        sa.Column('confirmed', sa.Integer(), nullable=False),
        sa.Column('excluded', sa.Integer(), nullable=False),
    ]


def _code_columns() -> list[sa.Column]:
    return [
        sa.Column('codebook_version_id', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('code', sa.String(length=100), nullable=False),
        sa.Column('n', sa.Integer(), nullable=False),
    ]


def upgrade() -> None:
    narrow = ('survey_id', 'month', 'valence')
    by = ('dimension', *narrow, 'value')
    op.create_table(
        'report_story_months',
        *_key(False),
        *_story_counts(),
        sa.PrimaryKeyConstraint(*narrow, name=op.f('pk_report_story_months')),
        sqlite_with_rowid=False,
    )
    op.create_table(
        'report_code_months',
        *_key(False),
        *_code_columns(),
        sa.PrimaryKeyConstraint(
            *narrow, 'codebook_version_id', 'code', name=op.f('pk_report_code_months')
        ),
        sqlite_with_rowid=False,
    )
    op.create_table(
        'report_story_months_by',
        *_key(True),
        *_story_counts(),
        sa.PrimaryKeyConstraint(*by, name=op.f('pk_report_story_months_by')),
        sqlite_with_rowid=False,
    )
    op.create_table(
        'report_code_months_by',
        *_key(True),
        *_code_columns(),
        sa.PrimaryKeyConstraint(
            *by, 'codebook_version_id', 'code', name=op.f('pk_report_code_months_by')
        ),
        sqlite_with_rowid=False,
    )
    bind = op.get_bind()
    if bind.dialect.name == 'postgresql':
        op.execute(f'SELECT pg_advisory_xact_lock({FOLD_LOCK})')
        month = "CAST(date_trunc('month', day) AS date)"
    else:
        month = "strftime('%Y-%m-01', day)"
    stories = 'SUM(stories), SUM(confirmed), SUM(excluded)'
    op.execute(
        'INSERT INTO report_story_months (survey_id, month, valence, stories, confirmed, '
        f'excluded) SELECT survey_id, {month}, valence, {stories} FROM report_story_days '
        'GROUP BY 1, 2, 3'
    )
    op.execute(
        'INSERT INTO report_code_months (survey_id, month, valence, codebook_version_id, code, '
        f'n) SELECT survey_id, {month}, valence, codebook_version_id, code, SUM(n) '
        'FROM report_code_days GROUP BY 1, 2, 3, 4, 5'
    )
    op.execute(
        'INSERT INTO report_story_months_by (dimension, survey_id, month, valence, value, '
        f'stories, confirmed, excluded) SELECT dimension, survey_id, {month}, valence, value, '
        f'{stories} FROM report_story_days_by GROUP BY 1, 2, 3, 4, 5'
    )
    op.execute(
        'INSERT INTO report_code_months_by (dimension, survey_id, month, valence, value, '
        f'codebook_version_id, code, n) SELECT dimension, survey_id, {month}, valence, value, '
        'codebook_version_id, code, SUM(n) FROM report_code_days_by GROUP BY 1, 2, 3, 4, 5, 6, 7'
    )


def downgrade() -> None:
    op.drop_table('report_code_months_by')
    op.drop_table('report_story_months_by')
    op.drop_table('report_code_months')
    op.drop_table('report_story_months')
