"""The Gateway facade: permissions, operator enrollment decisions, pairing mode, events, lab operations."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from linkkit import gateway_config, sim, wait_for, wait_phase

from wasmbed.gateway import pki
from wasmbed.gateway.facade import Caller, Gateway, GatewayError, PermissionDenied, Role
from wasmbed.gateway.model import DevicePhase, EnrollmentToken
from wasmbed.gateway.model import Gateway as GatewayResource
from wasmbed.gateway.protocol import EnrollStatus

VIEWER = Caller("vera", Role.VIEWER)
OPERATOR = Caller("otto", Role.OPERATOR)
ADMIN = Caller("ada", Role.ADMIN)


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    g = Gateway(gateway_config(tmp_path / "gw"))
    await g.start()
    yield g
    bugs = g.events.recent(kind="bug.")
    await g.stop()
    assert not bugs, bugs


async def _pending_device(gw: Gateway, directory: Path):  # type: ignore[no-untyped-def]
    d = sim(gw, directory)
    d.start()
    await wait_for(lambda: d.state == "pending", 5, "pending")
    (rec,) = [x for x in gw.devices() if x.phase is DevicePhase.ENROLLING]
    return d, rec


async def test_viewer_cannot_approve_admin_can(gw: Gateway, tmp_path: Path) -> None:
    d, rec = await _pending_device(gw, tmp_path / "d")
    with pytest.raises(PermissionDenied, match=r"vera \(viewer\) may not approve"):
        await gw.approve(VIEWER, rec.name)
    with pytest.raises(PermissionDenied):
        await gw.approve(OPERATOR, rec.name)
    assert gw.device(rec.name).phase is DevicePhase.ENROLLING  # type: ignore[union-attr]
    assert [e.fields["user"] for e in gw.events.recent(kind="audit.denied")] == ["vera", "otto"]

    approved = await gw.approve(ADMIN, rec.name)
    assert approved.phase is DevicePhase.ENROLLED and approved.status.reason == "approved by ada"
    await asyncio.wait_for(d.connected.wait(), 5)
    await wait_phase(gw, rec.name, DevicePhase.CONNECTED, 5)
    assert d.enroll_results[-1] == (EnrollStatus.ACCEPTED, "approved by ada")
    await d.stop()


async def test_role_requirements_for_every_mutation(gw: Gateway) -> None:
    for call in (lambda c: gw.set_pairing_mode(c, False), lambda c: gw.issue_enrollment_token(c),
                 lambda c: gw.delete_device(c, "x"), lambda c: gw.reject(c, "x")):
        for caller in (VIEWER, OPERATOR):
            with pytest.raises(PermissionDenied):
                await call(caller)
    with pytest.raises(PermissionDenied):
        await gw.disconnect_device(VIEWER, "x")
    assert await gw.disconnect_device(OPERATOR, "x") is False  # allowed; nothing to disconnect
    # Reads need no caller.
    assert gw.devices() == [] and gw.device("x") is None and gw.pairing_mode is True


async def test_reject_sticks_until_approved(gw: Gateway, tmp_path: Path) -> None:
    d, rec = await _pending_device(gw, tmp_path / "d")
    rejected = await gw.reject(ADMIN, rec.spec.public_key_fingerprint, "unknown board on the bench")
    assert rejected.phase is DevicePhase.PENDING
    await wait_for(lambda: d.state == "rejected", 5, "the device learns on its next poll")
    assert d.enroll_results[-1] == (EnrollStatus.REJECTED, "rejected by ada: unknown board on the bench")
    await d.stop()

    # Pairing is still on, but a rejected key stays rejected when it comes back.
    again = sim(gw, tmp_path / "d")
    again.start()
    await wait_for(lambda: again.state == "rejected", 5, "still rejected")
    await again.stop()

    # The admin changes their mind: Pending -> Enrolling -> Enrolled, certificate on the next request.
    fp_typed = rec.spec.public_key_fingerprint.replace(":", "").upper()
    assert (await gw.approve(ADMIN, fp_typed)).phase is DevicePhase.ENROLLED
    third = sim(gw, tmp_path / "d")
    third.start()
    await asyncio.wait_for(third.connected.wait(), 5)
    await third.stop()


async def test_approve_and_reject_need_a_waiting_device(gw: Gateway, tmp_path: Path) -> None:
    with pytest.raises(GatewayError, match="no device"):
        await gw.approve(ADMIN, "nope")
    with pytest.raises(GatewayError, match="no device with key"):
        await gw.approve(ADMIN, "ab" * 32)
    token = await gw.issue_enrollment_token(ADMIN)
    d = sim(gw, tmp_path / "d", token=token)
    d.start()
    await asyncio.wait_for(d.connected.wait(), 5)
    with pytest.raises(GatewayError, match="not waiting for approval"):
        await gw.approve(ADMIN, d.name)  # type: ignore[arg-type]
    with pytest.raises(GatewayError, match="not waiting for approval"):
        await gw.reject(ADMIN, d.name)  # type: ignore[arg-type]
    await d.stop()


async def test_pairing_mode_switch_and_reset_on_restart(tmp_path: Path) -> None:
    g = Gateway(gateway_config(tmp_path / "gw", pairing=False))
    await g.start()
    try:
        assert g.pairing_mode is False
        await g.set_pairing_mode(ADMIN, True)
        assert g.pairing_mode is True
        assert g.store.require(GatewayResource, "local").spec.pairing_mode is True
        d = sim(g, tmp_path / "d")
        d.start()
        await wait_for(lambda: d.state == "pending", 5, "pending while pairing is on")
        await d.stop()
        port = g.port
    finally:
        await g.stop()
    g2 = Gateway(gateway_config(tmp_path / "gw", pairing=False, port=port))
    await g2.start()
    try:
        assert g2.pairing_mode is False  # never silently left open across a restart
        spec = g2.store.require(GatewayResource, "local").spec
        assert (spec.heartbeat_interval_s, spec.unreachable_timeout_s, spec.port) == (1, 2, port)
    finally:
        await g2.stop()


async def test_tokens_are_stored_hashed(gw: Gateway) -> None:
    token = await gw.issue_enrollment_token(ADMIN, "mps2-an385")
    (stored,) = gw.store.list(EnrollmentToken)
    assert token.hex() not in str(stored.to_dict()) and stored.spec.issued_by == "ada"
    assert stored.spec.board == "mps2-an385" and stored.status.used is None


async def test_event_feed_and_watch(gw: Gateway, tmp_path: Path) -> None:
    feed = gw.events_feed(history=True)
    watch = gw.watch()
    token = await gw.issue_enrollment_token(ADMIN)
    d = sim(gw, tmp_path / "d", token=token)
    d.start()
    await asyncio.wait_for(d.connected.wait(), 5)
    seen: list[str] = []
    async with asyncio.timeout(5):
        async for ev in feed:
            seen.append(ev.kind)
            if ev.kind == "device.connected":
                assert ev.device == d.name and f"device {d.name} connected from 127.0.0.1:" in ev.message
                break
    assert seen[0] == "gateway.started" and "token.issued" in seen and "enrollment.accepted" in seen
    phases = []
    async with asyncio.timeout(5):
        async for wev in watch:
            phases.append(wev.object.phase)  # type: ignore[union-attr]
            if phases[-1] is DevicePhase.CONNECTED:
                break
    assert phases[:2] == [DevicePhase.ENROLLING, DevicePhase.ENROLLED]
    feed.close()
    watch.close()
    await d.stop()


async def test_disconnect_device_and_online_list(gw: Gateway, tmp_path: Path) -> None:
    token = await gw.issue_enrollment_token(ADMIN)
    d = sim(gw, tmp_path / "d", token=token)
    d.start()
    await asyncio.wait_for(d.connected.wait(), 5)
    assert list(gw.online()) == [d.name]
    sessions_before = d.sessions
    assert await gw.disconnect_device(OPERATOR, d.name) is True  # type: ignore[arg-type]
    await wait_for(lambda: d.sessions > sessions_before and d.connected.is_set(), 5, "the device reconnects")
    await wait_phase(gw, d.name, DevicePhase.CONNECTED, 5)
    assert any("disconnected by otto" in e.message for e in gw.events.recent(kind="device.disconnected"))
    await d.stop()


async def test_board_operations_need_the_lab_and_the_right_role(gw: Gateway) -> None:
    viewer = Caller("vic", Role.VIEWER)
    assert gw.boards() == [] and not gw.has_lab
    with pytest.raises(PermissionDenied):
        await gw.add_board(viewer, "b1", "mps2-an385")
    with pytest.raises(GatewayError, match="runs no lab boards"):
        await gw.add_board(ADMIN, "b1", "mps2-an385")


async def test_ca_is_the_one_that_signs_device_certificates(gw: Gateway, tmp_path: Path) -> None:
    token = await gw.issue_enrollment_token(ADMIN)
    d = sim(gw, tmp_path / "d", token=token)
    d.start()
    await asyncio.wait_for(d.connected.wait(), 5)
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    der = x509.load_pem_x509_certificate(d.identity.cert_path.read_bytes()).public_bytes(serialization.Encoding.DER)
    peer = gw.pki.verify_device_certificate(der)
    assert peer.device_name == d.name
    assert peer.fingerprint == gw.device(d.name).spec.public_key_fingerprint  # type: ignore[union-attr, arg-type]
    assert peer.fingerprint == pki.fingerprint(pki.spki_der_of(d.identity.key.public_key()))
    await d.stop()
