"""Check a WebAssembly module against the host ABI (docs/abi.md) and a target board, before anything is
stored or sent.

Why at the gateway: a module the device would refuse costs a transfer over a slow link and leaves a
failed app behind; a refusal here names the offending import, export or number at once. The device
still checks (wasm3 link errors, NO_MEMORY): these checks are the same rules, applied earlier.

Parsing and validation use wasmtime with the proposals wasm3 lacks switched off, so a module that uses
SIMD or threads is refused here rather than on the device.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import wasmtime

from wasmbed.dts import DtsError, load_board
from wasmbed.firmware import profile

ABI_VERSION = 1
ABI_MODULE = "wasmbed"
PAGE = 64 * 1024
KiB = 1024

I32, I64 = "i32", "i64"
#: Imports of ABI version 1: name -> (params, results). docs/abi.md section 3.
IMPORTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "log": ((I32, I32, I32), ()),
    "uptime_ms": ((), (I64,)),
    "timer_set": ((I32, I32, I32), (I32,)),
    "timer_cancel": ((I32,), (I32,)),
    "led_count": ((), (I32,)),
    "led_set": ((I32, I32), (I32,)),
    "led_get": ((I32,), (I32,)),
    "i2c_transfer": ((I32, I32, I32, I32, I32, I32), (I32,)),
    "temperature_mdeg": ((I32,), (I32,)),
    "random_fill": ((I32, I32), (I32,)),
    "publish": ((I32, I32, I32, I32), (I32,)),
    "config_get": ((I32, I32, I32, I32), (I32,)),
}
#: Imports that take a pointer into the app's memory (the app must export ``memory``).
POINTER_IMPORTS = frozenset({"log", "i2c_transfer", "temperature_mdeg", "random_fill", "publish", "config_get"})
#: Exports with a meaning: name -> (params, results). app_start is required.
EXPORTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "app_start": ((), (I32,)),
    "app_stop": ((), ()),
    "on_timer": ((I32,), ()),
    "on_message": ((I32, I32, I32, I32), ()),
    "msg_buffer": ((), (I32,)),
}
MSG_BUFFER_SIZE = 1088  # topic (64) + payload (1024), docs/abi.md section 2

# Memory model of a board (docs/abi.md section 6); estimates, revised as the firmware is measured.
LINK_RESERVE = 35 * KiB  # tls-link: 15 KiB static + 20 KiB heap high-water during a handshake
RUNTIME_RESERVE = 6 * KiB  # per app: wasm3 environment and runtime, 4 KiB operand stack
CODE_FACTOR = 2  # module bytes kept + compiled code, per module byte
WASM_RUNTIME = "wasm-runtime"


class ValidationError(ValueError):
    """The module or its target is refused; the message names what and why."""


@dataclass(frozen=True)
class ModuleInfo:
    """What the gateway knows of a valid module."""

    wasm: bytes
    sha256: str
    imports: tuple[str, ...]
    exports: tuple[str, ...]
    has_memory: bool
    initial_pages: int
    max_pages: int | None

    @property
    def size(self) -> int:
        return len(self.wasm)


def _engine() -> wasmtime.Engine:
    cfg = wasmtime.Config()
    # wasm3 implements MVP + multi-value, sign-ext, sat-float-to-int, bulk memory: switch off the rest we can.
    cfg.wasm_simd = False
    cfg.wasm_relaxed_simd = False
    cfg.wasm_threads = False
    cfg.wasm_multi_memory = False
    cfg.wasm_memory64 = False
    # Reference types stay on: wasmtime aborts the process when they are off (other features depend on
    # them); a module using them still fails on the device's wasm3 with LOAD_FAILED.
    return wasmtime.Engine(cfg)


_ENGINE: wasmtime.Engine | None = None


def engine() -> wasmtime.Engine:
    """One shared engine configured like the device runtime (compiling with it is thread-safe)."""
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = _engine()
    return _ENGINE


def module_bytes(source: bytes | str | Path) -> bytes:
    """WASM bytes from a path (``.wasm`` or ``.wat``), WASM bytes, or WAT text/bytes."""
    if isinstance(source, Path):
        try:
            raw = source.read_bytes()
        except OSError as exc:
            raise ValidationError(f"cannot read {source}: {exc.strerror}") from exc
        source = raw if source.suffix != ".wat" else raw.decode("utf-8", errors="replace")
    if isinstance(source, bytes) and not source.startswith(b"\0asm"):
        try:
            source = source.decode("utf-8")
        except UnicodeDecodeError:
            raise ValidationError("not a WebAssembly module (no \\0asm header) and not WAT text") from None
    if isinstance(source, str):
        try:
            return bytes(wasmtime.wat2wasm(source))
        except wasmtime.WasmtimeError as exc:
            raise ValidationError(f"invalid WAT: {_first_line(exc)}") from None
    return source


def _first_line(exc: Exception) -> str:
    """wasmtime's message with its "Caused by" chain on one line."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and ln.strip() != "Caused by:"]
    return ": ".join(lines) if lines else type(exc).__name__


