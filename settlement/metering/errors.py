"""Errors of settlement.metering."""

from __future__ import annotations

from market.core.errors import InvalidInput


class UnreadableMeterFile(InvalidInput):
    """The file cannot be read as meter readings at all (not CSV/Parquet/JSON, a column missing or of
    the wrong type). The whole file is rejected with this reason; row-level problems are not errors
    but issues in the file's validation report."""
