"""Benchmarks: what the proxy adds on top of a direct call, and what its parts cost (README.md)."""
