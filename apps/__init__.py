"""Example WASM apps (WAT and C sources), shipped as package data so installed wheels can build them."""
