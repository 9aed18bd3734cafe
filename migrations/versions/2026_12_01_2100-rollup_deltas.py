"""rollup deltas: triggers append signed delta rows instead of upserting shared rollup rows

Migration 0004's triggers upserted the rollup cell of each change (INSERT ... ON CONFLICT DO
UPDATE): every story of a survey, day and valence updated the same row, so concurrent
submissions queued on that row's lock until the holder committed (issue 11: one server
deadlocked at 50 concurrent submissions). Now each change appends one row to
report_story_deltas / report_code_deltas (+1 or -1, at the detail grain); an append contends
with nothing. The worker folds the deltas into the rollup tables (app.reports.rollups.fold) and
reports read rollup + pending deltas in one statement, so they stay exact.

The trigger events, conditions and dimension expressions are 0004's (imported from it); only
the bodies differ. Downgrade folds what is pending and puts 0004's triggers back.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 21:00:00+00:00
"""
import importlib.util
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _load_0004():
    path = Path(__file__).with_name('2026_11_23_0353-report_rollups.py')
    spec = importlib.util.spec_from_file_location('cit_migration_0004', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


r0004 = _load_0004()
DETAIL = r0004.DETAIL
STORY_COUNTS = ('stories', 'confirmed', 'excluded')


def _story_delta(dialect: str, row: str, sign: int) -> list[str]:
    values = r0004._values(dialect, row)
    return [
        f"INSERT INTO report_story_deltas ({', '.join(DETAIL)}, {', '.join(STORY_COUNTS)}) "
        f"VALUES ({', '.join(values[d] for d in DETAIL)}, {sign}, "
        f"{sign} * {r0004._flag(row, 'coded')}, {sign} * {r0004._flag(row, 'excluded')})"
    ]


def _story_codes_delta(dialect: str, row: str, sign: int) -> list[str]:
    """Every final code of the story `row`, when it is coded."""
    values = r0004._values(dialect, row)
    return [
        f"INSERT INTO report_code_deltas ({', '.join(DETAIL)}, codebook_version_id, code, n) "
        f"SELECT {', '.join(values[d] for d in DETAIL)}, c.codebook_version_id, c.code, {sign} "
        f"FROM incident_codes c WHERE c.incident_id = {row}.id AND {row}.status = 'coded'"
    ]


def _code_delta(dialect: str, row: str, sign: int) -> list[str]:
    """The final code `row`, when its story is coded."""
    values = r0004._values(dialect, 'i')
    return [
        f"INSERT INTO report_code_deltas ({', '.join(DETAIL)}, codebook_version_id, code, n) "
        f"SELECT {', '.join(values[d] for d in DETAIL)}, {row}.codebook_version_id, {row}.code, "
        f"{sign} FROM incidents i WHERE i.id = {row}.incident_id AND i.status = 'coded'"
    ]


def trigger_bodies(dialect: str) -> dict[str, list[str]]:
    return {
        'report_incidents_insert': _story_delta(dialect, 'NEW', 1),
        'report_incidents_update': (
            _story_delta(dialect, 'OLD', -1)
            + _story_codes_delta(dialect, 'OLD', -1)
            + _story_delta(dialect, 'NEW', 1)
            + _story_codes_delta(dialect, 'NEW', 1)
        ),
        # Remove the codes first, while the story is still there to say which cells they are in
        # (their own delete trigger writes their deltas).
        'report_incidents_delete': (
            ['DELETE FROM incident_codes WHERE incident_id = OLD.id']
            + _story_delta(dialect, 'OLD', -1)
        ),
        'report_incident_codes_insert': _code_delta(dialect, 'NEW', 1),
        'report_incident_codes_update': (
            _code_delta(dialect, 'OLD', -1) + _code_delta(dialect, 'NEW', 1)
        ),
        'report_incident_codes_delete': _code_delta(dialect, 'OLD', -1),
    }


def create_triggers(dialect: str, bodies: dict[str, list[str]]) -> None:
    for name, table, event in r0004.TRIGGERS:
        columns = r0004.UPDATE_OF.get(name)
        when = ''
        if columns:
            event = f"{event} OF {', '.join(columns)}"
            when = f'WHEN ({r0004._changed(dialect, columns)})'
        body = ';\n  '.join(bodies[name])
        if dialect == 'postgresql':
            returned = 'OLD' if event.startswith('BEFORE DELETE') else 'NULL'
            op.execute(
                f'CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$\n'
                f'BEGIN\n  {body};\n  RETURN {returned};\nEND\n$$'
            )
            op.execute(
                f'CREATE TRIGGER {name} {event} ON {table} FOR EACH ROW {when} '
                f'EXECUTE FUNCTION {name}()'
            )
        else:
            op.execute(
                f'CREATE TRIGGER {name} {event} ON {table} FOR EACH ROW {when}\n'
                f'BEGIN\n  {body};\nEND'
            )


def _dimensions() -> list[sa.Column]:
    return [
        sa.Column('survey_id', sa.Integer(), nullable=False),
        sa.Column('day', sa.Date(), nullable=False),
        sa.Column('valence', sa.String(length=16), nullable=False),
        sa.Column('touchpoint', sa.String(length=200), nullable=False),
        sa.Column('channel', sa.String(length=200), nullable=False),
        sa.Column('segment', sa.String(length=200), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        'report_story_deltas',
        sa.Column('id', sa.Integer(), nullable=False),
        *_dimensions(),
        sa.Column('stories', sa.Integer(), nullable=False),
        sa.Column('confirmed', sa.Integer(), nullable=False),
        sa.Column('excluded', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_report_story_deltas')),
    )
    op.create_table(
        'report_code_deltas',
        sa.Column('id', sa.Integer(), nullable=False),
        *_dimensions(),
        sa.Column('codebook_version_id', sa.Integer(), nullable=False),
        sa.Column('code', sa.String(length=100), nullable=False),
        sa.Column('n', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_report_code_deltas')),
    )
    dialect = op.get_bind().dialect.name
    r0004.drop_triggers(dialect)
    create_triggers(dialect, trigger_bodies(dialect))


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    r0004.drop_triggers(dialect)  # same names
    # What is pending is folded by recomputing the rollups from the base tables.
    for table in ('report_code_days', 'report_code_days_detail', 'report_story_days',
                  'report_story_days_detail'):
        op.execute(f'DELETE FROM {table}')
    r0004.backfill(dialect)
    r0004.create_triggers(dialect)
    op.drop_table('report_code_deltas')
    op.drop_table('report_story_deltas')
