"""The audit log: who did (or tried to do) what, one JSON line per mutating facade action.

Every mutating :class:`~wasmbed.gateway.facade.Gateway` method is wrapped with :func:`audited`, so each call
from any front end (local console, SSH console, SSH exec, headless CLI) leaves exactly one record, whether it
was carried out (``"ok"``), refused by the role check (``"denied"``) or failed (``"error: ..."``).

A record is appended to ``<log dir>/audit.log`` (created 0600; rotated to ``audit.log.1`` ... ``.5`` when it
passes 10 MiB, so a busy lab keeps its recent history without filling the disk) as

    {"time": "2026-01-02T03:04:05.123456Z", "user": "bob", "role": "viewer", "action": "deploy",
     "target": "hello", "result": "denied"}

(plus ``"detail"`` when the action has more to say, e.g. deployment targets), and published on the event log
as ``audit.ok`` / ``audit.denied`` / ``audit.error`` so logs views show it live.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import logging
import os
import threading
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from wasmbed import paths

from .events import EventLevel, EventLog
from .model import utcnow

if TYPE_CHECKING:
    from .facade import Caller

AUDIT_FILE = "audit.log"
ROTATE_BYTES = 10 * 1024 * 1024
ROTATE_KEEP = 5
_TARGET_MAX = 200

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


def audit_path() -> Path:
    return paths.log_dir() / AUDIT_FILE


def describe(value: Any) -> str | None:
    """A short text for an action's target or detail (None for things with no useful text, e.g. bytes)."""
    if value is None or isinstance(value, bytes | bytearray):
        return None
    if isinstance(value, Mapping):
        text = ",".join(f"{k}={v}" for k, v in value.items())
    elif isinstance(value, list | tuple | set | frozenset):
        text = ",".join(str(v) for v in value)
    elif hasattr(value, "devices") and hasattr(value, "selector"):  # AppTargets
        parts = list(value.devices or [])
        parts += [f"{k}={v}" for k, v in (value.selector or {}).items()]
        text = ",".join(parts)
    elif isinstance(value, Path):
        text = value.name
    else:
        text = str(value)
        if "\n" in text:  # module source text, not a name
            return None
    return text if len(text) <= _TARGET_MAX else text[:_TARGET_MAX - 1] + "…"


class AuditLog:
    """Appends records to one file and publishes them as ``audit.*`` events."""

    def __init__(self, events: EventLog, path: Path | None = None, *, rotate_bytes: int = ROTATE_BYTES,
                 keep: int = ROTATE_KEEP) -> None:
        self.events = events
        self.path = path if path is not None else audit_path()
        self.rotate_bytes, self.keep = rotate_bytes, keep
        self._lock = threading.Lock()

    def record(self, caller: Caller, action: str, target: str | None, result: str, *,
               detail: str | None = None, message: str | None = None) -> dict[str, Any]:
        """Write and publish one record. ``result`` is "ok", "denied" or "error: <why>"."""
        role = caller.role.name.lower()
        rec: dict[str, Any] = {"time": utcnow().isoformat().replace("+00:00", "Z"), "user": caller.user,
                               "role": role, "action": action, "target": target, "result": result}
        if detail:
            rec["detail"] = detail
        self._append(rec)
        kind = result.split(":", 1)[0]
        level = {"ok": EventLevel.INFO, "denied": EventLevel.WARNING}.get(kind, EventLevel.ERROR)
        if message is None:
            what = action + (f" {target}" if target else "")
            message = (f"audit: {caller.user} ({role}) {what}: {result}" if kind != "denied"
                       else f"denied: {caller.user} ({role}) tried to {what}")
        self.events.emit(f"audit.{kind}", message, level=level, user=caller.user, role=role, action=action,
                         target=target, result=result)
        return rec

    def _append(self, rec: dict[str, Any]) -> None:
        line = json.dumps(rec, ensure_ascii=False, default=str) + "\n"
        try:
            with self._lock:
                self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                self._rotate_if_full(len(line.encode()))
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    os.write(fd, line.encode())
                finally:
                    os.close(fd)
        except OSError as exc:  # never let a full disk turn into a refused action; say so loudly instead
            log.error("cannot write audit log %s: %s", self.path, exc)


    def _rotate_if_full(self, incoming: int) -> None:
        """audit.log -> audit.log.1 -> ... -> audit.log.<keep> (the oldest is dropped), before it passes the limit."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return
        if size == 0 or size + incoming <= self.rotate_bytes:
            return
        for i in range(self.keep - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{i + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        log.info("audit log rotated at %d bytes: %s.1", size, self.path)

    def tail(self, n: int) -> list[dict[str, Any]]:
        """The last ``n`` records on disk, oldest first (across rotated files; unreadable lines skipped)."""
        out: list[dict[str, Any]] = []
        with self._lock:
            for path in self.files():
                try:
                    lines = path.read_text(errors="replace").splitlines()
                except OSError:
                    continue
                for line in reversed(lines):
                    with contextlib.suppress(ValueError):
                        rec = json.loads(line)
                        if isinstance(rec, dict):
                            out.append(rec)
                    if len(out) >= n:
                        return out[::-1]
        return out[::-1]

    def files(self) -> list[Path]:
        """The current file and its rotated predecessors, newest first (those that exist)."""
        names = [self.path] + [self.path.with_name(f"{self.path.name}.{i}") for i in range(1, self.keep + 1)]
        return [p for p in names if p.exists()]


def audited(action: str, target: str | None = None, detail: str | None = None
            ) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Awaitable[T]]]:
    """Wrap an async facade method ``(self, caller, ...)``: one audit record per call.

    ``target``/``detail`` name the method parameters whose values are recorded. The instance must have an
    ``audit`` attribute (an :class:`AuditLog`); ``PermissionDenied`` is recognised by its ``action`` text.
    """

    def deco(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            from .facade import PermissionDenied

            bound = sig.bind_partial(*args, **kwargs)
            self, caller = bound.arguments["self"], bound.arguments["caller"]
            tgt = describe(bound.arguments.get(target)) if target else None
            det = describe(bound.arguments.get(detail)) if detail else None
            audit: AuditLog = self.audit
            try:
                res = await fn(*args, **kwargs)
            except PermissionDenied as exc:
                role = caller.role.name.lower()
                audit.record(caller, action, tgt, "denied", detail=det,
                             message=f"denied: {caller.user} ({role}) tried to {exc.action}")
                raise
            except Exception as exc:
                audit.record(caller, action, tgt, f"error: {exc}", detail=det)
                raise
            audit.record(caller, action, tgt, "ok", detail=det)
            return res

        return wrapper

    return deco
