"""Boot time to banner and firmware size, per board.

For every board: build the default firmware, then N times start QEMU with the console on a pipe and
time process start -> the banner's first line, and -> "wasmbed: ready" (wall clock; QEMU unthrottled,
so this is mostly QEMU's own start-up). Sizes are the ELF's sections (heap and stack are reservations,
shown apart). Medians of one run on this machine.

    .venv/bin/python bench/boot.py [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from wasmbed.dts import board_names, load_board
from wasmbed.firmware.build import build
from wasmbed.gateway.qemu import console_only


def time_boot(board: str, elf) -> tuple[float, float]:
    cmd = console_only(load_board(board), elf).command()
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    banner = ready = 0.0
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode(errors="replace")
            if not banner and line.startswith("wasmbed firmware"):
                banner = time.monotonic() - t0
            if "wasmbed: ready" in line:
                ready = time.monotonic() - t0
                break
    finally:
        proc.kill()
        proc.wait()
    return banner, ready


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"{'board':<20} {'text':>8} {'data':>6} {'bss':>7} {'heap':>9} {'stack':>6}  {'banner':>8} {'ready':>8}")
    for board in board_names():
        fw = build(board)
        size = fw.size()
        runs = [time_boot(board, fw.elf) for _ in range(args.runs)]
        banner = statistics.median(r[0] for r in runs)
        ready = statistics.median(r[1] for r in runs)
        print(f"{board:<20} {size['text']:>8} {size['data']:>6} {size['bss']:>7} {size['heap']:>9} "
              f"{size['stack']:>6}  {banner * 1000:>6.0f} ms {ready * 1000:>6.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
