"""What the Apps view, the deploy flow and ``wasmbed run`` need, computed from facade data only (no widgets).

* where an app comes from (:func:`resolve_source`: a ``.wasm``/``.wat`` path or the name of an example app);
* the first-run catalog (:func:`add_examples`: the examples of ``apps/``, built into the cache);
* ``key=value`` parsing for config maps and label selectors;
* which devices an Application targets and how each one is doing (:func:`target_states`), including the
  case the reconciler keeps quiet about: a target that is not connected stays *Deploying* until it is,
  which the console shows as "waiting for device", not as an error.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from wasmbed.gateway.facade import Caller, Gateway
from wasmbed.gateway.model import (
    LAB_BOARD_LABEL,
    AppDevicePhase,
    AppDeviceStatus,
    Application,
    AppModule,
    DevicePhase,
)

EXAMPLE_VERSION = "example"
SOURCE_SUFFIXES = (".wasm", ".wat")


class SourceError(ValueError):
    """An app source that cannot be used (missing file, unknown example); the message says which."""


# -- sources and examples ------------------------------------------------------------------------------------


def example_names() -> list[str]:
    from wasmbed.gateway.examples import BuildError, examples

    try:
        return [e.name for e in examples()]
    except BuildError:
        return []


def resolve_source(text: str) -> Path:
    """A path to a ``.wasm``/``.wat`` file, or an example app's name (built into the cache on demand)."""
    text = text.strip()
    if not text:
        raise SourceError("no app given: a .wasm or .wat path, or an example name")
    path = Path(text).expanduser()
    if path.is_file():
        return path
    if path.exists():
        raise SourceError(f"{path} is not a file")
    names = example_names()
    if text in names:
        from wasmbed.gateway.examples import BuildError, build

        try:
            return build(names=[text])[text]
        except BuildError as exc:
            raise SourceError(f"example {text}: {exc}") from None
    hint = f"; examples: {', '.join(names)}" if names else ""
    if path.suffix in SOURCE_SUFFIXES or "/" in text:
        raise SourceError(f"no such file: {path}")
    raise SourceError(f"{text!r} is neither a .wasm/.wat file nor an example app{hint}")


async def add_examples(gw: Gateway, caller: Caller) -> list[str]:
    """Build the example apps (C ones only if clang is installed) and add those the catalog lacks."""
    import asyncio

    from wasmbed.gateway.examples import build

    built = await asyncio.to_thread(build, skip_missing_compiler=True)
    have = {m.name for m in gw.apps()}
    added = []
    for name, path in built.items():
        if name not in have:
            await gw.add_app(caller, path, name=name, version=EXAMPLE_VERSION)
            added.append(name)
    return added


# -- key=value ----------------------------------------------------------------------------------------------------

_PAIR_SPLIT = re.compile(r"[\s,]+")


def parse_pairs(items: str | Iterable[str], what: str = "config") -> dict[str, str]:
    """``"a=1 b=2"``, ``"a=1,b=2"`` or ``["a=1", "b=2"]`` -> ``{"a": "1", "b": "2"}``; a bad item raises."""
    if isinstance(items, str):
        items = [p for p in _PAIR_SPLIT.split(items.strip()) if p]
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{what}: {item!r} is not key=value")
        out[key.strip()] = value.strip()
    return out


