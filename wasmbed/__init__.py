"""wasmbed: WebAssembly apps on a fleet of emulated ARM Cortex-M boards, deployed over mutual TLS.

The distribution maps the repository's top-level folders into this namespace:
``wasmbed.dts`` (board facts), ``wasmbed.firmware`` (build), ``wasmbed.gateway`` (domain + I/O),
``wasmbed.console`` (Textual front end).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("wasmbed")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
