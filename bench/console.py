"""Boards-view responsiveness with a big fleet: N devices heartbeating every second.

Heartbeats are written straight into the store (as the gateway's link would write them), so the
figures isolate the console: the store change feed, the coalesced repaint (dirty rows, at most every
250 ms, cell updates only) and Textual's rendering. Every 0.5 s one device *visible on screen* changes
phase; the latency is from that store write to the end of the next screen refresh that includes its
row. By default the app runs with its real terminal driver in a pseudo-terminal (this script re-runs
itself under pexpect and drains the output, like a terminal would); ``--headless`` skips the terminal.

CPU: the process's CPU time over the window, minus a baseline window with the same heartbeat writer
and no console (so it is the console's share), as % of one core.

    .venv/bin/python bench/console.py [--devices 1000] [--seconds 15] [--headless]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import json
import os
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


async def _fleet(gw, n: int) -> list[str]:
    from wasmbed.gateway.model import Device, DevicePhase, DeviceSpec, DeviceStatus, ObjectMeta, utcnow

    names = []
    now = utcnow()
    for i in range(n):
        name = f"dev-{i:04d}"
        fp = hashlib.sha256(name.encode()).digest().hex(":", 1)
        gw.store.create(Device(metadata=ObjectMeta(name=name), spec=DeviceSpec(public_key_fingerprint=fp, board="sim"),
                               status=DeviceStatus(phase=DevicePhase.CONNECTED, connected_since=now,
                                                   last_heartbeat=now, uptime_ms=0, free_ram=100_000)))
        names.append(name)
    return names


async def _heartbeats(gw, names: list[str], stop: asyncio.Event) -> int:
    """Every device once per second, spread over 100 ticks of 10 ms."""
    from wasmbed.gateway.model import Device, utcnow

    per_tick = max(1, len(names) // 100)
    i = beats = 0
    loop = asyncio.get_running_loop()
    next_t = loop.time()
    while not stop.is_set():
        now = utcnow()
        for _ in range(per_tick):
            def beat(d: Device, now: dt.datetime = now) -> None:
                d.status.last_heartbeat = now
                d.status.uptime_ms = (d.status.uptime_ms or 0) + 1000
                d.status.free_ram = 100_000 - random.randrange(4096)
            gw.store.mutate(Device, names[i % len(names)], beat)
            i += 1
            beats += 1
        next_t += 0.01
        await asyncio.sleep(max(0.0, next_t - loop.time()))
    return beats


async def _run(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="wasmbed-bench-console-") as tmp:
        return await _run_in(args, Path(tmp))


async def _run_in(args: argparse.Namespace, tmp: Path) -> dict:
    from wasmbed.console.app import WasmbedApp
    from wasmbed.console.screens.boards import BoardsScreen
    from wasmbed.gateway.facade import Caller, Gateway, GatewayConfig, Role
    from wasmbed.gateway.model import Device, DevicePhase

    gw = Gateway(GatewayConfig(data_dir=tmp / "data"))
    await gw.start()
    names = await _fleet(gw, args.devices)

    # baseline: the writer alone
    stop = asyncio.Event()
    writer = asyncio.create_task(_heartbeats(gw, names, stop))
    await asyncio.sleep(1.0)
    c0, t0 = _cpu(), time.monotonic()
    await asyncio.sleep(args.baseline)
    base_cpu = (_cpu() - c0) / (time.monotonic() - t0)
    stop.set()
    await writer

    app = WasmbedApp(gw, Caller("bench", Role.ADMIN))
    pending: dict[str, float] = {}
    latencies: list[float] = []
    flushes: list[float] = []

    def on_repaint(keys: set[str], flush_t: float) -> None:
        t = time.monotonic()
        flushes.append(len(keys))
        for key in keys & pending.keys():
            latencies.append(t - pending.pop(key))

    async def drive() -> dict:
        await asyncio.sleep(2.0)  # first paint of N rows
        screen = app.screen
        assert isinstance(screen, BoardsScreen)
        screen.on_repaint = on_repaint
        visible = names[: max(1, min(30, app.size.height - 8))]
        stop = asyncio.Event()
        writer = asyncio.create_task(_heartbeats(gw, names, stop))
        await asyncio.sleep(1.0)
        c0, t0 = _cpu(), time.monotonic()
        flips = 0
        while time.monotonic() - t0 < args.seconds:
            name = random.choice(visible)
            key = f"d:{name}"
            if key in pending:
                await asyncio.sleep(0.5)
                continue

            def flip(d: Device) -> None:
                d.set_phase(DevicePhase.UNREACHABLE if d.phase is DevicePhase.CONNECTED else DevicePhase.CONNECTED)
            gw.store.mutate(Device, name, flip)
            pending[key] = time.monotonic()
            flips += 1
            await asyncio.sleep(0.5)
        wall = time.monotonic() - t0
        total_cpu = (_cpu() - c0) / wall
        stop.set()
        beats = await writer
        app.exit()
        lat = sorted(latencies)
        return {
            "devices": len(names), "seconds": round(wall, 1), "driver": "headless" if args.headless else "pty",
            "state_changes": flips, "repainted": len(lat),
            "latency_ms_median": round(statistics.median(lat) * 1000, 1) if lat else None,
            "latency_ms_p95": round(lat[int(0.95 * (len(lat) - 1))] * 1000, 1) if lat else None,
            "latency_ms_max": round(lat[-1] * 1000, 1) if lat else None,
            "heartbeats_per_s": round(beats / (wall + 1.0)),
            "rows_per_flush_median": statistics.median(flushes) if flushes else 0,
            "cpu_total_pct": round(total_cpu * 100, 1), "cpu_writer_only_pct": round(base_cpu * 100, 1),
            "cpu_console_pct": round((total_cpu - base_cpu) * 100, 1),
        }

    if args.headless:
        async with app.run_test(size=(160, 48)):
            result = await drive()
    else:
        task = asyncio.create_task(drive())  # sleeps first: the app is up by then
        await app.run_async()
        result = await task
    await gw.stop()
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--devices", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--baseline", type=float, default=5.0, help="seconds of writer-only baseline")
    p.add_argument("--headless", action="store_true", help="no terminal: Textual renders but writes nothing")
    p.add_argument("--child", metavar="RESULT_FILE", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.headless or args.child:
        result = asyncio.run(_run(args))
        if args.child:
            Path(args.child).write_text(json.dumps(result))
            return
    else:
        result = _run_in_terminal(args)
    print(json.dumps(result, indent=2))


def _run_in_terminal(args: argparse.Namespace) -> dict:
    """Re-run this script as --child in a pseudo-terminal, draining its output like a terminal would."""
    import pexpect

    with tempfile.TemporaryDirectory(prefix="wasmbed-bench-") as tmp:
        out = Path(tmp) / "result.json"
        argv = [__file__, "--child", str(out), "--devices", str(args.devices), "--seconds", str(args.seconds),
                "--baseline", str(args.baseline)]
        child = pexpect.spawn(sys.executable, argv, dimensions=(48, 160), env={**os.environ, "TERM": "xterm-256color"},
                              timeout=None)
        drained = 0
        while True:
            try:
                drained += len(child.read_nonblocking(65536, timeout=1))
            except pexpect.TIMEOUT:
                continue
            except pexpect.EOF:
                break
        child.close()
        if not out.exists():
            sys.exit(f"the benchmark child failed (exit {child.exitstatus})")
        result = json.loads(out.read_text())
    result["terminal_bytes"] = drained
    return result


if __name__ == "__main__":
    main()
