"""Benchmark scripts (speed, memory): each prints a table and writes results/benchmarks/; run as ``python -m bench.perf.NAME``."""
