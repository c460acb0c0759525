"""Lab mode acceptance against a real QEMU board: two users on the console over SSH (the real OpenSSH client).

alice (operator) deploys hello to a QEMU mps2-an385 board by keys; bob (viewer), on the apps view meanwhile,
sees it Running within 1 s of the gateway's store saying so; bob's deploy is refused in the UI and through
``ssh bob@lab deploy``, and both refusals are in the audit log.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pexpect
import pyte
import pytest
from conftest import require_tools
from sshkit import SSHLab, keygen, serve_in_thread

from wasmbed.console.users import Users
from wasmbed.gateway.facade import SYSTEM, Gateway
from wasmbed.gateway.model import AppDevicePhase, Application, DevicePhase

pytestmark = pytest.mark.qemu
ROWS, COLS = 30, 110
BOARD = "board-1"
LATENCY_S = 1.0


class Term:
    """A pexpect-driven ssh client whose output a reader thread feeds into a pyte screen, as it arrives.

    ``when(pred)`` registers a condition on the screen's lines; the time (monotonic) of the first read
    after which it holds is recorded, however busy the test thread is meanwhile."""

    def __init__(self, child: pexpect.spawn, name: str) -> None:
        self.child = child
        self.name = name
        self.screen = pyte.Screen(COLS, ROWS)
        self.stream = pyte.Stream(self.screen)
        self.lock = threading.Lock()
        self.eof = threading.Event()
        self._watches: list[tuple[Callable[[list[str]], bool], list[float]]] = []
        self._thread = threading.Thread(target=self._pump, name=f"term-{name}", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        while True:
            try:
                data = self.child.read_nonblocking(65536, timeout=0.1)
            except pexpect.TIMEOUT:
                continue
            except (pexpect.EOF, OSError, ValueError):
                self.eof.set()
                return
            now = time.monotonic()
            with self.lock:
                self.stream.feed(data)
                lines = self.screen.display
                for pred, box in self._watches:
                    if not box and pred(lines):
                        box.append(now)

    def lines(self) -> list[str]:
        with self.lock:
            return list(self.screen.display)

    def text(self) -> str:
        return "\n".join(line.rstrip() for line in self.lines())

    def when(self, pred: Callable[[list[str]], bool]) -> list[float]:
        """Record when ``pred(lines)`` first holds (from now on): the returned list gets that time."""
        box: list[float] = []
        with self.lock:
            if pred(self.screen.display):
                box.append(time.monotonic())
            self._watches.append((pred, box))
        return box

    def wait(self, pred: Callable[[str], bool], what: str, timeout: float = 10) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.text()
            if pred(text):
                return text
            if self.eof.is_set() or time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: timed out waiting for {what}; screen:\n{text}")
            time.sleep(0.02)

    def wait_text(self, *texts: str, timeout: float = 10) -> str:
        return self.wait(lambda s: all(t in s for t in texts), repr(texts), timeout)

    def send(self, keys: str) -> None:
        self.child.send(keys)

    def quit(self) -> None:
        self.send("\x11")  # ctrl+q
        assert self.eof.wait(10), f"{self.name}: the session did not end after ctrl+q; screen:\n{self.text()}"
        self._thread.join(5)
        self.child.close()
        assert self.child.exitstatus == 0, (self.child.exitstatus, self.child.signalstatus)


class QemuLab(SSHLab):
    def console(self, user: str) -> Term:
        return Term(self.ssh(user, rows=ROWS, cols=COLS), user)

    def selected(self, user: str) -> str | None:
        """The app highlighted in ``user``'s apps view (of the focused table). Call it on the server's loop."""
        (app,) = [a for a in self.server.apps if a.caller.user == user]
        return getattr(app.screen, "selected_app", lambda: None)()


@pytest.fixture
def qlab(tmp_path: Path, firmware_builder) -> Iterator[QemuLab]:
    require_tools("ssh", "ssh-keygen", "qemu-system-arm")
    from wasmbed.console.app import WasmbedApp

    firmware_builder("mps2-an385")
    keys = {name: keygen(tmp_path / f"id_{name}")[0] for name in ("alice", "bob")}
    roles = {"alice": "operator", "bob": "viewer"}
    users = Users.from_mapping({"user": [
        {"name": n, "role": roles[n], "keys": [(tmp_path / f"id_{n}.pub").read_text().strip()]} for n in keys]})
    audit = tmp_path / "log" / "audit.log"
    # As `wasmbed-console serve` builds its apps: the examples are offered to an operator on the first :apps.
    with serve_in_thread(tmp_path, users, lambda gw, caller: WasmbedApp(gw, caller), exec_api=True,
                         audit_log=audit, name="ssh-lab-qemu",
                         gateway_options={"heartbeat_interval_s": 1, "unreachable_timeout_s": 3}) as (
            server, gw, loop):
        yield QemuLab(server, gw, loop, keys, audit)


def deployment_running(lines: list[str]) -> bool:
    """bob's deployments table shows hello's row on board-1 with the device's phase Running."""
    return any(re.search(rf"\bhello\b.*\b{BOARD}\b.*\bRunning\b", line) for line in lines)


