"""Meter data: bulk files (CSV, Parquet, JSON) validated with Polars, stored with versioned corrections."""
