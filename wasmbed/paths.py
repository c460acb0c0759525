"""Where per-user files live: platformdirs locations, never the repository or the cwd.

Every location can be redirected with one environment variable (tests and CI point them at a
temporary folder so runs never share keys or databases by accident).
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP = "wasmbed"


def _dir(env: str, default: str) -> Path:
    path = Path(os.environ.get(env) or default)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def data_dir() -> Path:
    """CA, keys, database, per-board storage images: private, 0700."""
    return _dir("WASMBED_DATA_DIR", platformdirs.user_data_dir(APP))


def config_dir() -> Path:
    """User configuration (config.toml, user themes)."""
    return _dir("WASMBED_CONFIG_DIR", platformdirs.user_config_dir(APP))


def cache_dir() -> Path:
    """Rebuildable things: third-party sources, firmware builds, compiled example apps."""
    return _dir("WASMBED_CACHE_DIR", platformdirs.user_cache_dir(APP))


def log_dir() -> Path:
    """Gateway, audit and board console logs."""
    return _dir("WASMBED_LOG_DIR", platformdirs.user_log_dir(APP))
