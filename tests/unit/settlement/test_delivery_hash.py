"""The delivery computation's content hash decides whether a day changed (a new computation, a reconciliation
run) or not (nothing stored, nothing posted): equal frames must hash equal however they were built."""

from __future__ import annotations

import polars as pl

from settlement.delivery.service import _content_hash


def test_equal_frames_built_in_different_orders_hash_equal() -> None:
    # Sorting gathers string views: the same rows end up over differently laid-out buffers (an Arrow IPC
    # hash of these two differed).
    f = pl.DataFrame({"k": [2, 1], "status": ["missing_readings_a", "missing_readings_b"], "kw": [None, 5]}).sort("k")
    g = pl.DataFrame({"k": [1, 2], "status": ["missing_readings_b", "missing_readings_a"], "kw": [5, None]}).sort("k")
    assert f.equals(g)
    assert _content_hash(f, g) == _content_hash(g, f)


def test_any_change_changes_the_hash() -> None:
    lines = pl.DataFrame({"offer_id": ["a", "b"], "delivered_kw": [1_000_000, 2_000_000], "actual_kw": [None, 3]})
    members = pl.DataFrame({"site_id": ["s"], "delivered_kw": [1]})
    base = _content_hash(lines, members)
    assert _content_hash(lines.with_columns(pl.col("delivered_kw") + 1), members) != base
    assert _content_hash(lines.with_columns(actual_kw=pl.lit(3)), members) != base  # a null became a value
    assert _content_hash(lines, members.with_columns(delivered_kw=pl.lit(2))) != base
    assert _content_hash(members, lines) != base
