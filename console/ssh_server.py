"""Lab mode: the console served over SSH, one app instance per session, all in one process.

``wasmbed-console serve`` runs the gateway (with its lab) and an asyncssh server. Each interactive
session gets its own :class:`~wasmbed.console.app.WasmbedApp` acting as the logged-in user (the role
comes from the users file and is enforced by the gateway facade), drawn through
:mod:`wasmbed.console.ssh_driver`. Exec requests (``ssh HOST COMMAND``) run one command of
:mod:`wasmbed.console.ssh_exec` as the user instead. Public-key authentication only; a key is bound to its
user name.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import asyncssh

from wasmbed import paths
from wasmbed.console.ssh_driver import STALL_CLOSE_S, WRITE_HIGH_WATER, WRITE_LOW_WATER, SSHTerminal, attach
from wasmbed.console.ssh_exec import run_exec
from wasmbed.console.users import User, Users, UsersError, users_path
from wasmbed.gateway.facade import Caller, Gateway, GatewayConfig

log = logging.getLogger(__name__)

DEFAULT_LISTEN = "127.0.0.1:2222"
HOST_KEY_NAME = "host_ed25519_key"
KEEPALIVE_S = 15.0  # SSH keepalive requests to idle clients...
KEEPALIVE_COUNT_MAX = 4  # ...and how many may go unanswered before the connection is closed (~60 s)
EXIT_DEFERRAL_S = 0.05  # a hang-up during the app's start-up waits for its first layout, polling this often
EXIT_DEFERRALS = 100  # ...at most this many times (5 s), then exits anyway

AppFactory = Callable[[Caller], Any]  # returns a (not yet running) WasmbedApp acting as the caller


def host_key_path() -> Path:
    return paths.data_dir() / "ssh" / HOST_KEY_NAME


def load_or_create_host_key(path: Path | None = None) -> asyncssh.SSHKey:
    """The server's host key: generated once (ed25519), kept 0600 in a 0700 folder."""
    path = path or host_key_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.exists():
        return asyncssh.read_private_key(path)
    key = asyncssh.generate_private_key("ssh-ed25519", comment="wasmbed-console")
    data = key.export_private_key()
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    return key


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"--listen {text!r}: expected HOST:PORT, e.g. {DEFAULT_LISTEN}")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


