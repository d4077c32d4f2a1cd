"""Benchmark scripts (``python -m bench.<name>``): they print measured figures, never assert."""
