"""The params: schema, reading a params file, `--set` overrides, paths. Imports nothing above the top level."""