def matches(labels: Mapping[str, str], selector: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# -- catalog ------------------------------------------------------------------------------------------------------


@lru_cache(maxsize=256)
def fit_problems(sha256: str, module: bytes, board_types: tuple[str, ...]) -> tuple[str, ...]:
    """Board types of the fleet this module cannot run on (too big, no runtime); cached per module."""
    from wasmbed.gateway.validate import ValidationError, check_fits, validate_module

    try:
        info = validate_module(module)
    except ValidationError as exc:  # cannot happen for a catalog entry; shown if it does
        return (f"invalid: {exc}",)
    out = []
    for t in board_types:
        try:
            check_fits(info, t)
        except ValidationError:
            out.append(t)
    return tuple(out)


def validation_text(gw: Gateway, entry: AppModule, board_types: Iterable[str]) -> tuple[str, str]:
    """(text, style class) of the VALIDATION cell: valid for the ABI, and which fleet boards cannot run it."""
    try:
        module = gw.catalog.module(entry.spec.module_sha256)
    except Exception as exc:
        return (f"module missing: {exc}", "bad")
    bad = fit_problems(entry.spec.module_sha256, module, tuple(sorted(set(board_types))))
    if not bad:
        return ("✓ ABI v1", "ok")
    if bad[0].startswith("invalid"):
        return (bad[0], "bad")
    return ("✓ ABI v1 · not for " + ", ".join(bad), "warn")


# -- deployments ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TargetState:
    """One target device of an Application, as the console shows it."""

    device: str
    board: str | None  # lab board name, if the device is one
    phase: str  # Deploying | Running | Failed | Stopped | waiting for device | pending
    style: str  # ok | warn | bad | idle
    error: str | None
    restarts: int
    bytes_sent: int
    size: int
    entry: AppDeviceStatus | None

    @property
    def label(self) -> str:
        return f"{self.board} ({self.device})" if self.board else self.device

    @property
    def done(self) -> bool:
        return self.phase in ("Running", "Failed", "Stopped")

    @property
    def progress(self) -> float | None:
        return self.bytes_sent / self.size if self.size else None


PHASE_STYLE = {"Running": "ok", "Failed": "bad", "Stopped": "idle", "Deploying": "warn",
               "waiting for device": "warn", "pending": "idle"}


def targets_of(gw: Gateway, app: Application) -> list[str]:
    """Device names an Application targets (named devices plus selector matches), plus any with an entry."""
    names = set(app.spec.targets.devices)
    if app.spec.targets.selector:
        names |= {d.name for d in gw.devices() if matches(d.metadata.labels, app.spec.targets.selector)}
    names |= {e.device for e in app.status.devices}
    return sorted(names)


def target_states(gw: Gateway, app: Application) -> list[TargetState]:
    out = []
    for name in targets_of(gw, app):
        dev = gw.device(name)
        board = dev.metadata.labels.get(LAB_BOARD_LABEL) if dev is not None else None
        connected = dev is not None and dev.phase is DevicePhase.CONNECTED
        entry = app.status.entry(name)
        if entry is None:
            phase = "Deploying" if connected else "waiting for device"
            if app.spec.desired_state.value == "Stopped":
                phase = "pending"
            out.append(TargetState(name, board, phase, PHASE_STYLE[phase], None, 0, 0, 0, None))
            continue
        phase = entry.phase.value
        if entry.phase is AppDevicePhase.DEPLOYING and not connected:
            phase = "waiting for device"
        out.append(TargetState(name, board, phase, PHASE_STYLE.get(phase, ""), entry.error, entry.restarts,
                               entry.bytes_sent, entry.size, entry))
    return out


def device_reason(gw: Gateway, name: str) -> str:
    """Why a target waits: its device's phase (Disconnected, Unreachable, unknown)."""
    dev = gw.device(name)
    return "no such device" if dev is None else dev.phase.value


def progress_bar(sent: int, size: int, width: int = 10) -> str:
    if not size:
        return ""
    filled = min(width, round(width * sent / size))
    return "█" * filled + "░" * (width - filled) + f" {100 * sent // size:3d}%"


def apps_on_device(apps: Iterable[Application], device: str) -> list[tuple[Application, AppDeviceStatus | None]]:
    """Applications with an entry for (or naming) ``device``, by app name."""
    out = []
    for a in sorted(apps, key=lambda a: a.name):
        entry = a.status.entry(device)
        if entry is not None or device in a.spec.targets.devices:
            out.append((a, entry))
    return out


def fmt_board_apps(items: list[tuple[str, str]]) -> tuple[str, str]:
    """APPS cell of the boards view from (app name, phase) pairs: text and style class."""
    if not items:
        return ("", "")
    failed = [n for n, p in items if p == "Failed"]
    deploying = [n for n, p in items if p == "Deploying"]
    running = [n for n, p in items if p == "Running"]
    if len(items) == 1:
        name, phase = items[0]
        word = {"Running": "", "Failed": " failed", "Deploying": " deploy…", "Stopped": " stopped"}.get(phase, "")
        return (f"{name}{word}", PHASE_STYLE.get(phase, ""))
    if failed:
        return (f"{len(running)} run/{len(failed)} fail", "bad")
    if deploying:
        return (f"deploying {len(deploying)}/{len(items)}", "warn")
    return (f"{len(running)} running" + (f" +{len(items) - len(running)}" if len(items) > len(running) else ""),
            "ok" if running else "idle")
