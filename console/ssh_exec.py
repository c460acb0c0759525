"""The SSH exec API: ``ssh -p PORT alice@HOST COMMAND ...`` runs one command as alice and exits.

Commands (each takes ``--help`` and ``--json``): ``boards``, ``apps``, ``deploy APP --board NAME ...``,
``stop APP``, ``logs [--follow] [BOARD]``, ``approve DEVICE``, ``audit``, ``server`` (its diagnostics).
They go through the gateway facade with the caller's role, exactly like the console UI, so refusals are
the facade's and are audited the same way.

Output goes to the channel: results on stdout, messages on stderr. ``--json`` prints one JSON document (JSON
lines for ``logs``). Exit status: 0 ok, 1 failure, 2 usage error, 3 permission denied.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from wasmbed.gateway.events import GatewayEvent
from wasmbed.gateway.facade import Caller, Gateway, GatewayError, PermissionDenied, ValidationError
from wasmbed.gateway.model import LAB_BOARD_LABEL

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_DENIED = 3
PROG = "wasmbed"
DEFAULT_LOG_LINES = 50

EPILOG = f"""\
exit status: {EXIT_OK} ok, {EXIT_FAILED} failure, {EXIT_USAGE} usage error, {EXIT_DENIED} permission denied
example: ssh -p 2222 alice@lab deploy hello --board board-1 --json
"""

Write = Callable[[str], Any]


class _Exit(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _Parser(argparse.ArgumentParser):
    """argparse writing to the session's streams and raising instead of exiting the process."""

    def __init__(self, *args: Any, out: Write, err: Write, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._out, self._err = out, err

    def _print_message(self, message: str, file: Any = None) -> None:
        if message:
            (self._out if file is sys.stdout else self._err)(message)

    def print_help(self, file: Any = None) -> None:
        self._out(self.format_help())

    def print_usage(self, file: Any = None) -> None:
        self._err(self.format_usage())

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            self._err(message)
        raise _Exit(status)

    def error(self, message: str) -> NoReturn:
        self.print_usage()
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser(out: Write, err: Write) -> _Parser:
    def parser_class(**kw: Any) -> _Parser:
        return _Parser(out=out, err=err, formatter_class=argparse.RawDescriptionHelpFormatter, **kw)

    p = parser_class(prog=PROG, description="Commands of the wasmbed lab over SSH (non-interactive).",
                     epilog=EPILOG)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=parser_class)

    def add(name: str, help_: str) -> _Parser:
        sp: _Parser = sub.add_parser(name, help=help_, description=help_, epilog=EPILOG)
        sp.add_argument("--json", action="store_true", help="machine-readable output")
        return sp

    add("boards", "list lab boards and devices")
    add("apps", "list the app catalog and deployments")
    d = add("deploy", "deploy a catalog app to boards or devices (operator)")
    d.add_argument("app", metavar="APP", help="app name in the catalog")
    d.add_argument("--board", action="append", required=True, metavar="BOARD_OR_DEVICE", dest="boards",
                   help="target lab board or device name (repeatable)")
    d.add_argument("--config", action="append", default=[], metavar="K=V", help="app configuration (repeatable)")
    s = add("stop", "stop a deployed app on every device (operator)")
    s.add_argument("app", metavar="APP")
    lg = add("logs", "gateway events and app logs (JSON lines with --json)")
    lg.add_argument("board", nargs="?", metavar="BOARD", help="only events of this board or device")
    lg.add_argument("-f", "--follow", action="store_true", help="keep streaming until the client disconnects")
    lg.add_argument("-n", "--lines", type=int, default=DEFAULT_LOG_LINES, metavar="N",
                    help=f"recent events to print first (default {DEFAULT_LOG_LINES})")
    a = add("approve", "approve a device waiting for enrollment (admin)")
    a.add_argument("device", metavar="DEVICE", help="device name or key fingerprint")
    au = add("audit", "the audit log: who did or tried what (JSON lines with --json)")
    au.add_argument("-n", "--lines", type=int, default=DEFAULT_LOG_LINES, metavar="N",
                    help=f"last N records (default {DEFAULT_LOG_LINES})")
    add("server", "the server's diagnostics: connections, sessions, live console apps, tasks, memory")
    add("help", "show this help")
    return p


