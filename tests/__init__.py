"""Tests, their helpers, and the harness the benchmarks share (tests.support)."""

from skyhigh.speech.threads import keep_openmp_spinning

# Before any test module imports torch or CTranslate2: the test process holds many models.
keep_openmp_spinning()
