"""review queue indexes: open stories by date (overall and per survey), leases by coder

The review queue asked for the next story with one ORDER BY over every story (assignment tier,
certainty, date): 0.7 s at 200,000 stories. It now asks tier by tier, each in an order an index
holds: these partial indexes keep only the stories waiting for a coder, so they stay small
however many are done.

Revision ID: 0007
Revises: 1201
Create Date: 2026-12-01 23:00:00+00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0007'
down_revision: str | None = '1201'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OPEN = "status IN ('new', 'in_review')"


def upgrade() -> None:
    op.create_index(
        'ix_incidents_open_by_date', 'incidents', ['submitted_at', 'id'],
        sqlite_where=sa.text(OPEN), postgresql_where=sa.text(OPEN),
    )
    op.create_index(
        'ix_incidents_open_by_survey_date', 'incidents', ['survey_id', 'submitted_at', 'id'],
        sqlite_where=sa.text(OPEN), postgresql_where=sa.text(OPEN),
    )
    op.create_index(op.f('ix_review_leases_coder_id'), 'review_leases', ['coder_id'])


def downgrade() -> None:
    op.drop_index(op.f('ix_review_leases_coder_id'), table_name='review_leases')
    op.drop_index('ix_incidents_open_by_survey_date', table_name='incidents')
    op.drop_index('ix_incidents_open_by_date', table_name='incidents')
