"""A Textual driver that runs one app over one SSH channel, inside the server's event loop.

Textual builds the driver itself (``App.driver_class``), so the driver finds its channel through the
:class:`SSHTerminal` that :func:`attach` stores on the app. Everything runs on the loop thread: no
threads, no signal handlers, no access to the process's stdin/stdout.

Slow clients: a channel write never blocks, so a client that stops reading would make the server buffer
every frame. The session tells the terminal when asyncssh's send buffer crosses its high-water mark
(:meth:`SSHTerminal.pause`); while paused, frames are dropped (the compositor keeps the true screen), and
on resume the whole screen is sent once. A client paused for longer than ``stall_close_s`` is
disconnected. Both are logged. Memory per session is thus bounded by the client's SSH window plus the
high-water mark plus one frame.

This uses Textual internals (the xterm parser, the app's stdout capture objects, the Rich console's
colour system, the screen's compositor): Textual is pinned in pyproject.toml and tests/test_ssh.py
exercises the driver.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from rich.console import ColorSystem
from textual import constants, events
from textual._xterm_parser import XTermParser
from textual.app import App
from textual.driver import Driver
from textual.geometry import Size
from textual.messages import Message

log = logging.getLogger(__name__)

_TERMINAL_ATTR = "_wasmbed_ssh_terminal"
WRITE_HIGH_WATER = 256 * 1024  # unsent bytes (beyond the client's SSH window) before frames are dropped
WRITE_LOW_WATER = 32 * 1024  # ...and below which the screen is sent again
STALL_CLOSE_S = 60.0  # a client that reads nothing for this long while paused is disconnected

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
                 task_factory: Callable[..., Any] | None = None, env: Mapping[str, str] | None = None,
                 name: str = "?", stall_close_s: float = STALL_CLOSE_S) -> None:
        self.channel = channel  # asyncssh.SSHServerChannel
        self.size = size
        self.term_type = term_type
        self.env = dict(env or {})
        self.task_factory = task_factory  # the loop's own factory, restored after Textual changes it
        self.name = name  # for log lines: who is on the other end
        self.stall_close_s = stall_close_s
        self.driver: SSHDriver | None = None
        self.paused = False
        self.frames_dropped = 0
        self.bytes_dropped = 0
        self.stalled = False  # closed because the client stopped reading
        self._drop_logged = False
        self._paused_at = 0.0
        self._stall_handle: asyncio.TimerHandle | None = None
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

    # -- flow control (called by the SSH session) ----------------------------------------------------------

    def pause(self) -> None:
        """The channel's send buffer passed its high-water mark: drop frames until it drains."""
        if self.paused:
            return
        self.paused = True
        self._drop_logged = False
        self._paused_at = time.monotonic()
        with contextlib.suppress(RuntimeError):
            self._stall_handle = asyncio.get_running_loop().call_later(self.stall_close_s, self._stall)

    def resume(self) -> None:
        """The client caught up: send the current screen (frames were dropped meanwhile)."""
        if not self.paused:
            return
        self.paused = False
        if self._stall_handle is not None:
            self._stall_handle.cancel()
            self._stall_handle = None
        if self.driver is not None:
            self.driver.repaint()
        if self._drop_logged:
            log.info("slow client %s caught up after %.1f s; %d frames dropped so far", self.name,
                     time.monotonic() - self._paused_at, self.frames_dropped)

    def dropped(self, nbytes: int) -> None:
        """A frame was not sent (one log line per pause)."""
        if not self._drop_logged:
            self._drop_logged = True
            log.warning("slow client %s: %d bytes unsent, dropping frames until it reads", self.name,
                        self.unsent())
        self.frames_dropped += 1
        self.bytes_dropped += nbytes

    def unsent(self) -> int:
        try:
            return int(self.channel.get_write_buffer_size())
        except Exception:
            return 0

    def _stall(self) -> None:
        self._stall_handle = None
        if not self.paused or self.closing:
            return
        self.stalled = True
        log.warning("slow client %s read nothing for %.0f s (%d bytes unsent): closing the session", self.name,
                    self.stall_close_s, self.unsent())
        # A clean close would wait for the unsent data; the whole TCP connection is stuck behind it anyway.
        with contextlib.suppress(Exception):
            self.channel.get_connection().abort()

    def release(self) -> None:
        """The session ended: stop the stall timer, let go of the driver."""
        if self._stall_handle is not None:
            self._stall_handle.cancel()
            self._stall_handle = None
        self.driver = None
        self._pending.clear()

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
        if self.terminal.paused:
            self.terminal.dropped(len(data))
            return
        with contextlib.suppress(Exception):
            self.terminal.channel.write(data)

    def repaint(self) -> None:
        """Have the whole screen sent again (after dropped frames the client's screen is out of date).

        Done in Textual's own update cycle (a full repaint of the current screen on its next refresh), so
        any pending layout is applied first and nothing is rendered twice or skipped."""
        app = self._app
        if not self._input or not app._screen_stack:
            return
        screen = app.screen
        compositor = screen._compositor
        compositor._dirty_regions.add(compositor.size.region)  # the whole screen: a full update, not a partial one
        screen._repaint_required = True
        screen.refresh()

    # -- application mode ----------------------------------------------------------------------------------

    def start_application_mode(self) -> None:
        self.write(_START)
        self.flush()
        width, height = self._size or self.terminal.size
        self._post_resize(width, height)
        self._input = True
        self.terminal._bind(self)

    def _replace_parser(self, fresh: bool = True) -> None:
        """Retire the parser. Textual's XTermParser memoises ``_parse_extended_key`` in a class-wide LRU
        cache keyed by parser instance, so a retired parser lives on there, and its suspended parse
        generator still holds the last key events, which reference the app: close the generator so an
        ended session's app can be freed."""
        with contextlib.suppress(Exception):
            self._parser._gen.close()
        if fresh:
            self._parser = XTermParser(False)

    def disable_input(self) -> None:
        self._input = False
        self._replace_parser(fresh=False)
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
            self._replace_parser()
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
            self._replace_parser()

    def resize(self, width: int, height: int) -> None:
        self._size = (width, height)
        self._post_resize(width, height)

    def _post_resize(self, width: int, height: int) -> None:
        size = Size(width, height)
        self._app.post_message(events.Resize(size, size))
