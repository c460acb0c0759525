"""Console themes shipped with wasmbed: one TOML file per theme (loaded by wasmbed.console.themes)."""
