"""Board facts: the device trees in this folder and their loader (see :mod:`wasmbed.dts.board`)."""

from .board import (
    BOARDS_DIR,
    Board,
    DtsError,
    I2cDevice,
    Led,
    MemoryRegion,
    Peripheral,
    Uart,
    board_names,
    load_board,
)

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