class ExecCommand:
    """One exec request: parse, run against the facade as ``caller``, write results via ``out``/``err``."""

    def __init__(self, gateway: Gateway, caller: Caller, out: Write, err: Write, *,
                 diagnostics: Callable[[], dict[str, int]] | None = None) -> None:
        self.gw, self.caller = gateway, caller
        self._out, self._err = out, err
        self._diagnostics = diagnostics

    def out(self, text: str = "") -> None:
        self._out(text + "\n")

    def err(self, text: str) -> None:
        self._err(text + "\n")

    def json(self, obj: Any) -> None:
        self.out(json.dumps(obj, default=str, ensure_ascii=False))

    async def run(self, command: str) -> int:
        parser = build_parser(self._out, self._err)
        try:
            argv = shlex.split(command)
        except ValueError as exc:
            self.err(f"{PROG}: cannot parse the command line: {exc}")
            return EXIT_USAGE
        try:
            args = parser.parse_args(argv)
        except _Exit as exc:
            return exc.status
        if args.command is None:
            parser.print_usage()
            self.err(f"{PROG}: a command is needed; see `{PROG} --help`")
            return EXIT_USAGE
        if args.command == "help":
            parser.print_help()
            return EXIT_OK
        handler = getattr(self, "cmd_" + args.command)
        try:
            return await handler(args) or EXIT_OK
        except PermissionDenied as exc:
            self.err(f"{PROG} {args.command}: permission denied: {exc}")
            return EXIT_DENIED
        except (GatewayError, ValidationError) as exc:
            self.err(f"{PROG} {args.command}: {exc}")
            return EXIT_FAILED
        except _Exit as exc:
            return exc.status

    # -- commands ----------------------------------------------------------------------------------------------

    async def cmd_boards(self, args: argparse.Namespace) -> int:
        boards = []
        for b in self.gw.boards():
            dev = self.gw.board_device(b.name)
            boards.append({"name": b.name, "type": b.spec.board_type, "state": b.status.state, "pid": b.status.pid,
                           "device": dev.name if dev else None, "phase": dev.phase.value if dev else None})
        online = set(self.gw.online())
        devices = [{"name": d.name, "board_type": d.spec.board, "phase": d.phase.value,
                    "lab_board": d.metadata.labels.get(LAB_BOARD_LABEL) if d.metadata.labels else None,
                    "online": d.name in online, "fingerprint": d.spec.public_key_fingerprint}
                   for d in self.gw.devices()]
        if args.json:
            self.json({"boards": boards, "devices": devices})
            return EXIT_OK
        self._table(["BOARD", "TYPE", "STATE", "DEVICE", "PHASE"],
                    [[b["name"], b["type"], b["state"], b["device"] or "-", b["phase"] or "-"] for b in boards],
                    empty="no lab boards")
        self.out()
        self._table(["DEVICE", "BOARD TYPE", "PHASE", "LAB BOARD"],
                    [[d["name"], d["board_type"] or "-", d["phase"], d["lab_board"] or "-"] for d in devices],
                    empty="no devices")
        return EXIT_OK

    async def cmd_apps(self, args: argparse.Namespace) -> int:
        deployed = {a.name: a for a in self.gw.applications()}
        apps = []
        for m in self.gw.apps():
            a = deployed.get(m.name)
            apps.append({
                "name": m.name, "version": m.spec.version, "size": m.spec.size, "sha256": m.spec.module_sha256,
                "added_by": m.spec.added_by,
                "deployment": None if a is None else {
                    "version": a.spec.version, "phase": a.status.phase.value,
                    "desired": a.spec.desired_state.value,
                    "devices": [{"device": e.device, "phase": e.phase.value, "error": e.error}
                                for e in a.status.devices]}})
        if args.json:
            self.json({"apps": apps})
            return EXIT_OK
        rows = []
        for x in apps:
            dep = x["deployment"]
            where = ", ".join(f"{e['device']}:{e['phase']}" for e in dep["devices"]) if dep else ""
            rows.append([x["name"], x["version"], str(x["size"]), dep["phase"] if dep else "-", where or "-"])
        self._table(["APP", "VERSION", "BYTES", "DEPLOYMENT", "DEVICES"], rows, empty="no apps in the catalog")
        return EXIT_OK

    def _target(self, name: str) -> str:
        """A lab board name becomes the device it enrolled as; anything else is taken as a device name."""
        if self.gw.device(name) is None and self.gw.board(name) is not None:
            dev = self.gw.board_device(name)
            if dev is not None:
                return dev.name
        return name

    async def cmd_deploy(self, args: argparse.Namespace) -> int:
        config = {}
        for item in args.config:
            key, sep, value = item.partition("=")
            if not sep or not key:
                self.err(f"{PROG} deploy: --config {item!r}: expected KEY=VALUE")
                return EXIT_USAGE
            config[key] = value
        targets = [self._target(b) for b in args.boards]
        app = await self.gw.deploy(self.caller, args.app, targets, config=config)
        if args.json:
            self.json({"app": app.name, "version": app.spec.version, "devices": targets,
                       "phase": app.status.phase.value})
        else:
            self.out(f"deployed {app.name} {app.spec.version} to {', '.join(targets)}")
        return EXIT_OK

    async def cmd_stop(self, args: argparse.Namespace) -> int:
        app = await self.gw.stop_app(self.caller, args.app)
        if args.json:
            self.json({"app": app.name, "phase": app.status.phase.value})
        else:
            self.out(f"stopping {app.name}")
        return EXIT_OK

    async def cmd_approve(self, args: argparse.Namespace) -> int:
        dev = await self.gw.approve(self.caller, args.device)
        if args.json:
            self.json({"device": dev.name, "phase": dev.phase.value,
                       "fingerprint": dev.spec.public_key_fingerprint})
        else:
            self.out(f"approved {dev.name} ({dev.spec.public_key_fingerprint})")
        return EXIT_OK

    async def cmd_audit(self, args: argparse.Namespace) -> int:
        if args.lines < 1:
            self.err(f"{PROG} audit: --lines must be 1 or more")
            return EXIT_USAGE
        for rec in self.gw.audit_records(args.lines):
            if args.json:
                self.json(rec)
            else:
                what = " ".join(str(x) for x in (rec.get("action"), rec.get("target")) if x)
                self.out(f"{rec.get('time')} {rec.get('user')} ({rec.get('role')}) {what}: {rec.get('result')}")
        return EXIT_OK

    async def cmd_server(self, args: argparse.Namespace) -> int:
        if self._diagnostics is None:
            self.err(f"{PROG} server: no diagnostics here")
            return EXIT_FAILED
        diag = self._diagnostics()
        if args.json:
            self.json(diag)
        else:
            self._table(["WHAT", "NOW"], [[k.replace("_", " "), str(v)] for k, v in diag.items()], empty="")
        return EXIT_OK

    async def cmd_logs(self, args: argparse.Namespace) -> int:
        if args.lines < 0:
            self.err(f"{PROG} logs: --lines must be 0 or more")
            return EXIT_USAGE
        match = self._log_filter(args.board)
        recent = [e for e in self.gw.recent_events() if match(e)]
        # Subscribe before printing (same loop turn as the read above): nothing is missed or repeated.
        feed = self.gw.events_feed(history=False) if args.follow else None
        try:
            for e in recent[-args.lines:] if args.lines else []:
                self._event(e, args.json)
            if feed is None:
                return EXIT_OK
            async for e in feed:  # ends when the client goes (the task is cancelled) or the gateway stops
                if match(e):
                    self._event(e, args.json)
            return EXIT_OK
        finally:
            if feed is not None:
                feed.close()

    def _log_filter(self, board: str | None) -> Callable[[GatewayEvent], bool]:
        if board is None:
            return lambda e: True
        names = {board}
        dev = self.gw.board_device(board) if self.gw.board(board) is not None else None
        if dev is not None:
            names.add(dev.name)

        def match(e: GatewayEvent) -> bool:
            return bool(names & {e.device, e.fields.get("device"), e.fields.get("board"), e.fields.get("target")})

        return match

    def _event(self, e: GatewayEvent, as_json: bool) -> None:
        if as_json:
            self.json({"seq": e.seq, "time": e.time.isoformat(), "level": e.level.value, "kind": e.kind,
                       "message": e.message, "device": e.device, "fields": e.fields})
        else:
            self.out(f"{e.time:%Y-%m-%d %H:%M:%S} {e.level.value:<7} {e.kind:<20} {e.message}")

    def _table(self, header: list[str], rows: list[list[str]], *, empty: str) -> None:
        if not rows:
            self.out(empty)
            return
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
        for r in [header, *rows]:
            self.out("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


async def run_exec(gateway: Gateway, caller: Caller, command: str, out: Write, err: Write, *,
                   diagnostics: Callable[[], dict[str, int]] | None = None) -> int:
    """Run one exec request; returns the exit status. Cancel the task to end ``logs --follow``."""
    try:
        return await ExecCommand(gateway, caller, out, err, diagnostics=diagnostics).run(command)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a bug: say so, keep the server serving
        err(f"{PROG}: internal error: {type(exc).__name__}: {exc}\n")
        raise
