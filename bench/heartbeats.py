"""Heartbeat throughput of one gateway: N simulated devices heartbeating every I ms over real TLS.

The gateway runs in a child process (so its CPU time is its own, read from /proc/<pid>/stat); the
simulated fleet runs in this process. Devices enroll with one-time tokens first, then the measurement
window starts once every device is connected. Figures are from one run on this machine; compare
ratios (sustained / offered load, CPU per heartbeat), not absolute numbers across machines.

    .venv/bin/python bench/heartbeats.py [--devices 200] [--interval-ms 100] [--seconds 10]
                                         [--status-write-interval 0.5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _proc_cpu_s(pid: int) -> float:
    """utime + stime of a process, seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _self_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


# -- gateway child ----------------------------------------------------------------------------------------


async def _serve(args: argparse.Namespace) -> None:
    from wasmbed.gateway.facade import SYSTEM, Gateway, GatewayConfig

    gw = Gateway(GatewayConfig(data_dir=Path(args.data_dir), port=0, pairing_mode=False,
                               status_write_interval_s=args.status_write_interval))
    await gw.start()
    tokens = [await gw.issue_enrollment_token(SYSTEM) for _ in range(args.devices)]
    out = {"port": gw.port, "ca": gw.ca_cert_der.hex(), "tokens": [t.hex() for t in tokens]}
    Path(args.info_file).write_text(json.dumps(out))
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not os.read(sys.stdin.fileno(), 1) else None)
    await stop.wait()
    await gw.stop()


# -- measuring parent --------------------------------------------------------------------------------------


async def _measure(args: argparse.Namespace) -> None:
    from wasmbed.gateway.simulator import SimConfig, make_fleet

    with tempfile.TemporaryDirectory(prefix="wasmbed-bench-") as tmp:
        info_file = Path(tmp) / "info.json"
        child = subprocess.Popen(
            [sys.executable, __file__, "--serve", "--data-dir", str(Path(tmp) / "gw"), "--info-file", str(info_file),
             "--devices", str(args.devices), "--status-write-interval", str(args.status_write_interval)],
            stdin=subprocess.PIPE, env={**os.environ, "WASMBED_DATA_DIR": str(Path(tmp) / "gw")})
        try:
            deadline = time.monotonic() + 60
            while not info_file.exists():
                if time.monotonic() > deadline or child.poll() is not None:
                    raise SystemExit("gateway child did not start")
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.1)
            info = json.loads(info_file.read_text())
            cfg = SimConfig(port=info["port"], ca_der=bytes.fromhex(info["ca"]),
                            heartbeat_interval_ms=args.interval_ms, backoff_min_s=0.1, backoff_max_s=1.0)
            fleet = make_fleet(Path(tmp) / "fleet", args.devices, cfg, [bytes.fromhex(t) for t in info["tokens"]])
            t_enroll = time.monotonic()
            for d in fleet:
                d.start()
            await asyncio.wait_for(asyncio.gather(*(d.connected.wait() for d in fleet)), 120)
            enroll_s = time.monotonic() - t_enroll
            await asyncio.sleep(1.0)  # warm-up: let the heartbeat phases spread out

            acks0, gcpu0, ccpu0, t0 = sum(d.acks_received for d in fleet), _proc_cpu_s(child.pid), _self_cpu_s(), \
                time.monotonic()
            await asyncio.sleep(args.seconds)
            acks1, gcpu1, ccpu1, t1 = sum(d.acks_received for d in fleet), _proc_cpu_s(child.pid), _self_cpu_s(), \
                time.monotonic()
            connected = sum(d.connected.is_set() for d in fleet)
            await asyncio.gather(*(d.stop() for d in fleet))
        finally:
            if child.stdin:
                child.stdin.close()
            try:
                child.wait(20)
            except subprocess.TimeoutExpired:
                child.kill()

    wall = t1 - t0
    offered = args.devices * 1000 / args.interval_ms
    rate = (acks1 - acks0) / wall
    gcpu = (gcpu1 - gcpu0) / wall
    print(f"devices {args.devices}, heartbeat every {args.interval_ms} ms, window {wall:.1f} s, "
          f"status writes {'every heartbeat' if args.status_write_interval <= 0 else f'<= 1 per {args.status_write_interval} s per device'}")  # noqa: E501
    print(f"  enrollment + first connect of all devices: {enroll_s:.2f} s; connected at end: {connected}")
    print(f"  offered {offered:.0f} heartbeats/s, sustained {rate:.0f} acked/s ({rate / offered:.2f} of offered)")
    print(f"  gateway CPU {gcpu * 100:.0f}% of one core, {gcpu / rate * 1e6:.0f} us per heartbeat" if rate else
          "  no heartbeats acknowledged")
    print(f"  simulator process CPU {(ccpu1 - ccpu0) / wall * 100:.0f}% of one core")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, default=200)
    p.add_argument("--interval-ms", type=int, default=100)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--status-write-interval", type=float, default=0.5,
                   help="gateway: coalesce heartbeat status writes to at most one per this many seconds")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--data-dir", help=argparse.SUPPRESS)
    p.add_argument("--info-file", help=argparse.SUPPRESS)
    args = p.parse_args()
    asyncio.run(_serve(args) if args.serve else _measure(args))


if __name__ == "__main__":
    main()
