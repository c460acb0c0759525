"""What the Boards view shows, computed from facade data only (no widgets here).

One row per lab board (its Device joined through the ``lab-board`` label) plus one row per device that
runs on no lab board (simulators, real hardware). :class:`FleetIndex` keeps the latest objects from the
store's change feed and answers "which rows changed"; :func:`row_cells` renders one row as plain
``(text, style-class)`` cells, so the table can compare and update only the cells that changed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache

from wasmbed.dts import DtsError, load_board
from wasmbed.gateway.model import LAB_BOARD_LABEL, Application, Board, Device, DevicePhase

COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("name", "NAME", 18), ("type", "TYPE", 18), ("state", "STATE", 12), ("phase", "PHASE", 12),
    ("uptime", "UPTIME", 9), ("heartbeat", "HEARTBEAT", 9), ("apps", "APPS", 12), ("ram", "FREE RAM", 9),
    ("leds", "LEDS", 8),
)
NONE = "—"

Cell = tuple[str, str]  # text, style class ("" | "ok" | "warn" | "bad" | "idle" | "leds")

PHASE_STYLE = {
    DevicePhase.CONNECTED: "ok", DevicePhase.ENROLLED: "warn", DevicePhase.ENROLLING: "warn",
    DevicePhase.PENDING: "bad", DevicePhase.DISCONNECTED: "idle", DevicePhase.UNREACHABLE: "bad",
}
STATE_STYLE = {"running": "ok", "starting": "warn", "stopping": "warn", "stopped": "idle", "exited": "bad",
               "failed": "bad"}


def board_key(name: str) -> str:
    return f"b:{name}"


def device_key(name: str) -> str:
    return f"d:{name}"


@cache
def board_facts(board_type: str) -> object | None:
    """The DTS board (cached per type; None for a type this installation does not know)."""
    try:
        return load_board(board_type)
    except (DtsError, OSError, ValueError):
        return None


def led_count(board_type: str) -> int:
    facts = board_facts(board_type)
    return len(getattr(facts, "leds", ()) or ())


def fmt_age(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def fmt_bytes(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.0f} KiB" if n >= 10 * 1024 else f"{n / 1024:.1f} KiB"
    return f"{n / 1024 / 1024:.1f} MiB"


def fmt_apps(apps: dict[str, str] | None) -> str:
    if not apps:
        return ""
    running = sum(1 for s in apps.values() if s == "Running")
    failed = sum(1 for s in apps.values() if s == "Failed")
    return f"{running} run/{failed} fail" if failed else f"{running} running"


def fmt_leds(leds: list[bool] | None, count: int) -> str:
    if count == 0:
        return ""
    if leds is None:
        return "·" * count
    return "".join("●" if on else "○" for on in leds)


@dataclass
class Row:
    key: str
    board: Board | None
    device: Device | None

    @property
    def name(self) -> str:
        if self.board is not None:
            return self.board.name
        assert self.device is not None
        return self.device.name


def row_cells(row: Row, now: dt.datetime, leds: list[bool] | None = None,
              starting_since: dt.datetime | None = None,
              app_phases: list[tuple[str, str]] | None = None) -> tuple[Cell, ...]:
    """One row's cells. ``app_phases``: (app name, phase) of the Applications on its device, which the
    APPS cell prefers to the device's own report (app ids and states from its heartbeat)."""
    board, dev = row.board, row.device
    if board is not None:
        btype = board.spec.board_type
        state = board.status.state
        state_text = state
        if state == "starting":
            since = starting_since or board.status.started
            state_text = f"starting… {fmt_age((now - since).total_seconds())}" if since else "starting…"
        state_cell: Cell = (state_text, STATE_STYLE.get(state, ""))
        led_cell: Cell = (fmt_leds(leds if state == "running" else None, led_count(btype)),
                          "leds" if leds is not None and state == "running" else "idle")
    else:
        btype = (dev.spec.board if dev else None) or "?"
        state_cell = ("external", "idle")
        led_cell = ("", "")
    if dev is None:
        phase_cell: Cell = (NONE, "idle")
        uptime = heartbeat = ram = (NONE, "idle")
        apps: Cell = ("", "")
    else:
        st = dev.status
        phase_cell = (dev.phase.value, PHASE_STYLE.get(dev.phase, ""))
        live = dev.phase in (DevicePhase.CONNECTED, DevicePhase.UNREACHABLE)
        uptime = (fmt_age((st.uptime_ms or 0) / 1000), "") if live and st.uptime_ms is not None else (NONE, "idle")
        heartbeat = ((fmt_age((now - st.last_heartbeat).total_seconds()) + " ago", "")
                     if st.last_heartbeat is not None else (NONE, "idle"))
        ram = (fmt_bytes(st.free_ram), "") if st.free_ram is not None and live else (NONE, "idle")
        if app_phases:
            from wasmbed.console.appdata import fmt_board_apps

            apps = fmt_board_apps(app_phases)
        else:
            apps = (fmt_apps(st.apps), "")
    return ((row.name, "name"), (btype, ""), state_cell, phase_cell, uptime, heartbeat, apps, ram, led_cell)


