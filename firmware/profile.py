"""Which firmware capabilities a board gets, decided from its device-tree RAM and flash sizes.

This is the only place the thresholds live: the code generator turns them into WB_CAP_* macros and
the human-readable "lacks" lines the firmware prints at boot, so no board is special-cased by name.
The numbers are what each layer needs on top of the core; they are revised as the layers are
measured (see docs/firmware.md).
"""

from __future__ import annotations

from dataclasses import dataclass

KiB = 1024


@dataclass(frozen=True)
class Capability:
    name: str
    min_ram: int
    min_flash: int
    why: str


CAPABILITIES: tuple[Capability, ...] = (
    Capability("console", 0, 0, "boot banner and crash reports on the console UART"),
    # Measured on mps2-an385 (firmware 0.1.0, mbedTLS 3.6.6, TLS 1.3): +96 KiB flash, 15 KiB static RAM
    # (UART ring, frame buffers, contexts) + 20 KiB heap high-water during the handshake.
    Capability(
        "tls-link",
        48 * KiB,
        128 * KiB,
        "mbedTLS client: TLS record buffers, ECDHE/ECDSA P-256 handshake state, certificates",
    ),
    Capability(
        "wasm-runtime",
        96 * KiB,
        256 * KiB,
        "wasm3 interpreter, plus at least one 64 KiB WebAssembly memory page per app",
    ),
)

#: Watchdog timeout: long enough for the slowest handshake step, short enough to notice a hang.
WATCHDOG_TIMEOUT_MS = 4000


@dataclass(frozen=True)
class Profile:
    name: str
    enabled: tuple[str, ...]
    lacking: tuple[str, ...]  # one sentence each, with the numbers that rule the capability out


def _kib(n: int) -> str:
    return f"{n // KiB} KiB"


def select(ram: int, flash: int, source: str) -> Profile:
    """Enable every capability the board's RAM and flash (as its device tree declares) can hold."""
    enabled: list[str] = []
    lacking: list[str] = []
    for cap in CAPABILITIES:
        short = []
        if ram < cap.min_ram:
            short.append(f"needs >= {_kib(cap.min_ram)} RAM, {source} declares {_kib(ram)}")
        if flash < cap.min_flash:
            short.append(f"needs >= {_kib(cap.min_flash)} flash, {source} declares {_kib(flash)}")
        if short:
            lacking.append(f"{cap.name}: {'; '.join(short)} ({cap.why})")
        else:
            enabled.append(cap.name)
    name = "full" if not lacking else "minimal" if enabled == ["console"] else "reduced"
    return Profile(name, tuple(enabled), tuple(lacking))


def stack_size(ram: int, own_region: int | None = None) -> int:
    """Main stack: a quarter of RAM on small boards, capped at 16 KiB (the heap gets the rest); in a
    region of its own (DTS /chosen wasmbed,stack), half that region, capped at 32 KiB."""
    if own_region is not None:
        return min(32 * KiB, own_region // 2) // 8 * 8
    return min(16 * KiB, max(1 * KiB, ram // 4)) // 8 * 8
