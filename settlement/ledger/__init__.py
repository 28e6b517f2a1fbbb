"""The double-entry, append-only ledger: accounts and balanced transfers with unique posting keys."""
