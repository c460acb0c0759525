"""wasmbed-console: the keyboard-driven control console for a wasmbed fleet.

One process runs the resource store, the gateway (mutual-TLS listener for devices), the lab (emulated
boards in QEMU) and this terminal UI. On a fresh machine it adds the default lab board(s), builds their
firmware (the first build can take ~30 s) and boots them; you see them enroll and connect.

keys (also listed in the footer, by ? and in the command palette):
  :boards :apps :logs :enroll   jump to a view        ?        key help
  enter  open (board detail)    esc    back           /        filter / search
  n      add a board            s      start          S or x   stop
  r      reset                  ctrl+d delete (asks)  t        set temperature (detail)
  a / d  approve / reject (:enroll)  p pairing mode  f       follow/pause (logs, console)
  b / l  source / level filter  ctrl+t next theme     ctrl+p   command palette
  ctrl+q quit (stops the lab boards)

lab mode: `wasmbed-console serve [--listen HOST:PORT] [--users FILE]` serves this console over SSH
(one console per session, public-key users with roles; see `wasmbed-console serve -h`).

apps view (:apps; the example apps are added to an empty catalog):
  a      add a .wasm/.wat (or example name)   d or enter  deploy: space marks boards (or a label selector),
  s / S  stop / start the app                            optional config k=v, enter confirms; live progress
  u      update to a new module               ctrl+d undeploy (asks)   p  progress   tab  catalog/deployments
A target board that is not connected shows "waiting for device": it gets the app when it connects.

configuration: CONFIG (see --config) holds theme, [gateway] port/heartbeat_interval_s/
unreachable_timeout_s/pairing_mode and [lab] boards (added on first run); flags override it.
Themes: the shipped ones plus <config dir>/themes/*.toml (copy one from the wasmbed.themes package).
Files: WASMBED_DATA_DIR, WASMBED_CONFIG_DIR, WASMBED_LOG_DIR, WASMBED_CACHE_DIR override the locations.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import logging
import sys
from pathlib import Path

from wasmbed import paths
from wasmbed.console.config import ConfigError, ConsoleConfig, LabBoard, config_path, load_config, save_theme
from wasmbed.console.themes import load_themes
from wasmbed.dts import board_names
from wasmbed.gateway.facade import Caller, Gateway, GatewayConfig, Role


def local_caller() -> Caller:
    """The person at this terminal: the installation's owner, so admin."""
    try:
        user = getpass.getuser()
    except Exception:
        user = "local"
    return Caller(user, Role.ADMIN)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="wasmbed-console", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, metavar="FILE",
                   help=f"configuration file (default: {config_path()})")
    p.add_argument("--port", type=int, help="device TLS listener port (0: any free port)")
    p.add_argument("--heartbeat-interval", type=int, metavar="S", help="device heartbeat interval, seconds")
    p.add_argument("--unreachable-timeout", type=int, metavar="S",
                   help="seconds without heartbeat before a device is Unreachable")
    p.add_argument("--pairing", action=argparse.BooleanOptionalAction, default=None,
                   help="start with pairing mode on (unknown device keys wait for approval)")
    p.add_argument("--theme", help="colour theme for this run (ctrl+t switches; the choice is saved)")
    p.add_argument("--board", action="append", metavar="NAME=TYPE", default=None,
                   help=f"first-run lab board (repeatable; replaces [lab] boards). Types: {', '.join(board_names())}")
    p.add_argument("--list-themes", action="store_true", help="print the available themes and exit")
    return p


def apply_flags(cfg: ConsoleConfig, args: argparse.Namespace) -> ConsoleConfig:
    if args.port is not None:
        cfg.port = args.port
    if args.heartbeat_interval is not None:
        cfg.heartbeat_interval_s = args.heartbeat_interval
    if args.unreachable_timeout is not None:
        cfg.unreachable_timeout_s = args.unreachable_timeout
    if args.pairing is not None:
        cfg.pairing_mode = args.pairing
    if args.theme:
        cfg.theme = args.theme
    if args.board:
        cfg.lab_boards = []
        for item in args.board:
            name, sep, btype = item.partition("=")
            if not sep or not name or not btype:
                raise ConfigError(f"--board {item!r}: expected NAME=TYPE, e.g. board-1=mps2-an385")
            cfg.lab_boards.append(LabBoard(name, btype))
    return cfg.validate()


