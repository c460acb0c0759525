"""Embedded resource store on SQLite with optimistic concurrency and an async change feed.

Why SQLite (stdlib ``sqlite3``, WAL): one file in the caller's data dir, survives restarts, readable by
other processes (e.g. a headless ``list`` command) while the gateway writes.

Concurrency model:

* The store is owned by **one process and one asyncio loop** (the gateway). Its methods are synchronous:
  each is one small transaction on a local file (sub-millisecond typically; ``synchronous=NORMAL`` in
  WAL mode means commits do not fsync, so they do not stall the loop on slow disks). Durable across
  process crashes; the last transactions may be lost on power failure, never corrupted. Do not call it
  from other threads (sqlite3's same-thread check enforces this).
* Because a method never awaits, a get-modify-update sequence without an ``await`` in between cannot
  race inside the loop. Across awaits, use the ``resource_version`` precondition: :meth:`Store.update`
  raises :class:`Conflict` when the stored version moved on.
* Writes by *other* processes to the same file are not seen by watchers; only the owner should write.

Resource versions: one global counter, strictly increasing across all kinds and never reused (kept in a
table, so deletes and restarts don't rewind it). ``metadata.generation`` increases only when ``spec``
changes (Kubernetes semantics), so status churn is distinguishable from desired-state changes.

Change feed: :meth:`Store.watch` registers a watcher *immediately* (no events can be missed between the
call and the first ``await``) with its own bounded queue. Events are published synchronously after the
commit, so every watcher sees them in commit order. A watcher whose queue is full is not allowed to
block the store or grow memory: its backlog is discarded and it receives one ``OVERFLOW`` event, which
means "your view is stale: re-list". With ``snapshot=True`` the watcher does that itself -- the stream
starts with (and, after an overflow, resumes with) ``ADDED`` for every current object, taken atomically
with respect to later events.
"""

from __future__ import annotations

import asyncio
import enum
import json
import sqlite3
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from .model import KINDS, R, Resource, matches_labels, resource_from_dict, utcnow

