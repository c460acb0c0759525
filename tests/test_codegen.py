"""The firmware's board header and linker memory map are generated from the device tree."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from wasmbed.dts import BOARDS_DIR, board_names, load_board
from wasmbed.firmware import codegen, profile


def _copy_dts(tmp_path: Path) -> Path:
    dst = tmp_path / "dts"
    dst.mkdir()
    for f in BOARDS_DIR.iterdir():
        if f.suffix in (".dts", ".dtsi"):
            shutil.copy(f, dst / f.name)
    return dst


@pytest.mark.parametrize("board", board_names())
def test_generated_files_state_the_dts_facts(board):
    info = load_board(board)
    files = codegen.generate(info).files
    h, ld = files["board_gen.h"], files["memory.ld"]
    assert f"#define WB_RAM_BASE 0x{info.sram.base:08X}u" in h
    assert f"#define WB_RAM_SIZE 0x{info.sram.size:08X}u" in h
    assert f"#define WB_CONSOLE_UART_BASE 0x{info.console.base:08X}u" in h
    assert f'#define WB_BOARD_MODEL "{info.model}"' in h
    assert f"ORIGIN = 0x{info.flash.base:08X}, LENGTH = 0x{info.flash.size:08X}" in ld
    ram_len = info.boot_params.base - info.sram.base if info.boot_params else info.sram.size
    assert f"ORIGIN = 0x{info.sram.base:08X}, LENGTH = 0x{ram_len:08X}" in ld


def test_changing_the_dts_changes_header_and_linker_map(tmp_path):
    dts_dir = _copy_dts(tmp_path)
    dts = dts_dir / "mps2-an385.dts"
    gen_dir = tmp_path / "gen"
    assert set(codegen.generate_for(dts, gen_dir)) == {"board_gen.h", "memory.ld", "board.mk"}
    assert codegen.generate_for(dts, gen_dir) == []  # unchanged DTS: nothing rewritten

    before = load_board(dts)
    new_size = before.sram.size // 2
    bp = before.boot_params
    text = (dts_dir / "mps2-an385.dts").read_text()
    # Override the chosen SRAM node's reg (and move the boot-params block to its new top end):
    # the generator must pick both up.
    text += f"\n&{before.sram.label} {{ reg = <0x{before.sram.base:x} 0x{new_size:x}>; }};\n"
    new_bp = before.sram.base + new_size - bp.size
    text += f"\n&{bp.label} {{ reg = <0x{new_bp:x} 0x{bp.size:x}>; }};\n"
    dts.write_text(text)
    changed = codegen.generate_for(dts, gen_dir)
    assert "board_gen.h" in changed and "memory.ld" in changed
    header = (gen_dir / "board_gen.h").read_text()
    assert f"#define WB_RAM_SIZE 0x{new_size:08X}u" in header
    assert f"#define WB_BOOT_PARAMS_BASE 0x{new_bp:08X}u" in header
    assert f"LENGTH = 0x{new_size - bp.size:08X}" in (gen_dir / "memory.ld").read_text()


def test_profile_is_selected_from_sizes_not_board_names():
    full = profile.select(4 << 20, 4 << 20, "x.dts")
    assert full.name == "full" and not full.lacking
    tiny = profile.select(8 * 1024, 128 * 1024, "dts/tiny.dts")
    assert tiny.enabled == ("console",)
    assert any(re.match(r"tls-link: needs >= \d+ KiB RAM, dts/tiny.dts declares 8 KiB", s) for s in tiny.lacking)


def test_mixed_uart_families_are_a_clear_error(tmp_path):
    """Console and link must share one UART driver: the build links exactly one."""
    dts_dir = _copy_dts(tmp_path)
    dts = dts_dir / "mps2-an385.dts"
    label = load_board(dts).link.label
    dts.write_text(dts.read_text() + f'\n&{label} {{ compatible = "st,stm32-usart"; }};\n')
    with pytest.raises(codegen.CodegenError, match="exactly one known driver"):
        codegen.generate(load_board(dts))
