"""Helpers of bench/cluster_bench.py: the servers under test and the two kinds of load."""
