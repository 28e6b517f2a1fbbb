"""Baselines: the pure, versioned method registry and each resource's configured method and nominations."""
