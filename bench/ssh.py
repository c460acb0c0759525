"""Lab mode over SSH: time to first frame, memory per session, idle CPU, and sessions per core.

The server (a gateway without lab + the real :class:`ConsoleServer`, one in-process WasmbedApp per
session, built the way ``wasmbed-console serve`` builds them) runs in a child process, so its RSS
(/proc/PID/status VmRSS) and CPU time (/proc/PID/stat utime+stime, all threads) are its own; the
clients run in this process. The child holds 12 connected device records and, on request, a writer
that updates one device per second exactly as the link does on a heartbeat (store mutate of
last_heartbeat, uptime_ms, free_ram), round robin over the 12. It takes commands on stdin (writer rate,
fleet ages, stats, gc) and ends when stdin closes, so it never outlives this process.

Clients are asyncssh connections (one connection per session, PTY xterm-256color, 120x40 by default)
that drain their output like a terminal and count the bytes; the first frame is the first output whose
text (escapes stripped) contains the boards view's info line ("lab boards"), "table filled" the first
with "12 devices". Time to first frame is also measured with the real OpenSSH client, which users run.

"One board update per second" = one device record changes per second. The boards view also recomputes
the visible rows every second for their ages, and a connected row's HEARTBEAT ("Ns ago") changes every
second, so a session has a change to paint every second whether or not the update comes. Hence idle
twice: "nothing changes" (no writer, heartbeats days old: no cell text changes for an hour; the
event-driven floor the prototype's 0 % idle compares with) and "ages tick" (no writer, connected rows).

Phases: (1) first frames, sequential sessions left with ctrl+q; (2) 0 sessions: idle floor, then the
writer alone (the baseline subtracted from every busy figure); (3) sessions opened level by level while
nothing changes, so render caches stay empty: RSS per session just opened, and idle at 20 sessions;
(4) the writer on: the most sessions kept busy until the server's RSS stops growing (the per-session
render caches fill up: memory per busy session), then a CPU window per level from the most sessions down,
hanging up the surplus each time; at 20, a window without the writer (ages tick); (5) hang up the rest:
no session, store watcher, connection or app object may survive.

Sessions per core: the least-squares slope of server CPU over sessions (levels that saturate the
core, > 90 %, are left out) is CPU-ms per second per session, i.e. per update per session at 1
update/s; 1000 ms / that = sessions one core (the server's one event loop) serves. Per session it swings
between two values: whether the update lands in the same 250 ms repaint as the session's own age tick
(one repaint of the changed rows a second) or not (two) depends on the phase of each session's timer, so levels differ
by chance; several levels and the slope smooth that out. The prototype
(../shared/notes/textual-over-ssh.md) saw ~17 ms per update per session -> ~40 sessions/core with a naive
12-row DataTable. One run on this machine: compare ratios, not absolute figures. No QEMU: the real lab
also polls LEDs at 2 Hz per running board, which this does not exercise.

    .venv/bin/python bench/ssh.py [--sessions 40] [--seconds 10] [--steady 120] [--size 120x40] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import codecs
import contextlib
import datetime as dt
import gc
import json
import os
import random
import re
import resource
import shutil
import signal
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

USER = "bench"
DEVICES = 12
BOARDS_TEXT = "lab boards"  # the boards view's info line: "0 lab boards · 12 devices (12 connected)"
REPLY = "@@bench "  # prefix of the child's replies on stdout (anything else there is a surprise)
ANSI = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[()][0-9A-Za-z]|[=>78])")
LEAK_TYPES = ("WasmbedApp", "BoardsScreen", "RowTable", "SSHDriver", "SSHTerminal", "_Session",
              "SSHServerConnection")
PROTOTYPE = "prototype: 1.6-2.3 MiB/session, ~17 ms/update/session -> ~40 sessions/core, first frame 80-210 ms"


def _proc_cpu_s(pid: int) -> float:
    """utime + stime of a process (all its threads), seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _proc_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _self_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of y over x."""
    if len({x for x, _ in points}) < 2:
        return None
    mx = statistics.fmean(x for x, _ in points)
    my = statistics.fmean(y for _, y in points)
    return sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)


# -- server child ------------------------------------------------------------------------------------------


def _fleet(gw: Any, n: int) -> list[str]:
    from wasmbed.gateway.model import Device, DevicePhase, DeviceSpec, DeviceStatus, ObjectMeta, utcnow

    names = []
    now = utcnow()
    for i in range(n):
        name = f"mps2-an385-{i:04x}"
        fp = bytes(random.randrange(256) for _ in range(32)).hex(":", 1)
        status = DeviceStatus(phase=DevicePhase.CONNECTED, gateway="local", firmware_version="0.1.0",
                              connected_since=now, last_heartbeat=now, uptime_ms=0, free_ram=3_900_000,
                              apps={"1": "Running"})
        gw.store.create(Device(metadata=ObjectMeta(name=name), status=status,
                               spec=DeviceSpec(public_key_fingerprint=fp, board="mps2-an385")))
        names.append(name)
    return names


async def _writer(gw: Any, names: list[str], rate: float, beats: list[int]) -> None:
    """``rate`` device updates per second, round robin: the link's heartbeat write."""
    from wasmbed.gateway.model import Device, utcnow

    loop = asyncio.get_running_loop()
    period = 1.0 / rate
    step_ms = int(len(names) * period * 1000)  # each device is updated every len(names) periods
    next_t = loop.time()
    i = 0
    while True:
        now = utcnow()

        def beat(d: Device, now: dt.datetime = now) -> None:
            d.status.last_heartbeat = now
            d.status.uptime_ms = (d.status.uptime_ms or 0) + step_ms
            d.status.free_ram = 3_900_000 - random.randrange(65536)

        gw.store.mutate(Device, names[i % len(names)], beat)
        i += 1
        beats[0] += 1
        next_t += period
        await asyncio.sleep(max(0.0, next_t - loop.time()))


