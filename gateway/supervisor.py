"""Runs emulated boards as QEMU child processes for the gateway.

One :class:`Supervisor` owns any number of named boards (:class:`BoardProcess`). Per board it
builds the firmware, writes fresh boot parameters, starts QEMU with the command line that
:class:`wasmbed.gateway.qemu.QemuLaunch` derives from the board's DTS, and then

* reads the console UART (QEMU ``-serial stdio`` on a pipe) and QEMU's stderr line by line into
  ``log_root/<name>.console.log``, a bounded scrollback and any number of subscribers
  (:meth:`BoardProcess.subscribe`; a slow subscriber loses its oldest lines, never blocks QEMU);
* talks QMP on ``state_dir/qmp.sock`` (reset, quit, sensors, memory reads);
* watches the process and publishes :class:`BoardEvent` s (:meth:`Supervisor.events`), including
  unexpected exits with the exit code and QEMU's last message.

Wiring, all from the DTS:

* link UART -> ``-chardev socket,...,reconnect-ms=500``: QEMU connects *out* to the gateway's TLS
  listener and keeps reconnecting whenever the connection drops or the gateway is not up yet.
* console UART -> ``stdio``; the other UARTs -> ``null``.
* every ``ti,tmp105`` I2C node -> ``-device tmp105,id=<label>`` (QOM ``/machine/peripheral/<label>``).
* ``/chosen wasmbed,boot-params`` -> ``-device loader,file=state_dir/boot-params.elf``: the blob of
  ``boot-params.bin`` wrapped in a one-segment ELF at the region's base (a raw ``force-raw=on`` load
  is capped at the machine's ``-m`` size, which is 0 on olimex-stm32-h405).

Boot parameters (``boot-params.bin``, 0600): ``b"WBBP"`` + u32 LE length N + N bytes of one CBOR
map ``{1: 64-byte entropy seed, 2: enrollment token, 3: gateway CA certificate (DER)}``; 2 and 3
are left out when there is nothing to send. A new file (new seed) is written before every QEMU
start, so a power cycle (:meth:`Supervisor.power_cycle`, a new process) gets a fresh seed. QEMU
keeps loader blobs and copies them into guest RAM again on *every* system reset, guest-initiated
(SYSRESETREQ, fault reboot) or :meth:`Supervisor.reset`: a warm reset sees the same seed, which
is why the firmware mixes its boot counter into the DRBG personalisation string.

Persistent identity: each board has a private state dir (0700) ``state_root/<name>/`` that is
QEMU's working directory, and QEMU runs with ``-semihosting-config enable=on,target=native``.
With QEMU 10.0 on M-profile, semihosting SYS_OPEN/SYS_WRITE with a relative path create/write
files relative to that cwd, so the firmware can keep e.g. ``identity.bin`` there; QEMU gets umask
077. Semihosting is the host's file system with QEMU's rights (absolute paths work too) and its
SYS_SYSTEM would run a host shell command, so QEMU also runs under ``-sandbox ... spawn=deny``
(seccomp; SYS_SYSTEM then just fails in the guest).

Every error that normal use can cause is a :class:`SupervisorError` subclass whose message can
be shown to a user as is.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import datetime as _dt
import enum
import inspect
import os
import re
import shutil
import signal
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Generic, TypeVar

import cbor2

from wasmbed.dts import Board, board_names, load_board
from wasmbed.gateway.qemu import QemuError, QemuLaunch, blob_elf, i2c_sensor_devices, socket_chardev
from wasmbed.gateway.qmp import QmpClient, QmpClientError, QmpError, QmpEvent, QmpTimeout
from wasmbed.paths import data_dir, log_dir

__all__ = [
    "BOOT_PARAMS_MAGIC",
    "BoardCommandError",
    "BoardEvent",
    "BoardProcess",
    "BoardState",
    "BoardStateError",
    "BootParamsError",
    "ConsoleLine",
    "DuplicateBoard",
    "EventKind",
    "FirmwareUnavailable",
    "InvalidArgument",
    "InvalidBoardName",
    "QemuStartError",
    "Subscription",
    "Supervisor",
    "SupervisorClosed",
    "SupervisorError",
    "UnknownBoard",
    "UnknownBoardType",
    "Unsupported",
    "decode_boot_params",
    "encode_boot_params",
]

T = TypeVar("T")

BOOT_PARAMS_MAGIC = b"WBBP"
SEED_BYTES = 64
SCROLLBACK_LINES = 2000
_NAME_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_MAX_LINE = 4096  # a console "line" longer than this is cut, so a chatty guest cannot grow memory
_SUN_PATH_MAX = 107  # sockaddr_un.sun_path minus the NUL
#: QEMU stderr lines that say nothing about why it stopped (the mps2 Ethernet is always unwired).
_NOISE = re.compile(r"warning: nic \S+ has no peer")


# ------------------------------------------------------------------------------------------
# Errors


class SupervisorError(Exception):
    """Base of the supervisor's expected errors; the message is fit for a UI notification."""


