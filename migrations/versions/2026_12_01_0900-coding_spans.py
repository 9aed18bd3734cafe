"""coding spans: passages a coder marked as the reason for a code

Revision ID: 0801
Revises: 0007
Create Date: 2026-12-01 09:00:00+00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0801'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'coding_spans',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('coding_code_id', sa.Integer(), nullable=False),
        sa.Column('field', sa.String(length=32), nullable=False),
        sa.Column('start_offset', sa.Integer(), nullable=False),
        sa.Column('end_offset', sa.Integer(), nullable=False),
        sa.CheckConstraint(
            'start_offset >= 0 AND end_offset > start_offset',
            name=op.f('ck_coding_spans_offsets'),
        ),
        sa.ForeignKeyConstraint(
            ['coding_code_id'],
            ['coding_codes.id'],
            name=op.f('fk_coding_spans_coding_code_id_coding_codes'),
            ondelete='CASCADE',
        ),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_coding_spans')),
    )
    with op.batch_alter_table('coding_spans', schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f('ix_coding_spans_coding_code_id'), ['coding_code_id'], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table('coding_spans', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_coding_spans_coding_code_id'))
    op.drop_table('coding_spans')
