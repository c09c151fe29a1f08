"""Benchmarks (`make bench`): speed and quality figures written to docs/BENCHMARKS.md."""
