"""The harness tests and benchmarks share: ports, the served app, settings, receivers, services.

Import it as `tests.support.<module>` from the repository root: pytest puts the root on the
path (`tests` is a package), and benchmarks run as `uv run python -m bench.<name>`, which does
the same. Nothing edits `sys.path`.
"""
