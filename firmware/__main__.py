"""python -m wasmbed.firmware: fetch third-party sources, generate board files, build images."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from wasmbed.dts import board_names
from wasmbed.firmware import build as fw_build
from wasmbed.firmware import codegen, deps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wasmbed.firmware", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build firmware images (incremental)")
    b.add_argument("--board", action="append", help="board name (repeatable); default: every board in dts/")
    b.add_argument("--variant", default="default", choices=sorted(fw_build.VARIANTS))
    b.add_argument("--out", type=Path, help="build root (default: the per-user cache)")
    b.add_argument("-j", "--jobs", type=int)
    b.add_argument("-v", "--verbose", action="store_true", help="show compiler output")
    g = sub.add_parser("gen", help="only generate board_gen.h / memory.ld / board.mk")
    g.add_argument("dts", help="board name or path to a .dts")
    g.add_argument("--out", type=Path, required=True)
    sub.add_parser("fetch", help="fetch the pinned third-party sources into the cache")
    sub.add_parser("boards", help="list boards")
    args = parser.parse_args(argv)

    try:
        if args.cmd == "boards":
            print("\n".join(board_names()))
        elif args.cmd == "fetch":
            for name, path in deps.fetch_all().items():
                print(f"{name}: {path}")
        elif args.cmd == "gen":
            changed = codegen.generate_for(args.dts, args.out)
            print(f"generated {', '.join(changed) or 'nothing (up to date)'} in {args.out}")
        else:
            for board in args.board or board_names():
                t0 = time.monotonic()
                fw = fw_build.build(board, args.variant, args.out, args.jobs, quiet=not args.verbose)
                size = fw.size()
                print(f"{fw.board:<20} {args.variant:<16} text {size['text']:>7} data {size['data']:>5} "
                      f"bss {size['bss']:>5} heap {size['heap']:>7} stack {size['stack']:>5}  "
                      f"{time.monotonic() - t0:5.1f}s  {fw.elf}")
    except (fw_build.BuildError, codegen.CodegenError, deps.FetchError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
