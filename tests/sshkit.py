"""Helpers shared by the lab-mode tests (test_ssh*.py): keys, a lab gateway + SSH server running on a loop
thread of its own (the tests' ssh clients are blocking subprocesses), and :class:`SSHLab` to drive both."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pexpect

from wasmbed.console.ssh_server import ConsoleServer, Diagnostics, load_or_create_host_key
from wasmbed.console.users import Users
from wasmbed.gateway.facade import Caller, Gateway, GatewayConfig

# The real OpenSSH client, told to use nothing of this machine's configuration and never to prompt.
SSH_OPTIONS = ("-F", "/dev/null", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
               "-o", "IdentitiesOnly=yes", "-o", "PasswordAuthentication=no", "-o", "KbdInteractiveAuthentication=no",
               "-o", "BatchMode=yes", "-o", "LogLevel=ERROR")


@dataclass
class SSHLab:
    """A running server (from :func:`serve_in_thread`) and the users' keys: ssh clients and server-side reads."""

    server: ConsoleServer
    gw: Gateway
    loop: asyncio.AbstractEventLoop
    keys: dict[str, Path]
    audit: Path | None = None

    def opts(self, user: str, key: str | None = None) -> list[str]:
        """ssh arguments logging in as ``user`` with ``key``'s key (default: the user's own)."""
        return ["-p", str(self.server.port), "-i", str(self.keys[key or user]), *SSH_OPTIONS, f"{user}@127.0.0.1"]

    def ssh(self, user: str, key: str | None = None, *, rows: int = 30, cols: int = 110,
            timeout: float = 10) -> pexpect.spawn:
        """An interactive session (a PTY, TERM=xterm-256color) as ``user``."""
        return pexpect.spawn("ssh", ["-tt", *self.opts(user, key)], env={**os.environ, "TERM": "xterm-256color"},
                             encoding="utf-8", codec_errors="replace", timeout=timeout, dimensions=(rows, cols))

    def run(self, user: str, *command: str) -> subprocess.CompletedProcess[str]:
        """One exec request (``ssh HOST COMMAND``), stdin closed."""
        return subprocess.run(["ssh", "-T", *self.opts(user), *command], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=15)

    def on_loop(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn()`` on the server's loop thread and return its result."""
        async def call() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(5)

    def until(self, fn: Callable[[], Any], what: str, timeout: float) -> Any:
        """Poll ``fn()`` on the server's loop until it is true; return its value."""
        deadline = time.monotonic() + timeout
        while not (value := self.on_loop(fn)):
            assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
            time.sleep(0.05)
        return value

    def sessions(self) -> int:
        return self.on_loop(lambda: self.server.sessions)

    def diag(self) -> Diagnostics:
        return self.on_loop(self.server.diagnostics)

    def wait_idle(self, baseline: Diagnostics, timeout: float = 15) -> Diagnostics:
        """Wait until the server holds exactly what it held at ``baseline`` (no connection, session, app, task)."""
        deadline = time.monotonic() + timeout
        while True:
            d = self.diag()
            if (d.connections, d.sessions, d.execs, d.apps_alive, d.tasks) == (0, 0, 0, 0, baseline.tasks):
                return d
            assert time.monotonic() < deadline, f"server still holds something: {d} (baseline {baseline})"
            time.sleep(0.1)

    def audit_records(self) -> list[dict]:
        assert self.audit is not None
        return [json.loads(line) for line in self.audit.read_text().splitlines()]


def keygen(path: Path) -> tuple[Path, str]:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)], check=True)
    return path, (path.with_suffix(".pub")).read_text().strip()


@contextmanager
def serve_in_thread(tmp_path: Path, users: Users, make_app: Callable[[Gateway, Caller], object], *,
                    exec_api: bool = False, audit_log: Path | None = None, name: str = "ssh-lab",
                    gateway_options: Mapping[str, Any] | None = None,
                    server_options: Mapping[str, Any] | None = None,
                    ) -> Iterator[tuple[ConsoleServer, Gateway, asyncio.AbstractEventLoop]]:
    """Start a lab gateway and a ConsoleServer on 127.0.0.1:0; yield (server, gateway, loop); stop both.

    ``gateway_options``: more GatewayConfig fields (e.g. ``heartbeat_interval_s`` for QEMU boards);
    ``server_options``: more ConsoleServer arguments (e.g. ``keepalive_s``)."""
    ready = threading.Event()
    box: dict[str, object] = {}

    async def main() -> None:
        gw = Gateway(GatewayConfig(data_dir=tmp_path / "data", lab=True, lab_state_root=tmp_path / "boards",
                                   lab_log_root=tmp_path / "log", audit_log=audit_log,
                                   **dict(gateway_options or {})))
        await gw.start()
        server = ConsoleServer(users, lambda caller: make_app(gw, caller), gateway=gw if exec_api else None,
                               host_key=load_or_create_host_key(tmp_path / "ssh" / "host_key"),
                               **dict(server_options or {}))
        stop = asyncio.Event()
        try:
            await server.start("127.0.0.1", 0)
            box.update(server=server, gw=gw, loop=asyncio.get_running_loop(), stop=stop)
            ready.set()
            await stop.wait()
        finally:
            await server.stop()
            await gw.stop()

    def runner() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:
            box["error"] = exc
            ready.set()

    thread = threading.Thread(target=runner, name=name, daemon=True)
    thread.start()
    assert ready.wait(20), "server did not start"
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    loop: asyncio.AbstractEventLoop = box["loop"]  # type: ignore[assignment]
    yield box["server"], box["gw"], loop  # type: ignore[misc]
    loop.call_soon_threadsafe(box["stop"].set)  # type: ignore[union-attr]
    thread.join(15)
    assert not thread.is_alive(), "server did not stop"
    assert "error" not in box, box.get("error")
