"""The device link: a TLS listener speaking protocol v1 (docs/protocol.md) with every board and simulator.

One :class:`DeviceLink` per gateway; one :class:`DeviceSession` task per TCP connection. QEMU boards reach
it through a UART<->TCP chardev (QEMU connects out to our port), the Python simulator directly; either
way TLS runs on the raw byte stream.

Why TLS is driven by hand (``ssl.MemoryBIO`` + ``SSLObject``) instead of ``start_server(ssl=...)``:
asyncio swallows handshake failures (an ``OSError`` only reaches a debug log, without the peer), and
upgrading with ``start_tls`` after accept races with the ClientHello already read into the stream
buffer. Pumping the BIOs ourselves costs one copy per read and gives every failure a logged reason
with the peer address.

Session rules (docs/protocol.md section 6):

* no client certificate: ``hello`` then only ``enroll_request`` (enrollment session);
* client certificate (verified by OpenSSL against our CA): the key must belong to an enrolled Device
  in the store (deleting the Device is revocation), then ``heartbeat``\\s.

Phases go through :meth:`~wasmbed.gateway.model.Device.set_phase`; an :class:`InvalidTransition` is a
gateway bug and is logged as such (event ``bug.invalid_transition``), never swallowed silently.
A malformed or hostile peer only ever ends its own session; the listener stays up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from . import pki as pki_mod
from .enrollment import (
    CheckedCSR,
    EnrollmentError,
    TokenRegistry,
    check_csr,
    device_name_for,
    find_device_by_fingerprint,
    free_device_name,
)
from .events import EventLevel, EventLog
from .model import (
    Device,
    DevicePhase,
    DeviceSpec,
    Gateway,
    GatewaySpec,
    InvalidTransition,
    ObjectMeta,
    utcnow,
)
from .protocol import (
    INITIAL_MAX_FRAME_SIZE,
    PROTOCOL_VERSION,
    REASON_MAX,
    AppError,
    AppLog,
    AppMessage,
    AppStart,
    AppStateCode,
    AppStatus,
    AppStop,
    DeployBegin,
    DeployChunk,
    DeployCommit,
    DeployResult,
    EnrollRequest,
    EnrollResult,
    EnrollStatus,
    Envelope,
    ErrorCode,
    ErrorMessage,
    FrameReader,
    Heartbeat,
    HeartbeatAck,
    Hello,
    HelloAck,
    Message,
    ProtocolError,
    Publish,
    agree_frame_size,
    chunk_capacity,
    encode_frame,
)
from .store import NotFound, Store

_LOG = logging.getLogger("wasmbed.gateway.link")

READ_CHUNK = 64 * 1024
OPERATIONAL_PHASES = frozenset({DevicePhase.ENROLLED, DevicePhase.CONNECTED, DevicePhase.DISCONNECTED,
                                DevicePhase.UNREACHABLE})
_APP_STATE_NAMES = {c.value: c.name.capitalize() for c in AppStateCode}

T = TypeVar("T")


@dataclass
class LinkConfig:
    """Listener settings. Heartbeat interval, unreachable timeout and pairing mode live in the Gateway
    resource (store), so front ends can change them while the listener runs."""

    host: str = "127.0.0.1"
    port: int = 0  # 0: pick a free port (tests); see DeviceLink.port
    max_frame_size: int = 16 * 1024  # the gateway's side of the frame size negotiation
    handshake_timeout_s: float = 10.0
    hello_timeout_s: float = 10.0
    enrollment_timeout_s: float = 600.0  # an enrollment session pending longer than this is closed
    # Heartbeat-only status writes per device are coalesced to at most one per this period (phase changes
    # are always written at once). Below the protocol's 1 s minimum interval, so it only matters for devices
    # beating faster than allowed (benchmarks); a store write costs ~0.5 ms, a heartbeat ~0.1 ms otherwise.
    status_write_interval_s: float = 0.5


class SessionEnd(Exception):
    """A normal end decided by us or the peer (not a protocol violation): just log the reason."""


class AppLinkError(Exception):
    """An app request could not complete: the session ended or the device did not answer in time."""


#: Unacknowledged deploy_chunk frames in flight (docs/protocol.md section 6.3).
CHUNK_WINDOW = 4
REQUEST_TIMEOUT_S = 10.0
_LOG_LEVELS = {0: EventLevel.INFO, 1: EventLevel.INFO, 2: EventLevel.WARNING, 3: EventLevel.ERROR}
_LOG_LEVEL_NAMES = {0: "debug", 1: "info", 2: "warning", 3: "error"}


class AppHandler(Protocol):
    """What the link tells the app reconciler (all called synchronously from the session's task)."""

    def session_up(self, device: str, session: DeviceSession) -> None: ...
    def session_down(self, device: str, session: DeviceSession) -> None: ...
    def heartbeat(self, device: str, session: DeviceSession, first: bool) -> None: ...
    def app_status(self, device: str, session: DeviceSession, status: AppStatus) -> None: ...
    def app_name(self, device: str, app_id: int) -> str | None: ...


class TlsStream:
    """Server-side TLS over an asyncio stream pair, via memory BIOs (see module docstring for why)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ctx: ssl.SSLContext) -> None:
        self._reader = reader
        self._writer = writer
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self._in, self._out, server_side=True)

    async def _flush(self) -> None:
        data = self._out.read()
        if data:
            self._writer.write(data)
            await self._writer.drain()

    async def _fill(self) -> bool:
        data = await self._reader.read(READ_CHUNK)
        if not data:
            self._in.write_eof()
            return False
        self._in.write(data)
        return True

    async def handshake(self) -> None:
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self._flush()
                if not await self._fill():
                    raise ConnectionResetError("peer closed the connection during the TLS handshake") from None
            except ssl.SSLError:
                with contextlib.suppress(Exception):  # send the alert so the peer learns why
                    await self._flush()
                raise
        await self._flush()

    async def read(self) -> bytes:
        """Application bytes; b"" at the end of the stream (close_notify or TCP EOF)."""
        while True:
            try:
                return self.obj.read(READ_CHUNK)
            except ssl.SSLWantReadError:
                await self._flush()
                if not await self._fill():
                    return b""
            except ssl.SSLZeroReturnError:
                return b""
            except ssl.SSLEOFError:
                return b""

    async def write(self, data: bytes) -> None:
        self.obj.write(data)
        await self._flush()

    async def close(self, timeout: float = 1.0) -> None:
        """Send close_notify (best effort) and close the socket; never hangs."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(timeout):
                with contextlib.suppress(ssl.SSLError):
                    self.obj.unwrap()
                await self._flush()
        self._writer.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(timeout):
                await self._writer.wait_closed()


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class DeviceLink:
    """The TLS listener and the registry of live sessions."""

    def __init__(self, store: Store, pki: pki_mod.GatewayPKI, events: EventLog, tokens: TokenRegistry, *,
                 gateway_name: str, config: LinkConfig | None = None) -> None:
        self.store = store
        self.pki = pki
        self.events = events
        self.tokens = tokens
        self.gateway_name = gateway_name
        self.config = config or LinkConfig()
        if self.config.max_frame_size < INITIAL_MAX_FRAME_SIZE:
            raise ValueError("max_frame_size below the protocol minimum")
        self._ctx = pki.server_context(allow_enrollment=True)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.online: dict[str, DeviceSession] = {}  # device name -> its operational session
        self.sessions: set[DeviceSession] = set()
        self.app_handler: AppHandler | None = None  # the reconciler, when apps are managed

    # -- lifecycle -------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._on_connection, self.config.host, self.config.port,
                                                  limit=READ_CHUNK)

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("link not started")
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stop accepting, end every session (devices become Disconnected)."""
        if self._server is not None:
            self._server.close()
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await self._server.wait_closed()
            self._server = None

    async def disconnect(self, device_name: str, reason: str) -> bool:
        """End a device's live session (e.g. after deletion = revocation). False if it had none."""
        session = self.online.get(device_name)
        if session is None:
            return False
        session.kick(reason)
        return True

    def gateway_spec(self) -> GatewaySpec:
        """Live settings from the Gateway resource (defaults if a bare link runs without one)."""
        gw = self.store.get(Gateway, self.gateway_name)
        if gw is None:
            return GatewaySpec(endpoint=self.config.host, port=self.config.port or 1)
        return gw.spec

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        session = DeviceSession(self, reader, writer)
        self.sessions.add(session)
        try:
            await session.run()
        except asyncio.CancelledError:
            # Cancelled by stop(): end normally; asyncio's stream callback would log a cancelled task as an error.
            pass
        finally:
            self.sessions.discard(session)
            self._tasks.discard(task)

    # -- store helpers (all synchronous: no await between read and write) --------------------------------

    def mutate_device(self, name: str, fn: Callable[[Device], T]) -> tuple[Device, T] | None:
        """Apply ``fn`` to the stored Device; None if it was deleted. Invalid transitions are logged bugs."""
        try:
            return self.store.mutate(Device, name, fn)
        except NotFound:
            return None
        except InvalidTransition as exc:
            self.events.emit("bug.invalid_transition", f"BUG: {exc}", level=EventLevel.ERROR, device=name,
                             logger=_LOG, old=exc.old.value, new=exc.new.value)
            return None


