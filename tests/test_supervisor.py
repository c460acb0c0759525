"""The board supervisor against real QEMU: console feed, boot params, sensors, resets, link, lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import stat
import struct
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from wasmbed.dts import board_names, load_board
from wasmbed.gateway.qemu import blob_elf, i2c_sensor_devices, socket_chardev
from wasmbed.gateway.supervisor import (
    BOOT_PARAMS_MAGIC,
    BoardEvent,
    BoardState,
    BoardStateError,
    BootParamsError,
    Broadcast,
    ConsoleLine,
    DuplicateBoard,
    EventKind,
    FirmwareUnavailable,
    InvalidBoardName,
    QemuStartError,
    Subscription,
    Supervisor,
    SupervisorError,
    UnknownBoard,
    UnknownBoardType,
    Unsupported,
    decode_boot_params,
    encode_boot_params,
)

READY = "wasmbed: ready"


# ------------------------------------------------------------------------------------------
# Helpers and fixtures


def qemu_children() -> list[int]:
    """PIDs of qemu-system-arm processes whose parent is this test process (no psutil needed)."""
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat_line = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        comm = stat_line[stat_line.index("(") + 1 : stat_line.rindex(")")]
        ppid = int(stat_line[stat_line.rindex(")") + 2 :].split()[1])
        if ppid == me and comm.startswith("qemu-system"):
            found.append(int(entry))
    return found


def pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def wait_line(sub: Subscription[ConsoleLine], pattern: str, timeout: float = 10.0) -> ConsoleLine:
    async with asyncio.timeout(timeout):
        async for line in sub:
            if line.source == "console" and re.search(pattern, line.text):
                return line
    raise AssertionError(f"console ended before {pattern!r}")


async def wait_event(events: Subscription[BoardEvent], kind: EventKind, timeout: float = 5.0) -> BoardEvent:
    async with asyncio.timeout(timeout):
        async for ev in events:
            if ev.kind is kind:
                return ev
    raise AssertionError(f"event feed ended before {kind}")


class LinkServer:
    """Stands in for the gateway's TLS listener: counts QEMU's link connections, can drop them."""

    def __init__(self) -> None:
        self.connections: asyncio.Queue[asyncio.StreamWriter] = asyncio.Queue()
        self.accepted: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.accepted.append(writer)
            await self.connections.put(writer)

        self.server = await asyncio.start_server(accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    @staticmethod
    def drop(writer: asyncio.StreamWriter) -> None:
        """Abortive close (RST). QEMU only reads the socket while the guest UART accepts input,
        and the current firmware leaves the link UART's receiver off, so a plain FIN goes
        unnoticed; a reset is seen at once as a hang-up."""
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        for writer in self.accepted:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="wbs-"))  # unix socket paths must stay under 108 bytes
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
async def link() -> AsyncIterator[LinkServer]:
    server = LinkServer()
    await server.start()
    yield server
    await server.close()


@pytest.fixture
def make_supervisor(short_dir: Path, link: LinkServer, firmware_builder):
    require_qemu()
    made: list[Supervisor] = []

    def make(**kw) -> Supervisor:
        sup = Supervisor("127.0.0.1", link.port, state_root=short_dir / "state", log_root=short_dir / "log",
                         firmware_builder=firmware_builder, **kw)
        made.append(sup)
        return sup

    yield make
    for sup in made:
        assert sup._closed, "test must shut its supervisor down"
    assert qemu_children() == []


@pytest.fixture
async def sup(make_supervisor) -> AsyncIterator[Supervisor]:
    s = make_supervisor()
    yield s
    await s.shutdown()


def require_qemu() -> None:
    if shutil.which("qemu-system-arm") is None:
        pytest.skip("qemu-system-arm is not installed")


# ------------------------------------------------------------------------------------------
# Without QEMU


def test_boot_params_encoding_round_trip():
    blob = encode_boot_params(b"s" * 64, b"token", b"\x30\x82der")
    assert blob[:4] == BOOT_PARAMS_MAGIC
    assert int.from_bytes(blob[4:8], "little") == len(blob) - 8
    assert decode_boot_params(blob + b"\0" * 100) == {1: b"s" * 64, 2: b"token", 3: b"\x30\x82der"}
    assert decode_boot_params(encode_boot_params(b"x" * 64)) == {1: b"x" * 64}
    with pytest.raises(ValueError):
        decode_boot_params(b"nope" + bytes(8))


async def test_broadcast_drops_oldest_for_slow_consumers_and_ends():
    drops: list[int] = []
    hub: Broadcast[int] = Broadcast(on_drop=lambda s: drops.append(s.dropped))
    slow = hub.subscribe(maxsize=3)
    fast = hub.subscribe(maxsize=100, replay=[-2, -1])
    for i in range(10):
        hub.publish(i)
    assert slow.dropped == 7 and drops == [1]  # reported once per run of drops
    assert [await slow.get(1) for _ in range(3)] == [7, 8, 9]
    hub.publish(10)
    hub.publish(11)
    hub.publish(12)
    hub.publish(13)
    assert drops == [1, 8]  # caught up in between, so a new run is reported again
    hub.close()
    assert [x async for x in fast] == [-2, -1, *range(14)]
    assert [x async for x in slow] == [11, 12, 13]
    with slow:
        pass
    late = hub.subscribe()
    assert [x async for x in late] == []


# ------------------------------------------------------------------------------------------
# Errors (no QEMU started)


async def test_errors_are_supervisor_errors_with_clear_messages(make_supervisor):
    sup = make_supervisor(ca_der=b"\x30" * 5000)
    sup.add("alpha", "mps2-an385")
    with pytest.raises(DuplicateBoard, match="'alpha' already exists"):
        sup.add("alpha", "mps2-an386")
    with pytest.raises(UnknownBoardType, match=r"unknown board type 'mps2-an999'.*mps2-an385"):
        sup.add("beta", "mps2-an999")
    for bad in ("Alpha", "-a", "a_b", "a" * 64, ""):
        with pytest.raises(InvalidBoardName):
            sup.add(bad, "mps2-an385")
    with pytest.raises(UnknownBoard, match="no board named 'ghost'"):
        await sup.start("ghost")
    sup.add("small", "stm32vldiscovery")
    with pytest.raises(Unsupported, match=r"'small' \(stm32vldiscovery\) has no temperature sensor.*tmp105"):
        await sup.set_temperature("small", 20.0)
    with pytest.raises(Unsupported, match="no LEDs"):
        await sup.read_leds("small")
    with pytest.raises(BoardStateError, match="'alpha' is stopped, not running"):
        await sup.reset("alpha")
    with pytest.raises(SupervisorError, match="outside the TMP105 range"):
        await sup.set_temperature("alpha", 300)
    # A 5000-byte CA cannot fit the 4 KiB boot-params region: clear failure, no QEMU started.
    with pytest.raises(BootParamsError, match=r"5\d\d\d bytes .* reserves only 4096 bytes"):
        await sup.start("alpha")
    assert sup.get("alpha").state is BoardState.FAILED and sup.get("alpha").pid is None
    assert "reserves only" in (sup.get("alpha").last_error or "")
    sup.remove("small")
    assert [b.name for b in sup.boards()] == ["alpha"]
    await sup.shutdown()
    with pytest.raises(SupervisorError, match="shut down"):
        sup.add("gamma", "mps2-an385")


async def test_firmware_build_failure_is_reported_briefly(short_dir: Path):
    def broken_build(board_type: str):
        raise RuntimeError(f"firmware build for {board_type} (default) failed:\nmake: ...\n"
                           "core/main.c:12:1: error: expected ';' before '}' token\nmore noise")

    sup = Supervisor("127.0.0.1", 9, state_root=short_dir / "s", log_root=short_dir / "l",
                     firmware_builder=broken_build)
    board = sup.add("fw", "mps2-an385")
    events = sup.events()
    with pytest.raises(FirmwareUnavailable) as ei:
        await sup.start("fw")
    msg = str(ei.value)
    assert "board 'fw': no firmware for mps2-an385" in msg and "error: expected ';'" in msg and "noise" not in msg
    assert board.state is BoardState.FAILED
    assert "more noise" in board.log_path.read_text()  # the whole tool output is in the board log
    assert stat.S_IMODE(board.log_path.stat().st_mode) == 0o600
    await sup.shutdown()
    assert [ev.kind async for ev in events] == [EventKind.STARTING, EventKind.FAILED, EventKind.STOPPED]


# ------------------------------------------------------------------------------------------
# With QEMU



@pytest.mark.qemu
async def test_console_feed_log_and_clean_stop(sup: Supervisor):
    board = sup.add("b1", "mps2-an385")
    console = board.subscribe()
    await sup.start("b1")
    assert board.state is BoardState.RUNNING and board.pid and board.started_at
    line = await wait_line(console, READY, timeout=10)
    assert line.board == "b1" and line.time > 0 and "\r" not in line.text
    assert any("wasmbed firmware" in ln.text for ln in board.scrollback)
    log = board.log_path.read_text()
    assert "wasmbed firmware" in log and READY in log
    assert stat.S_IMODE(board.state_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(board.boot_params_path.stat().st_mode) == 0o600
    assert board.qmp_path.is_socket()
    pid, qmp = board.pid, board.qmp
    assert qemu_children() == [pid]

    with pytest.raises(BoardStateError, match="already running"):
        await sup.start("b1")
    with pytest.raises(BoardStateError, match="stop it before removing"):
        sup.remove("b1")
    await sup.stop("b1")
    assert board.state is BoardState.STOPPED and board.exit_code == 0  # QMP quit is a clean exit
    assert pid_gone(pid) and qemu_children() == []
    assert board.qmp is None and qmp is not None and not qmp.connected
    assert not board.qmp_path.exists()
    await sup.stop("b1")  # idempotent
    sup.remove("b1")
    assert [ln async for ln in console][-1].text.startswith("[stopped]")  # the feed ends on remove


@pytest.mark.qemu
async def test_boot_params_reach_guest_ram_and_seed_is_fresh_per_start(make_supervisor):
    sup = make_supervisor(token_provider=lambda name: f"token-{name}".encode(), ca_der=b"\x30\x82" + bytes(600))
    # -S: QEMU stops before the first instruction, so the firmware cannot have consumed the blob yet.
    board = sup.add("bp", "mps2-an385", extra_args=["-S"])
    base = board.board.boot_params.base
    try:
        await sup.start("bp")
        first = board.boot_params_path.read_bytes()
        params = decode_boot_params(first)
        assert params[2] == b"token-bp" and len(params[1]) == 64 and len(params[3]) == 602
        assert await board.qmp.read_u32(base) == int.from_bytes(BOOT_PARAMS_MAGIC, "little")
        assert await board.qmp.read_u32(base + 4) == len(first) - 8
        assert await board.qmp.read_u32(base + 8) == int.from_bytes(first[8:12], "little")

        await sup.power_cycle("bp")
        assert board.restarts == 1
        second = board.boot_params_path.read_bytes()
        assert decode_boot_params(second)[1] != params[1]  # fresh entropy seed per start
        assert await board.qmp.read_u32(base + 8) == int.from_bytes(second[8:12], "little")
        assert await board.qmp.read_u32(base + 12) == int.from_bytes(second[12:16], "little")
    finally:
        await sup.shutdown()


BOOT_PARAM_BOARDS = [b for b in board_names() if load_board(b).boot_params is not None]


@pytest.mark.qemu
async def test_boot_params_load_on_every_board_that_has_them(make_supervisor):
    sup = make_supervisor()
    try:
        boards = [sup.add(t, t, extra_args=["-S"]) for t in BOOT_PARAM_BOARDS]
        await asyncio.gather(*(sup.start(b.name) for b in boards))
        for b in boards:
            assert await b.qmp.read_u32(b.board.boot_params.base) == int.from_bytes(BOOT_PARAMS_MAGIC, "little"), b
        small = sup.add("small", "stm32vldiscovery")  # no boot-params region: no loader, no file
        await sup.start("small")
        assert not small.boot_params_path.exists()
        assert "loader" not in " ".join(ln.text for ln in small.scrollback if ln.text.startswith("$ "))
    finally:
        await sup.shutdown()


def test_qemu_command_wiring():
    board = load_board("mps2-an385")
    assert socket_chardev("link", "::1", 4433, 250) == "socket,id=link,host=[::1],port=4433,reconnect-ms=250,nodelay=on"
    assert i2c_sensor_devices(board) == ["tmp105,id=temp_sensor,address=0x48"]
    assert i2c_sensor_devices(load_board("stm32vldiscovery")) == []
    elf = blob_elf(b"WBBP" + bytes(4), 0x203FF000)
    assert elf[:4] == b"\x7fELF" and elf.endswith(b"WBBP" + bytes(4))


@pytest.mark.qemu
async def test_temperature_sensor_and_leds(sup: Supervisor):
    board = sup.add("sense", "mps2-an385")
    await sup.start("sense")
    assert board.sensors == ["temp_sensor"]
    await sup.set_temperature("sense", 31.5)
    assert await sup.get_temperature("sense") == 31.5
    await sup.set_temperature("sense", -4.25)
    assert await sup.get_temperature("sense") == -4.25
    assert await sup.read_leds("sense") == [False, False]


@pytest.mark.qemu
async def test_reset_reboots_the_firmware(sup: Supervisor):
    board = sup.add("rst", "mps2-an385")
    console = board.subscribe()
    events = sup.events()
    await sup.start("rst")
    await wait_line(console, READY)
    await sup.reset("rst")
    ev = await wait_event(events, EventKind.RESET)
    assert ev.name == "rst" and ev.detail == "host-qmp-system-reset"
    await wait_line(console, r"^reset   : unknown \(boot 2\)")
    await wait_line(console, READY)
    assert board.resets == 1 and board.state is BoardState.RUNNING


@pytest.mark.qemu
async def test_link_uart_connects_out_and_reconnects(sup: Supervisor, link: LinkServer):
    sup.add("lnk", "mps2-an385")
    await sup.start("lnk")
    first = await asyncio.wait_for(link.connections.get(), 5)
    LinkServer.drop(first)
    second = await asyncio.wait_for(link.connections.get(), 3)  # reconnect-ms=500
    assert second is not first


@pytest.mark.qemu
async def test_unexpected_exit_is_reported(sup: Supervisor):
    board = sup.add("crash", "mps2-an385")
    events = sup.events()
    await sup.start("crash")
    os.kill(board.pid, signal.SIGKILL)
    ev = await wait_event(events, EventKind.EXITED)
    assert ev.name == "crash" and "killed by SIGKILL" in ev.detail
    assert board.state is BoardState.EXITED and board.exit_code == -signal.SIGKILL
    assert qemu_children() == []
    with pytest.raises(BoardStateError, match="exited, not running"):
        await sup.get_temperature("crash")
    await sup.start("crash")  # an exited board can simply be started again
    assert board.state is BoardState.RUNNING and board.restarts == 1


@pytest.mark.qemu
async def test_qemu_refusing_to_start_is_a_clear_error(sup: Supervisor):
    board = sup.add("bad", "mps2-an385", extra_args=["-device", "no-such-device"])
    with pytest.raises(QemuStartError, match="'no-such-device' is not a valid device model name"):
        await sup.start("bad")
    assert board.state is BoardState.FAILED and board.exit_code == 1
    assert qemu_children() == []


@pytest.mark.qemu
async def test_shutdown_stops_several_boards_and_leaves_nothing_behind(make_supervisor):
    before = asyncio.all_tasks()
    sup = make_supervisor()
    events = sup.events()
    boards = [sup.add("one", "mps2-an385"), sup.add("two", "mps2-an386"),
              sup.add("three", "mps2-an385", icount_shift=0)]
    consoles = [b.subscribe() for b in boards]
    await asyncio.gather(*(sup.start(b.name) for b in boards))
    await asyncio.gather(*(wait_line(c, READY) for c in consoles))
    pids = sorted(b.pid for b in boards)
    assert sorted(qemu_children()) == pids
    assert len(asyncio.all_tasks() - before) > 0

    await sup.shutdown()
    assert qemu_children() == [] and all(pid_gone(p) for p in pids)
    assert all(b.state is BoardState.STOPPED for b in boards)
    assert asyncio.all_tasks() - before == set()
    kinds = [ev.kind async for ev in events]  # the feed ends at shutdown
    assert kinds.count(EventKind.STARTED) == 3 and kinds.count(EventKind.STOPPED) == 3
    assert EventKind.EXITED not in kinds
    for c in consoles:  # console feeds end too, after what was queued
        assert [ln.text async for ln in c][-1].startswith("[stopped]")
    with pytest.raises(SupervisorError, match="shut down"):
        await sup.start("one")
