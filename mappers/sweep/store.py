"""The results store: one SQLite file (WAL), one row per point, written by one coordinator.

Tables (``attnscope query STORE "SELECT ..."`` reads them):

- ``points``: one row per point, keyed by the point's hash (:mod:`mappers.sweep.points`): ``status``
  (``ok`` or ``error``), ``error`` (the exception text), ``cascade``, ``model``, ``seq_len``, ``strategy``,
  ``model_version``, ``inputs_json`` (overrides, workload, sizes), ``seconds`` (evaluation time),
  ``finished_at`` (UTC, ISO 8601), ``checksum`` (:func:`row_checksum` of the row's other values), then one
  column per axis or derived value and one REAL column per metric (added as sweeps need them; NULL where a
  sweep did not set them).
- ``sweeps``: one row per sweep name: the spec's YAML text and summary, architecture fingerprint,
  model version, point count, created/updated times.
- ``sweep_points``: (sweep, idx) -> key: which points a sweep consists of, in sample order.
- ``results``: a view joining ``sweep_points`` to ``points`` (a point shared by two sweeps appears twice).
- ``claims``: (key, owner, expires): the points a running sweep has taken to compute. Two sweeps on one store
  share the work: each claims chunks of the points no live run holds, skips the others' claims, and at the end
  waits for them (taking over a claim whose owner died: same host and its process gone, or its lease of
  :data:`LEASE_SECONDS`, renewed while it runs, expired). A point is written once per run that computes it,
  by key, so it is never stored twice.

Rows are written with ``INSERT OR REPLACE`` in one transaction per batch of finished points, so a point is
either wholly in the store or not at all, and never twice. With ``synchronous=NORMAL`` in WAL mode a
committed batch survives the process being killed (a power cut may lose the last batches, never corrupt).

Every row carries a checksum of its stored values (all but the timings), computed from the row as SQLite
stored it, in the transaction that writes it. A bit flipped on disk inside a value passes SQLite's own
``quick_check`` but not the checksum: resuming a sweep recomputes such a row, and ``pareto``/``plot`` leave it
out and ``query`` warns about it (:meth:`Store.corrupt`). Rows written before checksums existed (NULL) are
taken as they are.

A file that is not an SQLite database, or an SQLite database that attnscope did not create (its
``application_id`` is not ours and it holds tables), or a store of another schema version, is refused with
a message and left untouched.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import hashlib
import os
import socket
import sqlite3
import struct
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from einsum.errors import StoreError

APPLICATION_ID = 0x61747363  # "atsc"
SCHEMA_VERSION = 1
_HEADER = b"SQLite format 3\x00"
BASE_COLUMNS: Mapping[str, str] = {
    "key": "TEXT PRIMARY KEY",
    "status": "TEXT NOT NULL CHECK (status IN ('ok', 'error'))",
    "error": "TEXT",
    "cascade": "TEXT",
    "model": "TEXT",
    "seq_len": "INTEGER",
    "strategy": "TEXT",
    "model_version": "TEXT NOT NULL",
    "inputs_json": "TEXT NOT NULL",
    "seconds": "REAL",
    "finished_at": "TEXT",
    "checksum": "TEXT",
}
UNCHECKED = frozenset({"checksum", "seconds", "finished_at", "sweep", "idx"})
"""Columns a row's checksum leaves out: itself, the timings (they differ between runs) and the results view's."""
_SCHEMA = f"""
CREATE TABLE points ({", ".join(f'"{k}" {v}' for k, v in BASE_COLUMNS.items())});
CREATE TABLE sweeps (
    name TEXT PRIMARY KEY, spec_yaml TEXT, spec_json TEXT, origin TEXT, arch_fingerprint TEXT,
    model_version TEXT, points INTEGER, created_at TEXT, updated_at TEXT
);
CREATE TABLE sweep_points (sweep TEXT NOT NULL, idx INTEGER NOT NULL, key TEXT NOT NULL, PRIMARY KEY (sweep, idx));
CREATE INDEX sweep_points_key ON sweep_points (key);
CREATE VIEW results AS SELECT sp.sweep AS sweep, sp.idx AS idx, p.* FROM sweep_points sp JOIN points p USING (key);
"""
_CLAIMS = "CREATE TABLE IF NOT EXISTS claims (key TEXT PRIMARY KEY, owner TEXT NOT NULL, expires REAL NOT NULL)"
LEASE_SECONDS = 60.0
"""How long a claim holds without renewal (a running sweep renews its claims every quarter of this)."""


def utc_now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def quote_identifier(column: str) -> str:
    return '"' + column.replace('"', '""') + '"'


def _check_file(path: Path) -> bool:
    """True if path holds a database to open; False if it is absent or empty (a new store)."""
    if not path.exists():
        return False
    if path.is_dir():
        raise StoreError(f"{path}: is a directory; give the path of a store file (e.g. results.sqlite)")
    try:
        with path.open("rb") as f:
            head = f.read(len(_HEADER))
    except OSError as exc:
        raise StoreError(f"{path}: cannot read: {exc.strerror}") from None
    if not head:
        return False
    if head != _HEADER:
        raise StoreError(
            f"{path}: not an attnscope store (not an SQLite database: it starts with {head[:16]!r}); "
            "refusing to touch it; give a new path for the store"
        )
    return True


class Store:
    """An open results store. Use :meth:`open`; close it (or use it as a context manager) when done."""

    def __init__(self, path: Path, conn: sqlite3.Connection, readonly: bool):
        self.path = path
        self.conn = conn
        self.readonly = readonly
        self._guard: _ReadOnly | None = None

    @classmethod
    def open(cls, path: str | Path, readonly: bool = False) -> Store:
        """Open a store; a new one is created (unless readonly). Foreign or corrupt files are refused."""
        path = Path(path)
        exists = _check_file(path)
        if readonly and not exists:
            raise StoreError(f"{path}: no such store; run `attnscope sweep SPEC --store {path}` first")
        if exists:
            cls._check_database(path)
        elif not readonly and not path.parent.is_dir():
            raise StoreError(f"{path}: cannot create the store: folder {path.parent} does not exist (create it, or "
                             "give --store a path in an existing folder)")  # fmt: skip
        try:
            if readonly:
                conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
                conn.execute("PRAGMA query_only = 1")
                guard = _ReadOnly()
                conn.set_authorizer(guard)
            else:
                conn = sqlite3.connect(path, isolation_level=None, timeout=60)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                if not exists or conn.execute("PRAGMA application_id").fetchone()[0] == 0:
                    cls._create(conn, path)
                have = [r[1] for r in conn.execute("PRAGMA table_info(points)")]
                claims = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'claims'").fetchone()
                if "checksum" not in have or not claims:  # a store of an earlier attnscope
                    with _transaction(conn, path):
                        if "checksum" not in have:
                            conn.execute("ALTER TABLE points ADD COLUMN checksum TEXT")
                        conn.execute(_CLAIMS)
                        conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: cannot open the store: {exc}") from None
        store = cls(path, conn, readonly)
        store._guard = guard if readonly else None
        return store

    @staticmethod
    def _check_database(path: Path) -> None:
        """Refuse (without writing anything) a file that is not an attnscope store of this schema."""
        try:
            conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: cannot open: {exc}") from None
        try:
            app = conn.execute("PRAGMA application_id").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            objects = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'")]
            problems = [r[0] for r in conn.execute("PRAGMA quick_check(5)")]
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"{path}: not a usable attnscope store (SQLite says: {exc}); refusing to touch it; "
                "give a new path for the store"
            ) from None
        finally:
            conn.close()
        if app != APPLICATION_ID and (app != 0 or objects):
            shown = ", ".join(objects[:8]) + (", ..." if len(objects) > 8 else "")
            raise StoreError(
                f"{path}: an SQLite database that is not an attnscope store (application_id {app:#x}, "
                f"tables: {shown or 'none'}); refusing to touch it; give a new path for the store"
            )
        if app == APPLICATION_ID and version != SCHEMA_VERSION:
            raise StoreError(
                f"{path}: an attnscope store of schema version {version}; this attnscope reads version "
                f"{SCHEMA_VERSION}; use the matching attnscope or a new store"
            )
        if problems != ["ok"]:
            raise StoreError(f"{path}: the store is corrupt (SQLite quick_check: {'; '.join(problems)}); "
                             "refusing to write to it; export what is readable with `attnscope query`")  # fmt: skip

    @staticmethod
    def _create(conn: sqlite3.Connection, path: Path) -> None:
        with _transaction(conn, path):
            if conn.execute("PRAGMA application_id").fetchone()[0] == 0:  # not created meanwhile by another run
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    conn.execute(statement)
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")

    # -- schema and sweeps -------------------------------------------------------------------------------

    def columns(self) -> list[str]:
        """Columns of the points table."""
        return [r[1] for r in self.conn.execute("PRAGMA table_info(points)")]

    def ensure_columns(self, columns: Mapping[str, str]) -> None:
        """Add the missing columns (name -> SQL type, '' for none) to the points table."""
        have = set(self.columns())
        missing = [(c, t) for c, t in columns.items() if c not in have]
        if missing:
            with _transaction(self.conn, self.path):
                for column, kind in missing:
                    self.conn.execute(f"ALTER TABLE points ADD COLUMN {quote_identifier(column)} {kind}".rstrip())
                self.conn.execute("COMMIT")

    def record_sweep(self, name: str, info: Mapping[str, Any], keys: Sequence[str]) -> None:
        """Record a sweep and its points in sample order (replacing what an earlier run of that name listed)."""
        now = utc_now()
        with _transaction(self.conn, self.path):
            created = self.conn.execute("SELECT created_at FROM sweeps WHERE name = ?", (name,)).fetchone()
            self.conn.execute(
                "INSERT OR REPLACE INTO sweeps VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (name, info["spec_yaml"], info["spec_json"], info["origin"], info["arch_fingerprint"],
                 info["model_version"], len(keys), created[0] if created else now, now),
            )  # fmt: skip
            self.conn.execute("DELETE FROM sweep_points WHERE sweep = ?", (name,))
            self.conn.executemany(
                "INSERT INTO sweep_points VALUES (?, ?, ?)", ((name, i, k) for i, k in enumerate(keys))
            )
            self.conn.execute("COMMIT")

    def finished(self, keys: Iterable[str], include_errors: bool = True, corrupt: list[str] | None = None) -> set[str]:
        """The keys among keys that have an intact row (only ``ok`` rows unless include_errors); the keys of rows
        that fail their checksum are left out, and appended to corrupt if given."""
        where = "" if include_errors else " AND status = 'ok'"
        found: set[str] = set()
        for key, intact in self._verified(keys, where):
            if intact:
                found.add(key)
            elif corrupt is not None:
                corrupt.append(key)
        return found

    def corrupt(self, keys: Iterable[str] | None = None) -> list[str]:
        """The keys (among keys; default: every row) of rows whose values fail their checksum."""
        return [key for key, intact in self._verified(keys) if not intact]

    def _verified(self, keys: Iterable[str] | None, where: str = "") -> Iterator[tuple[str, bool]]:
        """(key, intact) of the rows of keys (default: every row), in batches."""
        if keys is None:
            cursor = self.conn.execute("SELECT * FROM points")
            columns = [d[0] for d in cursor.description]
            at = columns.index("key")
            yield from ((row[at], intact(columns, row)) for row in cursor)
            return
        keys = list(keys)
        for start in range(0, len(keys), 900):
            chunk = keys[start : start + 900]
            marks = ",".join("?" * len(chunk))
            cursor = self.conn.execute(f"SELECT * FROM points WHERE key IN ({marks}){where}", chunk)
            columns = [d[0] for d in cursor.description]
            yield from ((row[columns.index("key")], intact(columns, row)) for row in cursor)

    # -- rows ------------------------------------------------------------------------------------------------

    # -- claims (two runs on one store share the work) -------------------------------------------------------

    def claim(
        self, keys: Sequence[str], owner: str, skip_done: bool = True, include_errors: bool = True
    ) -> tuple[list[str], list[str], list[str]]:
        """Claim, in one transaction, the keys that no live run holds (and, with skip_done, that have no intact
        row, or no ``ok`` row unless include_errors); returns (claimed, done, held by another live run)."""
        now = time.time()
        marks = ",".join("?" * len(keys))
        with _transaction(self.conn, self.path):
            holders = dict(
                ((k, (o, e)) for k, o, e in self.conn.execute(
                    f"SELECT key, owner, expires FROM claims WHERE key IN ({marks})", keys))
            )  # fmt: skip
            done = self.finished(keys, include_errors) if skip_done else set()
            claimed, held = [], []
            for key in keys:
                if key in done:
                    continue
                holder = holders.get(key)
                if holder is not None and holder[0] != owner and claim_alive(*holder, now):
                    held.append(key)
                else:
                    claimed.append(key)
            self.conn.executemany(
                "INSERT OR REPLACE INTO claims VALUES (?, ?, ?)", ((k, owner, now + LEASE_SECONDS) for k in claimed)
            )
            self.conn.execute("COMMIT")
        return claimed, [k for k in keys if k in done], held

    def held(self, keys: Sequence[str], owner: str) -> tuple[list[str], list[str], list[str]]:
        """Of keys another run held: (finished by it: its claim gone and an intact row there, free to claim,
        still held by a live run)."""
        now = time.time()
        holders: dict[str, tuple[str, float]] = {}
        for start in range(0, len(keys), 900):
            chunk = list(keys[start : start + 900])
            sql = f"SELECT key, owner, expires FROM claims WHERE key IN ({','.join('?' * len(chunk))})"
            holders.update((k, (o, e)) for k, o, e in self.conn.execute(sql, chunk))
        live = {k for k, (o, e) in holders.items() if o != owner and claim_alive(o, e, now)}
        rows = self.finished([k for k in keys if k not in live])
        return [k for k in keys if k in rows], [k for k in keys if k not in live and k not in rows], \
            [k for k in keys if k in live]  # fmt: skip

    def renew(self, owner: str) -> None:
        """Extend the lease of owner's claims."""
        with _transaction(self.conn, self.path):
            self.conn.execute("UPDATE claims SET expires = ? WHERE owner = ?", (time.time() + LEASE_SECONDS, owner))
            self.conn.execute("COMMIT")

    def release(self, owner: str) -> None:
        """Drop owner's claims (a run that ends, finished or interrupted)."""
        with _transaction(self.conn, self.path):
            self.conn.execute("DELETE FROM claims WHERE owner = ?", (owner,))
            self.conn.execute("COMMIT")

    def write(self, rows: Sequence[Mapping[str, Any]], owner: str | None = None) -> None:
        """Insert or replace rows (column -> value) in one transaction: all of them are stored, or none (with
        owner: its claims on them are released in the same transaction)."""
        if not rows:
            return
        with _transaction(self.conn, self.path):
            for columns, group in _by_columns(rows).items():
                sql = (
                    f"INSERT OR REPLACE INTO points ({', '.join(map(quote_identifier, columns))}) "
                    f"VALUES ({', '.join('?' * len(columns))})"
                )
                self.conn.executemany(sql, [tuple(r[c] for c in columns) for r in group])
            keys = [r["key"] for r in rows]
            self._seal(keys)
            if owner is not None:
                self.conn.executemany("DELETE FROM claims WHERE key = ? AND owner = ?", ((k, owner) for k in keys))
            self.conn.execute("COMMIT")

    def _seal(self, keys: Sequence[str]) -> None:
        """Set the checksum of the rows of keys from their values as stored (inside the writing transaction)."""
        for start in range(0, len(keys), 900):
            chunk = keys[start : start + 900]
            cursor = self.conn.execute(f"SELECT * FROM points WHERE key IN ({','.join('?' * len(chunk))})", chunk)
            columns = [d[0] for d in cursor.description]
            sums = [(row_checksum(columns, row), row[columns.index("key")]) for row in cursor.fetchall()]
            self.conn.executemany("UPDATE points SET checksum = ? WHERE key = ?", sums)

    def query(self, sql: str, params: Sequence[Any] = ()) -> tuple[list[str], list[tuple]]:
        """Run one SQL statement; (column names, rows). A read-only store runs reads only (see _read_only)."""
        if self._guard is not None:
            self._guard.denied = False
        try:
            cursor = self.conn.execute(sql, params)
            rows = cursor.fetchall()
        except sqlite3.Error as exc:
            if self._guard is not None and self._guard.denied:
                word = (sql.split(maxsplit=1) or ["(empty)"])[0].upper()
                raise StoreError(
                    f"{self.path}: refused: the store is opened read-only and a query only reads it (SELECT, and "
                    f"PRAGMA queries such as table_info); {word} statements are refused: they write to the store "
                    "or create other files (ATTACH, VACUUM INTO)"
                ) from None
            raise StoreError(f"{self.path}: query failed: {exc}") from None
        return [d[0] for d in cursor.description or ()], rows

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_READS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
_READ_PRAGMAS = {
    "table_info", "table_xinfo", "table_list", "index_list", "index_info", "index_xinfo", "foreign_key_list",
    "quick_check", "integrity_check", "database_list", "compile_options", "function_list", "pragma_list",
    "collation_list", "module_list",
}  # fmt: skip
_QUERY_PRAGMAS = {"user_version", "application_id", "schema_version", "page_count", "page_size", "freelist_count",
                  "encoding", "journal_mode", "data_version"}  # fmt: skip
