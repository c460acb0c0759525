"""Drive what devices run toward what Applications ask for, one (Application, device) pair at a time.

Why a reconciler and not imperative deploy calls: devices come and go (a board connects after the
deployment, a link drops mid-transfer, a device reboots and loses its apps), so "deploy" is a desired
state that has to be re-applied whenever the world changes. Each pair has one worker at a time; a
trigger while it runs makes it run once more (no lost updates, no concurrent transfers for a pair).

Triggers, all events (no polling loop): Application spec changes (store watch, by generation), device
label changes (store watch), session up/down and first heartbeat (link), app_status reports (link),
and timers only where time is the point (restart back-off, retry after a timeout).

What a pass does for (app, device), given the device's reported apps (its heartbeat and app_status):

* not a target any more (or the app is being deleted): stop and remove the app there, drop the entry;
* module changed (update): stop and remove the old app id, deploy the new module with a new id;
* desired Stopped: stop it if it runs;
* desired Running: deploy if the device lacks it, start it if stopped, restart it per policy if failed.

Status writes are coalesced for transfer progress (at most one per ``status_interval_s`` per pair);
phase changes are written at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import cbor2

from .apps import Catalog
from .events import EventLevel, EventLog
from .link import AppLinkError, DeviceLink, DeviceSession
from .model import (
    AppDevicePhase,
    AppDeviceStatus,
    Application,
    AppMetricsStatus,
    AppPhase,
    DesiredState,
    Device,
    RestartPolicy,
    utcnow,
)
from .protocol import AppError, AppStateCode, AppStatus, DeployBegin, DeployResult
from .protocol import RestartPolicy as WireRestart
from .store import EventType, NotFound, Store
from .validate import ValidationError, check_fits, validate_module

_LOG = logging.getLogger("wasmbed.gateway.apps")

_PHASE_OF_STATE = {AppStateCode.DEPLOYING: AppDevicePhase.DEPLOYING, AppStateCode.STOPPED: AppDevicePhase.STOPPED,
                   AppStateCode.RUNNING: AppDevicePhase.RUNNING, AppStateCode.FAILED: AppDevicePhase.FAILED}
_WIRE_RESTART = {RestartPolicy.NEVER: WireRestart.NEVER, RestartPolicy.ON_FAILURE: WireRestart.ON_FAILURE,
                 RestartPolicy.ALWAYS: WireRestart.ALWAYS}
Key = tuple[str, str]  # (application, device)


def _phase(state: int) -> AppDevicePhase | None:
    """Entry phase for a reported state code (None for unknown codes)."""
    return _PHASE_OF_STATE.get(AppStateCode(state)) if state in AppStateCode._value2member_map_ else None


def targets_of(store: Store, app: Application) -> set[str]:
    """Device names an Application targets: the named ones plus the selector's matches."""
    out = set(app.spec.targets.devices)
    if app.spec.targets.selector:
        out |= {d.name for d in store.list(Device, app.spec.targets.selector)}
    return out


def aggregate(app: Application) -> AppPhase:
    """The Application's phase from its desired state and per-device phases."""
    desired = app.spec.desired_state
    phases = [e.phase for e in app.status.devices]
    if desired is DesiredState.DELETED:
        return AppPhase.DELETING
    if desired is DesiredState.STOPPED:
        return AppPhase.STOPPED if all(p is not AppDevicePhase.RUNNING for p in phases) else AppPhase.STOPPING
    if not phases:
        return AppPhase.CREATING
    if all(p is AppDevicePhase.RUNNING for p in phases):
        return AppPhase.RUNNING
    if AppDevicePhase.RUNNING in phases:
        return AppPhase.PARTIALLY_RUNNING
    if AppDevicePhase.DEPLOYING in phases:
        return AppPhase.DEPLOYING
    if AppDevicePhase.FAILED in phases:
        return AppPhase.FAILED
    return AppPhase.STOPPED


