"""The device simulator: its independent codec agrees with the gateway's, its identity persists,
fleets and the CLI work against a real gateway."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import cbor2
import pytest
from linkkit import gateway_config, wait_for

from wasmbed.gateway import simulator as s
from wasmbed.gateway.enrollment import check_csr
from wasmbed.gateway.facade import SYSTEM, Gateway
from wasmbed.gateway.model import DevicePhase
from wasmbed.gateway.protocol import (
    AppState,
    EnrollRequest,
    EnrollResult,
    Envelope,
    ErrorCode,
    ErrorMessage,
    Heartbeat,
    HeartbeatAck,
    Hello,
    HelloAck,
    decode_frame,
    encode_frame,
)

UUID = bytes(range(16))

# -- the two codecs agree -------------------------------------------------------------------------------


def test_simulator_frames_decode_with_the_gateway_codec() -> None:
    cases = [
        (s.encode(1, s.HELLO, 1, "mps2-an385", "sim", 4000, 5000, ["wasm-mvp"], 4096),
         Envelope(1, Hello(1, "mps2-an385", "sim", 4000, 5000, ("wasm-mvp",), 4096))),
        (s.encode(2, s.ENROLL_REQUEST, b"\x30\x00", "b", b"tok"), Envelope(2, EnrollRequest(b"\x30\x00", "b", b"tok"))),
        (s.encode(3, s.HEARTBEAT, 2**40, 7, [[1, 3], [2, 255]]),
         Envelope(3, Heartbeat(2**40, 7, (AppState(1, 3), AppState(2, 255))))),
    ]
    for frame, expected in cases:
        assert decode_frame(frame, 4096) == expected
        assert frame == encode_frame(expected)  # byte-identical: both use preferred serialization


@pytest.mark.parametrize("env", [
    Envelope(1, HelloAck(1, 4096, 1_767_225_600_000, 5000)),
    Envelope(2, EnrollResult(0, "mps2-an385-0a1b2c3d", UUID, b"\x30\x82" + bytes(500), "approved by ada")),
    Envelope(2, EnrollResult(1, reason="waiting for operator approval")),
    Envelope(2, EnrollResult(2, reason="pairing mode off")),
    Envelope(3, HeartbeatAck(2**64 - 1)),
    Envelope(0, ErrorMessage(ErrorCode.UNKNOWN_DEVICE, "certificate key is not an enrolled device")),
], ids=lambda e: type(e.message).__name__)
def test_gateway_frames_decode_with_the_simulator_codec(env: Envelope) -> None:
    frame = encode_frame(env)
    (body,) = s.Deframer(4096).feed(frame)
    mid, tag, fields = s.decode(body)
    assert (mid, tag, fields) == (env.message_id, env.message.TAG, env.message.fields())


def _body(item: Any) -> bytes:
    return cbor2.dumps(item)


@pytest.mark.parametrize(("item", "code"), [
    ([2, 1, [6, 0]], 17),
    ([1, 1, [99]], 18),
    ([1, 1, [5, 1, 2, []]], 20),  # a device->gateway message coming from the gateway
    ([1, 1, [6, True]], 19),
    ([1, 1, [6, 1.0]], 19),
    ([1, 1, [4, 0, "dev", UUID, b"", ""]], 19),  # accepted without a certificate
    ([1, 1, [4, 1, "dev", b"", b"", ""]], 19),  # pending with a name
    ([1, 1, [2, 1, 512, 0, 5000]], 19),  # agreed frame size below the minimum
    ([1, 1], 16),
])
def test_simulator_codec_rejects_what_the_spec_forbids(item: Any, code: int) -> None:
    with pytest.raises(s.WireError) as exc:
        s.decode(_body(item))
    assert exc.value.code == code


def test_simulator_deframer_refuses_oversize_before_the_body() -> None:
    d = s.Deframer(1024)
    assert d.feed(b"\x00\x00") == []
    with pytest.raises(s.WireError):
        d.feed(b"\x04\x01")


# -- identity ------------------------------------------------------------------------------------------


def test_identity_persists_and_csr_proves_the_key(tmp_path: Path) -> None:
    a = s.Identity(tmp_path / "id")
    b = s.Identity(tmp_path / "id")
    assert a.key.private_numbers() == b.key.private_numbers()
    assert (tmp_path / "id" / "key.pem").stat().st_mode & 0o777 == 0o600
    csr = check_csr(a.csr_der("mps2-an385"))
    assert csr.fingerprint == check_csr(b.csr_der("mps2-an385")).fingerprint
    assert len(csr.der) <= 600
    assert not a.has_certificate and a.info == {}


# -- fleets and CLI against a gateway ---------------------------------------------------------------------


async def test_fleet_of_twenty_with_tokens(tmp_path: Path) -> None:
    gw = Gateway(gateway_config(tmp_path / "gw", pairing=False))
    await gw.start()
    try:
        tokens = [await gw.issue_enrollment_token(SYSTEM) for _ in range(20)]
        base = s.SimConfig(port=gw.port, ca_der=gw.ca_cert_der, backoff_min_s=0.05, backoff_max_s=0.5)
        fleet = s.make_fleet(tmp_path / "fleet", 20, base, tokens)
        for d in fleet:
            d.start()
        await asyncio.wait_for(asyncio.gather(*(d.connected.wait() for d in fleet)), 15)
        await wait_for(lambda: all(d.acks_received >= 1 for d in fleet), 5, "one ack each")
        names = {d.name for d in fleet}
        assert len(names) == 20
        assert all(gw.device(n).phase is DevicePhase.CONNECTED for n in names)  # type: ignore[arg-type, union-attr]
        await asyncio.gather(*(d.stop() for d in fleet))
    finally:
        await gw.stop()


async def test_cli_runs_a_fleet(tmp_path: Path) -> None:
    gw = Gateway(gateway_config(tmp_path / "gw", pairing=False))
    await gw.start()
    try:
        tokens = [await gw.issue_enrollment_token(SYSTEM) for _ in range(2)]
        token_file = tmp_path / "tokens.txt"
        token_file.write_text("# one per device\n" + "\n".join(t.hex() for t in tokens) + "\n")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "wasmbed.gateway.simulator", "--port", str(gw.port), "--count", "2",
            "--token-file", str(token_file), "--ca", str(gw.pki.ca_cert_path), "--dir", str(tmp_path / "cli"),
            "--duration", "2.5", "--report-s", "1", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 20)
        assert proc.returncode == 0, err.decode()
        assert "connected=2" in out.decode(), out.decode()
        assert len(gw.devices()) == 2
        assert {p.name for p in (tmp_path / "cli").iterdir()} == {"dev-0000", "dev-0001"}
    finally:
        await gw.stop()


async def test_simulator_retries_until_the_gateway_appears(tmp_path: Path) -> None:
    gw = Gateway(gateway_config(tmp_path / "gw", pairing=False))
    await gw.start()
    port, ca = gw.port, gw.ca_cert_der
    token = await gw.issue_enrollment_token(SYSTEM)
    await gw.stop()
    dev = s.SimDevice(tmp_path / "d", s.SimConfig(port=port, ca_der=ca, token=token, backoff_min_s=0.05,
                                                  backoff_max_s=0.3))
    dev.start()
    await wait_for(lambda: dev.last_error is not None, 5, "a failed attempt")
    assert "Connection" in dev.last_error or "Errno" in dev.last_error  # type: ignore[operator]
    g2 = Gateway(gateway_config(tmp_path / "gw", pairing=False, port=port))
    await g2.start()
    try:
        await asyncio.wait_for(dev.connected.wait(), 5)
    finally:
        await dev.stop()
        await g2.stop()