class _Session(asyncssh.SSHServerSession):
    """One SSH channel: a PTY + shell request starts an app; input, resizes and hang-up reach it."""

    def __init__(self, server: ConsoleServer, user: User) -> None:
        self._server = server
        self._user = user
        self._chan: Any = None
        self._term_type = ""
        self._size = (80, 24)
        self._pty = False
        self._terminal: SSHTerminal | None = None
        self._app: Any = None
        self._task: asyncio.Task[None] | None = None
        self._command: str | None = None  # set by an exec request (the exec API, console/ssh_exec.py)
        self._paused = False  # the client is not reading (send buffer above the high-water mark)
        self._lines_dropped = 0  # exec output dropped while paused (logs --follow to a slow client)
        self._exit_deferrals = 0

    def connection_made(self, chan: Any) -> None:
        self._chan = chan

    def pty_requested(self, term_type: str, term_size: tuple[int, int, int, int], term_modes: Any) -> bool:
        self._pty = True
        self._term_type = term_type or ""
        width, height = term_size[0], term_size[1]
        if width > 0 and height > 0:
            self._size = (width, height)
        return True

    def shell_requested(self) -> bool:
        return True

    def exec_requested(self, command: str) -> bool:
        self._command = command
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        return False

    def session_started(self) -> None:
        chan = self._chan
        chan.set_write_buffer_limits(high=self._server.write_high_water, low=self._server.write_low_water)
        if self._command is not None:
            self._start_exec(self._command)
            return
        if not self._pty:
            chan.write("wasmbed-console needs a terminal: connect with ssh -t\r\n")
            chan.exit(1)
            return
        loop = asyncio.get_running_loop()
        env = {k: v for k, v in (chan.get_environment() or {}).items() if isinstance(k, str) and isinstance(v, str)}
        peer = chan.get_extra_info("peername")
        self._terminal = SSHTerminal(chan, self._size, self._term_type, task_factory=self._server.task_factory,
                                     env=env, name=f"{self._user.name}@{peer[0] if peer else '?'}",
                                     stall_close_s=self._server.stall_close_s)
        try:
            self._app = self._server.app_factory(self._user.caller)
            self._server._apps_made.add(self._app)
            attach(self._app, self._terminal, stdout=self._server.stdout, stderr=self._server.stderr)
        except Exception:
            log.exception("cannot create the console for %s", self._user.name)
            chan.write("wasmbed-console: internal error starting the console\r\n")
            chan.exit(1)
            return
        self._task = loop.create_task(self._run(), name=f"ssh-console-{self._user.name}")
        self._server._sessions.add(self)

    def _start_exec(self, command: str) -> None:
        chan = self._chan
        if self._server.gateway is None:
            chan.write_stderr("wasmbed-console: this server offers no commands\n")
            chan.exit(1)
            return

        def write(text: str) -> None:
            if chan.is_closing():
                return
            if self._paused:  # only `logs --follow` writes this much: drop lines, say so when it drains
                self._lines_dropped += text.count("\n")
                return
            if self._lines_dropped:
                chan.write_stderr(f"wasmbed: {self._lines_dropped} lines dropped: the client read too slowly\n")
                log.warning("slow client %s: dropped %d lines of %r", self._user.name, self._lines_dropped, command)
                self._lines_dropped = 0
            chan.write(text)

        def write_err(text: str) -> None:
            if not chan.is_closing():
                chan.write_stderr(text)

        log.info("%s runs %r", self._user.name, command)
        self._task = asyncio.get_running_loop().create_task(
            self._run_exec(command, write, write_err), name=f"ssh-exec-{self._user.name}")
        self._server._execs.add(self)

    async def _run_exec(self, command: str, write: Callable[[str], None], write_err: Callable[[str], None]) -> None:
        status = 1
        try:
            status = await run_exec(self._server.gateway, self._user.caller, command, write, write_err,
                                    diagnostics=lambda: self._server.diagnostics().as_dict())
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("command %r of %s failed", command, self._user.name)
        finally:
            self._server._execs.discard(self)
            if not self._chan.is_closing():
                with contextlib.suppress(Exception):
                    self._chan.exit(status)

    async def _run(self) -> None:
        app, chan = self._app, self._chan
        status = 1
        try:
            await app.run_async(size=self._size)
            status = app.return_code or 0
        except Exception:
            log.exception("console session of %s failed", self._user.name)
        finally:
            self._server._sessions.discard(self)
            self._server._ended(self._terminal)
            if not chan.is_closing():
                with contextlib.suppress(Exception):
                    chan.exit(status)
            log.info("session of %s ended (status %s)", self._user.name, status)

    def pause_writing(self) -> None:
        self._paused = True
        if self._terminal is not None:
            self._terminal.pause()

    def resume_writing(self) -> None:
        self._paused = False
        if self._terminal is not None:
            self._terminal.resume()

    def data_received(self, data: str, datatype: Any) -> None:
        if self._terminal is not None:
            self._terminal.feed(data)

    def terminal_size_changed(self, width: int, height: int, pixwidth: int, pixheight: int) -> None:
        self._size = (width, height) if width > 0 and height > 0 else self._size
        if self._terminal is not None:
            self._terminal.resize(width, height)

    def eof_received(self) -> bool:
        if self._command is not None:
            return True  # exec: the client's stdin ended (ssh < /dev/null); the command goes on (logs --follow)
        self.hang_up()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.hang_up()

    def hang_up(self) -> None:
        """The client is gone: free the app (or end the command)."""
        if self._command is not None:
            if self._task is not None and not self._task.done():
                self._task.cancel()
            return
        app = self._app
        if app is None or self._task is None or self._task.done():
            return
        if not getattr(app, "_is_mounted", True) and self._exit_deferrals < EXIT_DEFERRALS:
            # Exiting before the app's compose and mount are done trips a Textual race (MountError, printed on
            # the server's stderr): wait for them (tens of ms, seconds when many sessions start at once).
            self._exit_deferrals += 1
            asyncio.get_running_loop().call_later(EXIT_DEFERRAL_S, self.hang_up)
            return
        with contextlib.suppress(Exception):
            app.exit()


