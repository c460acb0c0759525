"""The deploy flow's dialogs: app source (add/update), board picker, live progress per board.

Flow (driven by the Apps view): ``d`` -> :class:`PickBoardsScreen` (``space`` marks boards, or type a label
selector; optional config ``k=v``) -> confirmation -> the facade's ``deploy`` -> :class:`ProgressScreen`
(one bar per target, fed by the store's Application watch, ending in Running / Failed with the error;
a target whose device is not connected shows "waiting for device" — the reconciler deploys when it
connects). ``u`` (update) and ``S`` (start) end in the same progress dialog.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, Input, Label, ProgressBar, Static

from wasmbed.console import appdata
from wasmbed.console.errors import describe
from wasmbed.gateway.model import LAB_BOARD_LABEL, Application, Device, DevicePhase
from wasmbed.gateway.store import EventType

DEPLOYABLE = (DevicePhase.CONNECTED, DevicePhase.DISCONNECTED, DevicePhase.UNREACHABLE, DevicePhase.ENROLLED)


class SourceScreen(ModalScreen[str | None]):
    """Path (or example name) + optional name/version; ``submit(path, name, version)`` does the work.

    On failure (missing file, invalid module, unknown import...) the dialog stays open with the reason
    and a notification names the problem; nothing is changed.
    """

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "cancel")]

    def __init__(self, title: str, submit: Callable[[str, str | None, str | None], Awaitable[str]], *,
                 ask_name: bool = True, button: str = "Add") -> None:
        super().__init__(classes="modal")
        self.title_text = title
        self.submit = submit
        self.ask_name = ask_name
        self.button = button

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="title")
            yield Label("Module: a .wasm or .wat path, or an example name")
            yield Input(placeholder="apps/blinky.wat", id="path")
            if self.ask_name:
                yield Label("Name (default: from the file name)")
                yield Input(placeholder="optional", id="name")
            yield Label("Version (default: the SHA-256 prefix)")
            yield Input(placeholder="optional", id="version")
            yield Static("", id="error", classes="error")
            with Horizontal(classes="buttons"):
                yield Button(self.button, variant="primary", id="ok")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#path", Input).focus()

    def action_cancel(self) -> None:
        self.dismiss(None)

    @on(Input.Submitted)
    @on(Button.Pressed, "#ok")
    async def _ok(self) -> None:
        path = self.query_one("#path", Input).value.strip()
        name = self.query_one("#name", Input).value.strip() if self.ask_name else ""
        version = self.query_one("#version", Input).value.strip()
        error = self.query_one("#error", Static)
        try:
            result = await self.submit(path, name or None, version or None)
        except Exception as exc:
            error.update(describe(exc))
            self.notify(describe(exc), title=f"{self.button.lower()} failed", severity="error", timeout=10)
            return
        self.dismiss(result)

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.dismiss(None)


@dataclass
class DeployRequest:
    app: str
    devices: list[str] = field(default_factory=list)
    selector: dict[str, str] = field(default_factory=dict)
    config: dict[str, str] = field(default_factory=dict)

    def describe(self, labels: dict[str, str]) -> str:
        if self.selector:
            where = "every device with " + ", ".join(f"{k}={v}" for k, v in self.selector.items())
        else:
            where = ", ".join(labels.get(d, d) for d in self.devices)
        cfg = (" with config " + " ".join(f"{k}={v}" for k, v in self.config.items())) if self.config else ""
        return f"{where}{cfg}"


class PickBoardsScreen(ModalScreen[DeployRequest | None]):
    """Board picker: ``space`` marks, ``enter`` continues (the cursor's board if none is marked)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "cancel"),
        Binding("space", "mark", "mark", show=False),
        Binding("a", "mark_all", "mark all", show=False),
    ]

    def __init__(self, app_name: str, version: str, devices: list[Device]) -> None:
        super().__init__(classes="modal")
        self.app_name = app_name
        self.version = version
        self.devices = [d for d in sorted(devices, key=self._label) if d.phase in DEPLOYABLE]
        self.marked: set[str] = set()

    @staticmethod
    def _label(d: Device) -> str:
        board = d.metadata.labels.get(LAB_BOARD_LABEL)
        return f"{board} ({d.name})" if board else d.name

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label(f"Deploy {self.app_name} {self.version}", classes="title")
            yield Label("space marks boards · enter continues (the highlighted board if none is marked)")
            table: DataTable[Text] = DataTable(id="targets", cursor_type="row")
            yield table
            yield Label("…or a label selector (key=value, comma separated) instead of marks")
            yield Input(placeholder=f"e.g. {LAB_BOARD_LABEL}=board-1", id="selector")
            yield Label("Config (optional): key=value key2=value2")
            yield Input(placeholder="e.g. period_ms=200", id="config")
            yield Static("", id="error", classes="error")
            with Horizontal(classes="buttons"):
                yield Button("Continue", variant="primary", id="ok")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        table = self.query_one("#targets", DataTable)
        table.add_column(" ", key="mark", width=1)
        table.add_column("BOARD / DEVICE", key="name", width=38)
        table.add_column("TYPE", key="type", width=17)
        table.add_column("PHASE", key="phase", width=12)
        for d in self.devices:
            table.add_row(" ", self._label(d), d.spec.board or "?", d.phase.value, key=d.name)
        if not self.devices:
            self.query_one("#error", Static).update("No enrolled device to deploy to: add or start a board first.")
        table.focus()

    def action_cancel(self) -> None:
        self.dismiss(None)

    def _cursor(self) -> str | None:
        table = self.query_one("#targets", DataTable)
        if not table.row_count:
            return None
        return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)

    def action_mark(self) -> None:
        name = self._cursor()
        if name is None:
            return
        self.marked ^= {name}
        table = self.query_one("#targets", DataTable)
        table.update_cell(name, "mark", "✓" if name in self.marked else " ")
        table.action_cursor_down()

    def action_mark_all(self) -> None:
        table = self.query_one("#targets", DataTable)
        everyone = {d.name for d in self.devices}
        self.marked = set() if self.marked == everyone else everyone
        for d in self.devices:
            table.update_cell(d.name, "mark", "✓" if d.name in self.marked else " ")

    @on(DataTable.RowSelected, "#targets")
    @on(Input.Submitted)
    @on(Button.Pressed, "#ok")
    def _continue(self) -> None:
        error = self.query_one("#error", Static)
        try:
            selector = appdata.parse_pairs(self.query_one("#selector", Input).value, "selector")
            config = appdata.parse_pairs(self.query_one("#config", Input).value, "config")
        except ValueError as exc:
            error.update(str(exc))
            return
        if selector:
            devices: list[str] = []
        elif self.marked:
            devices = [d.name for d in self.devices if d.name in self.marked]
        else:
            cursor = self._cursor()
            if cursor is None:
                error.update("Nothing to deploy to: mark a board or type a label selector.")
                return
            devices = [cursor]
        self.dismiss(DeployRequest(self.app_name, devices, selector, config))

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.dismiss(None)


