"""SHIM's built-in plugins: executors, decomposition strategies and checkpoint backends,
registered through the same pluggy hooks a third-party plugin uses."""