def _sig(ft: wasmtime.FuncType) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return tuple(str(p) for p in ft.params), tuple(str(r) for r in ft.results)


def _fmt(sig: tuple[tuple[str, ...], tuple[str, ...]]) -> str:
    params, results = sig
    return f"({', '.join(params)}) -> " + (f"{results[0]}" if len(results) == 1 else f"({', '.join(results)})")


def validate_module(source: bytes | str | Path) -> ModuleInfo:
    """Parse, validate and check a module against ABI version 1; raise :class:`ValidationError`."""
    wasm = module_bytes(source)
    try:
        module = wasmtime.Module(engine(), wasm)
    except wasmtime.WasmtimeError as exc:
        raise ValidationError(f"invalid WebAssembly module: {_first_line(exc)}") from None
    imports = []
    for imp in module.imports:
        where = f"import {imp.module}.{imp.name}"
        if imp.module != ABI_MODULE:
            raise ValidationError(f"{where}: imports must come from module {ABI_MODULE!r} (docs/abi.md section 3)")
        if not isinstance(imp.type, wasmtime.FuncType):
            kind = type(imp.type).__name__.removesuffix("Type").lower()
            raise ValidationError(f"{where}: only functions can be imported, not a {kind}"
                                  + ("; the module must define and export its own memory" if kind == "memory"
                                     else ""))
        if imp.name not in IMPORTS:
            raise ValidationError(f"{where}: unknown function (ABI version {ABI_VERSION} has "
                                  f"{', '.join(sorted(IMPORTS))})")
        got, want = _sig(imp.type), IMPORTS[imp.name]
        if got != want:
            raise ValidationError(f"{where}: signature {_fmt(got)}, ABI version {ABI_VERSION} needs {_fmt(want)}")
        imports.append(imp.name)
    exports: dict[str, object] = {exp.name: exp.type for exp in module.exports}
    if "app_start" not in exports:
        raise ValidationError("export app_start missing: every app must export app_start() -> i32")
    for name, want in EXPORTS.items():
        t = exports.get(name)
        if t is None:
            continue
        if not isinstance(t, wasmtime.FuncType):
            raise ValidationError(f"export {name}: must be a function {_fmt(want)}")
        if _sig(t) != want:
            raise ValidationError(f"export {name}: signature {_fmt(_sig(t))}, the ABI needs {_fmt(want)}")
    if "on_message" in exports and "msg_buffer" not in exports:
        raise ValidationError("export on_message needs export msg_buffer() -> i32 (where the runtime writes the "
                              "topic and payload, docs/abi.md section 2)")
    memories = [e for e in module.exports if isinstance(e.type, wasmtime.MemoryType)]
    needs_memory = sorted(set(imports) & POINTER_IMPORTS) + (["on_message"] if "on_message" in exports else [])
    mem_export = exports.get("memory")
    if needs_memory and not isinstance(mem_export, wasmtime.MemoryType):
        raise ValidationError(f"export memory missing: {', '.join(needs_memory)} pass pointers into the app's "
                              "memory, so the module must export it as \"memory\"")
    mem = mem_export if isinstance(mem_export, wasmtime.MemoryType) else (memories[0].type if memories else None)
    initial, maximum, has_memory = 0, None, mem is not None
    if isinstance(mem, wasmtime.MemoryType):
        if mem.is_64:
            raise ValidationError("memory: 64-bit memories are not supported")
        if mem.page_size != PAGE:
            raise ValidationError(f"memory: page size {mem.page_size} is not 64 KiB")
        initial, maximum = int(mem.limits.min), mem.limits.max
    else:  # a memory the module keeps to itself still takes its pages on the device
        declared = memory_section_pages(wasm)
        if declared is not None:
            initial, has_memory = declared, True
    return ModuleInfo(wasm=wasm, sha256=hashlib.sha256(wasm).hexdigest(), imports=tuple(imports),
                      exports=tuple(exports), has_memory=has_memory, initial_pages=initial,
                      max_pages=None if maximum is None else int(maximum))


