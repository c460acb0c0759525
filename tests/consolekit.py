"""Helpers for the console tests: a gateway without lab holding fixed, deterministic data."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

from wasmbed.gateway.facade import Gateway
from wasmbed.gateway.model import (
    LAB_BOARD_LABEL,
    AppDevicePhase,
    AppDeviceStatus,
    Application,
    ApplicationSpec,
    ApplicationStatus,
    AppPhase,
    AppTargets,
    Board,
    BoardSpec,
    BoardStatus,
    Device,
    DevicePhase,
    DeviceSpec,
    DeviceStatus,
    ObjectMeta,
)

NOW = dt.datetime(2025, 6, 1, 12, 0, 0, tzinfo=dt.UTC)


def fingerprint(name: str) -> str:
    return hashlib.sha256(name.encode()).digest().hex(":", 1)


def make_device(gw: Gateway, name: str, phase: DevicePhase, *, board: str = "mps2-an385", hb_age_s: float = 1.0,
                uptime_s: float = 3600, free_ram: int | None = 3_900_000, lab_board: str | None = None,
                apps: dict[str, str] | None = None, reason: str | None = None) -> Device:
    labels = {LAB_BOARD_LABEL: lab_board} if lab_board else {}
    live = phase in (DevicePhase.CONNECTED, DevicePhase.UNREACHABLE)
    status = DeviceStatus(phase=phase, gateway="local", firmware_version="0.1.0" if live else None,
                          connected_since=NOW - dt.timedelta(seconds=uptime_s) if live else None,
                          last_heartbeat=NOW - dt.timedelta(seconds=hb_age_s) if live else None,
                          uptime_ms=int(uptime_s * 1000) if live else None, free_ram=free_ram if live else None,
                          apps=apps, reason=reason)
    meta = ObjectMeta(name=name, uid=f"uid-{name}", labels=labels, created=NOW - dt.timedelta(minutes=5))
    dev = Device(metadata=meta,
                 spec=DeviceSpec(public_key_fingerprint=fingerprint(name), board=board), status=status)
    return gw.store.create(dev)


def make_board(gw: Gateway, name: str, board_type: str, state: str) -> Board:
    board = Board(metadata=ObjectMeta(name=name, uid=f"uid-{name}", created=NOW - dt.timedelta(hours=1)),
                  spec=BoardSpec(board_type=board_type), status=BoardStatus(state=state))
    return gw.store.create(board)


def fixed_fleet(gw: Gateway) -> None:
    """Two lab boards (records only: no lab runs them), three other devices, two waiting for approval."""
    make_board(gw, "bench-a", "mps2-an385", "running")
    make_board(gw, "bench-b", "mps2-an505", "stopped")
    make_device(gw, "mps2-an385-0a1b2c3d", DevicePhase.CONNECTED, lab_board="bench-a", hb_age_s=0.4,
                uptime_s=125, apps={"1": "Running", "2": "Failed"})
    make_device(gw, "sim-0001", DevicePhase.CONNECTED, hb_age_s=2, uptime_s=7300, free_ram=120_000)
    make_device(gw, "sim-0002", DevicePhase.UNREACHABLE, hb_age_s=42, uptime_s=60, free_ram=98_000)
    make_device(gw, "sim-0003", DevicePhase.DISCONNECTED, board="stm32vldiscovery")
    make_device(gw, "newcomer-7f3a", DevicePhase.ENROLLING, board="olimex-stm32-h405")
    make_device(gw, "refused-0c1d", DevicePhase.PENDING, reason="rejected by alice")


APPS_DIR = Path(__file__).resolve().parents[1] / "apps"


def fixed_apps(gw: Gateway) -> None:
    """A catalog of four example apps and three deployments over :func:`fixed_fleet`'s devices (no device
    is online, so the reconciler leaves the recorded statuses alone): hello Running on bench-a and waiting
    for the unreachable sim-0002, blinky half transferred to sim-0001, trap Failed on sim-0001."""
    for name, version in (("hello", "1.0"), ("blinky", "2.1"), ("trap", "0.1"), ("thermostat", "1.0")):
        gw.catalog.add(APPS_DIR / f"{name}.wat", name=name, version=version, added_by="alice")

    def deploy(name: str, phase: AppPhase, entries: list[AppDeviceStatus]) -> None:
        entry = gw.app(name)
        assert entry is not None
        spec = ApplicationSpec(name=name, module_sha256=entry.spec.module_sha256, version=entry.spec.version,
                               targets=AppTargets(devices=[e.device for e in entries]))
        gw.store.create(Application(metadata=ObjectMeta(name=name, uid=f"uid-app-{name}", created=NOW), spec=spec,
                                    status=ApplicationStatus(phase=phase, devices=entries)))

    deploy("hello", AppPhase.PARTIALLY_RUNNING, [
        AppDeviceStatus("mps2-an385-0a1b2c3d", AppDevicePhase.RUNNING, app_id=1, bytes_sent=217, size=217),
        AppDeviceStatus("sim-0002", AppDevicePhase.DEPLOYING)])
    deploy("blinky", AppPhase.DEPLOYING, [AppDeviceStatus("sim-0001", AppDevicePhase.DEPLOYING, app_id=2,
                                                          bytes_sent=256, size=603)])
    deploy("trap", AppPhase.FAILED, [AppDeviceStatus("sim-0001", AppDevicePhase.FAILED, app_id=3, restarts=2,
                                                     error="[trap] out of bounds memory access")])
