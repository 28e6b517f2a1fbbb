"""Tables of settlement.ledger."""

from __future__ import annotations