"""Pragmas read without an argument (with one, they set)."""


class _ReadOnly:
    """SQLite authorizer of read-only stores: reads and reading pragmas pass; everything else (writes, ATTACH,
    which VACUUM INTO does too, DETACH, temporary tables, transactions, setting pragmas) is denied and noted."""

    def __init__(self) -> None:
        self.denied = False

    def __call__(self, action: int, arg1: str | None, arg2: str | None, db: str | None, trigger: str | None) -> int:
        if action in _READS:
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_PRAGMA:
            name = (arg1 or "").lower()
            if name in _READ_PRAGMAS or (name in _QUERY_PRAGMAS and arg2 is None):
                return sqlite3.SQLITE_OK
        self.denied = True
        return sqlite3.SQLITE_DENY


_HOST = socket.gethostname()


def new_owner() -> str:
    """An id for one run's claims: host, process id and a random part."""
    return f"{_HOST}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def claim_alive(owner: str, expires: float, now: float | None = None) -> bool:
    """Whether a claim still holds: its lease runs and, if its owner ran on this host, that process lives."""
    if expires <= (time.time() if now is None else now):
        return False
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != _HOST or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


def row_checksum(columns: Sequence[str], row: Sequence[Any]) -> str:
    """BLAKE2b (64 bits) of a row's values as SQLite returns them, by column name (NULLs and :data:`UNCHECKED`
    columns left out, so columns added later, or the results view's, leave it unchanged)."""
    return _order(tuple(columns))(row)


