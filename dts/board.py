"""Board facts read from the device trees in this folder.

The ``.dts`` files next to this module are the single source of truth for what each QEMU machine
emulates: the firmware build generates its board header and linker MEMORY from them, the QEMU
supervisor takes the machine name, the ``-serial`` order and the I2C sensor from them, and the
gateway reads board facts (RAM, UARTs) from them. This module turns one file into a frozen
:class:`Board` and fails loudly (:class:`DtsError`, naming the file and the node or property) when
a fact that those consumers rely on is missing or malformed, instead of letting them guess.

It uses Zephyr's ``dtlib`` (PyPI ``devicetree``), which understands ``/include/`` but not the C
preprocessor.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

from devicetree import dtlib

__all__ = [
    "BOARDS_DIR",
    "Board",
    "DtsError",
    "I2cDevice",
    "Led",
    "MemoryRegion",
    "Peripheral",
    "Uart",
    "board_names",
    "load_board",
]

#: Folder holding the board ``.dts`` files (this package's folder; they ship as package data).
BOARDS_DIR: Path = Path(__file__).resolve().parent

#: CPU names (compatible without the vendor prefix) whose QEMU model has a hardware FPU.
#: QEMU's cortex-m4 has FPv4-SP, cortex-m7 FPv5-DP, and the SSE-200 Cortex-M33 of mps2-an505 is
#: built with CPU0_FPU=true. A plain "cortex-m3" never has one.
_FPU_CPUS = frozenset({"cortex-m4f", "cortex-m7", "cortex-m33", "cortex-m33f", "cortex-m55"})

_UART_COMPATIBLES = ("arm,cmsdk-uart", "st,stm32-usart", "st,stm32-uart")


class DtsError(Exception):
    """A board device tree is missing a required fact or states one in the wrong shape.

    The message always names the file, and the node path / property when there is one, so that a
    broken board file is fixed at the source rather than worked around by a consumer.
    """


@dataclass(frozen=True)
class MemoryRegion:
    """A RAM/ROM range the firmware may link into (``reg`` of a memory or flash node)."""

    label: str
    base: int
    size: int

    @property
    def end(self) -> int:
        """First address past the region."""
        return self.base + self.size


@dataclass(frozen=True)
class Peripheral:
    """One memory-mapped device node under the ``soc`` bus.

    ``irqs`` maps interrupt names to NVIC line numbers: the ``interrupt-names`` entries when the
    node has them, otherwise ``"irq"`` for a single interrupt or ``"irq0"``, ``"irq1"``... ``props``
    holds the node's remaining properties, decoded (int, list of ints, str, list of str, True).
    """

    label: str
    path: str
    compatible: tuple[str, ...]
    base: int
    size: int
    irqs: dict[str, int] = field(default_factory=dict)
    props: dict[str, object] = field(default_factory=dict)

    def __hash__(self) -> int:  # the dict fields are not hashable; a node path is unique per board
        return hash((type(self).__name__, self.path, self.base))


@dataclass(frozen=True)
class Uart(Peripheral):
    """A UART; ``qemu_serial_index`` is its position in ``/emulation serial-ports`` (-1 if absent).

    The n-th ``-serial`` option given to QEMU drives the UART with index n.
    """

    qemu_serial_index: int = -1

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.path, self.base))


@dataclass(frozen=True)
class I2cDevice:
    """A device on an I2C bus (e.g. the TMP105 the supervisor attaches with ``-device``)."""

    label: str
    compatible: str
    address: int
    bus: str  # label of the parent bus node


@dataclass(frozen=True)
class Led:
    """A user LED: bit ``bit`` of the LED register node labelled ``controller``."""

    name: str
    controller: str
    bit: int


@dataclass(frozen=True)
class Board:
    """Everything the firmware build, the QEMU supervisor and the gateway need about one board."""

    name: str
    path: Path
    model: str
    compatible: tuple[str, ...]
    qemu_machine: str
    cpu: str
    cpu_clock_hz: int
    has_fpu: bool
    num_irqs: int
    flash: MemoryRegion
    sram: MemoryRegion
    memories: tuple[MemoryRegion, ...]
    console: Uart
    link: Uart
    uarts: tuple[Uart, ...]
    peripherals: tuple[Peripheral, ...]
    i2c_devices: tuple[I2cDevice, ...]
    leds: tuple[Led, ...]
    #: SysTick reference clock (CLKSOURCE=0) in Hz; 0 when the machine wires none (mps2-an505).
    systick_refclk_hz: int = 0
    #: Label of the I2C bus QEMU picks for ``-device X`` given without ``bus=``, if stated.
    qemu_default_i2c_bus: str | None = None
    #: QEMU bus names by bus label, from ``/emulation i2c-buses`` + ``i2c-bus-names`` if present.
    qemu_i2c_bus_names: dict[str, str] = field(default_factory=dict)
    #: ``/chosen wasmbed,boot-params``: RAM the supervisor fills before boot (entropy seed, CA,
    #: enrollment token) via QEMU's loader; carved off the top of ``sram``. None on boards
    #: whose profile has no TLS link.
    boot_params: MemoryRegion | None = None
    #: ``/chosen wasmbed,stack``: a memory region of its own for the main stack (else top of sram).
    stack_region: MemoryRegion | None = None
    #: ``/chosen wasmbed,app-i2c-buses``: the I2C buses WASM apps may use; app bus N is entry N.
    app_i2c_buses: tuple[Peripheral, ...] = ()
    #: ``/chosen wasmbed,temperature``: the sensor behind the apps' temperature host call.
    temperature_sensor: I2cDevice | None = None

    def __hash__(self) -> int:  # qemu_i2c_bus_names is a dict; the file identifies the board
        return hash((self.name, self.path))

    def with_compatible(self, compat: str) -> tuple[Peripheral, ...]:
        """Peripherals whose ``compatible`` list contains ``compat``, in address order."""
        return tuple(p for p in self.peripherals if compat in p.compatible)

    def peripheral(self, label: str) -> Peripheral:
        """The peripheral with the given DTS label (KeyError if none)."""
        for p in self.peripherals:
            if p.label == label:
                return p
        raise KeyError(label)

    def qemu_i2c_bus_name(self, bus_label: str) -> str | None:
        """QEMU's ``bus=`` name for the I2C bus with this label, or None when QEMU has no unique
        name for it (then attach without ``bus=``; see :attr:`qemu_default_i2c_bus`)."""
        return self.qemu_i2c_bus_names.get(bus_label)


# --------------------------------------------------------------------------------------------
# Loading


def board_names() -> list[str]:
    """Sorted stems of the ``.dts`` files shipped in :data:`BOARDS_DIR`."""
    return sorted(p.stem for p in BOARDS_DIR.glob("*.dts"))


def load_board(name_or_path: str | Path) -> Board:
    """Load a board by stem (``"mps2-an385"``) or from a path to any ``.dts`` file."""
    path = _resolve(name_or_path)
    try:
        dt = dtlib.DT(str(path), include_path=[str(path.parent), str(BOARDS_DIR)])
    except (dtlib.DTError, OSError) as e:
        raise DtsError(f"{path.name}: cannot parse device tree: {e}") from e
    return _Loader(path, dt).board()


def _resolve(name_or_path: str | Path) -> Path:
    p = Path(name_or_path)
    if p.suffix == ".dts" or p.parent != Path("."):
        if not p.is_file():
            raise DtsError(f"{p}: no such device tree file")
        return p.resolve()
    candidate = BOARDS_DIR / f"{p.name}.dts"
    if not candidate.is_file():
        raise DtsError(f"unknown board {str(name_or_path)!r}; known boards: {', '.join(board_names())}")
    return candidate


def _cells(prop: dtlib.Property) -> list[int]:
    value = prop.value
    if len(value) % 4:
        raise ValueError("not a whole number of 32-bit cells")
    return [int.from_bytes(value[i : i + 4], "big") for i in range(0, len(value), 4)]


def _combine(cells: list[int]) -> int:
    n = 0
    for c in cells:
        n = (n << 32) | c
    return n


class _Loader:
    """Turns one parsed tree into a Board; every error names ``self.fname``."""

    def __init__(self, path: Path, dt: dtlib.DT):
        self.path = path
        self.fname = path.name
        self.dt = dt

    # ---- small helpers -------------------------------------------------------------------
    def err(self, where: str, msg: str) -> DtsError:
        return DtsError(f"{self.fname}: {where}: {msg}")

    def node(self, path: str) -> dtlib.Node:
        try:
            return self.dt.get_node(path)
        except dtlib.DTError:
            raise self.err(path, "node is missing") from None

    def prop(self, node: dtlib.Node, name: str) -> dtlib.Property:
        prop = node.props.get(name)
        if prop is None:
            raise self.err(node.path, f"property '{name}' is missing")
        return prop

    def string(self, node: dtlib.Node, name: str) -> str:
        try:
            return self.prop(node, name).to_string()
        except dtlib.DTError:
            raise self.err(node.path, f"property '{name}' must be a string") from None

    def strings(self, node: dtlib.Node, name: str) -> tuple[str, ...]:
        try:
            return tuple(self.prop(node, name).to_strings())
        except dtlib.DTError:
            raise self.err(node.path, f"property '{name}' must be a string list") from None

    def num(self, node: dtlib.Node, name: str) -> int:
        try:
            return self.prop(node, name).to_num()
        except dtlib.DTError:
            raise self.err(node.path, f"property '{name}' must be one 32-bit cell") from None

    def compat(self, node: dtlib.Node) -> tuple[str, ...]:
        return self.strings(node, "compatible") if "compatible" in node.props else ()

    def label(self, node: dtlib.Node) -> str:
        if node.labels:
            return node.labels[0]
        return node.name.replace("@", "_").replace("-", "_").replace(",", "_")

    def cells_of(self, node: dtlib.Node, name: str, default: int) -> int:
        prop = node.props.get(name)
        return default if prop is None else self.num(node, name)

    def reg(self, node: dtlib.Node) -> tuple[int, int]:
        """(base, size) of the first ``reg`` entry, using the parent's cell counts."""
        parent = node.parent
        ac = self.cells_of(parent, "#address-cells", 2) if parent else 2
        sc = self.cells_of(parent, "#size-cells", 1) if parent else 1
        prop = self.prop(node, "reg")
        try:
            cells = _cells(prop)
        except ValueError:
            raise self.err(node.path, "property 'reg' is malformed") from None
        if ac < 1 or len(cells) < ac + sc or len(cells) % (ac + sc):
            raise self.err(
                node.path, f"property 'reg' must be <address size> pairs of {ac}+{sc} cells, got {cells}"
            )
        return _combine(cells[:ac]), _combine(cells[ac : ac + sc])

    def interrupt_parent(self, node: dtlib.Node) -> dtlib.Node | None:
        n: dtlib.Node | None = node
        while n is not None:
            prop = n.props.get("interrupt-parent")
            if prop is not None:
                try:
                    return prop.to_node()
                except dtlib.DTError:
                    raise self.err(n.path, "property 'interrupt-parent' must be a phandle") from None
            n = n.parent
        return None

    def irqs(self, node: dtlib.Node) -> dict[str, int]:
        prop = node.props.get("interrupts")
        if prop is None:
            return {}
        parent = self.interrupt_parent(node)
        if parent is None:
            raise self.err(node.path, "has 'interrupts' but no interrupt-parent")
        ncells = self.num(parent, "#interrupt-cells")
        try:
            cells = _cells(prop)
        except ValueError:
            raise self.err(node.path, "property 'interrupts' is malformed") from None
        if ncells < 1 or not cells or len(cells) % ncells:
            raise self.err(node.path, f"'interrupts' must be groups of {ncells} cells, got {cells}")
        numbers = cells[::ncells]
        if "interrupt-names" in node.props:
            names = self.strings(node, "interrupt-names")
            if len(names) != len(numbers):
                raise self.err(
                    node.path, f"{len(names)} interrupt-names for {len(numbers)} interrupts"
                )
        elif len(numbers) == 1:
            names = ("irq",)
        else:
            names = tuple(f"irq{i}" for i in range(len(numbers)))
        return dict(zip(names, numbers, strict=True))

    @staticmethod
    def decode(prop: dtlib.Property) -> object:
        t = prop.type
        if t == dtlib.Type.EMPTY:
            return True
        if t == dtlib.Type.NUM:
            return prop.to_num()
        if t == dtlib.Type.NUMS:
            return prop.to_nums()
        if t == dtlib.Type.STRING:
            return prop.to_string()
        if t == dtlib.Type.STRINGS:
            return prop.to_strings()
        if t == dtlib.Type.PATH:
            return prop.to_path().path
        if t == dtlib.Type.PHANDLE:
            return prop.to_node().path
        if t == dtlib.Type.PHANDLES:
            return [n.path for n in prop.to_nodes()]
        return bytes(prop.value)

    def chosen(self, chosen: dtlib.Node, name: str) -> dtlib.Node:
        prop = chosen.props.get(name)
        if prop is None:
            raise self.err("/chosen", f"property '{name}' is missing")
        try:
            if prop.type == dtlib.Type.PHANDLE:
                return prop.to_node()
            return prop.to_path()
        except dtlib.DTError:
            raise self.err("/chosen", f"property '{name}' must reference a node (&label)") from None

    def memory(self, node: dtlib.Node) -> MemoryRegion:
        base, size = self.reg(node)
        if size <= 0:
            raise self.err(node.path, "memory region has size 0")
        return MemoryRegion(self.label(node), base, size)

    # ---- the board -----------------------------------------------------------------------
    def board(self) -> Board:
        root = self.dt.root
        model = self.string(root, "model").strip()
        if not model:
            raise self.err("/", "property 'model' is empty")
        compatible = self.strings(root, "compatible")

        emulation = self.node("/emulation")
        if "wasmbed,qemu-machine" not in self.strings(emulation, "compatible"):
            raise self.err("/emulation", "compatible must include 'wasmbed,qemu-machine'")
        qemu_machine = self.string(emulation, "machine")

        cpu_node = self.node("/cpus/cpu@0")
        cpu_compat = self.strings(cpu_node, "compatible")[0]
        cpu = cpu_compat.split(",", 1)[-1]
        if not cpu.startswith("cortex-m"):
            raise self.err(cpu_node.path, f"unsupported CPU compatible {cpu_compat!r}")
        cpu_clock_hz = self.num(cpu_node, "clock-frequency")

        soc = self.node("/soc")
        nvic = next((n for n in soc.nodes.values()
                     if any(c.endswith("-nvic") for c in self.compat(n))), None)
        if nvic is None:
            raise self.err("/soc", "no NVIC node (compatible arm,v7m-nvic / arm,v8m-nvic)")
        num_irqs = self.num(nvic, "wasmbed,num-irqs")
        systick = next((n for n in soc.nodes.values()
                        if any(c.endswith("-systick") for c in self.compat(n))), None)
        refclk = 0
        if systick is not None and "wasmbed,refclk-frequency" in systick.props:
            refclk = self.num(systick, "wasmbed,refclk-frequency")

        # Memories: every root-level node with device_type "memory" or a memory/flash compatible.
        memory_compats = {"mmio-sram", "soc-nv-flash"}
        memory_nodes = [
            n for n in root.nodes.values()
            if "reg" in n.props and (
                set(self.compat(n)) & memory_compats
                or ("device_type" in n.props and self.string(n, "device_type") == "memory"))
        ]
        memories = tuple(sorted((self.memory(n) for n in memory_nodes), key=lambda m: m.base))
        for a, b in itertools.pairwise(memories):
            if b.base < a.end:
                raise self.err("/", f"memory regions {a.label} and {b.label} overlap")

        chosen = self.node("/chosen")
        flash_node = self.chosen(chosen, "wasmbed,flash")
        sram_node = self.chosen(chosen, "wasmbed,sram")
        console_node = self.chosen(chosen, "wasmbed,console")
        link_node = self.chosen(chosen, "wasmbed,link")
        if flash_node not in memory_nodes:
            raise self.err(flash_node.path, "wasmbed,flash must point at a memory node (sram/flash)")
        if sram_node not in memory_nodes:
            raise self.err(sram_node.path, "wasmbed,sram must point at a memory node (mmio-sram)")
        if console_node is link_node:
            raise self.err("/chosen", "wasmbed,console and wasmbed,link must be different UARTs")
        boot_params = None
        if "wasmbed,boot-params" in chosen.props:
            bp_node = self.chosen(chosen, "wasmbed,boot-params")
            boot_params = self.memory(bp_node)
            sram = self.memory(sram_node)
            if boot_params.end != sram.end or boot_params.base <= sram.base:
                raise self.err(bp_node.path, f"wasmbed,boot-params must be the top end of {sram.label} "
                               f"(0x{sram.base:x}..0x{sram.end:x})")

        serial_nodes: list[dtlib.Node] = []
        if "serial-ports" in emulation.props:
            try:
                serial_nodes = self.prop(emulation, "serial-ports").to_nodes()
            except dtlib.DTError:
                raise self.err("/emulation", "'serial-ports' must be a list of phandles") from None

        # Peripherals: every node with reg under /soc (and below, e.g. none nested today).
        peripherals: list[Peripheral] = []
        uarts: list[Uart] = []
        by_node: dict[str, Peripheral] = {}
        skip_props = {"reg", "interrupts", "interrupt-names", "compatible", "phandle"}
        for node in soc.node_iter():
            if node is soc or "reg" not in node.props or node.parent is not soc:
                continue
            base, size = self.reg(node)
            compat = self.compat(node)
            props = {k: self.decode(v) for k, v in node.props.items() if k not in skip_props}
            common = dict(label=self.label(node), path=node.path, compatible=compat, base=base,
                          size=size, irqs=self.irqs(node), props=props)
            if set(compat) & set(_UART_COMPATIBLES):
                idx = serial_nodes.index(node) if node in serial_nodes else -1
                p: Peripheral = Uart(**common, qemu_serial_index=idx)
                uarts.append(p)
            else:
                p = Peripheral(**common)
            peripherals.append(p)
            by_node[node.path] = p
        peripherals.sort(key=lambda p: (p.base, p.path))
        uarts.sort(key=lambda u: (u.qemu_serial_index < 0, u.qemu_serial_index, u.base))

        def as_uart(node: dtlib.Node, what: str) -> Uart:
            if "reg" not in node.props:
                raise self.err(node.path, f"{what} UART has no 'reg'")
            u = by_node.get(node.path)
            if not isinstance(u, Uart):
                raise self.err(node.path, f"{what} must point at a UART under /soc")
            return u

        console = as_uart(console_node, "wasmbed,console")
        link = as_uart(link_node, "wasmbed,link")

        for n in serial_nodes:
            if not isinstance(by_node.get(n.path), Uart):
                raise self.err("/emulation", f"serial-ports entry {n.path} is not a UART with reg under /soc")

        i2c_devices = []
        for node in soc.node_iter():
            parent = node.parent
            if parent is None or parent.parent is not soc or "reg" not in node.props:
                continue
            if not parent.name.startswith("i2c@"):
                continue
            cells = _cells(self.prop(node, "reg"))
            if len(cells) != 1:
                raise self.err(node.path, "I2C device 'reg' must be one cell (the 7-bit address)")
            i2c_devices.append(I2cDevice(self.label(node), self.strings(node, "compatible")[0],
                                         cells[0], self.label(parent)))

        leds = []
        for leds_node in (n for n in root.nodes.values() if "gpio-leds" in self.compat(n)):
            for led in leds_node.nodes.values():
                cells = _cells(self.prop(led, "gpios"))
                ctrl = self.dt.phandle2node.get(cells[0]) if cells else None
                if ctrl is None or len(cells) < 2:
                    raise self.err(led.path, "'gpios' must be <&controller bit flags>")
                name = self.string(led, "label") if "label" in led.props else led.name
                leds.append(Led(name, self.label(ctrl), cells[1]))

        default_bus = None
        if "default-i2c-bus" in emulation.props:
            default_bus = self.label(self.prop(emulation, "default-i2c-bus").to_node())
        bus_names: dict[str, str] = {}
        if "i2c-buses" in emulation.props:
            buses = [self.label(n) for n in self.prop(emulation, "i2c-buses").to_nodes()]
            names = self.strings(emulation, "i2c-bus-names")
            if len(names) != len(buses):
                raise self.err("/emulation", "i2c-buses and i2c-bus-names differ in length")
            bus_names = dict(zip(buses, names, strict=True))

        stack_region = None
        if "wasmbed,stack" in chosen.props:
            st_node = self.chosen(chosen, "wasmbed,stack")
            if st_node not in memory_nodes or st_node is sram_node:
                raise self.err(st_node.path, "wasmbed,stack must point at a memory node other than wasmbed,sram")
            stack_region = self.memory(st_node)
        app_buses: list[Peripheral] = []
        if "wasmbed,app-i2c-buses" in chosen.props:
            try:
                bus_nodes = self.prop(chosen, "wasmbed,app-i2c-buses").to_nodes()
            except dtlib.DTError:
                raise self.err("/chosen", "'wasmbed,app-i2c-buses' must be a list of phandles") from None
            for n in bus_nodes:
                bus = by_node.get(n.path)
                i2c_compats = {"arm,versatile-i2c", "st,stm32-i2c-v1"}
                if bus is None or not i2c_compats & set(bus.compatible):
                    raise self.err("/chosen", f"wasmbed,app-i2c-buses entry {n.path} is not an I2C bus under /soc")
                app_buses.append(bus)
        temperature = None
        if "wasmbed,temperature" in chosen.props:
            t_node = self.chosen(chosen, "wasmbed,temperature")
            temperature = next((d for d in i2c_devices if d.label == self.label(t_node)), None)
            if temperature is None:
                raise self.err(t_node.path, "wasmbed,temperature must point at a sensor node on an I2C bus")

        return Board(
            name=self.path.stem,
            path=self.path,
            model=model,
            compatible=compatible,
            qemu_machine=qemu_machine,
            cpu=cpu,
            cpu_clock_hz=cpu_clock_hz,
            has_fpu=cpu in _FPU_CPUS,
            num_irqs=num_irqs,
            flash=self.memory(flash_node),
            sram=self.memory(sram_node),
            memories=memories,
            console=console,
            link=link,
            uarts=tuple(uarts),
            peripherals=tuple(peripherals),
            i2c_devices=tuple(i2c_devices),
            leds=tuple(leds),
            systick_refclk_hz=refclk,
            qemu_default_i2c_bus=default_bus,
            qemu_i2c_bus_names=bus_names,
            boot_params=boot_params,
            stack_region=stack_region,
            app_i2c_buses=tuple(app_buses),
            temperature_sensor=temperature,
        )