def toasts(screen: str) -> str:
    """The text of the notifications on a screen (right of their "▌" gutter), wrapped lines joined."""
    return " ".join(line.partition("▌")[2].strip() for line in screen.splitlines() if "▌" in line).strip()


async def store_running(gw: Gateway) -> float:
    """The moment (monotonic) the store says hello runs on board-1's device."""
    with gw.watch(Application, snapshot=True) as w:
        async for _ev in w:  # each change of an Application (the first: the current ones)
            dev = gw.board_device(BOARD)
            app = gw.application("hello")
            entry = app.status.entry(dev.name) if app is not None and dev is not None else None
            if entry is not None and entry.phase is AppDevicePhase.RUNNING:
                return time.monotonic()
    raise AssertionError("the watch ended")


def test_operator_deploys_viewer_sees_running_and_is_refused(qlab: QemuLab) -> None:
    started = time.monotonic()
    booting = asyncio.run_coroutine_threadsafe(qlab.gw.add_board(SYSTEM, BOARD, "mps2-an385"), qlab.loop)
    running_at = asyncio.run_coroutine_threadsafe(store_running(qlab.gw), qlab.loop)
    alice, bob = qlab.console("alice"), qlab.console("bob")
    try:
        alice.wait_text("lab boards", "alice (operator)")
        bob.wait_text("lab boards", "bob (viewer)")
        assert qlab.on_loop(lambda: qlab.server.sessions) == 2
        bob.send(":")
        bob.wait_text("boards | apps | logs | enroll")
        bob.send("apps\r")
        bob.wait_text("Catalog", "Deployments")
        booting.result(30)
        dev = qlab.until(lambda: (d := qlab.gw.board_device(BOARD)) is not None and d.phase is DevicePhase.CONNECTED
                         and d, f"{BOARD} connected", 30)
        print(f"\n{BOARD} connected as {dev.name} after {time.monotonic() - started:.1f} s")
        bob_saw = bob.when(deployment_running)

        # alice: the apps view (its first visit adds the example apps), then hello by its example name
        alice.send(":")
        alice.wait_text("boards | apps | logs | enroll")
        alice.send("apps\r")
        qlab.until(lambda: qlab.gw.app("hello") is not None, "the example apps in the catalog", 20)
        alice.wait_text("Catalog", "Deployments")
        alice.send("a")
        alice.wait_text("Add an app to the catalog")
        alice.send("hello\r")
        alice.wait_text("app hello added to the catalog")
        qlab.until(lambda: qlab.selected("alice") == "hello", "hello highlighted in alice's catalog", 5)
        alice.send("d")
        alice.wait_text("Deploy hello", "space marks boards")
        alice.send(" ")
        alice.wait(lambda s: re.search(rf"✓ +{BOARD} \(", s) is not None, f"{BOARD} marked")
        alice.send("\r")
        alice.wait(lambda s: re.search(rf"Deploy hello .* to {BOARD}", s) is not None, "the confirmation")
        alice.send("\r")
        alice.wait_text("1 running, 0 failed", timeout=20)  # the progress dialog's summary
        t_store = running_at.result(5)
        alice.send("\x1b")
        alice.wait(lambda s: "esc closes" not in s, "the progress dialog closed")

        # bob saw it in his deployments table
        bob.wait(lambda _s: bool(bob_saw), "hello Running on bob's screen", timeout=5)
        latency = bob_saw[0] - t_store
        print(f"store Running at {t_store - started:.3f} s, bob's screen at {bob_saw[0] - started:.3f} s: "
              f"bob sees it {latency * 1000:.0f} ms later")
        assert latency < LATENCY_S, f"bob saw hello Running {latency:.3f} s after the store"

        # bob's deploy of hello (highlighted in the deployments table) is refused in the UI ...
        bob.send("\t")  # to the deployments table: hello's row is highlighted
        qlab.until(lambda: qlab.selected("bob") == "hello", "hello highlighted in bob's deployments", 5)
        bob.send("d")
        refused = bob.wait(lambda s: "deploy app hello failed" in toasts(s), "the refusal", timeout=5)
        assert "deploy app hello failed bob (viewer) may not deploy app hello: needs operator" in toasts(refused), (
            refused)
        # ... and through the exec API
        r = qlab.run("bob", "deploy", "hello", "--board", BOARD)
        assert r.returncode == 3, (r.stdout, r.stderr)
        assert "permission denied" in r.stderr and "bob (viewer) may not deploy app hello: needs operator" in r.stderr
        assert r.stdout == ""
        assert qlab.on_loop(lambda: qlab.gw.application("hello").status.entry(dev.name).phase) is (
            AppDevicePhase.RUNNING)

        deploys = [(x["user"], x["role"], x["target"], x["result"]) for x in qlab.audit_records()
                   if x["action"] == "deploy"]
        assert deploys == [("alice", "operator", "hello", "ok"), ("bob", "viewer", "hello", "denied"),
                           ("bob", "viewer", "hello", "denied")], deploys

        alice.quit()
        bob.quit()
        qlab.until(lambda: qlab.server.sessions == 0, "no sessions left", 5)
        print(f"wall {time.monotonic() - started:.1f} s")
    finally:
        running_at.cancel()
        for t in (alice, bob):
            if t.child.isalive():
                t.child.close(force=True)


