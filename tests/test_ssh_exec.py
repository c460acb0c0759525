"""The SSH exec API (`ssh HOST COMMAND`) and the audit log, driven by the real OpenSSH client."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import require_tools
from consolekit import make_device
from sshkit import SSHLab, keygen, serve_in_thread

from wasmbed.console.ssh_exec import ExecCommand
from wasmbed.console.users import Users
from wasmbed.gateway.facade import SYSTEM, Caller, Gateway, GatewayConfig, PermissionDenied, Role
from wasmbed.gateway.model import DevicePhase

REPO = Path(__file__).resolve().parents[1]


ExecLab = SSHLab


@pytest.fixture
def xlab(tmp_path: Path) -> Iterator[ExecLab]:
    require_tools("ssh", "ssh-keygen")
    keys = {name: keygen(tmp_path / f"id_{name}")[0] for name in ("alice", "bob", "carol")}
    roles = {"alice": "operator", "bob": "viewer", "carol": "admin"}
    users = Users.from_mapping({"user": [
        {"name": n, "role": roles[n], "keys": [(tmp_path / f"id_{n}.pub").read_text().strip()]} for n in keys]})
    audit = tmp_path / "log" / "audit.log"
    with serve_in_thread(tmp_path, users, lambda gw, caller: None, exec_api=True, audit_log=audit,
                         name="ssh-exec-lab") as (server, gw, loop):
        yield ExecLab(server, gw, loop, keys, audit)


def test_boards_and_apps_json(xlab: ExecLab) -> None:
    xlab.on_loop(lambda: make_device(xlab.gw, "sim-1", DevicePhase.DISCONNECTED))
    r = xlab.run("bob", "boards", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["boards"] == [] and [d["name"] for d in doc["devices"]] == ["sim-1"]
    r = xlab.run("bob", "boards")
    assert r.returncode == 0 and "no lab boards" in r.stdout and "sim-1" in r.stdout
    r = xlab.run("bob", "apps", "--json")
    assert r.returncode == 0 and json.loads(r.stdout) == {"apps": []}


def test_viewer_refused_and_audited(xlab: ExecLab) -> None:
    r = xlab.run("bob", "deploy", "hello", "--board", "sim-1")
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert "bob (viewer) may not deploy app hello: needs operator" in r.stderr and r.stdout == ""
    r = xlab.run("bob", "approve", "newcomer", "--json")
    assert r.returncode == 3 and "may not approve enrollments: needs admin" in r.stderr
    records = xlab.audit_records()
    assert [(x["user"], x["role"], x["action"], x["target"], x["result"]) for x in records] == [
        ("bob", "viewer", "deploy", "hello", "denied"), ("bob", "viewer", "approve", "newcomer", "denied")]
    assert all(x["time"].endswith("Z") for x in records)
    assert stat.S_IMODE(xlab.audit.stat().st_mode) == 0o600
    kinds = xlab.on_loop(lambda: [e.fields["action"] for e in xlab.gw.recent_events() if e.kind == "audit.denied"])
    assert kinds == ["deploy", "approve"]
    # the audit log over ssh: the same records, as text or JSON lines
    r = xlab.run("bob", "audit", "--json", "-n", "1")
    assert r.returncode == 0 and [json.loads(line) for line in r.stdout.splitlines()] == records[-1:]
    r = xlab.run("bob", "audit")
    assert r.returncode == 0 and "bob (viewer) deploy hello: denied" in r.stdout.splitlines()[0]
    assert xlab.run("bob", "audit", "-n", "0").returncode == 2


def test_operator_deploy_stop_and_errors(xlab: ExecLab) -> None:
    async def setup() -> None:
        make_device(xlab.gw, "sim-1", DevicePhase.DISCONNECTED)
        await xlab.gw.add_app(SYSTEM, REPO / "apps" / "hello.wat", name="hello")

    asyncio.run_coroutine_threadsafe(setup(), xlab.loop).result(10)
    r = xlab.run("alice", "stop", "nosuch")
    assert r.returncode == 1 and "app 'nosuch' is not deployed" in r.stderr, (r.stdout, r.stderr)
    r = xlab.run("alice", "deploy", "hello", "--board", "sim-1", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["devices"] == ["sim-1"]
    r = xlab.run("alice", "stop", "hello")
    assert r.returncode == 0 and "stopping hello" in r.stdout
    r = xlab.run("alice", "apps", "--json")
    (app,) = json.loads(r.stdout)["apps"]
    assert app["name"] == "hello" and app["deployment"]["desired"] == "Stopped"
    results = [(x["user"], x["action"], x["target"], x["result"]) for x in xlab.audit_records()]
    assert results == [("system", "add app", "hello", "ok"),
                       ("alice", "stop app", "nosuch", "error: app 'nosuch' is not deployed"),
                       ("alice", "deploy", "hello", "ok"), ("alice", "stop app", "hello", "ok")]


def test_admin_approves(xlab: ExecLab) -> None:
    xlab.on_loop(lambda: make_device(xlab.gw, "newcomer", DevicePhase.ENROLLING))
    r = xlab.run("carol", "approve", "newcomer", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["phase"] == "Enrolled"


def test_logs_json_and_follow(xlab: ExecLab) -> None:
    xlab.run("bob", "stop", "x")  # a refusal: an audit.denied event
    r = xlab.run("bob", "logs", "--json")
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in r.stdout.splitlines()]
    kinds = [e["kind"] for e in events]
    assert "gateway.started" in kinds and kinds[-1] == "audit.denied"
    assert events[-1]["fields"]["user"] == "bob"
    follow = subprocess.Popen(["ssh", "-T", *xlab.opts("bob"), "logs", "--follow", "--json", "-n", "0"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while not xlab.on_loop(lambda: len(xlab.server._execs)):
            assert time.monotonic() < deadline, "logs --follow did not start"
            time.sleep(0.05)
        xlab.on_loop(lambda: xlab.gw.events.emit("test.hello", "hello from the test"))
        assert follow.stdout is not None
        line = json.loads(follow.stdout.readline())
        assert line["kind"] == "test.hello" and line["message"] == "hello from the test"
    finally:
        follow.terminate()  # the client goes away: the command ends on the server
        follow.wait(5)
    deadline = time.monotonic() + 5
    while xlab.on_loop(lambda: len(xlab.server._execs)):
        assert time.monotonic() < deadline, "the follow command outlived its client"
        time.sleep(0.05)


def test_usage_errors_and_help(xlab: ExecLab) -> None:
    r = xlab.run("alice", "frobnicate")
    assert r.returncode == 2 and "invalid choice: 'frobnicate'" in r.stderr
    r = xlab.run("alice", "deploy", "hello")  # --board missing
    assert r.returncode == 2 and "--board" in r.stderr
    r = xlab.run("alice", "logs", "--help")
    assert r.returncode == 0 and "--follow" in r.stdout
    r = xlab.run("alice", "help")
    assert r.returncode == 0 and "deploy" in r.stdout and "permission denied" in r.stdout


async def test_exec_command_in_process(tmp_path: Path) -> None:
    """The command layer alone (no SSH): the local caller's actions are audited too."""
    audit = tmp_path / "audit.log"
    async with Gateway(GatewayConfig(data_dir=tmp_path / "data", audit_log=audit)) as gw:
        out: list[str] = []
        err: list[str] = []
        viewer = Caller("vera", Role.VIEWER)
        assert await ExecCommand(gw, viewer, out.append, err.append).run("approve dev") == 3
        with pytest.raises(PermissionDenied):
            await gw.set_pairing_mode(viewer, True)
        await gw.set_pairing_mode(Caller("ada", Role.ADMIN), True)
        assert await ExecCommand(gw, viewer, out.append, err.append).run("boards 'unclosed") == 2
    results = [(x["user"], x["action"], x["result"]) for x in map(json.loads, audit.read_text().splitlines())]
    assert results == [("vera", "approve", "denied"), ("vera", "set pairing mode", "denied"),
                       ("ada", "set pairing mode", "ok")]
    assert os.stat(audit).st_mode & 0o077 == 0