DEFAULT_WATCH_QUEUE = 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS resources (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    resource_version INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (kind, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counters (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO counters (key, value) VALUES ('resource_version', 0);
"""
_SCHEMA_VERSION = 1


class StoreError(Exception):
    """Base class for store errors."""


class NotFound(StoreError):
    def __init__(self, kind: str, name: str) -> None:
        super().__init__(f"{kind} {name!r} not found")
        self.kind, self.name = kind, name


class AlreadyExists(StoreError):
    def __init__(self, kind: str, name: str) -> None:
        super().__init__(f"{kind} {name!r} already exists")
        self.kind, self.name = kind, name


class Conflict(StoreError):
    """The object changed since it was read (stale ``resource_version``) or was recreated (uid)."""

    def __init__(self, kind: str, name: str, expected: int, actual: int) -> None:
        super().__init__(f"{kind} {name!r}: expected resourceVersion {expected}, stored {actual}")
        self.kind, self.name, self.expected, self.actual = kind, name, expected, actual


class StoreClosed(StoreError):
    pass


class EventType(enum.StrEnum):
    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"
    OVERFLOW = "OVERFLOW"  # the watcher fell behind; its backlog was dropped; re-list


@dataclass(frozen=True)
class Event:
    """One change. ``object`` is ``None`` only for ``OVERFLOW``; for ``DELETED`` it is the last state."""

    type: EventType
    object: Resource | None
    resource_version: int


_CLOSED = object()
_OVERFLOW = object()


class Watch:
    """An async iterator of :class:`Event`; also an (async) context manager that unregisters it."""

    def __init__(self, store: Store, kind: type[Resource] | None, maxsize: int, snapshot: bool) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self._store = store
        self.kind = kind
        self._snapshot = snapshot
        self._queue: asyncio.Queue[Any] = asyncio.Queue(maxsize)
        self._pending: deque[Event] = self._take_snapshot() if snapshot else deque()
        self.overflows = 0  # how many times this watcher fell behind (diagnostics)
        self._closed = False  # no more events accepted
        self._finished = False  # the end marker was consumed

    def _take_snapshot(self) -> deque[Event]:
        """Current objects as ADDED events; clears the queue in the same synchronous step."""
        _drain(self._queue)
        kinds = [self.kind] if self.kind else list(KINDS.values())
        return deque(Event(EventType.ADDED, obj, obj.metadata.resource_version)
                     for k in kinds for obj in self._store.list(k))

    def _force(self, item: Any) -> None:
        """Enqueue ``item``; if full, drop the whole backlog first. Never blocks, never grows."""
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            _drain(self._queue)
            self._queue.put_nowait(item)

    def _offer(self, event: Event) -> None:
        """Called by the store, synchronously after a commit."""
        if self._closed:
            return
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflows += 1
            self._force(_OVERFLOW)

    def __aiter__(self) -> Watch:
        return self

    async def __anext__(self) -> Event:
        if self._pending:
            return self._pending.popleft()
        if self._finished:
            raise StopAsyncIteration
        item = await self._queue.get()
        if item is _CLOSED:
            self._finished = True
            raise StopAsyncIteration
        if item is _OVERFLOW:
            if self._snapshot and not self._closed:
                self._pending = self._take_snapshot()
            return Event(EventType.OVERFLOW, None, self._store.resource_version if not self._closed else 0)
        assert isinstance(item, Event)
        return item

    def close(self) -> None:
        """Unregister. The iterator ends after the events already queued (also wakes a waiting reader)."""
        if not self._closed:
            self._closed = True
            self._store._watchers.discard(self)
            self._force(_CLOSED)

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Watch:
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.close()


def _drain(q: asyncio.Queue[Any]) -> None:
    while True:
        try:
            q.get_nowait()
        except asyncio.QueueEmpty:
            return


T = TypeVar("T")


class Store:
    """Resources by (kind, name) in one SQLite file. See the module docstring for the threading model."""

    def __init__(self, path: Path | str) -> None:
        path = Path(path)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = path
        self._db: sqlite3.Connection | None = sqlite3.connect(path, isolation_level=None, timeout=1.0)
        self._watchers: set[Watch] = set()
        try:
            self._init_schema()
        except BaseException:
            self._db.close()
            self._db = None
            raise

    def _init_schema(self) -> None:
        db = self._conn
        if str(db.execute("PRAGMA journal_mode=WAL").fetchone()[0]).lower() != "wal":
            raise StoreError(f"{self.path}: could not enable WAL journal mode")
        db.execute("PRAGMA synchronous=NORMAL")
        with self._tx():
            (version,) = db.execute("PRAGMA user_version").fetchone()
            if version > _SCHEMA_VERSION:
                raise StoreError(f"{self.path}: schema version {version} > supported {_SCHEMA_VERSION}")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")

    # -- plumbing ------------------------------------------------------------------------------------

    def _tx(self) -> _Transaction:
        if self._db is None:
            raise StoreClosed("store is closed")
        return _Transaction(self._db)

    @property
    def journal_mode(self) -> str:
        return str(self._conn.execute("PRAGMA journal_mode").fetchone()[0])

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreClosed("store is closed")
        return self._db

    @property
    def resource_version(self) -> int:
        """The latest resource version handed out (0 for an empty, new store)."""
        row = self._conn.execute("SELECT value FROM counters WHERE key='resource_version'").fetchone()
        return int(row[0])

    def _next_version(self) -> int:
        self._conn.execute("UPDATE counters SET value = value + 1 WHERE key='resource_version'")
        return self.resource_version

    def _row(self, kind: str, name: str) -> tuple[int, str] | None:
        row = self._conn.execute("SELECT resource_version, body FROM resources WHERE kind=? AND name=?",
                                 (kind, name)).fetchone()
        return None if row is None else (int(row[0]), str(row[1]))

    def _publish(self, event: Event) -> None:
        assert event.object is not None
        for w in list(self._watchers):
            if w.kind is None or w.kind.KIND == event.object.KIND:
                w._offer(event)

    @staticmethod
    def _decode(body: str) -> Resource:
        return resource_from_dict(json.loads(body))

    @staticmethod
    def _check_kind(cls: type[Resource]) -> str:
        if KINDS.get(cls.KIND) is not cls:
            raise StoreError(f"{cls.__name__} is not a registered kind")
        return cls.KIND

    # -- CRUD ----------------------------------------------------------------------------------------

    def get(self, kind: type[R], name: str) -> R | None:
        """A fresh copy of the object, or ``None``."""
        row = self._row(self._check_kind(kind), name)
        if row is None:
            return None
        obj = self._decode(row[1])
        assert isinstance(obj, kind)
        return obj

    def require(self, kind: type[R], name: str) -> R:
        """Like :meth:`get` but raises :class:`NotFound`."""
        obj = self.get(kind, name)
        if obj is None:
            raise NotFound(kind.KIND, name)
        return obj

    def list(self, kind: type[R], label_selector: Mapping[str, str] | None = None) -> list[R]:
        """Objects of a kind, sorted by name, filtered by an equality label selector."""
        rows = self._conn.execute("SELECT body FROM resources WHERE kind=? ORDER BY name",
                                  (self._check_kind(kind),)).fetchall()
        out: list[R] = []
        for (body,) in rows:
            obj = self._decode(body)
            assert isinstance(obj, kind)
            if matches_labels(obj.metadata.labels, label_selector):
                out.append(obj)
        return out

    def create(self, obj: R) -> R:
        """Insert a new object; sets ``created``, ``generation=1`` and ``resource_version``.

        Returns the stored copy; the argument is not modified. The object must not carry a
        resource_version (creating something you fetched is a bug).
        """
        kind = self._check_kind(type(obj))
        if obj.metadata.resource_version:
            raise StoreError(f"create() of {kind} {obj.name!r} with resourceVersion set; use update()")
        stored = type(obj).from_dict(obj.to_dict())  # deep copy via the codec: catches unserialisable state
        with self._tx():
            if self._row(kind, obj.name) is not None:
                raise AlreadyExists(kind, obj.name)
            rv = self._next_version()
            stored.metadata.created = stored.metadata.created or utcnow()
            stored.metadata.generation = 1
            stored.metadata.resource_version = rv
            self._conn.execute("INSERT INTO resources (kind, name, resource_version, body) VALUES (?,?,?,?)",
                               (kind, obj.name, rv, json.dumps(stored.to_dict(), sort_keys=True)))
        self._publish(Event(EventType.ADDED, stored, rv))
        return type(obj).from_dict(stored.to_dict())

    def update(self, obj: R, expected_version: int | None = None) -> R:
        """Replace an object if its stored version equals ``expected_version``.

        ``expected_version`` defaults to ``obj.metadata.resource_version``. ``uid`` and ``created`` are
        immutable (a different uid means the object was deleted and recreated: :class:`Conflict`).
        ``generation`` is bumped only when ``spec`` changed. Returns the stored copy.
        """
        kind = self._check_kind(type(obj))
        expected = obj.metadata.resource_version if expected_version is None else expected_version
        stored = type(obj).from_dict(obj.to_dict())
        with self._tx():
            row = self._row(kind, obj.name)
            if row is None:
                raise NotFound(kind, obj.name)
            current_rv, body = row
            if current_rv != expected:
                raise Conflict(kind, obj.name, expected, current_rv)
            current = self._decode(body)
            if current.metadata.uid != stored.metadata.uid:
                raise Conflict(kind, obj.name, expected, current_rv)
            rv = self._next_version()
            new_dict = stored.to_dict()
            cur_dict = current.to_dict()
            stored.metadata.created = current.metadata.created
            stored.metadata.generation = current.metadata.generation + (new_dict["spec"] != cur_dict["spec"])
            stored.metadata.resource_version = rv
            self._conn.execute("UPDATE resources SET resource_version=?, body=? WHERE kind=? AND name=?",
                               (rv, json.dumps(stored.to_dict(), sort_keys=True), kind, obj.name))
        self._publish(Event(EventType.MODIFIED, stored, rv))
        return type(obj).from_dict(stored.to_dict())

    def mutate(self, kind: type[R], name: str, fn: Callable[[R], T]) -> tuple[R, T]:
        """Read, apply ``fn`` (which mutates in place and may raise to abort), write back.

        Runs without awaiting, so it cannot conflict with other coroutines in the loop. Returns the
        stored object and ``fn``'s result.
        """
        obj = self.require(kind, name)
        result = fn(obj)
        return self.update(obj), result

    def delete(self, kind: type[R], name: str, expected_version: int | None = None) -> R:
        """Remove an object (optionally only if unchanged); returns its last state.

        The deletion gets its own resource version, carried by the DELETED event and the returned copy.
        """
        k = self._check_kind(kind)
        with self._tx():
            row = self._row(k, name)
            if row is None:
                raise NotFound(k, name)
            if expected_version is not None and row[0] != expected_version:
                raise Conflict(k, name, expected_version, row[0])
            obj = self._decode(row[1])
            assert isinstance(obj, kind)
            rv = self._next_version()
            obj.metadata.resource_version = rv
            self._conn.execute("DELETE FROM resources WHERE kind=? AND name=?", (k, name))
        self._publish(Event(EventType.DELETED, obj, rv))
        return type(obj).from_dict(obj.to_dict())

    # -- change feed ---------------------------------------------------------------------------------

    def watch(self, kind: type[Resource] | None = None, *, snapshot: bool = False,
              maxsize: int = DEFAULT_WATCH_QUEUE) -> Watch:
        """Subscribe to changes of one kind (or all). Registered before this returns.

        Use as ``with store.watch(Device) as w: async for ev in w: ...`` so it is unregistered.
        """
        if kind is not None:
            self._check_kind(kind)
        self._conn  # noqa: B018 - raises StoreClosed
        w = Watch(self, kind, maxsize, snapshot)
        self._watchers.add(w)
        return w

    @property
    def watcher_count(self) -> int:
        return len(self._watchers)

    def iter_all(self) -> Iterator[Resource]:
        """Every object of every kind (export/debug)."""
        for (body,) in self._conn.execute("SELECT body FROM resources ORDER BY kind, name").fetchall():
            yield self._decode(body)

    def close(self) -> None:
        """Close the database and end every watch.

        Iterators stop after delivering their queued events (if a queue is full, its backlog is dropped).
        """
        if self._db is None:
            return
        for w in list(self._watchers):
            w.close()
        self._db.close()
        self._db = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Transaction:
    """``BEGIN IMMEDIATE`` .. ``COMMIT``/``ROLLBACK`` (autocommit connection; explicit transactions)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        if et is None:
            self._db.execute("COMMIT")
        else:
            self._db.execute("ROLLBACK")
