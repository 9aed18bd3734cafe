"""rollups by dimension: stories and final codes per day and value of one dimension

report_story_days_by / report_code_days_by: the daily rollups by touchpoint, channel or segment
alone (`dimension`, `value`), so that a report grouped by one of them reads a few rows per value
and day instead of every combination of the three in the _detail tables. Derived data, like the
other rollups: filled here from the _detail tables; kept by the worker's fold from the same
delta rows (no trigger change, no new row on the write path).

Revision ID: 1202
Revises: 1301
Create Date: 2026-12-02 01:00:00+00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '1202'
down_revision: str | None = '1002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DIMENSIONS = ('touchpoint', 'channel', 'segment')


def _key() -> list[sa.Column]:
    return [
        sa.Column('dimension', sa.String(length=16), nullable=False),
        sa.Column('survey_id', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('day', sa.Date(), nullable=False),
        sa.Column('valence', sa.String(length=16), nullable=False),
        sa.Column('value', sa.String(length=200), nullable=False),
    ]


def upgrade() -> None:
    keys = ('dimension', 'survey_id', 'day', 'valence', 'value')
    op.create_table(
        'report_story_days_by',
        *_key(),
        sa.Column('stories', sa.Integer(), nullable=False),
        sa.Column('confirmed', sa.Integer(), nullable=False),
        sa.Column('excluded', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(*keys, name=op.f('pk_report_story_days_by')),
        sqlite_with_rowid=False,
    )
    op.create_table(
        'report_code_days_by',
        *_key(),
        sa.Column('codebook_version_id', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('code', sa.String(length=100), nullable=False),
        sa.Column('n', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(
            *keys, 'codebook_version_id', 'code', name=op.f('pk_report_code_days_by')
        ),
        sqlite_with_rowid=False,
    )
    for dimension in DIMENSIONS:
        op.execute(
            'INSERT INTO report_story_days_by '
            '(dimension, survey_id, day, valence, value, stories, confirmed, excluded) '
            f"SELECT '{dimension}', survey_id, day, valence, {dimension}, SUM(stories), "
            'SUM(confirmed), SUM(excluded) FROM report_story_days_detail '
            f'GROUP BY survey_id, day, valence, {dimension}'
        )
        op.execute(
            'INSERT INTO report_code_days_by '
            '(dimension, survey_id, day, valence, value, codebook_version_id, code, n) '
            f"SELECT '{dimension}', survey_id, day, valence, {dimension}, codebook_version_id, "
            'code, SUM(n) FROM report_code_days_detail '
            f'GROUP BY survey_id, day, valence, {dimension}, codebook_version_id, code'
        )


def downgrade() -> None:
    op.drop_table('report_code_days_by')
    op.drop_table('report_story_days_by')
