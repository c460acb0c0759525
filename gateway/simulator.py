"""A Python device simulator: protocol v1 over real TLS, as a board's firmware would speak it.

Why it exists: tests and benchmarks need many devices without booting QEMU, and a *second*,
independent implementation of docs/protocol.md keeps the spec honest. Therefore this module does not
import ``wasmbed.gateway.protocol``: it has its own framing, its own envelope/message checks on top of
``cbor2``, written from the spec's tables. If the two implementations disagree, a test fails.

A simulated device behaves like the firmware (docs/protocol.md section 6):

* generates a P-256 key once and keeps it in its identity directory (``key.pem`` 0600), so a restarted
  simulator is the same device;
* without a certificate: enrollment session (no client certificate), ``enroll_request`` with a CSR and
  an optional one-time token; on ``pending`` asks again every heartbeat interval; on ``accepted`` stores
  ``cert.pem`` + ``device.json`` and reconnects with the certificate;
* with a certificate: ``hello`` then a ``heartbeat`` every interval (the negotiated one, or an override
  for benchmarks); ``UNKNOWN_DEVICE`` makes it drop its certificate and enroll again;
* reconnects with exponential backoff (with jitter) whenever the link drops;
* runs deployed WebAssembly apps with wasmtime under the host ABI of docs/abi.md (a second ABI
  implementation next to the firmware's wasm3 one): deploy_begin/chunk/commit, app_start/app_stop,
  app_status, app_log, publish/message. The simulated board's I/O (LEDs, sensor, I2C) is
  ``SimConfig.board_io``; by default it has none, so those calls answer ENOTSUP.

Many devices run in one process (one asyncio task each). CLI::

    python -m wasmbed.gateway.simulator --port P --count N [--token-file F] [--dir D] [--ca CA]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import ssl
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2
import wasmtime
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

# -- an independent codec, from docs/protocol.md --------------------------------------------------------

VERSION = 1
HELLO, HELLO_ACK, ENROLL_REQUEST, ENROLL_RESULT, HEARTBEAT, HEARTBEAT_ACK, ERROR = range(1, 8)
(DEPLOY_BEGIN, DEPLOY_CHUNK, DEPLOY_COMMIT, DEPLOY_RESULT, APP_START, APP_STOP, APP_STATUS, APP_LOG, PUBLISH,
 MESSAGE) = range(16, 26)
# App result codes (spec section 8.1) and states (section 7.5).
APP_OK, TOO_LARGE, NO_MEMORY, BAD_OFFSET, HASH_MISMATCH, LOAD_FAILED, START_FAILED, UNKNOWN_APP, BUSY = range(9)
ST_UNKNOWN, ST_DEPLOYING, ST_STOPPED, ST_RUNNING, ST_FAILED = range(5)
ACCEPTED, PENDING, REJECTED = 0, 1, 2
INITIAL_FRAME = 1024
UNEXPECTED_MESSAGE = 20
UNKNOWN_DEVICE = 33
U32 = 2**32 - 1
U64 = 2**64 - 1


class WireError(Exception):
    """The gateway sent something the spec does not allow (or an error message)."""

    def __init__(self, text: str, code: int = 19) -> None:
        super().__init__(text)
        self.code = code


class GatewayRefused(Exception):
    """The gateway sent an ``error`` frame (``code`` from the spec) and closes."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"gateway error {code}: {text}")
        self.code = code


class EnrollmentRejected(Exception):
    pass


def encode(message_id: int, tag: int, *fields: Any) -> bytes:
    """A complete frame: 4-byte big-endian length + the CBOR envelope."""
    body = cbor2.dumps([VERSION, message_id, [tag, *fields]])
    return len(body).to_bytes(4, "big") + body


class Deframer:
    """Splits a byte stream into frame bodies; refuses a header above the limit before buffering the body."""

    def __init__(self, limit: int = INITIAL_FRAME) -> None:
        self.limit = limit
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out = []
        while len(self._buf) >= 4:
            n = int.from_bytes(self._buf[:4], "big")
            if n > self.limit:
                raise WireError(f"frame of {n} bytes above limit {self.limit}", 1)
            if len(self._buf) < 4 + n:
                break
            out.append(bytes(self._buf[4 : 4 + n]))
            del self._buf[: 4 + n]
        return out


def _is_uint(v: Any, hi: int = U32) -> bool:
    return type(v) is int and 0 <= v <= hi


def _is_text(v: Any, lo: int, hi: int) -> bool:
    return type(v) is str and lo <= len(v.encode()) <= hi


def _is_bytes(v: Any, lo: int, hi: int) -> bool:
    return type(v) is bytes and lo <= len(v) <= hi


def _is_app_id(v: Any) -> bool:
    return _is_uint(v) and v >= 1


