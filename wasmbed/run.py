"""``wasmbed run APP --board TYPE``: run one WebAssembly app on a fresh emulated board and report how it went.

What an app developer's CI calls. It starts a private lab gateway (keys, database and board state in a
temporary folder unless ``--data-dir`` is given), adds one board of the given DTS type, waits until the
board's firmware has enrolled and connected over mutual TLS, adds and deploys the app, streams the app's
log lines (and with ``--console`` the board's serial console), then stops everything.

When is an event-driven app "finished"? Apps never end on their own (they react to timers and messages),
so a run ends successfully when either

* the app logs a line containing the *done marker* (``--until``, default ``wasmbed:done``), or
* the app stops by itself (its state becomes Stopped without anyone asking), or
* ``--timeout`` seconds (counted from the deploy) pass while the app is Running and has not failed.

It fails when the app traps, overruns its time budget, returns non-zero from ``app_start``, cannot be
deployed, or is still not Running when the timeout passes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

EXIT_OK = 0
EXIT_APP_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_LAB_FAILED = 3
DONE_MARKER = "wasmbed:done"

EPILOG = f"""\
APP is a .wasm or .wat file, or the name of an example app (apps/: hello, blinky, thermostat, runaway,
trap, fib, thermostat-c), built into the cache on demand.

finishing: apps are event-driven and never end by themselves, so the run succeeds (exit 0) when the app
  logs a line containing the done marker (--until, default {DONE_MARKER!r}), or stops by itself, or
  --timeout seconds pass (counted from the deploy) while it runs without failing.

output: app log lines go to stdout ("APP: text"; "APP: LEVEL: text" for warnings and errors), board
  console lines with --console ("console| text"); progress and the result go to stderr. With --json,
  stdout carries one JSON object per line, each with "event" and "t" (seconds since the start):
    board    {{"board", "type", "state"}}             device  {{"device", "board", "phase"}}
    deploy   {{"app", "device", "phase", "bytes_sent", "size", "error"}}
    log      {{"app", "device", "level", "text", "uptime_ms"}}
    console  {{"board", "source", "text"}}             (with --console)
    result   {{"ok", "exit_code", "reason", "app", "board", "phase", "error", "runtime_s"}}

exit status:
  {EXIT_OK}  the app finished (see above)
  {EXIT_APP_FAILED}  the app failed: trap, time budget exceeded, app_start error, deploy failure, or not
     Running when the timeout passed (the reason names it)
  {EXIT_BAD_INPUT}  bad input: missing file, invalid module, unknown import, does not fit the board,
     unknown board type, bad --config
  {EXIT_LAB_FAILED}  the lab failed: firmware build, QEMU, or the board did not connect within --boot-timeout

example (CI):
  wasmbed run apps/hello.wat --board mps2-an385 --timeout 8
  wasmbed run build/app.wasm --board mps2-an386 --config period_ms=200 --json > run.jsonl
