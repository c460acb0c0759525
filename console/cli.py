"""wasmbed-console: start a board and attach its serial console.

Interim front end until the Textual console lands: it builds the firmware if needed, boots the
default board (or --board) in QEMU and connects its console UART to this terminal.
Quit with ctrl-a x (QEMU's stdio multiplexer).
"""

from __future__ import annotations

import argparse
import os
import sys

from wasmbed.dts import board_names, load_board
from wasmbed.firmware.build import BuildError, build
from wasmbed.gateway.qemu import QemuError, console_only

DEFAULT_BOARD = "mps2-an385"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wasmbed-console", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--board", default=DEFAULT_BOARD, choices=board_names(),
                        help=f"board to boot (default: {DEFAULT_BOARD})")
    args = parser.parse_args(argv)
    try:
        print(f"building firmware for {args.board} ...", flush=True)
        fw = build(args.board)
        launch = console_only(load_board(args.board), fw.elf, monitor_on_stdio=True)
        cmd = launch.command()
    except (BuildError, QemuError) as e:
        print(f"wasmbed-console: {e}", file=sys.stderr)
        return 1
    print(f"booting {args.board} in QEMU; quit with ctrl-a x", flush=True)
    os.execv(cmd[0], cmd)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
