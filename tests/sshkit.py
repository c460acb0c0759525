"""Helpers shared by test_ssh.py and test_ssh_exec.py: keys, and a lab gateway + SSH server running on a
loop thread of its own (the tests' ssh clients are blocking subprocesses)."""

from __future__ import annotations

import asyncio
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from wasmbed.console.ssh_server import ConsoleServer, load_or_create_host_key
from wasmbed.console.users import Users
from wasmbed.gateway.facade import Caller, Gateway, GatewayConfig


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
