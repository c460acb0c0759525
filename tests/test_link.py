"""The device link over real TLS on 127.0.0.1: enrollment, heartbeats, reachability, hostile input, restart.

Timers are short (heartbeat 1 s, unreachable after 2 s); the simulator is the device
(wasmbed.gateway.simulator, an independent protocol implementation).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from linkkit import (
    HELLO,
    gateway_config,
    raw_session,
    sim,
    split_frames,
    wait_for,
    wait_phase,
)

from wasmbed.gateway import pki
from wasmbed.gateway.facade import SYSTEM, Gateway
from wasmbed.gateway.model import Device, DevicePhase
from wasmbed.gateway.protocol import (
    EnrollStatus,
    ErrorCode,
    ErrorMessage,
    HelloAck,
    decode_frame,
    encode_frame,
)
from wasmbed.gateway.simulator import client_context


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    g = Gateway(gateway_config(tmp_path / "gw"))
    await g.start()
    yield g
    bugs = g.events.recent(kind="bug.")
    await g.stop()
    assert not bugs, bugs  # no InvalidTransition in any normal flow


def _errors(data: bytes) -> list[ErrorMessage]:
    msgs = [decode_frame(f, 1 << 20).message for f in split_frames(data)]
    return [m for m in msgs if isinstance(m, ErrorMessage)]


def _event_texts(g: Gateway, kind: str = "") -> list[str]:
    return [e.message for e in g.events.recent(kind=kind)]


# -- the happy path -----------------------------------------------------------------------------------


async def test_pairing_approve_heartbeat_disconnect_unreachable_restart(gw: Gateway, tmp_path: Path) -> None:
    dev = sim(gw, tmp_path / "sim", apps=[(1, 3), (2, 4)])
    dev.start()
    await wait_for(lambda: gw.devices(), 5, "the device record")
    (rec,) = gw.devices()
    assert rec.phase is DevicePhase.ENROLLING
    assert rec.spec.board == "mps2-an385" and rec.spec.public_key is not None
    assert rec.spec.public_key_fingerprint == pki.fingerprint(rec.spec.public_key)
    await wait_for(lambda: dev.state == "pending", 5, "pending")
    assert dev.enroll_results[0] == (EnrollStatus.PENDING, "waiting for operator approval")

    await gw.approve(SYSTEM, rec.name)
    await asyncio.wait_for(dev.connected.wait(), 5)  # polled, got the certificate, reconnected with it
    assert dev.name == rec.name
    rec = await wait_phase(gw, rec.name, DevicePhase.CONNECTED)
    assert rec.status.gateway == "local" and rec.status.connected_since is not None
    assert rec.status.firmware_version == "sim-0.1"

    await wait_for(lambda: dev.acks_received >= 2, 5, "two heartbeat acks")
    rec = gw.device(rec.name)
    assert rec is not None
    assert rec.status.uptime_ms is not None and rec.status.free_ram == 4_000_000 - 1000
    assert rec.status.apps == {"1": "Running", "2": "Failed"}
    first_beat = rec.status.last_heartbeat
    await wait_for(lambda: gw.device(rec.name).status.last_heartbeat != first_beat, 5, "a newer heartbeat")

    # Silence with the socket open -> Unreachable; heartbeats again -> Connected.
    dev.silent = True
    await wait_phase(gw, rec.name, DevicePhase.UNREACHABLE, 5)
    assert rec.name in gw.online()
    dev.silent = False
    await wait_phase(gw, rec.name, DevicePhase.CONNECTED, 5)

    # Stop the simulator -> Disconnected.
    await dev.stop()
    await wait_phase(gw, rec.name, DevicePhase.DISCONNECTED, 5)

    # Same identity directory, new process-equivalent: reconnects without a second approval.
    again = sim(gw, tmp_path / "sim")
    again.start()
    await asyncio.wait_for(again.connected.wait(), 5)
    await wait_phase(gw, rec.name, DevicePhase.CONNECTED, 5)
    assert again.enroll_results == [] and len(gw.devices()) == 1
    await again.stop()
    kinds = [e.kind for e in gw.events.recent()]
    for k in ("enrollment.pending", "enrollment.approved", "enrollment.accepted", "device.connected",
              "device.unreachable", "device.reachable", "device.disconnected"):
        assert k in kinds, k


async def test_token_auto_approval_and_single_use(tmp_path: Path) -> None:
    g = Gateway(gateway_config(tmp_path / "gw", pairing=False))
    await g.start()
    try:
        token = await g.issue_enrollment_token(SYSTEM, "mps2-an385")
        assert len(token) == 16
        a = sim(g, tmp_path / "a", token=token)
        a.start()
        await asyncio.wait_for(a.connected.wait(), 5)
        await wait_phase(g, a.name, DevicePhase.CONNECTED, 5)
        assert a.enroll_results == [(EnrollStatus.ACCEPTED, "approved by one-time token")]

        b = sim(g, tmp_path / "b", token=token)  # same token, other key
        b.start()
        await wait_for(lambda: b.state == "rejected", 5, "second use refused")
        assert b.enroll_results[-1][0] == EnrollStatus.REJECTED
        assert "already used" in b.enroll_results[-1][1]
        assert len(g.devices()) == 1
        await asyncio.gather(a.stop(), b.stop())
    finally:
        await g.stop()


async def test_token_bound_to_another_board_is_refused(tmp_path: Path) -> None:
    g = Gateway(gateway_config(tmp_path / "gw", pairing=False))
    await g.start()
    try:
        token = await g.issue_enrollment_token(SYSTEM, "stm32vldiscovery")
        d = sim(g, tmp_path / "d", token=token)
        d.start()
        await wait_for(lambda: d.state == "rejected", 5, "refusal")
        assert "not mps2-an385" in d.enroll_results[-1][1]
        await d.stop()
    finally:
        await g.stop()


# -- refusals ---------------------------------------------------------------------------------------------


async def test_pairing_off_unknown_key_is_refused_and_not_recorded(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    g = Gateway(gateway_config(tmp_path / "gw", pairing=False))
    await g.start()
    try:
        caplog.set_level(logging.INFO, logger="wasmbed")
        d = sim(g, tmp_path / "d")
        d.start()
        await wait_for(lambda: d.state == "rejected", 5, "refusal")
        assert d.enroll_results == [(EnrollStatus.REJECTED, "pairing mode off")]
        assert g.devices() == []  # decision: no record at all for refused unknown keys
        fp = pki.fingerprint(pki.spki_der_of(d.identity.key.public_key()))
        assert f"enrollment refused: pairing mode off, key {fp}" in caplog.text
        await d.stop()
    finally:
        await g.stop()


async def test_client_certificate_from_another_ca_is_refused(gw: Gateway, tmp_path: Path) -> None:
    other = pki.load_or_create(tmp_path / "other-pki")
    key = ec.generate_private_key(ec.SECP256R1())
    cert = other.issue_device_certificate(pki.spki_der_of(key.public_key()), "intruder")
    pki.write_client_credentials(tmp_path / "intruder", cert, key)
    ctx = client_context(gw.ca_cert_der)
    ctx.load_cert_chain(tmp_path / "intruder" / "client.crt", tmp_path / "intruder" / "client.key")
    healthy = sim(gw, tmp_path / "healthy")
    healthy.start()
    data = await raw_session(gw, b"", ctx=ctx)
    assert data == b""  # never got a hello_ack
    await wait_for(lambda: _event_texts(gw, "session.tls_failed"), 5, "the handshake failure event")
    (text,) = _event_texts(gw, "session.tls_failed")
    assert text.startswith("TLS handshake failed from 127.0.0.1:") and "certificate" in text
    assert gw.devices() == [] or all(d.name != "intruder" for d in gw.devices())
    await healthy.stop()


async def test_deleted_device_is_revoked(gw: Gateway, tmp_path: Path) -> None:
    token = await gw.issue_enrollment_token(SYSTEM)
    d = sim(gw, tmp_path / "d", token=token)
    d.start()
    await asyncio.wait_for(d.connected.wait(), 5)
    name = d.name
    await gw.delete_device(SYSTEM, name)
    # The live session is cut; the certificate no longer works (UNKNOWN_DEVICE), so the device drops it
    # and enrolls again: with pairing on it waits for approval as a new device.
    await wait_for(lambda: d.state == "pending", 5, "re-enrollment")
    assert not d.identity.has_certificate
    assert "gateway error 33" in (d.last_error or "")
    assert [x.phase for x in gw.devices()] == [DevicePhase.ENROLLING]
    assert any("is not an enrolled device" in t for t in _event_texts(gw, "session.unknown_device"))
    await d.stop()


# -- hostile and broken input -----------------------------------------------------------------------------


BAD_INPUT = [
    ("garbage instead of TLS", None, None),
    ("oversize length", b"\x00\x10\x00\x00", ErrorCode.FRAME_TOO_LARGE),
    ("nesting depth 1000", len(b"\x81" * 1000 + b"\x00").to_bytes(4, "big") + b"\x81" * 1000 + b"\x00",
     ErrorCode.TOO_DEEP),
    ("unknown tag", bytes.fromhex("00000006") + bytes.fromhex("830102811863"), ErrorCode.UNKNOWN_MESSAGE),
    ("heartbeat in an enrollment session", bytes.fromhex("00000008") + bytes.fromhex("8301028405020380"),
     ErrorCode.UNEXPECTED_MESSAGE),
    ("truncated frame", b"\x00\x00\x00\x64" + b"\x83\x01" * 5, None),
    ("indefinite length", bytes.fromhex("00000007") + bytes.fromhex("9f0101820600ff"), ErrorCode.INDEFINITE_LENGTH),
]


@pytest.mark.parametrize(("name", "payload", "code"), BAD_INPUT, ids=[b[0] for b in BAD_INPUT])
async def test_bad_input_closes_only_that_session(gw: Gateway, tmp_path: Path, name: str, payload: bytes | None,
                                                  code: ErrorCode | None) -> None:
    token = await gw.issue_enrollment_token(SYSTEM)
    healthy = sim(gw, tmp_path / "healthy", token=token, heartbeat_interval_ms=200)
    healthy.start()
    await asyncio.wait_for(healthy.connected.wait(), 5)
    before = healthy.acks_received

    if payload is None and name.startswith("garbage"):
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(b"GET / HTTP/1.0\r\n\r\n" + bytes(range(256)))
        await writer.drain()
        async with asyncio.timeout(5):
            await reader.read()  # the gateway closes
        writer.close()
        await wait_for(lambda: _event_texts(gw, "session.tls_failed"), 5, "handshake failure logged")
        assert "TLS handshake failed from 127.0.0.1:" in _event_texts(gw, "session.tls_failed")[0]
    elif name.startswith("truncated"):
        await raw_session(gw, payload or b"", close_after=True)
        await wait_for(lambda: _event_texts(gw, "session.protocol_error"), 5, "truncation logged")
        assert "inside a frame" in _event_texts(gw, "session.protocol_error")[0]
    else:
        assert payload is not None and code is not None
        data = await raw_session(gw, payload)
        assert isinstance(decode_frame(split_frames(data)[0]).message, HelloAck)  # hello went through
        errors = _errors(data)
        assert [e.code for e in errors] == [code], (name, errors)
        await wait_for(lambda: _event_texts(gw, "session.protocol_error"), 5, "protocol error logged")
        assert ErrorCode(code).name in _event_texts(gw, "session.protocol_error")[0]

    # The healthy device never noticed; the listener still accepts and serves sessions.
    await wait_for(lambda: healthy.acks_received >= before + 2, 5, "healthy heartbeats continue")
    assert gw.device(healthy.name).phase is DevicePhase.CONNECTED
    data = await raw_session(gw, b"", timeout=0.3)
    assert isinstance(decode_frame(split_frames(data)[0]).message, HelloAck)
    await healthy.stop()


async def test_first_frame_must_be_hello(gw: Gateway) -> None:
    frame = bytes.fromhex("830101820600")  # [1, 1, [6, 0]]: a heartbeat_ack, wrong direction and too early
    data = await raw_session(gw, len(frame).to_bytes(4, "big") + frame, hello=False)
    (err,) = _errors(data)
    assert err.code == ErrorCode.UNEXPECTED_MESSAGE and "hello" in err.text


async def test_hello_timeout_closes_idle_session(gw: Gateway, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="wasmbed")
    data = await raw_session(gw, b"", hello=False, timeout=6)  # gateway config: hello within 1 s
    assert data == b""
    assert "timeout: no hello" in caplog.text


async def test_second_hello_is_unexpected(gw: Gateway) -> None:
    data = await raw_session(gw, encode_frame(HELLO))
    (err,) = _errors(data)
    assert err.code == ErrorCode.UNEXPECTED_MESSAGE


# -- restart ------------------------------------------------------------------------------------------------


async def test_gateway_restart_devices_reconnect(tmp_path: Path) -> None:
    g = Gateway(gateway_config(tmp_path / "gw", pairing=False))
    await g.start()
    port = g.port
    tokens = [await g.issue_enrollment_token(SYSTEM) for _ in range(3)]
    fleet = [sim(g, tmp_path / f"d{i}", token=t) for i, t in enumerate(tokens)]
    for d in fleet:
        d.start()
    await asyncio.wait_for(asyncio.gather(*(d.connected.wait() for d in fleet)), 10)
    before = {d.name: g.device(d.name).metadata.uid for d in fleet}  # type: ignore[union-attr]
    await g.stop()
    for name in before:
        assert name is not None

    g2 = Gateway(gateway_config(tmp_path / "gw", pairing=False, port=port))
    await g2.start()
    try:
        # Restart-time state: nobody is connected to a fresh process.
        assert all(d.phase is DevicePhase.DISCONNECTED for d in g2.devices())
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for name in before:
            await wait_phase(g2, name, DevicePhase.CONNECTED, 10)
        assert loop.time() - t0 < 10
        assert {d.name: d.metadata.uid for d in g2.devices()} == before  # same identities, no new records
        assert all(len(d.enroll_results) == 1 for d in fleet)  # nobody enrolled twice
    finally:
        await asyncio.gather(*(d.stop() for d in fleet))
        await g2.stop()


async def test_store_phase_changes_go_through_the_model(gw: Gateway, tmp_path: Path) -> None:
    """Watchers see the documented sequence for one device: Enrolling, Enrolled, Connected, Disconnected."""
    phases: list[DevicePhase] = []
    watch = gw.watch(Device, snapshot=False)

    async def collect() -> None:
        async for ev in watch:
            if ev.object is not None and isinstance(ev.object, Device):
                p = ev.object.phase
                if not phases or phases[-1] is not p:
                    phases.append(p)

    task = asyncio.create_task(collect())
    d = sim(gw, tmp_path / "d")
    d.start()
    await wait_for(lambda: d.state == "pending", 5)
    await gw.approve(SYSTEM, gw.devices()[0].name)
    await asyncio.wait_for(d.connected.wait(), 5)
    await d.stop()
    await wait_phase(gw, gw.devices()[0].name, DevicePhase.DISCONNECTED, 5)
    watch.close()
    await task
    assert phases == [DevicePhase.ENROLLING, DevicePhase.ENROLLED, DevicePhase.CONNECTED, DevicePhase.DISCONNECTED]



async def test_bad_csr_is_rejected_not_a_protocol_error(gw: Gateway) -> None:
    from wasmbed.gateway.protocol import EnrollRequest, EnrollResult, Envelope

    data = await raw_session(gw, encode_frame(Envelope(2, EnrollRequest(b"\x30\x03\x02\x01\x00", "mps2-an385"))))
    msgs = [decode_frame(f).message for f in split_frames(data)]
    assert isinstance(msgs[0], HelloAck)
    assert isinstance(msgs[1], EnrollResult) and msgs[1].status == EnrollStatus.REJECTED
    assert msgs[1].reason.startswith("malformed CSR")
    assert gw.devices() == []


def test_token_registry_rules(tmp_path: Path) -> None:
    import datetime as dt
    import time

    from wasmbed.gateway.enrollment import EnrollmentError, TokenRegistry
    from wasmbed.gateway.store import Store

    with Store(tmp_path / "s.db") as store:
        reg = TokenRegistry(store)
        tok = reg.issue("mps2-an385", issued_by="ada")
        with pytest.raises(EnrollmentError, match="unknown"):
            reg.redeem(b"\x00" * 16, "mps2-an385", "fp")
        with pytest.raises(EnrollmentError, match="for board mps2-an385"):
            reg.redeem(tok, "stm32vldiscovery", "fp")
        assert reg.redeem(tok, "mps2-an385", "fp").status.used_by == "fp"
        with pytest.raises(EnrollmentError, match="already used"):
            reg.redeem(tok, "mps2-an385", "fp2")
        short = reg.issue(ttl=dt.timedelta(milliseconds=1))
        time.sleep(0.01)
        with pytest.raises(EnrollmentError, match="expired"):
            reg.redeem(short, "any", "fp")
        assert reg.purge_expired(keep_used_for=dt.timedelta(0)) == 2 and reg.list() == []
