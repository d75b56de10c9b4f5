"""Benchmarks: our plugins next to Debian's Go reference plugins, in one run (see bench/run.py)."""
