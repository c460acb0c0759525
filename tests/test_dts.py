"""Board device trees: they parse, compile warning-free, and say what QEMU really emulates."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest

from wasmbed.dts import BOARDS_DIR, Board, DtsError, Uart, board_names, load_board

BOARDS = ["mps2-an385", "mps2-an386", "mps2-an500", "mps2-an505", "olimex-stm32-h405", "stm32vldiscovery"]

# What each board must say (facts measured in QEMU 10.0.2; see the comments in the .dts files).
EXPECTED = {
    "mps2-an385": dict(cpu="cortex-m3", clock=25_000_000, fpu=False, irqs=32, sram=(0x20000000, 4 << 20)),
    "mps2-an386": dict(cpu="cortex-m4f", clock=25_000_000, fpu=True, irqs=32, sram=(0x20000000, 4 << 20)),
    "mps2-an500": dict(cpu="cortex-m7", clock=25_000_000, fpu=True, irqs=32, sram=(0x20000000, 4 << 20)),
    "mps2-an505": dict(cpu="cortex-m33", clock=20_000_000, fpu=True, irqs=124, sram=(0x38000000, 2 << 20)),
    "olimex-stm32-h405": dict(cpu="cortex-m4f", clock=168_000_000, fpu=True, irqs=96,
                              sram=(0x20000000, 128 << 10)),
    "stm32vldiscovery": dict(cpu="cortex-m3", clock=24_000_000, fpu=False, irqs=61, sram=(0x20000000, 8192)),
}


@pytest.fixture(scope="module", params=BOARDS)
def board(request) -> Board:
    return load_board(request.param)


def test_board_names_lists_every_dts():
    assert board_names() == sorted(BOARDS)


def test_board_basics(board: Board):
    exp = EXPECTED[board.name]
    assert board.model.strip()
    assert board.compatible[0].split(",", 1)[1] == board.name.removeprefix("olimex-")
    assert board.qemu_machine == board.name
    assert (board.cpu, board.cpu_clock_hz, board.has_fpu, board.num_irqs) == (
        exp["cpu"], exp["clock"], exp["fpu"], exp["irqs"])
    assert (board.sram.base, board.sram.size) == exp["sram"]
    assert board.console != board.link
    assert board.console.qemu_serial_index == 0 and board.link.qemu_serial_index == 1
    assert board.flash in board.memories and board.sram in board.memories
    # Every UART is reachable from QEMU, in -serial order, and has an interrupt.
    assert [u.qemu_serial_index for u in board.uarts] == list(range(len(board.uarts)))
    assert all(isinstance(u, Uart) and u.irqs for u in board.uarts)
    assert all(0 <= n < board.num_irqs for p in board.peripherals for n in p.irqs.values())


def test_board_is_frozen(board: Board):
    with pytest.raises(FrozenInstanceError):
        board.model = "x"  # type: ignore[misc]
    assert len({board, board.console, *board.peripherals}) == 2 + len(board.peripherals) - 1


def test_mps2_boards_have_uart_irqs_leds_and_sensor():
    an385 = load_board("mps2-an385")
    assert (an385.console.base, an385.console.irqs["rx"], an385.console.irqs["tx"]) == (0x40004000, 0, 1)
    assert an385.link.base == 0x40005000
    for name in ("mps2-an385", "mps2-an386", "mps2-an500", "mps2-an505"):
        b = load_board(name)
        assert [led.bit for led in b.leds] == [0, 1]
        assert {led.controller for led in b.leds} == {"fpgaio_led"}
        assert [(d.compatible, d.address) for d in b.i2c_devices] == [("ti,tmp105", 0x48)]
        assert b.i2c_devices[0].bus == b.qemu_default_i2c_bus
        assert b.qemu_i2c_bus_name(b.i2c_devices[0].bus) is None  # QEMU names every SBCon bus "i2c"
        assert b.with_compatible("arm,cmsdk-watchdog")
        assert b.with_compatible("smsc,lan9220")
    an505 = load_board("mps2-an505")
    assert an505.flash.base == 0x10000000 and an505.console.base == 0x50200000
    assert an505.systick_refclk_hz == 0


def test_stm32_boards():
    vl = load_board("stm32vldiscovery")
    assert (vl.flash.base, vl.flash.size) == (0x08000000, 128 << 10)
    assert (vl.console.base, vl.console.irqs) == (0x40013800, {"irq": 37})
    assert (vl.link.base, vl.link.irqs) == (0x40004400, {"irq": 38})
    h405 = load_board("olimex-stm32-h405")
    assert (h405.flash.base, h405.flash.size) == (0x08000000, 1 << 20)
    assert any((m.base, m.size) == (0x10000000, 64 << 10) for m in h405.memories)  # CCM
    assert len(h405.uarts) == 7
    for b in (vl, h405):
        assert not b.leds and not b.i2c_devices  # QEMU has no GPIO or I2C model for them


def test_load_by_path(tmp_path: Path):
    copy = _copy_boards(tmp_path)
    b = load_board(copy / "mps2-an385.dts")
    assert b.path == (copy / "mps2-an385.dts").resolve()
    assert b.name == "mps2-an385"


def test_unknown_board_is_a_clear_error():
    with pytest.raises(DtsError, match="unknown board 'nope'"):
        load_board("nope")


@pytest.mark.parametrize("name", BOARDS)
def test_dtc_compiles_without_warnings(name: str, tmp_path: Path):
    dtc = shutil.which("dtc")
    if dtc is None:
        pytest.skip("dtc is not installed")
    out, src = tmp_path / "out.dtb", BOARDS_DIR / f"{name}.dts"
    r = subprocess.run([dtc, "-I", "dts", "-O", "dtb", "-o", str(out), str(src)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""


# ---- malformed trees ------------------------------------------------------------------------


def _copy_boards(tmp_path: Path) -> Path:
    dest = tmp_path / "boards"
    dest.mkdir()
    for f in list(BOARDS_DIR.glob("*.dts")) + list(BOARDS_DIR.glob("*.dtsi")):
        shutil.copy(f, dest / f.name)
    return dest


def _edit(tmp_path: Path, name: str, old: str, new: str, *, file: str | None = None) -> Path:
    d = _copy_boards(tmp_path)
    target = d / (file or f"{name}.dts")
    text = target.read_text()
    assert old in text, f"test setup: {old!r} not in {target.name}"
    target.write_text(text.replace(old, new, 1))
    return d / f"{name}.dts"


def test_missing_console_names_file_and_property(tmp_path: Path):
    path = _edit(tmp_path, "stm32vldiscovery", "wasmbed,console = &usart1;", "",
                 file="stm32-common.dtsi")
    msg = r"stm32vldiscovery\.dts: /chosen: property 'wasmbed,console' is missing"
    with pytest.raises(DtsError, match=msg):
        load_board(path)


def test_overlapping_memories_rejected(tmp_path: Path):
    path = _edit(tmp_path, "olimex-stm32-h405", "reg = <0x10000000 0x10000>;",
                 "reg = <0x10000000 0x10000100>;")
    with pytest.raises(DtsError, match="overlap"):
        load_board(path)


def test_uart_without_reg_rejected(tmp_path: Path):
    path = _edit(tmp_path, "mps2-an385", "reg = <0x40005000 0x1000>;", "", file="mps2-cmsdk.dtsi")
    msg = r"mps2-an385\.dts: /soc/uart@40005000: wasmbed,link UART has no 'reg'"
    with pytest.raises(DtsError, match=msg):
        load_board(path)


def test_console_equal_to_link_rejected(tmp_path: Path):
    path = _edit(tmp_path, "mps2-an500", "wasmbed,link = &uart1;", "wasmbed,link = &uart0;",
                 file="mps2-cmsdk.dtsi")
    with pytest.raises(DtsError, match="must be different"):
        load_board(path)


def test_missing_machine_rejected(tmp_path: Path):
    path = _edit(tmp_path, "mps2-an505", 'machine = "mps2-an505";', "")
    with pytest.raises(DtsError, match=r"/emulation: property 'machine' is missing"):
        load_board(path)


def test_syntax_error_names_file(tmp_path: Path):
    path = _edit(tmp_path, "mps2-an385", "model =", "model")
    with pytest.raises(DtsError, match=r"mps2-an385\.dts"):
        load_board(path)


# ---- QEMU cross-check -----------------------------------------------------------------------

QEMU = shutil.which("qemu-system-arm")

# QEMU's memory-region name for each compatible (hw/char/cmsdk-apb-uart.c, hw/i2c/arm_sbcon_i2c.c, ...)
QEMU_REGION = {
    "arm,cmsdk-uart": "uart",
    "st,stm32-usart": "stm32f2xx-usart",
    "arm,versatile-i2c": "arm_sbcon_i2c",
    "arm,cmsdk-watchdog": "cmsdk-apb-watchdog",
    "arm,cmsdk-timer": "cmsdk-apb-timer",
    "arm,cmsdk-dtimer": "cmsdk-apb-dualtimer",
    "arm,mps2-fpgaio-gpio": "mps2-fpgaio",
    "smsc,lan9220": "lan9118-mmio",
    "arm,pl022": "pl022",
    "st,stm32-spi": "stm32f2xx-spi",
    "st,stm32-timers": "stm32f2xx_timer",
    "st,stm32-adc": "stm32f2xx-adc",
    "st,stm32-syscfg": "stm32f4xx-syscfg",
    "st,stm32-exti": "stm32f4xx-exti",
    "st,stm32-rcc": "stm32.rcc",
    "arm,v7m-nvic": "nvic_sysregs",
    "arm,v8m-nvic": "nvic_sysregs",
    "arm,armv7m-systick": "v7m_systick",
    "arm,armv8m-systick": "v7m_systick",
}
# CMSDK APB peripherals carry a PID0 identification register at offset 0xfe0.
CMSDK_PID0 = {"arm,cmsdk-uart": 0x21, "arm,cmsdk-timer": 0x22, "arm,cmsdk-dtimer": 0x23,
              "arm,cmsdk-watchdog": 0x24}

_FLAT_LINE = re.compile(r"^\s+([0-9a-f]+)-([0-9a-f]+) \(prio (-?\d+), ([^)]+)\): (.+)$")


def _qmp(machine: str, commands: list[dict], *extra: str) -> list[object]:
    """Run QEMU paused with QMP on stdio, execute ``commands`` in order, return their results."""
    script = [{"execute": "qmp_capabilities"}, *commands, {"execute": "quit"}]
    r = subprocess.run(
        [QEMU, "-M", machine, "-S", "-display", "none", "-serial", "null", "-monitor", "none",
         "-qmp", "stdio", *extra],
        input="\n".join(json.dumps(c) for c in script) + "\n", capture_output=True, text=True, timeout=30,
    )
    replies = [m for m in map(json.loads, r.stdout.splitlines()) if "return" in m or "error" in m]
    assert len(replies) >= len(script) - 1, r.stdout + r.stderr
    results = []
    for cmd, rep in zip(commands, replies[1:], strict=False):
        assert "error" not in rep, f"{cmd}: {rep}"
        results.append(rep["return"])
    return results


def _hmp(cmd: str) -> dict:
    return {"execute": "human-monitor-command", "arguments": {"command-line": cmd}}


def _cpu_flatview(mtree: str) -> list[tuple[int, int, str, str]]:
    """(start, end, kind, name) of the flat view the CPU sees (AS "cpu-memory-0")."""
    views = mtree.split("FlatView #")
    view = next(v for v in views if 'AS "cpu-memory-0"' in v)
    out = []
    for line in view.splitlines():
        m = _FLAT_LINE.match(line)
        if m:
            name = m.group(5).split(" @")[0]
            out.append((int(m.group(1), 16), int(m.group(2), 16), m.group(4), name))
    return out


def _region_at(flat, addr: int):
    return next((r for r in flat if r[0] <= addr <= r[1]), None)


@pytest.mark.qemu
@pytest.mark.parametrize("name", BOARDS)
def test_dts_matches_qemu(name: str):
    if QEMU is None:
        pytest.skip("qemu-system-arm is not installed")
    b = load_board(name)
    cmsdk = [p for p in b.peripherals if set(p.compatible) & CMSDK_PID0.keys()]
    commands = [_hmp("info mtree -f"), *(_hmp(f"x /1wx {p.base + 0xfe0:#x}") for p in cmsdk)]
    extra: list[str] = []
    if b.i2c_devices:
        dev = b.i2c_devices[0]
        extra = ["-device", f"tmp105,id=temp0,address={dev.address:#x}"]
        temp0 = "/machine/peripheral/temp0"
        commands += [
            _hmp("info qtree"),
            {"execute": "qom-get", "arguments": {"path": temp0, "property": "parent_bus"}},
            {"execute": "qom-set", "arguments": {"path": temp0, "property": "temperature", "value": 31250}},
            {"execute": "qom-get", "arguments": {"path": temp0, "property": "temperature"}},
        ]
    results = _qmp(b.qemu_machine, commands, *extra)
    flat = _cpu_flatview(results[0])

    # Memories: every byte is backed by RAM/ROM (or, on the TrustZone board, an MPC in front of RAM).
    for mem in b.memories:
        addr = mem.base
        while addr < mem.end:
            region = _region_at(flat, addr)
            assert region is not None, f"{name}: {mem.label} @{addr:#x} is not mapped by QEMU"
            assert region[2] in ("ram", "rom") or region[3] == "tz-mpc-upstream", (
                f"{name}: {mem.label} @{addr:#x} maps to {region}")
            addr = region[1] + 1

    # Devices: the region at the base address is QEMU's model of that device (not "unimplemented").
    # Behind the AN505's PPCs the flat view only says "tz-ppc-port[n]"; the CMSDK ID check below
    # then identifies the device.
    for p in b.peripherals:
        expected = next((QEMU_REGION[c] for c in p.compatible if c in QEMU_REGION), None)
        assert expected is not None, f"{name}: no QEMU region name known for {p.path} {p.compatible}"
        region = _region_at(flat, p.base)
        assert region is not None, f"{name}: {p.label} @{p.base:#x} is not mapped by QEMU"
        assert region[3] == expected or region[3].startswith("tz-ppc-port["), (
            f"{name}: {p.label} @{p.base:#x} is QEMU region {region[3]!r}, expected {expected!r}")
        assert region[1] >= p.base + p.size - 1 or region[3].startswith("tz-ppc-port["), (
            f"{name}: {p.label} reg size {p.size:#x} exceeds QEMU region {region}")

    for p, text in zip(cmsdk, results[1 : 1 + len(cmsdk)], strict=True):
        pid0 = int(str(text).split(":")[1].split()[0], 16)
        want = next(CMSDK_PID0[c] for c in p.compatible if c in CMSDK_PID0)
        assert pid0 == want, f"{name}: {p.label} @{p.base:#x} PID0 is {pid0:#x}, expected {want:#x}"

    if b.i2c_devices:
        qtree, parent_bus, _, temperature = results[1 + len(cmsdk) :]
        assert temperature == 31250
        bus = b.peripheral(b.i2c_devices[0].bus)
        # On mps2 the qtree shows the bus device's MMIO address; behind the AN505 PPC it does not,
        # but there QEMU names the bus device after the PPC port ("/machine/i2c3/i2c").
        m = re.search(r"dev: versatile_i2c, id \"\"\n\s+mmio ([0-9a-f]+)/[0-9a-f]+\n\s+bus: i2c\n"
                      r"\s+type i2c-bus\n\s+dev: tmp105, id \"temp0\"", str(qtree).replace("\r\n", "\n"))
        assert m, f"{name}: tmp105 not found on a versatile_i2c bus"
        if int(m.group(1), 16) != 0xFFFFFFFFFFFFFFFF:
            assert int(m.group(1), 16) == bus.base
        else:
            assert parent_bus == f"/machine/{bus.label}/i2c"