def intact(columns: Sequence[str], row: Sequence[Any]) -> bool:
    """Whether a row (a SELECT * of points or results) matches its checksum (True if it has none)."""
    return _check(tuple(columns))(row)


@functools.lru_cache(maxsize=64)
def _order(columns: tuple[str, ...]) -> Callable[[Sequence[Any]], str]:
    """The checksum of rows with these columns (the checked columns sorted by name once): the names of the
    non-NULL columns, their floats as IEEE doubles, the other values as ``name<US>type-letter repr``; BLAKE2b."""
    at = [(i, name) for name, i in sorted((n, i) for i, n in enumerate(columns) if n not in UNCHECKED)]

    def checksum(row: Sequence[Any]) -> str:
        names, floats, others = [], [], []
        for i, name in at:
            value = row[i]
            if value is None:
                continue
            names.append(name)
            if type(value) is float:
                floats.append(value)
            else:
                others.append(f"{name}\x1f{type(value).__name__[0]}{value!r}")
        h = hashlib.blake2b(digest_size=8)
        h.update("\x1e".join(names).encode("utf-8", "surrogatepass"))
        h.update(struct.pack(f"<{len(floats)}d", *floats))
        h.update("\x1e".join(others).encode("utf-8", "surrogatepass"))
        return h.hexdigest()

    return checksum


