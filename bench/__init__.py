"""Benchmarks: run them as modules (`python -m bench.<name>`); they are not part of the test suite."""
