"""Third-party sources for the firmware, fetched at build time and never committed.

Each dependency is pinned by version and sha256 and unpacked into the per-user cache
(``wasmbed.paths.cache_dir()/third_party``), outside the repository:

* mbedTLS comes from Debian's source package (the upstream tarball Debian ships as ``.orig``),
  downloaded from the Debian mirror this machine's apt sources already use.
* wasm3 comes from the ``pywasm3`` sdist on PyPI (it carries wasm3's C sources), via pip.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from wasmbed.paths import cache_dir


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    filename: str
    sha256: str
    source: str  # "debian-pool:<pool path>" or "pypi-sdist:<project>"
    subdir: str  # folder inside the archive that holds the sources


MBEDTLS = Pin(
    name="mbedtls",
    version="3.6.6",
    filename="mbedtls_3.6.6.orig.tar.bz2",
    sha256="8fb65fae8dcae5840f793c0a334860a411f884cc537ea290ce1c52bb64ca007a",
    source="debian-pool:pool/main/m/mbedtls",
    subdir="mbedtls-3.6.6",
)
WASM3 = Pin(
    name="wasm3",
    version="0.5.0",
    filename="pywasm3-0.5.0.tar.gz",
    sha256="5a47c8a39f7f6ae71b3316b2e5d86c9d0db6e771a65f09a86e4d4aa3a19aefcc",
    source="pypi-sdist:pywasm3",
    subdir="pywasm3-0.5.0/wasm3",
)
PINS = (MBEDTLS, WASM3)


class FetchError(Exception):
    """A pinned source could not be had; the message says which, from where, and what to do."""


def third_party_dir() -> Path:
    return cache_dir() / "third_party"


def source_dir(pin: Pin) -> Path:
    """Where the unpacked sources of pin live once fetched."""
    return third_party_dir() / f"{pin.name}-{pin.version}" / pin.subdir


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def debian_mirrors() -> list[str]:
    """Archive URIs from this machine's apt sources (deb822 and one-line styles), in file order."""
    override = os.environ.get("WASMBED_DEBIAN_MIRROR")
    if override:
        return [override.rstrip("/")]
    files = [Path("/etc/apt/sources.list")]
    d = Path("/etc/apt/sources.list.d")
    if d.is_dir():
        files += sorted(p for p in d.iterdir() if p.suffix in (".list", ".sources"))
    uris: list[str] = []
    for f in files:
        try:
            text = f.read_text()
        except OSError:
            continue
        found = re.findall(r"^URIs:\s*(\S+)", text, re.M) + re.findall(
            r"^deb(?:-src)?\s+(?:\[[^\]]*\]\s+)?(\S+)", text, re.M
        )
        for uri in found:
            uri = uri.rstrip("/")
            if "security" not in uri and uri not in uris and uri.startswith(("http://", "https://")):
                uris.append(uri)
    return uris


def _download_debian(pin: Pin, dest: Path) -> None:
    pool = pin.source.split(":", 1)[1]
    mirrors = debian_mirrors()
    if not mirrors:
        raise FetchError(f"{pin.filename}: no Debian mirror in /etc/apt/sources*; set WASMBED_DEBIAN_MIRROR")
    errors = []
    for mirror in mirrors:
        for component_pool in (pool, pool.replace("/main/", "/universe/")):
            url = f"{mirror}/{component_pool}/{pin.filename}"
            try:
                with urllib.request.urlopen(url, timeout=60) as r, dest.open("wb") as out:
                    shutil.copyfileobj(r, out)
                return
            except OSError as e:
                errors.append(f"{url}: {e}")
    raise FetchError(
        f"could not download {pin.filename} (pinned {pin.name} {pin.version}):\n  "
        + "\n  ".join(errors)
        + "\nIf the mirror dropped this version, move the pin in wasmbed/firmware/deps.py to the one it has."
    )


def _download_pypi(pin: Pin, dest: Path) -> None:
    project = pin.source.split(":", 1)[1]
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
               "--dest", tmp, f"{project}=={pin.version}"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        got = Path(tmp) / pin.filename
        if proc.returncode != 0 or not got.exists():
            raise FetchError(f"pip could not download {project}=={pin.version} sdist:\n{proc.stderr.strip()}")
        shutil.move(got, dest)


def fetch(pin: Pin, log=print) -> Path:
    """Make sure pin's sources are unpacked in the cache; returns their folder. Idempotent."""
    root = third_party_dir() / f"{pin.name}-{pin.version}"
    marker = root / ".complete"
    if marker.exists():
        return source_dir(pin)
    downloads = cache_dir() / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    archive = downloads / pin.filename
    if not archive.exists() or _sha256(archive) != pin.sha256:
        log(f"fetching {pin.name} {pin.version} ({pin.source.split(':')[0]})")
        partial = archive.with_suffix(archive.suffix + ".part")
        if pin.source.startswith("debian-pool:"):
            _download_debian(pin, partial)
        else:
            _download_pypi(pin, partial)
        digest = _sha256(partial)
        if digest != pin.sha256:
            partial.unlink()
            raise FetchError(f"{pin.filename}: sha256 {digest} does not match the pin {pin.sha256}")
        partial.replace(archive)
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        tar.extractall(root, filter="data")
    if not source_dir(pin).is_dir():
        raise FetchError(f"{pin.filename} has no {pin.subdir}/ folder")
    marker.write_text(pin.sha256 + "\n")
    return source_dir(pin)


def fetch_all(log=print) -> dict[str, Path]:
    return {pin.name: fetch(pin, log) for pin in PINS}
