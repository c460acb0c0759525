"""QEMU command lines for a board, built from its device tree.

Everything board-specific (machine name, which ``-serial`` slot feeds which UART) comes from the
DTS via wasmbed.dts; this module only knows how QEMU spells things. The supervisor adds process
management on top; tests and the headless tools use the same command builder so there is one
way a board is started.
"""

from __future__ import annotations

import shutil
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
        cmd += list(self.extra_args)
        return cmd


def console_only(board: Board, firmware: Path, console: str = "stdio", **kw: object) -> QemuLaunch:
    """A launch with just the board's console UART wired (the link UART goes to null)."""
    return QemuLaunch(board, firmware, {board.console.label: console}, **kw)  # type: ignore[arg-type]
