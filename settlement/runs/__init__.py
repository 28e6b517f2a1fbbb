"""Settlement runs (initial, reconciliation, final): pure amounts, pass-through, and posting the differences."""
