"""Multi-row INSERT (.. ON CONFLICT DO UPDATE .. RETURNING) for the sync's hot path.

SQLAlchemy's executemany spends most of a page's write on per-row parameter bookkeeping.
`BulkInsert` renders the statement once per row count and converts values with each
column type's own bind processor, found once per column, then sends one statement per
chunk through the connection (so it runs in the caller's transaction, as any other).
On PostgreSQL (psycopg) an upsert is one short statement sent for all rows by psycopg's
pipelined executemany, and a plain insert is a COPY. Rows are tuples in the order of
`columns`.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from itertools import chain
from typing import Any

import orjson
from sqlalchemy import JSON, Column, Connection, Dialect, Table, Uuid
from sqlalchemy.exc import DBAPIError
from sqlalchemy.types import TypeEngine

from pqsync.db.tables import UTCDateTime

Converter = Callable[[Any], Any]

# Bound parameters per statement: SQLite allows 32,766 (since 3.32), PostgreSQL 65,535.
MAX_PARAMETERS = 30_000


@lru_cache(maxsize=8192)
def _sqlite_utc_text(value: datetime) -> str:
    """UTCDateTime on SQLite: naive UTC text, exactly as SQLAlchemy stores it.

    Remembered: a page's rows share their sync time (created, updated...) and most of their
    start and end times (listed in start order, on the practice's slots), and looking one
    up costs a tenth of formatting it.
    """
    if value.tzinfo is not UTC:
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
    # "YYYY-MM-DD HH:MM:SS.ffffff" without the "+00:00"
    return value.isoformat(" ", "microseconds")[:26]


_uuid_hex: Converter = operator.attrgetter("hex")


def _json_text(value: Any) -> str:
    """JSON as text, by orjson: an appointment's metadata (~550 bytes) takes the standard
    library ~11 us to encode, orjson ~1 us. Where orjson cannot (integers beyond 64 bits),
    the standard library does. Non-finite floats, which JSON cannot spell (and PostgreSQL's
    json type refuses), are written as null."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # orjson.JSONEncodeError
        return json.dumps(value)


def converter_for(column_type: TypeEngine[Any], dialect: Dialect) -> Converter | None:
    """What turns a Python value into the driver's value for this column (None: as is).

    The converters called most (UTC datetimes and UUIDs on SQLite, JSON) are direct
    equivalents of SQLAlchemy's processors (tests/unit/test_bulk_converters.py compares
    them); every other type uses SQLAlchemy's own.
    """
    if isinstance(column_type, JSON):
        return _json_text
    if dialect.name == "sqlite":
        if isinstance(column_type, UTCDateTime):
            return _sqlite_utc_text
        if isinstance(column_type, Uuid) and column_type.as_uuid:
            return _uuid_hex
    impl = column_type.dialect_impl(dialect)
    processor: Converter | None = impl.bind_processor(dialect)
    return processor


def _bind_cast(column_type: TypeEngine[Any], dialect: Dialect) -> str:
    impl = column_type.dialect_impl(dialect)
    if getattr(impl, "render_bind_cast", False) and dialect.bind_typing.name == "RENDER_CASTS":
        return "::" + dialect.type_compiler_instance.process(impl)
    return ""


class BulkInsert:
    """One INSERT of many rows into `table`, optionally an upsert with RETURNING."""

    def __init__(
        self,
        table: Table,
        dialect: Dialect,
        columns: Sequence[str],
        *,
        conflict_on: str | None = None,
        update: Sequence[str] = (),
        returning: Sequence[str] = (),
    ) -> None:
        self.columns = tuple(columns)
        self.returning = tuple(returning)
        table_columns = [table.c[name] for name in self.columns]
        converters = [converter_for(c.type, dialect) for c in table_columns]
        self._convert = [(i, f) for i, f in enumerate(converters) if f is not None]
        self._results = [
            c.type.dialect_impl(dialect).result_processor(dialect, None)
            for c in (table.c[name] for name in self.returning)
        ]
        quote = dialect.identifier_preparer.quote
        marker = "?" if dialect.paramstyle == "qmark" else "%s"
        self._row = "(" + ", ".join(marker + _bind_cast(c.type, dialect) for c in table_columns)
        self._row += ")"
        # Only identifiers from our own table metadata are rendered; values are all bound.
        names = ", ".join(quote(c) for c in self.columns)
        self._head = f"INSERT INTO {quote(table.name)} ({names}) VALUES "  # noqa: S608
        tail = ""
        if conflict_on is not None:
            assignments = ", ".join(f"{quote(c)} = excluded.{quote(c)}" for c in update)
            tail += f" ON CONFLICT ({quote(conflict_on)}) DO UPDATE SET {assignments}"
        if self.returning:
            tail += " RETURNING " + ", ".join(quote(c) for c in self.returning)
        self._tail = tail
        self.max_rows = max(1, MAX_PARAMETERS // len(self.columns))
        self._sql = lru_cache(maxsize=64)(self._render)
        # psycopg re-parses every long query's placeholders in Python: there, one short
        # statement is sent for all rows at once by its pipelined executemany instead.
        self._pipelined = dialect.driver == "psycopg"
        # A plain insert (no conflict clause, nothing returned) goes by COPY there: psycopg
        # writes its rows in C, and the server parses no statement per row.
        self._copy = (
            f"COPY {quote(table.name)} ({names}) FROM STDIN"
            if self._pipelined and conflict_on is None and not self.returning
            else None
        )

    def _render(self, rows: int) -> str:
        return self._head + ", ".join([self._row] * rows) + self._tail

    def convert(self, row: Sequence[Any]) -> list[Any]:
        """The driver's values of one row (for `execute(..., converted=True)`)."""
        values = list(row)
        for index, function in self._convert:
            value = values[index]
            if value is not None:
                values[index] = function(value)
        return values

    def processed(self, row: Sequence[Any]) -> tuple[Any, ...]:
        """A RETURNING row as Python values (`execute(..., raw=True)` leaves them as is)."""
        pairs = zip(self._results, row, strict=True)
        return tuple(p(v) if p is not None else v for p, v in pairs)

    def _execute_pipelined(
        self, connection: Connection, rows: Sequence[Sequence[Any]], raw: bool
    ) -> list[tuple[Any, ...]]:
        cursor: Any = connection.connection.cursor()  # the transaction's own DBAPI connection
        dbapi_error = connection.dialect.loaded_dbapi.Error
        statement = self._copy or self._sql(1)
        try:
            if self._copy is not None:
                with cursor.copy(self._copy) as copy:
                    for row in rows:
                        copy.write_row(row)
                return []
            returning = bool(self.returning)
            cursor.executemany(statement, rows, returning=returning)
            returned: list[tuple[Any, ...]] = []
            while returning:
                fetched = cursor.fetchall()
                returned.extend(fetched if raw else map(self.processed, fetched))
                if not cursor.nextset():
                    break
            return returned
        except dbapi_error as exc:
            # As SQLAlchemy raises it for any other statement (and without the values).
            raise DBAPIError.instance(
                statement,
                None,
                exc,
                dbapi_error,
                hide_parameters=True,
                dialect=connection.dialect,
            ) from exc
        finally:
            cursor.close()

    def execute(
        self,
        connection: Connection,
        rows: Sequence[Sequence[Any]],
        *,
        converted: bool = False,
        raw: bool = False,
    ) -> list[tuple[Any, ...]]:
        """Insert `rows`; return the RETURNING columns of each written row (else []).

        With `converted`, the rows are already the driver's values (see `convert`): a caller
        can convert before it takes a lock and hold the lock only for the statement. With
        `raw`, the RETURNING values stay the driver's (comparable with converted ones).
        """
        if not rows:
            return []
        values = rows if converted else [self.convert(r) for r in rows]
        if self._pipelined:
            return self._execute_pipelined(connection, values, raw)
        returned: list[tuple[Any, ...]] = []
        for start in range(0, len(values), self.max_rows):
            chunk = values[start : start + self.max_rows]
            parameters = tuple(chain.from_iterable(chunk))
            result = connection.exec_driver_sql(self._sql(len(chunk)), parameters)
            if self.returning:
                fetched = result.fetchall()
                returned.extend(fetched if raw else map(self.processed, fetched))
            else:
                result.close()
        return returned


class KeyedSelect:
    """`SELECT columns FROM table WHERE key IN (keys)`, sent with the driver's own values.

    PostgreSQL gets one array parameter (`= ANY(%s)`), so psycopg parses one short query
    whatever the number of keys; SQLite gets one placeholder per key, in chunks.
    """

    def __init__(self, table: Table, dialect: Dialect, key: str, columns: Sequence[str]) -> None:
        quote = dialect.identifier_preparer.quote
        key_column: Column[Any] = table.c[key]
        self._key = converter_for(key_column.type, dialect)
        self._results = [
            table.c[name].type.dialect_impl(dialect).result_processor(dialect, None)
            for name in columns
        ]
        names = ", ".join(quote(c) for c in columns)
        # Only identifiers from our own table metadata are rendered; values are all bound.
        self._head = f"SELECT {names} FROM {quote(table.name)} WHERE {quote(key)}"  # noqa: S608
        self._array = dialect.name == "postgresql"
        self.max_keys = MAX_PARAMETERS  # per statement, where each key is a parameter
        self._sql = lru_cache(maxsize=64)(self._render)

    def _render(self, keys: int) -> str:
        return self._head + (" = ANY(%s)" if self._array else f" IN ({', '.join('?' * keys)})")

    def fetch(self, connection: Connection, keys: Sequence[Any]) -> list[tuple[Any, ...]]:
        """The rows whose key is one of `keys`, as Python values."""
        if not keys:
            return []
        values = [self._key(k) for k in keys] if self._key is not None else list(keys)
        found: list[tuple[Any, ...]] = []
        if self._array:
            chunks: list[tuple[str, Any]] = [(self._sql(1), (values,))]
        else:
            size = self.max_keys
            chunks = [
                (self._sql(len(values[i : i + size])), tuple(values[i : i + size]))
                for i in range(0, len(values), size)
            ]
        processors = self._results
        for sql, parameters in chunks:
            for row in connection.exec_driver_sql(sql, parameters).fetchall():
                pairs = zip(processors, row, strict=True)
                found.append(tuple(p(v) if p is not None else v for p, v in pairs))
        return found
