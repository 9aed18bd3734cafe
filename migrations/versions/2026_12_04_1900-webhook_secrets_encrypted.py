"""webhook secrets encrypted at rest: webhook_subscriptions.secret (the HMAC key in clear,
VARCHAR(200)) becomes secret_ciphertext (TEXT): `enc:v1:` and a Fernet token under the first key
of CIT_WEBHOOK_SECRET_KEYS, or the key derived from CIT_SECRET_KEY (app.encryption).

Run it with the service's own settings (`cit db upgrade` in the service's environment): the
secrets are encrypted with the keys it sees, and a worker given other keys could not open them
(its attempts fail with "cannot sign: ..."; a downgrade with the same settings undoes it). A
value that already carries the marker is never encrypted again: it must open with a configured
key, or the upgrade stops and writes nothing. The downgrade decrypts every value (all must open,
or it stops and writes nothing) and puts the clear column back.

No table rebuild: on SQLite a batch rebuild DROPs the table, and with the foreign keys on that
deletes every delivery by ON DELETE CASCADE. The column is renamed in place (ALTER TABLE ...
RENAME COLUMN, SQLite >= 3.25, PostgreSQL) and, on SQLite, its declared type is rewritten in the
schema text as 1002 does for a CHECK: VARCHAR(200) and TEXT have the same affinity, no stored
byte changes (SQLite keeps no length).

Revision ID: 1401
Revises: 1205
Create Date: 2026-12-04 19:00:00+00:00
"""

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

from app import encryption
from app.config import Settings, get_settings
from app.encryption import WEBHOOK_SECRETS

revision: str = '1401'
down_revision: str | None = '1205'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger("cit.migrations")

TABLE = 'webhook_subscriptions'
CLEAR = 'secret'
ENCRYPTED = 'secret_ciphertext'
CLEAR_TYPE = 'VARCHAR(200)'


def _settings() -> Settings:
    given = context.config.attributes.get('settings')
    return given if given is not None else get_settings()


def _sqlite_set_type(column: str, old: str, new: str) -> None:
    bind = op.get_bind()
    sql = bind.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (TABLE,)
    ).scalar_one()
    before, after = f'{column} {old} NOT NULL', f'{column} {new} NOT NULL'
    if sql.count(before) != 1:
        raise RuntimeError(f'{TABLE}: {before!r} not found once in the stored schema')
    version = bind.exec_driver_sql('PRAGMA schema_version').scalar_one()
    bind.exec_driver_sql('PRAGMA writable_schema = ON')
    bind.exec_driver_sql(
        "UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = ?",
        (sql.replace(before, after), TABLE),
    )
    bind.exec_driver_sql(f'PRAGMA schema_version = {int(version) + 1}')
    bind.exec_driver_sql('PRAGMA writable_schema = OFF')


def _rows(column: str) -> list[tuple[int, str]]:
    query = sa.text(f'SELECT id, {column} FROM {TABLE} ORDER BY id')
    return [(int(i), str(v)) for i, v in op.get_bind().execute(query)]


def _write(column: str, values: dict[int, str]) -> None:
    if values:
        op.get_bind().execute(
            sa.text(f'UPDATE {TABLE} SET {column} = :value WHERE id = :id'),
            [{'id': i, 'value': v} for i, v in values.items()],
        )


def _unopened(ids: list[int], what: str) -> RuntimeError:
    return RuntimeError(
        f"{what} stopped, nothing written: no key of {WEBHOOK_SECRETS.env} (nor the one "
        f"derived from CIT_SECRET_KEY) opens the secret of webhook subscription(s) "
        f"{', '.join(map(str, ids))}; run it with the keys they were encrypted with"
    )


def upgrade() -> None:
    settings = _settings()
    dialect = op.get_bind().dialect.name
    op.execute(f'ALTER TABLE {TABLE} RENAME COLUMN {CLEAR} TO {ENCRYPTED}')
    if dialect == 'sqlite':
        _sqlite_set_type(ENCRYPTED, CLEAR_TYPE, 'TEXT')
    else:
        op.alter_column(TABLE, ENCRYPTED, type_=sa.Text(), existing_type=sa.String(200))
    encrypted: dict[int, str] = {}
    unopened: list[int] = []
    for subscription_id, value in _rows(ENCRYPTED):
        if encryption.is_encrypted(WEBHOOK_SECRETS, value):
            try:  # already encrypted: left as it is, if it is ours
                encryption.decrypt(settings, WEBHOOK_SECRETS, value)
            except encryption.CannotDecrypt:
                unopened.append(subscription_id)
            continue
        encrypted[subscription_id] = encryption.encrypt(settings, WEBHOOK_SECRETS, value)
    if unopened:
        raise _unopened(unopened, 'the upgrade')
    _write(ENCRYPTED, encrypted)
    log.info('%d webhook secret(s) encrypted with the first key', len(encrypted))


def downgrade() -> None:
    settings = _settings()
    dialect = op.get_bind().dialect.name
    clear: dict[int, str] = {}
    unopened: list[int] = []
    for subscription_id, value in _rows(ENCRYPTED):
        if not encryption.is_encrypted(WEBHOOK_SECRETS, value):
            continue  # not ours to decrypt (the upgrade encrypts every value)
        try:
            clear[subscription_id] = encryption.decrypt(settings, WEBHOOK_SECRETS, value)
        except encryption.CannotDecrypt:
            unopened.append(subscription_id)
    if unopened:
        raise _unopened(unopened, 'the downgrade')
    _write(ENCRYPTED, clear)
    if dialect == 'sqlite':
        _sqlite_set_type(ENCRYPTED, 'TEXT', CLEAR_TYPE)
    else:
        op.alter_column(TABLE, ENCRYPTED, type_=sa.String(200), existing_type=sa.Text())
    op.execute(f'ALTER TABLE {TABLE} RENAME COLUMN {ENCRYPTED} TO {CLEAR}')
