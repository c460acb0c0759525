"""Logs: every lab board's console merged with the gateway's events, timestamped.

``b`` cycles the source filter (all, gateway, audit, each board), ``l`` the minimum level, ``/`` filters
by text (matches highlighted), ``f`` follows/pauses. The view subscribes when first shown and keeps
collecting while other views are in front (bounded). The audit source starts with the last
:data:`AUDIT_HISTORY` records kept on disk (the event log in memory holds only recent events).
"""

from __future__ import annotations

import contextlib
import datetime as dt
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, Static

from wasmbed.console.screens.detail import console_entry
from wasmbed.console.widgets.logview import Entry, LogView
from wasmbed.gateway.events import GatewayEvent
from wasmbed.gateway.model import Board
from wasmbed.gateway.store import EventType
from wasmbed.gateway.supervisor import ConsoleLine

LEVELS = ("info", "warning", "error")
GATEWAY = "gateway"
AUDIT = "audit"
AUDIT_HISTORY = 1000


def event_entry(ev: GatewayEvent) -> Entry:
    if ev.kind.startswith("audit."):
        return Entry(ev.time.timestamp(), AUDIT, ev.level.value, f"[{ev.kind}] {ev.message}", ev.kind)
    source = str(ev.fields.get("board") or ev.device or GATEWAY)
    return Entry(ev.time.timestamp(), source if ev.fields.get("board") else GATEWAY, ev.level.value,
                 f"[{ev.kind}] {ev.message}", ev.kind)


def audit_entry(rec: dict) -> Entry | None:
    """One on-disk audit record as a log line (None for a record without a readable time)."""
    try:
        when = dt.datetime.fromisoformat(str(rec["time"]).replace("Z", "+00:00")).timestamp()
    except (KeyError, ValueError):
        return None
    result = str(rec.get("result", ""))
    kind = "audit." + result.split(":", 1)[0]
    level = {"ok": "info", "denied": "warning"}.get(result.split(":", 1)[0], "error")
    what = " ".join(str(x) for x in (rec.get("action"), rec.get("target")) if x)
    text = f"[{kind}] {rec.get('user')} ({rec.get('role')}) {what}: {result}"
    if rec.get("detail"):
        text += f" ({rec['detail']})"
    return Entry(when, AUDIT, level, text, kind)


