"""Generate the firmware's board files from a device tree.

Outputs, into the build's gen/ folder:
  board_gen.h  every board fact the C code uses (addresses, IRQs, clocks, sizes, profile)
  memory.ld    the linker MEMORY regions (FLASH = /chosen wasmbed,flash, RAM = wasmbed,sram)
  board.mk     compiler flags for the CPU and the drivers the compatibles select

Files are rewritten only when their content changes, so `make` stays incremental.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from wasmbed.dts import Board, Uart, load_board
from wasmbed.firmware import profile

#: CPU (as the device tree names it) -> GCC flags. Hard-float where QEMU's core has an FPU.
CPU_FLAGS: dict[str, str] = {
    "cortex-m3": "-mcpu=cortex-m3 -mthumb -mfloat-abi=soft",
    "cortex-m4": "-mcpu=cortex-m4 -mthumb -mfloat-abi=soft",
    "cortex-m4f": "-mcpu=cortex-m4 -mthumb -mfpu=fpv4-sp-d16 -mfloat-abi=hard",
    "cortex-m7": "-mcpu=cortex-m7 -mthumb -mfpu=fpv5-d16 -mfloat-abi=hard",
    "cortex-m33": "-mcpu=cortex-m33 -mthumb -mfpu=fpv5-sp-d16 -mfloat-abi=hard",
}

#: compatible -> driver source (firmware/drivers/<name>.c). One UART family per board.
DRIVERS: dict[str, str] = {
    "arm,cmsdk-uart": "uart_cmsdk",
    "st,stm32-usart": "uart_stm32",
    "arm,cmsdk-watchdog": "wdt_cmsdk",
    "arm,versatile-i2c": "i2c_sbcon",
    "arm,mps2-fpgaio-gpio": "leds_fpgaio",
}

#: Address the bus-fault test image reads: QEMU maps nothing there on any of our boards (checked by
#: tests/test_firmware_boot.py, which expects a precise BusFault with this BFAR).
UNMAPPED_TEST_ADDR = 0xF0000000


class CodegenError(Exception):
    """The device tree lacks something the firmware needs; the message names it."""


@dataclass(frozen=True)
class Generated:
    board: Board
    files: dict[str, str]  # file name -> content


def _c_string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _uart_macros(prefix: str, uart: Uart, board: Board) -> list[str]:
    irqs = uart.irqs
    rx = irqs.get("rx", irqs.get("irq", irqs.get("irq0", -1)))
    tx = irqs.get("tx", -1)
    baud = int(uart.props.get("current-speed", 115200))  # type: ignore[call-overload]
    clock = int(uart.props.get("clock-frequency", board.cpu_clock_hz))  # type: ignore[call-overload]
    return [
        f"#define {prefix}_BASE 0x{uart.base:08X}u",
        f"#define {prefix}_IRQ_RX {rx}",
        f"#define {prefix}_IRQ_TX {tx}",
        f"#define {prefix}_BAUD {baud}u",
        f"#define {prefix}_CLOCK_HZ {clock}u",
        f"#define {prefix}_COMPAT {_c_string(uart.compatible[0])}",
    ]


def generate(board: Board, version_note: str = "") -> Generated:
    """Compute the generated files for one board (pure: no I/O beyond what load_board did)."""
    if board.cpu not in CPU_FLAGS:
        raise CodegenError(f"{board.path}: CPU {board.cpu!r} is not supported (known: {', '.join(CPU_FLAGS)})")
    prof = profile.select(board.sram.size, board.flash.size, f"dts/{board.path.name}")
    watchdogs = board.with_compatible("arm,cmsdk-watchdog")
    # Hardware WASM apps may touch (only where the profile runs apps): /chosen app I2C buses, the
    # temperature sensor's bus, and the LED controllers.
    app_hw = "wasm-runtime" in prof.enabled
    i2c_buses = list(board.app_i2c_buses) if app_hw else []
    sensor = board.temperature_sensor if app_hw else None
    sensor_bus = board.peripheral(sensor.bus) if sensor is not None else None
    leds = list(board.leds) if app_hw else []
    led_ctrls = [board.peripheral(led.controller) for led in leds]
    used = (board.console, board.link, *watchdogs[:1], *i2c_buses, *([sensor_bus] if sensor_bus else []), *led_ctrls)
    drivers = sorted({DRIVERS[c] for p in used for c in p.compatible if c in DRIVERS})
    uart_drivers = [d for d in drivers if d.startswith("uart_")]
    if len(uart_drivers) != 1:
        raise CodegenError(
            f"{board.path}: console and link UARTs need exactly one known driver, got {uart_drivers or 'none'} "
            f"(known compatibles: {', '.join(c for c in DRIVERS if 'uart' in c or 'usart' in c)})"
        )

    if "wasm-runtime" in prof.enabled and "tls-link" not in prof.enabled:
        raise CodegenError(f"{board.path}: the wasm-runtime capability needs tls-link (apps arrive over the link)")
    if "tls-link" in prof.enabled and board.boot_params is None:
        raise CodegenError(f"{board.path}: the tls-link profile needs /chosen wasmbed,boot-params (entropy seed, CA)")
    bp = board.boot_params
    ram_size = (bp.base - board.sram.base) if bp is not None else board.sram.size

    lacks = ", ".join(_c_string(s) for s in prof.lacking) or '""'
    header = [
        f"/* Generated from {board.path.name} by wasmbed.firmware.codegen. Do not edit: edit the DTS. */",
        "#ifndef WB_BOARD_GEN_H",
        "#define WB_BOARD_GEN_H",
        "",
        f"#define WB_BOARD_NAME {_c_string(board.name)}",
        f"#define WB_BOARD_MODEL {_c_string(board.model)}",
        f"#define WB_CPU_NAME {_c_string(board.cpu)}",
        f"#define WB_CPU_CLOCK_HZ {board.cpu_clock_hz}u",
        f"#define WB_CPU_HAS_FPU {int(board.has_fpu)}",
        f"#define WB_CPU_ARMV8M {int(board.cpu == 'cortex-m33')}",
        f"#define WB_NUM_IRQS {board.num_irqs}",
        "",
        f"#define WB_FLASH_BASE 0x{board.flash.base:08X}u",
        f"#define WB_FLASH_SIZE 0x{board.flash.size:08X}u",
        f"#define WB_RAM_BASE 0x{board.sram.base:08X}u",
        f"#define WB_RAM_SIZE 0x{board.sram.size:08X}u",
        f"#define WB_HAS_BOOT_PARAMS {int(bp is not None)}",
        *([f"#define WB_BOOT_PARAMS_BASE 0x{bp.base:08X}u", f"#define WB_BOOT_PARAMS_SIZE 0x{bp.size:08X}u"]
          if bp is not None else []),
        "",
        *_uart_macros("WB_CONSOLE_UART", board.console, board),
        *_uart_macros("WB_LINK_UART", board.link, board),
        "",
    ]
    if watchdogs:
        wdt = watchdogs[0]
        clock = int(wdt.props.get("clock-frequency", board.cpu_clock_hz))  # type: ignore[call-overload]
        header += [
            "#define WB_HAS_WATCHDOG 1",
            f"#define WB_WATCHDOG_BASE 0x{wdt.base:08X}u",
            f"#define WB_WATCHDOG_CLOCK_HZ {clock}u",
            f"#define WB_WATCHDOG_TIMEOUT_MS {profile.WATCHDOG_TIMEOUT_MS}u",
        ]
    else:
        header.append("#define WB_HAS_WATCHDOG 0")
    header += [
        "",
        "/* Hardware WASM apps may use (docs/abi.md): app I2C bus N = entry N. */",
        f"#define WB_APP_I2C_COUNT {len(i2c_buses)}",
        f"#define WB_APP_I2C_BASES {{ {', '.join(f'0x{b.base:08X}u' for b in i2c_buses) or '0'} }}",
        f"#define WB_HAS_TEMPERATURE {int(sensor is not None)}",
        *([f"#define WB_TEMPERATURE_I2C_BASE 0x{sensor_bus.base:08X}u",  # type: ignore[union-attr]
           f"#define WB_TEMPERATURE_I2C_ADDR 0x{sensor.address:02X}u",
           f"#define WB_TEMPERATURE_COMPAT {_c_string(sensor.compatible)}"] if sensor is not None else []),
        f"#define WB_LED_COUNT {len(leds)}",
        "#define WB_LEDS { " + (", ".join(f"{{0x{c.base:08X}u, {led.bit}u}}" for led, c in zip(leds, led_ctrls,
                                                                                             strict=True))
                                or "{0u, 0u}") + " }",
    ]
    header += [
        "",
        f"#define WB_FAULT_TEST_UNMAPPED_ADDR 0x{UNMAPPED_TEST_ADDR:08X}u",
        "",
        "/* Profile: capabilities this board's RAM/flash can hold (wasmbed.firmware.profile). */",
        f"#define WB_PROFILE_NAME {_c_string(prof.name)}",
        f"#define WB_PROFILE_CAPS {_c_string(', '.join(prof.enabled))}",
        f"#define WB_PROFILE_LACKS {{ {lacks} }}",
    ]
    for cap in profile.CAPABILITIES:
        macro = "WB_CAP_" + cap.name.upper().replace("-", "_")
        header.append(f"#define {macro} {int(cap.name in prof.enabled)}")
    header += ["", "#endif", ""]

    st = board.stack_region
    stack = profile.stack_size(board.sram.size, st.size if st is not None else None)
    memory = [
        f"/* Generated from {board.path.name} by wasmbed.firmware.codegen. Do not edit: edit the DTS. */",
        "MEMORY",
        "{",
        f"    FLASH (rx)  : ORIGIN = 0x{board.flash.base:08X}, LENGTH = 0x{board.flash.size:08X}"
        f"  /* {board.flash.label} */",
        f"    RAM   (rwx) : ORIGIN = 0x{board.sram.base:08X}, LENGTH = 0x{ram_size:08X}"
        f"  /* {board.sram.label}" + (f", less {bp.label} at its top" if bp is not None else "") + " */",
    ]
    if st is not None:
        memory.append(f"    STACK (rw)  : ORIGIN = 0x{st.base:08X}, LENGTH = 0x{st.size:08X}  /* {st.label} */")
    memory += [
        "}",
        f"WB_STACK_SIZE = 0x{stack:X};",
        # The heap runs up to the stack when they share RAM, else to the end of RAM.
        f"WB_STACK_IN_RAM = 0x{0 if st is not None else stack:X};",
        f'REGION_ALIAS("STACKRAM", {"STACK" if st is not None else "RAM"});',
        "",
    ]
    memory_ld = "\n".join(memory)
    board_mk = "\n".join(
        [
            f"# Generated from {board.path.name} by wasmbed.firmware.codegen. Do not edit: edit the DTS.",
            f"WB_BOARD := {board.name}",
            f"WB_CPU_FLAGS := {CPU_FLAGS[board.cpu]}",
            f"WB_DRIVERS := {' '.join(drivers)}",
            *(
                f"WB_CAP_{c.name.upper().replace('-', '_')} := {int(c.name in prof.enabled)}"
                for c in profile.CAPABILITIES
            ),
            "",
        ]
    )
    return Generated(board, {"board_gen.h": "\n".join(header), "memory.ld": memory_ld, "board.mk": board_mk})


def write(gen: Generated, gen_dir: Path) -> list[str]:
    """Write the files that changed; returns their names (empty when everything was up to date)."""
    gen_dir.mkdir(parents=True, exist_ok=True)
    changed = []
    for name, content in gen.files.items():
        path = gen_dir / name
        if not path.exists() or path.read_text() != content:
            path.write_text(content)
            changed.append(name)
    return changed


def generate_for(board_or_path: str | Path, gen_dir: Path) -> list[str]:
    """Load a board (name or .dts path), generate, write; returns the changed file names."""
    return write(generate(load_board(board_or_path)), gen_dir)
