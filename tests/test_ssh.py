"""Lab mode: the console over SSH, driven by the real OpenSSH client (pexpect) against an in-process server."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import random
import re
import signal
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pexpect
import pyte
import pytest
from conftest import require_tools
from sshkit import SSHLab, keygen, serve_in_thread

from wasmbed.console.ssh_driver import color_system_for
from wasmbed.console.ssh_server import load_or_create_host_key, parse_listen
from wasmbed.console.users import Users, UsersError
from wasmbed.gateway.facade import Role

BOARDS_TEXT = "lab boards"  # the boards view's info line: "0 lab boards · 0 devices (0 connected)"


Lab = SSHLab


@contextlib.contextmanager
def make_lab(tmp_path: Path, **server_options: object) -> Iterator[Lab]:
    require_tools("ssh", "ssh-keygen")
    from wasmbed.console.app import WasmbedApp

    keys = {name: keygen(tmp_path / f"id_{name}")[0] for name in ("alice", "bob", "mallory")}
    pub = {name: (tmp_path / f"id_{name}.pub").read_text().strip() for name in keys}
    users = Users.from_mapping({"user": [
        {"name": "alice", "role": "operator", "keys": [pub["alice"]]},
        {"name": "bob", "role": "viewer", "keys": [pub["bob"]]},
    ]})
    with serve_in_thread(tmp_path, users, lambda gw, caller: WasmbedApp(gw, caller, offer_examples=False),
                         server_options=server_options) as (server, gw, loop):
        yield Lab(server, gw, loop, keys)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    with make_lab(tmp_path) as lab:
        yield lab


ANSI = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[()][0-9A-Za-z]|[=>78])")


def expect_text(child: pexpect.spawn, *texts: str, timeout: float = 10) -> str:
    """Read the session's output until every text shows up once escape sequences are stripped."""
    deadline = time.monotonic() + timeout
    seen = ""
    while True:
        plain = ANSI.sub("", seen)
        if all(t in plain for t in texts):
            return plain
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out waiting for {texts!r}; screen text:\n{plain[-2000:]}")
        with contextlib.suppress(pexpect.TIMEOUT):
            seen += child.read_nonblocking(65536, timeout=min(left, 0.5))


def expect_raw(child: pexpect.spawn, text: str, timeout: float = 10) -> str:
    """Like :func:`expect_text` but returns the raw output read so far (escape sequences kept)."""
    deadline, seen = time.monotonic() + timeout, ""
    while text not in ANSI.sub("", seen):
        assert time.monotonic() < deadline, f"timed out waiting for {text!r}"
        with contextlib.suppress(pexpect.TIMEOUT):
            seen += child.read_nonblocking(65536, timeout=0.5)
    return seen


def drain(child: pexpect.spawn, quiet_s: float = 0.2) -> str:
    """Everything the client prints until it has been quiet for ``quiet_s``."""
    out = ""
    while True:
        try:
            out += child.read_nonblocking(1 << 20, timeout=quiet_s)
        except pexpect.TIMEOUT:
            return out


