"""Turning failures of user actions into readable notifications (never a traceback on screen)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import TypeVar

from textual.dom import DOMNode

from wasmbed.dts import DtsError
from wasmbed.gateway.facade import GatewayError, PermissionDenied
from wasmbed.gateway.model import InvalidTransition, ModelError
from wasmbed.gateway.store import StoreError
from wasmbed.gateway.supervisor import SupervisorError

_LOG = logging.getLogger("wasmbed.console")
T = TypeVar("T")

#: Errors whose message is written for users: shown as is.
EXPECTED: tuple[type[BaseException], ...] = (SupervisorError, PermissionDenied, GatewayError, ModelError, StoreError,
                                            DtsError, InvalidTransition, OSError, ValueError, TimeoutError)


def describe(exc: BaseException) -> str:
    if isinstance(exc, EXPECTED):
        text = str(exc)
        if isinstance(exc, OSError) and exc.strerror:
            text = f"{exc.strerror}" + (f": {exc.filename}" if exc.filename else "")
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def notify_error(node: DOMNode, what: str, exc: BaseException) -> None:
    if not isinstance(exc, EXPECTED):
        _LOG.error("%s failed", what, exc_info=exc)  # the traceback goes to the log file, not the screen
    node.notify(describe(exc), title=f"{what} failed", severity="error", timeout=10)


async def guarded(node: DOMNode, what: str, aw: Awaitable[T]) -> T | None:
    """Await ``aw``; on failure notify (title: "<what> failed") and return None."""
    try:
        return await aw
    except Exception as exc:
        notify_error(node, what, exc)
        return None
