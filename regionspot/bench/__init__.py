"""Benchmarks that report what they measure on the machine they run on (nothing is asserted)."""
