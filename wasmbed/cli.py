"""wasmbed: command-line tools (headless): boards, firmware, run (one app on a fresh emulated board, for CI)."""

from __future__ import annotations

import argparse
import sys

from wasmbed.dts import board_names, load_board


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wasmbed", description="wasmbed headless tools")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("boards", help="list the boards in dts/ with their facts")
    fw = sub.add_parser("firmware", help="firmware tools (same as python -m wasmbed.firmware)")
    fw.add_argument("rest", nargs=argparse.REMAINDER)
    from wasmbed import run

    run.add_parser(sub)
    args = parser.parse_args(argv)
    if args.cmd == "run":
        return run.main(args)
    if args.cmd == "boards":
        for name in board_names():
            b = load_board(name)
            print(f"{name:<20} {b.qemu_machine:<20} {b.cpu:<11} {b.cpu_clock_hz // 1_000_000:>4} MHz "
                  f"ram {b.sram.size // 1024:>5} KiB  flash {b.flash.size // 1024:>5} KiB  {b.model}")
        return 0
    from wasmbed.firmware.__main__ import main as firmware_main

    return firmware_main(args.rest)


if __name__ == "__main__":
    sys.exit(main())
