"""App modules: a content-addressed module store on disk and the catalog of apps (``AppModule`` resources).

Why content-addressed (``<data dir>/modules/<sha256>.wasm``, 0600): the SHA-256 is what the device
verifies at ``deploy_commit``, what an Application's spec names, and the file name, so the three can
never disagree; the same module added twice is stored once. Modules are validated (validate.py)
before anything is written.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .model import AppModule, AppModuleSpec, ObjectMeta, validate_name
from .store import Store
from .validate import ModuleInfo, ValidationError, validate_module

MODULES_DIR = "modules"
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


class ModuleStore:
    """``<root>/<sha256>.wasm`` files, written atomically, private (0600 files in a 0700 folder)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        if not _SHA_RE.match(sha256):
            raise ValueError(f"not a SHA-256 hex digest: {sha256!r}")
        return self.root / f"{sha256}.wasm"

    def has(self, sha256: str) -> bool:
        return self.path(sha256).exists()

    def put(self, info: ModuleInfo) -> Path:
        path = self.path(info.sha256)
        if path.exists():
            return path
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(info.wasm)
        os.replace(tmp, path)
        return path

    def get(self, sha256: str) -> bytes:
        try:
            return self.path(sha256).read_bytes()
        except FileNotFoundError:
            raise KeyError(f"module {sha256} is not in the module store") from None

    def remove(self, sha256: str) -> bool:
        try:
            self.path(sha256).unlink()
            return True
        except FileNotFoundError:
            return False


def app_name_from(source: object, name: str | None) -> str:
    """The catalog name: given, or the file stem made DNS-1123 (``Thermostat_v2.wasm`` -> ``thermostat-v2``)."""
    if name is None:
        if not isinstance(source, Path):
            raise ValidationError("a name is needed when the module is given as bytes")
        name = re.sub(r"[^a-z0-9-]+", "-", source.stem.lower()).strip("-") or "app"
    try:
        return validate_name(name)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


class Catalog:
    """Apps by name: the AppModule resource (metadata) plus the bytes in the module store."""

    def __init__(self, store: Store, modules: ModuleStore) -> None:
        self.store = store
        self.modules = modules

    def add(self, source: bytes | str | Path, *, name: str | None = None, version: str | None = None,
            added_by: str | None = None) -> tuple[AppModule, ModuleInfo]:
        """Validate, store and record a module; an existing name gets the new module as its current version."""
        app_name = app_name_from(source, name)
        info = validate_module(source)
        version = version or info.sha256[:12]
        if len(version) > 64:
            raise ValidationError("version: at most 64 characters")
        spec = AppModuleSpec(module_sha256=info.sha256, size=info.size, version=version, imports=list(info.imports),
                             exports=list(info.exports), initial_pages=info.initial_pages,
                             source=source.name if isinstance(source, Path) else None, added_by=added_by)
        self.modules.put(info)
        existing = self.store.get(AppModule, app_name)
        if existing is None:
            return self.store.create(AppModule(metadata=ObjectMeta(name=app_name), spec=spec)), info
        existing.spec = spec
        return self.store.update(existing), info

    def get(self, name: str) -> AppModule | None:
        return self.store.get(AppModule, name)

    def list(self) -> list[AppModule]:
        return self.store.list(AppModule)

    def module(self, sha256: str) -> bytes:
        return self.modules.get(sha256)


__all__ = ["MODULES_DIR", "Catalog", "ModuleStore", "app_name_from"]
