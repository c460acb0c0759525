"""Theme files -> Textual themes.

A theme is a TOML file whose keys are :class:`textual.theme.Theme` fields (``name``, ``primary``, ``dark``...)
plus an optional ``[variables]`` table. The shipped ones live in the ``wasmbed.themes`` package; users
add their own as ``<config dir>/themes/*.toml`` (a user theme with a shipped theme's name replaces it).
A broken user file never stops the console: it is skipped and reported.
"""

from __future__ import annotations

import dataclasses
import tomllib
from importlib import resources
from pathlib import Path

from textual.theme import Theme

SHIPPED_ORDER = ("wasmbed-dark", "wasmbed-light", "wasmbed-high-contrast")
#: Console-specific variables every theme gets (a theme file may override them).
CONSOLE_VARIABLES = {
    "phase-ok": "#5fbf6f", "phase-warn": "#e0a030", "phase-bad": "#e05561", "phase-idle": "#7c8595",
    "led-on": "#ff5a3c", "led-off": "#3a404c", "match": "#f0a030",
}
_FIELDS = {f.name for f in dataclasses.fields(Theme)}


class ThemeError(ValueError):
    pass


def parse_theme(text: str, origin: str) -> Theme:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ThemeError(f"{origin}: not valid TOML: {exc}") from None
    unknown = set(data) - _FIELDS
    if unknown:
        raise ThemeError(f"{origin}: unknown keys {sorted(unknown)}; allowed: {sorted(_FIELDS)}")
    for key in ("name", "primary"):
        if not isinstance(data.get(key), str):
            raise ThemeError(f"{origin}: needs a string {key!r}")
    variables = data.get("variables", {})
    if not isinstance(variables, dict) or not all(isinstance(v, str) for v in variables.values()):
        raise ThemeError(f"{origin}: [variables] must map names to colour strings")
    data["variables"] = {**CONSOLE_VARIABLES, **variables}
    try:
        theme = Theme(**data)
        theme.to_color_system()  # validates the colours now, not at the first repaint
    except Exception as exc:
        raise ThemeError(f"{origin}: {exc}") from None
    return theme


def shipped_themes() -> list[Theme]:
    out = []
    for entry in sorted(resources.files("wasmbed.themes").iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".toml"):
            out.append(parse_theme(entry.read_text(encoding="utf-8"), f"wasmbed.themes/{entry.name}"))
    order = {name: i for i, name in enumerate(SHIPPED_ORDER)}
    return sorted(out, key=lambda t: (order.get(t.name, len(order)), t.name))


def user_themes(folder: Path) -> tuple[list[Theme], list[str]]:
    """Themes in ``folder`` (``*.toml``) and a list of problems with the files that were skipped."""
    themes, problems = [], []
    if folder.is_dir():
        for path in sorted(folder.glob("*.toml")):
            try:
                themes.append(parse_theme(path.read_text(encoding="utf-8"), str(path)))
            except (OSError, UnicodeDecodeError) as exc:
                problems.append(f"{path}: {exc}")
            except ThemeError as exc:
                problems.append(str(exc))
    return themes, problems


def load_themes(user_folder: Path | None) -> tuple[list[Theme], list[str]]:
    """Shipped themes, then user themes (same name: the user's wins)."""
    by_name = {t.name: t for t in shipped_themes()}
    problems: list[str] = []
    if user_folder is not None:
        extra, problems = user_themes(user_folder)
        by_name.update({t.name: t for t in extra})
    return list(by_name.values()), problems
