"""SQLite store: CRUD, optimistic concurrency, persistence across reopen, and the async change feed."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from wasmbed.gateway.model import (
    Device,
    DevicePhase,
    DeviceSpec,
    Gateway,
    GatewaySpec,
    InvalidTransition,
    ObjectMeta,
)
from wasmbed.gateway.store import (
    AlreadyExists,
    Conflict,
    Event,
    EventType,
    NotFound,
    Store,
    StoreClosed,
    StoreError,
    Watch,
)


def dev(name: str, **labels: str) -> Device:
    spki = hashlib.sha256(name.encode()).digest() * 2
    return Device(metadata=ObjectMeta(name=name, labels=labels),
                  spec=DeviceSpec(public_key_fingerprint=hashlib.sha256(spki).digest().hex(":", 1),
                                  public_key=spki, board=labels.get("board")))


def gw(name: str = "gw-0") -> Gateway:
    return Gateway(metadata=ObjectMeta(name=name), spec=GatewaySpec(endpoint="127.0.0.1", port=4423))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "state" / "wasmbed.db")
    yield s
    s.close()


async def take(w: Watch, n: int, timeout: float = 2.0) -> list[Event]:
    async def go() -> list[Event]:
        return [await anext(w) for _ in range(n)]
    return await asyncio.wait_for(go(), timeout)


async def nothing_pending(w: Watch) -> bool:
    try:
        await asyncio.wait_for(anext(w), 0.05)
    except TimeoutError:
        return True
    return False


# --------------------------------------------------------------------------------------------------
# CRUD and concurrency


def test_create_get_list(store: Store) -> None:
    a = store.create(dev("a", board="mps2-an385"))
    store.create(dev("c", board="stm32vldiscovery"))
    store.create(dev("b", board="mps2-an385"))
    assert a.metadata.resource_version == 1 and a.metadata.generation == 1
    assert a.metadata.created is not None
    got = store.get(Device, "a")
    assert got == a
    assert store.get(Device, "zzz") is None
    assert [d.name for d in store.list(Device)] == ["a", "b", "c"]
    assert [d.name for d in store.list(Device, {"board": "mps2-an385"})] == ["a", "b"]
    assert store.list(Device, {"board": "nope"}) == []
    assert store.list(Gateway) == []
    with pytest.raises(NotFound):
        store.require(Device, "zzz")


def test_returned_objects_are_copies(store: Store) -> None:
    original = dev("a")
    created = store.create(original)
    assert original.metadata.resource_version == 0  # argument untouched
    created.status.phase = DevicePhase.ENROLLING
    assert store.require(Device, "a").phase is DevicePhase.PENDING
    fetched = store.require(Device, "a")
    fetched.metadata.labels["x"] = "y"
    assert store.require(Device, "a").metadata.labels == {}


def test_create_rejects_duplicates_and_stored_objects(store: Store) -> None:
    stored = store.create(dev("a"))
    with pytest.raises(AlreadyExists):
        store.create(dev("a"))
    with pytest.raises(StoreError, match="update"):
        store.create(stored)
    store.create(gw("a"))  # same name, other kind: fine


def test_resource_versions_are_global_and_monotonic(store: Store) -> None:
    versions = [store.create(dev("a")).metadata.resource_version,
                store.create(gw()).metadata.resource_version]
    d = store.require(Device, "a")
    versions.append(store.update(d).metadata.resource_version)
    versions.append(store.delete(Device, "a").metadata.resource_version)
    versions.append(store.create(dev("a")).metadata.resource_version)
    assert versions == [1, 2, 3, 4, 5]
    assert store.resource_version == 5


def test_update_conflict(store: Store) -> None:
    store.create(dev("a"))
    first = store.require(Device, "a")
    second = store.require(Device, "a")
    first.status.phase = DevicePhase.ENROLLING
    updated = store.update(first)
    assert updated.metadata.resource_version > second.metadata.resource_version
    second.status.reason = "stale writer"
    with pytest.raises(Conflict) as ei:
        store.update(second)
    assert ei.value.expected == second.metadata.resource_version
    assert ei.value.actual == updated.metadata.resource_version
    assert store.require(Device, "a") == updated  # the stale write changed nothing
    # explicit precondition
    with pytest.raises(Conflict):
        store.update(updated, expected_version=1)
    assert store.update(updated, expected_version=updated.metadata.resource_version).status.reason is None


def test_update_detects_recreated_object(store: Store) -> None:
    store.create(dev("a"))
    old = store.require(Device, "a")
    store.delete(Device, "a")
    store.create(dev("a"))
    old.metadata.resource_version = store.require(Device, "a").metadata.resource_version
    with pytest.raises(Conflict):
        store.update(old)  # same name, same version, but a different object (uid)


def test_update_missing_and_immutable_fields(store: Store) -> None:
    with pytest.raises(NotFound):
        store.update(dev("ghost"), expected_version=1)
    created = store.create(dev("a"))
    changed = store.require(Device, "a")
    changed.metadata.created = None
    assert store.update(changed).metadata.created == created.metadata.created


def test_generation_bumps_only_on_spec_change(store: Store) -> None:
    store.create(dev("a"))
    d = store.require(Device, "a")
    d.status.phase = DevicePhase.ENROLLING
    d = store.update(d)
    assert d.metadata.generation == 1
    d.spec.board = "mps2-an505"
    d = store.update(d)
    assert d.metadata.generation == 2


def test_delete(store: Store) -> None:
    store.create(dev("a"))
    with pytest.raises(Conflict):
        store.delete(Device, "a", expected_version=99)
    last = store.delete(Device, "a")
    assert last.name == "a"
    assert store.get(Device, "a") is None
    with pytest.raises(NotFound):
        store.delete(Device, "a")


def test_mutate_with_invalid_transition_changes_nothing(store: Store) -> None:
    store.create(dev("a"))
    before = store.resource_version
    with pytest.raises(InvalidTransition):
        store.mutate(Device, "a", lambda d: d.set_phase(DevicePhase.CONNECTED))
    assert store.resource_version == before
    stored, _ = store.mutate(Device, "a", lambda d: d.set_phase(DevicePhase.ENROLLING))
    assert stored.phase is DevicePhase.ENROLLING
    assert store.require(Device, "a").phase is DevicePhase.ENROLLING


# --------------------------------------------------------------------------------------------------
# persistence


def test_persistence_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "wasmbed.db"
    s = Store(path)
    assert s.journal_mode == "wal"
    s.create(dev("a", board="mps2-an385"))
    d = s.require(Device, "a")
    d.set_phase(DevicePhase.ENROLLING)
    d = s.update(d)
    s.create(gw())
    s.create(dev("tmp"))
    s.delete(Device, "tmp")
    last = s.resource_version
    s.close()
    with pytest.raises(StoreClosed):
        s.get(Device, "a")

    s2 = Store(path)
    try:
        assert s2.require(Device, "a") == d
        assert s2.require(Gateway, "gw-0").spec.port == 4423
        assert s2.get(Device, "tmp") is None
        assert s2.resource_version == last
        # versions are never reused, even after deleting the newest object
        assert s2.create(dev("tmp")).metadata.resource_version == last + 1
    finally:
        s2.close()
    # plain sqlite can read it too (other processes, debugging)
    with closing(sqlite3.connect(path)) as raw:
        assert raw.execute("SELECT count(*) FROM resources").fetchone()[0] == 3
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_refuses_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "db"
    Store(path).close()
    with closing(sqlite3.connect(path)) as raw:
        raw.execute("PRAGMA user_version=99")
    with pytest.raises(StoreError, match="schema"):
        Store(path)


# --------------------------------------------------------------------------------------------------
# change feed


async def test_two_watchers_receive_events_in_order(store: Store) -> None:
    w1 = store.watch()
    w2 = store.watch()
    store.create(dev("a"))  # before anyone iterates: must not be missed
    d = store.require(Device, "a")
    d.set_phase(DevicePhase.ENROLLING)
    store.update(d)
    store.create(gw())
    store.delete(Device, "a")
    expected = [(EventType.ADDED, "Device", "a"), (EventType.MODIFIED, "Device", "a"),
                (EventType.ADDED, "Gateway", "gw-0"), (EventType.DELETED, "Device", "a")]
    for w in (w1, w2):
        evs = await take(w, 4)
        assert [(e.type, e.object.KIND, e.object.name) for e in evs if e.object] == expected
        assert [e.resource_version for e in evs] == [1, 2, 3, 4]
        assert evs[1].object is not None and evs[1].object.phase is DevicePhase.ENROLLING  # type: ignore[attr-defined]
        assert await nothing_pending(w)
    w1.close()
    w2.close()
    assert store.watcher_count == 0


async def test_kind_filter(store: Store) -> None:
    with store.watch(Gateway) as w:
        store.create(dev("a"))
        store.create(gw())
        (ev,) = await take(w, 1)
        assert ev.type is EventType.ADDED and isinstance(ev.object, Gateway)
        assert await nothing_pending(w)


async def test_concurrent_consumers_while_writing(store: Store) -> None:
    n = 50
    watches = [store.watch(Device) for _ in range(3)]

    async def consume(w: Watch) -> list[int]:
        return [e.resource_version for e in await take(w, n)]

    consumers = [asyncio.create_task(consume(w)) for w in watches]
    for i in range(n):
        store.create(dev(f"d{i}"))
        if i % 7 == 0:
            await asyncio.sleep(0)  # interleave with the consumers
    results = await asyncio.gather(*consumers)
    assert all(r == list(range(1, n + 1)) for r in results)
    for w in watches:
        w.close()


async def test_overflow_is_explicit_and_bounded(store: Store) -> None:
    slow = store.watch(Device, maxsize=4)
    fast = store.watch(Device, maxsize=1000)
    for i in range(20):  # never blocks, although nobody reads `slow`
        store.create(dev(f"d{i:02}"))
        assert slow._queue.qsize() <= 4
    assert slow.overflows >= 1
    fast_events = await take(fast, 20)
    assert [e.object.name for e in fast_events if e.object] == [f"d{i:02}" for i in range(20)]

    first = await take(slow, 1)
    assert first[0].type is EventType.OVERFLOW and first[0].object is None
    # after the overflow marker, whatever remains is in order and newer than anything dropped
    rest = []
    while not slow._queue.empty():
        rest.append(await anext(slow))
    assert [e.resource_version for e in rest] == sorted(e.resource_version for e in rest)
    assert all(e.type is EventType.ADDED for e in rest)
    # the watcher keeps working after the overflow
    store.create(dev("after"))
    (ev,) = await take(slow, 1)
    assert ev.object is not None and ev.object.name == "after"
    slow.close()
    fast.close()


async def test_snapshot_and_resync_after_overflow(store: Store) -> None:
    store.create(dev("a"))
    store.create(dev("b"))
    w = store.watch(Device, snapshot=True, maxsize=3)
    store.create(dev("c"))  # after the snapshot: arrives live
    evs = await take(w, 3)
    assert [(e.type, e.object.name) for e in evs if e.object] == [
        (EventType.ADDED, "a"), (EventType.ADDED, "b"), (EventType.ADDED, "c")]

    for name in ("a", "b", "c"):  # 6 changes into a queue of 3 -> overflow
        d = store.require(Device, name)
        d.status.reason = "changed"
        store.update(d)
    store.delete(Device, "a")
    store.delete(Device, "b")
    evs = await take(w, 2)
    assert evs[0].type is EventType.OVERFLOW
    # the re-list reflects the *current* state: only "c", already modified
    assert evs[1].type is EventType.ADDED and evs[1].object is not None and evs[1].object.name == "c"
    assert evs[1].object.status.reason == "changed"  # type: ignore[attr-defined]
    assert await nothing_pending(w)  # nothing stale replayed after the snapshot
    store.delete(Device, "c")
    (ev,) = await take(w, 1)
    assert ev.type is EventType.DELETED and ev.object is not None and ev.object.name == "c"
    w.close()


async def test_close_ends_iteration(store: Store) -> None:
    w = store.watch()

    async def consume() -> list[EventType]:
        return [e.type async for e in w]

    task = asyncio.create_task(consume())
    store.create(dev("a"))
    await asyncio.sleep(0)
    store.close()
    assert await asyncio.wait_for(task, 2) == [EventType.ADDED]
    with pytest.raises(StoreClosed):
        store.watch()


async def test_watch_close_wakes_waiting_reader(store: Store) -> None:
    w = store.watch()
    task = asyncio.create_task(anext(w))
    await asyncio.sleep(0.01)
    w.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(task, 2)
    store.create(dev("late"))  # a closed watch receives nothing and the store does not care
    assert store.watcher_count == 0


async def test_async_context_manager_unregisters(store: Store) -> None:
    async with store.watch() as w:
        assert store.watcher_count == 1
        store.create(dev("a"))
        assert (await take(w, 1))[0].type is EventType.ADDED
    assert store.watcher_count == 0
