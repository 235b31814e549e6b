"""Benchmark harness for efficient attention: sweeps, isolation, measurement, results, reports.

The harness never names a method: it talks to methods only through the registry in methods/base.py.
"""
