"""Benchmarks of letta-hayhooks (not part of the test command): see benchmarks/README.md."""
