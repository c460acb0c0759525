"""QMP client: protocol handling against a scripted fake QEMU, then the real thing."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from wasmbed.gateway.qmp import QmpClient, QmpConnectionError, QmpError, QmpTimeout

GREETING = {"QMP": {"version": {"qemu": {"major": 10, "minor": 0, "micro": 2}}, "capabilities": ["oob"]}}

Handler = Callable[[dict, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="wbq-"))  # short: sun_path is 108 bytes
    yield d
    shutil.rmtree(d, ignore_errors=True)


async def fake_qemu(path: Path, handler: Handler) -> asyncio.Server:
    """A unix-socket server that greets, demands qmp_capabilities first, then calls ``handler``."""

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(json.dumps(GREETING).encode() + b"\n")
        negotiated = False
        try:
            while line := await reader.readline():
                msg = json.loads(line)
                if not negotiated:
                    assert msg["execute"] == "qmp_capabilities", msg
                    negotiated = True
                    writer.write(json.dumps({"return": {}, "id": msg["id"]}).encode() + b"\n")
                    continue
                await handler(msg, writer)
        finally:
            writer.close()

    return await asyncio.start_unix_server(session, str(path))


def reply(writer: asyncio.StreamWriter, obj: dict) -> None:
    writer.write(json.dumps(obj).encode() + b"\n")


async def test_commands_errors_events_and_hmp(sock_dir: Path):
    path = sock_dir / "qmp.sock"
    held: list[dict] = []

    async def handler(msg: dict, w: asyncio.StreamWriter) -> None:
        cmd, args, mid = msg["execute"], msg.get("arguments", {}), msg["id"]
        if cmd == "slow":
            held.append(msg)  # answered after the next command: replies are matched by id, not order
        elif cmd == "fast":
            reply(w, {"event": "RESET", "data": {"guest": False, "reason": "host-qmp-system-reset"},
                      "timestamp": {"seconds": 1700000000, "microseconds": 250000}})
            reply(w, {"return": "fast", "id": mid})
            for h in held:
                reply(w, {"return": "slow", "id": h["id"]})
        elif cmd == "qom-get":
            reply(w, {"return": 31500 if args == {"path": "/machine/peripheral/t", "property": "temperature"}
                      else None, "id": mid})
        elif cmd == "human-monitor-command":
            assert args == {"command-line": "xp /1wx 0x203ff000"}
            reply(w, {"return": "00000000203ff000: 0x50424257\r\n", "id": mid})
        elif cmd == "never":
            pass
        else:
            reply(w, {"error": {"class": "CommandNotFound", "desc": f"The command {cmd} has not been found"},
                      "id": mid})

    server = await fake_qemu(path, handler)
    seen = []
    qmp = await QmpClient.connect(path, timeout=2, on_event=seen.append)
    try:
        assert qmp.greeting["version"]["qemu"]["major"] == 10
        slow = asyncio.create_task(qmp.execute("slow"))
        await asyncio.sleep(0.05)
        assert await qmp.execute("fast") == "fast"
        assert await slow == "slow"
        ev = await qmp.wait_event("RESET", timeout=1)
        assert ev.data["reason"] == "host-qmp-system-reset" and ev.timestamp == 1700000000.25
        assert [e.name for e in seen] == ["RESET"]
        assert await qmp.qom_get("/machine/peripheral/t", "temperature") == 31500
        assert await qmp.read_u32(0x203FF000) == int.from_bytes(b"WBBP", "little")
        with pytest.raises(QmpError) as ei:
            await qmp.execute("bogus")
        assert ei.value.error_class == "CommandNotFound" and "bogus" in ei.value.desc
        with pytest.raises(QmpTimeout):
            await qmp.execute("never", timeout=0.1)
        assert await qmp.execute("fast") == "fast"  # still usable after a timeout
        with pytest.raises(ValueError):
            await qmp.read_u32(0x203FF001)
    finally:
        await qmp.close()
        server.close()
        await server.wait_closed()
    assert not qmp.connected
    with pytest.raises(QmpConnectionError):
        await qmp.execute("fast")


async def test_connect_retries_until_socket_exists_and_reports_lost_connection(sock_dir: Path):
    path = sock_dir / "qmp.sock"
    path.touch()  # a stale file: connect gets ECONNREFUSED and retries
    calls = []

    async def handler(msg: dict, w: asyncio.StreamWriter) -> None:
        calls.append(msg["execute"])
        w.close()  # QEMU going away mid-call

    async def late_server() -> asyncio.Server:
        await asyncio.sleep(0.3)
        path.unlink()
        return await fake_qemu(path, handler)

    server_task = asyncio.create_task(late_server())
    qmp = await QmpClient.connect(path, timeout=3, retry_interval=0.02)
    server = await server_task
    try:
        with pytest.raises(QmpConnectionError):
            await qmp.execute("query-status", timeout=2)
        assert calls == ["query-status"]
        assert not qmp.connected
    finally:
        await qmp.close()
        server.close()
        await server.wait_closed()


async def test_connect_gives_up_clearly(sock_dir: Path):
    with pytest.raises(QmpConnectionError, match="no QMP socket"):
        await QmpClient.connect(sock_dir / "missing.sock", timeout=0.2)
    with pytest.raises(QmpConnectionError, match="exited"):
        await QmpClient.connect(sock_dir / "missing.sock", timeout=5, alive=lambda: False)


@pytest.mark.qemu
async def test_real_qemu_qom_hmp_and_events(sock_dir: Path):
    if shutil.which("qemu-system-arm") is None:
        pytest.skip("qemu-system-arm is not installed")
    path = sock_dir / "q.sock"
    proc = await asyncio.create_subprocess_exec(
        "qemu-system-arm", "-M", "mps2-an385", "-S", "-nodefaults", "-nographic", "-monitor", "none",
        "-device", "tmp105,id=temp0,address=0x48", "-qmp", f"unix:{path},server=on,wait=off",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        qmp = await QmpClient.connect(path, timeout=5, alive=lambda: proc.returncode is None)
        status = await qmp.execute("query-status")
        assert status["status"] == "prelaunch"
        await qmp.qom_set("/machine/peripheral/temp0", "temperature", -12250)
        assert await qmp.qom_get("/machine/peripheral/temp0", "temperature") == -12250
        with pytest.raises(QmpError) as ei:
            await qmp.qom_set("/machine/peripheral/temp0", "temperature", 200000)
        assert ei.value.error_class == "GenericError"
        assert await qmp.read_u32(0x40028000) == 0  # FPGAIO LED register, nothing lit
        await qmp.execute("system_reset")
        ev = await qmp.wait_event("RESET", timeout=5)
        assert ev.data["guest"] is False
        await qmp.execute("quit")
        assert await asyncio.wait_for(proc.wait(), 5) == 0
        await qmp.close()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