def test_exec_deploy_and_logs_follow_show_the_apps_output(qlab: QemuLab) -> None:
    """The scripting API alone: `logs --follow BOARD` streams what hello prints on the QEMU board after
    `deploy hello --board BOARD`; exit codes are right; ending the follower frees its command."""
    from wasmbed.gateway.examples import APPS_DIR

    asyncio.run_coroutine_threadsafe(qlab.gw.add_board(SYSTEM, BOARD, "mps2-an385"), qlab.loop).result(30)
    asyncio.run_coroutine_threadsafe(qlab.gw.add_app(SYSTEM, APPS_DIR / "hello.wat", name="hello"),
                                     qlab.loop).result(30)
    qlab.until(lambda: (d := qlab.gw.board_device(BOARD)) is not None and d.phase is DevicePhase.CONNECTED,
               f"{BOARD} connected", 30)
    follow = pexpect.spawn("ssh", ["-T", *qlab.opts("alice"), "logs", "--follow", "--lines", "0", BOARD],
                           encoding="utf-8", timeout=30)
    try:
        qlab.until(lambda: qlab.server.diagnostics().execs == 1, "the follower running", 10)
        r = qlab.run("alice", "deploy", "hello", "--board", BOARD, "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["app"] == "hello"
        follow.expect(r"app\.log\s+\S+: hello from wasm", timeout=30)
        r = qlab.run("alice", "deploy", "nosuch", "--board", BOARD)
        assert r.returncode == 1 and "nosuch" in r.stderr
    finally:
        follow.close(force=True)
    qlab.until(lambda: qlab.server.diagnostics().execs == 0, "the follower's command ended", 10)
