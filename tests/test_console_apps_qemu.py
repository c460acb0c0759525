"""The deploy flow against a real lab gateway: a QEMU mps2-an385 board running our firmware (wasm3), keys only."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from test_console_qemu import messages, until
from textual.widgets import DataTable, Static

from wasmbed.console.app import WasmbedApp
from wasmbed.console.screens.deploy import PickBoardsScreen, ProgressScreen
from wasmbed.console.widgets.logview import LogView
from wasmbed.gateway.facade import Caller, Gateway, GatewayConfig, Role
from wasmbed.gateway.model import DevicePhase

pytestmark = pytest.mark.qemu
ADMIN = Caller("tester", Role.ADMIN)
SIZE = (160, 40)


@pytest.fixture
async def lab(tmp_path: Path, firmware_builder) -> AsyncIterator[Gateway]:
    firmware_builder("mps2-an385")
    gw = Gateway(GatewayConfig(data_dir=tmp_path / "data", heartbeat_interval_s=1, unreachable_timeout_s=3,
                               lab=True, lab_state_root=tmp_path / "b", lab_log_root=tmp_path / "l"))
    await gw.start()
    try:
        yield gw
    finally:
        await gw.stop()


def deployments(app: WasmbedApp) -> dict[str, list[str]]:
    t = app.screen.query_one("#deployments", DataTable)
    return {str(r.key.value): [str(c) for c in t.get_row(r.key)] for r in t.ordered_rows}


async def test_deploy_hello_by_keys_see_its_log_and_stop_it(lab: Gateway) -> None:
    gw = lab
    await gw.add_board(ADMIN, "board-1", "mps2-an385", start=False)
    starting = asyncio.create_task(gw.start_board(ADMIN, "board-1"))
    app = WasmbedApp(gw, ADMIN)  # offers the examples on the first visit of :apps
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: (d := gw.board_device("board-1")) is not None and d.phase is DevicePhase.CONNECTED,
                    30, "board-1 connected")
        dev = gw.board_device("board-1")
        assert dev is not None
        await pilot.press("colon", *"apps", "enter")
        await until(pilot, lambda: gw.app("hello") is not None, 20, "the example apps in the catalog")
        # add hello by its example name: it is highlighted afterwards
        await pilot.press("a", *"hello", "enter")
        await until(pilot, lambda: app.screen.selected_app() == "hello", 5, "hello highlighted")  # type: ignore[attr-defined]
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, PickBoardsScreen), 3, "the board picker")
        await pilot.press("space", "enter")  # mark the (only) board, continue
        await pilot.pause()
        await pilot.press("enter")  # confirm (Deploy is the default)
        await until(pilot, lambda: isinstance(app.screen, ProgressScreen), 5, "the progress dialog")
        summary = app.screen.query_one("#progress-summary", Static)
        await until(pilot, lambda: "1 running" in str(summary.render()), 15, "hello running on board-1")
        await pilot.press("escape")
        await until(pilot, lambda: deployments(app).get(f"hello/{dev.name}", [""] * 5)[4] == "Running", 3,
                    "Running in the deployments table")
        # the board's detail: hello's log line in its console view and the app's phase
        await pilot.press("colon", *"boards", "enter")
        await pilot.pause()
        await pilot.press("ctrl+home", "enter")
        await pilot.pause()
        console = app.screen.query_one("#console", LogView)
        await until(pilot, lambda: any("[app hello] hello from wasm" in e.text for e in console.shown), 5,
                    "hello's log line in the board detail")
        assert "Running" in str(app.screen.query_one("#apps-info", Static).render())
        # stop it from the apps view; the phase changes in the table and in the detail
        await pilot.press("escape", "colon", *"apps", "enter")
        await pilot.pause()
        await pilot.press("s")
        await until(pilot, lambda: deployments(app)[f"hello/{dev.name}"][4] == "Stopped", 10, "Stopped")
        assert not any("failed" in m for m in messages(app)), messages(app)
    await starting
