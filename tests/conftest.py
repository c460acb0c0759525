"""Shared fixtures: per-run private dirs, firmware builds, and QEMU boards on a pexpect console."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

# Keys, databases and logs of a test run never touch the user's real ones. The firmware cache is
# shared with the bootstrap (same user cache) so the images it built are reused, not rebuilt.
_RUN_DIR = Path(os.environ.get("PYTEST_WASMBED_TMP", "/tmp")) / f"wasmbed-test-{os.getpid()}"
os.environ.setdefault("WASMBED_DATA_DIR", str(_RUN_DIR / "data"))
os.environ.setdefault("WASMBED_CONFIG_DIR", str(_RUN_DIR / "config"))
os.environ.setdefault("WASMBED_LOG_DIR", str(_RUN_DIR / "log"))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_RUN_DIR, ignore_errors=True)


def require_tools(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"missing tools: {', '.join(missing)} (scripts/bootstrap installs them)")


@pytest.fixture(scope="session")
def firmware_builder():
    """Build (incrementally) and memoise firmware per (board, variant)."""
    require_tools("arm-none-eabi-gcc", "dtc", "make")
    from wasmbed.firmware.build import build

    cache: dict[tuple[str, str], object] = {}

    def get(board: str, variant: str = "default"):
        key = (board, variant)
        if key not in cache:
            cache[key] = build(board, variant)
        return cache[key]

    return get


@pytest.fixture
def boot_console() -> Iterator:
    """Start a board with its console UART on a pexpect-driven stdio; killed at teardown."""
    require_tools("qemu-system-arm")
    from wasmbed.dts import load_board
    from wasmbed.gateway.qemu import console_only

    children: list[pexpect.spawn] = []

    def start(board: str, elf: Path, **kw) -> pexpect.spawn:
        cmd = console_only(load_board(board), elf, **kw).command()
        child = pexpect.spawn(cmd[0], cmd[1:], encoding="utf-8", codec_errors="replace", timeout=10)
        children.append(child)
        return child

    yield start
    for child in children:
        child.terminate(force=True)
