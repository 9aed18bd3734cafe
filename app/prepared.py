"""Core statements compiled once and run on the connection's DBAPI cursor.

SQLAlchemy's execution of a cached statement still costs tens of microseconds of Python per
call (the execution context, the parameters' dictionary, the result's metadata, the events),
several times what SQLite needs to run a one-row INSERT. On SQLite that Python runs while the
writer holds the database's one write lock, so it bounds the intake of every process.
`Prepared` keeps the SQL text, the order of its parameters and SQLAlchemy's own bind and result
processors (the same values are sent and read back as through `Connection.execute`) and leaves
out the rest. DBAPI errors are raised as SQLAlchemy's, as `Connection.execute` raises them.

Used for SQLite only: on PostgreSQL a dead connection must go through SQLAlchemy's
disconnect handling (the pool is invalidated), which a bare cursor would bypass.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy.exc
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.sql.expression import Executable


class Prepared:
    """`statement` compiled for `dialect` (positional parameters: SQLite's qmark style)."""

    def __init__(
        self,
        statement: Executable,
        dialect: Dialect,
        *,
        column_keys: Sequence[str] | None = None,
    ) -> None:
        compiled = statement.compile(  # type: ignore[attr-defined]
            dialect=dialect, column_keys=list(column_keys) if column_keys else None
        )
        if not compiled.positional:
            raise ValueError(f"{dialect.name}: Prepared needs a positional paramstyle")
        self.dialect = dialect
        self.sql: str = compiled.string
        # Values fixed in the statement (literals SQLAlchemy turned into parameters); the others
        # must be given, as Connection.execute requires them.
        fixed = compiled.construct_params(_check=False)
        processors = compiled._bind_processors
        self._slots: list[tuple[str, bool, Any, Callable[[Any], Any] | None]] = [
            (name, compiled.binds[name].required, fixed.get(name), processors.get(name))
            for name in compiled.positiontup
        ]
        returned = getattr(statement, "_returning", ()) or getattr(
            statement, "selected_columns", ()
        )
        self._results: list[Callable[[Any], Any] | None] = [
            column.type._cached_result_processor(dialect, None) for column in returned
        ]
        self._error: type[Exception] = dialect.loaded_dbapi.Error

    def parameters(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        out = []
        for name, required, default, process in self._slots:
            value = values[name] if required else values.get(name, default)
            out.append(value if process is None else process(value))
        return tuple(out)

    def _run(self, conn: Connection, values: Mapping[str, Any]) -> Any:
        parameters = self.parameters(values)
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(self.sql, parameters)
        except self._error as error:
            cursor.close()
            raise sqlalchemy.exc.DBAPIError.instance(
                self.sql,
                parameters,
                error,
                self._error,
                # As the engine says (create_db_engine hides them: story text in a log line).
                hide_parameters=conn.engine.hide_parameters,
                dialect=self.dialect,
            ) from error
        return cursor

    def execute(self, conn: Connection, values: Mapping[str, Any]) -> int:
        """Run it; the number of rows it changed."""
        cursor = self._run(conn, values)
        try:
            return int(cursor.rowcount)
        finally:
            cursor.close()

    def first(self, conn: Connection, values: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """Run it; its first row (RETURNING or SELECT), processed as SQLAlchemy would."""
        cursor = self._run(conn, values)
        try:
            row = cursor.fetchone()
        except self._error as error:
            raise sqlalchemy.exc.DBAPIError.instance(
                self.sql, None, error, self._error, dialect=self.dialect
            ) from error
        finally:
            cursor.close()
        if row is None:
            return None
        return tuple(
            value if process is None else process(value)
            for value, process in zip(row, self._results, strict=True)
        )
