"""suggestion layers: auto-activation per codebook, exclusion suggestions, redaction marker

Revision ID: 1301
Revises: 0901
Create Date: 2026-12-01 13:00:00+00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.models.base

revision: str = '1301'
down_revision: str | None = '0901'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('codebooks', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('auto_activate', sa.Boolean(), server_default=sa.true(), nullable=False)
        )
    with op.batch_alter_table('suggestions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('exclusion', app.models.base.JSONType, nullable=True))
    # incidents carries the report triggers: a plain ADD COLUMN (no table rebuild on SQLite).
    op.add_column('incidents', sa.Column('redacted_with', sa.String(length=200), nullable=True))


def downgrade() -> None:
    # SQLite >= 3.35 drops a column in place; a batch rebuild would lose the report triggers.
    op.execute('ALTER TABLE incidents DROP COLUMN redacted_with')
    with op.batch_alter_table('suggestions', schema=None) as batch_op:
        batch_op.drop_column('exclusion')
    with op.batch_alter_table('codebooks', schema=None) as batch_op:
        batch_op.drop_column('auto_activate')
