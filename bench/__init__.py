"""Benchmarks of the CIT service, runnable as `python -m bench.<name>` from the repository root."""
