"""Build the firmware for a board: device tree -> generated board files + .dtb -> make -> .elf/.bin.

Builds go out of tree, into ``cache_dir()/firmware/<board>[+<variant>]`` unless another root is
given, and are incremental: a second build with nothing changed runs no compiler.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import wasmbed
from wasmbed.dts import load_board
from wasmbed.firmware import codegen, deps
from wasmbed.paths import cache_dir

FIRMWARE_SRC = Path(__file__).resolve().parent

#: Build variants: name -> extra make variables. The fault-* images crash on purpose after the
#: banner so tests can check the crash report.
VARIANTS: dict[str, dict[str, str]] = {
    "default": {},
    "fault-undefined": {"FAULT_TEST": "undefined"},
    "fault-bus": {"FAULT_TEST": "bus"},
    "fault-divide": {"FAULT_TEST": "divide"},
    # Computes fib(25) natively after the banner (bench/compute.py compares it with WASM).
    "bench-fib": {"BENCH_FIB": "25"},
    # Drains the link UART and reports byte counts: the raw bridge throughput for bench/apps.py.
    "bench-uart-sink": {"BENCH_UART_SINK": "1"},
}


class BuildError(Exception):
    """A build step failed; the message carries the tool's own output."""


@dataclass(frozen=True)
class Firmware:
    board: str
    variant: str
    build_dir: Path
    elf: Path
    bin: Path
    dtb: Path

    def size(self) -> dict[str, int]:
        """Flash and RAM use by section group (heap and stack reservations counted apart from bss)."""
        out = subprocess.run(["arm-none-eabi-size", "-A", str(self.elf)], check=True, capture_output=True,
                             text=True)
        sections = {}
        for line in out.stdout.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1].isdigit():
                sections[parts[0]] = int(parts[1])
        text = sum(sections.get(s, 0) for s in (".text", ".ARM.exidx", ".init_array"))
        return {"text": text, "data": sections.get(".data", 0),
                "bss": sections.get(".bss", 0) + sections.get(".noinit", 0),
                "heap": sections.get(".heap", 0), "stack": sections.get(".stack", 0)}


def default_root() -> Path:
    return cache_dir() / "firmware"


def build_dir_for(board: str, variant: str = "default", root: Path | None = None) -> Path:
    name = board if variant == "default" else f"{board}+{variant}"
    return (root or default_root()) / name


def compile_dtb(dts: Path, out: Path) -> Path:
    """dtc the board's device tree; any dtc warning fails the build."""
    if shutil.which("dtc") is None:
        raise BuildError("dtc not found: install device-tree-compiler (scripts/bootstrap does)")
    out.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["dtc", "-I", "dts", "-O", "dtb", "-o", str(out), str(dts)], capture_output=True, text=True)
    if proc.returncode != 0 or proc.stderr.strip():
        raise BuildError(f"dtc {dts}:\n{proc.stderr.strip()}")
    return out


def _forget_other_checkout(out: Path) -> None:
    """Drop objects compiled from another checkout: their make dependency files name that checkout's
    sources by absolute path, and make stops at the first one that no longer exists."""
    stamp = out / "source.txt"
    here = str(FIRMWARE_SRC)
    if stamp.exists() and stamp.read_text() == here:
        return
    shutil.rmtree(out / "obj", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    stamp.write_text(here)


def build(board: str | Path, variant: str = "default", root: Path | None = None, jobs: int | None = None,
          quiet: bool = True) -> Firmware:
    """Build one board (a name from dts/ or a path to a .dts) and return the artefacts."""
    if variant not in VARIANTS:
        raise BuildError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    if shutil.which("arm-none-eabi-gcc") is None:
        raise BuildError("arm-none-eabi-gcc not found: install gcc-arm-none-eabi (scripts/bootstrap does)")
    info = load_board(board)
    out = build_dir_for(info.name, variant, root)
    _forget_other_checkout(out)
    codegen.write(codegen.generate(info), out / "gen")
    dtb = compile_dtb(info.path, out / f"{info.name}.dtb")
    make_vars = {"BUILD_DIR": str(out), "VERSION": wasmbed.__version__, **VARIANTS[variant]}
    board_mk = (out / "gen" / "board.mk").read_text()
    if "WB_CAP_TLS_LINK := 1" in board_mk:
        make_vars["MBEDTLS_DIR"] = str(deps.fetch(deps.MBEDTLS, log=lambda _msg: None))
    if "WB_CAP_WASM_RUNTIME := 1" in board_mk:
        make_vars["WASM3_DIR"] = str(deps.fetch(deps.WASM3, log=lambda _msg: None))
    cmd = ["make", "-C", str(FIRMWARE_SRC), f"-j{jobs or os.cpu_count() or 1}",
           *(f"{k}={v}" for k, v in make_vars.items())]
    proc = subprocess.run(cmd, capture_output=quiet, text=True)
    if proc.returncode != 0:
        raise BuildError(f"firmware build for {info.name} ({variant}) failed:\n{proc.stdout or ''}{proc.stderr or ''}")
    return Firmware(info.name, variant, out, out / "wasmbed.elf", out / "wasmbed.bin", dtb)
