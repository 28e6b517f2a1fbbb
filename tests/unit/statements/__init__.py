"""Unit tests of the statement document and its renderers (settlement/statements)."""