def wait_sessions(lab: Lab, n: int, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while lab.sessions() != n:
        assert time.monotonic() < deadline, f"expected {n} sessions, have {lab.sessions()}"
        time.sleep(0.05)


def quit_cleanly(child: pexpect.spawn) -> None:
    child.send("\x11")  # ctrl+q
    child.expect(pexpect.EOF, timeout=10)
    child.close()
    assert child.exitstatus == 0, (child.exitstatus, child.signalstatus)


def test_operator_sees_boards_and_quits_with_ctrl_q(lab: Lab) -> None:
    baseline = lab.diag()
    child = lab.ssh("alice", "alice")
    expect_text(child, BOARDS_TEXT, "alice (operator)")  # the subtitle names the caller and role
    wait_sessions(lab, 1)
    quit_cleanly(child)
    lab.wait_idle(baseline)  # no connection, console, app object or task left


@pytest.mark.parametrize(("user", "key"), [("alice", "mallory"), ("mallory", "mallory"), ("bob", "alice")],
                         ids=["wrong-key", "unknown-user", "alice-key-as-bob"])
def test_refused_logins_and_server_keeps_serving(lab: Lab, user: str, key: str) -> None:
    child = lab.ssh(user, key)
    child.expect(pexpect.EOF, timeout=10)
    child.close()
    assert child.exitstatus == 255, child.before
    assert "Permission denied" in (child.before or "")
    good = lab.ssh("bob", "bob")
    expect_text(good, BOARDS_TEXT, "bob (viewer)")
    quit_cleanly(good)


def test_password_and_keyboard_interactive_refused(lab: Lab) -> None:
    """Offered only public keys: the client never gets a password prompt, and the server keeps serving."""
    for method in ("password", "keyboard-interactive"):
        child = pexpect.spawn("ssh", ["-p", str(lab.server.port), "-F", "/dev/null", "-o", "PubkeyAuthentication=no",
                                      "-o", f"PreferredAuthentications={method}", "-o", "StrictHostKeyChecking=no",
                                      "-o", "UserKnownHostsFile=/dev/null", "-o", "NumberOfPasswordPrompts=1",
                                      "alice@127.0.0.1", "boards"], encoding="utf-8", timeout=10)
        index = child.expect([pexpect.EOF, "(?i)password"])
        assert index == 0, f"{method}: the server offered a password prompt"
        child.close()
        assert child.exitstatus == 255 and "Permission denied (publickey)" in (child.before or ""), child.before
    good = lab.ssh("alice", "alice")
    expect_text(good, BOARDS_TEXT)
    quit_cleanly(good)


def test_two_concurrent_sessions_render(lab: Lab) -> None:
    a = lab.ssh("alice", "alice")
    b = lab.ssh("bob", "bob")
    expect_text(a, BOARDS_TEXT, "alice (operator)")
    expect_text(b, BOARDS_TEXT, "bob (viewer)")
    wait_sessions(lab, 2)
    # Both stay live and independent: one jumps to the logs view, the other then does too.
    a.send(":")
    expect_text(a, "boards | apps | logs | enroll")
    a.send("logs\r")
    expect_text(a, "source: all (b)")
    quit_cleanly(a)
    wait_sessions(lab, 1)
    b.send(":")
    expect_text(b, "boards | apps | logs | enroll")
    b.send("logs\r")
    expect_text(b, "source: all (b)")
    quit_cleanly(b)
    wait_sessions(lab, 0)


def test_killed_client_frees_everything(lab: Lab) -> None:
    baseline = lab.diag()
    child = lab.ssh("alice", "alice")
    expect_text(child, BOARDS_TEXT)
    wait_sessions(lab, 1)
    assert lab.diag().apps_alive == 1
    os.kill(child.pid, signal.SIGKILL)  # kill -9: no ctrl+q, no SSH disconnect message; the socket just closes
    child.close()
    lab.wait_idle(baseline)
    again = lab.ssh("alice", "alice")  # and the server keeps serving
    expect_text(again, BOARDS_TEXT)
    quit_cleanly(again)
    lab.wait_idle(baseline)


def test_twenty_sessions_dropped_during_startup_leak_nothing(lab: Lab) -> None:
    """20 clients killed at staggered moments of their start-up (key exchange, auth, PTY, app mount)."""
    baseline = lab.diag()
    rng = random.Random(20)
    children = [lab.ssh("alice" if i % 2 else "bob", "alice" if i % 2 else "bob") for i in range(20)]
    delays = sorted(rng.uniform(0.0, 1.5) for _ in children)
    started, peak = time.monotonic(), 0
    for child, delay in zip(children, delays, strict=True):
        time.sleep(max(0.0, started + delay - time.monotonic()))
        peak = max(peak, lab.sessions())
        os.kill(child.pid, signal.SIGKILL)
    print(f"consoles running at once before the kills: up to {peak} of 20")
    for child in children:
        child.close()
    lab.wait_idle(baseline, timeout=20)
    good = lab.ssh("bob", "bob")
    expect_text(good, BOARDS_TEXT, "bob (viewer)")
    quit_cleanly(good)
    lab.wait_idle(baseline)


def test_closed_client_frees_the_app(lab: Lab) -> None:
    child = lab.ssh("alice", "alice")
    expect_text(child, BOARDS_TEXT)
    wait_sessions(lab, 1)
    child.close(force=True)  # hangs up the ssh client: the connection drops without a ctrl+q
    wait_sessions(lab, 0)


def test_stopping_the_server_ends_open_sessions(lab: Lab) -> None:
    child = lab.ssh("alice", "alice")
    expect_text(child, BOARDS_TEXT)
    wait_sessions(lab, 1)
    asyncio.run_coroutine_threadsafe(lab.server.stop(), lab.loop).result(15)
    child.expect(pexpect.EOF, timeout=10)
    child.close()
    assert lab.sessions() == 0


def test_session_acts_as_the_user_and_follows_resizes(lab: Lab) -> None:
    baseline = lab.diag()
    child = lab.ssh("bob", "bob")
    expect_text(child, BOARDS_TEXT)
    wait_sessions(lab, 1)
    assert lab.on_loop(lambda: [(a.caller.user, a.caller.role, tuple(a.size)) for a in lab.server.apps]) == [
        ("bob", Role.VIEWER, (110, 30))]
    child.setwinsize(40, 132)  # the client sends a window-change request
    deadline = time.monotonic() + 5
    while lab.on_loop(lambda: [tuple(a.size) for a in lab.server.apps]) != [(132, 40)]:
        assert time.monotonic() < deadline, "the app did not follow the resize"
        time.sleep(0.05)
    expect_text(child, BOARDS_TEXT)  # and repaints at the new size
    quit_cleanly(child)
    lab.wait_idle(baseline)


def test_host_key_created_once_private(tmp_path: Path) -> None:
    path = tmp_path / "ssh" / "host_key"
    key = load_or_create_host_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    again = load_or_create_host_key(path)
    assert again.get_fingerprint() == key.get_fingerprint()


def test_users_file(tmp_path: Path) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    other = asyncssh.generate_private_key("ssh-ed25519")
    pub = key.export_public_key().decode()
    path = tmp_path / "users.toml"
    path.write_text(f'[[user]]\nname = "alice"\nrole = "admin"\nkeys = ["{pub.strip()}"]\n')
    users = Users.load(path)
    alice = users.authorize("alice", key.convert_to_public())
    assert alice is not None and alice.caller.role is Role.ADMIN
    assert users.authorize("alice", other.convert_to_public()) is None
    assert users.authorize("bob", key.convert_to_public()) is None
    for bad in ('[[user]]\nname = "x"\nrole = "root"\nkeys = ["' + pub.strip() + '"]\n',
                '[[user]]\nname = "x"\nkeys = []\n', '[[user]]\nname = "x"\nkeys = ["not a key"]\n', "user = 3\n"):
        path.write_text(bad)
        with pytest.raises(UsersError):
            Users.load(path)
    with pytest.raises(UsersError):
        Users.load(tmp_path / "missing.toml")


def test_helpers() -> None:
    assert parse_listen("0.0.0.0:2222") == ("0.0.0.0", 2222)
    assert parse_listen("[::1]:22") == ("::1", 22)
    with pytest.raises(ValueError):
        parse_listen("localhost")
    assert color_system_for("xterm-256color").name == "EIGHT_BIT"
    assert color_system_for("xterm", {"COLORTERM": "truecolor"}).name == "TRUECOLOR"
    assert color_system_for("vt100").name == "STANDARD"
    assert color_system_for("dumb") is None


def test_serve_command(tmp_path: Path) -> None:
    """`wasmbed-console serve`: prints address and host key fingerprint, serves a login, stops on SIGTERM."""
    require_tools("ssh", "ssh-keygen")
    import sys

    key, pub = keygen(tmp_path / "id_alice")
    users = tmp_path / "users.toml"
    users.write_text(f'[[user]]\nname = "alice"\nrole = "operator"\nkeys = ["{pub}"]\n')
    config = tmp_path / "config.toml"
    config.write_text("[lab]\nboards = []\n")  # no first-run board (no firmware build in this test)
    env = {**os.environ, "WASMBED_DATA_DIR": str(tmp_path / "data"), "WASMBED_CONFIG_DIR": str(tmp_path / "config"),
           "WASMBED_LOG_DIR": str(tmp_path / "log")}
    binary = str(Path(sys.executable).parent / "wasmbed-console")
    server = pexpect.spawn(binary, ["serve", "--config", str(config), "--users", str(users),
                                    "--listen", "127.0.0.1:0"], env=env, encoding="utf-8", timeout=20)
    try:
        server.expect(r"listening on 127\.0\.0\.1:(\d+) \(1 users\); host key (SHA256:\S+)")
        port, fingerprint = int(server.match.group(1)), server.match.group(2)
        host_key = tmp_path / "data" / "ssh" / "host_ed25519_key"
        assert stat.S_IMODE(host_key.stat().st_mode) == 0o600
        assert asyncssh.read_private_key(host_key).get_fingerprint() == fingerprint
        client = pexpect.spawn("ssh", ["-tt", "-p", str(port), "-i", str(key), "-F", "/dev/null",
                                       "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                                       "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
                                       "alice@127.0.0.1"],
                               env={**os.environ, "TERM": "xterm-256color"}, encoding="utf-8", timeout=10)
        expect_text(client, BOARDS_TEXT, "alice (operator)")
        quit_cleanly(client)
        server.kill(signal.SIGTERM)
        server.expect(pexpect.EOF, timeout=15)
        server.close()
        assert server.exitstatus == 0, server.before
    finally:
        if server.isalive():
            server.terminate(force=True)


def churn_until_dropping(lab: Lab, timeout: float = 60) -> int:
    """Repaint every session's whole screen (theme changes) until the server drops frames; returns the
    largest send buffer seen meanwhile."""
    deadline, worst = time.monotonic() + timeout, 0
    themes = itertools.cycle(["wasmbed-light", "wasmbed-high-contrast", "wasmbed-dark"])

    def churn() -> int:
        for app in lab.server.apps:  # a theme change repaints every cell
            app.call_later(setattr, app, "theme", next(themes))
        return max((s._terminal.unsent() for s in lab.server._sessions if s._terminal is not None), default=0)

    started = time.monotonic()
    while lab.diag().frames_dropped < 10:
        assert time.monotonic() < deadline, "the server never dropped a frame for a stopped client"
        worst = max(worst, lab.on_loop(churn))
        time.sleep(0.01)
    print(f"frames dropped after {time.monotonic() - started:.1f} s of full repaints")
    return worst


def screen_of(text: str, rows: int, cols: int) -> list[str]:
    screen = pyte.Screen(cols, rows)
    pyte.Stream(screen).feed(text)
    return list(screen.display)


def test_slow_client_frames_dropped_memory_bounded_screen_restored(lab: Lab, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="wasmbed.console.ssh_driver")
    rows, cols = 50, 180
    child = lab.ssh("alice", "alice", rows=rows, cols=cols)
    seen = expect_raw(child, BOARDS_TEXT)
    os.kill(child.pid, signal.SIGSTOP)  # the client stops reading; the SSH window, then the send buffer fill up
    try:
        worst = churn_until_dropping(lab)
    finally:
        os.kill(child.pid, signal.SIGCONT)
    high = lab.server.write_high_water
    print(f"largest send buffer while the client was stopped: {worst} bytes (high-water mark {high})")
    assert worst < high + 256 * 1024, "the send buffer grew past the high-water mark plus one frame"
    assert "dropping frames until it reads" in caplog.text
    # Caught up: the client shows exactly the server's screen (one more full repaint changes nothing).
    deadline = time.monotonic() + 20
    while "caught up" not in caplog.text:
        assert time.monotonic() < deadline, "the client never caught up"
        seen += drain(child)
    seen += drain(child, quiet_s=1.0)
    before = screen_of(seen, rows, cols)
    lab.on_loop(lambda: [s._terminal.driver.repaint() for s in lab.server._sessions])
    after = screen_of(seen + drain(child, quiet_s=0.5), rows, cols)
    assert before == after, "\n".join(f"{i}: {b!r}\n{i}: {a!r}" for i, (b, a) in enumerate(zip(before, after,
                                                                                               strict=True)) if a != b)
    assert any("lab boards" in line for line in after)
    quit_cleanly(child)


def test_stalled_client_is_disconnected(lab: Lab, caplog: pytest.LogCaptureFixture) -> None:
    baseline = lab.diag()
    lab.server.stall_close_s = 1.0  # read at session start
    child = lab.ssh("bob", "bob", rows=50, cols=180)
    expect_text(child, BOARDS_TEXT)
    os.kill(child.pid, signal.SIGSTOP)
    try:
        churn_until_dropping(lab)
        deadline = time.monotonic() + 10
        while lab.sessions():
            assert time.monotonic() < deadline, "the stalled session was not closed"
            time.sleep(0.1)
    finally:
        os.kill(child.pid, signal.SIGCONT)
    assert "read nothing for 1 s" in caplog.text and "closing the session" in caplog.text
    child.expect(pexpect.EOF, timeout=10)
    child.close()
    assert lab.wait_idle(baseline).slow_closed == 1


def test_unresponsive_client_is_dropped_by_keepalive(tmp_path: Path) -> None:
    """A client that answers nothing (its network vanished: no FIN, no RST) is closed after the keepalives."""
    with make_lab(tmp_path, keepalive_s=0.5, keepalive_count_max=2) as lab:
        baseline = lab.diag()
        child = lab.ssh("alice", "alice")
        expect_text(child, BOARDS_TEXT)
        os.kill(child.pid, signal.SIGSTOP)  # the kernel still acknowledges TCP; the ssh client answers nothing
        try:
            lab.wait_idle(baseline, timeout=10)
        finally:
            os.kill(child.pid, signal.SIGCONT)
        child.expect(pexpect.EOF, timeout=10)
        child.close()
        good = lab.ssh("bob", "bob")
        expect_text(good, BOARDS_TEXT)
        quit_cleanly(good)
