"""Shared test setup. The Redis fixtures come from SHIM's own pytest plugin (pytest_shim)."""

pytest_plugins = ["pytester"]
