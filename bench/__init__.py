"""Benchmarks: the single-process baseline, a wrk load driver and the turn-latency comparison."""
