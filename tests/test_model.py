"""Resource model: the phase table (every pair), k8s-shaped serialisation, strict parsing."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, ClassVar

import pytest

from wasmbed.gateway import model
from wasmbed.gateway.model import (
    API_VERSION,
    Condition,
    ConditionStatus,
    Device,
    DevicePhase,
    DeviceSpec,
    DeviceStatus,
    Gateway,
    GatewayPhase,
    GatewaySpec,
    GatewayStatus,
    InvalidTransition,
    ModelError,
    ObjectMeta,
)

Ph = DevicePhase
# Written out independently of the module: the upstream table, nothing more.
EXPECTED = {
    (Ph.PENDING, Ph.ENROLLING),
    (Ph.ENROLLING, Ph.ENROLLED), (Ph.ENROLLING, Ph.PENDING),
    (Ph.ENROLLED, Ph.CONNECTED),
    (Ph.CONNECTED, Ph.DISCONNECTED), (Ph.CONNECTED, Ph.UNREACHABLE),
    (Ph.DISCONNECTED, Ph.CONNECTED), (Ph.DISCONNECTED, Ph.UNREACHABLE),
    (Ph.UNREACHABLE, Ph.CONNECTED), (Ph.UNREACHABLE, Ph.DISCONNECTED),
}
ALL_PAIRS = list(itertools.product(DevicePhase, repeat=2))

# A key whose base64 contains '+' and '/', so a base64url encoder would be caught.
SPKI = bytes([0xFB, 0xFF, 0xBF] * 30 + [0x30, 0x59])
FP = hashlib.sha256(SPKI).digest().hex(":", 1)
T0 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def make_device(name: str = "dev-1", phase: DevicePhase = Ph.PENDING) -> Device:
    return Device(metadata=ObjectMeta(name=name, labels={"board": "mps2-an385"}),
                  spec=DeviceSpec(public_key_fingerprint=FP, public_key=SPKI, board="mps2-an385"),
                  status=DeviceStatus(phase=phase))


def test_phase_names_are_exactly_upstream() -> None:
    assert [p.value for p in DevicePhase] == [
        "Pending", "Enrolling", "Enrolled", "Connected", "Disconnected", "Unreachable"]


def test_table_matches_spec() -> None:
    got = {(a, b) for a, targets in model.DEVICE_TRANSITIONS.items() for b in targets}
    assert got == EXPECTED
    assert set(model.DEVICE_TRANSITIONS) == set(DevicePhase)


@pytest.mark.parametrize(("old", "new"), ALL_PAIRS, ids=[f"{a.value}->{b.value}" for a, b in ALL_PAIRS])
def test_every_pair(old: DevicePhase, new: DevicePhase) -> None:
    dev = make_device(phase=old)
    before = model.Device.from_dict(dev.to_dict())
    assert model.can_transition(old, new) == ((old, new) in EXPECTED)
    if (old, new) in EXPECTED:
        dev.set_phase(new, reason="test", now=T0)
        assert dev.phase is new
        assert dev.status.reason == "test"
    else:
        with pytest.raises(InvalidTransition) as ei:
            dev.set_phase(new, now=T0)
        assert ei.value.old is old and ei.value.new is new and ei.value.name == "dev-1"
        assert f"{old.value} -> {new.value}" in str(ei.value)
        assert dev == before, "state must be unchanged after a rejected transition"


def test_invalid_transition_is_loggable(caplog: pytest.LogCaptureFixture) -> None:
    """Callers log it as a bug; make sure the exception carries what the log line needs."""
    dev = make_device(phase=Ph.ENROLLED)
    log = logging.getLogger("wasmbed.test")
    with caplog.at_level(logging.ERROR):
        try:
            dev.set_phase(Ph.DISCONNECTED)
        except InvalidTransition as exc:
            log.error("bug: %s", exc)
    assert "Device 'dev-1': invalid phase transition Enrolled -> Disconnected" in caplog.text


def test_connected_since_bookkeeping() -> None:
    dev = make_device(phase=Ph.ENROLLED)
    dev.set_phase(Ph.CONNECTED, now=T0)
    assert dev.status.connected_since == T0 and dev.status.last_heartbeat == T0
    dev.set_phase(Ph.UNREACHABLE, reason="no heartbeat for 15 s", now=T0 + timedelta(seconds=20))
    assert dev.status.connected_since == T0  # still the same TCP session
    dev.set_phase(Ph.DISCONNECTED, now=T0 + timedelta(seconds=30))
    assert dev.status.connected_since is None and dev.status.reason is None
    dev.set_phase(Ph.CONNECTED, now=T0 + timedelta(seconds=40))
    assert dev.status.connected_since == T0 + timedelta(seconds=40)


def test_rejected_enrollment_goes_back_to_pending() -> None:
    dev = make_device(phase=Ph.PENDING)
    dev.set_phase(Ph.ENROLLING)
    dev.set_phase(Ph.PENDING, reason="rejected by operator")
    assert dev.phase is Ph.PENDING and dev.status.reason == "rejected by operator"


def test_device_dict_shape() -> None:
    dev = make_device()
    dev.metadata.created = T0
    dev.metadata.resource_version = 42
    dev.metadata.generation = 3
    dev.status = DeviceStatus(phase=Ph.CONNECTED, gateway="gw-0", connected_since=T0,
                              last_heartbeat=T0 + timedelta(microseconds=5), uptime_ms=1234,
                              free_ram=65536, firmware_version="0.1.0")
    d = dev.to_dict()
    json.dumps(d)  # plain JSON types only
    assert d["apiVersion"] == "wasmbed.github.io/v1alpha1" == API_VERSION
    assert d["kind"] == "Device"
    assert d["metadata"] == {"name": "dev-1", "uid": dev.metadata.uid, "labels": {"board": "mps2-an385"},
                             "creationTimestamp": "2025-01-02T03:04:05Z", "generation": 3,
                             "resourceVersion": "42"}
    assert d["spec"] == {"publicKeyFingerprint": FP, "publicKey": base64.b64encode(SPKI).decode(),
                         "board": "mps2-an385"}
    assert "+" in d["spec"]["publicKey"] and "/" in d["spec"]["publicKey"]  # standard alphabet
    assert d["status"] == {"phase": "Connected", "gateway": "gw-0", "connectedSince": "2025-01-02T03:04:05Z",
                           "lastHeartbeat": "2025-01-02T03:04:05.000005Z", "uptimeMs": 1234,
                           "freeRam": 65536, "firmwareVersion": "0.1.0"}
    assert Device.from_dict(d) == dev


def test_gateway_dict_shape_and_defaults() -> None:
    gw = Gateway(metadata=ObjectMeta(name="gw-0"), spec=GatewaySpec(endpoint="0.0.0.0", port=4423),
                 status=GatewayStatus(phase=GatewayPhase.RUNNING, connected_devices=2, enrolled_devices=3,
                                      conditions=[Condition(type="Ready", status=ConditionStatus.TRUE,
                                                            reason="Listening", last_transition_time=T0)]))
    d = gw.to_dict()
    assert d["apiVersion"] == API_VERSION and d["kind"] == "Gateway"
    assert d["spec"] == {"endpoint": "0.0.0.0", "port": 4423, "maxDevices": 64, "heartbeatIntervalSeconds": 5,
                         "unreachableTimeoutSeconds": 15, "pairingMode": False}
    assert d["status"] == {"phase": "Running", "connectedDevices": 2, "enrolledDevices": 3,
                           "conditions": [{"type": "Ready", "status": "True", "reason": "Listening",
                                           "lastTransitionTime": "2025-01-02T03:04:05Z"}]}
    assert Gateway.from_dict(json.loads(json.dumps(d))) == gw
    assert model.resource_from_dict(d) == gw


def test_one_api_version_for_all_kinds() -> None:
    assert set(model.KINDS) >= {"Device", "Gateway"}
    for cls in model.KINDS.values():
        assert cls.KIND
    dev = make_device().to_dict()
    gw = Gateway(metadata=ObjectMeta(name="g"), spec=GatewaySpec(endpoint="h", port=1)).to_dict()
    assert dev["apiVersion"] == gw["apiVersion"] == API_VERSION


@pytest.mark.parametrize(("mutate", "match"), [
    (lambda d: d.update(apiVersion="wasmbed.io/v1"), "apiVersion"),
    (lambda d: d.update(kind="Gateway"), "kind"),
    (lambda d: d["spec"].update(mcuType="x"), "unknown keys"),
    (lambda d: d["status"].update(phase="Running"), "not one of"),
    (lambda d: d["spec"].update(publicKey=base64.urlsafe_b64encode(SPKI).decode()), "base64"),
    (lambda d: d["metadata"].update(name="Dev_1"), "invalid name"),
    (lambda d: d["metadata"].update(resourceVersion="abc"), "resource version"),
    (lambda d: d["metadata"].update(creationTimestamp="2025-01-02T03:04:05+02:00"), "RFC 3339"),
    (lambda d: d["status"].update(uptimeMs="12"), "integer"),
    (lambda d: d["spec"].update(publicKeyFingerprint=FP.upper()), "lowercase"),
    (lambda d: d["spec"].pop("publicKeyFingerprint"), "public_key_fingerprint"),
    (lambda d: d["metadata"].update(labels={"a": "b c"}), "label value"),
])
def test_from_dict_rejects(mutate: Any, match: str) -> None:
    d = make_device().to_dict()
    mutate(d)
    with pytest.raises(ModelError, match=match):
        Device.from_dict(d)


def test_fingerprint_must_match_public_key() -> None:
    with pytest.raises(ModelError, match="does not match"):
        DeviceSpec(public_key_fingerprint=FP, public_key=SPKI + b"\x00")
    assert model.spki_fingerprint(SPKI) == FP


def test_gateway_spec_validation() -> None:
    with pytest.raises(ModelError):
        GatewaySpec(endpoint="h", port=0)
    with pytest.raises(ModelError):
        GatewaySpec(endpoint="h", port=1, heartbeat_interval_s=15, unreachable_timeout_s=15)


def test_naive_datetime_is_refused_on_encode() -> None:
    dev = make_device()
    dev.metadata.created = datetime(2025, 1, 1)  # deliberately naive
    with pytest.raises(ModelError, match="naive"):
        dev.to_dict()
    dev.metadata.created = datetime(2025, 1, 1, 2, tzinfo=timezone(timedelta(hours=2)))
    assert dev.to_dict()["metadata"]["creationTimestamp"] == "2025-01-01T00:00:00Z"


def test_unknown_kind() -> None:
    with pytest.raises(ModelError, match="unknown kind"):
        model.resource_from_dict({"apiVersion": API_VERSION, "kind": "Pod"})
    with pytest.raises(ValueError, match="duplicate"):
        model.register_kind(Device)


def test_labels_selector() -> None:
    assert model.matches_labels({"a": "1", "b": "2"}, {"a": "1"})
    assert model.matches_labels({"a": "1"}, None)
    assert not model.matches_labels({"a": "1"}, {"a": "2"})
    assert not model.matches_labels({}, {"a": "1"})


@dataclass
class AppSpec:
    module: bytes
    target_devices: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    memory_limit: int | None = None


@dataclass
class AppStatus:
    phase: str = "Creating"


@dataclass
class SketchApplication(model.Resource):
    """Not registered at import time; the test below registers it temporarily."""

    KIND: ClassVar[str] = "SketchApplication"
    spec: AppSpec
    status: AppStatus = field(default_factory=AppStatus)


def test_a_new_kind_slots_in() -> None:
    """How Application will be added: spec/status dataclasses + register_kind; the codec does the rest."""
    model.register_kind(SketchApplication)
    try:
        app = SketchApplication(metadata=ObjectMeta(name="blink"),
                                spec=AppSpec(module=b"\x00asm\x01\x00\x00\x00", target_devices=["dev-1"],
                                             env={"RATE": "2"}))
        d = app.to_dict()
        assert d["apiVersion"] == API_VERSION
        assert d["spec"] == {"module": "AGFzbQEAAAA=", "targetDevices": ["dev-1"], "env": {"RATE": "2"}}
        assert model.resource_from_dict(d) == app
    finally:
        del model.KINDS["SketchApplication"]
