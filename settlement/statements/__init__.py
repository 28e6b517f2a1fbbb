"""Statements per participant and period, numbered per issuer, as JSON, CSV and PDF."""
