"""Tables of settlement.baselines."""

from __future__ import annotations
