"""report rollups

Daily rollup tables for the reports, kept fresh by triggers in the same transaction as the
change (no nightly batch), and filled from the existing stories and final codes.

- report_story_days(_detail): stories, confirmed (status coded) and excluded stories per survey,
  day (submitted_at, UTC), valence (and touchpoint, channel, segment in _detail); maintained on
  INSERT and DELETE of incidents and on UPDATE of status or of a dimension.
- report_code_days(_detail): confirmed stories per final code (and codebook version) in the same
  cells; maintained on INSERT, DELETE and UPDATE of incident_codes, and when a story's status
  moves into or out of `coded` (only coded stories count, so a count never exceeds its base).

A missing touchpoint/channel/segment is stored as '' (NULL-safe keys for the upsert). Increments
are upserts (INSERT ... ON CONFLICT DO UPDATE, SQLite >= 3.24 and PostgreSQL); decrements only
UPDATE existing rows and delete those that reach zero, so they never create a row.
SQLite and PostgreSQL get their own trigger SQL, generated from the same statements below.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 03:53:00+00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NARROW = ('survey_id', 'day', 'valence')
DETAIL = ('survey_id', 'day', 'valence', 'touchpoint', 'channel', 'segment')
STORY_TABLES = (('report_story_days', NARROW), ('report_story_days_detail', DETAIL))
CODE_TABLES = (('report_code_days', NARROW), ('report_code_days_detail', DETAIL))

TRIGGERS = (
    # name, table, timing and event
    ('report_incidents_insert', 'incidents', 'AFTER INSERT'),
    ('report_incidents_update', 'incidents', 'AFTER UPDATE'),
    ('report_incidents_delete', 'incidents', 'BEFORE DELETE'),
    ('report_incident_codes_insert', 'incident_codes', 'AFTER INSERT'),
    ('report_incident_codes_update', 'incident_codes', 'AFTER UPDATE'),
    ('report_incident_codes_delete', 'incident_codes', 'AFTER DELETE'),
)
INCIDENT_UPDATE_COLUMNS = (
    'survey_id', 'submitted_at', 'valence', 'touchpoint', 'channel', 'attributes', 'status'
)
CODE_UPDATE_COLUMNS = ('incident_id', 'code', 'codebook_version_id')


def _values(dialect: str, row: str) -> dict[str, str]:
    """SQL for each rollup dimension of the story `row` (NEW, OLD or a table alias)."""
    if dialect == 'postgresql':
        day = f"CAST(({row}.submitted_at AT TIME ZONE 'UTC') AS date)"
        segment = f"COALESCE(left({row}.attributes ->> 'segment', 200), '')"
    else:
        day = f'date({row}.submitted_at)'
        segment = (
            f"COALESCE(substr(CAST(json_extract({row}.attributes, '$.segment') AS TEXT), 1, 200),"
            " '')"
        )
    return {
        'survey_id': f'{row}.survey_id',
        'day': day,
        'valence': f'{row}.valence',
        'touchpoint': f"COALESCE(substr({row}.touchpoint, 1, 200), '')",
        'channel': f"COALESCE(substr({row}.channel, 1, 200), '')",
        'segment': segment,
    }


def _flag(row: str, status: str) -> str:
    return f"CASE WHEN {row}.status = '{status}' THEN 1 ELSE 0 END"


def _match(dims: Sequence[str], values: dict[str, str]) -> str:
    return ' AND '.join(f'{d} = {values[d]}' for d in dims)


def story_add(dialect: str, row: str) -> list[str]:
    values = _values(dialect, row)
    return [
        f"INSERT INTO {table} ({', '.join(dims)}, stories, confirmed, excluded) "
        f"VALUES ({', '.join(values[d] for d in dims)}, 1, {_flag(row, 'coded')}, "
        f"{_flag(row, 'excluded')}) "
        f"ON CONFLICT ({', '.join(dims)}) DO UPDATE SET "
        f"stories = {table}.stories + excluded.stories, "
        f"confirmed = {table}.confirmed + excluded.confirmed, "
        f"excluded = {table}.excluded + excluded.excluded"
        for table, dims in STORY_TABLES
    ]


def story_remove(dialect: str, row: str) -> list[str]:
    values = _values(dialect, row)
    statements = []
    for table, dims in STORY_TABLES:
        where = _match(dims, values)
        statements += [
            f"UPDATE {table} SET stories = stories - 1, "
            f"confirmed = confirmed - {_flag(row, 'coded')}, "
            f"excluded = excluded - {_flag(row, 'excluded')} WHERE {where}",
            f'DELETE FROM {table} WHERE {where} AND stories = 0',
        ]
    return statements


def story_codes_add(dialect: str, row: str) -> list[str]:
    """Count every final code of the story `row` when it is coded."""
    values = _values(dialect, row)
    return [
        f"INSERT INTO {table} ({', '.join(dims)}, codebook_version_id, code, n) "
        f"SELECT {', '.join(values[d] for d in dims)}, c.codebook_version_id, c.code, 1 "
        f"FROM incident_codes c WHERE c.incident_id = {row}.id AND {row}.status = 'coded' "
        f"ON CONFLICT ({', '.join(dims)}, codebook_version_id, code) DO UPDATE SET "
        f"n = {table}.n + excluded.n"
        for table, dims in CODE_TABLES
    ]


def story_codes_remove(dialect: str, row: str) -> list[str]:
    values = _values(dialect, row)
    statements = []
    for table, dims in CODE_TABLES:
        where = _match(dims, values)
        statements += [
            f"UPDATE {table} SET n = n - 1 WHERE {where} AND {row}.status = 'coded' "
            f"AND (codebook_version_id, code) IN "
            f"(SELECT c.codebook_version_id, c.code FROM incident_codes c "
            f"WHERE c.incident_id = {row}.id)",
            f'DELETE FROM {table} WHERE {where} AND n = 0',
        ]
    return statements


def code_add(dialect: str, row: str) -> list[str]:
    """Count the final code `row` when its story is coded."""
    values = _values(dialect, 'i')
    return [
        f"INSERT INTO {table} ({', '.join(dims)}, codebook_version_id, code, n) "
        f"SELECT {', '.join(values[d] for d in dims)}, {row}.codebook_version_id, {row}.code, 1 "
        f"FROM incidents i WHERE i.id = {row}.incident_id AND i.status = 'coded' "
        f"ON CONFLICT ({', '.join(dims)}, codebook_version_id, code) DO UPDATE SET "
        f"n = {table}.n + excluded.n"
        for table, dims in CODE_TABLES
    ]


def code_remove(dialect: str, row: str) -> list[str]:
    values = _values(dialect, 'i')
    statements = []
    for table, dims in CODE_TABLES:
        cell = (
            f"codebook_version_id = {row}.codebook_version_id AND code = {row}.code "
            f"AND ({', '.join(dims)}) IN (SELECT {', '.join(values[d] for d in dims)} "
            f"FROM incidents i WHERE i.id = {row}.incident_id AND i.status = 'coded')"
        )
        statements += [
            f'UPDATE {table} SET n = n - 1 WHERE {cell}',
            f'DELETE FROM {table} WHERE {cell} AND n = 0',
        ]
    return statements


def _changed(dialect: str, columns: Sequence[str]) -> str:
    differs = 'IS DISTINCT FROM' if dialect == 'postgresql' else 'IS NOT'
    checks = []
    for column in columns:
        if column == 'attributes':  # only the segment inside it is a dimension
            old, new = _values(dialect, 'OLD')['segment'], _values(dialect, 'NEW')['segment']
            checks.append(f'{old} {differs} {new}')
        else:
            checks.append(f'OLD.{column} {differs} NEW.{column}')
    return ' OR '.join(checks)


def trigger_bodies(dialect: str) -> dict[str, list[str]]:
    return {
        'report_incidents_insert': story_add(dialect, 'NEW'),
        'report_incidents_update': (
            story_remove(dialect, 'OLD')
            + story_codes_remove(dialect, 'OLD')
            + story_add(dialect, 'NEW')
            + story_codes_add(dialect, 'NEW')
        ),
        # Remove the codes first, while the story is still there to say which cells they are in.
        'report_incidents_delete': (
            ['DELETE FROM incident_codes WHERE incident_id = OLD.id']
            + story_remove(dialect, 'OLD')
        ),
        'report_incident_codes_insert': code_add(dialect, 'NEW'),
        'report_incident_codes_update': code_remove(dialect, 'OLD') + code_add(dialect, 'NEW'),
        'report_incident_codes_delete': code_remove(dialect, 'OLD'),
    }


UPDATE_OF = {
    'report_incidents_update': INCIDENT_UPDATE_COLUMNS,
    'report_incident_codes_update': CODE_UPDATE_COLUMNS,
}


def create_triggers(dialect: str) -> None:
    bodies = trigger_bodies(dialect)
    for name, table, event in TRIGGERS:
        columns = UPDATE_OF.get(name)
        when = ''
        if columns:
            event = f"{event} OF {', '.join(columns)}"
            when = f'WHEN ({_changed(dialect, columns)})'
        if dialect == 'postgresql':
            returned = 'OLD' if event.startswith('BEFORE DELETE') else 'NULL'
            body = ';\n  '.join(bodies[name])
            op.execute(
                f'CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$\n'
                f'BEGIN\n  {body};\n  RETURN {returned};\nEND\n$$'
            )
            op.execute(
                f'CREATE TRIGGER {name} {event} ON {table} FOR EACH ROW {when} '
                f'EXECUTE FUNCTION {name}()'
            )
        else:
            body = ';\n  '.join(bodies[name])
            op.execute(
                f'CREATE TRIGGER {name} {event} ON {table} FOR EACH ROW {when}\n'
                f'BEGIN\n  {body};\nEND'
            )


def drop_triggers(dialect: str) -> None:
    for name, table, _event in TRIGGERS:
        if dialect == 'postgresql':
            op.execute(f'DROP TRIGGER IF EXISTS {name} ON {table}')
            op.execute(f'DROP FUNCTION IF EXISTS {name}()')
        else:
            op.execute(f'DROP TRIGGER IF EXISTS {name}')


def backfill(dialect: str) -> None:
    """Fill the rollups from the stories and final codes already stored (GROUP BY)."""
    values = _values(dialect, 'i')
    story_dims = ', '.join(values[d] for d in DETAIL)
    positions = ', '.join(str(p) for p in range(1, len(DETAIL) + 1))
    op.execute(
        f"INSERT INTO report_story_days_detail ({', '.join(DETAIL)}, stories, confirmed, excluded) "
        f"SELECT {story_dims}, COUNT(*), SUM({_flag('i', 'coded')}), SUM({_flag('i', 'excluded')}) "
        f'FROM incidents i GROUP BY {positions}'
    )
    op.execute(
        f"INSERT INTO report_code_days_detail ({', '.join(DETAIL)}, codebook_version_id, code, n) "
        f'SELECT {story_dims}, c.codebook_version_id, c.code, COUNT(*) '
        f"FROM incident_codes c JOIN incidents i ON i.id = c.incident_id WHERE i.status = 'coded' "
        f'GROUP BY {positions}, {len(DETAIL) + 1}, {len(DETAIL) + 2}'
    )
    narrow = ', '.join(NARROW)
    op.execute(
        f'INSERT INTO report_story_days ({narrow}, stories, confirmed, excluded) '
        f'SELECT {narrow}, SUM(stories), SUM(confirmed), SUM(excluded) '
        f'FROM report_story_days_detail GROUP BY {narrow}'
    )
    op.execute(
        f'INSERT INTO report_code_days ({narrow}, codebook_version_id, code, n) '
        f'SELECT {narrow}, codebook_version_id, code, SUM(n) '
        f'FROM report_code_days_detail GROUP BY {narrow}, codebook_version_id, code'
    )


def _key(*names: str) -> list[sa.Column]:
    columns = {
        'survey_id': lambda: sa.Column('survey_id', sa.Integer(), autoincrement=False, nullable=False),
        'day': lambda: sa.Column('day', sa.Date(), nullable=False),
        'valence': lambda: sa.Column('valence', sa.String(length=16), nullable=False),
        'touchpoint': lambda: sa.Column('touchpoint', sa.String(length=200), nullable=False),
        'channel': lambda: sa.Column('channel', sa.String(length=200), nullable=False),
        'segment': lambda: sa.Column('segment', sa.String(length=200), nullable=False),
        'codebook_version_id': lambda: sa.Column(
            'codebook_version_id', sa.Integer(), autoincrement=False, nullable=False
        ),
        'code': lambda: sa.Column('code', sa.String(length=100), nullable=False),
    }
    return [columns[name]() for name in names]


def _counts() -> list[sa.Column]:
    return [
        sa.Column('stories', sa.Integer(), nullable=False),
        sa.Column('confirmed', sa.Integer(), nullable=False),
        sa.Column('excluded', sa.Integer(), nullable=False),
    ]


def upgrade() -> None:
    for table, dims in STORY_TABLES:
        op.create_table(
            table,
            *_key(*dims),
            *_counts(),
            sa.PrimaryKeyConstraint(*dims, name=op.f(f'pk_{table}')),
            sqlite_with_rowid=False,
        )
    for table, dims in CODE_TABLES:
        op.create_table(
            table,
            *_key(*dims, 'codebook_version_id', 'code'),
            sa.Column('n', sa.Integer(), nullable=False),
            sa.PrimaryKeyConstraint(*dims, 'codebook_version_id', 'code', name=op.f(f'pk_{table}')),
            sqlite_with_rowid=False,
        )
    dialect = op.get_bind().dialect.name
    backfill(dialect)
    create_triggers(dialect)


def downgrade() -> None:
    drop_triggers(op.get_bind().dialect.name)
    for table, _dims in CODE_TABLES + STORY_TABLES:
        op.drop_table(table)
