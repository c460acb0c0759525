"""The lab: emulated boards the gateway runs itself, kept as ``Board`` resources in the store.

The supervisor (supervisor.py) manages QEMU processes and knows nothing of the store; this module is
the glue. It persists the board list (so a restarted console brings its boards back), mirrors each
process's state into ``Board.status``, starts ``autostart`` boards with the gateway, and hands each
board a fresh one-time enrollment token per start (unless ``auto_enroll`` is off), labelled so the
Device the board enrolls as carries ``wasmbed.github.io/lab-board: <board name>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging

from wasmbed.dts import board_names

from .enrollment import TokenRegistry
from .events import EventLevel, EventLog
from .model import LAB_BOARD_LABEL, Board, BoardSpec, Device, ObjectMeta
from .store import Store
from .supervisor import (
    BoardEvent,
    BoardProcess,
    DuplicateBoard,
    EventKind,
    Supervisor,
    SupervisorError,
    UnknownBoard,
    UnknownBoardType,
)

_LOG = logging.getLogger(__name__)

#: A token only needs to live from QEMU start to the firmware's first enroll_request.
TOKEN_TTL = dt.timedelta(minutes=10)


class Lab:
    """Board resources + the supervisor that runs them."""

    def __init__(self, store: Store, tokens: TokenRegistry, events: EventLog, supervisor: Supervisor) -> None:
        self.store = store
        self.tokens = tokens
        self.events = events
        self.supervisor = supervisor
        supervisor.token_provider = self._token_for
        self._mirror: asyncio.Task[None] | None = None
        self._starting: set[asyncio.Task[None]] = set()

    # -- lifecycle -------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Register every stored board with the supervisor and start the autostart ones."""
        self._mirror = asyncio.create_task(self._mirror_events(), name="lab-mirror")
        for board in self.store.list(Board):
            try:
                self._register(board)
            except SupervisorError as exc:
                self._set_status(board.name, state="failed", message=str(exc))
                continue
            if board.spec.autostart:
                task = asyncio.create_task(self._start_logged(board.name), name=f"lab-autostart-{board.name}")
                self._starting.add(task)
                task.add_done_callback(self._starting.discard)

    async def stop(self) -> None:
        for task in list(self._starting):
            task.cancel()
        await asyncio.gather(*self._starting, return_exceptions=True)
        await self.supervisor.shutdown()
        if self._mirror is not None:
            self._mirror.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._mirror
            self._mirror = None

    # -- operations (permission checks are the facade's) ----------------------------------------------

    def boards(self) -> list[Board]:
        return self.store.list(Board)

    def board(self, name: str) -> Board | None:
        return self.store.get(Board, name)

    def process(self, name: str) -> BoardProcess:
        return self.supervisor.get(name)

    def add(self, name: str, board_type: str, *, autostart: bool = True, auto_enroll: bool = True,
            icount_shift: int | None = None) -> Board:
        if board_type not in board_names():
            raise UnknownBoardType(f"unknown board type {board_type!r}; known types: {', '.join(board_names())}")
        if self.store.get(Board, name) is not None:
            raise DuplicateBoard(f"a board named {name!r} already exists")
        board = Board(metadata=ObjectMeta(name=name),
                      spec=BoardSpec(board_type=board_type, autostart=autostart, auto_enroll=auto_enroll,
                                     icount_shift=icount_shift))
        self._register(board)  # validates the name and the icount shift before anything is stored
        try:
            return self.store.create(board)
        except Exception:
            self.supervisor.remove(name)
            raise

    async def remove(self, name: str) -> Board:
        board = self._require(name)
        with contextlib.suppress(SupervisorError):
            await self.supervisor.stop(name)
        with contextlib.suppress(SupervisorError):
            self.supervisor.remove(name, delete_state=True)
        return self.store.delete(Board, board.name)

    async def start_board(self, name: str) -> BoardProcess:
        self._require(name)
        return await self.supervisor.start(name)

    async def stop_board(self, name: str) -> None:
        self._require(name)
        await self.supervisor.stop(name)

    async def reset_board(self, name: str) -> None:
        self._require(name)
        await self.supervisor.reset(name)

    async def power_cycle(self, name: str) -> BoardProcess:
        self._require(name)
        return await self.supervisor.power_cycle(name)

    def device_of(self, name: str) -> Device | None:
        """The Device this board enrolled as (via its token label), if any."""
        found = self.store.list(Device, {LAB_BOARD_LABEL: name})
        return found[0] if found else None

    # -- internals -------------------------------------------------------------------------------------

    def _require(self, name: str) -> Board:
        board = self.store.get(Board, name)
        if board is None:
            raise UnknownBoard(f"no board named {name!r}")
        return board

    def _register(self, board: Board) -> None:
        with contextlib.suppress(SupervisorError):
            self.supervisor.get(board.name)
            return
        self.supervisor.add(board.name, board.spec.board_type, icount_shift=board.spec.icount_shift)

    async def _start_logged(self, name: str) -> None:
        try:
            await self.supervisor.start(name)
        except SupervisorError as exc:
            self.events.emit("board.failed", f"board {name} did not start: {exc}", level=EventLevel.ERROR,
                             board=name, logger=_LOG)

    def _token_for(self, name: str) -> bytes | None:
        board = self.store.get(Board, name)
        if board is None or not board.spec.auto_enroll:
            return None
        device = self.device_of(name)
        if device is not None and device.phase.value not in ("Pending", "Enrolling"):
            return None  # already enrolled: its stored certificate is what it uses
        return self.tokens.issue(board.spec.board_type, ttl=TOKEN_TTL, issued_by=f"lab:{name}",
                                 labels={LAB_BOARD_LABEL: name})

    def _set_status(self, name: str, **fields: object) -> None:
        def apply(b: Board) -> None:
            for key, value in fields.items():
                setattr(b.status, key, value)

        with contextlib.suppress(Exception):
            if self.store.get(Board, name) is not None:
                self.store.mutate(Board, name, apply)

    async def _mirror_events(self) -> None:
        """Keep Board.status in step with the supervisor, and put board events in the gateway log."""
        async for ev in self.supervisor.events():
            self._on_event(ev)

    def _on_event(self, ev: BoardEvent) -> None:
        try:
            bp = self.supervisor.get(ev.name)
        except SupervisorError:
            bp = None
        if bp is not None:
            started = dt.datetime.fromtimestamp(bp.started_at, dt.UTC) if bp.started_at else None
            self._set_status(ev.name, state=bp.state.value, pid=bp.pid, exit_code=bp.exit_code,
                             restarts=bp.restarts, started=started,
                             message=ev.detail or None)
        level = {EventKind.EXITED: EventLevel.WARNING, EventKind.FAILED: EventLevel.ERROR}.get(ev.kind, EventLevel.INFO)
        if ev.kind not in (EventKind.CONSOLE_DROPPED,):
            detail = f": {ev.detail}" if ev.detail else ""
            self.events.emit(f"board.{ev.kind.value}", f"board {ev.name} {ev.kind.value}{detail}", level=level,
                             board=ev.name)


__all__ = ["TOKEN_TTL", "Lab"]
