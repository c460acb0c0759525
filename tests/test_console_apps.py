"""Apps view without QEMU: a real gateway (no lab) with fixed devices, catalog and deployments.

Snapshots per theme; keys for add/deploy; bad input (missing file, invalid module, unknown import); a
deploy to a disconnected board shows "waiting for device"; a viewer gets a readable refusal.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from consolekit import APPS_DIR, NOW, fixed_apps, fixed_fleet
from pytest_textual_snapshot import SVGImageExtension
from textual.widgets import DataTable, Input

from wasmbed.console import appdata
from wasmbed.console.app import WasmbedApp
from wasmbed.console.screens.apps import AppsScreen
from wasmbed.console.screens.deploy import PickBoardsScreen, ProgressScreen
from wasmbed.console.themes import SHIPPED_ORDER
from wasmbed.gateway.facade import Caller, Gateway, GatewayConfig, Role

ADMIN = Caller("alice", Role.ADMIN)
VIEWER = Caller("victor", Role.VIEWER)
SIZE = (160, 36)


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    gateway = Gateway(GatewayConfig(data_dir=tmp_path / "data"))
    await gateway.start()
    fixed_fleet(gateway)
    fixed_apps(gateway)
    try:
        yield gateway
    finally:
        await gateway.stop()


def make_app(gw: Gateway, caller: Caller = ADMIN, theme: str = "wasmbed-dark") -> WasmbedApp:
    return WasmbedApp(gw, caller, theme=theme, clock=lambda: NOW, offer_examples=False)


def rows(app: WasmbedApp, table: str) -> dict[str, list[str]]:
    t = app.screen.query_one(f"#{table}", DataTable)
    return {str(r.key.value): [str(c) for c in t.get_row(r.key)] for r in t.ordered_rows}


def messages(app: WasmbedApp) -> list[str]:
    return [n.message for n in app._notifications]


async def open_apps(app: WasmbedApp, pilot) -> AppsScreen:
    await pilot.press("colon", *"apps", "enter")
    await pilot.pause()
    screen = app.screen
    assert isinstance(screen, AppsScreen)
    screen.flush()
    return screen


@pytest.mark.parametrize("theme", SHIPPED_ORDER)
async def test_snapshot_apps(gw: Gateway, theme: str, snapshot) -> None:
    app = make_app(gw, theme=theme)
    async with app.run_test(size=SIZE) as pilot:
        await open_apps(app, pilot)
        await pilot.pause()
        assert snapshot(extension_class=SVGImageExtension) == app.export_screenshot()


async def test_catalog_and_deployment_rows(gw: Gateway) -> None:
    app = make_app(gw)
    async with app.run_test(size=SIZE) as pilot:
        await open_apps(app, pilot)
        catalog = rows(app, "catalog")
        assert list(catalog) == ["blinky", "hello", "thermostat", "trap"]
        assert catalog["hello"][:3] == ["hello", "1.0", "217 B"]
        assert catalog["hello"][4] == "log, timer_set"
        assert catalog["hello"][5].startswith("✓ ABI v1")  # and which fleet boards cannot run it
        assert "stm32vldiscovery" in catalog["hello"][5]
        dep = rows(app, "deployments")
        assert dep["hello/mps2-an385-0a1b2c3d"][2:5] == ["PartiallyRunning", "bench-a (mps2-an385-0a1b2c3d)",
                                                          "Running"]
        assert dep["hello/sim-0002"][4] == "waiting for device"  # Unreachable: not an error
        assert dep["blinky/sim-0001"][4] == "Deploying" and dep["blinky/sim-0001"][5].endswith("42%")
        assert dep["trap/sim-0001"][4:] == ["Failed", "", "2", "[trap] out of bounds memory access"]


async def test_boards_apps_column_and_detail(gw: Gateway) -> None:
    app = make_app(gw)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        app.screen.flush()  # type: ignore[attr-defined]
        fleet_rows = {str(r.key.value): [str(c) for c in app.screen.query_one("#fleet", DataTable).get_row(r.key)]
                      for r in app.screen.query_one("#fleet", DataTable).ordered_rows}
        assert fleet_rows["b:bench-a"][6] == "hello"
        assert fleet_rows["d:sim-0002"][6] == "hello deploy…"
        assert fleet_rows["d:sim-0001"][6] == "0 run/1 fail"
        assert app.screen.select("sim-0001")  # type: ignore[attr-defined]
        await pilot.press("enter")
        await pilot.pause()
        text = str(app.screen.query_one("#apps-info").render())
        assert "blinky" in text and "trap" in text and "Failed" in text
        assert "last error: [trap] out of bounds memory access" in text


async def test_add_app_by_keys_and_bad_input(gw: Gateway, tmp_path: Path) -> None:
    bad = tmp_path / "bad.wasm"
    bad.write_bytes(b"\0asm\x01\0\0\0garbage")
    sleepy = tmp_path / "sleepy.wat"
    sleepy.write_text('(module (import "wasmbed" "sleep" (func (param i32)))'
                      ' (func (export "app_start") (result i32) (i32.const 0)))')
    app = make_app(gw)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_apps(app, pilot)
        before = [m.spec for m in gw.apps()]
        for path, problem in ((tmp_path / "missing.wasm", "no such file"),
                              (bad, "invalid WebAssembly module"),
                              (sleepy, "import wasmbed.sleep: unknown function")):
            await pilot.press("a")
            await pilot.pause()
            app.screen.query_one("#path", Input).value = str(path)
            await pilot.press("enter")
            await pilot.pause(0.2)
            assert any(problem in m for m in messages(app)), (problem, messages(app))
            assert problem in str(app.screen.query_one("#error").render())  # the dialog stays, with the reason
            await pilot.press("escape")
            await pilot.pause()
        assert [m.spec for m in gw.apps()] == before  # nothing changed
        # a good one: added, then highlighted
        await pilot.press("a")
        await pilot.pause()
        app.screen.query_one("#path", Input).value = str(APPS_DIR / "runaway.wat")
        await pilot.press("tab", *"spinner", "tab", "9", "enter")
        await pilot.pause(0.3)
        entry = gw.app("spinner")
        assert entry is not None and entry.spec.version == "9"
        assert screen.selected_app() == "spinner"


async def test_deploy_to_a_disconnected_board_waits_for_it(gw: Gateway) -> None:
    app = make_app(gw)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_apps(app, pilot)
        assert screen.select("thermostat")
        await pilot.press("d")
        await pilot.pause()
        picker = app.screen
        assert isinstance(picker, PickBoardsScreen)
        table = picker.query_one("#targets", DataTable)
        # sim-0003 is an stm32vldiscovery: refused with the reason, nothing stored
        table.move_cursor(row=table.get_row_index("sim-0003"))
        await pilot.press("enter", "enter")  # continue (the highlighted board), confirm
        await pilot.pause(0.2)
        assert any("stm32vldiscovery cannot run apps" in m for m in messages(app))
        assert gw.application("thermostat") is None
        await pilot.press("d")
        await pilot.pause()
        table = app.screen.query_one("#targets", DataTable)
        table.move_cursor(row=table.get_row_index("sim-0002"))
        await pilot.press("space")  # mark sim-0002 (Unreachable)
        await pilot.press("tab", "tab", *"threshold_mdeg=30000", "enter")  # config, then continue
        await pilot.pause()
        assert "Deploy thermostat 1.0 to sim-0002 with config threshold_mdeg=30000?" in app.screen.question  # type: ignore[attr-defined]
        await pilot.press("enter")  # the confirmation's default button is Deploy
        await pilot.pause(0.3)
        assert isinstance(app.screen, ProgressScreen)
        deployed = gw.application("thermostat")
        assert deployed is not None and deployed.spec.config == {"threshold_mdeg": "30000"}
        summary = str(app.screen.query_one("#progress-summary").render())
        assert "1 waiting for their device" in summary
        assert "waiting for device (Unreachable)" in str(app.screen.query(".target").first().render())
        await pilot.press("escape")
        await pilot.pause(0.3)
        assert rows(app, "deployments")["thermostat/sim-0002"][4] == "waiting for device"
        # already deployed: d explains what to do instead
        await pilot.press("d")
        await pilot.pause()
        assert any("thermostat is already deployed" in m for m in messages(app))


async def test_viewer_gets_a_readable_refusal(gw: Gateway) -> None:
    app = make_app(gw, caller=VIEWER)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_apps(app, pilot)
        assert screen.select("thermostat")
        await pilot.press("d")
        await pilot.pause()
        assert any("victor (viewer) may not deploy app thermostat: needs operator" in m for m in messages(app))
        assert isinstance(app.screen, AppsScreen)
        # the facade refuses too (the console's early check is a courtesy)
        assert screen.select("hello")
        await pilot.press("s")
        await pilot.pause()
        assert any("may not stop app hello" in m for m in messages(app))
        assert gw.application("thermostat") is None


def test_sources_and_pairs(tmp_path: Path) -> None:
    assert appdata.resolve_source(str(APPS_DIR / "hello.wat")) == APPS_DIR / "hello.wat"
    assert appdata.resolve_source("hello").suffix == ".wasm"  # an example, built into the cache
    with pytest.raises(appdata.SourceError, match="no such file"):
        appdata.resolve_source(str(tmp_path / "x.wasm"))
    with pytest.raises(appdata.SourceError, match=r"neither a \.wasm/\.wat file nor an example"):
        appdata.resolve_source("no-such-example")
    assert appdata.parse_pairs("a=1, b=2 c=") == {"a": "1", "b": "2", "c": ""}
    assert appdata.parse_pairs(["k=v=w"]) == {"k": "v=w"}
    with pytest.raises(ValueError, match="'oops' is not key=value"):
        appdata.parse_pairs("oops")
