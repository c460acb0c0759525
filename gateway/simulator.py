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
* reconnects with exponential backoff (with jitter) whenever the link drops.

Many devices run in one process (one asyncio task each). CLI::

    python -m wasmbed.gateway.simulator --port P --count N [--token-file F] [--dir D] [--ca CA]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import ssl
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

# -- an independent codec, from docs/protocol.md --------------------------------------------------------

VERSION = 1
HELLO, HELLO_ACK, ENROLL_REQUEST, ENROLL_RESULT, HEARTBEAT, HEARTBEAT_ACK, ERROR = range(1, 8)
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


# Fields of the gateway -> device messages (spec section 7), as predicates.
_GATEWAY_MESSAGES: dict[int, tuple[str, list[Any]]] = {
    HELLO_ACK: ("hello_ack", [lambda v: _is_uint(v) and v >= 1, lambda v: _is_uint(v) and v >= 1024,
                              lambda v: _is_uint(v, U64), lambda v: _is_uint(v) and 1000 <= v <= 3_600_000]),
    ENROLL_RESULT: ("enroll_result", [lambda v: _is_uint(v) and v <= 2, lambda v: _is_text(v, 0, 63),
                                      lambda v: _is_bytes(v, 0, 16), lambda v: _is_bytes(v, 0, 1024),
                                      lambda v: _is_text(v, 0, 128)]),
    HEARTBEAT_ACK: ("heartbeat_ack", [lambda v: _is_uint(v, U64)]),
    ERROR: ("error", [lambda v: _is_uint(v) and 1 <= v <= 0xFFFF, lambda v: _is_text(v, 0, 128)]),
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
        raise WireError(f"tag {tag} is not a gateway->device message", UNEXPECTED_MESSAGE if 1 <= tag <= 7 else 18)
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
    apps: list[tuple[int, int]] = field(default_factory=list)  # (app_id, state) reported in heartbeats


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
            self.connected.set()
            loop = asyncio.get_running_loop()
            next_beat = loop.time()
            outstanding: set[int] = set()
            while True:
                now = loop.time()
                if not self.silent and now >= next_beat:
                    mid = self._id()
                    uptime = int((time.monotonic() - self._started) * 1000)
                    writer.write(encode(mid, HEARTBEAT, uptime, self.config.ram_free - 1000,
                                        [list(a) for a in self.config.apps]))
                    await writer.drain()
                    self.heartbeats_sent += 1
                    outstanding.add(mid)
                    next_beat = max(next_beat + self.interval_s, now)
                wait = max(next_beat - loop.time(), 0.0) if not self.silent else 0.2
                msg = await self._recv(reader, deframer, pending, wait)
                if msg is None:
                    continue
                rid, tag, _fields = msg
                if tag != HEARTBEAT_ACK or rid not in outstanding:
                    raise WireError(f"unexpected tag {tag} id {rid} in operational session", UNEXPECTED_MESSAGE)
                outstanding.discard(rid)
                self.acks_received += 1
        finally:
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
                    heartbeat_interval_ms=args.interval_ms)
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
