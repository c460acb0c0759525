"""Build the example apps of ``apps/`` (WAT and C) into the cache: ``cache_dir()/apps/<name>.wasm``.

Why built and not committed: binaries in the repository drift from their sources. WAT goes through
``wasmtime.wat2wasm`` (in-process), C through Debian's clang 14 + wasm-ld (docs/abi.md section 5.3).
Incremental: each output has a ``.stamp`` with the SHA-256 of its inputs and the command; unchanged
inputs are not rebuilt.

CLI (called by scripts/bootstrap)::

    python -m wasmbed.gateway.examples build [--out DIR]
    python -m wasmbed.gateway.examples list
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import wasmtime

import wasmbed.apps
from wasmbed import paths

#: Sources of the examples: the repository's ``apps/`` folder (next to ``gateway/``).
APPS_DIR = Path(wasmbed.apps.__file__).resolve().parent  # apps/ in a checkout, package data in a wheel

C_FLAGS = ("--target=wasm32", "-nostdlib", "-O2", "-Wall", "-Wextra", "-Werror", "-Wl,--no-entry",
           "-Wl,--initial-memory=65536", "-Wl,-z,stack-size=4096")


class BuildError(Exception):
    """An example did not build (compiler missing or failing); the message says which and why."""


@dataclass(frozen=True)
class Example:
    name: str  # output stem: "hello", "fib", "thermostat-c"
    source: Path
    kind: str  # "wat" | "c"


def examples(apps_dir: Path = APPS_DIR) -> list[Example]:
    """Every example source: ``*.wat`` as themselves, ``c/*.c`` as ``<stem>`` (``-c`` if a WAT has the name)."""
    if not apps_dir.is_dir():
        raise BuildError(f"example sources not found at {apps_dir} (run from a source checkout)")
    out = [Example(p.stem, p, "wat") for p in sorted(apps_dir.glob("*.wat"))]
    wat_names = {e.name for e in out}
    for p in sorted((apps_dir / "c").glob("*.c")):
        out.append(Example(f"{p.stem}-c" if p.stem in wat_names else p.stem, p, "c"))
    return out


def output_dir() -> Path:
    d = paths.cache_dir() / "apps"
    d.mkdir(parents=True, exist_ok=True)
    return d


def find_clang() -> str | None:
    """clang able to target wasm32 (Debian: clang or clang-14; wasm-ld from lld)."""
    for name in ("clang", "clang-14"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _wasmtime_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("wasmtime")
    except PackageNotFoundError:
        return "unknown"


def _stamp(ex: Example, cmd: list[str]) -> str:
    h = hashlib.sha256()
    h.update(ex.source.read_bytes())
    if ex.kind == "c":
        for header in sorted(ex.source.parent.glob("*.h")):
            h.update(header.name.encode() + b"\0" + header.read_bytes())
    h.update("\0".join(cmd).encode())
    return h.hexdigest()


def _command(ex: Example, out: Path) -> list[str]:
    if ex.kind == "wat":
        return ["wat2wasm", f"wasmtime-{_wasmtime_version()}"]
    clang = find_clang()
    if clang is None:
        raise BuildError(f"{ex.source.name}: clang not found (Debian: apt-get install clang lld)")
    return [clang, *C_FLAGS, f"-I{ex.source.parent}", "-o", str(out), str(ex.source)]


def build_one(ex: Example, out_dir: Path) -> tuple[Path, bool]:
    """Build one example if its inputs changed; returns (output, rebuilt)."""
    out = out_dir / f"{ex.name}.wasm"
    stamp_path = out_dir / f"{ex.name}.stamp"
    cmd = _command(ex, out)
    stamp = _stamp(ex, cmd)
    if out.exists() and stamp_path.exists() and stamp_path.read_text() == stamp:
        return out, False
    if ex.kind == "wat":
        try:
            data = wasmtime.wat2wasm(ex.source.read_text())
        except wasmtime.WasmtimeError as exc:
            raise BuildError(f"{ex.source.name}: {exc}") from exc
        tmp = out.with_suffix(".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, out)
    else:
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise BuildError(f"{ex.source.name}: {' '.join(cmd)}\n{res.stderr.strip()}")
    stamp_path.write_text(stamp)
    return out, True


def build(out_dir: Path | None = None, *, names: list[str] | None = None,
          skip_missing_compiler: bool = False) -> dict[str, Path]:
    """Build the examples (all, or ``names``) into ``out_dir`` (default: the cache); returns name -> path.

    With ``skip_missing_compiler``, C examples are skipped (not failed) when no clang is installed.
    """
    out_dir = out_dir or output_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    built: dict[str, Path] = {}
    for ex in examples():
        if names is not None and ex.name not in names:
            continue
        if ex.kind == "c" and skip_missing_compiler and find_clang() is None:
            continue
        built[ex.name] = build_one(ex, out_dir)[0]
    return built


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m wasmbed.gateway.examples", description="Build the example apps.")
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build every example (incremental)")
    b.add_argument("--out", type=Path, help="output folder (default: <cache>/apps)")
    sub.add_parser("list", help="list the examples and their sources")
    args = p.parse_args(argv)
    if args.cmd == "list":
        for ex in examples():
            print(f"{ex.name:14} {ex.kind:4} {ex.source}")
        return 0
    out_dir = args.out or output_dir()
    try:
        for ex in examples():
            path, rebuilt = build_one(ex, out_dir)
            print(f"{'built' if rebuilt else 'up to date':10} {path} ({path.stat().st_size} bytes)")
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
