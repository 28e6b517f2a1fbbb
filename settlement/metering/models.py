"""Tables of settlement.metering."""

from __future__ import annotations