"""


def add_parser(sub: Any) -> argparse.ArgumentParser:
    from wasmbed.dts import board_names

    p = sub.add_parser("run", help="run one app on a fresh emulated board (for CI)",
                       description=__doc__.split("\n\n")[0].split(": ", 1)[1], epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("app", metavar="APP", help="a .wasm/.wat path or an example app's name")
    p.add_argument("--board", required=True, metavar="TYPE", help=f"board type: {', '.join(board_names())}")
    p.add_argument("--timeout", type=float, default=10.0, metavar="S",
                   help="seconds the app runs, counted from the deploy (default 10)")
    p.add_argument("--config", action="append", default=[], metavar="K=V",
                   help="app configuration entry (repeatable), read by config_get")
    p.add_argument("--json", action="store_true", help="one JSON object per line on stdout (see below)")
    p.add_argument("--console", action="store_true", help="also stream the board's serial console")
    p.add_argument("--until", default=DONE_MARKER, metavar="TEXT",
                   help=f"done marker: a log line containing it ends the run successfully (default {DONE_MARKER!r}; "
                        "'' disables)")
    p.add_argument("--time-budget", type=int, metavar="MS", help="per-handler time budget (default 1000)")
    p.add_argument("--memory-pages", type=int, metavar="N", help="linear memory limit in 64 KiB pages")
    p.add_argument("--boot-timeout", type=float, default=90.0, metavar="S",
                   help="seconds for firmware build + boot + enrollment (default 90)")
    p.add_argument("--data-dir", type=Path, metavar="DIR",
                   help="keep the gateway's keys, database and board state here (default: a temporary folder)")
    return p


@dataclass
class Outcome:
    code: int
    reason: str
    phase: str | None = None
    error: str | None = None


class Reporter:
    """Text or JSON lines; stdout for the stream, stderr for progress in text mode."""

    def __init__(self, as_json: bool, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> None:
        self.as_json = as_json
        self.out, self.err = out, err
        self.t0 = time.monotonic()

    def emit(self, event: str, human: str | None = None, *, stream: bool = False, **fields: Any) -> None:
        if self.as_json:
            obj = {"event": event, "t": round(time.monotonic() - self.t0, 3), **fields}
            self.out.write(json.dumps(obj, default=str) + "\n")
            self.out.flush()
        elif human is not None:
            target = self.out if stream else self.err
            target.write(human if stream else f"wasmbed run: {human}")
            target.write("\n")
            target.flush()


    def note(self, human: str) -> None:
        """Progress for people only (text mode)."""
        if not self.as_json:
            self.err.write(f"wasmbed run: {human}\n")
            self.err.flush()


def _bad(rep: Reporter, reason: str, **fields: Any) -> int:
    rep.emit("result", reason, ok=False, exit_code=EXIT_BAD_INPUT, reason=reason, **fields)
    return EXIT_BAD_INPUT


def main(args: argparse.Namespace) -> int:
    rep = Reporter(args.json)
    from wasmbed.console.appdata import SourceError, parse_pairs, resolve_source
    from wasmbed.dts import board_names
    from wasmbed.gateway.validate import ValidationError, check_fits, check_limits, validate_module

    # Everything that can be checked without a board is checked first: a bad module fails in milliseconds.
    if args.board not in board_names():
        return _bad(rep, f"unknown board type {args.board!r} (known: {', '.join(board_names())})")
    try:
        config = parse_pairs(args.config, "--config")
        source = resolve_source(args.app)
        info = validate_module(source)
        check_fits(info, args.board)
        check_limits(info, args.memory_pages, args.time_budget or 1000)
    except SourceError as exc:
        return _bad(rep, str(exc))
    except (ValidationError, ValueError) as exc:
        return _bad(rep, f"{args.app}: {exc}")
    if args.timeout <= 0:
        return _bad(rep, "--timeout must be > 0")
    examples_name = args.app if not Path(args.app).expanduser().is_file() else None
    try:
        if args.data_dir is not None:
            args.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            return asyncio.run(_run(args, rep, source, examples_name, config, args.data_dir))
        with tempfile.TemporaryDirectory(prefix="wasmbed-run-") as tmp:
            return asyncio.run(_run(args, rep, source, examples_name, config, Path(tmp)))
    except KeyboardInterrupt:
        rep.emit("result", "interrupted", ok=False, exit_code=130, reason="interrupted")
        return 130


async def _run(args: argparse.Namespace, rep: Reporter, source: Path, name: str | None, config: dict[str, str],
               data: Path) -> int:
    from wasmbed.gateway.facade import Caller, Gateway, GatewayConfig, Role

    log_dir = data / "log"
    log_dir.mkdir(parents=True, exist_ok=True)
    # The gateway logs every event; keep that in a file (a CI artifact), not on the run's stderr.
    handler = logging.FileHandler(log_dir / "gateway.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    gw = Gateway(GatewayConfig(name="run", data_dir=data, heartbeat_interval_s=1, unreachable_timeout_s=5, lab=True,
                               lab_state_root=data / "boards", lab_log_root=log_dir))
    runner = _Runner(gw, Caller("wasmbed-run", Role.ADMIN), args, rep, source, name, config)
    try:
        try:
            await gw.start()
        except Exception as exc:
            return runner.finish(Outcome(EXIT_LAB_FAILED, f"cannot start the gateway: {exc}"))
        return await runner.run()
    finally:
        with contextlib.suppress(Exception):
            await gw.stop()
        root.removeHandler(handler)
        handler.close()


class _Runner:
    BOARD = "run-board"

    def __init__(self, gw: Any, caller: Any, args: argparse.Namespace, rep: Reporter, source: Path,
                 name: str | None, config: dict[str, str]) -> None:
        self.gw, self.caller, self.args, self.rep = gw, caller, args, rep
        self.source, self.name, self.config = source, name, config
        self.app: str | None = None
        self.device: str | None = None
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.tasks: list[asyncio.Task[Any]] = []
        self.deployed_at: float | None = None
        self._last: dict[tuple[str, ...], Any] = {}
        self._was_running = False

    def finish(self, outcome: Outcome) -> int:
        runtime = round(time.monotonic() - self.deployed_at, 3) if self.deployed_at else None
        self.rep.emit("result", outcome.reason, ok=outcome.code == EXIT_OK, exit_code=outcome.code,
                      reason=outcome.reason, app=self.app, board=self.args.board, phase=outcome.phase,
                      error=outcome.error, runtime_s=runtime)
        return outcome.code

    def _feed(self, kind: str, source: Any) -> None:
        async def pump() -> None:
            async for item in source:
                await self.queue.put((kind, item))

        self.tasks.append(asyncio.create_task(pump(), name=f"run-feed-{kind}"))

    async def run(self) -> int:
        gw, args = self.gw, self.args
        events = gw.events_feed(history=False)
        watch = gw.watch(None, snapshot=False)
        subs: list[Any] = [events, watch]
        self._feed("event", events)
        self._feed("store", watch)
        starting: asyncio.Task[Any] | None = None
        try:
            try:
                await gw.add_board(self.caller, self.BOARD, args.board, start=False)
                if args.console:
                    console = gw.board_console(self.BOARD, replay=True)
                    subs.append(console)
                    self._feed("console", console)
                self.rep.note(f"starting a {args.board} board (firmware build if needed, boot, enrollment)")
                starting = asyncio.create_task(gw.start_board(self.caller, self.BOARD), name="run-start-board")
            except Exception as exc:
                return self.finish(Outcome(EXIT_LAB_FAILED, f"cannot add a {args.board} board: {exc}"))
            outcome = await self._until_connected(starting)
            if outcome is not None:
                return self.finish(outcome)
            outcome = await self._deploy()
            if outcome is not None:
                return self.finish(outcome)
            return self.finish(await self._follow())
        finally:
            for s in subs:
                s.close()
            for t in self.tasks:
                t.cancel()
            if starting is not None and not starting.done():
                starting.cancel()
            await asyncio.gather(*self.tasks, *([starting] if starting else []), return_exceptions=True)

    # -- phases ----------------------------------------------------------------------------------------------

    async def _next(self, deadline: float) -> tuple[str, Any] | None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        try:
            async with asyncio.timeout(remaining):
                return await self.queue.get()
        except TimeoutError:
            return None

    async def _until_connected(self, starting: asyncio.Task[Any]) -> Outcome | None:
        from wasmbed.gateway.model import DevicePhase

        deadline = time.monotonic() + self.args.boot_timeout
        while True:
            dev = self.gw.board_device(self.BOARD)
            if dev is not None and dev.phase is DevicePhase.CONNECTED:
                self.device = dev.name
                if self._changed(("device", dev.name), dev.phase.value):
                    self.rep.emit("device", f"device {dev.name} Connected", device=dev.name, board=self.BOARD,
                                  phase=dev.phase.value)
                return None
            if starting.done() and starting.exception() is not None:
                return Outcome(EXIT_LAB_FAILED, f"board {self.args.board} did not start: {starting.exception()}")
            board = self.gw.board(self.BOARD)
            if board is not None and board.status.state in ("failed", "exited"):
                why = board.status.message or board.status.state
                return Outcome(EXIT_LAB_FAILED, f"board {self.args.board} {board.status.state}: {why}")
            item = await self._next(min(deadline, time.monotonic() + 0.5))
            if item is not None:
                self._handle(*item)
            elif time.monotonic() >= deadline:
                return Outcome(EXIT_LAB_FAILED, f"board {self.args.board} did not connect within "
                               f"{self.args.boot_timeout:g} s")

    async def _deploy(self) -> Outcome | None:
        from wasmbed.gateway.model import AppLimits
        from wasmbed.gateway.validate import ValidationError

        gw = self.gw
        try:
            entry = await gw.add_app(self.caller, self.source, name=self.name)
            self.app = entry.name
            limits = AppLimits(memory_pages=self.args.memory_pages, time_budget_ms=self.args.time_budget or 1000)
            assert self.device is not None
            await gw.deploy(self.caller, entry.name, [self.device], config=self.config, limits=limits)
        except (ValidationError, ValueError) as exc:
            return Outcome(EXIT_BAD_INPUT, f"{self.args.app}: {exc}")
        except Exception as exc:
            return Outcome(EXIT_LAB_FAILED, f"deploy failed: {exc}")
        self.deployed_at = time.monotonic()
        self.rep.emit("deploy", f"deploying {entry.name} ({entry.spec.size} bytes) to {self.device}", app=entry.name,
                      device=self.device, phase="Deploying", bytes_sent=0, size=entry.spec.size, error=None)
        return None

    async def _follow(self) -> Outcome:
        assert self.deployed_at is not None
        deadline = self.deployed_at + self.args.timeout
        while True:
            item = await self._next(deadline)
            if item is None:
                break
            outcome = self._handle(*item)
            if outcome is not None:
                return outcome
        entry = self._entry()
        phase = entry.phase.value if entry is not None else None
        if phase == "Running":
            return Outcome(EXIT_OK, f"{self.app} ran {self.args.timeout:g} s on {self.args.board} without failing",
                           phase)
        if phase == "Failed":
            return Outcome(EXIT_APP_FAILED, f"{self.app} failed on {self.args.board}: {entry.error}", phase,
                           entry.error)
        return Outcome(EXIT_APP_FAILED, f"{self.app} was not running after {self.args.timeout:g} s "
                       f"(phase {phase or 'not deployed yet'})", phase, entry.error if entry else None)

    def _entry(self) -> Any:
        if self.app is None or self.device is None:
            return None
        app = self.gw.application(self.app)
        return app.status.entry(self.device) if app is not None else None

    # -- one item of a feed ------------------------------------------------------------------------------------

    def _handle(self, kind: str, item: Any) -> Outcome | None:
        from wasmbed.gateway.model import Application, Board, Device

        rep = self.rep
        if kind == "console":
            rep.emit("console", f"console| {item.text}", stream=True, board=item.board, source=item.source,
                     text=item.text)
            return None
        if kind == "event":
            if item.kind == "app.log" and self.app is not None and item.fields.get("app") == self.app \
                    and item.device == self.device:
                text = str(item.fields.get("text", item.message))
                level = str(item.fields.get("log_level", "info"))
                rep.emit("log", f"{self.app}: {text}" if level in ("info", "debug") else f"{self.app}: {level}: {text}",
                         stream=True, app=self.app, device=item.device, level=level, text=text,
                         uptime_ms=item.fields.get("uptime_ms"))
                if self.args.until and self.args.until in text:
                    return Outcome(EXIT_OK, f"{self.app} logged the done marker {self.args.until!r}", "Running")
            return None
        obj = getattr(item, "object", None)
        if isinstance(obj, Board) and obj.name == self.BOARD:
            if self._changed(("board",), obj.status.state):
                rep.emit("board", f"board {obj.status.state}", board=obj.name, type=obj.spec.board_type,
                         state=obj.status.state)
        elif isinstance(obj, Device) and obj.metadata.labels.get("wasmbed.github.io/lab-board") == self.BOARD:
            if self._changed(("device", obj.name), obj.phase.value):
                rep.emit("device", f"device {obj.name} {obj.phase.value}", device=obj.name, board=self.BOARD,
                         phase=obj.phase.value)
        elif isinstance(obj, Application) and obj.name == self.app:
            entry = obj.status.entry(self.device or "")
            if entry is None:
                return None
            state = (entry.phase.value, entry.bytes_sent, entry.error)
            if self._changed(("app",), state):
                text = f"{self.app} on {entry.device}: {entry.phase.value}"
                if entry.phase.value == "Deploying" and entry.size:
                    text += f" ({entry.bytes_sent}/{entry.size} bytes)"
                if entry.error:
                    text += f": {entry.error}"
                rep.emit("deploy", text, app=self.app, device=entry.device, phase=entry.phase.value,
                         bytes_sent=entry.bytes_sent, size=entry.size, error=entry.error)
            if entry.phase.value == "Failed":
                return Outcome(EXIT_APP_FAILED, f"{self.app} failed on {self.args.board}: {entry.error}", "Failed",
                               entry.error)
            if entry.phase.value == "Running":
                self._was_running = True
            elif entry.phase.value == "Stopped" and self._was_running and obj.spec.desired_state.value == "Running":
                return Outcome(EXIT_OK, f"{self.app} stopped by itself", "Stopped")
        return None

    def _changed(self, key: tuple[str, ...], value: Any) -> bool:
        if self._last.get(key) == value:
            return False
        self._last[key] = value
        return True
