"""Celery tasks of settlement.statements."""

from __future__ import annotations