class DeviceSession:
    """One connection: TLS handshake, hello, then the enrollment or the operational protocol."""

    def __init__(self, link: DeviceLink, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.link = link
        self._writer = writer
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.tls = TlsStream(reader, writer, link._ctx)
        self.frames = FrameReader(INITIAL_MAX_FRAME_SIZE)
        self.max_frame = INITIAL_MAX_FRAME_SIZE
        self.identity: pki_mod.PeerCertificate | None = None
        self.hello: Hello | None = None
        self.device_name: str | None = None
        self.spec: GatewaySpec | None = None
        self._deadline: float | None = None  # loop time by which the current phase must progress
        self._task = asyncio.current_task()
        self._loop = asyncio.get_running_loop()
        self._kick_reason: str | None = None
        self._superseded = False
        self._online = False
        self._last_hb = 0.0
        self._unreachable = False
        self._timer: asyncio.TimerHandle | None = None
        self._last_write = 0.0
        self._announced_pending = False
        self.heartbeats = 0
        self._write_lock = asyncio.Lock()
        self._next_id = 0
        self._pending: dict[int, tuple[type[Message], int, asyncio.Future[Message]]] = {}
        self.device_apps: dict[int, int] = {}  # app_id -> state code, as the device last reported
        self.first_heartbeat = asyncio.Event()
        self.closed = False

    @property
    def label(self) -> str:
        return f"{self.device_name or 'unenrolled device'} ({self.peer})"

    def kick(self, reason: str, *, superseded: bool = False) -> None:
        """End this session from outside (operator, a newer session of the same device)."""
        self._kick_reason = reason
        self._superseded = superseded
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()

    # -- main loop -------------------------------------------------------------------------------------

    async def run(self) -> None:
        reason = "closed"
        try:
            try:
                async with asyncio.timeout(self.link.config.handshake_timeout_s):
                    await self.tls.handshake()
            except (ssl.SSLError, OSError, TimeoutError) as exc:
                text = _ssl_reason(exc) if not isinstance(exc, TimeoutError) else "timed out"
                self.link.events.emit("session.tls_failed", f"TLS handshake failed from {self.peer}: {text}",
                                      level=EventLevel.WARNING, logger=_LOG, peer=self.peer, reason=text)
                self._writer.transport.abort()
                return
            self.identity = pki_mod.peer_certificate(self.tls.obj)
            if self.identity is not None:
                self.device_name = self.identity.device_name or None
            self._deadline = self._loop.time() + self.link.config.hello_timeout_s
            await self._read_loop()
        except ProtocolError as exc:
            reason = f"protocol error {_code_name(exc.code)}: {exc.text}"
            await self._send_error(exc)
            self.link.events.emit("session.protocol_error", f"session {self.label} closed: {reason}",
                                  level=EventLevel.WARNING, device=self.device_name, logger=_LOG,
                                  peer=self.peer, code=int(exc.code))
        except SessionEnd as exc:
            reason = str(exc)
            _LOG.info("session %s ended: %s", self.label, reason)
        except asyncio.CancelledError:
            reason = self._kick_reason or "gateway stopping"
            _LOG.info("session %s ended: %s", self.label, reason)
            if self._kick_reason is None:
                raise
        except (ConnectionError, ssl.SSLError, OSError) as exc:
            reason = f"connection lost: {_ssl_reason(exc)}"
            _LOG.info("session %s ended: %s", self.label, reason)
        except Exception as exc:  # a bug: keep the listener alive, tell the device, log loudly
            reason = f"internal error: {exc!r}"
            _LOG.exception("BUG in session %s", self.label)
            await self._send_error(ProtocolError(ErrorCode.INTERNAL, "internal gateway error"))
        finally:
            self._finish(reason)
            await asyncio.shield(self.tls.close())

    async def _read_loop(self) -> None:
        while True:
            if self._deadline is not None:
                remaining = self._deadline - self._loop.time()
                try:
                    async with asyncio.timeout(max(remaining, 0)):
                        data = await self.tls.read()
                except TimeoutError:
                    what = "no hello" if self.hello is None else "enrollment not completed"
                    raise SessionEnd(f"timeout: {what}") from None
            else:
                data = await self.tls.read()
            if not data:
                if self.frames.buffered:
                    raise ProtocolError(ErrorCode.MALFORMED_CBOR,
                                        f"connection closed inside a frame ({self.frames.buffered} bytes pending)")
                raise SessionEnd("closed by the device")
            for body in self.frames.feed(data):
                await self._dispatch(Envelope.from_cbor(body))

    async def _send(self, env: Envelope) -> None:
        frame = encode_frame(env, self.max_frame)
        async with self._write_lock:  # requests come from reconciler tasks too
            await self.tls.write(frame)

    async def _send_error(self, exc: ProtocolError) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1):
                await self._send(Envelope(exc.message_id or 0, ErrorMessage.from_exception(exc)))

    async def _dispatch(self, env: Envelope) -> None:
        msg = env.message
        if isinstance(msg, ErrorMessage):
            raise SessionEnd(f"device reported error {msg.code}: {msg.text}")
        if self.hello is None:
            if not isinstance(msg, Hello):
                raise ProtocolError(ErrorCode.UNEXPECTED_MESSAGE, f"first frame must be hello, got "
                                    f"{type(msg).__name__}", env.message_id)
            await self._on_hello(env, msg)
        elif isinstance(msg, Heartbeat) and self._online:
            await self._on_heartbeat(env, msg)
        elif isinstance(msg, DeployResult | AppStatus | AppLog | Publish) and self._online:
            self._on_app_message(env, msg)
        elif isinstance(msg, EnrollRequest) and self.identity is None:
            await self._on_enroll(env, msg)
        else:
            where = "an operational" if self.identity is not None else "an enrollment"
            raise ProtocolError(ErrorCode.UNEXPECTED_MESSAGE, f"{type(msg).__name__} not allowed in {where} "
                                "session at this point", env.message_id)

    # -- hello -----------------------------------------------------------------------------------------

    async def _on_hello(self, env: Envelope, hello: Hello) -> None:
        spec = self.spec = self.link.gateway_spec()
        agreed = agree_frame_size(hello.max_frame_size, self.link.config.max_frame_size)
        device: Device | None = None
        if self.identity is not None:
            device = self.link.store.get(Device, self.identity.device_name) if self.identity.device_name else None
            if (device is None or device.spec.public_key_fingerprint != self.identity.fingerprint
                    or device.phase not in OPERATIONAL_PHASES):
                self.link.events.emit(
                    "session.unknown_device",
                    f"refused certificate of {self.identity.device_name!r} from {self.peer}: key "
                    f"{self.identity.fingerprint} is not an enrolled device (deleted or never enrolled here)",
                    level=EventLevel.WARNING, logger=_LOG, peer=self.peer, fingerprint=self.identity.fingerprint)
                raise ProtocolError(ErrorCode.UNKNOWN_DEVICE, "certificate key is not an enrolled device",
                                    env.message_id)
        self.hello = hello
        ack = HelloAck(PROTOCOL_VERSION, agreed, _now_ms(), spec.heartbeat_interval_s * 1000)
        await self._send(Envelope(env.message_id, ack))
        self.max_frame = agreed
        self.frames.max_frame_size = agreed
        if device is None:
            self._deadline = self._loop.time() + self.link.config.enrollment_timeout_s
            _LOG.debug("enrollment session from %s (board %s)", self.peer, hello.board)
        else:
            self._deadline = None
            self._go_online(device.name, hello)

    def _go_online(self, name: str, hello: Hello) -> None:
        old = self.link.online.get(name)
        if old is not None and old is not self:
            old.kick("replaced by a newer session of the same device", superseded=True)
        self.link.online[name] = self
        self._online = True
        self.device_name = name
        now = utcnow()

        def connect(d: Device) -> None:
            if d.phase is not DevicePhase.CONNECTED:  # Connected already: a replaced session, no transition
                d.set_phase(DevicePhase.CONNECTED, reason=f"connected from {self.peer}", now=now)
            else:
                d.status.connected_since = now
                d.status.last_heartbeat = now
            d.status.gateway = self.link.gateway_name
            d.status.firmware_version = hello.firmware_version
            d.status.free_ram = hello.ram_free

        if self.link.mutate_device(name, connect) is None and self.link.store.get(Device, name) is None:
            raise ProtocolError(ErrorCode.UNKNOWN_DEVICE, "device deleted")
        self.link.events.emit("device.connected", f"device {name} connected from {self.peer}", device=name,
                              logger=_LOG, peer=self.peer, firmware=hello.firmware_version)
        self._last_hb = self._last_write = self._loop.time()
        self._arm_timer(self._timeout())
        if self.link.app_handler is not None:
            self.link.app_handler.session_up(name, self)

    # -- heartbeats and reachability -----------------------------------------------------------------

    def _timeout(self) -> float:
        assert self.spec is not None
        return float(self.spec.unreachable_timeout_s)

    def _arm_timer(self, delay: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_later(delay, self._check_silence)

    def _check_silence(self) -> None:
        self._timer = None
        if not self._online:
            return
        silent_for = self._loop.time() - self._last_hb
        if silent_for < self._timeout():
            self._arm_timer(self._timeout() - silent_for)
            return
        self._unreachable = True
        name = self.device_name
        assert name is not None

        def unreachable(d: Device) -> bool:
            if d.phase is DevicePhase.CONNECTED:
                d.set_phase(DevicePhase.UNREACHABLE, reason=f"no heartbeat for {silent_for:.1f} s")
                return True
            return False

        res = self.link.mutate_device(name, unreachable)
        if res is not None and res[1]:
            self.link.events.emit("device.unreachable", f"device {name} unreachable: no heartbeat for "
                                  f"{silent_for:.1f} s", level=EventLevel.WARNING, device=name, logger=_LOG)

    async def _on_heartbeat(self, env: Envelope, hb: Heartbeat) -> None:
        name = self.device_name
        assert name is not None
        self.heartbeats += 1
        now_loop = self._loop.time()
        self._last_hb = now_loop
        recovered = self._unreachable
        apps = {str(a.app_id): _APP_STATE_NAMES.get(a.state, "Unknown") for a in hb.apps} or None
        self.device_apps = {a.app_id: a.state for a in hb.apps}
        first = not self.first_heartbeat.is_set()
        self.first_heartbeat.set()
        interval = self.link.config.status_write_interval_s
        if recovered or interval <= 0 or now_loop - self._last_write >= interval:
            self._last_write = now_loop
            now = utcnow()

            def beat(d: Device) -> bool:
                changed = False
                if d.phase is DevicePhase.UNREACHABLE:
                    d.set_phase(DevicePhase.CONNECTED, reason="heartbeat resumed", now=now)
                    changed = True
                d.status.last_heartbeat = now
                d.status.uptime_ms = hb.uptime_ms
                d.status.free_ram = hb.free_memory
                d.status.apps = apps
                return changed

            res = self.link.mutate_device(name, beat)
            if res is None and self.link.store.get(Device, name) is None:
                raise ProtocolError(ErrorCode.UNKNOWN_DEVICE, "device deleted", env.message_id)
            if recovered:
                self._unreachable = False
                self._arm_timer(self._timeout())
                if res is not None and res[1]:
                    self.link.events.emit("device.reachable", f"device {name} reachable again", device=name,
                                          logger=_LOG)
        await self._send(Envelope(env.message_id, HeartbeatAck(_now_ms())))
        if self.link.app_handler is not None:
            self.link.app_handler.heartbeat(name, self, first)

    # -- apps (docs/protocol.md section 6.3) ---------------------------------------------------------------

    def _new_id(self) -> int:
        self._next_id = self._next_id % 0xFFFF_FFFF + 1
        return self._next_id

    def _on_app_message(self, env: Envelope, msg: DeployResult | AppStatus | AppLog | Publish) -> None:
        name = self.device_name
        assert name is not None
        if isinstance(msg, DeployResult | AppStatus):
            pending = self._pending.get(env.message_id)
            if pending is not None and isinstance(msg, pending[0]) and msg.app_id == pending[1]:
                del self._pending[env.message_id]
                if not pending[2].done():
                    pending[2].set_result(msg)
            elif isinstance(msg, DeployResult):
                _LOG.debug("%s: unsolicited deploy_result for app %d ignored", self.label, msg.app_id)
            if isinstance(msg, AppStatus):
                # Every app_status is a state report, reply or not (ids of the two sides may clash).
                if msg.state == AppStateCode.UNKNOWN:
                    self.device_apps.pop(msg.app_id, None)
                else:
                    self.device_apps[msg.app_id] = msg.state
                if self.link.app_handler is not None:
                    self.link.app_handler.app_status(name, self, msg)
            return
        handler = self.link.app_handler
        app = (handler.app_name(name, msg.app_id) if handler is not None else None) or f"app {msg.app_id}"
        if isinstance(msg, AppLog):
            self.link.events.emit("app.log", f"{name}/{app}: {msg.text}", level=_LOG_LEVELS[msg.level], device=name,
                                  logger=_LOG, app=app, app_id=msg.app_id, log_level=_LOG_LEVEL_NAMES[msg.level],
                                  uptime_ms=msg.uptime_ms, text=msg.text)
        else:
            self.link.events.emit("app.publish", f"{name}/{app} published {len(msg.payload)} bytes on "
                                  f"{msg.topic!r}", device=name, logger=_LOG, app=app, app_id=msg.app_id,
                                  topic=msg.topic, payload=msg.payload)

    async def _request_future(self, msg: DeployBegin | DeployChunk | DeployCommit | AppStart | AppStop,
                              reply: type[Message]) -> asyncio.Future[Message]:
        if self.closed or not self._online:
            raise AppLinkError(f"{self.label}: session is not operational")
        mid = self._new_id()
        fut: asyncio.Future[Message] = self._loop.create_future()
        self._pending[mid] = (reply, msg.app_id, fut)
        try:
            await self._send(Envelope(mid, msg))
        except (ConnectionError, OSError, ssl.SSLError) as exc:
            self._pending.pop(mid, None)
            raise AppLinkError(f"{self.label}: send failed: {exc}") from exc
        return fut

    async def _await_reply(self, fut: asyncio.Future[Message], what: str, timeout: float) -> Message:
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.shield(fut)
        except TimeoutError:
            raise AppLinkError(f"{self.label}: no answer to {what} within {timeout:.0f} s") from None

    async def request(self, msg: DeployBegin | DeployChunk | DeployCommit | AppStart | AppStop, *,
                      timeout: float = REQUEST_TIMEOUT_S) -> Message:
        """Send a gateway request and wait for its reply (deploy_result or app_status)."""
        reply = AppStatus if isinstance(msg, AppStart | AppStop) else DeployResult
        fut = await self._request_future(msg, reply)
        return await self._await_reply(fut, type(msg).__name__, timeout)

    async def app_start(self, app_id: int) -> AppStatus:
        res = await self.request(AppStart(app_id))
        assert isinstance(res, AppStatus)
        return res

    async def app_stop(self, app_id: int, remove: bool = False) -> AppStatus:
        res = await self.request(AppStop(app_id, remove), timeout=REQUEST_TIMEOUT_S + 60)
        assert isinstance(res, AppStatus)
        return res

    async def send_message(self, app_id: int, topic: str, payload: bytes) -> None:
        """Deliver a ``message`` to an app (not acknowledged)."""
        if self.closed or not self._online:
            raise AppLinkError(f"{self.label}: session is not operational")
        await self._send(Envelope(self._new_id(), AppMessage(app_id, topic, payload)))

    async def deploy(self, begin: DeployBegin, wasm: bytes, progress: Callable[[int], None] | None = None, *,
                     window: int = CHUNK_WINDOW) -> DeployResult:
        """Transfer a module (deploy_begin, chunks with at most ``window`` unacknowledged, deploy_commit).

        Returns the first non-OK deploy_result, or the commit's. Raises AppLinkError if the link goes.
        """
        if begin.size != len(wasm):
            raise ValueError("deploy_begin.size does not match the module")
        res = await self.request(begin)
        assert isinstance(res, DeployResult)
        if res.code != AppError.OK:
            return res
        cap = chunk_capacity(self.max_frame)
        acked = sent = res.next_offset
        inflight: deque[asyncio.Future[Message]] = deque()
        while acked < len(wasm):
            while len(inflight) < window and sent < len(wasm):
                data = wasm[sent : sent + cap]
                inflight.append(await self._request_future(DeployChunk(begin.app_id, sent, data), DeployResult))
                sent += len(data)
            reply = await self._await_reply(inflight.popleft(), "deploy_chunk", REQUEST_TIMEOUT_S)
            assert isinstance(reply, DeployResult)
            if reply.code not in (AppError.OK, AppError.BAD_OFFSET):
                await self._drain(inflight)
                return reply
            if reply.code == AppError.BAD_OFFSET:  # resume where the device says it is
                await self._drain(inflight)
                sent = reply.next_offset
            acked = reply.next_offset
            if progress is not None:
                progress(acked)
        res = await self.request(DeployCommit(begin.app_id), timeout=REQUEST_TIMEOUT_S + begin.time_budget_ms / 1000)
        assert isinstance(res, DeployResult)
        if res.code == AppError.OK:
            self.device_apps.setdefault(begin.app_id, AppStateCode.RUNNING)
        return res

    async def _drain(self, inflight: deque[asyncio.Future[Message]]) -> None:
        while inflight:
            await self._await_reply(inflight.popleft(), "deploy_chunk", REQUEST_TIMEOUT_S)

    # -- enrollment ------------------------------------------------------------------------------------

    async def _on_enroll(self, env: Envelope, req: EnrollRequest) -> None:
        try:
            csr = check_csr(req.csr)
        except EnrollmentError as exc:
            await self._result(env, EnrollResult(EnrollStatus.REJECTED, reason=_cut(str(exc))))
            self.link.events.emit("enrollment.refused", f"enrollment refused from {self.peer}: {exc}",
                                  level=EventLevel.WARNING, logger=_LOG, peer=self.peer)
            raise SessionEnd(f"enrollment refused: {exc}") from None
        decision = self._decide(csr, req)
        status, device, reason = decision
        if status is EnrollStatus.PENDING:
            await self._result(env, EnrollResult(EnrollStatus.PENDING, reason=_cut(reason)))
            return
        if status is EnrollStatus.REJECTED:
            await self._result(env, EnrollResult(EnrollStatus.REJECTED, reason=_cut(reason)))
            raise SessionEnd(f"enrollment refused: {reason}")
        assert device is not None
        try:
            cert = self.link.pki.sign_device_csr(csr.der, device.name)
            result = EnrollResult(EnrollStatus.ACCEPTED, device.name, uuid.UUID(device.metadata.uid).bytes, cert,
                                  _cut(reason))
            frame = encode_frame(Envelope(env.message_id, result), self.max_frame)
        except (pki_mod.PKIError, ProtocolError) as exc:
            await self._result(env, EnrollResult(EnrollStatus.REJECTED, reason=_cut(f"cannot issue: {exc}")))
            raise SessionEnd(f"cannot issue certificate: {exc}") from None
        await self.tls.write(frame)
        self.link.events.emit("enrollment.accepted", f"device {device.name} enrolled ({reason}); certificate "
                              f"issued, key {csr.fingerprint}", device=device.name, logger=_LOG,
                              fingerprint=csr.fingerprint)
        raise SessionEnd("enrollment accepted; the device reconnects with its certificate")

    async def _result(self, env: Envelope, result: EnrollResult) -> None:
        await self._send(Envelope(env.message_id, result))

    def _decide(self, csr: CheckedCSR, req: EnrollRequest) -> tuple[EnrollStatus, Device | None, str]:
        """The decision of docs/protocol.md section 6.1 step 3; writes the store synchronously."""
        link = self.link
        fp = csr.fingerprint
        device = find_device_by_fingerprint(link.store, fp, device_name_for(req.board, fp))
        self.device_name = device.name if device is not None else None
        if device is not None and device.phase is DevicePhase.ENROLLED:
            return EnrollStatus.ACCEPTED, device, device.status.reason or "approved"
        if device is not None and device.phase in OPERATIONAL_PHASES:
            return EnrollStatus.ACCEPTED, device, "key already approved; certificate re-issued"
        if device is not None and device.phase is DevicePhase.PENDING:
            why = device.status.reason or "rejected by the operator"
            link.events.emit("enrollment.refused", f"enrollment refused: key {fp} of {device.name} was rejected "
                             f"({why})", level=EventLevel.WARNING, device=device.name, logger=_LOG, fingerprint=fp)
            return EnrollStatus.REJECTED, None, why
        token_problem: str | None = None
        if req.token:
            try:
                token = link.tokens.redeem(req.token, req.board, fp)
            except EnrollmentError as exc:
                token_problem = str(exc)
                link.events.emit("enrollment.token_refused", f"enrollment token refused from {self.peer} (key "
                                 f"{fp}): {exc}", level=EventLevel.WARNING, logger=_LOG, fingerprint=fp)
            else:
                device = self._approve_by_token(device, csr, req, token.spec.labels)
                return EnrollStatus.ACCEPTED, device, "approved by one-time token"
        spec = link.gateway_spec()
        if spec.pairing_mode:
            if device is None:
                device = self._create_enrolling(csr, req)
                link.events.emit("enrollment.pending", f"enrollment pending: new {req.board} device {device.name} "
                                 f"from {self.peer}, key {fp}; waiting for operator approval",
                                 device=device.name, logger=_LOG, fingerprint=fp, board=req.board)
                self._announced_pending = True
            elif not self._announced_pending:
                self._announced_pending = True
                link.events.emit("enrollment.pending", f"enrollment pending: {device.name} asked again from "
                                 f"{self.peer}; waiting for operator approval", device=device.name, logger=_LOG,
                                 fingerprint=fp)
            self.device_name = device.name
            return EnrollStatus.PENDING, device, "waiting for operator approval"
        if device is not None and device.phase is DevicePhase.ENROLLING:
            # Recorded while pairing was on; the operator may still approve it.
            return EnrollStatus.PENDING, device, "waiting for operator approval"
        why = "pairing mode off" if token_problem is None else f"pairing mode off; {token_problem}"
        link.events.emit("enrollment.refused", f"enrollment refused: {why}, key {fp}", level=EventLevel.WARNING,
                         logger=_LOG, peer=self.peer, fingerprint=fp, board=req.board)
        return EnrollStatus.REJECTED, None, why

    def _create_enrolling(self, csr: CheckedCSR, req: EnrollRequest) -> Device:
        store = self.link.store
        name = free_device_name(store, req.board, csr.fingerprint)
        dev = Device(metadata=ObjectMeta(name=name, labels={"wasmbed.github.io/board": _label(req.board)}),
                     spec=DeviceSpec(public_key_fingerprint=csr.fingerprint, public_key=csr.spki_der,
                                     board=req.board))
        dev.set_phase(DevicePhase.ENROLLING, reason=f"enrollment requested from {self.peer}")
        return store.create(dev)

    def _approve_by_token(self, device: Device | None, csr: CheckedCSR, req: EnrollRequest,
                          labels: dict[str, str]) -> Device:
        if device is None:
            device = self._create_enrolling(csr, req)

        def approve(d: Device) -> None:
            d.metadata.labels = {**d.metadata.labels, **labels}
            if d.phase is not DevicePhase.ENROLLED:
                d.set_phase(DevicePhase.ENROLLED, reason="approved by one-time enrollment token")

        res = self.link.mutate_device(device.name, approve)
        if res is None:
            raise SessionEnd("device record vanished during enrollment")
        self.device_name = device.name
        return res[0]

    # -- end -------------------------------------------------------------------------------------------

    def _finish(self, reason: str) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.closed = True
        for _cls, _app, fut in self._pending.values():
            if not fut.done():
                fut.set_exception(AppLinkError(f"session ended: {reason}"))
        self._pending.clear()
        if not self._online:
            return
        self._online = False
        name = self.device_name
        assert name is not None
        if self.link.online.get(name) is not self:
            return  # a newer session owns the device
        del self.link.online[name]
        if self.link.app_handler is not None:
            with contextlib.suppress(Exception):
                self.link.app_handler.session_down(name, self)
        if self._superseded:
            return

        def disconnect(d: Device) -> bool:
            if d.phase in (DevicePhase.CONNECTED, DevicePhase.UNREACHABLE):
                d.set_phase(DevicePhase.DISCONNECTED, reason=reason)
                return True
            return False

        with contextlib.suppress(Exception):  # the store may be closing with the gateway
            self.link.mutate_device(name, disconnect)
        self.link.events.emit("device.disconnected", f"device {name} disconnected: {reason}", device=name,
                              logger=_LOG, reason=reason)


def _label(board: str) -> str:
    """A board name as a label value (63 chars of [A-Za-z0-9_.-], alphanumeric at both ends)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", board)[:63].strip("-_.")


def _cut(text: str, limit: int = REASON_MAX) -> str:
    """At most ``limit`` bytes of UTF-8, cut on a character boundary (the wire limit of reason texts)."""
    return text.encode()[:limit].decode(errors="ignore")


def _ssl_reason(exc: BaseException) -> str:
    """OpenSSL's short reason ("certificate unknown", "wrong version number") or the exception text."""
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).lower().replace("_", " ")
    return str(exc) or type(exc).__name__


def _code_name(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return str(code)


__all__ = ["CHUNK_WINDOW", "AppHandler", "AppLinkError", "DeviceLink", "DeviceSession", "LinkConfig", "SessionEnd",
           "TlsStream"]
