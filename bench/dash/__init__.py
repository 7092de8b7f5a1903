"""Helpers of bench/dash_bench.py: the baseline server and the measuring HTTP client."""
