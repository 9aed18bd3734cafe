"""grouping rollups: the monthly detail summed per pair (and the triple) of dimensions

report_story_groupings / report_code_groupings: the detail rollup per grouping of two
dimensions (touchpoint x channel, touchpoint x segment, channel x segment; per month and per
quarter) and of all three (per quarter), keyed in the order a report groups by (dimensions,
grain, period start, valence, touchpoint, channel, segment, [code,] survey), so that month and
quarter reports grouped by two or three dimensions read their own rows in key order (issue 12:
such a report sorted the ~107,000 monthly detail rows at a million stories and took 0.2-0.7 s).
Derived data, filled here from the monthly detail and kept by the worker's fold from the same
delta rows in the same transaction, as migrations 1203 and 1204's tables.

The fill holds the fold's advisory lock on PostgreSQL (see 1203); stop workers still running
the previous code for the upgrade, or run `cit reports rebuild` after it.

Revision ID: 1205
Revises: 1204
Create Date: 2026-12-03 16:00:00+00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '1205'
down_revision: str | None = '1204'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# app.reports.rollups._FOLD_LOCK
FOLD_LOCK = 7_301_911
KEY = ('dimensions', 'grain', 'period_start', 'valence', 'touchpoint', 'channel', 'segment')
DIMENSIONS = ('touchpoint', 'channel', 'segment')
PAIRS = ('touchpoint,channel', 'touchpoint,segment', 'channel,segment')
# app.reports.rollups.GROUPING_GRAINS
GROUPING_GRAINS = (
    *((pair, 'month') for pair in PAIRS),
    *((pair, 'quarter') for pair in PAIRS),
    ('touchpoint,channel,segment', 'quarter'),
)


def _key() -> list[sa.Column]:
    return [
        sa.Column('dimensions', sa.String(length=40), nullable=False),
        sa.Column('grain', sa.String(length=8), nullable=False),
        sa.Column('period_start', sa.Date(), nullable=False),
        sa.Column('valence', sa.String(length=16), nullable=False),
        sa.Column('touchpoint', sa.String(length=200), nullable=False),
        sa.Column('channel', sa.String(length=200), nullable=False),
        sa.Column('segment', sa.String(length=200), nullable=False),
    ]


def _start(dialect: str, grain: str) -> str:
    if dialect == 'postgresql':
        return f"CAST(date_trunc('{grain}', CAST(month AS timestamp)) AS date)"
    if grain == 'month':
        return "strftime('%Y-%m-01', month)"
    return (
        "printf('%s-%02d-01', strftime('%Y', month), "
        "(CAST(strftime('%m', month) AS INTEGER) - 1) / 3 * 3 + 1)"
    )


def upgrade() -> None:
    op.create_table(
        'report_story_groupings',
        *_key(),
        sa.Column('survey_id', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('stories', sa.Integer(), nullable=False),
        sa.Column('confirmed', sa.Integer(), nullable=False),
        sa.Column('excluded', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(*KEY, 'survey_id', name=op.f('pk_report_story_groupings')),
        sqlite_with_rowid=False,
    )
    op.create_table(
        'report_code_groupings',
        *_key(),
        sa.Column('code', sa.String(length=100), nullable=False),
        sa.Column('survey_id', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('codebook_version_id', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('n', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(
            *KEY, 'code', 'survey_id', 'codebook_version_id', name=op.f('pk_report_code_groupings')
        ),
        sqlite_with_rowid=False,
    )
    dialect = op.get_bind().dialect.name
    if dialect == 'postgresql':
        op.execute(f'SELECT pg_advisory_xact_lock({FOLD_LOCK})')
    key = ', '.join(KEY)
    for grouping, grain in GROUPING_GRAINS:
        values = [d if d in grouping.split(',') else f"'' AS {d}" for d in DIMENSIONS]
        columns = ', '.join(
            [f"'{grouping}'", f"'{grain}'", _start(dialect, grain), 'valence', *values]
        )
        op.execute(
            f'INSERT INTO report_story_groupings ({key}, survey_id, stories, confirmed, '
            f'excluded) SELECT {columns}, survey_id, SUM(stories), SUM(confirmed), '
            'SUM(excluded) FROM report_story_months_detail GROUP BY 1, 2, 3, 4, 5, 6, 7, 8'
        )
        op.execute(
            f'INSERT INTO report_code_groupings ({key}, code, survey_id, codebook_version_id, '
            f'n) SELECT {columns}, code, survey_id, codebook_version_id, SUM(n) '
            'FROM report_code_months_detail GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10'
        )


def downgrade() -> None:
    op.drop_table('report_code_groupings')
    op.drop_table('report_story_groupings')