def memory_section_pages(wasm: bytes) -> int | None:
    """Initial pages of the memory declared in a (validated) binary's memory section; None if it has none."""
    pos = 8
    while pos < len(wasm):
        sid = wasm[pos]
        size, pos = _leb(wasm, pos + 1)
        if sid == 5:
            count, p = _leb(wasm, pos)
            if count == 0:
                return None
            _flags, p = _leb(wasm, p)
            return _leb(wasm, p)[0]
        pos += size
    return None


def _leb(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return result, pos


# -- boards -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BoardBudget:
    """How much RAM a board leaves for apps, and how the number was derived (for messages)."""

    board: str
    ram: int
    heap: int
    derivation: str


def board_budget(board_name: str) -> BoardBudget:
    """The app heap of a board from its DTS and firmware profile; refuses boards without wasm-runtime."""
    try:
        board = load_board(board_name)
    except (DtsError, FileNotFoundError, KeyError, ValueError) as exc:
        raise ValidationError(f"unknown board {board_name!r}: {exc}") from None
    ram = board.sram.size
    prof = profile.select(ram, board.flash.size, f"dts/{board.path.name}")
    if WASM_RUNTIME not in prof.enabled:
        why = next((line for line in prof.lacking if line.startswith(WASM_RUNTIME)), WASM_RUNTIME)
        raise ValidationError(f"board {board_name} cannot run apps: its firmware profile {prof.name!r} lacks "
                              f"capability {why}")
    bp = board.boot_params.size if board.boot_params is not None else 0
    # A stack in a region of its own (/chosen wasmbed,stack, e.g. the olimex CCM) takes nothing from SRAM.
    stack = 0 if getattr(board, "stack_region", None) is not None else profile.stack_size(ram)
    link = LINK_RESERVE if "tls-link" in prof.enabled else 0
    heap = max(0, ram - bp - stack - link)
    stack_text = f"{stack // KiB} KiB stack" if stack else "0 KiB stack (own region)"
    derivation = (f"{ram // KiB} KiB RAM - {bp // KiB} KiB boot params - {stack_text} - "
                  f"{link // KiB} KiB TLS link = {heap // KiB} KiB for apps")
    return BoardBudget(board_name, ram, heap, derivation)


def app_footprint(info: ModuleInfo) -> int:
    """Estimated RAM an app takes on a device (docs/abi.md section 6)."""
    return info.initial_pages * PAGE + RUNTIME_RESERVE + CODE_FACTOR * info.size


def check_limits(info: ModuleInfo, memory_pages: int | None, time_budget_ms: int) -> int:
    """Check the Application's limits against the module; returns the effective memory page limit."""
    if not 1 <= time_budget_ms <= 60_000:
        raise ValidationError(f"limits.timeBudgetMs {time_budget_ms} outside 1..60000")
    pages = info.initial_pages if memory_pages is None else memory_pages
    if not 0 <= pages <= 65_536:
        raise ValidationError(f"limits.memoryPages {pages} outside 0..65536")
    if pages < info.initial_pages:
        raise ValidationError(f"limits.memoryPages {pages} is below the module's initial memory of "
                              f"{info.initial_pages} pages")
    return pages


def check_fits(info: ModuleInfo, board_name: str) -> None:
    """Refuse if the module's initial memory and code cannot fit the board's app heap."""
    budget = board_budget(board_name)
    need = app_footprint(info)
    if need > budget.heap:
        raise ValidationError(
            f"does not fit board {board_name}: needs {need // KiB} KiB ({info.initial_pages} initial memory pages x "
            f"64 KiB + {RUNTIME_RESERVE // KiB} KiB runtime + {CODE_FACTOR} x {info.size} bytes of code), the "
            f"board has {budget.derivation}")


__all__ = [
    "ABI_MODULE",
    "ABI_VERSION",
    "EXPORTS",
    "IMPORTS",
    "POINTER_IMPORTS",
    "BoardBudget",
    "ModuleInfo",
    "ValidationError",
    "app_footprint",
    "board_budget",
    "check_fits",
    "check_limits",
    "engine",
    "module_bytes",
    "validate_module",
]
