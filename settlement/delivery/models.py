"""Tables of settlement.delivery."""

from __future__ import annotations
