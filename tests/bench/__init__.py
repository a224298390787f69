"""Performance benchmarks: `python -m tests.bench.run [--quick]` (not part of pytest).

See docs/performance.md for what is measured, how, and the latest results.
"""