# Fields of the gateway -> device messages (spec section 7), as predicates.
_GATEWAY_MESSAGES: dict[int, tuple[str, list[Any]]] = {
    HELLO_ACK: ("hello_ack", [lambda v: _is_uint(v) and v >= 1, lambda v: _is_uint(v) and v >= 1024,
                              lambda v: _is_uint(v, U64), lambda v: _is_uint(v) and 1000 <= v <= 3_600_000]),
    ENROLL_RESULT: ("enroll_result", [lambda v: _is_uint(v) and v <= 2, lambda v: _is_text(v, 0, 63),
                                      lambda v: _is_bytes(v, 0, 16), lambda v: _is_bytes(v, 0, 1024),
                                      lambda v: _is_text(v, 0, 128)]),
    HEARTBEAT_ACK: ("heartbeat_ack", [lambda v: _is_uint(v, U64)]),
    ERROR: ("error", [lambda v: _is_uint(v) and 1 <= v <= 0xFFFF, lambda v: _is_text(v, 0, 128)]),
    DEPLOY_BEGIN: ("deploy_begin", [_is_app_id, lambda v: _is_text(v, 1, 32), lambda v: _is_uint(v) and v >= 1,
                                    lambda v: _is_bytes(v, 32, 32), lambda v: _is_bytes(v, 0, 512),
                                    lambda v: _is_uint(v) and v <= 65536, lambda v: _is_uint(v) and 1 <= v <= 60000,
                                    lambda v: _is_uint(v) and v <= 2]),
    DEPLOY_CHUNK: ("deploy_chunk", [_is_app_id, _is_uint, lambda v: _is_bytes(v, 1, 1536)]),
    DEPLOY_COMMIT: ("deploy_commit", [_is_app_id]),
    APP_START: ("app_start", [_is_app_id]),
    APP_STOP: ("app_stop", [_is_app_id, lambda v: type(v) is bool]),
    MESSAGE: ("message", [_is_app_id, lambda v: _is_text(v, 1, 64), lambda v: _is_bytes(v, 0, 1024)]),
}


def decode(body: bytes) -> tuple[int, int, list[Any]]:
    """(message_id, tag, fields) of a gateway frame, checked against the spec's tables."""
    try:
        item = cbor2.loads(body)
    except Exception as exc:
        raise WireError(f"not CBOR: {exc}", 2) from exc
    if type(item) is not list or len(item) != 3:
        raise WireError("envelope is not a 3-array", 16)
    version, mid, msg = item
    if not _is_uint(version, U64) or not _is_uint(mid):
        raise WireError("bad envelope version/id", 16)
    if version != VERSION:
        raise WireError(f"envelope version {version}", 17)
    if type(msg) is not list or not msg or not _is_uint(msg[0], U64):
        raise WireError("message is not [tag, ...]", 16)
    tag, fields = msg[0], msg[1:]
    if tag not in _GATEWAY_MESSAGES:
        known = 1 <= tag <= 7 or 16 <= tag <= 25
        raise WireError(f"tag {tag} is not a gateway->device message", UNEXPECTED_MESSAGE if known else 18)
    name, checks = _GATEWAY_MESSAGES[tag]
    if len(fields) != len(checks) or not all(check(v) for check, v in zip(checks, fields, strict=True)):
        raise WireError(f"bad {name} fields: {fields!r}"[:200], 19)
    if tag == ENROLL_RESULT:
        status, name_, uuid_, cert, _reason = fields
        if status == ACCEPTED and not (name_ and len(uuid_) == 16 and cert):
            raise WireError("accepted enroll_result without name/uuid/certificate")
        if status != ACCEPTED and (name_ or uuid_ or cert):
            raise WireError("non-accepted enroll_result with name/uuid/certificate")
    return mid, tag, fields


# -- identity ---------------------------------------------------------------------------------------------


