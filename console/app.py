"""The wasmbed console: a Textual app over the gateway facade.

One instance per front-end session (the local terminal, or later one per SSH session in the same
process): everything it needs comes in through the constructor (the facade, the caller it acts as, its
theme list and a hook to persist the theme choice); it keeps no process-global state and never writes
to stdout itself.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from typing import ClassVar

from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.theme import Theme

from wasmbed.console.screens.apps import AppsScreen
from wasmbed.console.screens.boards import BoardsScreen
from wasmbed.console.screens.enroll import EnrollScreen
from wasmbed.console.screens.logs import LogsScreen
from wasmbed.console.screens.modals import VIEWS, CommandBar
from wasmbed.console.themes import load_themes
from wasmbed.gateway.facade import Caller, Gateway
from wasmbed.gateway.model import utcnow

ALIASES = {"b": "boards", "board": "boards", "a": "apps", "app": "apps", "deploy": "apps", "l": "logs", "log": "logs",
           "e": "enroll", "enrollment": "enroll", "pending": "enroll"}

CSS = """
Screen { background: $background; }
.info { height: 1; padding: 0 1; color: $text-muted; background: $panel; }
.hint { padding: 1 2; color: $text-muted; }
.filter { dock: bottom; margin-bottom: 1; }
DataTable { height: 1fr; }
#detail-body { height: 1fr; }
#console-pane { width: 2fr; }
#side-pane { width: 1fr; min-width: 60; border-left: vkey $panel; padding: 0 1; }
.pane-title { text-style: bold; color: $primary; margin-top: 1; }
#console-pane .pane-title { margin: 0 1; }
LogView { height: 1fr; background: $surface; }
ModalScreen.modal { align: center middle; }
.dialog { width: 64; height: auto; padding: 1 2; border: thick $primary; background: $surface; }
.dialog .title, .dialog .question { text-style: bold; margin-bottom: 1; }
.dialog Input, .dialog Select { margin-bottom: 1; }
.dialog .error { color: $error; height: auto; }
.buttons { height: auto; align-horizontal: right; }
.buttons Button { margin-left: 2; }
.dialog.wide { width: 100; max-height: 90%; }
.dialog #targets { height: auto; max-height: 12; margin-bottom: 1; }
.dialog #progress-rows { height: auto; max-height: 20; }
.dialog ProgressBar { margin-bottom: 1; }
.dialog .hint-line { color: $text-muted; margin-top: 1; }
#apps-body { height: 1fr; }
#apps-body .pane-title { margin: 0 1; }
#catalog { height: 2fr; }
#deployments { height: 3fr; }
CommandBar { align: left bottom; background: transparent; }
CommandBar Input { dock: bottom; margin-bottom: 1; border: tall $accent; }
"""


class WasmbedApp(App[None]):
    """The console. ``gateway`` must be started; the app never starts or stops it."""

    TITLE = "wasmbed"
    CSS = CSS
    ENABLE_COMMAND_PALETTE = True
    MODES: ClassVar[dict[str, str | Callable[[], Screen]]] = {
        "boards": BoardsScreen, "apps": AppsScreen, "logs": LogsScreen, "enroll": EnrollScreen}
    DEFAULT_MODE = "boards"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("colon", "jump", "jump", key_display=":"),
        Binding("question_mark", "help", "help", key_display="?"),
        Binding("ctrl+t", "next_theme", "theme"),
        Binding("ctrl+p", "command_palette", "palette", show=False),
        Binding("ctrl+q", "quit", "quit", priority=True),
    ]

    def __init__(self, gateway: Gateway, caller: Caller, *, themes: Iterable[Theme] | None = None,
                 theme: str | None = None, on_theme_change: Callable[[str], None] | None = None,
                 clock: Callable[[], dt.datetime] = utcnow, theme_problems: Iterable[str] = (),
                 notices: Iterable[str] = (), offer_examples: bool = True) -> None:
        super().__init__()
        #: On a first visit of the Apps view with an empty catalog, add the example apps (once per session).
        self.offer_examples = offer_examples
        self.gateway = gateway
        self.caller = caller
        self.clock = clock
        self._on_theme_change = on_theme_change
        if themes is None:
            loaded, problems = load_themes(None)
            themes, theme_problems = loaded, [*theme_problems, *problems]
        self.console_themes = [t.name for t in themes]
        for t in themes:
            self.register_theme(t)
        self._notices = list(notices)
        self._startup_notes = list(theme_problems)
        wanted = theme or self.console_themes[0]
        if wanted not in self.available_themes:
            self._startup_notes.append(f"theme {wanted!r} is not installed; using {self.console_themes[0]}")
            wanted = self.console_themes[0]
        self.theme = wanted

    def on_mount(self) -> None:
        self.update_subtitle()
        self.theme_changed_signal.subscribe(self, self._theme_changed)
        for note in self._startup_notes:
            self.notify(note, title="themes", severity="warning", timeout=10)
        for note in self._notices:
            self.notify(note, timeout=15)

    def update_subtitle(self) -> None:
        try:
            pairing = "pairing ON" if self.gateway.pairing_mode else "pairing off"
        except Exception:
            pairing = "gateway stopped"
        who = f"{self.caller.user} ({self.caller.role.name.lower()})"
        self.sub_title = f"{self.gateway.config.name} · {who} · {pairing}"

    # -- themes ------------------------------------------------------------------------------------------

    def _theme_changed(self, theme: Theme) -> None:
        if self._on_theme_change is not None:
            try:
                self._on_theme_change(theme.name)
            except OSError as exc:
                self.notify(f"could not save the theme choice: {exc}", severity="warning")

    def action_next_theme(self) -> None:
        names = self.console_themes
        i = names.index(self.theme) if self.theme in names else -1
        self.theme = names[(i + 1) % len(names)]
        self.notify(f"theme {self.theme}", timeout=2)

    # -- navigation --------------------------------------------------------------------------------------

    def action_jump(self) -> None:
        self.push_screen(CommandBar(), callback=self._jump)

    def _jump(self, text: str | None) -> None:
        if not text:
            return
        view = ALIASES.get(text.lower(), text.lower())
        if view not in VIEWS:
            self.notify(f"unknown view {text!r}; try :boards, :apps, :logs or :enroll", severity="warning")
            return
        self.go(view)

    def go(self, view: str) -> None:
        self.switch_mode(view)

    def action_help(self) -> None:
        if self.screen.query("HelpPanel"):
            self.action_hide_help_panel()
        else:
            self.action_show_help_panel()

    # -- command palette: every action of the app and of the current screen -----------------------------

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        for view in VIEWS:
            yield SystemCommand(f"Go to {view}", f":{view}", lambda v=view: self.go(v))  # type: ignore[misc]
        seen = set()
        for binding in [*screen.BINDINGS, *self.BINDINGS]:
            if not isinstance(binding, Binding) or not binding.description or binding.action in seen:
                continue
            seen.add(binding.action)
            if binding.action in ("command_palette",):
                continue
            key = binding.key_display or binding.key.split(",")[0]
            action = binding.action
            yield SystemCommand(f"{binding.description[:1].upper()}{binding.description[1:]}",
                                f"key {key} ({screen.TITLE or screen.__class__.__name__})" if binding in screen.BINDINGS
                                else f"key {key}",
                                lambda a=action, s=screen: self.call_later(self.run_action, a, s))  # type: ignore[misc]
        for name in self.console_themes:
            yield SystemCommand(f"Theme: {name}", "switch the colour theme (saved)",
                                lambda n=name: setattr(self, "theme", n))  # type: ignore[misc]
        yield from super().get_system_commands(screen)