class Reconciler:
    """Owns app deployment on the devices; the link calls it back (it is the link's ``app_handler``)."""

    def __init__(self, store: Store, link: DeviceLink, catalog: Catalog, events: EventLog, *,
                 status_interval_s: float = 0.25, restart_backoff_s: tuple[float, float] = (0.25, 30.0),
                 retry_s: float = 2.0) -> None:
        self.store = store
        self.link = link
        self.catalog = catalog
        self.events = events
        self.status_interval_s = status_interval_s
        self.restart_backoff_s = restart_backoff_s
        self.retry_s = retry_s
        self._workers: dict[Key, asyncio.Task[None]] = {}
        self._dirty: set[Key] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._generations: dict[str, int] = {}
        self._labels: dict[str, dict[str, str]] = {}
        self._restart_at: dict[Key, float] = {}
        self._deploy_failed: dict[Key, str] = {}  # key -> module sha whose deployment failed for good
        self._last_progress: dict[Key, float] = {}
        self._last_id: dict[str, int] = {}
        self._transfer_locks: dict[str, asyncio.Lock] = {}  # one transfer per device (the device allows one)
        self._timers: set[asyncio.TimerHandle] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        link.app_handler = self

    # -- lifecycle -------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._spawn(self._watch_apps(), "reconciler-apps")
        self._spawn(self._watch_devices(), "reconciler-devices")

    async def stop(self) -> None:
        self.link.app_handler = None
        for h in self._timers:
            h.cancel()
        tasks = [*self._tasks, *self._workers.values()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._workers.clear()

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- triggers --------------------------------------------------------------------------------------

    def trigger(self, app: str, device: str) -> None:
        """Run a pass for (app, device) now, or once more after the running one."""
        key = (app, device)
        self._dirty.add(key)
        if key not in self._workers:
            self._workers[key] = asyncio.create_task(self._worker(key), name=f"reconcile {app}@{device}")

    def trigger_app(self, name: str) -> None:
        app = self.store.get(Application, name)
        devices = targets_of(self.store, app) | {e.device for e in app.status.devices} if app else set()
        for d in devices:
            self.trigger(name, d)
        if app is not None and not devices:
            self._mutate(name, lambda a: None)  # no target: settle the phase (and finish a deletion)

    def trigger_device(self, device: str) -> None:
        for app in self.store.list(Application):
            if device in targets_of(self.store, app) or app.status.entry(device) is not None:
                self.trigger(app.name, device)

    def _later(self, delay: float, app: str, device: str) -> None:
        assert self._loop is not None
        handle: asyncio.TimerHandle

        def fire() -> None:
            self._timers.discard(handle)
            self.trigger(app, device)

        handle = self._loop.call_later(delay, fire)
        self._timers.add(handle)

    async def _worker(self, key: Key) -> None:
        try:
            while key in self._dirty:
                self._dirty.discard(key)
                try:
                    await self._sync(*key)
                except AppLinkError as exc:
                    _LOG.info("%s@%s: %s", key[0], key[1], exc)
                    if key[1] in self.link.online:  # a timeout on a live session: try again later
                        self._later(self.retry_s, *key)
                except asyncio.CancelledError:
                    raise
                except Exception:  # a bug: log it, keep the reconciler alive
                    _LOG.exception("BUG reconciling %s on %s", *key)
                    self.events.emit("bug.reconciler", f"BUG reconciling {key[0]} on {key[1]}",
                                     level=EventLevel.ERROR, device=key[1], app=key[0])
        finally:
            self._workers.pop(key, None)

    async def _watch_apps(self) -> None:
        with self.store.watch(Application, snapshot=True) as watch:
            async for ev in watch:
                if ev.type is EventType.OVERFLOW:
                    for app in self.store.list(Application):
                        self.trigger_app(app.name)
                    continue
                app = ev.object
                assert isinstance(app, Application)
                if ev.type is EventType.DELETED:
                    self._generations.pop(app.name, None)
                    continue
                if self._generations.get(app.name) != app.metadata.generation:  # spec changed, not status
                    self._generations[app.name] = app.metadata.generation
                    for key in [k for k in self._deploy_failed if k[0] == app.name]:
                        del self._deploy_failed[key]
                    self.trigger_app(app.name)

    async def _watch_devices(self) -> None:
        with self.store.watch(Device, snapshot=True) as watch:
            async for ev in watch:
                if ev.type is EventType.OVERFLOW:
                    continue
                dev = ev.object
                assert isinstance(dev, Device)
                if ev.type is EventType.DELETED:
                    self._labels.pop(dev.name, None)
                    self.trigger_device(dev.name)
                elif self._labels.get(dev.name) != dev.metadata.labels:
                    self._labels[dev.name] = dict(dev.metadata.labels)
                    self.trigger_device(dev.name)

    # -- link callbacks (AppHandler) -------------------------------------------------------------------

    def session_up(self, device: str, session: DeviceSession) -> None:
        for key in [k for k in self._deploy_failed if k[1] == device]:
            del self._deploy_failed[key]
        self.trigger_device(device)

    def session_down(self, device: str, session: DeviceSession) -> None:
        for app in self.store.list(Application):
            entry = app.status.entry(device)
            if entry is not None and entry.phase is AppDevicePhase.DEPLOYING and entry.bytes_sent:
                self._mutate(app.name, lambda a, d=device: self._set(a, d, bytes_sent=0,
                                                                     error="link lost during transfer"))

    def heartbeat(self, device: str, session: DeviceSession, first: bool) -> None:
        if first:
            self._spawn(self._remove_orphans(device, session), f"orphans {device}")

    def app_status(self, device: str, session: DeviceSession, status: AppStatus) -> None:
        for app in self.store.list(Application):
            entry = app.status.entry(device)
            if entry is None or entry.app_id != status.app_id:
                continue
            phase = _phase(status.state)
            m = status.metrics
            old = entry.phase
            metrics = AppMetricsStatus(m.calls, m.traps, m.mem_pages, m.max_call_ms)

            def apply(a: Application, phase: AppDevicePhase | None = phase,
                      metrics: AppMetricsStatus = metrics) -> None:
                e = a.status.entry(device)
                if e is None:
                    return
                if phase is not None:
                    e.phase = phase
                e.error = status.error or (e.error if phase is AppDevicePhase.FAILED else None)
                e.restarts = max(e.restarts, status.restarts)
                e.metrics = metrics
                e.updated = utcnow()

            self._mutate(app.name, apply)
            if phase is AppDevicePhase.FAILED and old is not AppDevicePhase.FAILED:
                self.events.emit("app.failed", f"app {app.name} failed on {device}: {status.error}",
                                 level=EventLevel.WARNING, device=device, logger=_LOG, app=app.name,
                                 app_id=status.app_id, error=status.error)
            self.trigger(app.name, device)
            return

    def app_name(self, device: str, app_id: int) -> str | None:
        for app in self.store.list(Application):
            entry = app.status.entry(device)
            if entry is not None and entry.app_id == app_id:
                return app.name
        return None

    # -- status helpers --------------------------------------------------------------------------------

    def _mutate(self, name: str, fn: Callable[[Application], object]) -> Application | None:
        """Apply ``fn`` to the stored Application and recompute its phase (synchronous: no races)."""

        def apply(a: Application) -> None:
            fn(a)
            a.status.phase = aggregate(a)

        try:
            app, _ = self.store.mutate(Application, name, apply)
        except NotFound:
            return None
        if app.spec.desired_state is DesiredState.DELETED and not app.status.devices:
            with contextlib.suppress(NotFound):
                self.store.delete(Application, name)
            self.events.emit("app.undeployed", f"app {name} removed from every device and deleted", app=name)
        return app

    @staticmethod
    def _set(a: Application, device: str, **fields: Any) -> AppDeviceStatus:
        e = a.status.entry(device)
        if e is None:
            e = AppDeviceStatus(device=device)
            a.status.devices.append(e)
            a.status.devices.sort(key=lambda x: x.device)
        for k, v in fields.items():
            setattr(e, k, v)
        e.updated = utcnow()
        return e

    def _new_app_id(self, device: str, session: DeviceSession) -> int:
        """Above every id the device or the store knows, and above ids handed out before (a new version of an
        app gets a new id, so late reports about the old one cannot be mistaken for the new one)."""
        used = set(session.device_apps) | {self._last_id.get(device, 0)}
        for app in self.store.list(Application):
            e = app.status.entry(device)
            if e is not None and e.app_id is not None:
                used.add(e.app_id)
        self._last_id[device] = new = max(used) + 1
        return new

    # -- one pass --------------------------------------------------------------------------------------

    async def _sync(self, name: str, device: str) -> None:
        app = self.store.get(Application, name)
        if app is None:
            return
        entry = app.status.entry(device)
        session = self.link.online.get(device)
        wanted = app.spec.desired_state is not DesiredState.DELETED and device in targets_of(self.store, app)
        if not wanted:
            if entry is None:
                return
            if entry.app_id is not None and session is not None and not session.closed:
                await self._ensure_heartbeat(session)
                if entry.app_id in session.device_apps:
                    await session.app_stop(entry.app_id, remove=True)
                    session.device_apps.pop(entry.app_id, None)
            self._mutate(name, lambda a: a.status.devices.remove(e) if (e := a.status.entry(device)) else None)
            self.events.emit("app.removed", f"app {name} removed from {device}", device=device, app=name)
            return
        if entry is None:
            entry = self._set(app, device)  # for the local decision below; written by the next _mutate
            self._mutate(name, lambda a: self._set(a, device, phase=AppDevicePhase.DEPLOYING))
        if session is None or session.closed:
            return  # the device's next session triggers us again
        await self._ensure_heartbeat(session)
        app = self.store.get(Application, name)
        if app is None:
            return
        entry = app.status.entry(device)
        assert entry is not None
        spec = app.spec
        reported = session.device_apps.get(entry.app_id) if entry.app_id is not None else None
        if entry.app_id is not None and entry.module_sha256 not in (None, spec.module_sha256):
            if reported is not None:  # update: the old version goes first
                await session.app_stop(entry.app_id, remove=True)
                session.device_apps.pop(entry.app_id, None)
                self.events.emit("app.updating", f"app {name} on {device}: old module stopped and removed",
                                 device=device, app=name)
            self._mutate(name, lambda a: self._set(a, device, app_id=None, module_sha256=None, restarts=0,
                                                   phase=AppDevicePhase.DEPLOYING, bytes_sent=0, error=None))
            entry.app_id, reported = None, None
        key = (name, device)
        if spec.desired_state is DesiredState.STOPPED:
            if reported == AppStateCode.RUNNING and entry.app_id is not None:
                st = await session.app_stop(entry.app_id)
                stopped = _phase(st.state) or AppDevicePhase.STOPPED
                self._mutate(name, lambda a: self._set(a, device, phase=stopped))
            else:
                self._mutate(name, lambda a: self._set(a, device, phase=AppDevicePhase.STOPPED))
            return
        if reported in (None, AppStateCode.UNKNOWN, AppStateCode.DEPLOYING):
            if self._deploy_failed.get(key) == spec.module_sha256:
                return  # failed for good with this module; a spec change or a new session retries
            await self._deploy(app, device, session, entry)
        elif reported == AppStateCode.STOPPED:
            await self._start(name, device, session, entry, restart=False)
        elif reported == AppStateCode.FAILED:
            if spec.restart_policy is RestartPolicy.NEVER or self._deploy_failed.get(key) == spec.module_sha256:
                self._mutate(name, lambda a: self._set(a, device, phase=AppDevicePhase.FAILED))
                return
            assert self._loop is not None
            now = self._loop.time()
            due = self._restart_at.get(key)
            if due is None:
                lo, hi = self.restart_backoff_s
                due = now + min(lo * 2 ** min(entry.restarts, 16), hi)
                self._restart_at[key] = due
            if now < due:
                self._later(due - now, name, device)
                return
            del self._restart_at[key]
            await self._start(name, device, session, entry, restart=True)
        else:
            self._mutate(name, lambda a: self._set(a, device, phase=AppDevicePhase.RUNNING))

    async def _ensure_heartbeat(self, session: DeviceSession) -> None:
        """The first heartbeat says which apps survived on the device (protocol section 6.3, step 6)."""
        if not session.first_heartbeat.is_set():
            spec = session.spec
            wait = 2.0 * (spec.heartbeat_interval_s if spec else 5) + 1.0
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await session.first_heartbeat.wait()

    async def _start(self, name: str, device: str, session: DeviceSession, entry: AppDeviceStatus, *,
                     restart: bool) -> None:
        assert entry.app_id is not None
        st = await session.app_start(entry.app_id)
        restarts = entry.restarts + (1 if restart else 0)
        phase = _phase(st.state)
        if st.state == AppStateCode.UNKNOWN:
            session.device_apps.pop(entry.app_id, None)
            self.trigger(name, device)  # the device lost it: deploy again
            return
        self._mutate(name, lambda a: self._set(a, device, phase=phase or AppDevicePhase.FAILED, restarts=restarts,
                                               error=st.error or None))
        if restart:
            self.events.emit("app.restarted", f"app {name} restarted on {device} (restart {restarts})",
                             device=device, app=name, restarts=restarts)

    async def _deploy(self, app: Application, device: str, session: DeviceSession, entry: AppDeviceStatus) -> None:
        name, spec, key = app.name, app.spec, (app.name, device)
        dev = self.store.get(Device, device)
        try:
            wasm = self.catalog.module(spec.module_sha256)
            info = validate_module(wasm)
            if dev is not None and dev.spec.board:
                check_fits(info, dev.spec.board)
        except (KeyError, ValidationError) as exc:
            self._deploy_failed[key] = spec.module_sha256
            why = str(exc)[:500]
            self._mutate(name, lambda a: self._set(a, device, phase=AppDevicePhase.FAILED, error=why))
            return
        app_id = entry.app_id if entry.app_id is not None else self._new_app_id(device, session)
        self._mutate(name, lambda a: self._set(a, device, phase=AppDevicePhase.DEPLOYING, app_id=app_id,
                                               module_sha256=spec.module_sha256, bytes_sent=0, size=len(wasm),
                                               error=None))
        mem_pages = spec.limits.memory_pages if spec.limits.memory_pages is not None else info.initial_pages
        begin = DeployBegin(app_id, spec.name.encode()[:32].decode(errors="ignore") or "app", len(wasm),
                            bytes.fromhex(spec.module_sha256), cbor2.dumps(dict(spec.config)), mem_pages,
                            spec.limits.time_budget_ms, _WIRE_RESTART[spec.restart_policy])
        self.events.emit("app.deploying", f"deploying {name} ({spec.version}, {len(wasm)} bytes) to {device} as app "
                         f"{app_id}", device=device, app=name, app_id=app_id, size=len(wasm))
        assert self._loop is not None
        loop = self._loop

        def progress(acked: int) -> None:
            now = loop.time()
            if acked < len(wasm) and now - self._last_progress.get(key, 0.0) < self.status_interval_s:
                return
            self._last_progress[key] = now
            self._mutate(name, lambda a: self._set(a, device, bytes_sent=acked))

        lock = self._transfer_locks.setdefault(device, asyncio.Lock())
        async with lock:
            res: DeployResult = await session.deploy(begin, wasm, progress)
        self._last_progress.pop(key, None)
        if res.code == AppError.OK:
            session.device_apps[app_id] = AppStateCode.RUNNING
            self._mutate(name, lambda a: self._set(a, device, phase=AppDevicePhase.RUNNING, bytes_sent=len(wasm),
                                                   error=None))
            self.events.emit("app.running", f"app {name} running on {device}", device=device, app=name,
                             app_id=app_id)
            return
        code = AppError(res.code).name if res.code in AppError._value2member_map_ else str(res.code)
        error = f"{code}: {res.text}" if res.text else code
        if res.code in (AppError.BUSY, AppError.NO_MEMORY):  # the device may have room later
            self._later(self.retry_s, name, device)
        elif res.code != AppError.START_FAILED:  # the module itself is refused: do not loop on it
            self._deploy_failed[key] = spec.module_sha256
        self._mutate(name, lambda a: self._set(a, device, phase=AppDevicePhase.FAILED, error=error))
        self.events.emit("app.deploy_failed", f"deploying {name} to {device} failed: {error}",
                         level=EventLevel.WARNING, device=device, app=name, app_id=app_id, code=code)
        if res.code == AppError.START_FAILED:
            session.device_apps[app_id] = AppStateCode.FAILED
            self.trigger(name, device)  # restart policy

    async def _remove_orphans(self, device: str, session: DeviceSession) -> None:
        """Stop and remove apps the device runs that no Application owns (e.g. undeployed while offline)."""
        owned = set()
        for app in self.store.list(Application):
            e = app.status.entry(device)
            if e is not None and e.app_id is not None:
                owned.add(e.app_id)
        for app_id in [a for a in session.device_apps if a not in owned]:
            with contextlib.suppress(AppLinkError):
                await session.app_stop(app_id, remove=True)
                session.device_apps.pop(app_id, None)
                self.events.emit("app.orphan_removed", f"removed app {app_id} from {device}: no Application owns it",
                                 device=device, app_id=app_id)


__all__ = ["Reconciler", "aggregate", "targets_of"]
