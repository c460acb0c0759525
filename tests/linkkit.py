"""Helpers shared by test_link.py, test_facade.py and test_simulator.py: a gateway on 127.0.0.1:0 with
short timers, simulated devices with fast backoff, and raw TLS sessions for hostile input."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Callable
from pathlib import Path

from wasmbed.gateway.facade import Gateway, GatewayConfig
from wasmbed.gateway.model import Device, DevicePhase
from wasmbed.gateway.protocol import Envelope, Hello, encode_frame
from wasmbed.gateway.simulator import SimConfig, SimDevice, client_context

HB_S = 1  # protocol minimum heartbeat interval
UNREACHABLE_S = 2


def gateway_config(data_dir: Path, *, pairing: bool = True, port: int = 0) -> GatewayConfig:
    return GatewayConfig(data_dir=data_dir, port=port, heartbeat_interval_s=HB_S, unreachable_timeout_s=UNREACHABLE_S,
                         pairing_mode=pairing, hello_timeout_s=1.0)


def sim(gw: Gateway, directory: Path, **kw: object) -> SimDevice:
    cfg = SimConfig(port=gw.port, ca_der=gw.ca_cert_der, backoff_min_s=0.05, backoff_max_s=0.5,
                    rejected_backoff_s=30.0, **kw)  # type: ignore[arg-type]
    return SimDevice(directory, cfg)


async def wait_for(cond: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


def phase(gw: Gateway, name: str | None) -> DevicePhase | None:
    dev = gw.device(name) if name else None
    return dev.phase if dev else None


async def wait_phase(gw: Gateway, name: str | None, want: DevicePhase, timeout: float = 10.0) -> Device:
    await wait_for(lambda: phase(gw, name) is want, timeout, f"{name} to be {want.value} (is {phase(gw, name)})")
    dev = gw.device(name) if name else None
    assert dev is not None
    return dev


HELLO = Envelope(1, Hello(1, "mps2-an385", "test", 1000, 1000, (), 4096))


async def raw_session(gw: Gateway, payload: bytes, *, hello: bool = True, ctx: ssl.SSLContext | None = None,
                      close_after: bool = False, timeout: float = 5.0) -> bytes:
    """TLS session without client certificate: optional hello, then ``payload``; returns all bytes received
    until the gateway closes or ``timeout`` passes (the hello_ack included)."""
    ctx = ctx or client_context(gw.ca_cert_der)
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port, ssl=ctx, server_hostname="localhost")
    received = bytearray()
    try:
        writer.write((encode_frame(HELLO) if hello else b"") + payload)
        await writer.drain()
        if close_after:
            return b""
        async with asyncio.timeout(timeout):
            while chunk := await reader.read(65536):
                received += chunk
    except (ssl.SSLError, ConnectionError, TimeoutError):
        pass  # refused handshake, reset, or a gateway that (correctly) keeps waiting
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    return bytes(received)


def split_frames(data: bytes) -> list[bytes]:
    out = []
    while len(data) >= 4:
        n = int.from_bytes(data[:4], "big")
        out.append(data[: 4 + n])
        data = data[4 + n :]
    return out