async def add_first_run_boards(gw: Gateway, caller: Caller, boards: list[LabBoard]) -> list[str]:
    """On an empty lab, add the configured boards (not started: the caller starts them in the background)."""
    if gw.boards():
        return []
    added = []
    for b in boards:
        await gw.add_board(caller, b.name, b.type, start=False)
        added.append(b.name)
    return added


async def _start_quietly(gw: Gateway, caller: Caller, name: str) -> None:
    # A failure is shown by the board's state, its console and a gateway event (board.failed).
    with contextlib.suppress(Exception):
        await gw.start_board(caller, name)


async def start_gateway(config: GatewayConfig, prog: str) -> Gateway | None:
    """Start the gateway the console runs over; on failure say why on stderr (as ``prog``) and return None."""
    gw = Gateway(config)
    try:
        await gw.start()
    except Exception as exc:
        print(f"{prog}: cannot start the gateway: {exc}", file=sys.stderr)
        with contextlib.suppress(Exception):
            await gw.stop()
        return None
    return gw


async def stop_gateway(gw: Gateway, starts: list[asyncio.Task[None]]) -> None:
    """Cancel the first-run board starts still going, then stop the gateway (and its lab)."""
    for t in starts:
        t.cancel()
    await asyncio.gather(*starts, return_exceptions=True)
    await gw.stop()


async def run(cfg: ConsoleConfig, gateway_config: GatewayConfig) -> int:
    from wasmbed.console.app import WasmbedApp

    gw = await start_gateway(gateway_config, "wasmbed-console")
    if gw is None:
        return 1
    caller = local_caller()
    starts: list[asyncio.Task[None]] = []
    try:
        notices = []
        try:
            first = await add_first_run_boards(gw, caller, cfg.lab_boards)
        except Exception as exc:
            first = []
            notices.append(f"could not add the default lab boards: {exc}")
        for name in first:
            starts.append(asyncio.create_task(_start_quietly(gw, caller, name), name=f"first-start-{name}"))
        if first:
            notices.append(f"first run: added {', '.join(first)}; building firmware and booting "
                           "(the first build can take ~30 s)")
        themes, problems = load_themes(paths.config_dir() / "themes")
        path = cfg.path or config_path()
        app = WasmbedApp(gw, caller, themes=themes, theme=cfg.theme, theme_problems=problems,
                         on_theme_change=lambda name: save_theme(path, name), notices=notices)
        await app.run_async()
        return app.return_code or 0
    finally:
        await stop_gateway(gw, starts)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:  # lab mode: the console served over SSH (see `wasmbed-console serve -h`)
        from wasmbed.console.ssh_server import serve_main

        return serve_main(argv[1:])
    args = parser().parse_args(argv)
    if args.list_themes:
        themes, problems = load_themes(paths.config_dir() / "themes")
        for t in themes:
            print(t.name)
        for p in problems:
            print(f"skipped: {p}", file=sys.stderr)
        return 0
    try:
        if args.config is not None and not args.config.is_file():
            raise ConfigError(f"--config {args.config}: no such file")
        cfg = apply_flags(load_config(args.config), args)
    except ConfigError as exc:
        print(f"wasmbed-console: {exc}", file=sys.stderr)
        return 2
    log_file = paths.log_dir() / "console.log"
    logging.basicConfig(filename=log_file, level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    gcfg = GatewayConfig(port=cfg.port, heartbeat_interval_s=cfg.heartbeat_interval_s,
                         unreachable_timeout_s=cfg.unreachable_timeout_s, pairing_mode=cfg.pairing_mode, lab=True)
    return asyncio.run(run(cfg, gcfg))


if __name__ == "__main__":
    sys.exit(main())
