"""Small modal screens: confirmation, add board, the ``:`` command bar."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.suggester import SuggestFromList
from textual.widgets import Button, Input, Label, Select, Static

from wasmbed.console.errors import describe


class ConfirmScreen(ModalScreen[bool]):
    """Yes/no for destructive actions: ``y``/``enter`` confirm, ``n``/``esc`` cancel."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("y", "answer(True)", "yes"),
                                             Binding("n,escape", "answer(False)", "no")]

    def __init__(self, question: str, *, confirm_label: str = "Yes", default_yes: bool = False) -> None:
        super().__init__(classes="modal")
        self.question = question
        self.confirm_label = confirm_label
        self.default_yes = default_yes  # enter confirms (non-destructive actions such as deploy)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.question, classes="question")
            with Horizontal(classes="buttons"):
                yield Button(self.confirm_label, variant="primary" if self.default_yes else "error", id="yes")
                yield Button("Cancel", id="no")

    def on_mount(self) -> None:
        self.query_one("#yes" if self.default_yes else "#no", Button).focus()

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


class AddBoardScreen(ModalScreen[str | None]):
    """Name + board type; ``submit(name, type)`` does the work. On failure the dialog stays with the reason."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "cancel")]

    def __init__(self, board_types: list[str], submit: Callable[[str, str], Awaitable[None]],
                 default_type: str = "mps2-an385", suggested_name: str = "") -> None:
        super().__init__(classes="modal")
        self.board_types = board_types
        self.submit = submit
        self.default_type = default_type if default_type in board_types else board_types[0]
        self.suggested_name = suggested_name

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("Add a lab board", classes="title")
            yield Label("Name (lowercase letters, digits, '-')")
            yield Input(value=self.suggested_name, placeholder="board-2", id="name")
            yield Label("Board type (from dts/)")
            yield Select([(t, t) for t in self.board_types], value=self.default_type, allow_blank=False, id="type")
            yield Static("", id="error", classes="error")
            with Horizontal(classes="buttons"):
                yield Button("Add and start", variant="primary", id="add")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#name", Input).focus()

    def action_cancel(self) -> None:
        self.dismiss(None)

    @on(Input.Submitted, "#name")
    @on(Button.Pressed, "#add")
    async def _add(self) -> None:
        name = self.query_one("#name", Input).value.strip()
        board_type = str(self.query_one("#type", Select).value)
        error = self.query_one("#error", Static)
        if not name:
            error.update("A name is needed.")
            return
        try:
            await self.submit(name, board_type)
        except Exception as exc:
            error.update(describe(exc))
            self.notify(describe(exc), title="add board failed", severity="error", timeout=10)
            return
        self.dismiss(name)

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.dismiss(None)


VIEWS = ("boards", "apps", "logs", "enroll")


class CommandBar(ModalScreen[str | None]):
    """k9s-style ``:`` prompt at the bottom: ``:boards``, ``:apps``, ``:logs``, ``:enroll``."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "cancel")]

    def compose(self) -> ComposeResult:
        yield Input(placeholder="boards | apps | logs | enroll", id="command",
                    suggester=SuggestFromList(list(VIEWS) + [f":{v}" for v in VIEWS], case_sensitive=False))

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def action_cancel(self) -> None:
        self.dismiss(None)

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip().lstrip(":").strip() or None)
