"""Benchmarks: run each from the repository root as `uv run python -m bench.<name>`."""