class ProgressScreen(ModalScreen[None]):
    """Live progress of one Application: a bar per target, then Running / Failed (error) / waiting for device."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,enter", "close", "close")]

    def __init__(self, app_name: str, verb: str = "Deploying") -> None:
        super().__init__(classes="modal")
        self.app_name = app_name
        self.verb = verb
        self._rows: dict[str, tuple[Static, ProgressBar]] = {}

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label(f"{self.verb} {self.app_name}", classes="title", id="progress-title")
            yield VerticalScroll(id="progress-rows")
            yield Static("", id="progress-summary")
            yield Label("esc closes: the deployment goes on (see the deployments table)", classes="hint-line")

    def on_mount(self) -> None:
        self._refresh()
        self.run_worker(self._watch(), group="watch", exit_on_error=False)

    async def _watch(self) -> None:
        gw = self.app.gateway  # type: ignore[attr-defined]
        with gw.watch(None, snapshot=False) as w:
            async for ev in w:
                if ev.type is EventType.OVERFLOW or isinstance(ev.object, Application | Device):
                    self._refresh()

    def states(self) -> list[appdata.TargetState]:
        gw = self.app.gateway  # type: ignore[attr-defined]
        app = gw.application(self.app_name)
        return appdata.target_states(gw, app) if app is not None else []

    def _refresh(self) -> None:
        gw = self.app.gateway  # type: ignore[attr-defined]
        app = gw.application(self.app_name)
        summary = self.query_one("#progress-summary", Static)
        if app is None:
            summary.update(f"{self.app_name} is not deployed (any more).")
            return
        v = self.app.theme_variables
        colours = {"ok": v.get("phase-ok", "green"), "warn": v.get("phase-warn", "yellow"),
                   "bad": v.get("phase-bad", "red"), "idle": v.get("phase-idle", "grey50")}
        container = self.query_one("#progress-rows", VerticalScroll)
        states = self.states()
        for st in states:
            if st.device not in self._rows:
                label, bar = Static("", classes="target"), ProgressBar(total=100, show_eta=False)
                self._rows[st.device] = (label, bar)
                container.mount(label, bar)
            label, bar = self._rows[st.device]
            t = Text()
            t.append(f"{st.label:<40.40} ", style="bold")
            phase = st.phase
            if phase == "waiting for device":
                phase = f"waiting for device ({appdata.device_reason(gw, st.device)}): deploys when it connects"
            t.append(phase, style=colours.get(st.style, ""))
            if st.error:
                t.append(f"  {st.error}", style=colours["bad"])
            label.update(t)
            if st.phase in ("Running", "Stopped") or (st.entry is not None and st.size and st.bytes_sent >= st.size):
                bar.update(total=100, progress=100)
            elif st.size:
                bar.update(total=st.size, progress=st.bytes_sent)
            else:
                bar.update(total=100, progress=0)
        running = sum(st.phase == "Running" for st in states)
        failed = sum(st.phase == "Failed" for st in states)
        waiting = sum(st.phase == "waiting for device" for st in states)
        text = f"{app.status.phase.value} · {running} running, {failed} failed"
        if waiting:
            text += f", {waiting} waiting for their device"
        if not states:
            text += " · no device matches the targets yet"
        summary.update(Text(text, style=colours["bad"] if failed else colours["ok"] if running == len(states)
                            and states else ""))

    def action_close(self) -> None:
        self.dismiss(None)
