"""Test and benchmark infrastructure: servers started as real processes (the harness) and the topology profile."""
