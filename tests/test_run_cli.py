"""``wasmbed run``: the headless command an app developer's CI calls (real QEMU board, real firmware)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require_tools

APPS = Path(__file__).resolve().parents[1] / "apps"


def wasmbed_run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wasmbed.cli", "run", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def board(firmware_builder) -> str:
    require_tools("qemu-system-arm")
    firmware_builder("mps2-an385")
    return "mps2-an385"


@pytest.mark.qemu
def test_hello_runs_until_the_timeout_and_prints_its_log(board: str) -> None:
    res = wasmbed_run(str(APPS / "hello.wat"), "--board", board, "--timeout", "8")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert "hello: hello from wasm" in lines
    assert len(lines) >= 5  # once at start, then every second
    assert "hello ran 8 s on mps2-an385 without failing" in res.stderr


@pytest.mark.qemu
def test_trap_fails_with_the_trap_message_in_json(board: str) -> None:
    res = wasmbed_run(str(APPS / "trap.wat"), "--board", board, "--timeout", "8", "--json", "--console")
    assert res.returncode == 1, res.stdout + res.stderr
    events = [json.loads(line) for line in res.stdout.splitlines()]  # every line is one JSON object
    kinds = {e["event"] for e in events}
    assert {"board", "device", "deploy", "console", "result"} <= kinds
    result = events[-1]
    assert result["event"] == "result" and result["ok"] is False and result["exit_code"] == 1
    assert result["error"] == "[trap] out of bounds memory access"
    assert "trap failed on mps2-an385: [trap] out of bounds memory access" in result["reason"]
    assert any(e["event"] == "deploy" and e["phase"] == "Running" for e in events)


def test_bad_input_fails_fast_naming_the_problem(tmp_path: Path) -> None:
    sleepy = tmp_path / "sleepy.wat"
    sleepy.write_text('(module (import "wasmbed" "sleep" (func (param i32)))'
                      ' (func (export "app_start") (result i32) (i32.const 0)))')
    res = wasmbed_run(str(sleepy), "--board", "mps2-an385")
    assert res.returncode == 2 and "import wasmbed.sleep: unknown function" in res.stderr
    res = wasmbed_run(str(tmp_path / "missing.wasm"), "--board", "mps2-an385", "--json")
    assert res.returncode == 2
    assert json.loads(res.stdout)["reason"] == f"no such file: {tmp_path / 'missing.wasm'}"
    res = wasmbed_run("hello", "--board", "stm32vldiscovery")
    assert res.returncode == 2 and "cannot run apps" in res.stderr
    res = wasmbed_run("hello", "--board", "no-such-board")
    assert res.returncode == 2 and "unknown board type 'no-such-board'" in res.stderr


def test_help_documents_finishing_output_and_exit_codes() -> None:
    res = subprocess.run([sys.executable, "-m", "wasmbed.cli", "run", "--help"], capture_output=True, text=True)
    for text in ("--timeout", "--config", "--json", "--console", "--until", "wasmbed:done", "exit status",
                 "result", "example app"):
        assert text in res.stdout, text
