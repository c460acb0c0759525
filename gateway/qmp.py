"""A small asyncio client for QEMU's machine protocol (QMP) on a unix socket.

Why our own: the supervisor needs only a handful of commands (quit, system_reset, qom-get/-set,
human-monitor-command) plus the event stream, and must not leak tasks or sockets when a QEMU
process dies under it. The protocol is one JSON object per line:

* QEMU greets with ``{"QMP": {...}}``; nothing but ``qmp_capabilities`` is accepted until it is sent.
* Every command carries an ``id`` that QEMU echoes in its ``return``/``error`` reply, so several
  calls can be in flight; asynchronous ``{"event": ...}`` messages arrive interleaved.
* ``-qmp unix:PATH,server=on,wait=off`` creates the socket while QEMU starts up; a connect before
  that fails with ENOENT (or ECONNREFUSED on a stale file), hence :meth:`QmpClient.connect` retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["QmpClient", "QmpClientError", "QmpConnectionError", "QmpError", "QmpEvent", "QmpTimeout"]

_log = logging.getLogger(__name__)
_LINE_LIMIT = 16 * 1024 * 1024  # qom-list/query-* replies can be large; one reply is one line


class QmpClientError(Exception):
    """Base of everything this module raises."""


class QmpError(QmpClientError):
    """QEMU answered a command with an error (``class`` is e.g. GenericError, CommandNotFound)."""

    def __init__(self, error_class: str, desc: str):
        super().__init__(f"{error_class}: {desc}")
        self.error_class = error_class
        self.desc = desc


class QmpConnectionError(QmpClientError):
    """No QMP socket to talk to: QEMU never created it, went away, or the client was closed."""


class QmpTimeout(QmpClientError, TimeoutError):
    """QEMU did not answer in time (it may be wedged or stopped)."""


@dataclass(frozen=True)
class QmpEvent:
    """An asynchronous QMP event, e.g. RESET {"guest": false, "reason": "host-qmp-system-reset"}."""

    name: str
    data: dict[str, Any] = field(default_factory=dict)
    #: host wall-clock seconds QEMU stamped the event with
    timestamp: float = 0.0


class QmpClient:
    """One QMP connection. Create it with :meth:`connect`; always :meth:`close` it.

    Events go to :attr:`events` (bounded; the oldest is dropped when nobody drains it) and to the
    optional ``on_event`` callback, which runs in the reader task and must not block.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, greeting: dict[str, Any], *,
                 on_event: Callable[[QmpEvent], None] | None = None, max_events: int = 256,
                 default_timeout: float = 5.0):
        self._reader = reader
        self._writer = writer
        self.greeting = greeting
        self.on_event = on_event
        self.default_timeout = default_timeout
        self.events: asyncio.Queue[QmpEvent] = asyncio.Queue(max_events)
        self.events_dropped = 0
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._closed = False
        self._lost: Exception | None = None
        self._reader_task = asyncio.get_running_loop().create_task(self._read_loop(), name="qmp-reader")

    # ---- connection ------------------------------------------------------------------------
    @classmethod
    async def connect(cls, path: str | Path, *, timeout: float = 10.0, retry_interval: float = 0.05,
                      alive: Callable[[], bool] | None = None,
                      on_event: Callable[[QmpEvent], None] | None = None) -> QmpClient:
        """Connect (retrying until QEMU has created the socket), read the greeting, negotiate.

        ``alive`` is polled between retries so that a QEMU that died during start-up fails the
        connect at once instead of after ``timeout``.
        """
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while True:
            if alive is not None and not alive():
                raise QmpConnectionError(f"QEMU exited before its QMP socket {path} was ready")
            try:
                reader, writer = await asyncio.open_unix_connection(str(path), limit=_LINE_LIMIT)
                break
            except (FileNotFoundError, ConnectionRefusedError) as e:
                last = e
            if time.monotonic() >= deadline:
                raise QmpConnectionError(f"no QMP socket at {path} after {timeout:g} s ({last})")
            await asyncio.sleep(retry_interval)
        try:
            line = await asyncio.wait_for(reader.readline(), max(0.5, deadline - time.monotonic()))
            greeting = json.loads(line) if line else None
            if not isinstance(greeting, dict) or "QMP" not in greeting:
                raise QmpConnectionError(f"{path}: no QMP greeting (got {line[:80]!r})")
        except (TimeoutError, OSError, ValueError) as e:
            writer.close()
            raise QmpConnectionError(f"{path}: no QMP greeting ({e or type(e).__name__})") from None
        except BaseException:
            writer.close()
            raise
        client = cls(reader, writer, greeting["QMP"], on_event=on_event)
        try:
            await client.execute("qmp_capabilities")
        except BaseException:
            await client.close()
            raise
        return client

    @property
    def connected(self) -> bool:
        return not self._closed and self._lost is None

    async def close(self) -> None:
        """Close the socket and end the reader task; pending calls fail with QmpConnectionError."""
        if not self._closed:
            self._closed = True
            self._writer.close()
            self._fail_pending(QmpConnectionError("QMP connection closed"))
        self._reader_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader_task
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()

    async def __aenter__(self) -> QmpClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---- commands --------------------------------------------------------------------------
    async def execute(self, command: str, /, arguments: Mapping[str, Any] | None = None, *,
                      timeout: float | None = None, **kwargs: Any) -> Any:
        """Run one command and return its ``return`` value; QMP errors raise :class:`QmpError`.

        Arguments whose names are not Python identifiers (most: ``command-line``) go in
        ``arguments``; keyword arguments are merged into it unchanged.
        """
        if self._closed:
            raise QmpConnectionError("QMP connection closed")
        if self._lost is not None:
            raise QmpConnectionError(f"QMP connection lost ({self._lost})")
        args = {**(arguments or {}), **kwargs}
        msg_id = next(self._ids)
        msg: dict[str, Any] = {"execute": command, "id": msg_id}
        if args:
            msg["arguments"] = args
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = fut
        try:
            self._writer.write(json.dumps(msg).encode() + b"\n")
            await self._writer.drain()
            return await asyncio.wait_for(fut, self.default_timeout if timeout is None else timeout)
        except TimeoutError:
            raise QmpTimeout(f"QMP command {command!r} got no answer in "
                             f"{self.default_timeout if timeout is None else timeout:g} s") from None
        except (ConnectionError, OSError) as e:
            raise QmpConnectionError(f"QMP connection lost ({e})") from None
        finally:
            self._pending.pop(msg_id, None)

    async def qom_get(self, path: str, prop: str, *, timeout: float | None = None) -> Any:
        return await self.execute("qom-get", {"path": path, "property": prop}, timeout=timeout)

    async def qom_set(self, path: str, prop: str, value: Any, *, timeout: float | None = None) -> None:
        await self.execute("qom-set", {"path": path, "property": prop, "value": value}, timeout=timeout)

    async def hmp(self, command_line: str, *, timeout: float | None = None) -> str:
        """A human-monitor command (for what QMP has no command for, e.g. ``xp``); returns its text."""
        out = await self.execute("human-monitor-command", {"command-line": command_line}, timeout=timeout)
        return str(out)

    async def read_u32(self, addr: int, *, timeout: float | None = None) -> int:
        """One 32-bit word of guest physical memory (MMIO registers included) via HMP ``xp``.

        QMP has no memory-read command; ``xp /1wx`` prints ``00000000203ff000: 0x50424257``.
        """
        if not 0 <= addr <= 0xFFFF_FFFF or addr % 4:
            raise ValueError(f"read_u32: address 0x{addr:x} is not a 32-bit aligned address")
        out = await self.hmp(f"xp /1wx 0x{addr:x}", timeout=timeout)
        m = re.search(r"^[0-9a-fA-F]+:\s+0x([0-9a-fA-F]{1,8})\s*$", out.strip(), re.MULTILINE)
        if m is None:
            raise QmpError("GenericError", f"cannot read 0x{addr:08x}: {out.strip() or 'no output'}")
        return int(m.group(1), 16)

    async def wait_event(self, name: str, timeout: float = 10.0) -> QmpEvent:
        """Take events off :attr:`events` until one called ``name`` arrives (others are discarded)."""
        async with asyncio.timeout(timeout):
            while True:
                ev = await self.events.get()
                if ev.name == name:
                    return ev

    # ---- reader ----------------------------------------------------------------------------
    async def _read_loop(self) -> None:
        try:
            while True:
                line = await self._reader.readline()
                if not line:
                    raise ConnectionResetError("QEMU closed the QMP socket")
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue  # not ours to fix; a later reply still resolves its own id
                if not isinstance(msg, dict):
                    continue
                if "event" in msg:
                    self._dispatch_event(msg)
                    continue
                fut = self._pending.get(msg.get("id"))  # type: ignore[arg-type]
                if fut is None or fut.done():
                    continue  # a reply to a call that timed out
                if "error" in msg:
                    err = msg["error"] or {}
                    fut.set_exception(QmpError(str(err.get("class", "GenericError")), str(err.get("desc", ""))))
                else:
                    fut.set_result(msg.get("return"))
        except asyncio.CancelledError:
            raise
        except Exception as e:  # EOF, reset, over-long line: the connection is unusable either way
            self._lost = e
            self._fail_pending(QmpConnectionError(f"QMP connection lost ({e})"))

    def _dispatch_event(self, msg: dict[str, Any]) -> None:
        ts = msg.get("timestamp") or {}
        ev = QmpEvent(str(msg["event"]), msg.get("data") or {},
                      float(ts.get("seconds", 0)) + float(ts.get("microseconds", 0)) / 1e6)
        if self.events.full():
            self.events.get_nowait()
            self.events_dropped += 1
        self.events.put_nowait(ev)
        if self.on_event is not None:
            try:
                self.on_event(ev)
            except Exception:  # a consumer's bug must not take the connection down
                _log.exception("QMP event callback failed on %s", ev.name)

    def _fail_pending(self, exc: Exception) -> None:
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(exc)
        self._pending.clear()
