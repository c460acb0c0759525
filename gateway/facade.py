"""The Gateway facade: the one object every front end (console, SSH sessions, headless CLI) talks to.

Why a facade: several front ends run at once in the gateway's asyncio loop (local console, one Textual
app per SSH session, scripts). They must see the same state (the store's change feed, the event log)
and go through the same permission checks, so nothing below this layer is called by a front end.

Permissions: every mutating call takes a :class:`Caller` (user + role). Roles are ordered
viewer < operator < admin. Reads need no caller. Enrollment decisions (approve, reject, pairing mode,
tokens) and deletion (= revocation) are admin; ending a device session is operator. A refused call raises
:class:`PermissionDenied`. Every mutating call, allowed or refused, is recorded by gateway/audit.py (a JSON
line in ``<log dir>/audit.log`` and an ``audit.ok``/``audit.denied``/``audit.error`` event).

Pairing mode is kept in the Gateway resource but reset to ``GatewayConfig.pairing_mode`` (default off)
at every start: an accidental restart never leaves a gateway open to unknown keys.

The lab (``GatewayConfig.lab``): emulated boards run by this process (lab.py + supervisor.py). It is
started after the device listener (boards can connect as soon as they boot) and stopped before it.
Board operations: add/remove are admin; start/stop/reset/power-cycle and setting sensors are
operator; reading LEDs, sensors and consoles needs no caller.

Apps (apps.py, reconciler.py, validate.py): adding modules to the catalog, deploying, stopping, starting,
updating, undeploying and messaging apps are operator. Every module and deployment is validated
(:class:`ValidationError`, naming the import/export/number) before anything is stored or sent; the
reconciler then drives the devices toward the Application resources.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2

from wasmbed import paths

from . import pki as pki_mod
from .apps import MODULES_DIR, Catalog, ModuleStore
from .audit import AuditLog, audited
from .enrollment import DEFAULT_TOKEN_TTL, TokenRegistry
from .events import EventLevel, EventLog, EventSubscription, GatewayEvent
from .lab import Lab
from .link import AppLinkError, DeviceLink, LinkConfig
from .model import (
    AppDevicePhase,
    Application,
    ApplicationSpec,
    AppLimits,
    AppModule,
    AppPhase,
    AppTargets,
    Board,
    DesiredState,
    Device,
    DevicePhase,
    GatewayPhase,
    GatewaySpec,
    InvalidTransition,
    ModelError,
    ObjectMeta,
    Resource,
    RestartPolicy,
)
from .model import Gateway as GatewayResource
from .protocol import APP_CONFIG_MAX, PAYLOAD_MAX, TOPIC_MAX
from .reconciler import Reconciler, targets_of
from .store import EventType, Store, Watch
from .supervisor import BoardProcess, ConsoleLine, Subscription, Supervisor
from .validate import ModuleInfo, ValidationError, check_fits, check_limits, validate_module

STORE_FILE = "gateway.sqlite3"
PKI_DIR = "pki"


class Role(enum.IntEnum):
    """Ordered: a role may do everything the roles below it may."""

    VIEWER = 1
    OPERATOR = 2
    ADMIN = 3


@dataclass(frozen=True)
class Caller:
    """Who asks: front ends build one per authenticated user/session."""

    user: str
    role: Role


SYSTEM = Caller("system", Role.ADMIN)
"""The gateway itself and trusted local tooling (headless CLI run by the installation's owner)."""


class PermissionDenied(Exception):
    def __init__(self, caller: Caller, action: str, needed: Role) -> None:
        super().__init__(f"{caller.user} ({caller.role.name.lower()}) may not {action}: needs "
                         f"{needed.name.lower()}")
        self.caller, self.action, self.needed = caller, action, needed


class GatewayError(Exception):
    """A front-end request that cannot be carried out (unknown device, wrong phase...)."""


@dataclass
class GatewayConfig:
    name: str = "local"
    host: str = "127.0.0.1"
    port: int = 0  # device listener; 0 picks a free port
    heartbeat_interval_s: int = 5
    unreachable_timeout_s: int = 15
    pairing_mode: bool = False
    data_dir: Path = field(default_factory=paths.data_dir)
    max_frame_size: int = 16 * 1024
    enrollment_timeout_s: float = 600.0
    hello_timeout_s: float = 10.0
    status_write_interval_s: float = 0.5  # see LinkConfig
    server_names: tuple[str, ...] = ()  # extra SANs for the gateway certificate (e.g. a LAN address)
    lab: bool = False  # run emulated boards (Board resources) in this process
    lab_state_root: Path | None = None  # per-board state folders (default: <data_dir>/boards)
    lab_log_root: Path | None = None  # board console logs (default: the platformdirs log dir)
    audit_log: Path | None = None  # JSON lines of every mutating action (default: <log dir>/audit.log)


class Gateway:
    """Start/stop the gateway and serve front ends. Methods run in the gateway's event loop."""

    def __init__(self, config: GatewayConfig | None = None) -> None:
        self.config = config or GatewayConfig()
        self._lab: Lab | None = None
        self.events = EventLog()
        self.audit = AuditLog(self.events, self.config.audit_log)
        self._store: Store | None = None
        self._pki: pki_mod.GatewayPKI | None = None
        self._link: DeviceLink | None = None
        self._tokens: TokenRegistry | None = None
        self._catalog: Catalog | None = None
        self._reconciler: Reconciler | None = None

    # -- lifecycle -------------------------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.config
        data = Path(cfg.data_dir).absolute()
        self._pki = pki_mod.load_or_create(data / PKI_DIR, server_names=cfg.server_names)
        self._store = store = Store(data / STORE_FILE)
        self._tokens = TokenRegistry(store)
        self._reset_stale_phases()
        self._link = DeviceLink(store, self._pki, self.events, self._tokens, gateway_name=cfg.name,
                                config=LinkConfig(host=cfg.host, port=cfg.port, max_frame_size=cfg.max_frame_size,
                                                  enrollment_timeout_s=cfg.enrollment_timeout_s,
                                                  hello_timeout_s=cfg.hello_timeout_s,
                                                  status_write_interval_s=cfg.status_write_interval_s))
        self._catalog = Catalog(store, ModuleStore(data / MODULES_DIR))
        self._reconciler = Reconciler(store, self._link, self._catalog, self.events)
        await self._reconciler.start()
        await self._link.start()
        self._write_gateway_resource(GatewayPhase.RUNNING)
        self.events.emit("gateway.started", f"gateway {cfg.name} listening for devices on {cfg.host}:"
                         f"{self.port} (pairing mode {'on' if cfg.pairing_mode else 'off'})", port=self.port)
        if cfg.lab:
            supervisor = Supervisor(cfg.host, self.port, cfg.lab_state_root or data / "boards", cfg.lab_log_root,
                                    ca_der=self._pki.ca_cert_der)
            self._lab = Lab(store, self._tokens, self.events, supervisor)
            await self._lab.start()

    async def stop(self) -> None:
        if self._lab is not None:
            await self._lab.stop()
            self._lab = None
        if self._reconciler is not None:
            await self._reconciler.stop()
            self._reconciler = None
        if self._link is not None:
            await self._link.stop()
            self._link = None
        if self._store is not None:
            gw = self._store.get(GatewayResource, self.config.name)
            if gw is not None:
                gw.status.phase = GatewayPhase.STOPPED
                self._store.update(gw)
            self.events.emit("gateway.stopped", f"gateway {self.config.name} stopped")
            self._store.close()
            self._store = None
        self.events.close()

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _reset_stale_phases(self) -> None:
        """After a crash the store may still say Connected: no session survives a restart."""
        store = self.store
        for dev in store.list(Device):
            if dev.phase in (DevicePhase.CONNECTED, DevicePhase.UNREACHABLE):
                def down(d: Device) -> None:
                    d.set_phase(DevicePhase.DISCONNECTED, reason="gateway restarted")
                try:
                    store.mutate(Device, dev.name, down)
                except InvalidTransition as exc:  # cannot happen: both phases may go to Disconnected
                    self.events.emit("bug.invalid_transition", f"BUG: {exc}", level=EventLevel.ERROR)

    def _write_gateway_resource(self, phase: GatewayPhase) -> None:
        cfg = self.config
        spec = GatewaySpec(endpoint=cfg.host, port=self.port, heartbeat_interval_s=cfg.heartbeat_interval_s,
                           unreachable_timeout_s=cfg.unreachable_timeout_s, pairing_mode=cfg.pairing_mode)
        gw = self.store.get(GatewayResource, cfg.name)
        if gw is None:
            gw = self.store.create(GatewayResource(metadata=ObjectMeta(name=cfg.name), spec=spec))
        gw.spec = spec
        gw.status.phase = phase
        self.store.update(gw)

    # -- plumbing for front ends and the supervisor --------------------------------------------------

    @property
    def store(self) -> Store:
        if self._store is None:
            raise GatewayError("gateway not started")
        return self._store

    @property
    def pki(self) -> pki_mod.GatewayPKI:
        if self._pki is None:
            raise GatewayError("gateway not started")
        return self._pki

    @property
    def link(self) -> DeviceLink:
        if self._link is None:
            raise GatewayError("gateway not started")
        return self._link

    @property
    def port(self) -> int:
        """The device listener's port (the one boards' chardevs and simulators connect to)."""
        return self.link.port

    @property
    def ca_cert_der(self) -> bytes:
        """Trust anchor for firmware images and simulators."""
        return self.pki.ca_cert_der

    def _require(self, caller: Caller, needed: Role, action: str) -> None:
        if caller.role < needed:  # the @audited wrapper records the refusal (audit.denied)
            raise PermissionDenied(caller, action, needed)

    def authorize(self, caller: Caller, needed: Role, action: str, *, audit_as: str,
                  target: str | None = None) -> None:
        """Refuse ``caller`` up front unless it has ``needed``: same wording and same audit record
        (``audit_as``, ``target``, "denied") as the mutating call itself, so a front end can say no
        before opening a dialog without the refusal going unrecorded."""
        if caller.role < needed:
            exc = PermissionDenied(caller, action, needed)
            self.audit.record(caller, audit_as, target, "denied",
                              message=f"denied: {caller.user} ({caller.role.name.lower()}) tried to {action}")
            raise exc

    # -- reads -----------------------------------------------------------------------------------------

    def devices(self) -> list[Device]:
        return self.store.list(Device)

    def device(self, name: str) -> Device | None:
        return self.store.get(Device, name)

    def watch(self, kind: type[Resource] | None = Device, *, snapshot: bool = True) -> Watch:
        """Store change feed (default: devices, starting with the current ones). Close it when done."""
        return self.store.watch(kind, snapshot=snapshot)

    def events_feed(self, *, history: bool = True) -> EventSubscription:
        """Live gateway events (optionally starting with recent history). Close it when done."""
        return self.events.subscribe(history=history)

    def audit_records(self, n: int = 1000) -> list[dict[str, Any]]:
        """The last ``n`` audit records kept on disk (all roles may read them), oldest first."""
        return self.audit.tail(n)

    def recent_events(self, n: int | None = None) -> list[GatewayEvent]:
        return self.events.recent(n)

    @property
    def pairing_mode(self) -> bool:
        return self.link.gateway_spec().pairing_mode

    def online(self) -> Iterable[str]:
        """Names of devices with a live operational session."""
        return sorted(self.link.online)

    # -- mutations -------------------------------------------------------------------------------------

    @audited("set pairing mode", detail="on")
    async def set_pairing_mode(self, caller: Caller, on: bool) -> None:
        """Admin: allow (or stop allowing) unknown keys to wait for approval."""
        self._require(caller, Role.ADMIN, "change pairing mode")
        gw = self.store.require(GatewayResource, self.config.name)
        gw.spec.pairing_mode = on
        self.store.update(gw)
        self.events.emit("pairing.changed", f"pairing mode {'on' if on else 'off'} (by {caller.user})",
                         user=caller.user, pairing_mode=on)

    def _resolve(self, name_or_fingerprint: str) -> Device:
        dev = self.store.get(Device, name_or_fingerprint) if _looks_like_name(name_or_fingerprint) else None
        if dev is not None:
            return dev
        try:
            fp = pki_mod.normalize_fingerprint(name_or_fingerprint)
        except ValueError:
            raise GatewayError(f"no device {name_or_fingerprint!r}") from None
        for d in self.store.list(Device):
            if d.spec.public_key_fingerprint == fp:
                return d
        raise GatewayError(f"no device with key {fp}")

    @audited("approve", target="name_or_fingerprint")
    async def approve(self, caller: Caller, name_or_fingerprint: str) -> Device:
        """Admin: approve a waiting (Enrolling) or previously rejected (Pending) device.

        The certificate is issued when the device next sends its enroll_request (it polls every
        heartbeat interval, docs/protocol.md section 6.1), so approval works whether or not it is online.
        """
        self._require(caller, Role.ADMIN, "approve enrollments")
        dev = self._resolve(name_or_fingerprint)
        if dev.phase not in (DevicePhase.ENROLLING, DevicePhase.PENDING):
            raise GatewayError(f"device {dev.name} is {dev.phase.value}, not waiting for approval")

        def approve(d: Device) -> None:
            if d.phase is DevicePhase.PENDING:
                d.set_phase(DevicePhase.ENROLLING, reason=f"approved by {caller.user}")
            d.set_phase(DevicePhase.ENROLLED, reason=f"approved by {caller.user}")

        dev, _ = self.store.mutate(Device, dev.name, approve)
        self.events.emit("enrollment.approved", f"enrollment of {dev.name} approved by {caller.user} (key "
                         f"{dev.spec.public_key_fingerprint})", device=dev.name, user=caller.user)
        return dev

    @audited("reject", target="name_or_fingerprint", detail="reason")
    async def reject(self, caller: Caller, name_or_fingerprint: str, reason: str | None = None) -> Device:
        """Admin: refuse a waiting device; its record stays (phase Pending) so the refusal sticks."""
        self._require(caller, Role.ADMIN, "reject enrollments")
        dev = self._resolve(name_or_fingerprint)
        if dev.phase is not DevicePhase.ENROLLING:
            raise GatewayError(f"device {dev.name} is {dev.phase.value}, not waiting for approval")
        why = f"rejected by {caller.user}" + (f": {reason}" if reason else "")

        def reject(d: Device) -> None:
            d.set_phase(DevicePhase.PENDING, reason=why)

        dev, _ = self.store.mutate(Device, dev.name, reject)
        self.events.emit("enrollment.rejected", f"enrollment of {dev.name} {why}", device=dev.name,
                         user=caller.user)
        return dev

    @audited("delete device", target="name")
    async def delete_device(self, caller: Caller, name: str) -> Device:
        """Admin: forget a device. Its certificate stops working at once (revocation by deletion)."""
        self._require(caller, Role.ADMIN, "delete devices")
        dev = self.store.get(Device, name)
        if dev is None:
            raise GatewayError(f"no device {name!r}")
        await self.link.disconnect(name, f"deleted by {caller.user}")
        dev = self.store.delete(Device, name)
        self.events.emit("device.deleted", f"device {name} deleted by {caller.user}; its certificate is no "
                         "longer accepted", device=name, user=caller.user)
        return dev

    @audited("disconnect device", target="name")
    async def disconnect_device(self, caller: Caller, name: str) -> bool:
        """Operator: end a device's session (it will reconnect); False if it was not connected."""
        self._require(caller, Role.OPERATOR, "disconnect devices")
        return await self.link.disconnect(name, f"disconnected by {caller.user}")

    @audited("issue enrollment token", target="board")
    async def issue_enrollment_token(self, caller: Caller, board: str | None = None, *,
                                     ttl: dt.timedelta = DEFAULT_TOKEN_TTL) -> bytes:
        """Admin: a one-time token that enrolls one device (of ``board``, if given) without approval."""
        self._require(caller, Role.ADMIN, "issue enrollment tokens")
        assert self._tokens is not None
        token = self._tokens.issue(board, ttl=ttl, issued_by=caller.user)
        self.events.emit("token.issued", f"enrollment token issued by {caller.user}"
                         + (f" for board {board}" if board else "") + f", valid {ttl}", user=caller.user,
                         board=board)
        return token

    # -- the lab: emulated boards ----------------------------------------------------------------------

    @property
    def lab(self) -> Lab:
        if self._lab is None:
            raise GatewayError("this gateway runs no lab boards (start it with GatewayConfig(lab=True))")
        return self._lab

    @property
    def has_lab(self) -> bool:
        return self._lab is not None

    def boards(self) -> list[Board]:
        return self.lab.boards() if self._lab is not None else []

    def board(self, name: str) -> Board | None:
        return self.lab.board(name) if self._lab is not None else None

    def board_process(self, name: str) -> BoardProcess:
        """Live process facts (state, pid, scrollback) of a lab board."""
        return self.lab.process(name)

    def board_device(self, name: str) -> Device | None:
        """The Device a lab board enrolled as, if any."""
        return self.lab.device_of(name)

    def board_console(self, name: str, *, replay: bool = True) -> Subscription[ConsoleLine]:
        """Live console lines of a lab board (optionally starting with its scrollback). Close when done."""
        return self.lab.process(name).subscribe(replay=replay)

    @audited("add board", target="name", detail="board_type")
    async def add_board(self, caller: Caller, name: str, board_type: str, *, autostart: bool = True,
                        auto_enroll: bool = True, icount_shift: int | None = None, start: bool = True) -> Board:
        self._require(caller, Role.ADMIN, f"add board {name}")
        board = self.lab.add(name, board_type, autostart=autostart, auto_enroll=auto_enroll,
                             icount_shift=icount_shift)
        self.events.emit("board.added", f"{caller.user} added board {name} ({board_type})", user=caller.user,
                         board=name)
        if start:
            await self.lab.start_board(name)
        return board

    @audited("remove board", target="name")
    async def remove_board(self, caller: Caller, name: str) -> Board:
        self._require(caller, Role.ADMIN, f"remove board {name}")
        board = await self.lab.remove(name)
        self.events.emit("board.removed", f"{caller.user} removed board {name}", user=caller.user, board=name)
        return board

    @audited("start board", target="name")
    async def start_board(self, caller: Caller, name: str) -> BoardProcess:
        self._require(caller, Role.OPERATOR, f"start board {name}")
        return await self.lab.start_board(name)

    @audited("stop board", target="name")
    async def stop_board(self, caller: Caller, name: str) -> None:
        self._require(caller, Role.OPERATOR, f"stop board {name}")
        await self.lab.stop_board(name)

    @audited("reset board", target="name")
    async def reset_board(self, caller: Caller, name: str) -> None:
        self._require(caller, Role.OPERATOR, f"reset board {name}")
        await self.lab.reset_board(name)

    @audited("power-cycle board", target="name")
    async def power_cycle_board(self, caller: Caller, name: str) -> BoardProcess:
        self._require(caller, Role.OPERATOR, f"power-cycle board {name}")
        return await self.lab.power_cycle(name)

    @audited("set temperature", target="name", detail="celsius")
    async def set_temperature(self, caller: Caller, name: str, celsius: float) -> None:
        self._require(caller, Role.OPERATOR, f"set the temperature of board {name}")
        await self.lab.supervisor.set_temperature(name, celsius)
        self.events.emit("board.sensor", f"{caller.user} set {name} temperature to {celsius:.2f} °C",
                         user=caller.user, board=name)

    async def get_temperature(self, name: str) -> float:
        return await self.lab.supervisor.get_temperature(name)

    async def read_leds(self, name: str) -> list[bool]:
        return await self.lab.supervisor.read_leds(name)


    # -- apps ------------------------------------------------------------------------------------------

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            raise GatewayError("gateway not started")
        return self._catalog

    def apps(self) -> list[AppModule]:
        """The catalog: one entry per app name (its current module and version)."""
        return self.catalog.list()

    def app(self, name: str) -> AppModule | None:
        return self.catalog.get(name)

    def applications(self) -> list[Application]:
        """Deployments (desired state + per-device status)."""
        return self.store.list(Application)

    def application(self, name: str) -> Application | None:
        return self.store.get(Application, name)

    @audited("add app", target="name", detail="source")
    async def add_app(self, caller: Caller, source: bytes | str | Path, name: str | None = None,
                      version: str | None = None) -> AppModule:
        """Operator: validate a module (``.wasm``/``.wat`` path, WASM bytes or WAT text) and add it to the catalog."""
        self._require(caller, Role.OPERATOR, "add apps")
        entry, info = self.catalog.add(source, name=name, version=version, added_by=caller.user)
        self.events.emit("app.added", f"{caller.user} added app {entry.name} {entry.spec.version} ({info.size} "
                         f"bytes, sha256 {info.sha256[:12]})", user=caller.user, app=entry.name)
        return entry

    def _require_app(self, name: str) -> Application:
        app = self.store.get(Application, name)
        if app is None:
            raise GatewayError(f"app {name!r} is not deployed")
        return app

    def _check_targets(self, info: ModuleInfo, targets: AppTargets, limits: AppLimits,
                       config: Mapping[str, str]) -> None:
        """Every check a deployment must pass before the Application is stored (docs/abi.md section 6)."""
        check_limits(info, limits.memory_pages, limits.time_budget_ms)
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in config.items()):
            raise ValidationError("config: keys and values must be text")
        encoded = len(cbor2.dumps(dict(config)))
        if encoded > APP_CONFIG_MAX:
            raise ValidationError(f"config: {encoded} bytes encoded, the protocol allows {APP_CONFIG_MAX}")
        for name in targets.devices:
            if self.store.get(Device, name) is None:
                raise GatewayError(f"no device {name!r}")
        probe = Application(metadata=ObjectMeta(name="probe"), spec=ApplicationSpec(
            name="probe", module_sha256=info.sha256, version="probe", targets=targets))
        for name in sorted(targets_of(self.store, probe)):
            dev = self.store.get(Device, name)
            if dev is not None and dev.spec.board:
                try:
                    check_fits(info, dev.spec.board)
                except ValidationError as exc:
                    raise ValidationError(f"target device {name}: {exc}") from None

    @audited("deploy", target="app_name", detail="targets")
    async def deploy(self, caller: Caller, app_name: str, targets: list[str] | Mapping[str, str] | AppTargets,
                     *, config: Mapping[str, str] | None = None, limits: AppLimits | None = None,
                     restart_policy: RestartPolicy | str = RestartPolicy.NEVER) -> Application:
        """Operator: run catalog app ``app_name`` on devices (names, a label selector, or AppTargets)."""
        self._require(caller, Role.OPERATOR, f"deploy app {app_name}")
        entry = self.catalog.get(app_name)
        if entry is None:
            raise GatewayError(f"no app {app_name!r} in the catalog")
        if self.store.get(Application, app_name) is not None:
            raise GatewayError(f"app {app_name!r} is already deployed: update_app, stop_app or undeploy it")
        try:
            if isinstance(targets, AppTargets):
                tgt = targets
            elif isinstance(targets, Mapping):
                tgt = AppTargets(selector=dict(targets))
            else:
                tgt = AppTargets(devices=list(targets))
            lim = limits or AppLimits()
            policy = RestartPolicy(restart_policy)
        except (ModelError, ValueError) as exc:
            raise ValidationError(str(exc)) from None
        info = validate_module(self.catalog.module(entry.spec.module_sha256))
        self._check_targets(info, tgt, lim, config or {})
        app = self.store.create(Application(metadata=ObjectMeta(name=app_name), spec=ApplicationSpec(
            name=app_name, module_sha256=info.sha256, version=entry.spec.version, targets=tgt,
            config=dict(config or {}), limits=lim, restart_policy=policy)))
        self.events.emit("app.deployed", f"{caller.user} deployed {app_name} {entry.spec.version}", user=caller.user,
                         app=app_name)
        return app

    def _set_desired(self, name: str, desired: DesiredState, phase: AppPhase) -> Application:
        def apply(a: Application) -> None:
            a.spec.desired_state = desired
            a.status.phase = phase

        self._require_app(name)
        return self.store.mutate(Application, name, apply)[0]

    @audited("stop app", target="app")
    async def stop_app(self, caller: Caller, app: str) -> Application:
        """Operator: stop the app on every device (it stays deployed; start_app resumes it)."""
        self._require(caller, Role.OPERATOR, f"stop app {app}")
        res = self._set_desired(app, DesiredState.STOPPED, AppPhase.STOPPING)
        self.events.emit("app.stopping", f"{caller.user} stopped {app}", user=caller.user, app=app)
        return res

    @audited("start app", target="app")
    async def start_app(self, caller: Caller, app: str) -> Application:
        """Operator: run a stopped app again."""
        self._require(caller, Role.OPERATOR, f"start app {app}")
        res = self._set_desired(app, DesiredState.RUNNING, AppPhase.DEPLOYING)
        self.events.emit("app.starting", f"{caller.user} started {app}", user=caller.user, app=app)
        return res

    @audited("undeploy", target="app")
    async def undeploy(self, caller: Caller, app: str, *, wait_s: float | None = 10.0) -> bool:
        """Operator: remove the app from every device, then delete the Application.

        Waits up to ``wait_s`` for that (None: do not wait); True when the Application is gone.
        """
        self._require(caller, Role.OPERATOR, f"undeploy app {app}")
        with self.store.watch(Application) as watch:
            self._set_desired(app, DesiredState.DELETED, AppPhase.DELETING)
            assert self._reconciler is not None
            self._reconciler.trigger_app(app)
            self.events.emit("app.undeploying", f"{caller.user} undeployed {app}", user=caller.user, app=app)
            if wait_s is None:
                return self.store.get(Application, app) is None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    if self.store.get(Application, app) is None:
                        return True
                    async for ev in watch:
                        if ev.type is EventType.DELETED and ev.object is not None and ev.object.name == app:
                            return True
        return self.store.get(Application, app) is None

    @audited("update app", target="app", detail="version")
    async def update_app(self, caller: Caller, app: str, source: bytes | str | Path,
                         version: str | None = None) -> Application:
        """Operator: a new module for a deployed app; devices stop and remove the old one, then run the new one."""
        self._require(caller, Role.OPERATOR, f"update app {app}")
        current = self._require_app(app)
        info = validate_module(source)
        self._check_targets(info, current.spec.targets, current.spec.limits, current.spec.config)
        entry, _ = self.catalog.add(info.wasm, name=current.spec.name, version=version, added_by=caller.user)

        def apply(a: Application) -> None:
            a.spec.module_sha256 = entry.spec.module_sha256
            a.spec.version = entry.spec.version
            a.spec.desired_state = DesiredState.RUNNING
            a.status.phase = AppPhase.DEPLOYING
            for e in a.status.devices:  # every instance is about to be replaced
                if e.module_sha256 != entry.spec.module_sha256:
                    e.phase = AppDevicePhase.DEPLOYING

        res = self.store.mutate(Application, app, apply)[0]
        self.events.emit("app.updated", f"{caller.user} updated {app} to {entry.spec.version}", user=caller.user,
                         app=app)
        return res

    @audited("send message", target="app", detail="device")
    async def send_message(self, caller: Caller, app: str, device: str, topic: str, payload: bytes) -> None:
        """Operator: deliver ``payload`` on ``topic`` to the app's on_message on one device."""
        self._require(caller, Role.OPERATOR, f"send messages to app {app}")
        entry = self._require_app(app).status.entry(device)
        if entry is None or entry.app_id is None:
            raise GatewayError(f"app {app!r} has no instance on device {device!r}")
        if not 1 <= len(topic.encode()) <= TOPIC_MAX or len(payload) > PAYLOAD_MAX:
            raise ValidationError(f"topic must be 1..{TOPIC_MAX} bytes and payload at most {PAYLOAD_MAX} bytes")
        session = self.link.online.get(device)
        if session is None:
            raise GatewayError(f"device {device!r} is not connected")
        try:
            await session.send_message(entry.app_id, topic, bytes(payload))
        except AppLinkError as exc:
            raise GatewayError(str(exc)) from None


def _looks_like_name(text: str) -> bool:
    return ":" not in text


__all__ = [
    "SYSTEM",
    "Caller",
    "Gateway",
    "GatewayConfig",
    "GatewayError",
    "PermissionDenied",
    "Role",
    "ValidationError",
]

