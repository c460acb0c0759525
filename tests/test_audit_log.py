"""The audit log's file: JSON lines, 0600, rotated by size without losing the newest records."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from wasmbed.gateway.audit import AuditLog
from wasmbed.gateway.events import EventLog
from wasmbed.gateway.facade import Caller, Role


def test_records_rotate_by_size_and_keep_the_newest(tmp_path: Path) -> None:
    path = tmp_path / "log" / "audit.log"
    audit = AuditLog(EventLog(), path, rotate_bytes=2000, keep=3)
    alice = Caller("alice", Role.OPERATOR)
    for i in range(100):
        audit.record(alice, "deploy", f"app-{i:03d}", "ok")
    files = audit.files()
    assert [f.name for f in files] == ["audit.log", "audit.log.1", "audit.log.2", "audit.log.3"]
    assert not path.with_name("audit.log.4").exists()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for f in files:
        assert f.stat().st_size <= 2000
    records = [json.loads(line) for f in reversed(files) for line in f.read_text().splitlines()]
    targets = [r["target"] for r in records]
    assert targets == sorted(targets) and targets[-1] == "app-099"  # in order, the newest kept, nothing torn
    assert {r["user"] for r in records} == {"alice"} and {r["result"] for r in records} == {"ok"}


async def test_logs_view_audit_source_reads_the_file_and_follows(tmp_path: Path) -> None:
    """The console's logs view: `b` selects the audit source, which starts with what is on disk (here a
    record from an earlier run of the server) and then shows new records live."""
    import pytest

    from wasmbed.console.app import WasmbedApp
    from wasmbed.console.widgets.logview import LogView
    from wasmbed.gateway.facade import Gateway, GatewayConfig, PermissionDenied

    path = tmp_path / "log" / "audit.log"
    path.parent.mkdir(parents=True)
    earlier = {"time": "2026-01-02T03:04:05.000001Z", "user": "carol", "role": "admin", "action": "approve",
               "target": "dev-7", "result": "ok"}
    path.write_text(json.dumps(earlier) + "\n" + "not json\n")
    gw = Gateway(GatewayConfig(data_dir=tmp_path / "data", audit_log=path))
    await gw.start()
    try:
        bob = Caller("bob", Role.VIEWER)
        app = WasmbedApp(gw, bob, offer_examples=False)
        async with app.run_test(size=(140, 40)) as pilot:
            app.go("logs")
            await pilot.pause()
            await pilot.press("b", "b")  # all -> gateway -> audit
            await pilot.pause()
            view = app.screen.query_one(LogView)
            assert [e.text for e in view.shown] == ["[audit.ok] carol (admin) approve dev-7: ok"]
            with pytest.raises(PermissionDenied):
                await gw.approve(bob, "dev-8")
            await pilot.pause(0.1)
            assert [e.source for e in view.shown] == ["audit", "audit"]
            assert "bob (viewer) tried to approve enrollments" in view.shown[-1].text
            assert view.shown[-1].level == "warning"
    finally:
        await gw.stop()
