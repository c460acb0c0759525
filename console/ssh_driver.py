"""A Textual driver that runs one app over one SSH channel, inside the server's event loop.

Textual builds the driver itself (``App.driver_class``), so the driver finds its channel through the
:class:`SSHTerminal` that :func:`attach` stores on the app. Everything runs on the loop thread: no
threads, no signal handlers, no access to the process's stdin/stdout.

This uses Textual internals (the xterm parser, the app's stdout capture objects, the Rich console's
colour system): Textual is pinned in pyproject.toml and tests/test_ssh.py exercises the driver.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from rich.console import ColorSystem
from textual import constants, events
from textual._xterm_parser import XTermParser
from textual.app import App
from textual.driver import Driver
from textual.geometry import Size
from textual.messages import Message

_TERMINAL_ATTR = "_wasmbed_ssh_terminal"

# Terminal set-up on start; the reverse (in reverse order) on stop.
_START = (
    "\x1b[?1049h"  # alternate screen
    "\x1b[?1000h\x1b[?1003h\x1b[?1015h\x1b[?1006h"  # mouse: clicks, any motion, urxvt and SGR encodings
    "\x1b[?25l"  # hide cursor
    "\x1b[?1004h"  # focus in/out events
    "\x1b[?2004h"  # bracketed paste
    "\x1b[?7l"  # no line wrap
)
_STOP = (
    "\x1b[?7h"
    "\x1b[?2004l"
    "\x1b[?1004l"
    "\x1b[?1000l\x1b[?1003l\x1b[?1015l\x1b[?1006l"
    "\x1b[?1049l"
    "\x1b[?25h"
)


def color_system_for(term_type: str, env: Mapping[str, str] | None = None) -> ColorSystem | None:
    """The colour depth a client terminal supports, from its PTY terminal type (and COLORTERM if sent)."""
    term = (term_type or "").lower()
    colorterm = ((env or {}).get("COLORTERM") or "").lower()
    if colorterm in ("truecolor", "24bit") or any(t in term for t in ("truecolor", "24bit", "direct")):
        return ColorSystem.TRUECOLOR
    if term in ("", "dumb"):
        return None
    if "256" in term:
        return ColorSystem.EIGHT_BIT
    return ColorSystem.STANDARD


class SSHTerminal:
    """One SSH session's terminal as seen by its app: the channel, the PTY's size and type, input routing."""

    def __init__(self, channel: Any, size: tuple[int, int], term_type: str, *,
                 task_factory: Callable[..., Any] | None = None, env: Mapping[str, str] | None = None) -> None:
        self.channel = channel  # asyncssh.SSHServerChannel (only write/is_closing are used)
        self.size = size
        self.term_type = term_type
        self.env = dict(env or {})
        self.task_factory = task_factory  # the loop's own factory, restored after Textual changes it
        self.driver: SSHDriver | None = None
        self._pending: list[str] = []

    @property
    def closing(self) -> bool:
        try:
            return bool(self.channel.is_closing())
        except Exception:
            return True

    def feed(self, data: str) -> None:
        """Input from the client (decoded text)."""
        if self.driver is not None:
            self.driver.feed(data)
        else:
            self._pending.append(data)

    def resize(self, width: int, height: int) -> None:
        if width <= 0 or height <= 0:
            return
        self.size = (width, height)
        if self.driver is not None:
            self.driver.resize(width, height)

    def _bind(self, driver: SSHDriver | None) -> None:
        self.driver = driver
        if driver is not None and self._pending:
            pending, self._pending = self._pending, []
            for data in pending:
                driver.feed(data)


def attach(app: App[Any], terminal: SSHTerminal, *, stdout: TextIO, stderr: TextIO) -> None:
    """Make ``app`` run on ``terminal`` (call before ``app.run_async``).

    ``stdout``/``stderr`` are the server's own streams: Textual redirects sys.stdout/stderr to them while
    the app runs, so overlapping sessions restoring them in any order always leave the server's streams.
    """
    setattr(app, _TERMINAL_ATTR, terminal)
    app.driver_class = SSHDriver
    app._capture_stdout = stdout  # type: ignore[assignment]
    app._capture_stderr = stderr  # type: ignore[assignment]
    app.console._color_system = color_system_for(terminal.term_type, terminal.env)


class SSHDriver(Driver):
    """Terminal I/O of one app over its SSH channel. Created by Textual with the app (see :func:`attach`)."""

    def __init__(self, app: App[Any], *, debug: bool = False, mouse: bool = True,
                 size: tuple[int, int] | None = None) -> None:
        terminal: SSHTerminal = getattr(app, _TERMINAL_ATTR)
        super().__init__(app, debug=False, mouse=mouse, size=size or terminal.size)
        self.terminal = terminal
        # Python >= 3.12: App.run_async switched the whole loop to eager task start, which stalls
        # asyncssh's other connections; give the loop its own factory back (a no-op on 3.11).
        if hasattr(asyncio, "eager_task_factory"):
            self._loop.set_task_factory(terminal.task_factory)
        self._parser = XTermParser(False)
        self._buffer: list[str] = []
        self._tick_handle: asyncio.TimerHandle | None = None
        self._input = False

    # -- output ------------------------------------------------------------------------------------------

    def write(self, data: str) -> None:
        if data:
            self._buffer.append(data)

    def flush(self) -> None:
        """Send what this frame wrote as one channel write (nothing once the client is gone)."""
        if not self._buffer:
            return
        data = "".join(self._buffer)
        self._buffer.clear()
        if self.terminal.closing:
            return
        with contextlib.suppress(Exception):
            self.terminal.channel.write(data)

    # -- application mode ----------------------------------------------------------------------------------

    def start_application_mode(self) -> None:
        self.write(_START)
        self.flush()
        width, height = self._size or self.terminal.size
        self._post_resize(width, height)
        self._input = True
        self.terminal._bind(self)

    def disable_input(self) -> None:
        self._input = False
        if self._tick_handle is not None:
            self._tick_handle.cancel()
            self._tick_handle = None
        if self.terminal.driver is self:
            self.terminal._bind(None)

    def stop_application_mode(self) -> None:
        self.disable_input()
        self.write(_STOP)
        self.flush()

    # -- input -------------------------------------------------------------------------------------------

    def send_message(self, message: Message) -> None:
        # Already on the app's loop thread: post directly (the base class schedules a coroutine).
        self._app.post_message(message)

    def feed(self, data: str) -> None:
        if not self._input:
            return
        try:
            for message in self._parser.feed(data):
                self.process_message(message)
        except Exception:  # a parse error must not kill the session; drop the garbled input
            self._parser = XTermParser(False)
        # A lone ESC (or a partial sequence) is resolved by the parser's clock.
        if self._tick_handle is not None:
            self._tick_handle.cancel()
        self._tick_handle = self._loop.call_later(constants.ESCAPE_DELAY + 0.01, self._tick)

    def _tick(self) -> None:
        self._tick_handle = None
        if not self._input:
            return
        try:
            for message in self._parser.tick():
                self.process_message(message)
        except Exception:
            self._parser = XTermParser(False)

    def resize(self, width: int, height: int) -> None:
        self._size = (width, height)
        self._post_resize(width, height)

    def _post_resize(self, width: int, height: int) -> None:
        size = Size(width, height)
        self._app.post_message(events.Resize(size, size))
