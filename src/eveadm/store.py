"""State under the root: domain records and the event journal in SQLite (WAL), per-domain locks.

Records: one row per domain with its config (the normalized payload), its
runtime facts (state, timestamps, error, pid...) and the backend's own dict.
Events: append-only journal, one row per state change or stop phase.
Locks: one flock()ed file per domain under <root>/locks. The kernel drops a
lock when its holder dies, so a killed command never leaves a stale lock; the
holder writes who it is into the file so a waiter can name it.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time

from . import faults, privatedir
from .errors import EveadmError, LockHeld, NotFound
from .lazy import contextmanager

SCHEMA_VERSION = 4

# Each entry migrates from version i to i+1: SQL statements separated by ";", or a tuple of statements
# (a trigger's body has its own ";"). Append; never edit a shipped step.
MIGRATIONS = [
    """
    CREATE TABLE domains (
        uuid     TEXT PRIMARY KEY,
        alias    TEXT,
        brand    TEXT NOT NULL,
        state    TEXT NOT NULL,
        config   TEXT NOT NULL,
        runtime  TEXT NOT NULL,
        backend  TEXT NOT NULL,
        created  REAL NOT NULL,
        modified REAL NOT NULL
    );
    CREATE INDEX domains_alias ON domains(alias);
    CREATE TABLE events (
        id    INTEGER PRIMARY KEY AUTOINCREMENT,
        time  REAL NOT NULL,
        uuid  TEXT NOT NULL,
        alias TEXT,
        type  TEXT NOT NULL,
        data  TEXT NOT NULL
    );
    CREATE INDEX events_uuid ON events(uuid, id);
    """,
    # 2: what `list` shows by default is a column, so a listing decodes no JSON
    """
    ALTER TABLE domains ADD COLUMN ram INTEGER;
    UPDATE domains SET ram = json_extract(config, '$.ram');
    """,
    # 3: networks (issue 10): one row per network, its normalized payload as config
    """
    CREATE TABLE networks (
        name     TEXT PRIMARY KEY,
        type     TEXT NOT NULL,
        config   TEXT NOT NULL,
        created  REAL NOT NULL,
        modified REAL NOT NULL
    );
    """,
    # 4: the document `get` prints, kept with the record, so a read that changes nothing decodes and
    # encodes no JSON. Any write that does not set it (an older eveadm, a hand-made UPDATE) clears it.
    (
        "ALTER TABLE domains ADD COLUMN shown TEXT",
        """CREATE TRIGGER domains_shown_stale
           AFTER UPDATE OF alias, brand, state, config, runtime, backend, created, modified ON domains
           WHEN NEW.shown IS OLD.shown
           BEGIN UPDATE domains SET shown = NULL WHERE uuid = NEW.uuid; END""",
        # what a listing reads, in the order it reads it, without the rows' JSON
        "CREATE INDEX domains_listing ON domains(created, uuid, alias, brand, state, modified, ram)",
    ),
]


def _network_key(name: str) -> str:
    """What a network's journal entries carry where a domain's carry its uuid."""
    from .network import EVENT_PREFIX  # here: no read of domains needs the network package

    return EVENT_PREFIX + name


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    t = time.gmtime(ts)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int((ts % 1) * 1000):03d}Z"


class JsonField:
    """A record's JSON column, decoded the first time it is read."""

    def __init__(self, index: int):
        self.index = index  # position in Record._texts

    def __set_name__(self, owner, name: str) -> None:
        self.attr = "_" + name

    def __get__(self, rec, owner=None):
        if rec is None:
            return self
        return rec._decoded(self.attr, self.index)

    def __set__(self, rec, value) -> None:
        setattr(rec, self.attr, value)


