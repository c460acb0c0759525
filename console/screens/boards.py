"""Boards view: every lab board and every other device, live.

Updates are coalesced: store events only mark rows dirty; a timer repaints at most every
:data:`REPAINT_S` and only the cells whose text or style changed (no table rebuild), so a fleet of
1,000 devices heartbeating every second costs a few cell updates per frame.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Static

from wasmbed.console import fleet
from wasmbed.console.errors import guarded
from wasmbed.console.screens.modals import AddBoardScreen, ConfirmScreen
from wasmbed.console.widgets.rowtable import RowTable
from wasmbed.dts import board_names
from wasmbed.gateway.model import Application, Board, Device
from wasmbed.gateway.store import EventType, Watch

REPAINT_S = 0.25
AGE_TICK_S = 1.0
LED_POLL_S = 0.5  # read_leds at most 2 Hz per board
VIEWPORT_MARGIN = 5  # rows above/below the visible ones that are kept current too
OFFSCREEN_EVERY = 5  # ticks between refreshes of rows outside the viewport


class BoardsScreen(Screen[None]):
    TITLE = "Boards"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "open", "open"),
        Binding("n", "add", "add board"),
        Binding("s", "start", "start"),
        Binding("S,x", "stop", "stop", key_display="S/x"),
        Binding("r", "reset", "reset"),
        Binding("ctrl+d", "delete", "delete"),
        Binding("slash", "filter", "filter", key_display="/"),
        Binding("escape", "clear_filter", "clear filter", show=False),
    ]

    def __init__(self) -> None:
        super().__init__(id="boards")
        self.index = fleet.FleetIndex()
        self._dirty: set[str] = set()
        self._cells: dict[str, tuple[fleet.Cell, ...]] = {}
        self._leds: dict[str, list[bool]] = {}
        self._watches: list[Watch] = []
        self._filter = ""
        self._styles: dict[str, str] = {}
        self._polling = False
        self._stale: set[str] = set()  # changed rows outside the viewport, painted when scrolled to
        self._ticks = 0
        self._info = ""
        #: Called after each repaint with (row keys repainted, monotonic time of the flush); for the benchmark.
        self.on_repaint: Callable[[set[str], float], None] | None = None

    # -- layout ----------------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="boards-info", classes="info")
        table = RowTable(id="fleet", cursor_type="row", zebra_stripes=False)
        yield table
        yield Input(placeholder="filter boards by name, type or phase", id="boards-filter", classes="filter")
        yield Footer()

    def on_mount(self) -> None:
        table = self.table
        for key, label, width in fleet.COLUMNS:
            table.add_column(label, key=key, width=width)
        self.query_one("#boards-filter", Input).display = False
        self._restyle()
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self._on_theme())
        gw = self.wapp.gateway
        # The first frame already shows the fleet (the watches' snapshots then change nothing).
        for dev in gw.devices():
            self._dirty |= self.index.put_device(dev)
        for board in gw.boards():
            self._dirty |= self.index.put_board(board, self.wapp.clock())
        for application in gw.applications():
            self._dirty |= self.index.put_application(application)
        self.call_after_refresh(self.flush)
        self._consume(gw.watch(Device), "device")
        self._consume(gw.watch(Board), "board")  # empty without a lab
        self._consume(gw.watch(Application), "application")
        self.watch(self.table, "scroll_y", self._scrolled, init=False)
        self.set_interval(REPAINT_S, self.flush)
        self.set_interval(AGE_TICK_S, self._tick)
        if gw.has_lab:
            self.set_interval(LED_POLL_S, self._poll_leds)
        self._update_info()

    def on_unmount(self) -> None:
        for w in self._watches:
            w.close()

    @property
    def wapp(self):
        return self.app

    @property
    def table(self) -> RowTable:
        return self.query_one("#fleet", RowTable)

    # -- feed ------------------------------------------------------------------------------------------

    def _consume(self, watch: Watch, kind: str) -> None:
        self._watches.append(watch)

        async def run() -> None:
            async for ev in watch:
                if ev.type is EventType.OVERFLOW:  # the snapshot that follows re-adds what exists
                    self._dirty.update(self._cells)
                    if kind == "application":
                        for name in list(self.index.applications):
                            self._dirty |= self.index.drop_application(name)
                    elif kind == "device":
                        for name in list(self.index.devices):
                            self._dirty |= self.index.drop_device(name)
                    else:
                        for name in list(self.index.boards):
                            self._dirty |= self.index.drop_board(name)
                    continue
                obj = ev.object
                if isinstance(obj, Device):
                    self._dirty |= (self.index.drop_device(obj.name) if ev.type is EventType.DELETED
                                    else self.index.put_device(obj))
                elif isinstance(obj, Application):
                    self._dirty |= (self.index.drop_application(obj.name) if ev.type is EventType.DELETED
                                    else self.index.put_application(obj))
                elif isinstance(obj, Board):
                    self._dirty |= (self.index.drop_board(obj.name) if ev.type is EventType.DELETED
                                    else self.index.put_board(obj, self.wapp.clock()))

        self.run_worker(run(), name=f"boards-watch-{kind}", group="watch", exit_on_error=False)

    def _tick(self) -> None:
        """Ages and 'starting… Ns' move with the clock: recompute the visible rows (all rows now and then)."""
        self._ticks += 1
        if self._ticks % OFFSCREEN_EVERY == 0:
            self._dirty.update(self._cells)
        else:
            lo, hi = self._viewport()
            self._dirty.update(str(r.key.value) for r in self.table.ordered_rows[max(0, lo): hi + 1])
        self._update_info()

    def _viewport(self) -> tuple[int, int]:
        table = self.table
        top = int(table.scroll_y)
        return top - VIEWPORT_MARGIN, top + table.size.height + VIEWPORT_MARGIN

    def _scrolled(self) -> None:
        if self._stale:
            self._dirty |= self._stale
            self._stale = set()
            self.flush()

    async def _poll_leds(self) -> None:
        if self._polling or not self.is_current:
            return
        self._polling = True
        try:
            gw = self.wapp.gateway
            for name, board in list(self.index.boards.items()):
                if board.status.state != "running" or not fleet.led_count(board.spec.board_type):
                    continue
                try:
                    leds = await gw.read_leds(name)
                except Exception:  # stopped meanwhile: the row shows it by its state
                    continue
                if self._leds.get(name) != leds:
                    self._leds[name] = leds
                    self._dirty.add(fleet.board_key(name))
        finally:
            self._polling = False

    # -- painting --------------------------------------------------------------------------------------

    def _on_theme(self) -> None:
        self._restyle()
        self._cells.clear()  # every cell is re-rendered in the new colours
        self._dirty.update(self.index.keys())
        self.table.clear()
        self.flush()

    def _restyle(self) -> None:
        v = self.app.theme_variables
        self._styles = {"": "", "name": "bold", "ok": v.get("phase-ok", "green"), "warn": v.get("phase-warn", "yellow"),
                        "bad": v.get("phase-bad", "red"), "idle": v.get("phase-idle", "grey50"),
                        "leds": v.get("led-on", "red")}

    def _text(self, cell: fleet.Cell) -> Text:
        return Text(cell[0], style=self._styles.get(cell[1], ""), no_wrap=True, overflow="ellipsis")

    def _matches(self, cells: tuple[fleet.Cell, ...]) -> bool:
        if not self._filter:
            return True
        f = self._filter.lower()
        return any(f in cells[i][0].lower() for i in (0, 1, 2, 3))

    def flush(self) -> None:
        """Apply pending row changes: add/remove rows, update only the cells that changed."""
        if not self._dirty:
            return
        t0 = time.monotonic()
        dirty, self._dirty = self._dirty, set()
        table = self.table
        now = self.wapp.clock()
        cursor_key = self._cursor_key()
        added = removed = False
        keys = [c[0] for c in fleet.COLUMNS]
        lo, hi = self._viewport()
        changes: dict[str, dict[str, Text]] = {}
        for key in dirty:
            row = self.index.row(key)
            if row is not None and key in self._cells and not self._filter:
                idx = table.get_row_index(key)
                if not lo <= idx <= hi:  # off screen: painted when scrolled into view (or by the slow tick)
                    self._stale.add(key)
                    continue
            self._stale.discard(key)
            cells = None
            if row is not None:
                name = row.board.name if row.board is not None else ""
                cells = fleet.row_cells(row, now, self._leds.get(name),
                                        self.index.starting_since.get(name) if name else None,
                                        self.index.app_phases(row.device.name) if row.device else None)
            old = self._cells.get(key)
            if cells is None or not self._matches(cells):
                if old is not None:
                    table.remove_row(key)
                    del self._cells[key]
                    removed = True
                continue
            if old is None:
                table.add_row(*(self._text(c) for c in cells), key=key)
                added = True
            else:
                changed = {col: self._text(new_cell) for col, new_cell, old_cell in zip(keys, cells, old, strict=True)
                           if new_cell != old_cell}
                if changed:
                    changes[key] = changed
            self._cells[key] = cells
        table.update_rows(changes)  # repaints only the rows that changed
        if added:
            table.sort("name", key=lambda cell: cell.plain)
        if (added or removed) and cursor_key is not None and cursor_key in self._cells:
            table.move_cursor(row=table.get_row_index(cursor_key), animate=False)
        if added or removed:
            self._update_info()
        if self.on_repaint is not None:
            hook = self.on_repaint
            self.call_after_refresh(hook, dirty, t0)

    def _update_info(self) -> None:
        boards = len(self.index.boards)
        devices = len(self.index.devices)
        connected = sum(1 for d in self.index.devices.values() if d.phase.value == "Connected")
        shown = len(self._cells)
        text = f"{boards} lab boards · {devices} devices ({connected} connected)"
        if self._filter:
            text += f" · filter “{self._filter}”: {shown} rows (esc clears)"
        if text == self._info:  # Static.update re-lays out the screen even for the same text
            return
        self._info = text
        with contextlib.suppress(Exception):
            self.query_one("#boards-info", Static).update(text)

    # -- selection -------------------------------------------------------------------------------------

    def _cursor_key(self) -> str | None:
        table = self.table
        if table.row_count == 0:
            return None
        with contextlib.suppress(Exception):
            return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)
        return None

    def select(self, name: str) -> bool:
        """Move the cursor to a board (or device) row by name; False if it has no row (yet)."""
        self.flush()
        for key in (fleet.board_key(name), fleet.device_key(name)):
            if key in self._cells:
                self.table.move_cursor(row=self.table.get_row_index(key), animate=False)
                return True
        return False

    def _selected(self, need_board: bool = False) -> tuple[str, str] | None:
        key = self._cursor_key()
        if key is None:
            self.notify("Nothing selected: the table is empty.", severity="warning")
            return None
        kind, _, name = key.partition(":")
        if need_board and kind != "b":
            self.notify(f"{name} is a device, not a lab board: only lab boards can be started, stopped or reset.",
                        severity="warning")
            return None
        return kind, name

    # -- actions ---------------------------------------------------------------------------------------

    @on(DataTable.RowSelected, "#fleet")
    def _row_selected(self) -> None:
        self.action_open()

    def action_open(self) -> None:
        sel = self._selected()
        if sel is None:
            return
        from wasmbed.console.screens.detail import DetailScreen

        kind, name = sel
        self.app.push_screen(DetailScreen(board=name if kind == "b" else None, device=name if kind == "d" else None))

    def action_add(self) -> None:
        if not self.wapp.gateway.has_lab:
            self.notify("This gateway runs no lab: boards cannot be added here.", severity="warning")
            return
        existing = set(self.index.boards)
        n = len(existing) + 1
        while f"board-{n}" in existing:
            n += 1
        self.app.push_screen(AddBoardScreen(board_names(), self._add_board, suggested_name=f"board-{n}"),
                             callback=self._added)

    async def _add_board(self, name: str, board_type: str) -> None:
        app = self.wapp
        await app.gateway.add_board(app.caller, name, board_type, start=False)
        self.run_worker(guarded(self, f"start {name}", app.gateway.start_board(app.caller, name)),
                        group="actions", exit_on_error=False)

    def _added(self, name: str | None) -> None:
        if name:
            self.notify(f"board {name} added; starting…", timeout=4)
            self.call_after_refresh(self.select, name)

    def _board_action(self, what: str, method: str) -> None:
        sel = self._selected(need_board=True)
        if sel is None:
            return
        name = sel[1]
        app = self.wapp
        call = getattr(app.gateway, method)(app.caller, name)
        self.run_worker(guarded(self, f"{what} {name}", call), group="actions", exit_on_error=False)

    def action_start(self) -> None:
        self._board_action("start", "start_board")

    def action_stop(self) -> None:
        self._board_action("stop", "stop_board")

    def action_reset(self) -> None:
        self._board_action("reset", "reset_board")

    def action_delete(self) -> None:
        sel = self._selected()
        if sel is None:
            return
        kind, name = sel
        app = self.wapp
        if kind == "b":
            question = (f"Delete lab board {name}? Its QEMU process is stopped and its stored identity is deleted "
                        "(the device record stays until you delete it too).")

            def call():
                return app.gateway.remove_board(app.caller, name)
        else:
            question = f"Delete device {name}? Its certificate stops working at once (revocation)."

            def call():
                return app.gateway.delete_device(app.caller, name)

        def answered(yes: bool | None) -> None:
            if yes:
                self.run_worker(guarded(self, f"delete {name}", call()), group="actions", exit_on_error=False)

        self.app.push_screen(ConfirmScreen(question, confirm_label="Delete"), callback=answered)

    # -- filter ----------------------------------------------------------------------------------------

    def action_filter(self) -> None:
        box = self.query_one("#boards-filter", Input)
        box.display = True
        box.focus()

    @on(Input.Changed, "#boards-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self._set_filter(event.value.strip())

    @on(Input.Submitted, "#boards-filter")
    def _filter_done(self) -> None:
        self.query_one("#boards-filter", Input).display = False
        self.table.focus()

    def action_clear_filter(self) -> None:
        box = self.query_one("#boards-filter", Input)
        if box.display:
            box.display = False
            self.table.focus()
        if self._filter:
            box.value = ""
            self._set_filter("")

    def _set_filter(self, text: str) -> None:
        if text == self._filter:
            return
        self._filter = text
        self._dirty.update(self.index.keys())
        self.flush()
        self._update_info()

