"""Celery tasks of settlement.runs."""

from __future__ import annotations