class Record:
    """One domain as stored. `config`, `runtime` and `backend` are decoded from their JSON on first
    use, so reading many records to list a few columns costs no JSON work."""

    __slots__ = ("uuid", "alias", "brand", "state", "created", "modified", "_texts", "_config", "_runtime",
                 "_backend", "_ram", "_shown", "_ids")

    def __init__(self, uuid, alias, brand, state, config, runtime, backend, created, modified):
        self.uuid, self.alias, self.brand, self.state = uuid, alias, brand, state
        self._config, self._runtime, self._backend = config, runtime, backend
        self._texts = None  # (config, runtime, backend) JSON as stored, or a function of the uuid reading them
        self._ram = None  # the stored ram column, when read with it
        self._shown = None  # the stored `get` document, when read with it
        self._ids = None  # (domain_id, pid) from the stored runtime, when read with them
        self.created, self.modified = created, modified

    @classmethod
    def from_row(cls, row) -> "Record":
        """A record from the columns of Store._COLS, then optionally ram, shown, domain_id, pid."""
        u, a, b, s, c, r, be, cr, mo, *extra = row
        rec = cls(u, a, b, s, None, None, None, cr, mo)
        rec._texts = (c, r, be)
        if extra:
            rec._ram = extra[0]
        if len(extra) > 1:
            rec._shown, rec._ids = extra[1], (extra[2], extra[3])
        return rec

    def untouched(self) -> bool:
        """Nothing of the stored JSON was decoded (so nothing of it was changed)."""
        return self._config is None and self._runtime is None and self._backend is None

    def stored_document(self) -> str | None:
        """The `get` document stored with the record, while it still says what the record does."""
        return self._shown if self.untouched() else None

    def ids(self) -> tuple:
        """(domain_id, pid) as recorded, from their stored columns while the runtime is not decoded."""
        if self._runtime is None and self._ids is not None:
            return self._ids
        return self.runtime.get("domain_id"), self.runtime.get("pid")

    def replace_with(self, other: "Record") -> None:
        """Take over another (fresher) read of the same domain."""
        for name in self.__slots__:
            setattr(self, name, getattr(other, name))

    def _decoded(self, attr: str, index: int):
        import json

        value = getattr(self, attr)
        if value is None:
            if callable(self._texts):  # read with its columns only: fetch the JSON now
                self._texts = self._texts(self.uuid)
            value = json.loads(self._texts[index])
            setattr(self, attr, value)
        return value

    def text(self, attr: str, index: int) -> str:
        """The JSON to store: the text read when the value was never decoded (so never changed)."""
        import json

        value = getattr(self, attr)
        if value is None and callable(self._texts):
            self._texts = self._texts(self.uuid)
        return self._texts[index] if value is None else json.dumps(value)

    config = JsonField(0)  # the normalized payload
    runtime = JsonField(1)  # state facts: pid, timestamps, error, tries...
    backend = JsonField(2)  # the backend's own notes

    @property
    def ram(self):
        return self._ram if self._config is None and self._ram is not None else self.config.get("ram")