def test_server_diagnostics(xlab: ExecLab) -> None:
    """`ssh HOST server --json`: the server's own counts, the exec session itself included."""
    r = xlab.run("bob", "server", "--json")
    assert r.returncode == 0, r.stderr
    diag = json.loads(r.stdout)
    assert set(diag) == {"connections", "sessions", "execs", "apps_alive", "tasks", "frames_dropped", "slow_closed",
                         "rss_bytes"}
    assert diag["connections"] == 1 and diag["execs"] == 1 and diag["sessions"] == 0 and diag["apps_alive"] == 0
    assert diag["tasks"] > 0 and diag["rss_bytes"] > 10 * 1024 * 1024
    r = xlab.run("bob", "server")
    assert r.returncode == 0 and "apps alive" in r.stdout


def test_slow_log_follower_drops_lines_and_says_so(xlab: ExecLab) -> None:
    """`logs --follow` to a client that stops reading: lines are dropped once its send buffer is full (memory
    stays bounded), and when it reads again it is told how many."""
    from wasmbed.gateway.events import EventLevel

    follow = subprocess.Popen(["ssh", "-T", *xlab.opts("bob"), "logs", "--follow", "-n", "0"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert follow.stdout is not None and follow.stderr is not None
    reader = threading.Thread(target=follow.stdout.read, daemon=True)  # a terminal reading, once it runs
    reader.start()
    try:
        xlab.until(lambda: xlab.server.diagnostics().execs == 1, "the follower running", 10)
        os.kill(follow.pid, signal.SIGSTOP)

        def flood() -> bool:
            for i in range(2000):
                xlab.gw.events.emit("test.flood", f"line {i} " + "x" * 200, level=EventLevel.INFO)
            return any(s._paused for s in xlab.server._execs)

        xlab.until(flood, "the follower's send buffer full", 60)
        xlab.on_loop(flood)  # these are dropped
        os.kill(follow.pid, signal.SIGCONT)
        time.sleep(0.5)
        xlab.until(lambda: not any(s._paused for s in xlab.server._execs), "the follower reading again", 30)
        xlab.on_loop(lambda: xlab.gw.events.emit("test.after", "after the flood", level=EventLevel.INFO))
        deadline = time.monotonic() + 20
        err = ""
        while "lines dropped" not in err:
            assert time.monotonic() < deadline, "the follower was not told about the dropped lines"
            err += os.read(follow.stderr.fileno(), 65536).decode()
        assert re.search(r"wasmbed: \d+ lines dropped: the client read too slowly", err), err
    finally:
        os.kill(follow.pid, signal.SIGCONT)
        follow.kill()
        follow.communicate(timeout=10)
