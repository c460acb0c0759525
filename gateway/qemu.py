"""QEMU command lines for a board, built from its device tree.

Everything board-specific (machine name, which ``-serial`` slot feeds which UART) comes from the
DTS via wasmbed.dts; this module only knows how QEMU spells things. The supervisor adds process
management on top; tests and the headless tools use the same command builder so there is one
way a board is started.
"""

from __future__ import annotations

import shutil
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from wasmbed.dts import Board


class QemuError(Exception):
    """QEMU is missing, too old, or the board cannot be wired as asked."""


def qemu_binary() -> str:
    exe = shutil.which("qemu-system-arm")
    if exe is None:
        raise QemuError("qemu-system-arm not found: run scripts/bootstrap setup")
    return exe


@dataclass(frozen=True)
class QemuLaunch:
    """What to start: a board, its firmware, and where each UART goes.

    ``serial`` maps a UART's DTS label (e.g. ``uart0``) to a QEMU character-device spec such as
    ``stdio``, ``file:/path``, ``tcp:127.0.0.1:4000`` or ``chardev:id``; UARTs not named are
    connected to ``null``.
    """

    board: Board
    firmware: Path
    serial: Mapping[str, str] = field(default_factory=dict)
    qmp_socket: Path | None = None
    icount_shift: int | None = None  # -icount shift=N: deterministic, instruction-counted time
    extra_args: Sequence[str] = ()
    monitor_on_stdio: bool = False  # mux the HMP monitor onto a stdio console (ctrl-a c)
    #: Full ``-chardev`` values (see :func:`socket_chardev`); ``serial`` refers to them as ``chardev:<id>``.
    chardevs: Sequence[str] = ()
    #: Files QEMU's generic loader copies into guest memory at every system reset: (file, address) for
    #: a raw blob, (file, None) for an ELF that carries its own load address (see :func:`blob_elf`).
    loaders: Sequence[tuple[Path, int | None]] = ()
    #: Extra ``-device`` values, e.g. from :func:`i2c_sensor_devices`.
    devices: Sequence[str] = ()
    #: ARM semihosting against the host (file I/O relative to QEMU's cwd); see :data:`SANDBOX`.
    semihosting: bool = False
    #: seccomp filter (``-sandbox``); with semihosting it stops SYS_SYSTEM from running host commands.
    sandbox: bool = False

    def command(self) -> list[str]:
        board = self.board
        if not self.firmware.is_file():
            raise QemuError(f"firmware image {self.firmware} does not exist: build it first")
        ports = sorted((u for u in board.uarts if u.qemu_serial_index >= 0), key=lambda u: u.qemu_serial_index)
        known = {u.label for u in ports}
        unknown = set(self.serial) - known
        if unknown:
            raise QemuError(
                f"{board.name}: no QEMU serial port for {', '.join(sorted(unknown))} "
                f"(dts/{board.path.name} /emulation serial-ports lists {', '.join(sorted(known))})"
            )
        cmd = [qemu_binary(), "-machine", board.qemu_machine, "-nographic", "-nodefaults", "-nic", "none",
               "-kernel", str(self.firmware)]
        last = max((u.qemu_serial_index for u in ports if u.label in self.serial), default=-1)
        for uart in ports:
            if uart.qemu_serial_index > last:
                break
            spec = self.serial.get(uart.label, "null")
            if spec == "stdio" and self.monitor_on_stdio:
                spec = "mon:stdio"
            cmd += ["-serial", spec]
        if not self.monitor_on_stdio:
            cmd += ["-monitor", "none"]
        if self.qmp_socket is not None:
            cmd += ["-qmp", f"unix:{self.qmp_socket},server=on,wait=off"]
        if self.icount_shift is not None:
            cmd += ["-icount", f"shift={self.icount_shift}"]
        for chardev in self.chardevs:
            cmd += ["-chardev", chardev]
        for blob, addr in self.loaders:
            spec = f"loader,file={qemu_opt_escape(str(blob))}"
            cmd += ["-device", spec if addr is None else f"{spec},addr=0x{addr:x},force-raw=on"]
        for device in self.devices:
            cmd += ["-device", device]
        if self.semihosting:
            cmd += ["-semihosting-config", "enable=on,target=native"]
        if self.sandbox:
            cmd += ["-sandbox", SANDBOX]
        cmd += list(self.extra_args)
        return cmd