class _Connection(asyncssh.SSHServer):
    """Per-connection authentication: public keys only, each key bound to its user name."""

    def __init__(self, server: ConsoleServer) -> None:
        self._server = server
        self._conn: Any = None
        self._user: User | None = None

    def connection_made(self, conn: Any) -> None:
        self._conn = conn
        self._server._connections.add(conn)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server._connections.discard(self._conn)

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        user = self._server.users.authorize(username, key)
        if user is None:
            peer = self._conn.get_extra_info("peername") if self._conn is not None else None
            log.info("refused key %s for user %r from %s", key.get_fingerprint(), username, peer)
            return False
        self._user = user
        return True

    def auth_completed(self) -> None:
        if self._user is not None:
            log.info("%s (%s) logged in", self._user.name, self._user.role.name.lower())

    def session_requested(self) -> Any:
        user = self._server.users.get(self._conn.get_extra_info("username")) if self._conn is not None else None
        if user is None or self._user is None or user.name != self._user.name:
            return False
        return _Session(self._server, user)


@dataclass(frozen=True)
class Diagnostics:
    """What the server holds right now: the figures a leak shows up in (``ssh HOST server``)."""

    connections: int  # SSH connections (authenticated or not)
    sessions: int  # interactive consoles running
    execs: int  # commands running (e.g. logs --follow)
    apps_alive: int  # console app objects still in memory (after a garbage collection)
    tasks: int  # asyncio tasks on the server's loop (gateway, lab and sessions together)
    frames_dropped: int  # frames not sent to slow clients, all sessions since start
    slow_closed: int  # sessions closed because the client stopped reading
    rss_bytes: int  # the process's resident memory

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class ConsoleServer:
    """The SSH front end. ``app_factory(caller)`` builds one console app per session."""

    def __init__(self, users: Users, app_factory: AppFactory, *, host_key: asyncssh.SSHKey | None = None,
                 gateway: Gateway | None = None, stall_close_s: float = STALL_CLOSE_S,
                 write_high_water: int = WRITE_HIGH_WATER, write_low_water: int = WRITE_LOW_WATER,
                 keepalive_s: float = KEEPALIVE_S, keepalive_count_max: int = KEEPALIVE_COUNT_MAX) -> None:
        self.users = users
        self.gateway = gateway  # serves exec requests (ssh HOST COMMAND); None refuses them
        self.app_factory = app_factory
        self.host_key = host_key if host_key is not None else load_or_create_host_key()
        self.stdout = sys.stdout
        self.stderr = sys.stderr
        self.task_factory: Callable[..., Any] | None = None
        self.stall_close_s = stall_close_s
        self.write_high_water, self.write_low_water = write_high_water, write_low_water
        # A client whose network vanished (no FIN, no RST) answers no keepalive: closed after interval x count.
        self.keepalive_s, self.keepalive_count_max = keepalive_s, keepalive_count_max
        self._listener: Any = None
        self._sessions: set[_Session] = set()
        self._execs: set[_Session] = set()
        self._connections: set[Any] = set()
        self._apps_made: weakref.WeakSet[Any] = weakref.WeakSet()
        self._frames_dropped = 0  # of ended sessions (live ones are added in diagnostics())
        self._slow_closed = 0
        self.host = ""
        self.port = 0

    def _ended(self, terminal: SSHTerminal | None) -> None:
        if terminal is None:
            return
        self._frames_dropped += terminal.frames_dropped
        self._slow_closed += terminal.stalled
        terminal.release()

    def diagnostics(self) -> Diagnostics:
        """Counts of everything sessions hold (call on the server's loop)."""
        gc.collect()
        live = [s._terminal for s in self._sessions if s._terminal is not None]
        return Diagnostics(
            connections=len(self._connections), sessions=len(self._sessions), execs=len(self._execs),
            apps_alive=len(self._apps_made), tasks=len(asyncio.all_tasks()),
            frames_dropped=self._frames_dropped + sum(t.frames_dropped for t in live),
            slow_closed=self._slow_closed + sum(t.stalled for t in live), rss_bytes=_rss_bytes())

    @property
    def fingerprint(self) -> str:
        return self.host_key.get_fingerprint("sha256")

    @property
    def sessions(self) -> int:
        return len(self._sessions)

    @property
    def apps(self) -> list[Any]:
        """The running session apps (read them on the server's loop only)."""
        return [s._app for s in self._sessions if s._app is not None]

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.task_factory = asyncio.get_running_loop().get_task_factory()
        self.stdout, self.stderr = sys.stdout, sys.stderr
        self._listener = await asyncssh.create_server(
            lambda: _Connection(self), host, port, server_host_keys=[self.host_key], encoding="utf-8",
            line_editor=False, allow_pty=True, agent_forwarding=False, x11_forwarding=False,
            keepalive_interval=self.keepalive_s, keepalive_count_max=self.keepalive_count_max)
        sock = self._listener.sockets[0].getsockname()
        self.host, self.port = sock[0], sock[1]

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
            with contextlib.suppress(Exception):
                await self._listener.wait_closed()
            self._listener = None
        sessions = list(self._sessions) + list(self._execs)
        for s in sessions:
            s.hang_up()
        tasks = [s._task for s in sessions if s._task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        for conn in list(self._connections):
            conn.close()
        for conn in list(self._connections):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.wait_closed(), 2)

    async def __aenter__(self) -> ConsoleServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


