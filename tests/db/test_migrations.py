"""Migrations are the schema: they go up, down and up again, and match the models exactly."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from app import migrate
from app.db import create_db_engine
from app.models import Base


@pytest.fixture
def scratch_url(tmp_path: Path) -> Iterator[str]:
    """A database of the kind under test that no other test uses."""
    base = os.environ.get("CIT_TEST_DATABASE_URL")
    if not base:
        yield f"sqlite:///{tmp_path / 'migrations.db'}"
        return
    schema = f"mig_{uuid.uuid4().hex[:8]}"
    engine = create_db_engine(base)
    with engine.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    sep = "&" if "?" in base else "?"
    yield f"{base}{sep}options=-csearch_path%3D{schema}"
    with engine.begin() as conn:
        conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    engine.dispose()


def _tables(url: str) -> set[str]:
    engine = create_db_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def _drift(url: str) -> list[object]:
    engine = create_db_engine(url)
    try:
        with engine.connect() as conn:
            return list(
                compare_metadata(
                    MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata
                )
            )
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade_without_drift(scratch_url: str) -> None:
    migrate.upgrade(scratch_url)
    assert _tables(scratch_url) == set(Base.metadata.tables)
    assert _drift(scratch_url) == []

    migrate.downgrade(scratch_url, "base")
    assert _tables(scratch_url) == set()
    assert migrate.current_revision(scratch_url) is None

    migrate.upgrade(scratch_url)
    assert migrate.current_revision(scratch_url) == migrate.head_revision(scratch_url)
    assert _drift(scratch_url) == []


def test_pending_message_names_the_fix(scratch_url: str) -> None:
    message = migrate.pending_message(scratch_url)
    assert message is not None and "cit db upgrade" in message
    migrate.upgrade(scratch_url)
    assert migrate.pending_message(scratch_url) is None


def test_migration_files_follow_the_naming_rule() -> None:
    import re

    versions = Path(migrate.ROOT / "migrations" / "versions")
    names = [p.name for p in versions.glob("*.py")]
    assert names
    for name in names:
        assert re.fullmatch(r"\d{4}_\d{2}_\d{2}_\d{4}-[a-z0-9_]+\.py", name), name