@functools.lru_cache(maxsize=64)
def _check(columns: tuple[str, ...]) -> Callable[[Sequence[Any]], bool]:
    if "checksum" not in columns:
        return lambda row: True
    where, checksum = columns.index("checksum"), _order(columns)
    return lambda row: row[where] is None or row[where] == checksum(row)


def unwritable(path: str | Path, exc: BaseException) -> StoreError:
    """The error of a store that refuses a write (read-only file or folder, full or failing disk, a lock held)."""
    return StoreError(
        f"{path}: cannot write to the store (SQLite: {exc}): is it read-only, on a full or failing disk, or locked "
        "by another program? Nothing of this batch was written; the points stored before are kept: rerun to resume "
        "once the store is writable"
    )


class _transaction:
    """BEGIN IMMEDIATE ... (the body commits); rolls back if the body raises. An SQLite error (the store became
    read-only, its disk failed or filled up) becomes a StoreError that says so; the store keeps what it held."""

    def __init__(self, conn: sqlite3.Connection, path: str | Path):
        self.conn = conn
        self.path = path

    def __enter__(self) -> None:
        if not self.conn.in_transaction:
            try:
                self.conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise unwritable(self.path, exc) from None

    def __exit__(self, kind: type | None, exc: BaseException | None, tb: object) -> None:
        if kind is not None and self.conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")
        if kind is not None and issubclass(kind, sqlite3.Error):
            raise unwritable(self.path, exc) from None


