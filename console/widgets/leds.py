"""LEDs drawn as coloured dots, in DTS order, with their names."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static


class LedStrip(Static):
    """``states`` None means "unknown" (board not running)."""

    states: reactive[tuple[bool, ...] | None] = reactive(None)

    def __init__(self, names: list[str], **kw: object) -> None:
        super().__init__("", **kw)  # type: ignore[arg-type]
        self.names = names

    def render(self) -> Text:
        if not self.names:
            return Text("no LEDs in the device tree", style="italic")
        v = self.app.theme_variables
        on, off = v.get("led-on", "red"), v.get("led-off", "grey30")
        out = Text()
        for i, name in enumerate(self.names):
            state = None if self.states is None or i >= len(self.states) else self.states[i]
            dot = "●" if state else ("○" if state is False else "·")
            out.append(dot, style=f"bold {on}" if state else off)
            out.append(f" {name}  ")
        return out
