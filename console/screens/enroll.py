"""Enrollment: devices waiting for approval (Enrolling) or refused earlier (Pending), with key fingerprints.

``a`` approves, ``d`` rejects (confirmed), ``p`` toggles pairing mode (whether unknown keys may wait here).
"""

from __future__ import annotations

import contextlib
from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from wasmbed.console import fleet
from wasmbed.console.errors import guarded
from wasmbed.console.screens.modals import ConfirmScreen
from wasmbed.gateway.model import Device, DevicePhase
from wasmbed.gateway.model import Gateway as GatewayResource
from wasmbed.gateway.store import EventType

WAITING = (DevicePhase.ENROLLING, DevicePhase.PENDING)
COLUMNS = (("name", "NAME", 26), ("board", "BOARD", 18), ("phase", "PHASE", 10), ("seen", "FIRST SEEN", 10),
           ("fingerprint", "KEY FINGERPRINT (SHA-256)", 96), ("reason", "REASON", 30))


class EnrollScreen(Screen[None]):
    TITLE = "Enrollment"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "back"),
        Binding("a", "approve", "approve"),
        Binding("d", "reject", "reject"),
        Binding("p", "pairing", "pairing on/off"),
    ]

    def __init__(self) -> None:
        super().__init__(id="enroll")
        self._rows: dict[str, tuple[str, ...]] = {}

    @property
    def wapp(self):
        return self.app

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="pairing", classes="info")
        yield DataTable(id="pending", cursor_type="row")
        yield Static("", id="enroll-empty", classes="hint")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#pending", DataTable)
        for key, label, width in COLUMNS:
            table.add_column(label, key=key, width=width)
        self.run_worker(self._watch(), group="watch", exit_on_error=False)
        self.set_interval(1.0, self.refresh_rows)
        self.refresh_rows()

    async def _watch(self) -> None:
        with self.wapp.gateway.watch(None, snapshot=False) as w:
            async for ev in w:
                if ev.type is EventType.OVERFLOW or isinstance(ev.object, Device | GatewayResource):
                    self.refresh_rows()

    def refresh_rows(self) -> None:
        """Waiting devices are few: diff the whole (small) list against the table."""
        gw = self.wapp.gateway
        now = self.wapp.clock()
        with contextlib.suppress(Exception):
            on_ = gw.pairing_mode
            v = self.app.theme_variables
            info = Text("Pairing mode ")
            info.append("ON", style=f"bold {v.get('phase-warn', 'yellow')}") if on_ else info.append(
                "OFF", style=f"bold {v.get('phase-ok', 'green')}")
            info.append(": unknown keys wait here for approval (p turns it off)" if on_ else
                        ": unknown keys are refused; devices with a one-time token still enroll (p turns it on)")
            self.query_one("#pairing", Static).update(info)
        table = self.query_one("#pending", DataTable)
        waiting = {d.name: d for d in gw.devices() if d.phase in WAITING}
        for name in list(self._rows):
            if name not in waiting:
                table.remove_row(name)
                del self._rows[name]
        for name, dev in waiting.items():
            created = dev.metadata.created
            cells = (name, dev.spec.board or "?", dev.phase.value,
                     fleet.fmt_age((now - created).total_seconds()) + " ago" if created else "—",
                     dev.spec.public_key_fingerprint, dev.status.reason or "")
            old = self._rows.get(name)
            if old is None:
                table.add_row(*cells, key=name)
            elif old != cells:
                for (col, _l, _w), new, prev in zip(COLUMNS, cells, old, strict=True):
                    if new != prev:
                        table.update_cell(name, col, new)
            self._rows[name] = cells
        self.query_one("#enroll-empty", Static).update(
            "" if waiting else "No device is waiting for approval. Boards added with auto-enroll off, simulators "
            "and real devices without a token show up here while pairing mode is on.")

    def _selected(self) -> str | None:
        table = self.query_one("#pending", DataTable)
        if table.row_count == 0:
            self.notify("No device is waiting for approval.", severity="warning")
            return None
        return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)

    def action_approve(self) -> None:
        name = self._selected()
        if name:
            app = self.wapp

            async def run() -> None:
                if await guarded(self, f"approve {name}", app.gateway.approve(app.caller, name)) is not None:
                    self.notify(f"{name} approved: it gets its certificate at its next request", timeout=4)
                    self.refresh_rows()

            self.run_worker(run(), group="actions", exit_on_error=False)

    def action_reject(self) -> None:
        name = self._selected()
        if not name:
            return
        app = self.wapp

        def answered(yes: bool | None) -> None:
            if yes:
                self.run_worker(guarded(self, f"reject {name}", app.gateway.reject(app.caller, name)),
                                group="actions", exit_on_error=False)

        self.app.push_screen(ConfirmScreen(f"Reject device {name}? It stays listed as Pending and can be approved "
                                           "later.", confirm_label="Reject"), callback=answered)

    def action_pairing(self) -> None:
        app = self.wapp

        async def run() -> None:
            on_ = not app.gateway.pairing_mode
            if await guarded(self, "change pairing mode", app.gateway.set_pairing_mode(app.caller, on_)) is not None \
                    or app.gateway.pairing_mode == on_:
                self.notify(f"pairing mode {'on' if on_ else 'off'}", timeout=3)
            self.refresh_rows()
            app.update_subtitle()

        self.run_worker(run(), group="actions", exit_on_error=False)

    @on(DataTable.RowSelected)
    def _selected_row(self) -> None:
        self.action_approve()

    def action_back(self) -> None:
        self.app.switch_mode("boards")
