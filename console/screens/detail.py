"""Board detail: live serial console (scrollback, ``/`` search) with the board's app log lines merged in,
the apps on the board (phase, restarts, last error), DTS facts, device identity, LEDs, temperature.

Opened for a lab board (everything) or for a device that runs on no lab board (identity only).
"""

from __future__ import annotations

import contextlib
import re
from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, Label, Static

from wasmbed.console import appdata, fleet
from wasmbed.console.errors import guarded, notify_error
from wasmbed.console.screens.modals import ConfirmScreen
from wasmbed.console.widgets.leds import LedStrip
from wasmbed.console.widgets.logview import Entry, LogView
from wasmbed.gateway.model import Application, Board, Device
from wasmbed.gateway.store import EventType
from wasmbed.gateway.supervisor import ConsoleLine

POLL_S = 0.5  # LEDs and temperature


_BAD = re.compile(r"\b(error|fault|panic|failed|abort)", re.IGNORECASE)


def _level(line: ConsoleLine) -> str:
    if line.source == "build":
        return "error"
    if line.source == "qemu":
        return "warning"
    if line.source == "supervisor":
        return "error" if line.text.startswith("[failed]") else "warning" if line.text.startswith("[exited]") \
            else "info"
    return "error" if _BAD.search(line.text) else "info"


def console_entry(line: ConsoleLine) -> Entry:
    return Entry(line.time, line.board, _level(line), line.text, line.source)