class Store:
    PRUNE_EVERY = 500  # events: how often a writer checks the journal's bounds

    def __init__(self, root, journal_limits=None):
        self.root = os.fspath(root)  # text: pathlib costs CLI start-up
        self.db_path = os.path.join(self.root, "eveadm.db")
        self._db: sqlite3.Connection | None = None
        # () -> (most events kept, oldest kept in days; 0 = no bound): read only when pruning
        self.journal_limits = journal_limits or (lambda: (100_000, 0))
        # record -> the JSON text `get` prints for it, or None: kept with each record written (the
        # presentation is eveadm.node's; the store only keeps the text)
        self.document = None

    # -- connection and schema ------------------------------------------
    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = self._open()
        return self._db

    def _open(self) -> sqlite3.Connection:
        privatedir.ensure(self.root, check_ancestors=True)
        try:
            # made here, owner-only and never through a symlink; SQLite gives its -wal and -shm the same mode
            os.close(privatedir.open_private(self.db_path, os.O_RDWR | os.O_CREAT))
        except OSError as exc:
            raise EveadmError(f"cannot open state database {self.db_path}: {exc.strerror}") from None
        try:
            db = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
            db.execute("PRAGMA busy_timeout=30000")
            # WAL + NORMAL: commits survive a killed process; a power cut may lose the last few, which
            # truth-on-read repairs (nothing runs after a power cut anyway). FULL costs an fsync per event.
            db.execute("PRAGMA synchronous=NORMAL")
            version = db.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.Error as exc:
            raise EveadmError(f"cannot open state database {self.db_path}: {exc}") from None
        if version < SCHEMA_VERSION:
            self._migrate(db, version)
        elif version > SCHEMA_VERSION:
            raise EveadmError(
                f"state database {self.db_path} has schema {version}, newer than this eveadm ({SCHEMA_VERSION})"
            )
        return db

    def _migrate(self, db: sqlite3.Connection, version: int) -> None:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("BEGIN IMMEDIATE")
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]  # another process may have won
            for step in range(version, SCHEMA_VERSION):
                stmts = MIGRATIONS[step]
                for stmt in stmts.split(";") if isinstance(stmts, str) else stmts:
                    if stmt.strip():
                        db.execute(stmt)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    @contextmanager
    def transaction(self):
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    # -- records ------------------------------------------------------------
    _COLS = "uuid, alias, brand, state, config, runtime, backend, created, modified"

    def get(self, uuid: str) -> Record | None:
        row = self.db.execute(f"SELECT {self._COLS}, ram, shown, json_extract(runtime, '$.domain_id'),"
                              " json_extract(runtime, '$.pid') FROM domains WHERE uuid=?", (uuid,)).fetchone()
        return Record.from_row(row) if row else None

    def all(self, columns_only: bool = False) -> list[Record]:
        """Every record, oldest first. With columns_only, a record's JSON (config, runtime, backend) is
        read from the database only if something asks for it: a listing of states needs none of it."""
        if not columns_only:
            rows = self.db.execute(f"SELECT {self._COLS}, ram FROM domains ORDER BY created, uuid").fetchall()
            return [Record.from_row(r) for r in rows]
        out = []
        for u, a, b, s, cr, mo, ram in self.db.execute(
                "SELECT uuid, alias, brand, state, created, modified, ram FROM domains ORDER BY created, uuid"):
            rec = Record(u, a, b, s, None, None, None, cr, mo)
            rec._texts = self._texts_of  # called with the uuid when the JSON is first wanted
            rec._ram = ram
            out.append(rec)
        return out

    def _texts_of(self, uuid: str) -> tuple[str, str, str]:
        row = self.db.execute("SELECT config, runtime, backend FROM domains WHERE uuid=?", (uuid,)).fetchone()
        if row is None:  # deleted since it was listed
            raise NotFound(f"domain {uuid} was deleted meanwhile")
        return row

    def has(self, uuid: str) -> bool:
        return self.db.execute("SELECT 1 FROM domains WHERE uuid=?", (uuid,)).fetchone() is not None

    def by_alias(self, alias: str) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT uuid FROM domains WHERE alias=?", (alias,))]

    def names(self) -> list[tuple[str, str | None]]:
        return list(self.db.execute("SELECT uuid, alias FROM domains ORDER BY uuid"))

    def insert(self, rec: Record, event: tuple[str, dict] | None = None) -> None:
        import json

        now = time.time()
        rec.created = rec.modified = now
        with self.transaction() as db:
            db.execute(
                f"INSERT INTO domains ({self._COLS}, ram, shown) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (rec.uuid, rec.alias, rec.brand, rec.state, json.dumps(rec.config), json.dumps(rec.runtime),
                 json.dumps(rec.backend), now, now, rec.config.get("ram"), self._document(rec)),
            )
            if event:
                self._event(db, now, rec, *event)
        faults.point("store.insert")

    def save(self, rec: Record, events: list[tuple[str, dict]] = ()) -> None:
        now = time.time()
        rec.modified = now
        with self.transaction() as db:
            db.execute(
                "UPDATE domains SET alias=?, state=?, ram=?, config=?, runtime=?, backend=?, modified=?, shown=?"
                " WHERE uuid=?",
                (rec.alias, rec.state, rec.config.get("ram"), rec.text("_config", 0), rec.text("_runtime", 1),
                 rec.text("_backend", 2), now, self._document(rec), rec.uuid),
            )
            rec._shown = None  # what it was read with is out of date
            for etype, data in events:
                self._event(db, now, rec, etype, data)
        faults.point("store.save")

    def _document(self, rec: Record) -> str | None:
        return self.document(rec) if self.document is not None else None

    def remove(self, rec: Record, event: tuple[str, dict]) -> None:
        now = time.time()
        with self.transaction() as db:
            db.execute("DELETE FROM domains WHERE uuid=?", (rec.uuid,))
            self._event(db, now, rec, *event)
        faults.point("store.remove")

    # -- networks -------------------------------------------------------------
    # A network's journal entries carry "network:NAME" where a domain's carry its uuid.
    def network(self, name: str) -> dict | None:
        import json

        row = self.db.execute("SELECT config FROM networks WHERE name=?", (name,)).fetchone()
        return json.loads(row[0]) if row else None

    def networks(self) -> list[dict]:
        import json

        return [json.loads(r[0]) for r in self.db.execute("SELECT config FROM networks ORDER BY name")]

    def network_insert(self, cfg: dict, event: tuple[str, dict]) -> None:
        import json

        now = time.time()
        with self.transaction() as db:
            db.execute("INSERT INTO networks (name, type, config, created, modified) VALUES (?,?,?,?,?)",
                       (cfg["name"], cfg["type"], json.dumps(cfg), now, now))
            self._append(db, now, _network_key(cfg["name"]), cfg["name"], *event)
        faults.point("store.network_insert")

    def network_save(self, cfg: dict, event: tuple[str, dict]) -> None:
        import json

        now = time.time()
        with self.transaction() as db:
            db.execute("UPDATE networks SET config=?, modified=? WHERE name=?", (json.dumps(cfg), now, cfg["name"]))
            self._append(db, now, _network_key(cfg["name"]), cfg["name"], *event)
        faults.point("store.network_save")

    def network_remove(self, name: str, event: tuple[str, dict]) -> None:
        now = time.time()
        with self.transaction() as db:
            db.execute("DELETE FROM networks WHERE name=?", (name,))
            self._append(db, now, _network_key(name), name, *event)
        faults.point("store.network_remove")

    # -- events ---------------------------------------------------------------
    def _event(self, db, now, rec, etype, data) -> None:
        self._append(db, now, rec.uuid, rec.alias, etype, data)

    def _append(self, db, now, uuid, alias, etype, data) -> None:
        import json

        cur = db.execute("INSERT INTO events (time, uuid, alias, type, data) VALUES (?,?,?,?,?)",
                         (now, uuid, alias, etype, json.dumps(data)))
        if cur.lastrowid % self.PRUNE_EVERY == 0:  # now and then, in the same transaction: keep it bounded
            self._prune(db, cur.lastrowid, now)

    def _prune(self, db, last_id: int, now: float) -> None:
        """Drop the oldest events beyond the journal's bounds (settings journal_max_events and
        journal_max_days)."""
        max_events, max_days = self.journal_limits()
        if max_events and max_events > 0:
            db.execute("DELETE FROM events WHERE id <= ?", (last_id - int(max_events),))
        if max_days and max_days > 0:
            db.execute("DELETE FROM events WHERE time < ?", (now - float(max_days) * 86400,))

    def append_event(self, uuid: str, alias: str | None, etype: str, data: dict) -> None:
        """An event that changes no record (e.g. the agent's decisions)."""
        with self.transaction() as db:
            self._append(db, time.time(), uuid, alias, etype, data)

    def events(self, after_id: int = 0, uuid: str | None = None, limit: int = 10000) -> list[dict]:
        import json

        sql = "SELECT id, time, uuid, alias, type, data FROM events WHERE id > ?"
        args: list = [after_id]
        if uuid:
            sql += " AND uuid = ?"
            args.append(uuid)
        sql += " ORDER BY id LIMIT ?"
        args.append(limit)
        out = []
        for eid, t, u, a, ty, data in self.db.execute(sql, args):
            ev = {"id": eid, "time": iso(t), "uuid": u, "alias": a, "type": ty}
            ev.update(json.loads(data))
            out.append(ev)
        return out

    def last_event_id(self) -> int:
        row = self.db.execute("SELECT MAX(id) FROM events").fetchone()
        return row[0] or 0

    # -- locks ---------------------------------------------------------------
    def lock_path(self, uuid: str) -> str:
        return os.path.join(self.root, "locks", f"{uuid}.lock")

    @contextmanager
    def lock(self, uuid: str, timeout: float, what: str = ""):
        """Hold the domain's lock; wait up to `timeout` s, then raise LockHeld naming the holder."""
        import fcntl  # here and below: reads take no lock, and every import weighs on them
        import json

        path = self.lock_path(uuid)
        privatedir.ensure(os.path.dirname(path))
        deadline = time.monotonic() + timeout
        delay = 0.01
        fd = privatedir.open_private(path, os.O_RDWR | os.O_CREAT)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise LockHeld(f"domain {uuid} is busy: {self._holder(path)}") from None
                time.sleep(delay)
                delay = min(delay * 2, 0.2)
                continue
            # the holder before us may have deleted the domain and unlinked the file: lock the new one
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
            fd = privatedir.open_private(path, os.O_RDWR | os.O_CREAT)
        try:
            holder = {"pid": os.getpid(), "command": what or " ".join(["eveadm", *sys.argv[1:]]), "since": time.time()}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(holder).encode(), 0)
            yield
        finally:
            self._drop_lock_of_gone(uuid, path, fd)
            os.close(fd)  # releases the flock

    def _drop_lock_of_gone(self, uuid: str, path: str, fd: int) -> None:
        """Holding the lock of a domain that has no record (deleted meanwhile, or a create that
        failed before its record): remove the lock file, so none outlives its domain."""
        try:
            if self.db.execute("SELECT 1 FROM domains WHERE uuid=?", (uuid,)).fetchone() is None and \
                    os.stat(path).st_ino == os.fstat(fd).st_ino:
                os.unlink(path)
        except (OSError, sqlite3.Error):
            pass  # doctor finds what is left

    def is_locked(self, uuid: str) -> bool:
        import fcntl

        try:
            fd = privatedir.open_private(self.lock_path(uuid), os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)

    @staticmethod
    def _holder(path: str) -> str:
        import json

        try:
            with os.fdopen(privatedir.open_private(path, os.O_RDONLY), encoding="utf-8") as fh:
                h = json.loads(fh.read() or "{}")
            return f"held by pid {h['pid']} ({h['command']}) since {iso(h['since'])}"
        except (OSError, ValueError, KeyError):
            return "held by another eveadm process"

    def drop_lock_file(self, uuid: str) -> None:
        try:
            os.unlink(self.lock_path(uuid))
        except FileNotFoundError:
            pass
