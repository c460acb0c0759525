"""Apps end to end on simulated devices: catalog, validation, deployment, lifecycle, failures, restart
policy, updates, link loss, logs and pub/sub (the QEMU versions live in the lead's tests)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from linkkit import gateway_config, sim, wait_for

from wasmbed.gateway import examples
from wasmbed.gateway.facade import SYSTEM, Caller, Gateway, GatewayError, PermissionDenied, Role, ValidationError
from wasmbed.gateway.model import AppDevicePhase, Application, AppLimits, AppModule, AppPhase
from wasmbed.gateway.simulator import SimBoardIO, SimDevice

OPERATOR = Caller("otto", Role.OPERATOR)
VIEWER = Caller("vera", Role.VIEWER)

HELLO_V2 = """(module
  (import "wasmbed" "log" (func $log (param i32 i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "hello v2")
  (func (export "app_start") (result i32) (call $log (i32.const 1) (i32.const 0) (i32.const 8)) (i32.const 0)))"""

ECHO = """(module
  (import "wasmbed" "log" (func $log (param i32 i32 i32)))
  (import "wasmbed" "publish" (func $publish (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "app_start") (result i32) (i32.const 0))
  (func (export "msg_buffer") (result i32) (i32.const 4096))
  (func (export "on_message") (param $t i32) (param $tl i32) (param $d i32) (param $dl i32)
    (call $log (i32.const 1) (local.get $d) (local.get $dl))
    (drop (call $publish (local.get $t) (local.get $tl) (local.get $d) (local.get $dl)))))"""

# ~20 KiB of data: many chunks, so a transfer can be cut in the middle.
BIG = f"""(module
  (import "wasmbed" "log" (func $log (param i32 i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "big app up")
  (data (i32.const 64) "{'x' * 20000}")
  (func (export "app_start") (result i32) (call $log (i32.const 1) (i32.const 0) (i32.const 10)) (i32.const 0)))"""


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return examples.build(tmp_path_factory.mktemp("apps"), skip_missing_compiler=True)


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    g = Gateway(gateway_config(tmp_path / "gw", pairing=False))
    await g.start()
    yield g
    bugs = g.events.recent(kind="bug.")
    await g.stop()
    assert not bugs, bugs


async def device(gw: Gateway, directory: Path, **kw: object) -> SimDevice:
    d = sim(gw, directory, token=await gw.issue_enrollment_token(SYSTEM), **kw)
    d.start()
    await asyncio.wait_for(d.connected.wait(), 10)
    await wait_for(lambda: d.acks_received >= 1, 5, "first heartbeat")
    return d


def entry_phase(gw: Gateway, app: str, dev: SimDevice) -> AppDevicePhase | None:
    a = gw.application(app)
    e = a.status.entry(dev.name) if a and dev.name else None
    return e.phase if e else None


async def wait_entry(gw: Gateway, app: str, dev: SimDevice, phase: AppDevicePhase, timeout: float = 10) -> None:
    await wait_for(lambda: entry_phase(gw, app, dev) is phase, timeout,
                   f"{app} {phase.value} on {dev.name} (is {entry_phase(gw, app, dev)})")


def logs(gw: Gateway, text: str, device: str | None = None) -> list[str]:
    return [e.fields["app"] for e in gw.events.recent(kind="app.log")
            if e.fields.get("text") == text and (device is None or e.device == device)]


# -- validation (nothing stored, nothing sent) ---------------------------------------------------------


def test_examples_build_incrementally(built: dict[str, Path], tmp_path: Path) -> None:
    assert {"hello", "blinky", "thermostat", "runaway", "trap"} <= set(built)
    for path in built.values():
        assert path.read_bytes()[:4] == b"\0asm"
    out = built["hello"].parent
    ex = next(e for e in examples.examples() if e.name == "hello")
    assert examples.build_one(ex, out) == (built["hello"], False)  # up to date: not rebuilt


@pytest.mark.parametrize(("source", "message"), [
    (b"\0asm\x01\0\0\0\x01\x05", "invalid WebAssembly module"),
    ("(module (func", "invalid WAT"),
    ('(module (import "env" "log" (func (param i32 i32 i32))) (func (export "app_start") (result i32) i32.const 0))',
     "import env.log: imports must come from module 'wasmbed'"),
    ('(module (import "wasmbed" "sleep" (func (param i32))) (func (export "app_start") (result i32) i32.const 0))',
     "import wasmbed.sleep: unknown function"),
    ('(module (import "wasmbed" "timer_set" (func (param i32 i32) (result i32)))'
     ' (func (export "app_start") (result i32) i32.const 0))',
     "import wasmbed.timer_set: signature (i32, i32) -> i32, ABI version 1 needs (i32, i32, i32) -> i32"),
    ('(module (func (export "start") (result i32) i32.const 0))', "export app_start missing"),
    ('(module (func (export "app_start")))', "export app_start: signature () -> (), the ABI needs () -> i32"),
    ('(module (import "wasmbed" "log" (func (param i32 i32 i32)))'
     ' (func (export "app_start") (result i32) i32.const 0))', "export memory missing: log pass pointers"),
    ('(module (memory (export "memory") 1) (func (export "app_start") (result i32) i32.const 0)'
     ' (func (export "on_message") (param i32 i32 i32 i32)))', "export on_message needs export msg_buffer"),
    ('(module (import "wasmbed" "memory" (memory 1)) (func (export "app_start") (result i32) i32.const 0))',
     "import wasmbed.memory: only functions can be imported"),
])
async def test_invalid_modules_are_refused_before_anything_is_stored(gw: Gateway, source: bytes | str,
                                                                     message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        await gw.add_app(OPERATOR, source, name="bad")
    assert gw.apps() == [] and not any(gw.catalog.modules.root.iterdir())


async def test_valid_examples_pass(gw: Gateway, built: dict[str, Path]) -> None:
    for name, path in built.items():
        entry = await gw.add_app(OPERATOR, path)
        assert entry.name == name and entry.spec.size == path.stat().st_size
    wat = await gw.add_app(OPERATOR, Path(examples.APPS_DIR / "hello.wat"), name="hello-wat", version="1.0")
    assert wat.spec.module_sha256 == gw.app("hello").spec.module_sha256  # type: ignore[union-attr]
    stored = gw.catalog.modules.path(wat.spec.module_sha256)
    assert stored.stat().st_mode & 0o777 == 0o600


async def test_boards_that_cannot_hold_the_app_are_refused(gw: Gateway, tmp_path: Path) -> None:
    two_pages = ('(module (import "wasmbed" "log" (func (param i32 i32 i32))) (memory (export "memory") 2)'
                 ' (func (export "app_start") (result i32) i32.const 0))')
    await gw.add_app(OPERATOR, two_pages, name="wide")
    await gw.add_app(OPERATOR, HELLO_V2, name="small")
    olimex = await device(gw, tmp_path / "o", board="olimex-stm32-h405")
    tiny = await device(gw, tmp_path / "t", board="stm32vldiscovery")
    with pytest.raises(ValidationError, match=r"target device .*: does not fit board olimex-stm32-h405: needs 134 KiB "
                                              r"\(2 initial memory pages.*128 KiB RAM.*= \d+ KiB for apps"):
        await gw.deploy(OPERATOR, "wide", [olimex.name])  # type: ignore[list-item]
    with pytest.raises(ValidationError, match=r"board stm32vldiscovery cannot run apps: .* lacks capability "
                                              r"wasm-runtime: needs >= 96 KiB RAM, .* declares 8 KiB"):
        await gw.deploy(OPERATOR, "small", [tiny.name])  # type: ignore[list-item]
    with pytest.raises(ValidationError, match=r"limits\.memoryPages 1 is below the module's initial memory of 2"):
        await gw.deploy(OPERATOR, "wide", [tiny.name], limits=AppLimits(memory_pages=1))  # type: ignore[list-item]
    assert gw.applications() == [] and not olimex.runtime.apps and not tiny.runtime.apps
    await gw.deploy(OPERATOR, "small", [olimex.name])  # type: ignore[list-item]  # one small page fits
    await wait_entry(gw, "small", olimex, AppDevicePhase.RUNNING)
    await olimex.stop()
    await tiny.stop()


async def test_viewer_cannot_deploy(gw: Gateway) -> None:
    await gw.add_app(OPERATOR, HELLO_V2, name="hello")
    for call in (lambda c: gw.add_app(c, HELLO_V2, name="x"), lambda c: gw.deploy(c, "hello", ["d"]),
                 lambda c: gw.stop_app(c, "hello"), lambda c: gw.start_app(c, "hello"),
                 lambda c: gw.undeploy(c, "hello"), lambda c: gw.update_app(c, "hello", HELLO_V2),
                 lambda c: gw.send_message(c, "hello", "d", "t", b"")):
        with pytest.raises(PermissionDenied):
            await call(VIEWER)
    assert gw.applications() == [] and [a.name for a in gw.apps()] == ["hello"]
    assert len(gw.events.recent(kind="audit.denied")) == 7


# -- deployment and lifecycle on simulated devices ---------------------------------------------------------


async def test_deploy_stop_start_undeploy(gw: Gateway, built: dict[str, Path], tmp_path: Path) -> None:
    d1, d2 = await device(gw, tmp_path / "d1"), await device(gw, tmp_path / "d2")
    await gw.add_app(OPERATOR, built["hello"])
    feed = gw.events_feed(history=False)
    app = await gw.deploy(OPERATOR, "hello", [d1.name, d2.name])  # type: ignore[list-item]
    assert app.status.phase is AppPhase.CREATING
    for d in (d1, d2):
        await wait_entry(gw, "hello", d, AppDevicePhase.RUNNING)
    await wait_for(lambda: gw.application("hello").status.phase is AppPhase.RUNNING, 5, "Running")  # type: ignore
    seen: set[str] = set()
    async with asyncio.timeout(5):
        async for ev in feed:
            if ev.kind == "app.log" and ev.fields["text"] == "hello from wasm":
                assert ev.fields["app"] == "hello" and ev.fields["log_level"] == "info"
                seen.add(ev.device)  # type: ignore[arg-type]
                if seen == {d1.name, d2.name}:
                    break
    feed.close()
    entry = gw.application("hello").status.entry(d1.name)  # type: ignore[union-attr, arg-type]
    assert entry.app_id == 1 and entry.bytes_sent == entry.size == built["hello"].stat().st_size  # type: ignore

    await gw.stop_app(OPERATOR, "hello")
    for d in (d1, d2):
        await wait_entry(gw, "hello", d, AppDevicePhase.STOPPED)
    await wait_for(lambda: gw.application("hello").status.phase is AppPhase.STOPPED, 5, "Stopped")  # type: ignore
    assert all(a.state == 2 for a in d1.runtime.apps.values())
    n = len(logs(gw, "hello from wasm", d1.name))
    await asyncio.sleep(1.3)
    assert len(logs(gw, "hello from wasm", d1.name)) == n  # its timer stopped with it

    await gw.start_app(OPERATOR, "hello")
    await wait_entry(gw, "hello", d1, AppDevicePhase.RUNNING)
    await wait_for(lambda: len(logs(gw, "hello from wasm", d1.name)) > n, 5, "logging again")

    assert await gw.undeploy(OPERATOR, "hello") is True
    assert gw.application("hello") is None
    assert d1.runtime.apps == {} and d2.runtime.apps == {}
    assert gw.app("hello") is not None  # still in the catalog
    await d1.stop()
    await d2.stop()


async def test_deploy_to_a_device_that_connects_later_and_by_selector(gw: Gateway, built: dict[str, Path],
                                                                     tmp_path: Path) -> None:
    await gw.add_app(OPERATOR, built["hello"])
    await gw.deploy(OPERATOR, "hello", {"wasmbed.github.io/board": "mps2-an385"})
    assert gw.application("hello").status.phase is AppPhase.CREATING  # type: ignore[union-attr]
    late = await device(gw, tmp_path / "late")
    await wait_entry(gw, "hello", late, AppDevicePhase.RUNNING)
    await wait_for(lambda: logs(gw, "hello from wasm", late.name), 5, "its log line")
    await late.stop()


async def test_update_replaces_the_old_module(gw: Gateway, built: dict[str, Path], tmp_path: Path) -> None:
    d = await device(gw, tmp_path / "d")
    await gw.add_app(OPERATOR, built["hello"], version="1")
    await gw.deploy(OPERATOR, "hello", [d.name])  # type: ignore[list-item]
    await wait_entry(gw, "hello", d, AppDevicePhase.RUNNING)
    old_id = gw.application("hello").status.entry(d.name).app_id  # type: ignore[union-attr, arg-type]
    with pytest.raises(ValidationError):
        await gw.update_app(OPERATOR, "hello", "(module)")
    updated = await gw.update_app(OPERATOR, "hello", HELLO_V2, version="2")
    assert updated.spec.version == "2" and gw.app("hello").spec.version == "2"  # type: ignore[union-attr]
    await wait_for(lambda: logs(gw, "hello v2", d.name), 10, "the new version's log line")
    await wait_entry(gw, "hello", d, AppDevicePhase.RUNNING)
    entry = gw.application("hello").status.entry(d.name)  # type: ignore[union-attr, arg-type]
    assert entry.app_id != old_id and list(d.runtime.apps) == [entry.app_id]  # type: ignore[union-attr]
    await d.stop()


async def test_link_drop_mid_transfer_completes_after_reconnect(gw: Gateway, tmp_path: Path) -> None:
    d = await device(gw, tmp_path / "d")
    d.drop_after_chunks = 3
    entry = await gw.add_app(OPERATOR, BIG, name="big")
    assert entry.spec.size > 10 * 1536
    await gw.deploy(OPERATOR, "big", [d.name])  # type: ignore[list-item]
    await wait_for(lambda: d.sessions >= 2, 10, "the reconnect")
    await wait_entry(gw, "big", d, AppDevicePhase.RUNNING, 15)
    await wait_for(lambda: logs(gw, "big app up", d.name), 5, "the app's log line")
    e = gw.application("big").status.entry(d.name)  # type: ignore[union-attr, arg-type]
    assert e.bytes_sent == e.size == entry.spec.size and e.app_id == 1  # type: ignore[union-attr]
    assert d.chunks_received > entry.spec.size // 1536 + 1  # some chunks were sent twice
    await d.stop()


async def test_runaway_fails_while_hello_keeps_logging(gw: Gateway, built: dict[str, Path], tmp_path: Path) -> None:
    d = await device(gw, tmp_path / "d")
    await gw.add_app(OPERATOR, built["hello"])
    await gw.add_app(OPERATOR, built["runaway"])
    await gw.deploy(OPERATOR, "hello", [d.name])  # type: ignore[list-item]
    await gw.deploy(OPERATOR, "runaway", [d.name], limits=AppLimits(time_budget_ms=300))  # type: ignore[list-item]
    await wait_entry(gw, "runaway", d, AppDevicePhase.FAILED)
    e = gw.application("runaway").status.entry(d.name)  # type: ignore[union-attr, arg-type]
    assert e.error == "time budget exceeded" and e.metrics.traps == 1  # type: ignore[union-attr]
    assert e.metrics.max_call_ms >= 290  # type: ignore[union-attr]
    assert gw.application("runaway").status.phase is AppPhase.FAILED  # type: ignore[union-attr]
    assert any("runaway failed" in ev.message for ev in gw.events.recent(kind="app.failed"))
    n = len(logs(gw, "hello from wasm", d.name))
    await wait_for(lambda: len(logs(gw, "hello from wasm", d.name)) >= n + 2, 5, "hello still logging")
    assert entry_phase(gw, "hello", d) is AppDevicePhase.RUNNING
    await d.stop()


async def test_trap_fails_with_the_trap_message(gw: Gateway, built: dict[str, Path], tmp_path: Path) -> None:
    d = await device(gw, tmp_path / "d")
    await gw.add_app(OPERATOR, built["trap"])
    await gw.deploy(OPERATOR, "trap", [d.name])  # type: ignore[list-item]
    await wait_entry(gw, "trap", d, AppDevicePhase.FAILED)
    await asyncio.sleep(0.5)
    e = gw.application("trap").status.entry(d.name)  # type: ignore[union-attr, arg-type]
    assert e.error == "out of bounds memory access" and e.restarts == 0  # type: ignore[union-attr]
    await d.stop()


async def test_restart_policy_on_failure_restarts_and_counts(gw: Gateway, built: dict[str, Path],
                                                              tmp_path: Path) -> None:
    d = await device(gw, tmp_path / "d")
    await gw.add_app(OPERATOR, built["trap"])
    await gw.deploy(OPERATOR, "trap", [d.name], restart_policy="on-failure")  # type: ignore[list-item]

    def restarts() -> int:
        e = gw.application("trap").status.entry(d.name)  # type: ignore[union-attr, arg-type]
        return e.restarts if e else 0

    await wait_for(lambda: restarts() >= 3, 10, f"three restarts (has {restarts()})")
    assert len(gw.events.recent(kind="app.restarted")) >= 3
    assert d.runtime.apps[1].restarts >= 3  # the device counts them too
    await d.stop()


async def test_publish_message_and_board_io(gw: Gateway, built: dict[str, Path], tmp_path: Path) -> None:
    io = SimBoardIO(leds=2, temperature_mdeg=31_500)
    d = await device(gw, tmp_path / "d", board_io=io)
    bare = await device(gw, tmp_path / "bare")
    await gw.add_app(OPERATOR, built["thermostat"])
    await gw.deploy(OPERATOR, "thermostat", [d.name, bare.name])  # type: ignore[list-item]
    await wait_for(lambda: [e for e in gw.events.recent(kind="app.publish") if e.device == d.name], 5, "a reading")
    ev = next(e for e in gw.events.recent(kind="app.publish") if e.device == d.name)
    assert (ev.fields["topic"], ev.fields["payload"], ev.fields["app"]) == ("temperature", b"31.500", "thermostat")
    assert io.led_state == [True, False]  # above the default 30000 threshold
    io.temperature_mdeg = -2_250
    await wait_for(lambda: d.runtime.published[-1][2] == b"-2.250" and io.led_state == [False, False], 5,
                   "negative reading, LED off")
    await wait_for(lambda: logs(gw, "thermostat: no temperature sensor", bare.name), 5, "ENOTSUP warning")
    assert not [p for p in bare.runtime.published]

    await gw.add_app(OPERATOR, ECHO, name="echo")
    await gw.deploy(OPERATOR, "echo", [d.name])  # type: ignore[list-item]
    await wait_entry(gw, "echo", d, AppDevicePhase.RUNNING)
    await gw.send_message(OPERATOR, "echo", d.name, "ping", b"pong 1")  # type: ignore[arg-type]
    await wait_for(lambda: logs(gw, "pong 1", d.name), 5, "on_message ran")
    assert any(e.fields["topic"] == "ping" and e.fields["payload"] == b"pong 1"
               for e in gw.events.recent(kind="app.publish"))
    with pytest.raises(GatewayError, match="no instance"):
        await gw.send_message(OPERATOR, "echo", bare.name, "ping", b"")  # type: ignore[arg-type]
    await d.stop()
    await bare.stop()


async def test_config_reaches_config_get(gw: Gateway, built: dict[str, Path], tmp_path: Path) -> None:
    io = SimBoardIO(leds=1)
    d = await device(gw, tmp_path / "d", board_io=io)
    await gw.add_app(OPERATOR, built["blinky"])
    await gw.deploy(OPERATOR, "blinky", [d.name], config={"period_ms": "20"})  # type: ignore[list-item]
    await wait_entry(gw, "blinky", d, AppDevicePhase.RUNNING)
    await wait_for(lambda: d.runtime.apps[1].calls >= 15, 3, "a 20 ms period")
    with pytest.raises(ValidationError, match=r"config: .* bytes encoded"):
        await gw.add_app(OPERATOR, built["hello"])
        await gw.deploy(OPERATOR, "hello", [d.name], config={"k": "v" * 600})  # type: ignore[list-item]
    await d.stop()


async def test_resources_round_trip(gw: Gateway, built: dict[str, Path]) -> None:
    await gw.add_app(OPERATOR, built["hello"])
    (entry,) = gw.store.list(AppModule)
    assert AppModule.from_dict(entry.to_dict()) == entry
    with pytest.raises(GatewayError, match="no device"):
        await gw.deploy(OPERATOR, "hello", ["nope"])
    assert gw.store.list(Application) == []


def test_sim_board_io_from_the_device_tree() -> None:
    an385 = SimBoardIO.from_dts("mps2-an385", temperature_mdeg=20_000)
    assert (an385.leds, an385.i2c_buses, an385.temperature_mdeg) == (2, 1, 20_000)
    olimex = SimBoardIO.from_dts("olimex-stm32-h405")
    assert (olimex.leds, olimex.i2c_buses, olimex.temperature_mdeg) == (0, 0, None)
    assert SimBoardIO().leds == 0  # the default simulated board has no hardware


def test_abi_doc_examples_are_valid(tmp_path: Path) -> None:
    import shutil
    import subprocess

    from wasmbed.gateway.validate import IMPORTS, validate_module

    doc = (examples.APPS_DIR.parent / "docs" / "abi.md").read_text()
    wat = re.search(r"```wat\n(.*?)```", doc, flags=re.S).group(1)  # type: ignore[union-attr]
    info = validate_module(wat)
    assert set(info.imports) == set(IMPORTS)  # the example shows every import
    c = re.search(r"```c\n(.*?)```", doc, flags=re.S).group(1)  # type: ignore[union-attr]
    clang = examples.find_clang()
    if clang is None or shutil.which("wasm-ld") is None:
        pytest.skip("clang/wasm-ld not installed")
    src = tmp_path / "example.c"
    src.write_text(c)
    out = tmp_path / "example.wasm"
    flags = [f for f in examples.C_FLAGS if f not in ("-Wextra", "-Werror")]
    res = subprocess.run([clang, *flags, f"-I{examples.APPS_DIR / 'c'}", "-o", str(out), str(src)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert {"app_start", "on_timer", "msg_buffer", "on_message"} <= set(validate_module(out).exports)
