"""Console configuration: ``config.toml`` in the platformdirs config dir, overridable by CLI flags.

The file is optional; every key has a default. It is read with :mod:`tomllib` and only ever written
to persist the theme choice, by rewriting (or appending) the one top-level ``theme = "..."`` line so
the user's comments and layout survive. Example (also what :data:`EXAMPLE` documents)::

    theme = "wasmbed-dark"

    [gateway]
    port = 0                    # device TLS listener; 0 picks a free port at every start
    heartbeat_interval_s = 5
    unreachable_timeout_s = 15
    pairing_mode = false        # always starts off unless set here or with --pairing

    [lab]
    # boards added when the store has none (first run); type is a dts/ board name
    boards = [{ name = "board-1", type = "mps2-an385" }]
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from wasmbed import paths
from wasmbed.dts import board_names

CONFIG_FILE = "config.toml"
DEFAULT_THEME = "wasmbed-dark"
DEFAULT_LAB = (("board-1", "mps2-an385"),)
EXAMPLE = __doc__.split("::", 1)[1] if __doc__ else ""


class ConfigError(ValueError):
    """config.toml (or a flag) holds something unusable; the message names the file and key."""


@dataclass(frozen=True)
class LabBoard:
    name: str
    type: str


@dataclass
class ConsoleConfig:
    theme: str = DEFAULT_THEME
    port: int = 0
    heartbeat_interval_s: int = 5
    unreachable_timeout_s: int = 15
    pairing_mode: bool = False
    lab_boards: list[LabBoard] = field(default_factory=lambda: [LabBoard(n, t) for n, t in DEFAULT_LAB])
    path: Path | None = None  # where it was read from / the theme is persisted to

    def validate(self) -> ConsoleConfig:
        where = str(self.path or CONFIG_FILE)
        if not 0 <= self.port < 65536:
            raise ConfigError(f"{where}: gateway.port {self.port} is not a TCP port (0..65535)")
        if not 1 <= self.heartbeat_interval_s < self.unreachable_timeout_s:
            raise ConfigError(f"{where}: need 1 <= gateway.heartbeat_interval_s ({self.heartbeat_interval_s}) < "
                              f"gateway.unreachable_timeout_s ({self.unreachable_timeout_s})")
        known = board_names()
        for b in self.lab_boards:
            if b.type not in known:
                raise ConfigError(f"{where}: lab board {b.name!r} has unknown type {b.type!r}; known types: "
                                  f"{', '.join(known)}")
        return self


def config_path() -> Path:
    return paths.config_dir() / CONFIG_FILE


def _get(table: dict[str, object], key: str, kind: type, where: str, default: object) -> object:
    value = table.get(key, default)
    if (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
        raise ConfigError(f"{where}: {key} must be {kind.__name__}, not {type(value).__name__} ({value!r})")
    return value


def load_config(path: Path | None = None) -> ConsoleConfig:
    """Read config.toml (a missing file gives the defaults); :class:`ConfigError` on bad content."""
    path = path or config_path()
    cfg = ConsoleConfig(path=path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return cfg
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    unknown = set(data) - {"theme", "gateway", "lab"}
    if unknown:
        raise ConfigError(f"{path}: unknown keys {sorted(unknown)} (known: theme, [gateway], [lab])")
    cfg.theme = str(_get(data, "theme", str, str(path), cfg.theme))
    gw = data.get("gateway", {})
    if not isinstance(gw, dict):
        raise ConfigError(f"{path}: [gateway] must be a table")
    unknown = set(gw) - {"port", "heartbeat_interval_s", "unreachable_timeout_s", "pairing_mode"}
    if unknown:
        raise ConfigError(f"{path}: unknown keys in [gateway]: {sorted(unknown)}")
    where = f"{path} [gateway]"
    cfg.port = int(_get(gw, "port", int, where, cfg.port))  # type: ignore[call-overload]
    cfg.heartbeat_interval_s = int(_get(gw, "heartbeat_interval_s", int, where, cfg.heartbeat_interval_s))  # type: ignore[call-overload]
    cfg.unreachable_timeout_s = int(_get(gw, "unreachable_timeout_s", int, where, cfg.unreachable_timeout_s))  # type: ignore[call-overload]
    cfg.pairing_mode = bool(_get(gw, "pairing_mode", bool, where, cfg.pairing_mode))
    lab = data.get("lab", {})
    if not isinstance(lab, dict) or set(lab) - {"boards"}:
        raise ConfigError(f"{path}: [lab] must be a table with only a boards list")
    if "boards" in lab:
        boards = lab["boards"]
        if not isinstance(boards, list):
            raise ConfigError(f"{path}: lab.boards must be a list of {{ name = ..., type = ... }}")
        cfg.lab_boards = []
        for i, item in enumerate(boards):
            if not isinstance(item, dict) or set(item) != {"name", "type"} or not all(
                    isinstance(v, str) for v in item.values()):
                raise ConfigError(f"{path}: lab.boards[{i}] must be {{ name = \"...\", type = \"...\" }}")
            cfg.lab_boards.append(LabBoard(item["name"], item["type"]))
    return cfg.validate()


_THEME_LINE = re.compile(r'^theme\s*=.*$', re.MULTILINE)


def save_theme(path: Path, theme: str) -> None:
    """Persist the theme: replace the top-level ``theme = ...`` line (or add one), keep everything else."""
    line = f"theme = {_toml_string(theme)}"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = ""
    head, sep, tail = text.partition("\n[")  # top-level keys come before the first table
    if _THEME_LINE.search(head):
        head = _THEME_LINE.sub(line.replace("\\", "\\\\"), head, count=1)
    else:
        head = line + "\n" + head
    new = head + sep + tail
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(new, encoding="utf-8")
    os.replace(tmp, path)


def _toml_string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