def _set_ages(gw: Any, names: list[str], age: dt.timedelta) -> None:
    from wasmbed.gateway.model import Device, utcnow

    when = utcnow() - age
    for name in names:
        def set_age(d: Device) -> None:
            d.status.last_heartbeat = when
        gw.store.mutate(Device, name, set_age)


async def _serve(args: argparse.Namespace) -> None:
    import logging

    from wasmbed import paths
    from wasmbed.console.app import WasmbedApp
    from wasmbed.console.ssh_server import ConsoleServer, load_or_create_host_key
    from wasmbed.console.themes import load_themes
    from wasmbed.console.users import Users
    from wasmbed.gateway.facade import Caller, Gateway, GatewayConfig

    tmp = Path(args.serve)
    logging.basicConfig(filename=paths.log_dir() / "console-serve.log", level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    gw = Gateway(GatewayConfig(data_dir=paths.data_dir(), lab=False))
    await gw.start()
    names = _fleet(gw, args.devices)
    users = Users.from_mapping({"user": [{"name": USER, "role": "viewer",
                                          "keys": [(tmp / "id_bench.pub").read_text()]}]})
    themes, problems = load_themes(paths.config_dir() / "themes")  # once, as serve() does

    def make_app(caller: Caller) -> WasmbedApp:
        return WasmbedApp(gw, caller, themes=themes, theme_problems=problems, offer_examples=False)

    server = ConsoleServer(users, make_app, gateway=gw, host_key=load_or_create_host_key(tmp / "host_key"))
    await server.start("127.0.0.1", 0)

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    beats = [0]
    writer: asyncio.Task[None] | None = None
    out = sys.__stdout__
    assert out is not None

    def reply(**kw: Any) -> None:
        out.write(REPLY + json.dumps(kw) + "\n")
        out.flush()

    async def commands() -> None:
        try:
            await command_loop()
        except Exception:
            traceback.print_exc()
        finally:
            stop.set()

    async def command_loop() -> None:
        nonlocal writer
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while True:
            line = (await reader.readline()).decode().split()
            if not line or line[0] == "quit":  # EOF: the parent is gone
                break
            cmd, rest = line[0], line[1:]
            if cmd == "writer":  # writer RATE (0: off)
                if writer is not None:
                    writer.cancel()
                    await asyncio.gather(writer, return_exceptions=True)
                    writer = None
                if float(rest[0]) > 0:
                    writer = asyncio.create_task(_writer(gw, names, float(rest[0]), beats))
            elif cmd == "gc":  # what survives a collection: sessions' apps, screens and drivers must not
                gc.collect()
                alive: dict[str, int] = {}
                for obj in gc.get_objects():
                    name = type(obj).__name__
                    if name in LEAK_TYPES:
                        alive[name] = alive.get(name, 0) + 1
                reply(alive=alive, objects=len(gc.get_objects()))
                continue
            elif cmd == "fleet":  # fleet live|quiet: heartbeats now, or days old (age text fixed for an hour)
                _set_ages(gw, names, dt.timedelta(0) if rest[0] == "live" else dt.timedelta(days=3))
            reply(sessions=server.sessions, watchers=gw.store.watcher_count, beats=beats[0],
                  connections=len(getattr(server, "_connections", ())))

    cmd_task = asyncio.create_task(commands())
    reply(port=server.port)
    try:
        await stop.wait()
    finally:
        for t in (cmd_task, writer):
            if t is not None:
                t.cancel()
        await asyncio.gather(*(t for t in (cmd_task, writer) if t is not None), return_exceptions=True)
        await server.stop()
        await gw.stop()


# -- measuring parent --------------------------------------------------------------------------------------


class Server:
    """The server child: start, command, measure, stop."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.proc: asyncio.subprocess.Process | None = None
        self.stray: list[str] = []  # child stdout lines that are not replies
        self.port = 0

    async def start(self, devices: int) -> None:
        env = {**os.environ, "WASMBED_DATA_DIR": str(self.tmp / "data"), "WASMBED_LOG_DIR": str(self.tmp / "log"),
               "WASMBED_CONFIG_DIR": str(self.tmp / "config")}  # cache dir: unused without lab, left alone
        err = (self.tmp / "server.err").open("wb")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--serve", str(self.tmp), "--devices", str(devices), env=env,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=err,
            start_new_session=True)  # ctrl+c reaches only this process, which then stops the child
        err.close()
        self.port = (await asyncio.wait_for(self._reply(), 60))["port"]

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def _reply(self) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        while True:
            line = (await self.proc.stdout.readline()).decode(errors="replace")
            if not line:
                raise RuntimeError(f"the server exited ({self.proc.returncode}); see {self.tmp / 'server.err'}:\n"
                                   + self.errors(20))
            if line.startswith(REPLY):
                return json.loads(line[len(REPLY):])
            self.stray.append(line.rstrip())

    async def cmd(self, text: str) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(text.encode() + b"\n")
        await self.proc.stdin.drain()
        return await asyncio.wait_for(self._reply(), 30)

    async def wait_sessions(self, n: int, timeout: float = 15) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            st = await self.cmd("stats")
            if st["sessions"] == n or time.monotonic() > deadline:
                return st
            await asyncio.sleep(0.1)

    def rss_mib(self) -> float:
        return _proc_rss_mib(self.pid)

    def cpu_s(self) -> float:
        return _proc_cpu_s(self.pid)

    def errors(self, tail: int | None = None) -> str:
        path = self.tmp / "server.err"
        lines = path.read_text(errors="replace").splitlines() if path.exists() else []
        return "\n".join(lines[-tail:] if tail else lines)

    async def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(Exception):
            assert proc.stdin is not None
            proc.stdin.write(b"quit\n")
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except (TimeoutError, asyncio.CancelledError):
            proc.kill()
            await proc.wait()


class Terminal:
    """The client side of one session: drains the output, counts it, notices the first frame."""

    def __init__(self, t0: float) -> None:
        loop = asyncio.get_running_loop()
        self.t0 = t0
        self.bytes = 0
        self.writes = 0
        self.first_frame: asyncio.Future[float] = loop.create_future()
        self.filled: asyncio.Future[float] = loop.create_future()
        self.exit_status: int | None = None
        self._text = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def factory(self) -> Any:
        import asyncssh

        term = self

        class Session(asyncssh.SSHClientSession):
            def data_received(self, data: bytes, datatype: Any) -> None:
                term.received(data)

            def exit_status_received(self, status: int) -> None:
                term.exit_status = status

        return Session()

    def received(self, data: bytes) -> None:
        self.bytes += len(data)
        self.writes += 1
        if self.filled.done():
            return
        self._text += self._decoder.decode(data)
        plain = ANSI.sub("", self._text)
        t = time.perf_counter() - self.t0
        if not self.first_frame.done() and BOARDS_TEXT in plain:
            self.first_frame.set_result(t)
        if f"{DEVICES} devices" in plain:
            if not self.first_frame.done():
                self.first_frame.set_result(t)
            self.filled.set_result(t)
            self._text = ""


class Client:
    def __init__(self, conn: Any, chan: Any, term: Terminal, connect_s: float) -> None:
        self.conn, self.chan, self.term, self.connect_s = conn, chan, term, connect_s

    async def quit(self) -> int | None:
        """ctrl+q, as a user leaves; returns the exit status."""
        self.chan.write(b"\x11")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.chan.wait_closed(), 10)
        self.conn.close()
        await self.conn.wait_closed()
        return self.term.exit_status

    async def hang_up(self) -> None:
        self.conn.close()
        await self.conn.wait_closed()


async def open_client(port: int, key: Any, size: tuple[int, int] = (120, 40), timeout: float = 30) -> Client:
    import asyncssh

    t0 = time.perf_counter()
    conn = await asyncssh.connect("127.0.0.1", port, username=USER, client_keys=[key], known_hosts=None,
                                  agent_path=None, config=None)
    connect_s = time.perf_counter() - t0
    term = Terminal(t0)
    try:
        chan, _ = await conn.create_session(term.factory, term_type="xterm-256color", term_size=size,
                                            encoding=None)
        await asyncio.wait_for(asyncio.shield(term.filled), timeout)
    except BaseException:
        conn.close()
        raise
    return Client(conn, chan, term, connect_s)


def openssh_first_frame(port: int, key_file: Path, size: tuple[int, int],
                        timeout: float = 30) -> tuple[float, float, int | None]:
    """(first frame s, table filled s, exit status after ctrl+q) with the real ssh client."""
    import pexpect

    args = ["-tt", "-p", str(port), "-i", str(key_file), "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-o", "LogLevel=ERROR", "-F", "/dev/null", f"{USER}@127.0.0.1"]
    t0 = time.perf_counter()
    child = pexpect.spawn("ssh", args, env={**os.environ, "TERM": "xterm-256color"}, dimensions=(size[1], size[0]),
                          encoding="utf-8", codec_errors="replace", timeout=timeout)
    seen = ""
    first = None
    try:
        while True:
            if time.perf_counter() - t0 > timeout:
                raise TimeoutError(f"ssh: no complete frame in {timeout} s; screen text:\n{ANSI.sub('', seen)[-800:]}")
            with contextlib.suppress(pexpect.TIMEOUT):
                seen += child.read_nonblocking(65536, timeout=0.2)
            plain = ANSI.sub("", seen)
            if first is None and BOARDS_TEXT in plain:
                first = time.perf_counter() - t0
            if f"{DEVICES} devices" in plain:
                filled = time.perf_counter() - t0
                break
        child.send("\x11")
        child.expect(pexpect.EOF, timeout=10)
    finally:
        child.close(force=True)
    return first if first is not None else filled, filled, child.exitstatus


async def window(server: Server, clients: list[Client], seconds: float) -> dict[str, float]:
    """Server CPU (% of one core) and per-session output over ``seconds``."""
    b0 = sum(c.term.bytes for c in clients)
    w0 = sum(c.term.writes for c in clients)
    c0, s0, t0 = server.cpu_s(), _self_cpu_s(), time.monotonic()
    await asyncio.sleep(seconds)
    wall = time.monotonic() - t0
    cpu, own = server.cpu_s() - c0, _self_cpu_s() - s0
    n = max(1, len(clients))
    return {"cpu_pct": 100 * cpu / wall, "client_cpu_pct": 100 * own / wall,
            "bytes_per_s": (sum(c.term.bytes for c in clients) - b0) / wall / n,
            "writes_per_s": (sum(c.term.writes for c in clients) - w0) / wall / n}


async def _measure(args: argparse.Namespace, tmp: Path, server: Server) -> None:
    import asyncssh

    key = asyncssh.generate_private_key("ssh-ed25519", comment="wasmbed-bench")
    key_file = tmp / "id_bench"
    key.write_private_key(key_file)
    key_file.chmod(0o600)
    key.write_public_key(tmp / "id_bench.pub")
    settle = 1.0 if args.quick else 2.0
    W = args.seconds
    notes: list[str] = []

    await server.start(DEVICES)
    await asyncio.sleep(settle)
    base = await server.cmd("stats")
    base_gc = await server.cmd("gc")
    rss_cold = server.rss_mib()
    print(f"server pid {server.pid} on 127.0.0.1:{server.port}; {DEVICES} devices; terminals {args.size[0]}x"
          f"{args.size[1]}; window {W:g} s; {os.cpu_count()} cores", flush=True)

    # 1. time to first frame, sequential sessions, each left with ctrl+q
    ttff: list[tuple[float, float, float]] = []
    for _ in range(args.ttff):
        c = await open_client(server.port, key, args.size)
        ttff.append((c.connect_s, await c.term.first_frame, await c.term.filled))
        status = await c.quit()
        if status != 0:
            notes.append(f"a session left with ctrl+q ended with exit status {status}")
    ossh: list[tuple[float, float, int | None]] = []
    if args.openssh and shutil.which("ssh"):
        for _ in range(args.openssh):
            ossh.append(await asyncio.to_thread(openssh_first_frame, server.port, key_file, args.size))
        notes += [f"OpenSSH session ended with exit status {s}" for _, _, s in ossh if s != 0]
    elif args.openssh:
        notes.append("no ssh client on PATH: OpenSSH first frame not measured")
    st = await server.wait_sessions(0)
    if st["sessions"] or st["watchers"] != base["watchers"]:
        notes.append(f"after the first-frame sessions quit: {st} (before: {base})")
    await asyncio.sleep(settle)
    rss_warm = server.rss_mib()

    # 2. with 0 sessions: the quiet idle floor, then the writer's own cost (the baseline of every busy figure)
    await server.cmd("fleet quiet")
    await asyncio.sleep(settle)
    idle0 = await window(server, [], W)
    await server.cmd("fleet live")
    await server.cmd(f"writer {args.rate:g}")
    await asyncio.sleep(settle)
    busy0 = {"n": 0, **await window(server, [], W)}
    await server.cmd("writer 0")

    # 3. open sessions up to each level while nothing changes (so no render cache grows): memory per session;
    #    at the idle level, idle CPU with nothing changing
    await server.cmd("fleet quiet")
    await asyncio.sleep(settle)
    levels = sorted({n for n in (1, 5, 10, 20, 40) if n < args.sessions} | {args.sessions})
    if args.quick:
        levels = sorted({1, max(1, args.sessions // 2), args.sessions})
    idle_at = min(20, args.sessions)
    levels = sorted({*levels, idle_at})
    clients: list[Client] = []
    mem: list[dict[str, Any]] = [{"n": 0, "rss": server.rss_mib()}]
    idle: dict[str, dict[str, float]] = {}
    for n in levels:
        t_open = time.perf_counter()
        opened: list[Client] = []
        while len(clients) + len(opened) < n:
            batch = min(10, n - len(clients) - len(opened))
            opened += await asyncio.gather(*(open_client(server.port, key, args.size) for _ in range(batch)))
        clients += opened
        open_s = time.perf_counter() - t_open
        st = await server.wait_sessions(n)
        if st["sessions"] != n:
            notes.append(f"{n} clients open but the server counts {st['sessions']} sessions")
        await asyncio.sleep(settle)
        mem.append({"n": n, "rss": server.rss_mib(), "open_s": open_s,
                    "open_max": max(c.term.filled.result() for c in opened)})
        print(f"  {n:3d} sessions open, nothing changing: RSS {mem[-1]['rss']:.1f} MiB", flush=True)
        if n == idle_at:
            idle["quiet"] = await window(server, clients, W)

    # 4. busy: the writer on; keep the most sessions busy until the server's RSS stops growing (the render
    #    caches fill up), then CPU windows from the most sessions down, hanging up the surplus each time
    await server.cmd("fleet live")
    await server.cmd(f"writer {args.rate:g}")
    t_busy = time.monotonic()
    top = len(clients)
    growth: list[tuple[float, float]] = [(0.0, server.rss_mib())]
    stable = False
    while args.steady and growth[-1][0] < args.steady:
        await asyncio.sleep(5)
        growth.append((time.monotonic() - t_busy, server.rss_mib()))
        print(f"  {top:3d} sessions busy for {growth[-1][0]:3.0f} s: RSS {growth[-1][1]:.1f} MiB", flush=True)
        if len(growth) >= 4 and growth[-1][1] - growth[-4][1] < 0.01 * growth[-1][1]:
            stable = True  # < 1 % in 15 s
            break
    rows: list[dict[str, Any]] = []
    for n in sorted(levels, reverse=True):
        if len(clients) > n:
            await asyncio.gather(*(c.hang_up() for c in clients[n:]))
            del clients[n:]
            await server.wait_sessions(n)
            await server.cmd("gc")  # collect the ended sessions' cycles now, not during the next window
            await asyncio.sleep(settle)
        rows.append({"n": n, **await window(server, clients, W)})
        print(f"  {n:3d} sessions busy: server CPU {rows[-1]['cpu_pct']:5.1f} %", flush=True)
        if n == idle_at:  # the writer off: only the ages move
            await server.cmd("writer 0")
            await asyncio.sleep(settle)
            idle["ages tick"] = await window(server, clients, W)
            await server.cmd(f"writer {args.rate:g}")
            await asyncio.sleep(settle)
    rows.append(busy0)
    rows.reverse()
    rss_busy = growth[-1][1]

    # 5. hang up the rest (abruptly, like a dropped connection): nothing may stay behind
    await server.cmd("writer 0")
    await asyncio.gather(*(c.hang_up() for c in clients))
    st = await server.wait_sessions(0)
    await asyncio.sleep(settle)
    rss_after = server.rss_mib()
    after_gc = await server.cmd("gc")
    if st["sessions"] or st["watchers"] != base["watchers"] or st["connections"]:
        notes.append(f"after hanging up every session: {st} (before: {base})")
    if after_gc["alive"]:
        notes.append(f"objects of ended sessions still alive: {after_gc['alive']}")
    _report(args, notes, server, tmp, rows=rows, mem=mem, ttff=ttff, ossh=ossh, idle0=idle0, idle=idle,
            idle_at=idle_at, rss=(rss_cold, rss_warm, rss_busy, rss_after), growth=growth, stable=stable,
            objects=(base_gc["objects"], after_gc["objects"]), beats=st["beats"])


def _report(args: argparse.Namespace, notes: list[str], server: Server, tmp: Path, *, rows: list[dict[str, Any]],
            mem: list[dict[str, Any]], ttff: list[tuple[float, float, float]],
            ossh: list[tuple[float, float, int | None]], idle0: dict[str, float], idle: dict[str, dict[str, float]],
            idle_at: int, rss: tuple[float, float, float, float], growth: list[tuple[float, float]], stable: bool,
            objects: tuple[int, int], beats: int) -> None:
    rss_cold, rss_warm, rss_busy, rss_after = rss
    print()
    print(f"busy: {args.rate:g} device update(s)/s ({beats} in all); per-session figures are per second "
          f"(= per update at 1 update/s); the sessions had been busy for {growth[-1][0]:.0f} s or more")
    print(f"{'sessions':>8} {'server CPU %':>12} {'minus 0':>8} {'ms/s/session':>12} {'bytes/s/sess':>12} "
          f"{'writes/s/sess':>13} {'client CPU %':>12}")
    cpu0 = rows[0]["cpu_pct"]
    fit: list[tuple[float, float]] = []
    for r in rows:
        n = r["n"]
        extra = r["cpu_pct"] - cpu0
        per = 10 * extra / n if n else None  # % of a core -> ms per s, per session
        saturated = r["cpu_pct"] > 90
        if not saturated:
            fit.append((n, 10 * r["cpu_pct"]))
        print(f"{n:>8} {r['cpu_pct']:>11.1f}{'*' if saturated else ' '} {extra:>8.1f} "
              f"{'' if per is None else f'{per:.2f}':>12} {r['bytes_per_s'] if n else 0:>12.0f} "
              f"{r['writes_per_s'] if n else 0:>13.1f} {r['client_cpu_pct']:>12.1f}")
    if any(r["cpu_pct"] > 90 for r in rows):
        print("  * the server's loop is saturated (> 90 % of a core): left out of the fit")
    print()
    print("opening sessions, nothing changing on screen:")
    print(f"{'sessions':>8} {'RSS MiB':>8} {'MiB/session':>11} {'open all s':>10} {'filled max ms':>13}")
    for m in mem:
        n = m["n"]
        print(f"{n:>8} {m['rss']:>8.1f} {'' if not n else format((m['rss'] - mem[0]['rss']) / n, '.2f'):>11} "
              f"{'' if not n else format(m['open_s'], '.2f'):>10} "
              f"{'' if not n else format(1000 * m['open_max'], '.0f'):>13}")

    print()
    if ttff:
        conn_ms = [1000 * t[0] for t in ttff]
        ff = [1000 * t[1] for t in ttff]
        fl = [1000 * t[2] for t in ttff]
        print(f"time to first frame, asyncssh client, {len(ttff)} sequential sessions: first {ff[0]:.0f} ms; "
              f"median {statistics.median(ff):.0f} ms, max {max(ff):.0f} ms (SSH connect+auth median "
              f"{statistics.median(conn_ms):.0f} ms; table filled median {statistics.median(fl):.0f} ms, "
              f"max {max(fl):.0f} ms)")
    if ossh:
        ff = [1000 * t[0] for t in ossh]
        fl = [1000 * t[1] for t in ossh]
        print(f"time to first frame, OpenSSH client, {len(ossh)} sequential session(s): "
              f"median {statistics.median(ff):.0f} ms, max {max(ff):.0f} ms (table filled median "
              f"{statistics.median(fl):.0f} ms, max {max(fl):.0f} ms)")
    opened = [(m["n"], m["rss"]) for m in mem[1:]]  # not 0: the first sessions reuse what earlier ones freed
    slope = _slope(opened) or 0.0
    top = mem[-1]
    print(f"memory per session just opened: {slope:.2f} MiB (slope over {', '.join(str(n) for n, _ in opened)} "
          f"sessions; {(top['rss'] - mem[0]['rss']) / top['n']:.2f} MiB {top['n']} vs 0)")
    if len(growth) > 1:
        print(f"memory per busy session: {(rss_busy - mem[0]['rss']) / top['n']:.2f} MiB ({top['n']} sessions "
              f"after {growth[-1][0]:.0f} s at {args.rate:g} update/s{'' if stable else ', still growing'}; RSS "
              + " -> ".join(f"{m:.0f}" for _, m in growth[:: max(1, len(growth) // 6)]) + " MiB)")
    print(f"server RSS: {rss_cold:.1f} MiB at start, {rss_warm:.1f} MiB at 0 sessions after {len(ttff) + len(ossh)} "
          f"had come and gone, {rss_busy:.1f} MiB busy, {rss_after:.1f} MiB after all hung up (Python objects "
          f"{objects[0]} at start, {objects[1]} after)")
    print(f"idle CPU: 0 sessions {idle0['cpu_pct']:.2f} %; {idle_at} sessions, nothing changes "
          f"{idle['quiet']['cpu_pct']:.2f} % ({idle['quiet']['bytes_per_s']:.0f} B/s/session); "
          f"{idle_at} sessions, no updates but ages tick {idle['ages tick']['cpu_pct']:.2f} % "
          f"({idle['ages tick']['bytes_per_s']:.0f} B/s/session)")
    slope = _slope(fit)  # ms of CPU per wall second per extra session
    if slope and slope > 0:
        per_update = slope / args.rate
        per_core = 1000 / slope
        print(f"busy sessions ({args.rate:g} update/s): {per_update:.2f} ms CPU per update per session (slope over "
              f"{', '.join(str(int(x)) for x, _ in fit)} sessions) -> {per_core:.0f} sessions per core "
              f"= {per_core / 40:.2f}x the prototype's ~40 ({per_update / 17:.2f}x its ~17 ms per update)")
        quiet = 10 * (idle["quiet"]["cpu_pct"] - idle0["cpu_pct"]) / idle_at
        ticks = 10 * (idle["ages tick"]["cpu_pct"] - idle0["cpu_pct"]) / idle_at
        print(f"  without the update: {ticks:.2f} ms/s/session while ages tick, {quiet:.2f} ms/s/session when "
              f"nothing changes")
    else:
        print("busy sessions: no usable slope (all levels saturated or too few)")
    print(PROTOTYPE)

    server_err = server.errors()
    if server_err.strip():
        notes.append(f"the server wrote to stderr ({len(server_err.splitlines())} lines; "
                     f"{tmp / 'server.err'}):\n" + server.errors(15))
    if server.stray:
        notes.append(f"the server wrote {len(server.stray)} stray line(s) to stdout: {server.stray[:3]}")
    log = tmp / "log" / "console-serve.log"
    if log.exists():
        bad = [ln for ln in log.read_text(errors="replace").splitlines() if " ERROR " in ln or " WARNING " in ln]
        if bad:
            notes.append(f"{len(bad)} warnings/errors in the server log:\n" + "\n".join(bad[:10]))
    for note in notes:
        print("NOTE:", note)


async def _main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="wasmbed-bench-ssh-"))
    server = Server(tmp)
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)  # clean up as on ctrl+c
    try:
        await _measure(args, tmp, server)
    finally:
        await server.stop()
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sessions", type=int, help="most sessions open at once (default 40; --quick 10)")
    p.add_argument("--seconds", type=float, help="each CPU window (default 10; --quick 3)")
    p.add_argument("--rate", type=float, default=1.0, help="device updates per second while busy (default 1)")
    p.add_argument("--ttff", type=int, help="sequential sessions for time to first frame (default 10; --quick 5)")
    p.add_argument("--openssh", type=int, help="of which also with OpenSSH's ssh (default 3; --quick 1; 0: none)")
    p.add_argument("--steady", type=float, help="at most this long at the busiest level for RSS to stop growing "
                   "(default 120; --quick 15; 0: skip)")
    p.add_argument("--size", default="120x40", help="terminal COLSxROWS (default 120x40)")
    p.add_argument("--quick", action="store_true", help="small numbers: done in about a minute")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (server logs)")
    p.add_argument("--serve", metavar="TMP", help=argparse.SUPPRESS)
    p.add_argument("--devices", type=int, default=DEVICES, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        asyncio.run(_serve(args))
        return
    q = args.quick
    args.sessions = args.sessions or (10 if q else 40)
    args.seconds = args.seconds or (3.0 if q else 10.0)
    args.ttff = args.ttff if args.ttff is not None else (5 if q else 10)
    args.openssh = args.openssh if args.openssh is not None else (1 if q else 3)
    args.steady = args.steady if args.steady is not None else (15.0 if q else 120.0)
    cols, _, lines = args.size.partition("x")
    if not (cols.isdigit() and lines.isdigit()):
        p.error(f"--size {args.size!r}: expected COLSxROWS, e.g. 120x40")
    args.size = (int(cols), int(lines))
    try:
        asyncio.run(_main(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        sys.exit("interrupted (the server child was stopped)")


if __name__ == "__main__":
    main()
