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
