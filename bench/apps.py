"""App figures on a real QEMU mps2-an385: deploy time by module size, link vs raw UART throughput, and
the compute benchmark (fib(25)) as WASM vs native C under QEMU -icount.

1. Deploy time: modules of about 4, 16 and 64 KiB (a data segment of that size) deployed through the
   facade to a connected board; time from the deploy call to the device reporting Running, and the
   resulting payload throughput over the TLS link (chunks of up to 1.5 KiB, 4 in flight).
2. Raw bridge: the `bench-uart-sink` firmware drains the link UART with the same driver and ring; this
   script pushes 256 KiB into QEMU's socket as fast as it takes them and reads the device's byte
   count off its console: the ceiling the link runs under.
3. Compute: `bench-fib` firmware computes fib(25) natively and prints microseconds; apps/c/fib.c
   (clang --target=wasm32) computes fib(25) under wasm3 on a board started with -icount shift=0 and
   logs milliseconds. With -icount, virtual time counts instructions (1 instruction = 1 ns), so the
   ratio is an instruction ratio, independent of this machine's load.

    .venv/bin/python bench/apps.py [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import wasmtime

from wasmbed.dts import load_board
from wasmbed.firmware.build import build
from wasmbed.gateway.examples import build as build_examples
from wasmbed.gateway.facade import SYSTEM, Gateway, GatewayConfig
from wasmbed.gateway.model import AppDevicePhase, DevicePhase
from wasmbed.gateway.qemu import QemuLaunch

BOARD = "mps2-an385"


def sized_module(kib: int) -> bytes:
    """A valid app whose module is ~kib KiB: its bulk is a data segment of random bytes."""
    blob = os.urandom(kib * 1024 - 128)
    data = "".join(f"\\{b:02x}" for b in blob)
    wat = f"""(module (memory (export "memory") 1) (data (i32.const 0) "{data}")
               (func (export "app_start") (result i32) (i32.const 0)))"""
    return bytes(wasmtime.wat2wasm(wat))


async def lab(tmp: Path, icount: int | None = None) -> tuple[Gateway, str]:
    gw = Gateway(GatewayConfig(data_dir=tmp / "data", heartbeat_interval_s=1, lab=True,
                               lab_state_root=tmp / "boards", lab_log_root=tmp / "log"))
    await gw.start()
    await gw.add_board(SYSTEM, "bench", BOARD, icount_shift=icount)
    t0 = time.monotonic()
    while True:
        dev = gw.board_device("bench")
        if dev is not None and dev.phase is DevicePhase.CONNECTED:
            return gw, dev.name
        if time.monotonic() - t0 > 60:
            raise TimeoutError("board did not connect")
        await asyncio.sleep(0.05)


async def wait_running(gw: Gateway, app: str, dev: str, timeout: float = 120) -> None:
    t0 = time.monotonic()
    while True:
        a = gw.application(app)
        entry = a.status.entry(dev) if a is not None else None
        if entry is not None and entry.phase is AppDevicePhase.RUNNING:
            return
        if entry is not None and entry.phase is AppDevicePhase.FAILED:
            raise RuntimeError(f"{app} failed: {entry.error}")
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"{app} not running after {timeout} s")
        await asyncio.sleep(0.01)


async def deploy_times(runs: int) -> list[tuple[int, float]]:
    out = []
    with tempfile.TemporaryDirectory(prefix="wasmbed-bench-") as tmp:
        gw, dev = await lab(Path(tmp))
        try:
            for kib in (4, 16, 64):
                times = []
                for i in range(runs):
                    name = f"blob{kib}-{i}"
                    wasm = sized_module(kib)
                    await gw.add_app(SYSTEM, wasm, name=name)
                    t0 = time.monotonic()
                    await gw.deploy(SYSTEM, name, [dev])
                    await wait_running(gw, name, dev)
                    times.append(time.monotonic() - t0)
                    await gw.undeploy(SYSTEM, name, wait_s=30)
                out.append((len(wasm), statistics.median(times)))
        finally:
            await gw.stop()
    return out


async def raw_uart_throughput(total: int = 256 * 1024) -> float:
    fw = build(BOARD, "bench-uart-sink")
    board = load_board(BOARD)
    connected: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
        asyncio.get_running_loop().create_future())

    async def accept(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        if not connected.done():
            connected.set_result((r, w))

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    launch = QemuLaunch(board, fw.elf, {board.console.label: "stdio", board.link.label: "chardev:link"},
                        extra_args=["-chardev", f"socket,id=link,host=127.0.0.1,port={port}"])
    cmd = launch.command()
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        while True:
            line = await asyncio.wait_for(proc.stdout.readline(), 20)
            if not line:
                raise RuntimeError("QEMU exited before the UART sink was ready")
            if b"uart sink ready" in line:
                break
        _, writer = await asyncio.wait_for(connected, 10)
        t0 = time.monotonic()
        writer.write(os.urandom(total))
        got = 0
        while got < total:
            line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
            m = re.search(r"uart sink (\d+) bytes", line)
            if m:
                got = int(m.group(1))
        return total / (time.monotonic() - t0)
    finally:
        proc.kill()
        await proc.wait()
        server.close()


def native_fib_us() -> int:
    fw = build(BOARD, "bench-fib")
    board = load_board(BOARD)
    cmd = QemuLaunch(board, fw.elf, {board.console.label: "stdio"}, icount_shift=0).command()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            m = re.search(r"native fib\(25\) = 75025 in (\d+) us", line)
            if m:
                return int(m.group(1))
    finally:
        proc.kill()
        proc.wait()
    raise RuntimeError("no native fib result")


async def wasm_fib_ms() -> int:
    wasm = build_examples(names=["fib"])["fib"].read_bytes()
    with tempfile.TemporaryDirectory(prefix="wasmbed-bench-") as tmp:
        gw, dev = await lab(Path(tmp), icount=0)
        try:
            await gw.add_app(SYSTEM, wasm, name="fib")
            await gw.deploy(SYSTEM, "fib", [dev])
            t0 = time.monotonic()
            while time.monotonic() - t0 < 60:
                for e in gw.recent_events():
                    m = re.search(r"fib\(25\) = 75025 in (\d+) ms", e.message)
                    if e.kind == "app.log" and m:
                        return int(m.group(1))
                await asyncio.sleep(0.05)
            raise TimeoutError("no fib log line")
        finally:
            await gw.stop()


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    raw = await raw_uart_throughput()
    print(f"raw UART bridge (host -> device, link UART drained by the driver): {raw / 1024:.1f} KiB/s")
    for size, t in await deploy_times(args.runs):
        print(f"deploy {size / 1024:5.1f} KiB module -> Running: {t:6.2f} s median of {args.runs}; "
              f"{size / t / 1024:5.1f} KiB/s = {size / t / raw:.2f} of the raw bridge")
    native = native_fib_us()
    wasm = await wasm_fib_ms()
    print(f"fib(25) under -icount shift=0 on {BOARD}: native C {native} us, WASM (wasm3) {wasm} ms -> "
          f"{wasm * 1000 / native:.1f}x instructions")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
