"""The installed wasmbed-console binary in a real terminal (tmux): boot, board Connected, clean ctrl+q."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import require_tools

pytestmark = pytest.mark.qemu
BIN = Path(sys.executable).parent / "wasmbed-console"


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[list[str]]:
    require_tools("tmux", "qemu-system-arm")
    cmd = ["tmux", "-L", f"wasmbed-test-{os.getpid()}", "-f", "/dev/null"]
    yield cmd
    subprocess.run([*cmd, "kill-server"], capture_output=True)


def capture(tmux: list[str]) -> str:
    return subprocess.run([*tmux, "capture-pane", "-p", "-t", "console"], capture_output=True, text=True).stdout


def wait_screen(tmux: list[str], cond, timeout: float, what: str) -> str:
    deadline = time.monotonic() + timeout
    while True:
        screen = capture(tmux)
        if cond(screen):
            return screen
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}; screen:\n{screen}")
        time.sleep(0.2)


def test_binary_boots_the_default_board_and_quits_cleanly(tmp_path: Path, tmux: list[str], firmware_builder) -> None:
    firmware_builder("mps2-an385")
    env = {"WASMBED_DATA_DIR": tmp_path / "data", "WASMBED_CONFIG_DIR": tmp_path / "config",
           "WASMBED_LOG_DIR": tmp_path / "log"}
    exports = " ".join(f"{k}={shlex.quote(str(v))}" for k, v in env.items())
    script = (f"env {exports} TERM=xterm-256color {shlex.quote(str(BIN))} --heartbeat-interval 1 "
              "--unreachable-timeout 3; echo CONSOLE-EXIT=$?; sleep 120")
    subprocess.run([*tmux, "new-session", "-d", "-s", "console", "-x", "120", "-y", "40", script], check=True)
    screen = wait_screen(tmux, lambda s: "board-1" in s and "Connected" in s, 40, "board-1 Connected")
    assert "mps2-an385" in screen
    subprocess.run([*tmux, "send-keys", "-t", "console", "C-q"], check=True)
    screen = wait_screen(tmux, lambda s: "CONSOLE-EXIT=" in s, 20, "the console to exit")
    assert "CONSOLE-EXIT=0" in screen
    assert "Connected" not in screen  # the alternate screen was left: the UI is gone from the terminal
    alt = subprocess.run([*tmux, "display-message", "-p", "-t", "console", "#{alternate_on}"], capture_output=True,
                         text=True).stdout.strip()
    assert alt == "0"
    assert "Traceback" not in screen
    # the first run wrote no config; the lab board persisted; no QEMU left behind
    assert (tmp_path / "data" / "gateway.sqlite3").exists()
    left = subprocess.run(["pgrep", "-f", f"{tmp_path}/data/boards"], capture_output=True, text=True).stdout
    assert left.strip() == ""