# -- wasmbed-console serve --------------------------------------------------------------------------------

SERVE_EPILOG = """\
Serves the console over SSH: every interactive session gets its own console acting as the logged-in user.
Public-key authentication only. The users file (default {users}) binds names, roles and keys:

  [[user]]
  name = "alice"
  role = "operator"        # viewer | operator | admin
  keys = ["ssh-ed25519 AAAA... alice@laptop"]

The host key is generated on first start in <data dir>/ssh/ and its fingerprint printed.
Connect with: ssh -p PORT alice@HOST   (quit with ctrl+q)
Commands without the UI: ssh -p PORT alice@HOST help   (boards, apps, deploy, stop, logs, approve, audit, server)
"""


def serve_parser() -> argparse.ArgumentParser:
    from wasmbed.console import cli

    p = cli.parser()
    p.prog = "wasmbed-console serve"
    p.description = "Lab mode: the gateway, its lab and the console served over SSH."
    p.epilog = SERVE_EPILOG.format(users=users_path())
    p.add_argument("--listen", default=DEFAULT_LISTEN, metavar="HOST:PORT",
                   help=f"SSH listen address (default {DEFAULT_LISTEN}; port 0 picks a free one)")
    p.add_argument("--users", type=Path, metavar="FILE", help=f"users file (default {users_path()})")
    return p


async def serve(cfg: Any, gateway_config: GatewayConfig, users: Users, listen: tuple[str, int],
                stop: asyncio.Event | None = None) -> int:
    from wasmbed.console import cli
    from wasmbed.console.app import WasmbedApp
    from wasmbed.console.themes import load_themes

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    gw = await cli.start_gateway(gateway_config, "wasmbed-console serve")
    if gw is None:
        return 1
    starts: list[asyncio.Task[None]] = []
    server: ConsoleServer | None = None
    try:
        owner = cli.local_caller()
        with contextlib.suppress(Exception):
            for name in await cli.add_first_run_boards(gw, owner, cfg.lab_boards):
                starts.append(asyncio.create_task(cli._start_quietly(gw, owner, name), name=f"first-start-{name}"))
        themes, problems = load_themes(paths.config_dir() / "themes")

        def make_app(caller: Caller) -> WasmbedApp:
            return WasmbedApp(gw, caller, themes=themes, theme=cfg.theme, theme_problems=problems)

        server = ConsoleServer(users, make_app, gateway=gw)
        try:
            await server.start(*listen)
        except OSError as exc:
            print(f"wasmbed-console serve: cannot listen on {listen[0]}:{listen[1]}: {exc}", file=sys.stderr)
            return 1
        print(f"wasmbed-console serve: listening on {server.host}:{server.port} "
              f"({len(users)} users); host key {server.fingerprint}", flush=True)
        await stop.wait()
        return 0
    finally:
        if server is not None:
            await server.stop()
        await cli.stop_gateway(gw, starts)


def serve_main(argv: list[str]) -> int:
    from wasmbed.console import cli
    from wasmbed.console.config import ConfigError, load_config

    args = serve_parser().parse_args(argv)
    if args.list_themes:
        return cli.main(["--list-themes"])
    try:
        if args.config is not None and not args.config.is_file():
            raise ConfigError(f"--config {args.config}: no such file")
        cfg = cli.apply_flags(load_config(args.config), args)
        listen = parse_listen(args.listen)
        users = Users.load(args.users or users_path())
    except (ConfigError, UsersError, ValueError) as exc:
        print(f"wasmbed-console serve: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(filename=paths.log_dir() / "console-serve.log", level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    gcfg = GatewayConfig(port=cfg.port, heartbeat_interval_s=cfg.heartbeat_interval_s,
                         unreachable_timeout_s=cfg.unreachable_timeout_s, pairing_mode=cfg.pairing_mode, lab=True)
    return asyncio.run(serve(cfg, gcfg, users, listen))
