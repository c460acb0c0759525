"""Console UI without QEMU: a real gateway (no lab) holding fixed data; snapshots per theme, keys, bad input."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from consolekit import NOW, fixed_fleet, make_device
from pytest_textual_snapshot import SVGImageExtension
from textual.widgets import DataTable

from wasmbed.console import cli
from wasmbed.console.app import WasmbedApp
from wasmbed.console.config import ConfigError, load_config, save_theme
from wasmbed.console.screens.boards import BoardsScreen
from wasmbed.console.themes import SHIPPED_ORDER, load_themes
from wasmbed.gateway.facade import Caller, Gateway, GatewayConfig, Role
from wasmbed.gateway.model import DevicePhase

ADMIN = Caller("alice", Role.ADMIN)
VIEWER = Caller("victor", Role.VIEWER)
SIZE = (140, 32)


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    gateway = Gateway(GatewayConfig(data_dir=tmp_path / "data"))
    await gateway.start()
    fixed_fleet(gateway)
    try:
        yield gateway
    finally:
        await gateway.stop()


def make_app(gw: Gateway, caller: Caller = ADMIN, theme: str = "wasmbed-dark", **kw: object) -> WasmbedApp:
    kw.setdefault("offer_examples", False)
    return WasmbedApp(gw, caller, theme=theme, clock=lambda: NOW, **kw)  # type: ignore[arg-type]


def boards(app: WasmbedApp) -> BoardsScreen:
    screen = app.screen
    assert isinstance(screen, BoardsScreen)
    return screen


def cells(app: WasmbedApp) -> dict[str, list[str]]:
    table = app.screen.query_one("#fleet", DataTable)
    return {str(r.key.value): [str(c) for c in table.get_row(r.key)] for r in table.ordered_rows}


# -- snapshots --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("theme", SHIPPED_ORDER)
async def test_snapshot_boards(gw: Gateway, theme: str, snapshot) -> None:
    app = make_app(gw, theme=theme)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        boards(app).flush()
        await pilot.pause()
        assert snapshot(extension_class=SVGImageExtension) == app.export_screenshot()


@pytest.mark.parametrize("theme", SHIPPED_ORDER)
async def test_snapshot_enroll(gw: Gateway, theme: str, snapshot) -> None:
    app = make_app(gw, theme=theme)
    async with app.run_test(size=SIZE) as pilot:
        app.go("enroll")
        await pilot.pause()
        assert snapshot(extension_class=SVGImageExtension) == app.export_screenshot()


@pytest.mark.parametrize("theme", SHIPPED_ORDER)
async def test_snapshot_device_detail_and_add_dialog(gw: Gateway, theme: str, snapshot) -> None:
    app = make_app(gw, theme=theme)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert boards(app).select("sim-0001")
        await pilot.press("enter")
        await pilot.pause()
        assert snapshot(name="detail", extension_class=SVGImageExtension) == app.export_screenshot()
        await pilot.press("escape")
        await pilot.pause()
        app.screen.query_one(DataTable).focus()
        await pilot.press("ctrl+d")  # the confirmation dialog
        await pilot.pause()
        assert snapshot(name="confirm", extension_class=SVGImageExtension) == app.export_screenshot()
        await pilot.press("n")


# -- behaviour --------------------------------------------------------------------------------------------


async def test_boards_rows_cells_and_live_updates(gw: Gateway) -> None:
    app = make_app(gw)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        screen = boards(app)
        screen.flush()
        rows = cells(app)
        assert set(rows) == {"b:bench-a", "b:bench-b", "d:sim-0001", "d:sim-0002", "d:sim-0003",
                             "d:newcomer-7f3a", "d:refused-0c1d"}  # the bench-a device shows on its board's row
        assert rows["b:bench-a"][:6] == ["bench-a", "mps2-an385", "running", "Connected", "2m05s", "0s ago"]
        assert rows["b:bench-a"][6] == "1 run/1 fail"
        assert rows["d:sim-0002"][3] == "Unreachable" and rows["d:sim-0002"][5] == "42s ago"
        # A store change repaints only its row, by cell update (no rebuild: the same row count, same order).
        order = list(rows)

        def down(d):
            d.set_phase(DevicePhase.DISCONNECTED, reason="test")

        gw.store.mutate(type(gw.device("sim-0001")), "sim-0001", down)
        await pilot.pause(0.4)
        after = cells(app)
        assert after["d:sim-0001"][3] == "Disconnected"
        assert list(after) == order
        # A new device appears in name order; a deleted one disappears.
        make_device(gw, "aaa-first", DevicePhase.CONNECTED)
        gw.store.delete(type(gw.device("sim-0003")), "sim-0003")
        await pilot.pause(0.4)
        after = list(cells(app))
        assert after[0] == "d:aaa-first" and "d:sim-0003" not in after


async def test_filter_with_slash_and_escape(gw: Gateway) -> None:
    app = make_app(gw)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("slash", *"unreach", "enter")
        await pilot.pause(0.1)
        assert list(cells(app)) == ["d:sim-0002"]
        await pilot.press("escape")
        await pilot.pause(0.1)
        assert len(cells(app)) == 7


async def test_jump_views_help_and_unknown_view(gw: Gateway) -> None:
    app = make_app(gw)
    async with app.run_test(size=SIZE) as pilot:
        for view in ("logs", "enroll", "apps", "boards"):
            await pilot.press("colon", *view, "enter")
            await pilot.pause()
            assert app.current_mode == view
        await pilot.press("colon", *"nonsense", "enter")
        await pilot.pause()
        assert app.current_mode == "boards"
        assert any("unknown view 'nonsense'" in n.message for n in app._notifications)
        await pilot.press("question_mark")
        await pilot.pause()
        assert app.screen.query("HelpPanel")


async def test_logs_show_gateway_events_and_filter(gw: Gateway) -> None:
    app = make_app(gw)
    async with app.run_test(size=SIZE) as pilot:
        app.go("logs")
        await pilot.pause()
        from wasmbed.console.widgets.logview import LogView

        view = app.screen.query_one(LogView)
        assert any("gateway.started" in e.text for e in view.shown)
        gw.events.emit("test.thing", "something odd happened", level=__import__(
            "wasmbed.gateway.events", fromlist=["EventLevel"]).EventLevel.WARNING)
        await pilot.pause(0.1)
        assert view.shown[-1].text.endswith("something odd happened")
        await pilot.press("l")  # level >= warning
        await pilot.pause()
        assert all(e.level in ("warning", "error") for e in view.shown) and view.shown
        await pilot.press("slash", *"zzz-no-such", "enter")
        await pilot.pause()
        assert view.shown == []
        await pilot.press("f")
        assert not view.follow


async def test_enrollment_approve_reject_and_pairing(gw: Gateway) -> None:
    app = make_app(gw)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("colon", *"enroll", "enter")
        await pilot.pause()
        table = app.screen.query_one("#pending", DataTable)
        assert {str(k.value) for k in table.rows} == {"newcomer-7f3a", "refused-0c1d"}
        table.move_cursor(row=table.get_row_index("newcomer-7f3a"))
        await pilot.press("a")
        await pilot.pause(0.2)
        assert gw.device("newcomer-7f3a").phase is DevicePhase.ENROLLED  # type: ignore[union-attr]
        assert {str(k.value) for k in table.rows} == {"refused-0c1d"}
        # reject asks first; "n" keeps things as they are
        make_device(gw, "another-1111", DevicePhase.ENROLLING)
        await pilot.pause(0.2)
        table.move_cursor(row=table.get_row_index("another-1111"))
        await pilot.press("d")
        await pilot.pause()
        await pilot.press("n")
        await pilot.pause()
        assert gw.device("another-1111").phase is DevicePhase.ENROLLING  # type: ignore[union-attr]
        await pilot.press("d")
        await pilot.pause()
        await pilot.press("y")
        await pilot.pause(0.2)
        assert gw.device("another-1111").phase is DevicePhase.PENDING  # type: ignore[union-attr]
        assert not gw.pairing_mode
        await pilot.press("p")
        await pilot.pause(0.2)
        assert gw.pairing_mode
        assert "pairing ON" in app.sub_title


async def test_viewer_is_refused_with_a_readable_notification(gw: Gateway) -> None:
    app = make_app(gw, caller=VIEWER)
    async with app.run_test(size=SIZE) as pilot:
        app.go("enroll")
        await pilot.pause()
        await pilot.press("a")
        await pilot.pause(0.2)
        messages = [n.message for n in app._notifications]
        assert any("victor (viewer) may not approve enrollments: needs admin" in m for m in messages)
        assert gw.device("newcomer-7f3a").phase is DevicePhase.ENROLLING  # type: ignore[union-attr]


async def test_bad_input_gives_a_notification_and_changes_nothing(gw: Gateway) -> None:
    app = make_app(gw)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        screen = boards(app)
        screen.flush()
        before = cells(app)
        assert screen.select("sim-0001")
        await pilot.press("s")  # a device, not a lab board
        await pilot.pause()
        assert screen.select("bench-b")
        await pilot.press("r")  # a board record but no lab in this gateway
        await pilot.pause(0.2)
        await pilot.press("n")  # no lab: cannot add boards
        await pilot.pause()
        messages = [n.message for n in app._notifications]
        assert any("sim-0001 is a device, not a lab board" in m for m in messages)
        assert any("runs no lab boards" in m for m in messages)
        assert any("runs no lab: boards cannot be added" in m for m in messages)
        assert not any("Traceback" in m for m in messages)
        assert cells(app) == before


async def test_theme_cycle_is_persisted(gw: Gateway, tmp_path: Path) -> None:
    saved: list[str] = []
    app = make_app(gw, on_theme_change=saved.append)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+t")
        await pilot.pause()
        assert app.theme == "wasmbed-light"
        await pilot.press("ctrl+t")
        await pilot.pause()
        assert saved == ["wasmbed-light", "wasmbed-high-contrast"]


async def test_command_palette_lists_every_action(gw: Gateway) -> None:
    app = make_app(gw)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        titles = [c.title for c in app.get_system_commands(app.screen)]
        for wanted in ("Go to logs", "Add board", "Start", "Stop", "Reset", "Delete", "Filter", "Jump",
                       "Theme: wasmbed-high-contrast", "Quit"):
            assert wanted in titles, wanted
        await pilot.press("ctrl+p")
        await pilot.pause()
        assert type(app.screen).__name__ == "CommandPalette"


# -- configuration and themes -------------------------------------------------------------------------------


def test_config_defaults_flags_and_errors(tmp_path: Path) -> None:
    cfg = load_config(tmp_path / "missing.toml")
    assert cfg.theme == "wasmbed-dark" and [b.type for b in cfg.lab_boards] == ["mps2-an385"]
    path = tmp_path / "config.toml"
    path.write_text('# mine\ntheme = "wasmbed-light"\n\n[gateway]\nport = 4433\nheartbeat_interval_s = 2\n'
                    '\n[lab]\nboards = [{ name = "x1", type = "mps2-an386" }]\n')
    cfg = load_config(path)
    assert (cfg.port, cfg.heartbeat_interval_s, cfg.lab_boards[0].name) == (4433, 2, "x1")
    args = cli.parser().parse_args(["--port", "5000", "--board", "a=mps2-an500", "--pairing"])
    cfg = cli.apply_flags(cfg, args)
    assert (cfg.port, cfg.pairing_mode, cfg.lab_boards[0].type) == (5000, True, "mps2-an500")
    with pytest.raises(ConfigError, match="unknown type 'nope'"):
        cli.apply_flags(load_config(path), cli.parser().parse_args(["--board", "a=nope"]))
    path.write_text("[gateway]\nport = 'x'\n")
    with pytest.raises(ConfigError, match="port must be int"):
        load_config(path)
    path.write_text("colour = 1\n")
    with pytest.raises(ConfigError, match="unknown keys"):
        load_config(path)


def test_cli_reports_bad_config_without_traceback(tmp_path: Path, capsys) -> None:
    assert cli.main(["--config", str(tmp_path / "nope.toml")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert cli.main(["--board", "b=unknown-board"]) == 2
    assert "unknown type 'unknown-board'" in capsys.readouterr().err


def test_save_theme_keeps_the_rest_of_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    save_theme(path, "wasmbed-light")
    assert load_config(path).theme == "wasmbed-light"
    path.write_text('# comment\ntheme = "wasmbed-dark"  # old\n\n[gateway]\nport = 1234\n')
    save_theme(path, "wasmbed-high-contrast")
    text = path.read_text()
    assert text.startswith("# comment\ntheme = \"wasmbed-high-contrast\"\n") and "port = 1234" in text


def test_user_themes_load_and_broken_ones_are_reported(tmp_path: Path) -> None:
    themes, problems = load_themes(None)
    assert [t.name for t in themes] == list(SHIPPED_ORDER)
    folder = tmp_path / "themes"
    folder.mkdir()
    (folder / "mine.toml").write_text('name = "mine"\nprimary = "#123456"\n[variables]\nphase-ok = "#00ff00"\n')
    (folder / "broken.toml").write_text('name = "broken"\nprimary = "not-a-colour"\n')
    themes, problems = load_themes(folder)
    assert "mine" in [t.name for t in themes]
    assert len(problems) == 1 and "broken.toml" in problems[0]


async def test_offscreen_rows_are_painted_when_scrolled_to(gw: Gateway) -> None:
    for i in range(120):
        make_device(gw, f"zz-{i:03d}", DevicePhase.CONNECTED)
    app = make_app(gw)
    async with app.run_test(size=(140, 24)) as pilot:
        await pilot.pause()
        screen = boards(app)
        screen.flush()
        assert len(cells(app)) == 127

        def down(d):
            d.set_phase(DevicePhase.DISCONNECTED)

        gw.store.mutate(type(gw.device("zz-119")), "zz-119", down)
        await pilot.pause(0.4)
        assert cells(app)["d:zz-119"][3] == "Connected"  # off screen: deferred, no work spent on it yet
        await pilot.press("ctrl+end")
        await pilot.pause(0.4)
        assert cells(app)["d:zz-119"][3] == "Disconnected"
