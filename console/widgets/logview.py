"""A bounded, filterable, searchable log: what the board console and the Logs view are made of.

Entries are kept (up to ``limit``) independently of what is shown, so changing the filter re-renders
from the kept entries. Matches of the search text are highlighted; ``next_match``/``prev_match`` scroll
to them. ``follow`` keeps the view at the end as entries arrive.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from rich.text import Text
from textual.widgets import RichLog


@dataclass(frozen=True)
class Entry:
    time: float  # time.time()
    source: str  # board name or "gateway"
    level: str  # info | warning | error
    text: str
    kind: str = ""  # console | qemu | supervisor | build | event kind


class LogView(RichLog):
    def __init__(self, *, limit: int = 5000, show_source: bool = True, **kw: object) -> None:
        super().__init__(max_lines=limit, wrap=False, markup=False, highlight=False, auto_scroll=True, **kw)  # type: ignore[arg-type]
        self.entries: deque[Entry] = deque(maxlen=limit)
        self.show_source = show_source
        self.predicate: Callable[[Entry], bool] = lambda e: True
        self.search = ""
        self._search_re: re.Pattern[str] | None = None
        self._shown: list[Entry] = []
        self._match_lines: list[int] = []
        self._match_pos = -1
        self.follow = True

    # -- content ---------------------------------------------------------------------------------------

    def add(self, entry: Entry) -> None:
        self.entries.append(entry)
        if self.predicate(entry):
            self._show(entry)

    def _show(self, entry: Entry) -> None:
        if len(self._shown) >= (self.max_lines or 10**9):
            self._shown.pop(0)
            self._match_lines = [i - 1 for i in self._match_lines if i > 0]
        self._shown.append(entry)
        text = self.format(entry)
        if self._search_re is not None and self._search_re.search(entry.text):
            self._match_lines.append(len(self._shown) - 1)
        self.write(text, scroll_end=self.follow)

    def format(self, e: Entry) -> Text:
        stamp = dt.datetime.fromtimestamp(e.time).strftime("%H:%M:%S.%f")[:-3]
        v = self.app.theme_variables
        level_style = {"warning": v.get("phase-warn", "yellow"), "error": v.get("phase-bad", "red")}.get(e.level, "")
        out = Text(no_wrap=True)
        out.append(stamp + " ", style=v.get("phase-idle", "grey50"))
        if self.show_source:
            out.append(f"{e.source:<12.12} ", style="bold")
            out.append(f"{e.level:<7} ", style=level_style)
        body = Text(e.text, style=level_style if e.kind in ("qemu", "supervisor", "build") or e.level != "info"
                    else "")
        if self._search_re is not None:
            body.highlight_regex(self._search_re, style=f"reverse {v.get('match', 'yellow')}")
        out.append_text(body)
        return out

    def refilter(self) -> None:
        """Re-render the kept entries through the current predicate and search."""
        self.clear()
        self._shown = []
        self._match_lines = []
        self._match_pos = -1
        for e in self.entries:
            if self.predicate(e):
                self._show(e)
        if self.follow:
            self.scroll_end(animate=False)

    def set_search(self, text: str) -> None:
        self.search = text
        self._search_re = re.compile(re.escape(text), re.IGNORECASE) if text else None
        self.refilter()

    @property
    def matches(self) -> int:
        return len(self._match_lines)

    @property
    def shown(self) -> list[Entry]:
        return list(self._shown)

    # -- navigation ------------------------------------------------------------------------------------

    def next_match(self, step: int = 1) -> int | None:
        """Scroll to the next (or previous) match; pauses following. Returns the line index or None."""
        if not self._match_lines:
            return None
        self.follow = False
        self.auto_scroll = False
        self._match_pos = (self._match_pos + step) % len(self._match_lines)
        line = self._match_lines[self._match_pos]
        self.scroll_to(y=max(0, line - self.scrollable_content_region.height // 2), animate=False)
        return line

    def set_follow(self, on: bool) -> None:
        self.follow = on
        self.auto_scroll = on
        if on:
            self.scroll_end(animate=False)