class LogsScreen(Screen[None]):
    TITLE = "Logs"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "back"),
        Binding("slash", "search", "filter text", key_display="/"),
        Binding("f", "follow", "follow/pause"),
        Binding("b", "cycle_board", "board filter"),
        Binding("l", "cycle_level", "level filter"),
        Binding("n", "next_match", "next match", show=False),
        Binding("N", "prev_match", "previous match", show=False),
    ]

    def __init__(self) -> None:
        super().__init__(id="logs")
        self.board_filter: str | None = None  # None: all sources
        self.min_level = "info"
        self.text_filter = ""
        self._subs: dict[str, object] = {}
        self._events = None

    @property
    def wapp(self):
        return self.app

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="logs-info", classes="info")
        yield LogView(id="log", limit=10000)
        yield Input(placeholder="show only lines containing… (enter: keep, esc: close)", id="logs-filter",
                    classes="filter")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#logs-filter", Input).display = False
        view = self.view
        view.predicate = self._keep
        gw = self.wapp.gateway
        # History first, merged by time; then live feeds (subscribed in the same step: nothing is missed).
        # Audit lines come from the file on disk (it has every record; memory only the recent ones).
        history = [event_entry(ev) for ev in gw.recent_events()
                   if self._wanted(ev) and not ev.kind.startswith("audit.")]
        with contextlib.suppress(Exception):
            history += [e for e in map(audit_entry, gw.audit_records(AUDIT_HISTORY)) if e is not None]
        for board in gw.boards():
            with contextlib.suppress(Exception):
                history += [console_entry(line) for line in gw.board_process(board.name).scrollback]
        for entry in sorted(history, key=lambda e: e.time):
            view.add(entry)
        self._events = gw.events_feed(history=False)
        self.run_worker(self._pump_events(), group="feed", exit_on_error=False)
        for board in gw.boards():
            self._follow_board(board.name, replay=False)
        if gw.has_lab:
            self.run_worker(self._watch_boards(), group="feed", exit_on_error=False)
        self._update_info()
        view.focus()

    def on_unmount(self) -> None:
        if self._events is not None:
            self._events.close()
        for sub in self._subs.values():
            sub.close()  # type: ignore[attr-defined]

    @property
    def view(self) -> LogView:
        return self.query_one("#log", LogView)

    # -- feeds -----------------------------------------------------------------------------------------

    def _follow_board(self, name: str, *, replay: bool = True) -> None:
        if name in self._subs:
            return
        try:
            sub = self.wapp.gateway.board_console(name, replay=replay)
        except Exception:
            return
        self._subs[name] = sub

        async def pump() -> None:
            line: ConsoleLine
            async for line in sub:
                self.view.add(console_entry(line))
            self._subs.pop(name, None)

        self.run_worker(pump(), group="feed", exit_on_error=False)

    async def _pump_events(self) -> None:
        assert self._events is not None
        async for ev in self._events:
            if self._wanted(ev):
                self.view.add(event_entry(ev))

    @staticmethod
    def _wanted(ev: GatewayEvent) -> bool:
        """Board life-cycle events are skipped: the board's console says the same, with the same time."""
        return not (ev.kind.startswith("board.") and ev.kind.split(".", 1)[1] in (
            "started", "stopped", "starting", "stopping", "reset"))

    async def _watch_boards(self) -> None:
        with self.wapp.gateway.watch(Board, snapshot=True) as w:
            async for ev in w:
                if ev.object is not None and ev.type in (EventType.ADDED, EventType.MODIFIED):
                    self._follow_board(ev.object.name)

    # -- filters ---------------------------------------------------------------------------------------

    def _keep(self, e: Entry) -> bool:
        if self.board_filter is not None and e.source != self.board_filter:
            return False
        if LEVELS.index(e.level if e.level in LEVELS else "info") < LEVELS.index(self.min_level):
            return False
        return not self.text_filter or self.text_filter.lower() in e.text.lower()

    def _sources(self) -> list[str | None]:
        return [None, GATEWAY, AUDIT, *sorted(b.name for b in self.wapp.gateway.boards())]

    def action_cycle_board(self) -> None:
        sources = self._sources()
        i = sources.index(self.board_filter) if self.board_filter in sources else 0
        self.board_filter = sources[(i + 1) % len(sources)]
        self._apply()

    def action_cycle_level(self) -> None:
        self.min_level = LEVELS[(LEVELS.index(self.min_level) + 1) % len(LEVELS)]
        self._apply()

    def set_filters(self, *, board: str | None = None, level: str = "info", text: str = "") -> None:
        self.board_filter, self.min_level, self.text_filter = board, level, text
        self.view.search = text
        self.view.set_search(text)
        self._update_info()

    def _apply(self) -> None:
        self.view.refilter()
        self._update_info()

    def _update_info(self) -> None:
        parts = [f"source: {self.board_filter or 'all'} (b)", f"level ≥ {self.min_level} (l)",
                 f"text: “{self.text_filter}” (/)" if self.text_filter else "text: any (/)",
                 "following (f)" if self.view.follow else "PAUSED (f)"]
        self.query_one("#logs-info", Static).update(" · ".join(parts))

    def action_search(self) -> None:
        box = self.query_one("#logs-filter", Input)
        box.display = True
        box.focus()

    @on(Input.Changed, "#logs-filter")
    def _text_changed(self, event: Input.Changed) -> None:
        self.text_filter = event.value
        self.view.set_search(event.value)  # refilters (predicate reads text_filter) and highlights
        self._update_info()

    @on(Input.Submitted, "#logs-filter")
    def _text_done(self) -> None:
        box = self.query_one("#logs-filter", Input)
        box.display = bool(box.value)
        self.view.focus()

    def action_follow(self) -> None:
        self.view.set_follow(not self.view.follow)
        self._update_info()

    def action_next_match(self) -> None:
        self.view.next_match(1)
        self._update_info()

    def action_prev_match(self) -> None:
        self.view.next_match(-1)
        self._update_info()

    def action_back(self) -> None:
        box = self.query_one("#logs-filter", Input)
        if box.display and box.has_focus:
            box.display = False
            self.view.focus()
            return
        self.app.switch_mode("boards")
