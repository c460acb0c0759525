"""The console against a real lab gateway: QEMU mps2-an385 boards running our firmware, driven by keys."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Static

from wasmbed.console.app import WasmbedApp
from wasmbed.console.cli import add_first_run_boards
from wasmbed.console.config import LabBoard
from wasmbed.console.widgets.logview import LogView
from wasmbed.gateway.facade import Caller, Gateway, GatewayConfig, Role
from wasmbed.gateway.model import DevicePhase

pytestmark = pytest.mark.qemu
ADMIN = Caller("tester", Role.ADMIN)
SIZE = (150, 40)


@pytest.fixture
async def lab(tmp_path: Path, firmware_builder) -> AsyncIterator[Gateway]:
    firmware_builder("mps2-an385")
    gw = Gateway(GatewayConfig(data_dir=tmp_path / "data", heartbeat_interval_s=1, unreachable_timeout_s=3,
                               pairing_mode=True, lab=True, lab_state_root=tmp_path / "b", lab_log_root=tmp_path / "l"))
    await gw.start()
    try:
        yield gw
    finally:
        await gw.stop()


async def until(pilot: Pilot, cond: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await pilot.pause(0.1)


def rows(app: WasmbedApp) -> list[str]:
    table = app.screen.query_one("#fleet", DataTable)
    return [str(r.key.value) for r in table.ordered_rows]


def messages(app: WasmbedApp) -> list[str]:
    return [n.message for n in app._notifications]


async def test_boot_detail_add_duplicate_stop(lab: Gateway) -> None:
    gw = lab
    assert await add_first_run_boards(gw, ADMIN, [LabBoard("board-1", "mps2-an385")]) == ["board-1"]
    assert await add_first_run_boards(gw, ADMIN, [LabBoard("other", "mps2-an385")]) == []  # only on an empty lab
    starting = asyncio.create_task(gw.start_board(ADMIN, "board-1"))
    app = WasmbedApp(gw, ADMIN)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: "b:board-1" in rows(app), 5, "the board's row")
        # navigate to it by keys and open its detail
        await pilot.press("ctrl+home", "enter")
        await pilot.pause()
        assert app.screen.title == "board-1"
        console = app.screen.query_one("#console", LogView)
        await until(pilot, lambda: any("wasmbed: ready" in e.text for e in console.shown), 20, "wasmbed: ready")
        info = app.screen.query_one("#device-info", Static)
        await until(pilot, lambda: "Connected" in str(info.render()), 20, "Connected in the detail")
        await until(pilot, lambda: app.screen.query_one("#leds").states is not None, 5, "LEDs read")
        # temperature control: the sensor is in mps2-an385's DTS
        await pilot.press("t", *"31.5", "enter")
        await until(pilot, lambda: "31.50 °C" in str(app.screen.query_one("#temperature", Static).render()), 5,
                    "temperature shown")
        assert await gw.get_temperature("board-1") == pytest.approx(31.5)
        await pilot.press("escape")  # leaves the temperature input's focus... then back
        if app.screen.title == "board-1":
            await pilot.press("escape")
        await until(pilot, lambda: app.current_mode == "boards" and app.screen.id == "boards", 3, "boards view")
        row = app.screen.query_one("#fleet", DataTable).get_row("b:board-1")
        assert str(row[3]) == "Connected"

        # add a board with n
        await pilot.press("n")
        await pilot.pause()
        name_box = app.screen.query_one("#name", Input)
        name_box.value = ""
        await pilot.press(*"board-2", "enter")
        await until(pilot, lambda: gw.board("board-2") is not None, 5, "board-2 stored")
        await until(pilot, lambda: "b:board-2" in rows(app), 3, "board-2 row")
        # duplicate name: a clear message, the dialog stays, nothing changes
        await pilot.press("n")
        await pilot.pause()
        app.screen.query_one("#name", Input).value = "board-2"
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert any("a board named 'board-2' already exists" in m for m in messages(app))
        assert "already exists" in str(app.screen.query_one("#error", Static).render())
        await pilot.press("escape")
        assert sorted(b.name for b in gw.boards()) == ["board-1", "board-2"]
        # stop board-2 once it runs
        await until(pilot, lambda: gw.board("board-2").status.state == "running", 20, "board-2 running")  # type: ignore[union-attr]
        app.screen.select("board-2")
        await pilot.press("S")
        await until(pilot, lambda: gw.board("board-2").status.state == "stopped", 10, "board-2 stopped")  # type: ignore[union-attr]
        await until(pilot, lambda: str(app.screen.query_one("#fleet", DataTable).get_row("b:board-2")[2]) == "stopped",
                    2, "stopped in the table")
        # an action on a stopped board: readable error, nothing changed
        await pilot.press("r")
        await until(pilot, lambda: any("is stopped, not running" in m for m in messages(app)), 3, "the reset error")
        assert gw.board("board-2").status.state == "stopped"  # type: ignore[union-attr]
    await starting


async def test_enrollment_view_approves_a_waiting_board(lab: Gateway) -> None:
    gw = lab
    await gw.add_board(ADMIN, "manual", "mps2-an385", auto_enroll=False, start=False)
    starting = asyncio.create_task(gw.start_board(ADMIN, "manual"))
    app = WasmbedApp(gw, ADMIN)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("colon", *"enroll", "enter")
        await pilot.pause()
        table = app.screen.query_one("#pending", DataTable)
        await until(pilot, lambda: table.row_count == 1, 20, "the waiting device")
        name = str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)
        assert "Enrolling" in [str(c) for c in table.get_row(name)]
        await pilot.press("a")
        await until(pilot, lambda: gw.device(name) is not None and gw.device(name).phase is DevicePhase.CONNECTED,  # type: ignore[union-attr]
                    20, "Connected after approval")
        await until(pilot, lambda: table.row_count == 0, 3, "the list to empty")
    await starting
