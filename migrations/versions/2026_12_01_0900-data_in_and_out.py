"""data in and out: story source, consent and receipt; import runs; coded spans; erased marks

- imports: one row per import run (file name, who, when, progress, errors).
- incidents: `source` (form, invitation, import), `consent` (given, not_asked, unknown),
  `import_id`, `receipt_hash` (withdrawal receipts); `valence` also admits `neutral` and
  `unknown` (imported stories without a clear valence).
- nlp_models.erased_stories / last_erasure_at: models trained on stories erased since.

On SQLite the incidents table is not rebuilt (that would drop its rollup triggers and fire
the foreign keys' cascades): columns are added with ALTER TABLE ADD COLUMN, and the widened
valence CHECK is written into the stored schema, the procedure SQLite documents for changing
CHECK constraints ("Making Other Kinds Of Table Schema Changes").

Revision ID: 0901
Revises: 0802
Create Date: 2026-12-01 09:00:00+00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.models.base

revision: str = '0901'
down_revision: str | None = '0802'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_VALENCE = "valence IN ('satisfying', 'dissatisfying')"
NEW_VALENCE = "valence IN ('satisfying', 'dissatisfying', 'neutral', 'unknown')"
SOURCE_CHECK = "source IN ('form', 'invitation', 'import')"
CONSENT_CHECK = "consent IN ('given', 'not_asked', 'unknown')"
IMPORT_FK = (
    ', \n\tCONSTRAINT fk_incidents_import_id_imports FOREIGN KEY(import_id) '
    'REFERENCES imports (id) ON DELETE SET NULL'
)


def _sqlite_rewrite(old: str, new: str) -> None:
    bind = op.get_bind()
    sql = bind.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'incidents'"
    ).scalar_one()
    if old not in sql:
        raise RuntimeError(f'incidents: {old!r} not found in the stored schema')
    version = bind.exec_driver_sql('PRAGMA schema_version').scalar_one()
    bind.exec_driver_sql('PRAGMA writable_schema = ON')
    bind.exec_driver_sql(
        "UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = 'incidents'",
        (sql.replace(old, new),),
    )
    bind.exec_driver_sql(f'PRAGMA schema_version = {int(version) + 1}')
    bind.exec_driver_sql('PRAGMA writable_schema = OFF')


def _sqlite_append_constraint(constraint: str) -> None:
    bind = op.get_bind()
    sql = bind.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'incidents'"
    ).scalar_one()
    closing = sql.rstrip().rindex(')')
    _sqlite_rewrite(sql, sql[:closing].rstrip() + constraint + '\n)')


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.create_table(
        'imports',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('survey_id', sa.Integer(), nullable=False),
        sa.Column('file_name', sa.String(length=255), nullable=False),
        sa.Column('file_format', sa.String(length=16), nullable=False),
        sa.Column('details', app.models.base.JSONType, nullable=False),
        sa.Column('options', app.models.base.JSONType, nullable=False),
        sa.Column('imported_by', sa.String(length=100), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('job_id', sa.Integer(), nullable=True),
        sa.Column('rows_total', sa.Integer(), nullable=True),
        sa.Column('rows_read', sa.Integer(), nullable=False),
        sa.Column('stored', sa.Integer(), nullable=False),
        sa.Column('duplicates', sa.Integer(), nullable=False),
        sa.Column('coded', sa.Integer(), nullable=False),
        sa.Column('error_count', sa.Integer(), nullable=False),
        sa.Column('errors', app.models.base.JSONType, nullable=False),
        sa.Column('failure', sa.Text(), nullable=True),
        sa.Column('created_at', app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column('started_at', app.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column('finished_at', app.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'done', 'failed')", name=op.f('ck_imports_status')
        ),
        sa.ForeignKeyConstraint(
            ['job_id'], ['jobs.id'], name=op.f('fk_imports_job_id_jobs'), ondelete='SET NULL'
        ),
        sa.ForeignKeyConstraint(
            ['survey_id'], ['surveys.id'], name=op.f('fk_imports_survey_id_surveys'),
            ondelete='CASCADE',
        ),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_imports')),
    )
    op.create_index(op.f('ix_imports_survey_id'), 'imports', ['survey_id'], unique=False)

    if dialect == 'sqlite':
        for ddl in (
            "ALTER TABLE incidents ADD COLUMN source VARCHAR(16) DEFAULT 'form' NOT NULL "
            f'CONSTRAINT ck_incidents_source CHECK ({SOURCE_CHECK})',
            "ALTER TABLE incidents ADD COLUMN consent VARCHAR(16) DEFAULT 'unknown' NOT NULL "
            f'CONSTRAINT ck_incidents_consent CHECK ({CONSENT_CHECK})',
            'ALTER TABLE incidents ADD COLUMN import_id INTEGER',
            'ALTER TABLE incidents ADD COLUMN receipt_hash VARCHAR(64)',
        ):
            op.execute(ddl)
        _sqlite_rewrite(OLD_VALENCE, NEW_VALENCE)
        # A table-level foreign key, as the other tables have (all values are NULL yet).
        _sqlite_append_constraint(IMPORT_FK)
    else:
        op.add_column('incidents', sa.Column(
            'source', sa.String(length=16), server_default='form', nullable=False))
        op.add_column('incidents', sa.Column(
            'consent', sa.String(length=16), server_default='unknown', nullable=False))
        op.add_column('incidents', sa.Column('import_id', sa.Integer(), nullable=True))
        op.add_column('incidents', sa.Column('receipt_hash', sa.String(length=64), nullable=True))
        op.create_foreign_key(
            op.f('fk_incidents_import_id_imports'), 'incidents', 'imports', ['import_id'], ['id'],
            ondelete='SET NULL',
        )
        op.create_check_constraint(op.f('ck_incidents_source'), 'incidents', SOURCE_CHECK)
        op.create_check_constraint(op.f('ck_incidents_consent'), 'incidents', CONSENT_CHECK)
        op.drop_constraint(op.f('ck_incidents_valence'), 'incidents', type_='check')
        op.create_check_constraint(op.f('ck_incidents_valence'), 'incidents', NEW_VALENCE)
    op.create_index(op.f('ix_incidents_import_id'), 'incidents', ['import_id'], unique=False)
    op.create_index(
        op.f('uq_incidents_receipt_hash'), 'incidents', ['receipt_hash'], unique=True
    )
    # What is known of the stories stored so far. The rollup triggers fire only on the columns
    # they watch, so these updates leave the rollups alone.
    op.execute(
        "UPDATE incidents SET source = CASE WHEN invitation_id IS NOT NULL THEN 'invitation' "
        "WHEN submission_key LIKE 'import:%' THEN 'import' ELSE 'form' END"
    )
    op.execute(
        "UPDATE incidents SET consent = CASE WHEN (SELECT s.consent_text FROM surveys s "
        "WHERE s.id = incidents.survey_id) IS NOT NULL THEN 'given' ELSE 'not_asked' END "
        "WHERE source <> 'import'"
    )

    op.add_column('nlp_models', sa.Column(
        'erased_stories', sa.Integer(), server_default='0', nullable=False))
    op.add_column('nlp_models', sa.Column(
        'last_erasure_at', app.models.base.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    unclear = op.get_bind().exec_driver_sql(
        "SELECT COUNT(*) FROM incidents WHERE valence NOT IN ('satisfying', 'dissatisfying')"
    ).scalar_one()
    if unclear:
        raise RuntimeError(
            f'{unclear} stories have a neutral or unknown valence, which revision 0005 cannot '
            'hold: code or erase them before downgrading'
        )
    with op.batch_alter_table('nlp_models', schema=None, recreate='never') as batch_op:
        batch_op.drop_column('last_erasure_at')
        batch_op.drop_column('erased_stories')
    op.drop_index(op.f('uq_incidents_receipt_hash'), table_name='incidents')
    op.drop_index(op.f('ix_incidents_import_id'), table_name='incidents')
    if dialect == 'sqlite':
        _sqlite_rewrite(NEW_VALENCE, OLD_VALENCE)
        # SQLite >= 3.35 drops columns in place, but not one with a foreign key: that goes
        # from the stored schema first, the same way.
        _sqlite_rewrite(IMPORT_FK, '')
        for column in ('receipt_hash', 'import_id', 'consent', 'source'):
            op.execute(f'ALTER TABLE incidents DROP COLUMN {column}')
    else:
        op.drop_constraint(op.f('ck_incidents_valence'), 'incidents', type_='check')
        op.create_check_constraint(op.f('ck_incidents_valence'), 'incidents', OLD_VALENCE)
        op.drop_constraint(op.f('ck_incidents_consent'), 'incidents', type_='check')
        op.drop_constraint(op.f('ck_incidents_source'), 'incidents', type_='check')
        op.drop_constraint(op.f('fk_incidents_import_id_imports'), 'incidents', type_='foreignkey')
        for column in ('receipt_hash', 'import_id', 'consent', 'source'):
            op.drop_column('incidents', column)
    op.drop_index(op.f('ix_imports_survey_id'), table_name='imports')
    op.drop_table('imports')