class InvalidBoardName(SupervisorError):
    """A board name that is not a lowercase DNS label."""


class DuplicateBoard(SupervisorError):
    """A board with that name already exists."""


class UnknownBoardType(SupervisorError):
    """No ``dts/<type>.dts`` for the requested board type."""


class UnknownBoard(SupervisorError):
    """No board with that name was added."""


class BoardStateError(SupervisorError):
    """The operation needs another state (e.g. reset of a stopped board, remove of a running one)."""


class SupervisorClosed(BoardStateError):
    """The supervisor was shut down."""


class InvalidArgument(SupervisorError):
    """A value out of range for what the board or QEMU model accepts."""


class Unsupported(SupervisorError):
    """The board's device tree lacks the hardware the operation needs."""


class BootParamsError(SupervisorError):
    """Boot parameters could not be produced or do not fit the board's boot-params region."""


class FirmwareUnavailable(SupervisorError):
    """The firmware for the board could not be built; the full tool output is in the board log."""


class QemuStartError(SupervisorError):
    """QEMU could not be started or died before its QMP socket was up."""


class BoardCommandError(SupervisorError):
    """QEMU refused or did not answer a command (reset, sensor access...)."""


# ------------------------------------------------------------------------------------------
# Data


class BoardState(enum.StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    EXITED = "exited"  # QEMU ended without being asked to (crash, kill, guest semihosting exit)
    FAILED = "failed"  # the last start failed


class EventKind(enum.StrEnum):
    ADDED = "added"
    REMOVED = "removed"
    STARTING = "starting"
    STARTED = "started"
    STOPPING = "stopping"
    STOPPED = "stopped"
    EXITED = "exited"
    FAILED = "failed"
    RESET = "reset"  # QMP RESET: detail is QEMU's reason (guest-reset, host-qmp-system-reset...)
    PAUSED = "paused"
    RESUMED = "resumed"
    CONSOLE_DROPPED = "console-dropped"  # a console subscriber fell behind and lost lines


@dataclass(frozen=True)
class ConsoleLine:
    """One line from a board: its console UART, QEMU's stderr ("qemu") or the supervisor."""

    board: str
    time: float  # time.time()
    text: str
    source: str = "console"


@dataclass(frozen=True)
class BoardEvent:
    name: str
    kind: EventKind
    detail: str = ""
    time: float = field(default_factory=time.time)


# ------------------------------------------------------------------------------------------
# Fan-out to several consumers


class Subscription(Generic[T]):
    """A consumer's bounded queue: an async iterator that ends when the producer goes away.

    When full, the oldest item is dropped and counted in :attr:`dropped`; the producer never waits.
    Use it as a (async) context manager or call :meth:`close` to unsubscribe.
    """

    def __init__(self, hub: Broadcast[T], maxsize: int):
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self._hub = hub
        self._items: deque[T] = deque()
        self._maxsize = maxsize
        self._waiter: asyncio.Future[None] | None = None
        self._ended = False
        self._dropping = False
        self.dropped = 0

    def _push(self, item: T) -> bool:
        """Queue ``item``; True when this starts a run of drops (so the hub can report it once)."""
        started = False
        if len(self._items) >= self._maxsize:
            self._items.popleft()
            self.dropped += 1
            started = not self._dropping
            self._dropping = True
        self._items.append(item)
        self._wake()
        return started

    def _end(self) -> None:
        self._ended = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def __aiter__(self) -> Subscription[T]:
        return self

    async def __anext__(self) -> T:
        while not self._items:
            if self._ended:
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        item = self._items.popleft()
        if not self._items:
            self._dropping = False
        return item

    async def get(self, timeout: float | None = None) -> T:
        """The next item; TimeoutError after ``timeout``, StopAsyncIteration once ended."""
        async with asyncio.timeout(timeout):
            return await self.__anext__()

    def close(self) -> None:
        """Unsubscribe; items not yet read are discarded and iteration ends."""
        self._hub._subs.discard(self)
        self._items.clear()
        self._end()

    def __enter__(self) -> Subscription[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Subscription[T]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class Broadcast(Generic[T]):
    """Publishes each item to every current :class:`Subscription` without ever blocking."""

    def __init__(self, on_drop: Callable[[Subscription[T]], None] | None = None):
        self._subs: set[Subscription[T]] = set()
        self._on_drop = on_drop
        self.closed = False

    def subscribe(self, maxsize: int = 1000, replay: Iterable[T] = ()) -> Subscription[T]:
        sub = Subscription(self, maxsize)
        for item in replay:
            sub._push(item)
        sub.dropped = 0
        sub._dropping = False
        if self.closed:
            sub._end()
        else:
            self._subs.add(sub)
        return sub

    def publish(self, item: T) -> None:
        for sub in list(self._subs):
            if sub._push(item) and self._on_drop is not None:
                self._on_drop(sub)

    def close(self) -> None:
        """End every subscription once it has read what is queued."""
        self.closed = True
        for sub in self._subs:
            sub._end()
        self._subs.clear()


# ------------------------------------------------------------------------------------------
# Boot parameters


def encode_boot_params(seed: bytes, token: bytes | None = None, ca_der: bytes | None = None) -> bytes:
    """``WBBP`` + u32 LE length + CBOR map {1: seed, 2: token, 3: CA DER} (absent keys left out)."""
    params: dict[int, bytes] = {1: bytes(seed)}
    if token:
        params[2] = bytes(token)
    if ca_der:
        params[3] = bytes(ca_der)
    body = cbor2.dumps(params, canonical=True)
    return BOOT_PARAMS_MAGIC + len(body).to_bytes(4, "little") + body


def decode_boot_params(blob: bytes) -> dict[int, bytes]:
    """Inverse of :func:`encode_boot_params` (trailing bytes, e.g. the rest of the RAM region, ignored)."""
    if blob[:4] != BOOT_PARAMS_MAGIC or len(blob) < 8:
        raise ValueError("not a boot-params blob (magic WBBP missing)")
    n = int.from_bytes(blob[4:8], "little")
    if len(blob) < 8 + n:
        raise ValueError(f"boot-params blob truncated: header says {n} bytes, {len(blob) - 8} present")
    return cbor2.loads(blob[8 : 8 + n])


# ------------------------------------------------------------------------------------------
# Boards


TokenProvider = Callable[[str], "bytes | Awaitable[bytes | None] | None"]


class BoardProcess:
    """One named board and, while it runs, its QEMU process.

    Read-only for consumers: change it through the :class:`Supervisor`. ``qmp`` is the live QMP
    client while the board runs (None otherwise).
    """

    def __init__(self, supervisor: Supervisor, name: str, board: Board, state_dir: Path, log_path: Path,
                 icount_shift: int | None, extra_args: tuple[str, ...], sandbox: bool):
        self._sup = supervisor
        self.name = name
        self.board = board
        self.state_dir = state_dir
        self.log_path = log_path
        self.icount_shift = icount_shift
        self.extra_args = extra_args
        self.sandbox = sandbox
        self.state = BoardState.STOPPED
        self.started_at: float | None = None  # time.time() of the last successful start
        self.pid: int | None = None
        self.exit_code: int | None = None
        self.restarts = 0  # successful starts after the first one
        self.resets = 0  # QMP RESET events seen (guest or host initiated)
        self.last_error: str | None = None
        self.qmp: QmpClient | None = None
        self._starts = 0
        self._lock = asyncio.Lock()
        self._proc: asyncio.subprocess.Process | None = None
        self._pumps: list[asyncio.Task[None]] = []
        self._watcher: asyncio.Task[None] | None = None
        self._stopping = False
        self._last_stderr = ""
        self._log: IO[str] | None = None
        self._scrollback: deque[ConsoleLine] = deque(maxlen=supervisor.scrollback_lines)
        self._console: Broadcast[ConsoleLine] = Broadcast(on_drop=self._console_dropped)

    def __repr__(self) -> str:
        return f"<BoardProcess {self.name} {self.board.name} {self.state.value} pid={self.pid}>"

    @property
    def board_type(self) -> str:
        return self.board.name

    @property
    def boot_params_path(self) -> Path:
        return self.state_dir / "boot-params.bin"

    @property
    def qmp_path(self) -> Path:
        return self.state_dir / "qmp.sock"

    @property
    def sensors(self) -> list[str]:
        """QOM ids (DTS labels) of the board's TMP105 temperature sensors."""
        return [d.label for d in self.board.i2c_devices if d.compatible == "ti,tmp105"]

    @property
    def scrollback(self) -> list[ConsoleLine]:
        """The last :attr:`Supervisor.scrollback_lines` lines, oldest first."""
        return list(self._scrollback)

    def subscribe(self, maxsize: int = 1000, replay: bool = False) -> Subscription[ConsoleLine]:
        """Console/QEMU/supervisor lines from now on (after the scrollback if ``replay``).

        The subscription survives restarts of the board and ends when the board is removed or
        the supervisor shuts down.
        """
        return self._console.subscribe(maxsize, self._scrollback if replay else ())

    # ---- recording -------------------------------------------------------------------------
    def _record(self, text: str, source: str = "console") -> None:
        line = ConsoleLine(self.name, time.time(), text, source)
        self._scrollback.append(line)
        stamp = _dt.datetime.fromtimestamp(line.time).isoformat(timespec="milliseconds")
        entry = f"{stamp} {source:<7} {text}\n"
        try:
            if self._log is not None:
                self._log.write(entry)
            else:
                with _open_private(self.log_path, "a") as f:
                    f.write(entry)
        except OSError:
            pass  # a full disk must not stop the board; the scrollback still has it
        self._console.publish(line)

    def _console_dropped(self, sub: Subscription[ConsoleLine]) -> None:
        self._sup._publish(self, EventKind.CONSOLE_DROPPED, f"a console viewer fell behind ({sub.dropped} lines lost)",
                           record=False)

    async def _pump(self, stream: asyncio.StreamReader, source: str) -> None:
        """Split a pipe into lines; \\r removed, over-long lines cut at :data:`_MAX_LINE` bytes."""
        buf = b""
        while True:
            chunk = await stream.read(65536)
            if not chunk:
                break
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for raw in lines:
                self._line(raw, source)
            while len(buf) > _MAX_LINE:
                self._line(buf[:_MAX_LINE], source)
                buf = buf[_MAX_LINE:]
        if buf:
            self._line(buf, source)

    def _line(self, raw: bytes, source: str) -> None:
        text = raw.decode("utf-8", errors="replace").replace("\r", "")
        if source == "qemu" and text.strip() and not _NOISE.search(text):
            self._last_stderr = text.strip()
        self._record(text, source)

    def _on_qmp_event(self, ev: QmpEvent) -> None:
        if ev.name == "RESET":
            self.resets += 1
            self._sup._publish(self, EventKind.RESET, str(ev.data.get("reason", "")))
        elif ev.name == "STOP":
            self._sup._publish(self, EventKind.PAUSED)
        elif ev.name == "RESUME":
            self._sup._publish(self, EventKind.RESUMED)
        elif ev.name in ("SHUTDOWN", "GUEST_PANICKED", "POWERDOWN"):
            self._record(f"QMP {ev.name} {ev.data}", "qemu")


def _open_private(path: Path, mode: str) -> IO[str]:
    """Open a text file created 0600 (logs and boot params are nobody else's business)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if "a" in mode else os.O_TRUNC)
    fd = os.open(path, flags, 0o600)
    return open(fd, mode, encoding="utf-8", buffering=1)


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "is still running"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


_libc: Any = None
with contextlib.suppress(OSError, AttributeError):
    _libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def _child_setup() -> None:
    """Runs in the forked child before exec: private umask, and die with the supervisor.

    PR_SET_PDEATHSIG sends SIGTERM to QEMU if the process (thread) that started it dies, so a
    crashed gateway leaves no orphaned boards behind.
    """
    os.umask(0o077)
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


# ------------------------------------------------------------------------------------------
# The supervisor


class Supervisor:
    """Starts, stops and watches any number of named emulated boards.

    ``gateway_host``/``gateway_port`` is where each board's link UART connects (the gateway's TLS
    listener). ``token_provider(name)`` (sync or async) returns the enrollment token to hand to a
    board at its next start, or None; ``ca_der`` is the gateway CA certificate given to every board.
    """

    def __init__(self, gateway_host: str, gateway_port: int, state_root: Path | None = None,
                 log_root: Path | None = None, firmware_builder: Callable[[str], Any] | None = None, *,
                 token_provider: TokenProvider | None = None, ca_der: bytes | None = None,
                 reconnect_ms: int = 500, scrollback_lines: int = SCROLLBACK_LINES,
                 qmp_timeout: float = 10.0):
        self.gateway_host = gateway_host
        self.gateway_port = gateway_port
        self.state_root = Path(state_root) if state_root is not None else data_dir() / "boards"
        self.log_root = Path(log_root) if log_root is not None else log_dir() / "boards"
        if firmware_builder is None:
            from wasmbed.firmware.build import build as firmware_builder
        self.firmware_builder = firmware_builder
        self.token_provider = token_provider
        self.ca_der = ca_der
        self.reconnect_ms = reconnect_ms
        self.scrollback_lines = scrollback_lines
        self.qmp_timeout = qmp_timeout
        self._boards: dict[str, BoardProcess] = {}
        self._events: Broadcast[BoardEvent] = Broadcast()
        self._build_locks: dict[str, asyncio.Lock] = {}
        self._closed = False

    async def __aenter__(self) -> Supervisor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    # ---- registry --------------------------------------------------------------------------
    def add(self, name: str, board_type: str, *, icount_shift: int | None = None, extra_args: Iterable[str] = (),
            sandbox: bool = True) -> BoardProcess:
        """Register a board (not started). ``extra_args`` go to QEMU verbatim, last."""
        self._check_open()
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            raise InvalidBoardName(f"invalid board name {name!r}: use 1-63 lowercase letters, digits and '-', "
                                   "not starting or ending with '-'")
        if name in self._boards:
            raise DuplicateBoard(f"a board named {name!r} already exists ({self._boards[name].board_type})")
        known = board_names()
        if board_type not in known:
            raise UnknownBoardType(f"unknown board type {board_type!r}; known types: {', '.join(known)}")
        if icount_shift is not None and not 0 <= icount_shift <= 10:
            raise InvalidArgument(f"board {name!r}: icount shift must be 0..10, not {icount_shift}")
        board = load_board(board_type)
        state_dir = self.state_root / name
        if len(os.fsencode(state_dir / "qmp.sock")) > _SUN_PATH_MAX:
            raise SupervisorError(f"board {name!r}: state directory {state_dir} is too long a path for a unix "
                                  f"socket (max {_SUN_PATH_MAX} bytes); choose a shorter state root")
        bp = BoardProcess(self, name, board, state_dir, self.log_root / f"{name}.console.log", icount_shift,
                          tuple(extra_args), sandbox)
        self._boards[name] = bp
        self._publish(bp, EventKind.ADDED, board_type, record=False)
        return bp

    def remove(self, name: str, *, delete_state: bool = False) -> None:
        """Forget a stopped board; its state dir (persistent identity) is kept unless ``delete_state``."""
        bp = self.get(name)
        if bp._proc is not None or bp.state in (BoardState.STARTING, BoardState.RUNNING, BoardState.STOPPING):
            raise BoardStateError(f"board {name!r} is {bp.state.value}: stop it before removing it")
        del self._boards[name]
        bp._console.close()
        if delete_state and bp.state_dir.is_dir():
            shutil.rmtree(bp.state_dir, ignore_errors=True)
        self._publish(bp, EventKind.REMOVED, record=False)

    def get(self, name: str) -> BoardProcess:
        try:
            return self._boards[name]
        except KeyError:
            raise UnknownBoard(f"no board named {name!r}") from None

    def boards(self) -> list[BoardProcess]:
        return list(self._boards.values())

    def events(self, maxsize: int = 1000) -> Subscription[BoardEvent]:
        """Board events from now on, for one consumer; ends at :meth:`shutdown`."""
        return self._events.subscribe(maxsize)

    def _check_open(self) -> None:
        if self._closed:
            raise SupervisorClosed("the board supervisor has shut down")

    def _publish(self, bp: BoardProcess, kind: EventKind, detail: str = "", *, record: bool = True) -> None:
        if record:
            bp._record(f"[{kind.value}] {detail}".rstrip(), "supervisor")
        self._events.publish(BoardEvent(bp.name, kind, detail))

    # ---- lifecycle -------------------------------------------------------------------------
    async def start(self, name: str) -> BoardProcess:
        """Build the firmware if needed, write boot params, start QEMU, connect QMP."""
        bp = self.get(name)
        async with bp._lock:
            self._check_open()
            await self._start(bp)
        return bp

    async def stop(self, name: str, timeout: float = 5.0) -> None:
        """Stop QEMU: QMP ``quit``, then SIGTERM, then SIGKILL, each after ``timeout`` s. Idempotent."""
        bp = self.get(name)
        async with bp._lock:
            await self._stop(bp, timeout)

    async def power_cycle(self, name: str, timeout: float = 5.0) -> BoardProcess:
        """Stop and start again: a new QEMU process and fresh boot parameters (new seed)."""
        bp = self.get(name)
        async with bp._lock:
            self._check_open()
            await self._stop(bp, timeout)
            await self._start(bp)
        return bp

    async def reset(self, name: str) -> None:
        """System reset through QMP (the firmware reboots; RAM-loaded blobs are copied in again)."""
        bp, qmp = self._running(name)
        await self._qmp_call(bp, "reset", qmp.execute("system_reset"))

    async def shutdown(self, timeout: float = 5.0) -> None:
        """Stop every board (in parallel) and end all subscriptions. The supervisor is unusable after."""
        self._closed = True
        results = await asyncio.gather(*(self.stop(bp.name, timeout) for bp in self.boards()),
                                       return_exceptions=True)
        for bp in self.boards():
            bp._console.close()
        self._events.close()
        for r in results:
            if isinstance(r, BaseException):
                raise r

    async def send_console(self, name: str, data: bytes | str) -> None:
        """Type into the board's console UART."""
        bp, _ = self._running(name)
        stdin = bp._proc.stdin if bp._proc is not None else None
        if stdin is None:
            raise BoardStateError(f"board {name!r} has no console input")
        stdin.write(data.encode() if isinstance(data, str) else data)
        try:
            await stdin.drain()
        except (ConnectionError, OSError):
            raise BoardStateError(f"board {name!r}: QEMU is gone") from None

    # ---- sensors and LEDs ------------------------------------------------------------------
    async def set_temperature(self, name: str, celsius: float, sensor: str | None = None) -> None:
        """Set a TMP105's temperature (QEMU's model accepts -128 < t < 128 °C; milli-°C resolution)."""
        dev = self._sensor(name, sensor)
        if not -128.0 <= celsius < 128.0:
            raise InvalidArgument(f"board {name!r}: {celsius} °C is outside the TMP105 range (-128..127.999 °C)")
        bp, qmp = self._running(name)
        await self._qmp_call(bp, f"setting {dev} temperature",
                             qmp.qom_set(f"/machine/peripheral/{dev}", "temperature", round(celsius * 1000)))

    async def get_temperature(self, name: str, sensor: str | None = None) -> float:
        dev = self._sensor(name, sensor)
        bp, qmp = self._running(name)
        milli = await self._qmp_call(bp, f"reading {dev} temperature",
                                     qmp.qom_get(f"/machine/peripheral/{dev}", "temperature"))
        return int(milli) / 1000

    async def read_leds(self, name: str) -> list[bool]:
        """LED states in DTS order (``/leds`` children), read from their controller registers."""
        bp = self.get(name)
        board = bp.board
        if not board.leds:
            raise Unsupported(f"board {name!r} ({board.name}) has no LEDs: dts/{board.path.name} declares no "
                              "gpio-leds node")
        bases: dict[str, int] = {}
        for led in board.leds:
            try:
                bases[led.controller] = board.peripheral(led.controller).base
            except KeyError:
                raise Unsupported(f"board {name!r}: LED {led.name} uses controller {led.controller!r}, which is "
                                  f"not a peripheral under /soc in dts/{board.path.name}") from None
        bp, qmp = self._running(name)
        values = {}
        for ctrl, base in bases.items():
            values[ctrl] = await self._qmp_call(bp, f"reading LED register {ctrl}", qmp.read_u32(base))
        return [bool(values[led.controller] >> led.bit & 1) for led in board.leds]

    def _sensor(self, name: str, sensor: str | None) -> str:
        bp = self.get(name)
        sensors = bp.sensors
        if not sensors:
            raise Unsupported(f"board {name!r} ({bp.board_type}) has no temperature sensor: dts/{bp.board.path.name} "
                              "has no ti,tmp105 node on an I2C bus")
        if sensor is None:
            return sensors[0]
        if sensor not in sensors:
            raise Unsupported(f"board {name!r} has no sensor {sensor!r}; it has {', '.join(sensors)}")
        return sensor

    def _running(self, name: str) -> tuple[BoardProcess, QmpClient]:
        bp = self.get(name)
        if bp.state is not BoardState.RUNNING or bp.qmp is None:
            raise BoardStateError(f"board {name!r} is {bp.state.value}, not running")
        return bp, bp.qmp

    async def _qmp_call(self, bp: BoardProcess, what: str, call: Awaitable[T]) -> T:
        try:
            return await call
        except QmpError as e:
            raise BoardCommandError(f"board {bp.name!r}: {what} failed: {e.desc}") from None
        except QmpTimeout:
            raise BoardCommandError(f"board {bp.name!r}: {what}: QEMU did not answer in time") from None
        except QmpClientError:
            raise BoardStateError(f"board {bp.name!r}: {what}: QEMU is no longer reachable") from None

    # ---- start/stop internals --------------------------------------------------------------
    async def _start(self, bp: BoardProcess) -> None:
        if bp.state in (BoardState.STARTING, BoardState.RUNNING, BoardState.STOPPING):
            raise BoardStateError(f"board {bp.name!r} is already {bp.state.value}")
        if bp._proc is not None:  # exited a moment ago; its watcher may still be cleaning up
            await self._teardown(bp)
        bp.state = BoardState.STARTING
        bp._stopping = False
        bp.exit_code = None
        bp.last_error = None
        self._publish(bp, EventKind.STARTING, bp.board_type)
        try:
            self._prepare_dirs(bp)
            elf = await self._firmware(bp)
            loaders: list[tuple[Path, int | None]] = []
            if bp.board.boot_params is not None:
                await self._write_boot_params(bp)
                loaders.append((bp.boot_params_path.with_suffix(".elf"), None))
            launch = QemuLaunch(
                bp.board, elf,
                serial={bp.board.console.label: "stdio", bp.board.link.label: "chardev:link"},
                qmp_socket=Path("qmp.sock"),  # relative to the cwd (state dir): no sun_path length limit for QEMU
                icount_shift=bp.icount_shift,
                chardevs=[socket_chardev("link", self.gateway_host, self.gateway_port, self.reconnect_ms)],
                loaders=loaders,
                devices=i2c_sensor_devices(bp.board),
                semihosting=True,
                sandbox=bp.sandbox,
                extra_args=bp.extra_args,
            )
            try:
                cmd = launch.command()
            except QemuError as e:
                raise QemuStartError(f"board {bp.name!r}: {e}") from None
            with contextlib.suppress(FileNotFoundError):
                bp.qmp_path.unlink()
            bp._log = _open_private(bp.log_path, "a")
            bp._record("$ " + " ".join(cmd), "supervisor")
            try:
                proc = await asyncio.create_subprocess_exec(
                    *cmd, cwd=bp.state_dir, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE, start_new_session=True, preexec_fn=_child_setup)
            except OSError as e:
                raise QemuStartError(f"board {bp.name!r}: cannot run {cmd[0]}: {e.strerror or e}") from None
        except SupervisorError as e:
            await self._teardown(bp)
            self._fail(bp, str(e))
            raise
        except BaseException:
            await self._teardown(bp)
            self._fail(bp, "start was interrupted")
            raise

        bp._proc = proc
        bp.pid = proc.pid
        assert proc.stdout is not None and proc.stderr is not None
        bp._pumps = [
            asyncio.create_task(bp._pump(proc.stdout, "console"), name=f"supervisor:{bp.name}:console"),
            asyncio.create_task(bp._pump(proc.stderr, "qemu"), name=f"supervisor:{bp.name}:stderr"),
        ]
        bp._watcher = asyncio.create_task(self._watch(bp, proc), name=f"supervisor:{bp.name}:watch")
        try:
            bp.qmp = await QmpClient.connect(bp.qmp_path, timeout=self.qmp_timeout,
                                             alive=lambda: proc.returncode is None, on_event=bp._on_qmp_event)
            if proc.returncode is not None:
                raise QmpClientError("QEMU exited during start-up")
        except BaseException as e:
            bp._stopping = True
            await self._kill(proc, 2.0)
            await self._teardown(bp)
            if isinstance(e, QmpClientError):
                why = bp._last_stderr or str(e)
                msg = f"board {bp.name!r}: QEMU {_describe_exit(proc.returncode)} during start-up: {why}"
                self._fail(bp, msg)
                raise QemuStartError(msg) from None
            self._fail(bp, "start was interrupted")
            raise
        bp.state = BoardState.RUNNING
        bp.started_at = time.time()
        if bp._starts:
            bp.restarts += 1
        bp._starts += 1
        self._publish(bp, EventKind.STARTED, f"pid {proc.pid}")

    def _fail(self, bp: BoardProcess, msg: str) -> None:
        bp.state = BoardState.FAILED
        bp.last_error = msg
        self._publish(bp, EventKind.FAILED, msg)

    def _prepare_dirs(self, bp: BoardProcess) -> None:
        try:
            for d in (self.state_root, bp.state_dir):
                d.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(bp.state_dir, 0o700)
            self.log_root.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as e:
            raise SupervisorError(f"board {bp.name!r}: cannot create {e.filename}: {e.strerror}") from None

    async def _firmware(self, bp: BoardProcess) -> Path:
        lock = self._build_locks.setdefault(bp.board_type, asyncio.Lock())  # one make per build dir at a time
        async with lock:
            try:
                fw = await asyncio.to_thread(self.firmware_builder, bp.board_type)
            except Exception as e:
                for line in str(e).splitlines():
                    bp._record(line, "build")
                lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()] or [type(e).__name__]
                why = next((ln for ln in lines[1:] if "error" in ln.lower()), "")
                raise FirmwareUnavailable(f"board {bp.name!r}: no firmware for {bp.board_type}: "
                                          f"{lines[0].rstrip(':')}{': ' + why if why else ''} "
                                          f"(full output in {bp.log_path})") from None
        return Path(getattr(fw, "elf", fw))

    async def _write_boot_params(self, bp: BoardProcess) -> None:
        region = bp.board.boot_params
        assert region is not None
        token = None
        if self.token_provider is not None:
            try:
                token = self.token_provider(bp.name)
                if inspect.isawaitable(token):
                    token = await token
            except Exception as e:
                raise BootParamsError(f"board {bp.name!r}: no enrollment token: {e}") from None
            if token is not None and not isinstance(token, bytes | bytearray):
                raise BootParamsError(f"board {bp.name!r}: enrollment token must be bytes, got {type(token).__name__}")
        blob = encode_boot_params(os.urandom(SEED_BYTES), token, self.ca_der)
        if len(blob) > region.size:
            raise BootParamsError(
                f"board {bp.name!r}: boot parameters are {len(blob)} bytes (CA certificate {len(self.ca_der or b'')}, "
                f"token {len(token or b'')}) but dts/{bp.board.path.name} reserves only {region.size} bytes at "
                f"0x{region.base:08x}")
        # boot-params.bin is the blob itself (what the guest sees); QEMU loads the same bytes wrapped
        # in an ELF (boot-params.elf, see qemu.blob_elf) because raw loads are capped by -m.
        for path, data in ((bp.boot_params_path, blob),
                           (bp.boot_params_path.with_suffix(".elf"), blob_elf(blob, region.base))):
            tmp = path.with_suffix(".tmp")
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with open(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, path)
            except OSError as e:
                raise BootParamsError(f"board {bp.name!r}: cannot write {path}: {e.strerror}") from None

    async def _watch(self, bp: BoardProcess, proc: asyncio.subprocess.Process) -> None:
        """Reap QEMU; an exit nobody asked for becomes an EXITED event with QEMU's last message."""
        code = await proc.wait()
        if bp._pumps:
            await asyncio.wait(bp._pumps, timeout=2.0)  # stderr's last line explains the exit
        bp.exit_code = code
        if bp._stopping or bp.state is not BoardState.RUNNING:
            return  # stop() or a failed start() handles it
        bp.state = BoardState.EXITED
        detail = f"QEMU {_describe_exit(code)}"
        if bp._last_stderr:
            detail += f"; its last message: {bp._last_stderr}"
        bp.last_error = detail
        await self._teardown(bp, from_watcher=True)
        self._publish(bp, EventKind.EXITED, detail)

    async def _stop(self, bp: BoardProcess, timeout: float) -> None:
        proc = bp._proc
        if proc is None:
            await self._teardown(bp)
            if bp.state is not BoardState.STOPPED:
                bp.state = BoardState.STOPPED
                self._publish(bp, EventKind.STOPPED)
            return
        bp._stopping = True
        was_running = proc.returncode is None
        if was_running:
            bp.state = BoardState.STOPPING
            self._publish(bp, EventKind.STOPPING)
            try:
                if bp.qmp is not None and bp.qmp.connected:
                    with contextlib.suppress(QmpClientError):
                        await bp.qmp.execute("quit", timeout=min(timeout, 2.0))
                    await _wait_exit(proc, timeout)
                await self._kill(proc, timeout)
            finally:
                if proc.returncode is None:  # cancelled half-way: never leave QEMU behind
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
        await self._teardown(bp)
        bp.state = BoardState.STOPPED
        self._publish(bp, EventKind.STOPPED, f"QEMU {_describe_exit(bp.exit_code)}" if was_running else "")

    @staticmethod
    async def _kill(proc: asyncio.subprocess.Process, timeout: float) -> None:
        """SIGTERM, then SIGKILL if QEMU is still there after ``timeout``; returns once it is reaped."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if proc.returncode is not None:
                return
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            await _wait_exit(proc, timeout if sig == signal.SIGTERM else 10.0)

    async def _teardown(self, bp: BoardProcess, *, from_watcher: bool = False) -> None:
        """Release everything a run holds: QMP, pipes, tasks, socket file, log file. Idempotent."""
        if not from_watcher and bp._watcher is not None:
            # The watcher reaps QEMU and may be tearing down itself after an unexpected exit.
            if bp._proc is not None and bp._proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    bp._proc.kill()
            await bp._watcher
            bp._watcher = None
        if bp.qmp is not None:
            qmp, bp.qmp = bp.qmp, None
            await qmp.close()
        pumps, bp._pumps = bp._pumps, []
        if pumps:
            _done, pending = await asyncio.wait(pumps, timeout=2.0)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
        proc, bp._proc = bp._proc, None
        if proc is not None:
            bp.exit_code = proc.returncode
            if proc.stdin is not None:
                proc.stdin.close()
                with contextlib.suppress(OSError):
                    await proc.stdin.wait_closed()
        with contextlib.suppress(OSError):
            bp.qmp_path.unlink()
        if bp._log is not None:
            log, bp._log = bp._log, None
            with contextlib.suppress(OSError):
                log.close()


async def _wait_exit(proc: asyncio.subprocess.Process, timeout: float) -> bool:
    try:
        await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        return False
    return True

