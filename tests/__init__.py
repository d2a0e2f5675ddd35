"""Tests, their helpers, and the harness the benchmarks share (tests.support)."""
