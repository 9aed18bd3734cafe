"""people sign in: passwords, revocation, browser sessions, set-password links, token last use

Revision ID: 0802
Revises: 0801
Create Date: 2026-12-01 09:10:00+00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.models.base

revision: str = '0802'
down_revision: str | None = '0801'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('password_hash', sa.String(length=255), nullable=True))
        batch_op.add_column(
            sa.Column('disabled_at', app.models.base.UTCDateTime(timezone=True), nullable=True)
        )
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('last_used_at', app.models.base.UTCDateTime(timezone=True), nullable=True)
        )

    op.create_table(
        'web_sessions',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('token_hash', sa.String(length=64), nullable=False),
        sa.Column('created_at', app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column('last_seen_at', app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column('expires_at', app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ['user_id'], ['users.id'], name=op.f('fk_web_sessions_user_id_users'),
            ondelete='CASCADE',
        ),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_web_sessions')),
        sa.UniqueConstraint('token_hash', name=op.f('uq_web_sessions_token_hash')),
    )
    with op.batch_alter_table('web_sessions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_web_sessions_user_id'), ['user_id'], unique=False)

    op.create_table(
        'password_links',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('token_hash', sa.String(length=64), nullable=False),
        sa.Column('created_by', sa.String(length=100), nullable=False),
        sa.Column('created_at', app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column('expires_at', app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column('used_at', app.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ['user_id'], ['users.id'], name=op.f('fk_password_links_user_id_users'),
            ondelete='CASCADE',
        ),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_password_links')),
        sa.UniqueConstraint('token_hash', name=op.f('uq_password_links_token_hash')),
    )
    with op.batch_alter_table('password_links', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_password_links_user_id'), ['user_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('password_links', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_password_links_user_id'))
    op.drop_table('password_links')
    with op.batch_alter_table('web_sessions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_web_sessions_user_id'))
    op.drop_table('web_sessions')
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.drop_column('last_used_at')
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('disabled_at')
        batch_op.drop_column('password_hash')