class DetailScreen(Screen[None]):
    TITLE = "Board"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "back"),
        Binding("slash", "search", "search", key_display="/"),
        Binding("n", "next_match", "next match", show=False),
        Binding("N", "prev_match", "previous match", show=False),
        Binding("f", "follow", "follow/pause"),
        Binding("s", "start", "start"),
        Binding("S,x", "stop", "stop", key_display="S/x"),
        Binding("r", "reset", "reset"),
        Binding("t", "temperature", "set temperature"),
        Binding("ctrl+d", "delete", "delete"),
    ]

    def __init__(self, board: str | None = None, device: str | None = None) -> None:
        super().__init__(classes="detail")
        self.board_name = board
        self.device_name = device
        self._polling = False
        self._sub = None
        self._events = None

    @property
    def wapp(self):
        return self.app

    # -- layout ----------------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        gw = self.wapp.gateway
        board = gw.board(self.board_name) if self.board_name else None
        facts = fleet.board_facts(board.spec.board_type) if board else None
        yield Header()
        with Horizontal(id="detail-body"):
            with Vertical(id="console-pane"):
                yield Label("Serial console" if board else "No console: this device runs on no lab board",
                            classes="pane-title")
                yield LogView(show_source=False, id="console", limit=5000)
                yield Input(placeholder="search the console (enter: keep, esc: close)", id="console-search",
                            classes="filter")
            with VerticalScroll(id="side-pane"):
                yield Label("Board", classes="pane-title")
                yield Static("", id="board-state")
                yield Label("Device", classes="pane-title")
                yield Static("", id="device-info")
                yield Label("Apps", classes="pane-title")
                yield Static("", id="apps-info")
                if facts is not None:
                    yield Label("LEDs", classes="pane-title")
                    yield LedStrip([led.name for led in getattr(facts, "leds", ())], id="leds")
                    if getattr(facts, "temperature_sensor", None) is not None or any(
                            d.compatible == "ti,tmp105" for d in getattr(facts, "i2c_devices", ())):
                        yield Label("Temperature", classes="pane-title")
                        yield Static("—", id="temperature")
                        yield Input(placeholder="°C, enter to set (t)", id="temperature-input", type="number")
                    yield Label("Device tree facts", classes="pane-title")
                    yield Static(self._facts_text(facts), id="facts")
        yield Footer()

    @staticmethod
    def _facts_text(b: object) -> Text:
        t = Text()

        def row(k: str, v: str) -> None:
            t.append(f"{k:<10}", style="bold")
            t.append(v + "\n")

        row("model", b.model)  # type: ignore[attr-defined]
        row("machine", b.qemu_machine)  # type: ignore[attr-defined]
        row("cpu", f"{b.cpu} @ {b.cpu_clock_hz / 1e6:g} MHz" + (" + FPU" if b.has_fpu else ""))  # type: ignore[attr-defined]
        row("ram", f"{fleet.fmt_bytes(b.sram.size)} @ 0x{b.sram.base:08x}")  # type: ignore[attr-defined]
        row("flash", f"{fleet.fmt_bytes(b.flash.size)} @ 0x{b.flash.base:08x}")  # type: ignore[attr-defined]
        row("console", f"{b.console.label} @ 0x{b.console.base:08x}")  # type: ignore[attr-defined]
        row("link", f"{b.link.label} @ 0x{b.link.base:08x}")  # type: ignore[attr-defined]
        sensors = [f"{d.label} ({d.compatible} @ 0x{d.address:02x})" for d in b.i2c_devices]  # type: ignore[attr-defined]
        row("i2c", ", ".join(sensors) or "—")
        row("leds", ", ".join(led.name for led in b.leds) or "—")  # type: ignore[attr-defined]
        return t

    def on_mount(self) -> None:
        self.title = self.board_name or self.device_name or "?"
        self.sub_title = "board" if self.board_name else "device"
        self.query_one("#console-search", Input).display = False
        gw = self.wapp.gateway
        if self.board_name:
            try:
                self._sub = gw.board_console(self.board_name, replay=True)
            except Exception as exc:
                notify_error(self, f"console of {self.board_name}", exc)
            else:
                self.run_worker(self._pump_console(), group="console", exit_on_error=False)
            self.run_worker(self._watch(Board), group="watch", exit_on_error=False)
            self.set_interval(POLL_S, self._poll)
        self.run_worker(self._watch(Device), group="watch", exit_on_error=False)
        self.run_worker(self._watch(Application), group="watch", exit_on_error=False)
        self._events = gw.events_feed(history=True)
        self.run_worker(self._pump_app_logs(), group="console", exit_on_error=False)
        self._refresh_info()
        self.query_one("#console", LogView).focus()

    def on_unmount(self) -> None:
        if self._sub is not None:
            self._sub.close()
        if self._events is not None:
            self._events.close()

    async def _pump_app_logs(self) -> None:
        """The board's app log lines (``app.log`` gateway events of its device) into the console view."""
        view = self.query_one("#console", LogView)
        assert self._events is not None
        async for ev in self._events:
            if ev.kind != "app.log" or ev.device is None:
                continue
            dev = self._device()
            if dev is None or ev.device != dev.name:
                continue
            level = str(ev.fields.get("log_level", "info"))
            level = level if level in ("warning", "error") else "info"
            view.add(Entry(ev.time.timestamp(), self.board_name or ev.device, level,
                           f"[app {ev.fields.get('app', '?')}] {ev.fields.get('text', ev.message)}", "app"))

    async def _pump_console(self) -> None:
        view = self.query_one("#console", LogView)
        assert self._sub is not None
        async for line in self._sub:
            view.add(console_entry(line))

    async def _watch(self, kind: type) -> None:
        with self.wapp.gateway.watch(kind, snapshot=False) as w:
            async for ev in w:
                if ev.type is EventType.OVERFLOW or ev.object is None:
                    self._refresh_info()
                    continue
                if self._concerns(ev.object):
                    self._refresh_info()

    def _concerns(self, obj: object) -> bool:
        if isinstance(obj, Board):
            return obj.name == self.board_name
        if isinstance(obj, Application):
            dev = self._device()
            return dev is not None and (obj.status.entry(dev.name) is not None or dev.name in obj.spec.targets.devices)
        if isinstance(obj, Device):
            return obj.name == self.device_name or bool(
                self.board_name and obj.metadata.labels.get(fleet.LAB_BOARD_LABEL) == self.board_name)
        return False

    # -- info panes ------------------------------------------------------------------------------------

    def _device(self) -> Device | None:
        gw = self.wapp.gateway
        if self.board_name:
            return gw.board_device(self.board_name)
        return gw.device(self.device_name) if self.device_name else None

    def _refresh_info(self) -> None:
        gw = self.wapp.gateway
        now = self.wapp.clock()
        styles = self.app.theme_variables
        board = gw.board(self.board_name) if self.board_name else None
        t = Text()
        if board is not None:
            state = board.status.state
            style = styles.get({"ok": "phase-ok", "warn": "phase-warn", "bad": "phase-bad"}.get(
                fleet.STATE_STYLE.get(state, ""), "phase-idle"), "")
            t.append("state     ", style="bold")
            t.append(state + ("…" if state == "starting" else ""), style=style)
            t.append(f"\ntype      {board.spec.board_type}\n")
            with contextlib.suppress(Exception):
                bp = gw.board_process(board.name)
                t.append(f"pid       {bp.pid or '—'}\nrestarts  {bp.restarts}\n")
                if bp.last_error:
                    t.append(f"last error {bp.last_error}\n", style=styles.get("phase-bad", "red"))
            t.append(f"autostart {'yes' if board.spec.autostart else 'no'} · auto-enroll "
                     f"{'yes' if board.spec.auto_enroll else 'no'}")
        elif self.board_name:
            t.append("this board no longer exists", style="italic")
        else:
            t.append("not a lab board (simulator or hardware)", style="italic")
        with contextlib.suppress(Exception):
            self.query_one("#board-state", Static).update(t)
        dev = self._device()
        d = Text()
        if dev is None:
            d.append("not enrolled yet" if board is not None else "gone", style="italic")
        else:
            st = dev.status
            style = styles.get({"ok": "phase-ok", "warn": "phase-warn", "bad": "phase-bad"}.get(
                fleet.PHASE_STYLE.get(dev.phase, ""), "phase-idle"), "")
            d.append("phase     ", style="bold")
            d.append(dev.phase.value, style=f"bold {style}")
            if st.reason:
                d.append(f" ({st.reason})")
            d.append(f"\nname      {dev.name}\nkey       {dev.spec.public_key_fingerprint[:47]}\n"
                     f"          {dev.spec.public_key_fingerprint[48:]}\n")
            d.append(f"firmware  {st.firmware_version or '—'}\n")
            if st.connected_since:
                d.append(f"connected {fleet.fmt_age((now - st.connected_since).total_seconds())} ago\n")
            if st.last_heartbeat:
                d.append(f"heartbeat {fleet.fmt_age((now - st.last_heartbeat).total_seconds())} ago")
                d.append(f" · uptime {fleet.fmt_age((st.uptime_ms or 0) / 1000)}" if st.uptime_ms is not None else "")
                d.append(f" · free RAM {fleet.fmt_bytes(st.free_ram)}" if st.free_ram is not None else "")
            if st.apps:
                d.append("\napps      " + ", ".join(f"{k}: {v}" for k, v in sorted(st.apps.items())))
        with contextlib.suppress(Exception):
            self.query_one("#device-info", Static).update(d)
        colours = {"ok": styles.get("phase-ok", "green"), "warn": styles.get("phase-warn", "yellow"),
                   "bad": styles.get("phase-bad", "red"), "idle": styles.get("phase-idle", "grey50")}
        a = Text()
        on_board = appdata.apps_on_device(gw.applications(), dev.name) if dev is not None else []
        for app, entry in on_board:
            phase = entry.phase.value if entry is not None else "waiting"
            if entry is not None and entry.phase.value == "Deploying" and dev is not None \
                    and dev.phase.value != "Connected":
                phase = "waiting for device"
            a.append(f"{app.name:<14.14} ", style="bold")
            a.append(f"{app.spec.version:<10.10} ")
            a.append(phase, style=colours.get(appdata.PHASE_STYLE.get(phase, ""), ""))
            if entry is not None and entry.restarts:
                a.append(f" · {entry.restarts} restarts")
            if entry is not None and entry.error:
                a.append(f"\n  last error: {entry.error}", style=colours["bad"])
            a.append("\n")
        if not on_board:
            a.append("none (deploy from :apps)", style="italic")
        with contextlib.suppress(Exception):
            self.query_one("#apps-info", Static).update(a)

    async def _poll(self) -> None:
        if self._polling or not self.is_current or not self.board_name:
            return
        self._polling = True
        gw = self.wapp.gateway
        try:
            board = gw.board(self.board_name)
            running = board is not None and board.status.state == "running"
            with contextlib.suppress(Exception):
                leds = self.query_one("#leds", LedStrip)
                if running and leds.names:
                    try:
                        leds.states = tuple(await gw.read_leds(self.board_name))
                    except Exception:
                        leds.states = None
                else:
                    leds.states = None
            with contextlib.suppress(Exception):
                temp = self.query_one("#temperature", Static)
                if running:
                    try:
                        temp.update(f"{await gw.get_temperature(self.board_name):.2f} °C")
                    except Exception as exc:
                        temp.update(f"unavailable: {exc}")
                else:
                    temp.update("— (board not running)")
            self._refresh_info()
        finally:
            self._polling = False

    # -- actions ---------------------------------------------------------------------------------------

    def action_back(self) -> None:
        search = self.query_one("#console-search", Input)
        if search.display and search.has_focus:
            search.display = False
            self.query_one("#console", LogView).focus()
            return
        self.app.pop_screen()

    def action_search(self) -> None:
        box = self.query_one("#console-search", Input)
        box.display = True
        box.focus()

    @on(Input.Changed, "#console-search")
    def _search_changed(self, event: Input.Changed) -> None:
        view = self.query_one("#console", LogView)
        view.set_search(event.value)
        if event.value:
            view.next_match(-1)  # the latest match

    @on(Input.Submitted, "#console-search")
    def _search_done(self) -> None:
        view = self.query_one("#console", LogView)
        box = self.query_one("#console-search", Input)
        box.display = bool(box.value)
        view.focus()
        self.notify(f"{view.matches} matches (n/N: next/previous)" if box.value else "search cleared", timeout=3)

    def action_next_match(self) -> None:
        self.query_one("#console", LogView).next_match(1)

    def action_prev_match(self) -> None:
        self.query_one("#console", LogView).next_match(-1)

    def action_follow(self) -> None:
        view = self.query_one("#console", LogView)
        view.set_follow(not view.follow)
        self.notify("following the console" if view.follow else "paused (f resumes)", timeout=2)

    def _need_board(self) -> str | None:
        if not self.board_name:
            self.notify("This device runs on no lab board.", severity="warning")
        return self.board_name

    def _act(self, what: str, method: str) -> None:
        name = self._need_board()
        if name:
            app = self.wapp
            self.run_worker(guarded(self, f"{what} {name}", getattr(app.gateway, method)(app.caller, name)),
                            group="actions", exit_on_error=False)

    def action_start(self) -> None:
        self._act("start", "start_board")

    def action_stop(self) -> None:
        self._act("stop", "stop_board")

    def action_reset(self) -> None:
        self._act("reset", "reset_board")

    def action_temperature(self) -> None:
        try:
            self.query_one("#temperature-input", Input).focus()
        except Exception:
            self.notify("This board has no temperature sensor in its device tree.", severity="warning")

    @on(Input.Submitted, "#temperature-input")
    async def _set_temperature(self, event: Input.Submitted) -> None:
        name = self._need_board()
        if not name:
            return
        try:
            celsius = float(event.value)
        except ValueError:
            self.notify(f"{event.value!r} is not a temperature in °C", title="set temperature failed",
                        severity="error")
            return
        ok = await guarded(self, f"set temperature of {name}", self._set(name, celsius))
        if ok:
            self.notify(f"{name}: temperature set to {celsius:.2f} °C", timeout=3)
            event.input.value = ""

    async def _set(self, name: str, celsius: float) -> bool:
        await self.wapp.gateway.set_temperature(self.wapp.caller, name, celsius)
        return True

    def action_delete(self) -> None:
        app = self.wapp
        if self.board_name:
            name = self.board_name
            question = f"Delete lab board {name}? Its QEMU process is stopped and its stored identity is deleted."
            call = lambda: app.gateway.remove_board(app.caller, name)  # noqa: E731
        elif self.device_name:
            name = self.device_name
            question = f"Delete device {name}? Its certificate stops working at once (revocation)."
            call = lambda: app.gateway.delete_device(app.caller, name)  # noqa: E731
        else:
            return

        async def run() -> None:
            if await guarded(self, f"delete {name}", call()) is not None:
                self.app.pop_screen()

        def answered(yes: bool | None) -> None:
            if yes:
                self.run_worker(run(), group="actions", exit_on_error=False)

        self.app.push_screen(ConfirmScreen(question, confirm_label="Delete"), callback=answered)


__all__ = ["DetailScreen", "console_entry"]
