"""Unit tests of the pure clearing engine (market/clearing)."""