class FleetIndex:
    """Latest boards and devices from the change feed; maps every change to the row keys it touches."""

    def __init__(self) -> None:
        self.boards: dict[str, Board] = {}
        self.devices: dict[str, Device] = {}
        self._device_board: dict[str, str] = {}  # device name -> lab board name (label)
        self._board_device: dict[str, str] = {}  # lab board name -> device name
        self.starting_since: dict[str, dt.datetime] = {}  # board -> when we saw it enter "starting"
        self.applications: dict[str, Application] = {}
        self._app_devices: dict[str, set[str]] = {}  # application -> devices it has entries for

    # -- applications: the APPS column --------------------------------------------------------------------

    def put_application(self, app: Application) -> set[str]:
        old = self._app_devices.get(app.name, set())
        new = {e.device for e in app.status.devices}
        self.applications[app.name] = app
        self._app_devices[app.name] = new
        return {self._row_key_of_device(d) for d in old | new}

    def drop_application(self, name: str) -> set[str]:
        self.applications.pop(name, None)
        return {self._row_key_of_device(d) for d in self._app_devices.pop(name, set())}

    def app_phases(self, device: str) -> list[tuple[str, str]]:
        """(app, phase) of every Application with an entry for ``device``, by app name."""
        out = []
        for name in sorted(self.applications):
            entry = self.applications[name].status.entry(device)
            if entry is not None:
                out.append((name, entry.phase.value))
        return out

    def _row_key_of_device(self, name: str) -> str:
        board = self._device_board.get(name)
        return board_key(board) if board is not None and board in self.boards else device_key(name)

    def put_device(self, dev: Device) -> set[str]:
        old_key = self._row_key_of_device(dev.name) if dev.name in self.devices else None
        self.devices[dev.name] = dev
        board = dev.metadata.labels.get(LAB_BOARD_LABEL)
        if board is not None:
            self._device_board[dev.name] = board
            self._board_device[board] = dev.name
        new_key = self._row_key_of_device(dev.name)
        return {new_key} | ({old_key} if old_key and old_key != new_key else set())

    def drop_device(self, name: str) -> set[str]:
        if name not in self.devices:
            return set()
        key = self._row_key_of_device(name)
        del self.devices[name]
        board = self._device_board.pop(name, None)
        if board is not None and self._board_device.get(board) == name:
            del self._board_device[board]
        return {key}

    def put_board(self, board: Board, now: dt.datetime) -> set[str]:
        old = self.boards.get(board.name)
        self.boards[board.name] = board
        if board.status.state == "starting":
            if old is None or old.status.state != "starting":
                self.starting_since[board.name] = now
        else:
            self.starting_since.pop(board.name, None)
        keys = {board_key(board.name)}
        dev = self._board_device.get(board.name)
        if dev is not None and old is None:
            keys.add(device_key(dev))  # that device's own row goes away
        return keys

    def drop_board(self, name: str) -> set[str]:
        if self.boards.pop(name, None) is None:
            return set()
        self.starting_since.pop(name, None)
        keys = {board_key(name)}
        dev = self._board_device.get(name)
        if dev is not None:
            keys.add(device_key(dev))  # its device shows on its own again
        return keys

    def row(self, key: str) -> Row | None:
        kind, _, name = key.partition(":")
        if kind == "b":
            board = self.boards.get(name)
            if board is None:
                return None
            dev_name = self._board_device.get(name)
            return Row(key, board, self.devices.get(dev_name) if dev_name else None)
        dev = self.devices.get(name)
        if dev is None or self._row_key_of_device(name) != key:
            return None
        return Row(key, None, dev)

    def keys(self) -> Iterable[str]:
        yield from (board_key(b) for b in self.boards)
        yield from (device_key(d) for d in self.devices if self._row_key_of_device(d) == device_key(d))

    def clear(self) -> None:
        self.boards.clear()
        self.devices.clear()
        self._device_board.clear()
        self._board_device.clear()
