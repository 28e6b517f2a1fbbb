"""Benchmarks of order ingestion and latency against PostgreSQL (not part of the test suite)."""