#: seccomp policy: deny obsolete syscalls, privilege changes, fork/exec and resource control. ARM
#: semihosting's SYS_SYSTEM otherwise runs ``system()`` on the host with QEMU's privileges; with
#: ``spawn=deny`` it just fails in the guest. File I/O (SYS_OPEN...) is not restricted by it.
SANDBOX = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"


def blob_elf(data: bytes, addr: int) -> bytes:
    """A minimal 32-bit little-endian ARM ELF with one PT_LOAD segment: ``data`` at ``addr``.

    Why not ``-device loader,...,force-raw=on``: for raw files QEMU's generic loader caps the size at
    the machine's ``-m`` RAM size, which is 0 on machines whose RAM is all on-chip (olimex-stm32-h405:
    "Cannot load specified image"). ELF segments have no such cap. The loader does not touch the PC
    unless given ``cpu-num``, so ``e_entry`` is irrelevant.
    """
    ehsize, phsize = 52, 32
    header = struct.pack(
        "<16sHHIIIIIHHHHHH",
        b"\x7fELF\x01\x01\x01" + bytes(9),  # ELFCLASS32, ELFDATA2LSB, EV_CURRENT
        2, 40, 1,  # ET_EXEC, EM_ARM, EV_CURRENT
        addr, ehsize, 0, 0x05000000,  # e_entry, e_phoff, e_shoff, EF_ARM_ABI_VER5
        ehsize, phsize, 1, 0, 0, 0,
    )
    segment = struct.pack("<IIIIIIII", 1, ehsize + phsize, addr, addr, len(data), len(data), 4, 4)  # PT_LOAD, R
    return header + segment + data


def qemu_opt_escape(value: str) -> str:
    """QEMU option values double commas (``a,,b`` is the literal ``a,b``)."""
    return value.replace(",", ",,")


def socket_chardev(chardev_id: str, host: str, port: int, reconnect_ms: int = 500) -> str:
    """A ``-chardev`` value for QEMU connecting out to ``host:port`` and retrying every ``reconnect_ms``.

    QEMU 9.2 renamed the retry option from ``reconnect=<seconds>`` to ``reconnect-ms=<ms>``; 10.0
    still accepts the old one but it is deprecated, so this needs QEMU >= 9.2.
    """
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # QEMU's inet syntax for IPv6 literals
    return (f"socket,id={chardev_id},host={qemu_opt_escape(host)},port={port},"
            f"reconnect-ms={reconnect_ms},nodelay=on")


def i2c_sensor_devices(board: Board) -> list[str]:
    """``-device`` values for the TMP105 sensors the DTS puts on the board's I2C buses.

    The QOM id is the DTS label, so the sensor is ``/machine/peripheral/<label>`` over QMP.
    ``bus=`` is only given when QEMU names the bus uniquely (mps2 names all four SBCon buses
    "i2c"; there the DTS says which bus QEMU picks by default instead).
    """
    devices = []
    for dev in board.i2c_devices:
        if dev.compatible != "ti,tmp105":
            continue
        spec = f"tmp105,id={dev.label},address=0x{dev.address:x}"
        bus = board.qemu_i2c_bus_name(dev.bus)
        if bus is not None:
            spec += f",bus={bus}"
        devices.append(spec)
    return devices


def console_only(board: Board, firmware: Path, console: str = "stdio", **kw: object) -> QemuLaunch:
    """A launch with just the board's console UART wired (the link UART goes to null)."""
    return QemuLaunch(board, firmware, {board.console.label: console}, **kw)  # type: ignore[arg-type]