def _write_private(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


class Identity:
    """Key, certificate and assigned name/UUID of one simulated device, persisted in a directory."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        key_path = self.dir / "key.pem"
        if key_path.exists():
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            assert isinstance(key, ec.EllipticCurvePrivateKey)
            self.key = key
        else:
            self.key = ec.generate_private_key(ec.SECP256R1())
            _write_private(key_path, self.key.private_bytes(serialization.Encoding.PEM,
                                                             serialization.PrivateFormat.PKCS8,
                                                             serialization.NoEncryption()), 0o600)

    @property
    def key_path(self) -> Path:
        return self.dir / "key.pem"

    @property
    def cert_path(self) -> Path:
        return self.dir / "cert.pem"

    @property
    def has_certificate(self) -> bool:
        return self.cert_path.exists()

    @property
    def info(self) -> dict[str, str]:
        p = self.dir / "device.json"
        return json.loads(p.read_text()) if p.exists() else {}

    def csr_der(self, board: str) -> bytes:
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{board}-simulator")]))
               .sign(self.key, hashes.SHA256()))
        return csr.public_bytes(serialization.Encoding.DER)

    def store_enrollment(self, name: str, device_uuid: bytes, cert_der: bytes) -> None:
        pem = x509.load_der_x509_certificate(cert_der).public_bytes(serialization.Encoding.PEM)
        _write_private(self.cert_path, pem, 0o644)
        _write_private(self.dir / "device.json", json.dumps({"name": name, "uuid": device_uuid.hex()}).encode(),
                       0o644)

    def forget_certificate(self) -> None:
        for p in (self.cert_path, self.dir / "device.json"):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()


def client_context(ca_der: bytes, identity: Identity | None = None) -> ssl.SSLContext:
    """TLS client context: trusts only the installation CA; presents the device certificate if given."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(cadata=ca_der)
    if identity is not None:
        ctx.load_cert_chain(identity.cert_path, identity.key_path)
    return ctx


# -- the device -----------------------------------------------------------------------------------------


# -- app runtime (docs/abi.md), independent of the gateway's validate.py ---------------------------------

EINVAL, ENOTSUP, ENOENT, EIO, ENOSPC, EBUSY = -1, -2, -3, -4, -5, -6
MAX_TIMERS = 8
MIN_PERIOD_MS = 10
LOG_MAX = 256
MSG_BUFFER = 1088
TICK_S = 0.005  # epoch tick: the time budget's resolution


@dataclass
class SimBoardIO:
    """The simulated board's hardware as apps see it; the default board has none (ENOTSUP)."""

    leds: int = 0
    i2c_buses: int = 0  # buses exist but no device answers (EIO)
    temperature_mdeg: int | None = None  # None: no sensor
    led_state: list[bool] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.led_state = [False] * self.leds

    @classmethod
    def from_dts(cls, board: str, temperature_mdeg: int = 25_000) -> SimBoardIO:
        """What a real board of this type offers apps (docs/abi.md section 3.2), from its device tree."""
        from wasmbed.dts import load_board

        b = load_board(board)
        return cls(leds=len(b.leds), i2c_buses=len(b.app_i2c_buses),
                   temperature_mdeg=temperature_mdeg if b.temperature_sensor is not None else None)


_ENGINE: wasmtime.Engine | None = None
_ENGINE_LOCK = threading.Lock()


def _engine() -> wasmtime.Engine:
    """One engine with epoch interruption, ticked by a daemon thread every TICK_S."""
    global _ENGINE
    with _ENGINE_LOCK:
        if _ENGINE is None:
            cfg = wasmtime.Config()
            cfg.epoch_interruption = True
            cfg.wasm_relaxed_simd = False  # wasmtime refuses SIMD off with relaxed SIMD on (and aborts)
            cfg.wasm_simd = False
            cfg.wasm_threads = False
            engine = wasmtime.Engine(cfg)

            def tick() -> None:
                while True:
                    time.sleep(TICK_S)
                    engine.increment_epoch()

            threading.Thread(target=tick, name="wasm-epoch", daemon=True).start()
            _ENGINE = engine
        return _ENGINE


def _trap_text(exc: Exception) -> str:
    """The trap's own message ("out of bounds memory access"), without the backtrace."""
    if isinstance(exc, wasmtime.Trap) and exc.trap_code == wasmtime.TrapCode.INTERRUPT:
        return "time budget exceeded"
    for line in reversed(str(exc).splitlines()):
        if "wasm trap:" in line:
            return line.split("wasm trap:", 1)[1].strip()
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__


@dataclass
class SimApp:
    app_id: int
    name: str
    size: int
    sha256: bytes
    config: bytes
    mem_pages: int
    budget_ms: int
    restart: int
    state: int = ST_DEPLOYING
    data: bytearray = field(default_factory=bytearray)
    error: str = ""
    restarts: int = 0
    calls: int = 0
    traps: int = 0
    max_call_ms: int = 0
    started: bool = False
    settings: dict[str, str] = field(default_factory=dict)
    module: Any = None
    store: Any = None
    exports: dict[str, Any] = field(default_factory=dict)
    memory: Any = None
    timers: dict[int, asyncio.TimerHandle] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    generation: int = 0  # bumped at each start/stop: stale timer callbacks do nothing


class AppRuntime:
    """The apps of one simulated device: protocol handling (section 6.3) and the host ABI."""

    def __init__(self, device: SimDevice) -> None:
        self.device = device
        self.apps: dict[int, SimApp] = {}
        self.max_apps = 8
        self.published: list[tuple[int, str, bytes]] = []  # for tests
        self.messages: list[tuple[int, str, bytes]] = []
        self.logs: list[tuple[int, int, str]] = []

    @property
    def io(self) -> SimBoardIO:
        return self.device.config.board_io

    def heartbeat_apps(self) -> list[list[int]]:
        return [[a.app_id, a.state] for a in self.apps.values()]

    def status_fields(self, app: SimApp | None, app_id: int) -> list[Any]:
        if app is None:
            return [app_id, ST_UNKNOWN, "unknown app", 0, [0, 0, 0, 0]]
        pages = 0
        if app.memory is not None and app.store is not None:
            with contextlib.suppress(Exception):
                pages = app.memory.size(app.store)
        return [app.app_id, app.state, app.error.encode()[:128].decode(errors="ignore"), app.restarts,
                [app.calls & U32, app.traps & U32, pages, min(app.max_call_ms, U32)]]

    def session_ended(self) -> None:
        """Partial transfers are discarded when the session ends (spec section 6.3, step 5)."""
        for app_id in [a.app_id for a in self.apps.values() if a.state == ST_DEPLOYING]:
            del self.apps[app_id]

    # -- requests -----------------------------------------------------------------------------------

    async def handle(self, mid: int, tag: int, f: list[Any]) -> bytes | None:
        """Reply frame for one gateway app message (None for ``message``)."""
        if tag == DEPLOY_BEGIN:
            return encode(mid, DEPLOY_RESULT, *self._begin(*f))
        if tag == DEPLOY_CHUNK:
            return encode(mid, DEPLOY_RESULT, *self._chunk(*f))
        if tag == DEPLOY_COMMIT:
            return encode(mid, DEPLOY_RESULT, *await self._commit(f[0]))
        if tag == APP_START:
            app = self.apps.get(f[0])
            if app is not None and app.state in (ST_STOPPED, ST_FAILED) and app.module is not None:
                if app.started:
                    app.restarts += 1
                await self._start(app)
            return encode(mid, APP_STATUS, *self.status_fields(app, f[0]))
        if tag == APP_STOP:
            app = self.apps.get(f[0])
            if app is not None:
                await self._stop(app)
                if f[1]:  # the reply reports the last state; the id is unknown from now on
                    del self.apps[app.app_id]
            return encode(mid, APP_STATUS, *self.status_fields(app, f[0]))
        if tag == MESSAGE:
            app = self.apps.get(f[0])
            self.messages.append((f[0], f[1], f[2]))
            if app is not None and app.state == ST_RUNNING:
                task = asyncio.create_task(self._deliver(app, f[1], f[2]))
                self.device._bg.add(task)
                task.add_done_callback(self.device._bg.discard)
            return None
        raise WireError(f"tag {tag} is not an app request", UNEXPECTED_MESSAGE)

    def _begin(self, app_id: int, name: str, size: int, sha: bytes, config: bytes, pages: int, budget: int,
               restart: int) -> list[Any]:
        if size > self.device.config.max_app_size:
            return [app_id, TOO_LARGE, 0, f"{size} bytes > max_app_size {self.device.config.max_app_size}"]
        if any(a.state == ST_DEPLOYING and a.app_id != app_id for a in self.apps.values()):
            return [app_id, BUSY, 0, "another transfer is in progress"]
        old = self.apps.pop(app_id, None)
        if old is not None:
            self._cancel_timers(old)
            old.generation += 1
        if len(self.apps) >= self.max_apps:
            return [app_id, BUSY, 0, f"{self.max_apps} apps already"]
        self.apps[app_id] = SimApp(app_id, name, size, sha, config, pages, budget, restart)
        return [app_id, APP_OK, 0, ""]

    def _chunk(self, app_id: int, offset: int, data: bytes) -> list[Any]:
        app = self.apps.get(app_id)
        if app is None or app.state != ST_DEPLOYING:
            return [app_id, UNKNOWN_APP, 0, "no transfer in progress"]
        if offset != len(app.data) or offset + len(data) > app.size:
            return [app_id, BAD_OFFSET, len(app.data), f"expected offset {len(app.data)}"]
        app.data += data
        return [app_id, APP_OK, len(app.data), ""]

    async def _commit(self, app_id: int) -> list[Any]:
        app = self.apps.get(app_id)
        if app is None or app.state != ST_DEPLOYING:
            return [app_id, UNKNOWN_APP, 0, "no transfer in progress"]
        held = len(app.data)
        if held != app.size:
            return [app_id, BAD_OFFSET, held, f"{held} of {app.size} bytes"]
        if hashlib.sha256(app.data).digest() != app.sha256:
            del self.apps[app_id]
            return [app_id, HASH_MISMATCH, held, "sha256 mismatch"]
        app.state = ST_FAILED  # until it runs
        try:
            settings = cbor2.loads(app.config) if app.config else {}
            if not isinstance(settings, dict) or not all(type(k) is str and type(v) is str
                                                         for k, v in settings.items()):
                raise ValueError("config is not a map text -> text")
            app.settings = settings
            app.module = wasmtime.Module(_engine(), bytes(app.data))
        except (ValueError, cbor2.CBORDecodeError, wasmtime.WasmtimeError) as exc:
            app.error = _trap_text(exc)[:128]
            return [app_id, LOAD_FAILED, held, app.error]
        app.data = bytearray()  # the module is compiled: the transfer buffer goes
        await self._start(app, report=False)
        if app.state != ST_RUNNING:
            return [app_id, START_FAILED if app.module is not None else LOAD_FAILED, held, app.error[:128]]
        self._send_status(app)
        return [app_id, APP_OK, held, ""]

    # -- running apps ---------------------------------------------------------------------------------

    async def _start(self, app: SimApp, *, report: bool = False) -> None:
        """Fresh instance, then app_start(); the app ends running or failed (never raises)."""
        self._cancel_timers(app)
        app.generation += 1
        app.error = ""
        try:
            self._instantiate(app)
        except wasmtime.WasmtimeError as exc:
            app.state, app.error = ST_FAILED, _trap_text(exc)
            return
        app.state = ST_RUNNING
        app.started = True
        result = await self._call(app, "app_start", report=report)
        if app.state == ST_RUNNING and result != 0:
            self._fail(app, f"app_start returned {result}", report=report)

    async def _stop(self, app: SimApp) -> None:
        if app.state == ST_RUNNING and "app_stop" in app.exports:
            await self._call(app, "app_stop", report=False)
        self._cancel_timers(app)
        app.generation += 1
        if app.state == ST_RUNNING:
            app.state = ST_STOPPED
        app.store = app.memory = None
        app.exports = {}

    def _fail(self, app: SimApp, error: str, *, report: bool = True) -> None:
        self._cancel_timers(app)
        app.generation += 1
        app.state, app.error = ST_FAILED, error
        if report:
            self._send_status(app)

    def _send_status(self, app: SimApp) -> None:
        self.device.emit_message(APP_STATUS, *self.status_fields(app, app.app_id))

    async def _call(self, app: SimApp, export: str, *args: int, report: bool = True,
                    before: Callable[[], tuple[int, ...]] | None = None) -> Any:
        """Run one handler in a worker thread under the time budget; a trap or overrun fails the app."""
        async with app.lock:
            if app.state != ST_RUNNING or app.store is None:
                return None
            store, generation = app.store, app.generation
            deadline = max(1, round(app.budget_ms / 1000 / TICK_S))

            def run() -> Any:
                store.set_epoch_deadline(deadline)
                call_args = args
                if before is not None:
                    call_args = before()
                return app.exports[export](store, *call_args)

            t0 = time.monotonic()
            failure: Exception | None = None
            try:
                result = await asyncio.to_thread(run)
            except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
                result, failure = None, exc
            finally:  # metrics first, so the failure report carries them
                app.calls += 1
                app.max_call_ms = max(app.max_call_ms, int((time.monotonic() - t0) * 1000))
            if failure is not None and app.generation == generation:
                app.traps += 1
                self._fail(app, _trap_text(failure), report=report)
            return result

    def _instantiate(self, app: SimApp) -> None:
        store = wasmtime.Store(_engine())
        store.set_limits(memory_size=app.mem_pages * 65536)
        linker = wasmtime.Linker(_engine())
        self._define_imports(linker, app)
        instance = linker.instantiate(store, app.module)
        exports = instance.exports(store)
        app.store = store
        app.exports = {e.name: exports[e.name] for e in app.module.exports}
        mem = app.exports.get("memory")
        app.memory = mem if isinstance(mem, wasmtime.Memory) else None

    async def _deliver(self, app: SimApp, topic: str, payload: bytes) -> None:
        if "on_message" not in app.exports or "msg_buffer" not in app.exports or app.memory is None:
            return
        raw = topic.encode()

        def place() -> tuple[int, ...]:
            ptr = app.exports["msg_buffer"](app.store)
            if not isinstance(ptr, int) or ptr < 0 or ptr + MSG_BUFFER > app.memory.data_len(app.store):
                raise wasmtime.WasmtimeError("msg_buffer() is outside memory")
            app.memory.write(app.store, raw, ptr)
            app.memory.write(app.store, payload, ptr + 64)
            return (ptr, len(raw), ptr + 64, len(payload))

        await self._call(app, "on_message", before=place)

    def _cancel_timers(self, app: SimApp) -> None:
        for h in app.timers.values():
            h.cancel()
        app.timers.clear()

    def _arm(self, app: SimApp, generation: int, timer_id: int, period_ms: int, repeat: bool) -> None:
        """Runs in the loop thread (call_soon_threadsafe from a host call)."""
        if app.generation != generation or app.state != ST_RUNNING:
            return
        loop = asyncio.get_running_loop()

        def fire() -> None:
            if app.generation != generation or app.state != ST_RUNNING:
                return
            if repeat:
                app.timers[timer_id] = loop.call_later(period_ms / 1000, fire)
            else:
                app.timers.pop(timer_id, None)
            task = asyncio.create_task(self._call(app, "on_timer", timer_id))
            self.device._bg.add(task)
            task.add_done_callback(self.device._bg.discard)

        old = app.timers.pop(timer_id, None)
        if old is not None:
            old.cancel()
        app.timers[timer_id] = loop.call_later(period_ms / 1000, fire)

    def _define_imports(self, linker: wasmtime.Linker, app: SimApp) -> None:
        loop = asyncio.get_running_loop()
        generation = app.generation  # the instance being created belongs to this generation
        dev = self.device
        io = self.io
        i32, i64 = wasmtime.ValType.i32(), wasmtime.ValType.i64()
        timer_ids: set[int] = set()  # ids set through this instance (the count limit)
        lock = threading.Lock()

        def mem(caller: wasmtime.Caller) -> wasmtime.Memory | None:
            m = caller.get("memory")
            return m if isinstance(m, wasmtime.Memory) else None

        def read(caller: wasmtime.Caller, ptr: int, n: int) -> bytes | None:
            m = mem(caller)
            if m is None or ptr < 0 or n < 0 or ptr + n > m.data_len(caller):
                return None
            return bytes(m.read(caller, ptr, ptr + n))

        def write(caller: wasmtime.Caller, ptr: int, data: bytes) -> bool:
            m = mem(caller)
            if m is None or ptr < 0 or ptr + len(data) > m.data_len(caller):
                return False
            m.write(caller, data, ptr)
            return True

        def log(caller: wasmtime.Caller, level: int, ptr: int, n: int) -> None:
            raw = read(caller, ptr, max(0, min(n, LOG_MAX)))
            if raw is None:
                return
            text = raw.decode("utf-8", errors="replace").replace("\ufffd", "?")
            text = text.encode()[:LOG_MAX].decode(errors="ignore")
            level = level if 0 <= level <= 3 else 3
            self.logs.append((app.app_id, level, text))
            loop.call_soon_threadsafe(dev.emit_message, APP_LOG, app.app_id, level, dev.uptime_ms(), text)

        def uptime_ms() -> int:
            return dev.uptime_ms()

        def timer_set(timer_id: int, period: int, repeat: int) -> int:
            if period < MIN_PERIOD_MS or "on_timer" not in app.exports:
                return EINVAL
            with lock:
                live = {t for t in timer_ids if t in app.timers} | {timer_id}
                if len(live) > MAX_TIMERS:
                    return ENOSPC
                timer_ids.clear()
                timer_ids.update(live)
            loop.call_soon_threadsafe(self._arm, app, generation, timer_id, period, bool(repeat))
            return 0

        def timer_cancel(timer_id: int) -> int:
            if timer_id not in app.timers:
                return ENOENT
            handle = app.timers.get(timer_id)
            if handle is not None:
                loop.call_soon_threadsafe(handle.cancel)
                loop.call_soon_threadsafe(app.timers.pop, timer_id, None)
            return 0

        def led_count() -> int:
            return io.leds

        def led_set(index: int, on: int) -> int:
            if io.leds == 0:
                return ENOTSUP
            if not 0 <= index < io.leds:
                return EINVAL
            io.led_state[index] = bool(on)
            return 0

        def led_get(index: int) -> int:
            if io.leds == 0:
                return ENOTSUP
            if not 0 <= index < io.leds:
                return EINVAL
            return int(io.led_state[index])

        def i2c_transfer(caller: wasmtime.Caller, bus: int, addr: int, wptr: int, wlen: int, rptr: int,
                         rlen: int) -> int:
            if io.i2c_buses == 0:
                return ENOTSUP
            if not 0 <= bus < io.i2c_buses or not 0 <= addr <= 127 or not 0 <= wlen <= 256 or not 0 <= rlen <= 256:
                return EINVAL
            if wlen + rlen == 0 or read(caller, wptr, wlen) is None or read(caller, rptr, rlen) is None:
                return EINVAL
            return EIO  # no simulated I2C device answers

        def temperature_mdeg(caller: wasmtime.Caller, out: int) -> int:
            if io.temperature_mdeg is None:
                return ENOTSUP
            return 0 if write(caller, out, int(io.temperature_mdeg).to_bytes(4, "little", signed=True)) else EINVAL

        def random_fill(caller: wasmtime.Caller, ptr: int, n: int) -> int:
            if not 0 <= n <= 256:
                return EINVAL
            return 0 if write(caller, ptr, os.urandom(n)) else EINVAL

        def publish(caller: wasmtime.Caller, tptr: int, tlen: int, dptr: int, dlen: int) -> int:
            if not 1 <= tlen <= 64 or not 0 <= dlen <= 1024:
                return EINVAL
            topic, data = read(caller, tptr, tlen), read(caller, dptr, dlen)
            if topic is None or data is None:
                return EINVAL
            try:
                text = topic.decode("utf-8")
            except UnicodeDecodeError:
                return EINVAL
            if not dev.online:
                return EBUSY
            self.published.append((app.app_id, text, data))
            loop.call_soon_threadsafe(dev.emit_message, PUBLISH, app.app_id, text, data)
            return 0

        def config_get(caller: wasmtime.Caller, kptr: int, klen: int, optr: int, ocap: int) -> int:
            key = read(caller, kptr, klen)
            if key is None or ocap < 0:
                return EINVAL
            value = app.settings.get(key.decode("utf-8", errors="replace"))
            if value is None:
                return ENOENT
            raw = value.encode()
            if len(raw) > ocap:
                return ENOSPC
            return len(raw) if write(caller, optr, raw) else EINVAL

        def define(name: str, params: list[wasmtime.ValType], results: list[wasmtime.ValType], fn: Any,
                   caller: bool = False) -> None:
            linker.define_func("wasmbed", name, wasmtime.FuncType(params, results), fn, access_caller=caller)

        define("log", [i32, i32, i32], [], log, True)
        define("uptime_ms", [], [i64], uptime_ms)
        define("timer_set", [i32, i32, i32], [i32], timer_set)
        define("timer_cancel", [i32], [i32], timer_cancel)
        define("led_count", [], [i32], led_count)
        define("led_set", [i32, i32], [i32], led_set)
        define("led_get", [i32], [i32], led_get)
        define("i2c_transfer", [i32] * 6, [i32], i2c_transfer, True)
        define("temperature_mdeg", [i32], [i32], temperature_mdeg, True)
        define("random_fill", [i32, i32], [i32], random_fill, True)
        define("publish", [i32] * 4, [i32], publish, True)
        define("config_get", [i32] * 4, [i32], config_get, True)


@dataclass
class SimConfig:
    port: int
    ca_der: bytes
    host: str = "127.0.0.1"
    server_hostname: str = "localhost"
    board: str = "mps2-an385"
    firmware_version: str = "sim-0.1"
    token: bytes = b""
    heartbeat_interval_ms: int | None = None  # override the negotiated interval (benchmarks)
    max_frame_size: int = 4096
    ram_free: int = 4_000_000
    max_app_size: int = 262_144
    features: tuple[str, ...] = ("wasm-mvp",)
    backoff_min_s: float = 0.2
    backoff_max_s: float = 5.0
    rejected_backoff_s: float = 60.0
    io_timeout_s: float = 10.0
    apps: list[tuple[int, int]] = field(default_factory=list)  # extra (app_id, state) reported in heartbeats
    board_io: SimBoardIO = field(default_factory=SimBoardIO)


class SimDevice:
    """One simulated board. ``run()`` until ``stop()``; counters and events for tests and benchmarks."""

    def __init__(self, identity_dir: Path, config: SimConfig) -> None:
        self.identity = Identity(identity_dir)
        self.config = config
        self.state = "idle"
        self.connected = asyncio.Event()
        self.silent = False  # stop heartbeating but keep the session (tests reachability)
        self.heartbeats_sent = 0
        self.acks_received = 0
        self.sessions = 0
        self.enroll_results: list[tuple[int, str]] = []  # (status, reason)
        self.last_error: str | None = None
        self.interval_s = 5.0
        self._next_id = 0
        self._hello_ok = False
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._started = time.monotonic()
        self._writer: asyncio.StreamWriter | None = None
        self._bg: set[asyncio.Task[Any]] = set()
        self.runtime = AppRuntime(self)
        self.drop_after_chunks: int | None = None  # tests: close the link after receiving this many chunks
        self.chunks_received = 0

    @property
    def online(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    def uptime_ms(self) -> int:
        return int((time.monotonic() - self._started) * 1000)

    def emit_message(self, tag: int, *fields: Any) -> None:
        """Send a device-initiated message (own id counter) if a session is up; dropped while offline.

        Loop thread only: host calls running in worker threads get here through call_soon_threadsafe.
        """
        if self.online:
            assert self._writer is not None
            self._writer.write(encode(self._id(), tag, *fields))

    @property
    def name(self) -> str | None:
        return self.identity.info.get("name")

    def _id(self) -> int:
        self._next_id = self._next_id % U32 + 1
        return self._next_id

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.create_task(self.run(), name=f"sim {self.identity.dir.name}")
        return self._task

    async def stop(self) -> None:
        self._stopping = True
        for app in self.runtime.apps.values():
            self.runtime._cancel_timers(app)
            app.generation += 1
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.state = "stopped"
        self.connected.clear()

    async def run(self) -> None:
        backoff = self.config.backoff_min_s
        while not self._stopping:
            self._hello_ok = False
            try:
                if self.identity.has_certificate:
                    await self._operational()
                else:
                    await self._enroll()
                    continue  # reconnect at once with the new certificate
            except EnrollmentRejected as exc:
                self.state, self.last_error = "rejected", str(exc)
                await asyncio.sleep(self.config.rejected_backoff_s)
                continue
            except GatewayRefused as exc:
                self.last_error = str(exc)
                if exc.code == UNKNOWN_DEVICE:  # revoked or never known: enroll again (spec section 8)
                    self.identity.forget_certificate()
            except (OSError, ssl.SSLError, WireError, EOFError, TimeoutError, asyncio.IncompleteReadError) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
            self.connected.clear()
            if self._hello_ok:  # the link worked: start the backoff over
                backoff = self.config.backoff_min_s
            self.state = "backoff"
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, self.config.backoff_max_s)

    # -- sessions ---------------------------------------------------------------------------------

    async def _open(self, with_cert: bool) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        ctx = client_context(self.config.ca_der, self.identity if with_cert else None)
        async with asyncio.timeout(self.config.io_timeout_s):
            return await asyncio.open_connection(self.config.host, self.config.port, ssl=ctx,
                                                 server_hostname=self.config.server_hostname)

    async def _recv(self, reader: asyncio.StreamReader, deframer: Deframer, pending: list[bytes],
                    timeout: float | None) -> tuple[int, int, list[Any]] | None:
        """Next gateway message, or None on timeout. Raises on EOF, bad frames and error messages."""
        while not pending:
            try:
                async with asyncio.timeout(timeout):
                    data = await reader.read(65536)
            except TimeoutError:
                return None
            if not data:
                raise EOFError("gateway closed the connection")
            pending.extend(deframer.feed(data))
        mid, tag, fields = decode(pending.pop(0))
        if tag == ERROR:
            raise GatewayRefused(fields[0], fields[1])
        return mid, tag, fields

    async def _hello(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, deframer: Deframer,
                     pending: list[bytes]) -> None:
        c = self.config
        mid = self._id()
        writer.write(encode(mid, HELLO, VERSION, c.board, c.firmware_version, c.ram_free, c.max_app_size,
                            list(c.features), c.max_frame_size))
        await writer.drain()
        msg = await self._recv(reader, deframer, pending, c.io_timeout_s)
        if msg is None:
            raise TimeoutError("no hello_ack")
        rid, tag, fields = msg
        if tag != HELLO_ACK or rid != mid:
            raise WireError(f"expected hello_ack for id {mid}, got tag {tag} id {rid}")
        version, agreed, _now, interval_ms = fields
        if agreed > c.max_frame_size:
            raise WireError(f"agreed frame size {agreed} above announced {c.max_frame_size}")
        if version != VERSION:
            raise WireError(f"unsupported session version {version}", 17)
        deframer.limit = agreed
        self.interval_s = (c.heartbeat_interval_ms or interval_ms) / 1000
        self._hello_ok = True
        self.sessions += 1

    async def _enroll(self) -> None:
        self.state = "enrolling"
        reader, writer = await self._open(with_cert=False)
        try:
            deframer, pending = Deframer(), list[bytes]()
            await self._hello(reader, writer, deframer, pending)
            csr = self.identity.csr_der(self.config.board)
            while True:
                mid = self._id()
                writer.write(encode(mid, ENROLL_REQUEST, csr, self.config.board, self.config.token))
                await writer.drain()
                msg = await self._recv(reader, deframer, pending, self.config.io_timeout_s)
                if msg is None:
                    raise TimeoutError("no enroll_result")
                rid, tag, fields = msg
                if tag != ENROLL_RESULT or rid != mid:
                    raise WireError(f"expected enroll_result for id {mid}, got tag {tag} id {rid}")
                status, name, device_uuid, cert, reason = fields
                self.enroll_results.append((status, reason))
                if status == ACCEPTED:
                    self.identity.store_enrollment(name, device_uuid, cert)
                    self.state = "enrolled"
                    return
                if status == REJECTED:
                    raise EnrollmentRejected(reason or "rejected")
                self.state = "pending"
                await asyncio.sleep(self.interval_s)
        finally:
            await _close(writer)

    async def _operational(self) -> None:
        self.state = "connecting"
        reader, writer = await self._open(with_cert=True)
        try:
            deframer, pending = Deframer(), list[bytes]()
            await self._hello(reader, writer, deframer, pending)
            self.state = "connected"
            self._writer = writer
            self.connected.set()
            loop = asyncio.get_running_loop()
            next_beat = loop.time()
            outstanding: set[int] = set()
            while True:
                now = loop.time()
                if not self.silent and now >= next_beat:
                    mid = self._id()
                    writer.write(encode(mid, HEARTBEAT, self.uptime_ms(), self.config.ram_free - 1000,
                                        [list(a) for a in self.config.apps] + self.runtime.heartbeat_apps()))
                    await writer.drain()
                    self.heartbeats_sent += 1
                    outstanding.add(mid)
                    next_beat = max(next_beat + self.interval_s, now)
                wait = max(next_beat - loop.time(), 0.0) if not self.silent else 0.2
                msg = await self._recv(reader, deframer, pending, wait)
                if msg is None:
                    continue
                rid, tag, fields = msg
                if DEPLOY_BEGIN <= tag <= MESSAGE:
                    if tag == DEPLOY_CHUNK:
                        self.chunks_received += 1
                        if self.drop_after_chunks is not None and self.chunks_received >= self.drop_after_chunks:
                            self.drop_after_chunks = None
                            raise EOFError("test: link dropped mid-transfer")
                    reply = await self.runtime.handle(rid, tag, fields)
                    if reply is not None:
                        writer.write(reply)
                        await writer.drain()
                    continue
                if tag != HEARTBEAT_ACK or rid not in outstanding:
                    raise WireError(f"unexpected tag {tag} id {rid} in operational session", UNEXPECTED_MESSAGE)
                outstanding.discard(rid)
                self.acks_received += 1
        finally:
            self._writer = None
            self.runtime.session_ended()
            self.connected.clear()
            await _close(writer)


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(Exception):
        async with asyncio.timeout(1):
            await writer.wait_closed()


# -- fleets and the CLI ---------------------------------------------------------------------------------


def make_fleet(base_dir: Path, count: int, config: SimConfig, tokens: Sequence[bytes] = ()) -> list[SimDevice]:
    """``count`` devices in ``base_dir/dev-NNNN`` (identities persist); device i gets ``tokens[i]`` if any."""
    fleet = []
    for i in range(count):
        cfg = SimConfig(**{**config.__dict__, "token": tokens[i] if i < len(tokens) else config.token})
        fleet.append(SimDevice(Path(base_dir) / f"dev-{i:04d}", cfg))
    return fleet


def read_tokens(path: Path) -> list[bytes]:
    """One hex token per line (blank lines and # comments ignored)."""
    out = []
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(bytes.fromhex(line))
    return out


async def _main(args: argparse.Namespace) -> int:
    from wasmbed import paths

    ca_path = Path(args.ca) if args.ca else paths.data_dir() / "pki" / "ca.crt"
    ca_der = x509.load_pem_x509_certificate(ca_path.read_bytes()).public_bytes(serialization.Encoding.DER)
    base = Path(args.dir) if args.dir else paths.data_dir() / "simulator"
    tokens = read_tokens(Path(args.token_file)) if args.token_file else []
    cfg = SimConfig(port=args.port, ca_der=ca_der, host=args.host, board=args.board,
                    heartbeat_interval_ms=args.interval_ms,
                    board_io=SimBoardIO.from_dts(args.board) if args.board_io == "dts" else SimBoardIO())
    fleet = make_fleet(base, args.count, cfg, tokens)
    for dev in fleet:
        dev.start()
    t0 = time.monotonic()
    last = 0
    try:
        while args.duration <= 0 or time.monotonic() - t0 < args.duration:
            await asyncio.sleep(args.report_s)
            acks = sum(d.acks_received for d in fleet)
            states: dict[str, int] = {}
            for d in fleet:
                states[d.state] = states.get(d.state, 0) + 1
            print(f"{time.monotonic() - t0:7.1f}s  {acks - last:6d} acks in {args.report_s:.0f}s  "
                  + "  ".join(f"{k}={v}" for k, v in sorted(states.items())), flush=True)
            last = acks
    finally:
        await asyncio.gather(*(d.stop() for d in fleet))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m wasmbed.gateway.simulator", description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True, help="the gateway's device port")
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--token-file", help="one hex enrollment token per line; device i uses line i")
    p.add_argument("--dir", help="identity directories (default: <data dir>/simulator)")
    p.add_argument("--ca", help="installation CA certificate, PEM (default: <data dir>/pki/ca.crt)")
    p.add_argument("--board", default="mps2-an385")
    p.add_argument("--board-io", choices=("none", "dts"), default="none",
                   help="hardware apps see: none (ENOTSUP), or the board's LEDs/I2C/sensor from its device tree")
    p.add_argument("--interval-ms", type=int, default=None, help="override the negotiated heartbeat interval")
    p.add_argument("--duration", type=float, default=0, help="seconds to run (0: until interrupted)")
    p.add_argument("--report-s", type=float, default=5.0)
    args = p.parse_args(argv)
    try:
        return asyncio.run(_main(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
