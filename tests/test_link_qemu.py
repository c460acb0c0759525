"""The real device link: QEMU boards running our firmware enroll and stay connected over mutual TLS.

Gateway + lab (supervisor) in this process; the firmware's link UART reaches the gateway's TLS
listener through QEMU's socket chardev. Timers are short (heartbeat 1 s, unreachable after 3 s).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from linkkit import wait_for, wait_phase

from wasmbed.dts import board_names, load_board
from wasmbed.firmware.profile import select
from wasmbed.gateway.facade import SYSTEM, Gateway, GatewayConfig
from wasmbed.gateway.model import LAB_BOARD_LABEL, Device, DevicePhase
from wasmbed.gateway.supervisor import Supervisor

pytestmark = pytest.mark.qemu

ADMIN = SYSTEM
TLS_BOARDS = [b for b in board_names()
              if "tls-link" in select(load_board(b).sram.size, load_board(b).flash.size, b).enabled]


def config(tmp: Path, *, pairing: bool = False, port: int = 0) -> GatewayConfig:
    return GatewayConfig(data_dir=tmp / "data", port=port, heartbeat_interval_s=1, unreachable_timeout_s=3,
                         pairing_mode=pairing, lab=True, lab_state_root=tmp / "boards", lab_log_root=tmp / "log")


@pytest.fixture
async def lab_gw(tmp_path: Path, firmware_builder) -> AsyncIterator[Gateway]:
    for board in TLS_BOARDS:
        firmware_builder(board)  # build outside the event loop's timing
    gw = Gateway(config(tmp_path, pairing=True))
    await gw.start()
    try:
        yield gw
    finally:
        await gw.stop()


def console_text(gw: Gateway, board: str) -> str:
    return "\n".join(line.text for line in gw.board_process(board).scrollback)


async def device_of(gw: Gateway, board: str, timeout: float = 20.0) -> Device:
    await wait_for(lambda: gw.board_device(board) is not None, timeout, f"a device for board {board}")
    dev = gw.board_device(board)
    assert dev is not None
    return dev


async def test_pairing_approve_heartbeats_unreachable_and_reboot_keeps_identity(lab_gw: Gateway) -> None:
    gw = lab_gw
    await gw.add_board(ADMIN, "b1", "mps2-an385", auto_enroll=False)  # no token: needs an operator
    await wait_for(lambda: any(d.phase is DevicePhase.ENROLLING for d in gw.devices()), 20, "an Enrolling device")
    dev = next(d for d in gw.devices() if d.phase is DevicePhase.ENROLLING)
    assert dev.spec.board == "mps2-an385"
    # The fingerprint the gateway saw is the one the firmware printed for its own key.
    assert dev.spec.public_key_fingerprint in console_text(gw, "b1")

    await gw.approve(ADMIN, dev.name)
    connected = await wait_phase(gw, dev.name, DevicePhase.CONNECTED, 20)
    assert connected.status.firmware_version
    first = connected.status.last_heartbeat
    await wait_for(lambda: gw.device(dev.name).status.last_heartbeat != first, 5, "a later heartbeat")  # type: ignore[union-attr]
    assert gw.device(dev.name).status.uptime_ms > 0  # type: ignore[union-attr]
    assert f"link: connected as {dev.name}" in console_text(gw, "b1")

    await gw.stop_board(ADMIN, "b1")  # QEMU gone: heartbeats stop (the TCP close alone says Disconnected)
    await wait_for(lambda: gw.device(dev.name).phase in (DevicePhase.DISCONNECTED, DevicePhase.UNREACHABLE),  # type: ignore[union-attr]
                   10, "Disconnected/Unreachable")

    await gw.start_board(ADMIN, "b1")  # a power cycle: same storage, same key, no second approval
    await wait_phase(gw, dev.name, DevicePhase.CONNECTED, 20)
    assert [d.name for d in gw.devices()] == [dev.name]
    assert "identity: " + dev.name in console_text(gw, "b1")


async def test_silent_board_becomes_unreachable(lab_gw: Gateway) -> None:
    """QEMU paused (QMP stop): the socket stays open but no heartbeat comes -> Unreachable after 3 s."""
    gw = lab_gw
    await gw.add_board(ADMIN, "quiet", "mps2-an385")
    dev = await device_of(gw, "quiet")
    await wait_phase(gw, dev.name, DevicePhase.CONNECTED, 20)
    qmp = gw.board_process("quiet").qmp
    assert qmp is not None
    await qmp.execute("stop")
    await wait_phase(gw, dev.name, DevicePhase.UNREACHABLE, 8)
    await qmp.execute("cont")
    await wait_phase(gw, dev.name, DevicePhase.CONNECTED, 15)


async def test_every_board_with_room_for_tls_connects_with_a_token(lab_gw: Gateway) -> None:
    gw = lab_gw
    for i, board in enumerate(TLS_BOARDS):
        await gw.add_board(ADMIN, f"t{i}", board)
    for i, board in enumerate(TLS_BOARDS):
        dev = await device_of(gw, f"t{i}", 30)
        await wait_phase(gw, dev.name, DevicePhase.CONNECTED, 30)
        assert dev.spec.board == board
        assert dev.metadata.labels[LAB_BOARD_LABEL] == f"t{i}"
    text = console_text(gw, "t0")
    assert "TLSv1.3" in text


async def test_pairing_off_unknown_key_is_refused_with_a_clear_log_line(lab_gw: Gateway) -> None:
    gw = lab_gw
    await gw.set_pairing_mode(ADMIN, False)
    await gw.add_board(ADMIN, "stranger", "mps2-an385", auto_enroll=False)
    await wait_for(lambda: any(e.kind == "enrollment.refused" and "pairing mode off" in e.message
                               for e in gw.recent_events()), 20, "the refusal")
    assert gw.devices() == []
    await wait_for(lambda: "enrollment rejected by the gateway" in console_text(gw, "stranger"), 10, "firmware log")


async def test_gateway_restart_with_three_boards_reconnects_within_10s(tmp_path: Path, firmware_builder) -> None:
    """Boards run under their own supervisor; the gateway process is stopped and started again."""
    firmware_builder("mps2-an385")
    cfg = GatewayConfig(data_dir=tmp_path / "data", heartbeat_interval_s=1, unreachable_timeout_s=3)
    gw = Gateway(cfg)
    await gw.start()
    port = gw.port
    tokens = {f"r{i}": await gw.issue_enrollment_token(ADMIN, "mps2-an385") for i in range(3)}
    sup = Supervisor("127.0.0.1", port, tmp_path / "boards", tmp_path / "log", ca_der=gw.ca_cert_der,
                     token_provider=lambda name: tokens.pop(name, None))
    try:
        for name in tokens.copy():
            sup.add(name, "mps2-an385")
            await sup.start(name)
        await wait_for(lambda: len([d for d in gw.devices() if d.phase is DevicePhase.CONNECTED]) == 3, 30,
                       "three Connected devices")
        uids = {d.name: d.metadata.uid for d in gw.devices()}
        await gw.stop()

        gw = Gateway(GatewayConfig(data_dir=tmp_path / "data", port=port, heartbeat_interval_s=1,
                                   unreachable_timeout_s=3))
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await gw.start()
        assert all(d.phase is not DevicePhase.CONNECTED for d in gw.devices())  # nothing connected yet
        await wait_for(lambda: len([d for d in gw.devices() if d.phase is DevicePhase.CONNECTED]) == 3, 10,
                       "all three to reconnect")
        elapsed = loop.time() - t0
        assert elapsed < 10
        assert {d.name: d.metadata.uid for d in gw.devices()} == uids
    finally:
        await sup.shutdown()
        await gw.stop()
