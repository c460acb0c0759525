"""The gateway's event log: structured, human-readable events for logs views and tests.

Why a separate feed from the store's watch: the store says *what the state is* (phases, heartbeats); the
event log says *what happened and why* ("enrollment refused: pairing mode off, key ab:cd..", "TLS handshake
failed from 127.0.0.1:5000: certificate unknown"), including things that leave no trace in the store.

Every event is also written to the ``logging`` logger named after its source, so a headless gateway
logs the same lines a console shows. Subscribers get a bounded queue each: a slow front end loses its
oldest events (counted in ``dropped``), it never blocks the gateway or grows memory.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any

from .model import utcnow

DEFAULT_HISTORY = 1000
DEFAULT_SUBSCRIBER_QUEUE = 1000

_LOG = logging.getLogger("wasmbed.gateway")


class EventLevel(enum.StrEnum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


_LOG_LEVELS = {EventLevel.INFO: logging.INFO, EventLevel.WARNING: logging.WARNING, EventLevel.ERROR: logging.ERROR}


@dataclass(frozen=True)
class GatewayEvent:
    """One thing that happened. ``kind`` is a stable dotted identifier (filterable); ``message`` is for humans."""

    seq: int
    time: datetime
    level: EventLevel
    kind: str
    message: str
    device: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.time:%H:%M:%S} {self.level.value:<7} {self.message}"


class EventSubscription:
    """Async iterator of events for one subscriber; a context manager that unsubscribes."""

    def __init__(self, log: EventLog, initial: list[GatewayEvent], maxsize: int) -> None:
        self._log = log
        self._queue: deque[GatewayEvent] = deque(initial[-maxsize:], maxlen=maxsize)
        self._wakeup = asyncio.Event()
        self._closed = False
        self.dropped = 0

    def _offer(self, event: GatewayEvent) -> None:
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1  # deque(maxlen) drops the oldest on append
        self._queue.append(event)
        self._wakeup.set()

    def __aiter__(self) -> AsyncIterator[GatewayEvent]:
        return self

    async def __anext__(self) -> GatewayEvent:
        while not self._queue:
            if self._closed:
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()
        return self._queue.popleft()

    def close(self) -> None:
        """Unsubscribe; the iterator ends after the events already queued."""
        self._closed = True
        self._log._subscribers.discard(self)
        self._wakeup.set()

    def __enter__(self) -> EventSubscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> EventSubscription:
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.close()


class EventLog:
    """Ring buffer of recent events plus live subscribers. Single asyncio loop, like the store."""

    def __init__(self, history: int = DEFAULT_HISTORY) -> None:
        self._history: deque[GatewayEvent] = deque(maxlen=history)
        self._subscribers: set[EventSubscription] = set()
        self._seq = 0

    def emit(self, kind: str, message: str, *, level: EventLevel = EventLevel.INFO, device: str | None = None,
             logger: logging.Logger | None = None, **fields: Any) -> GatewayEvent:
        """Record, log and publish one event."""
        self._seq += 1
        event = GatewayEvent(self._seq, utcnow(), level, kind, message, device, dict(fields))
        self._history.append(event)
        (logger or _LOG).log(_LOG_LEVELS[level], "%s", message)
        for sub in list(self._subscribers):
            sub._offer(event)
        return event

    def recent(self, n: int | None = None, *, kind: str | None = None) -> list[GatewayEvent]:
        """The last ``n`` events (all kept if None), optionally only those whose kind starts with ``kind``."""
        events = [e for e in self._history if kind is None or e.kind.startswith(kind)]
        return events if n is None else events[-n:]

    def subscribe(self, *, history: bool = True, maxsize: int = DEFAULT_SUBSCRIBER_QUEUE) -> EventSubscription:
        """Live feed, registered before this returns; with ``history`` it starts with the kept events."""
        sub = EventSubscription(self, list(self._history) if history else [], maxsize)
        self._subscribers.add(sub)
        return sub

    def close(self) -> None:
        """End every subscription (their iterators finish after the queued events)."""
        for sub in list(self._subscribers):
            sub.close()
