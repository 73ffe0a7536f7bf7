"""The two databases the store runs on: a SQLite file (the default, for one site) or a PostgreSQL server (several
server processes, a fleet), named by the `database` setting: a file's path, or a `postgresql://` URL.

The store writes every query once, in SQL both understand (`?` parameters, `ON CONFLICT`); a backend opens a
transaction, adapts the parameters to its driver and migrates the schema its own way (SQLite: `PRAGMA user_version`;
PostgreSQL: a `schema_version` table, under a lock, so that processes starting together migrate once).

PostgreSQL through psycopg 3 and psycopg_pool, not SQLAlchemy: a dozen hand-written statements need a driver, not a
query builder; psycopg ships binary wheels (libpq inside) for x86_64 and aarch64, so the postgresql extra installs
from PyPI alone on a controller-class machine, and its pool keeps connections open across requests."""
from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

if TYPE_CHECKING:
    from psycopg import Connection
    from psycopg_pool import ConnectionPool

URL_SCHEMES = ("postgresql://", "postgres://")
# The PostgreSQL advisory lock held while the schema is migrated (any number, the same in every process).
MIGRATION_LOCK = 0x70_69_66_6C  # "pifl"


def is_url(database: Path | str) -> bool:
    return isinstance(database, str) and database.startswith(URL_SCHEMES)


def masked(database: Path | str) -> str:
    """The setting as it may be shown or logged: a URL's password (in the user part or `?password=`) as ***."""
    if not is_url(database):
        return str(database)
    parts = urlsplit(str(database))
    netloc = parts.netloc
    if parts.password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.split(':', 1)[0]}:***@{host}"
    query = urlencode([(k, "***" if k == "password" else v) for k, v in parse_qsl(parts.query)], safe="*")
    return urlunsplit(parts._replace(netloc=netloc, query=query))


class UniqueViolation(Exception):
    """A write a UNIQUE constraint refused, on either database: the transaction was rolled back, and the store says
    what it means."""


class Cursor(Protocol):
    """What the store reads of a statement's result, alike from sqlite3 and psycopg."""
    @property
    def rowcount(self) -> int: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


class Transaction(Protocol):
    def execute(self, sql: str, args: Sequence[Any] = ()) -> Cursor: ...
    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...


class Backend(Protocol):
    # What DDL writes as {id}, {bytes} and {text}: a row number the database assigns, a blob, and text that compares
    # byte by byte (the ISO times and ids the store orders and compares as text).
    types: ClassVar[dict[str, str]]

    def transaction(self) -> AbstractContextManager[Transaction]:
        """Committed when the block ends, rolled back on an exception (a UNIQUE constraint's: UniqueViolation)."""
        ...

    def migrate(self, schema: str, migrations: Sequence[str]) -> None:
        """Creates `schema` (each statement idempotent), then runs the migrations the database has not had yet:
        entry n takes it from version n to n + 1."""
        ...

    def close(self) -> None: ...


class SQLiteTransaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Cursor:
        return self._db.execute(sql, args)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self._db.executemany(sql, rows)


class SQLite:
    """A file in WAL mode, so the attendance page reads while kiosks write; one connection per transaction (FastAPI
    runs requests in threads, and opening a local file costs next to nothing)."""
    types: ClassVar[dict[str, str]] = {"id": "INTEGER PRIMARY KEY", "bytes": "BLOB", "text": "TEXT"}

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        db = sqlite3.connect(self.path, timeout=10)
        try:
            db.execute("PRAGMA foreign_keys=ON")
            # Deleted rows are overwritten with zeros, so an erased person's vectors do not survive in free pages.
            db.execute("PRAGMA secure_delete=ON")
            with db:
                yield SQLiteTransaction(db)
        except sqlite3.IntegrityError as exc:
            if exc.sqlite_errorname not in ("SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY"):
                raise
            raise UniqueViolation(str(exc)) from exc
        finally:
            db.close()

    def migrate(self, schema: str, migrations: Sequence[str]) -> None:
        db = sqlite3.connect(self.path, timeout=10)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            with db:
                db.executescript(schema)
                (version,) = db.execute("PRAGMA user_version").fetchone()
                for statement in migrations[version:]:
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {max(version, len(migrations))}")
        finally:
            db.close()

    def close(self) -> None:
        """Nothing is held open between transactions."""


class PostgreSQLTransaction:
    def __init__(self, db: Connection[tuple[Any, ...]]) -> None:
        self._db = db

    @staticmethod
    def _sql(sql: str) -> bytes:
        # psycopg's placeholder is %s, and a literal % is %%. The store's SQL holds no ? but its placeholders.
        return sql.replace("%", "%%").replace("?", "%s").encode()

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Cursor:
        # Without parameters the text goes as it is, and may hold several statements (a schema).
        return self._db.execute(self._sql(sql), args) if args else self._db.execute(sql.encode())

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self._db.cursor().executemany(self._sql(sql), rows)


class PostgreSQL:
    """A pool of connections to one database; each transaction borrows one (checked first: a server restarted since
    costs no failed request)."""
    types: ClassVar[dict[str, str]] = {"id": "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", "bytes": "BYTEA",
                                       "text": 'TEXT COLLATE "C"'}

    def __init__(self, url: str, password: str | None = None, max_size: int = 10) -> None:
        from psycopg_pool import ConnectionPool  # the postgresql extra: only imported when configured

        self.url = url
        self.pool: ConnectionPool = ConnectionPool(
            url, kwargs={"password": password} if password else {}, min_size=1, max_size=max_size, open=False,
            check=ConnectionPool.check_connection, name="attendance")
        # Opened here, so that a database out of reach stops the server at start with its reason.
        self.pool.open(wait=True, timeout=30)

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        from psycopg import errors

        try:
            with self.pool.connection() as db, db.transaction():
                yield PostgreSQLTransaction(db)
        except errors.UniqueViolation as exc:
            raise UniqueViolation(str(exc)) from exc

    def migrate(self, schema: str, migrations: Sequence[str]) -> None:
        with self.transaction() as tx:
            tx.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK,))
            tx.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = tx.execute("SELECT version FROM schema_version").fetchone()
            if row is None:
                tx.execute("INSERT INTO schema_version (version) VALUES (0)")
            version = row[0] if row else 0
            tx.execute(schema)
            for statement in migrations[version:]:
                tx.execute(statement)
            tx.execute("UPDATE schema_version SET version = ?", (max(version, len(migrations)),))

    def close(self) -> None:
        self.pool.close()


def backend(database: Path | str, password: str | None = None) -> Backend:
    """The backend the `database` setting names."""
    if is_url(database):
        return PostgreSQL(str(database), password)
    return SQLite(Path(database))
