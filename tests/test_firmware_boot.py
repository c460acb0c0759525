"""The firmware boots on every board in QEMU and reports what the device tree says it is."""

from __future__ import annotations

import re
import subprocess
import time

import pytest

from wasmbed.dts import board_names, load_board

pytestmark = pytest.mark.qemu
BOARDS = board_names()


@pytest.mark.parametrize("board", BOARDS)
def test_banner_shows_dts_model_and_ram(board, firmware_builder, boot_console):
    info = load_board(board)
    fw = firmware_builder(board)
    t0 = time.monotonic()
    con = boot_console(board, fw.elf)
    con.expect(r"wasmbed firmware (\S+)\r*\n", timeout=10)
    elapsed = time.monotonic() - t0
    con.expect(r"board   : (\S+) \"([^\"]*)\"\r*\n")
    assert con.match.group(1) == board
    assert con.match.group(2) == info.model
    con.expect(r"ram     : (\d+) bytes \((\d+) KiB\) @ 0x([0-9a-f]{8})")
    assert int(con.match.group(1)) == info.sram.size
    assert int(con.match.group(3), 16) == info.sram.base
    con.expect(r"reset   : (\S+) \(boot")
    assert con.match.group(1) == "power-on"
    con.expect("wasmbed: ready", timeout=10)
    assert elapsed < 10


def test_small_board_reports_what_its_profile_lacks(firmware_builder, boot_console):
    """stm32vldiscovery (8 KiB RAM, 128 KiB flash) boots and says which capabilities it lacks and why."""
    info = load_board("stm32vldiscovery")
    assert info.sram.size == 8 * 1024
    con = boot_console("stm32vldiscovery", firmware_builder("stm32vldiscovery").elf)
    con.expect(r"profile : (\S+) \(([^)]*)\)")
    assert con.match.group(1) == "minimal"
    assert con.match.group(2) == "console"
    con.expect(r"lacks   : tls-link: needs >= (\d+) KiB RAM, dts/stm32vldiscovery.dts declares 8 KiB")
    con.expect(r"lacks   : wasm-runtime: needs >= (\d+) KiB RAM, dts/stm32vldiscovery.dts declares 8 KiB")
    con.expect("wasmbed: ready")


def _symbol_at(elf, addr: int) -> str:
    """Resolve an address to its function with the ELF's own symbol table."""
    out = subprocess.run(["arm-none-eabi-addr2line", "-f", "-e", str(elf), hex(addr)],
                         check=True, capture_output=True, text=True)
    return out.stdout.splitlines()[0]


FAULTS = [
    # (board, variant, fault line regex, function the PC must be in)
    *[(b, "fault-undefined", r"UsageFault UNDEFINSTR", "wb_fault_test_undefined_instruction") for b in BOARDS],
    ("mps2-an385", "fault-divide", r"UsageFault DIVBYZERO", "wb_fault_test_divide_by_zero"),
    ("mps2-an385", "fault-bus", r"BusFault PRECISERR", "wb_fault_test_bus_error"),
]


@pytest.mark.parametrize(("board", "variant", "kind", "function"), FAULTS,
                         ids=[f"{b}-{v}" for b, v, _, _ in FAULTS])
def test_fault_prints_crash_report_and_reboots(board, variant, kind, function, firmware_builder, boot_console):
    fw = firmware_builder(board, variant)
    con = boot_console(board, fw.elf)
    con.expect(r"\*\*\* FAULT: ([^\r\n]*)\r*\n")
    assert re.search(kind, con.match.group(1)), con.match.group(1)
    con.expect(r"\*\*\* PC 0x([0-9a-f]{8}) LR 0x([0-9a-f]{8})")
    pc = int(con.match.group(1), 16)
    assert _symbol_at(fw.elf, pc) == function
    con.expect(r"\*\*\* CFSR 0x([0-9a-f]{8}) HFSR 0x([0-9a-f]{8})")
    assert int(con.match.group(1), 16) != 0
    if variant == "fault-bus":
        con.expect(r"BFAR 0x([0-9a-f]{8})")
        from wasmbed.firmware.codegen import UNMAPPED_TEST_ADDR

        assert int(con.match.group(1), 16) == UNMAPPED_TEST_ADDR
    con.expect(r"\*\*\* rebooting")
    # The next boot knows why it restarted.
    con.expect(r"reset   : (\S+) \(boot (\d+)\)")
    assert con.match.group(1) == "fault"
    assert int(con.match.group(2)) == 2