def _by_columns(rows: Sequence[Mapping[str, Any]]) -> dict[tuple[str, ...], list[Mapping[str, Any]]]:
    groups: dict[tuple[str, ...], list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row), []).append(row)
    return groups


# --------------------------------------------------------------------------------------------------- export


def export(columns: Sequence[str], rows: Sequence[Sequence[Any]], path: str | Path) -> str:
    """Write rows to a .csv or .parquet file (Parquet needs pyarrow); returns the format written."""
    path = Path(path)
    if path.suffix.lower() == ".parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise StoreError(f"{path}: Parquet export needs pyarrow (pip install pyarrow); or write .csv") from None
        table = pa.table({c: [r[i] for r in rows] for i, c in enumerate(columns)})
        _atomic(path, lambda tmp: pq.write_table(table, tmp))
        return "parquet"
    if path.suffix.lower() != ".csv":
        raise StoreError(f"{path}: unknown export format {path.suffix or '(none)'}; allowed: .csv, .parquet")

    def write_csv(tmp: Path) -> None:
        with tmp.open("w", newline="", encoding="utf-8") as f:
            out = csv.writer(f)
            out.writerow(columns)
            out.writerows(rows)

    _atomic(path, write_csv)
    return "csv"


def _atomic(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StoreError(f"{path}: cannot write: {exc.strerror or exc}") from None
