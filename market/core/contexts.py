"""Bounded contexts plug themselves into the service through the ``flexmarket.contexts`` entry points.

This is how the composition root (app, worker, migrations) reaches ``settlement`` without
``market`` importing it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from litestar.types import ControllerRouterHandler

ENTRY_POINT_GROUP = "flexmarket.contexts"


@dataclass(frozen=True)
class Context:
    """What one bounded context contributes."""

    name: str
    route_handlers: list[ControllerRouterHandler] = field(default_factory=list)
    model_modules: list[str] = field(default_factory=list)
    task_modules: list[str] = field(default_factory=list)
    beat_schedule: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Celery beat entries. Beat only wakes tasks; what is due is decided from the database."""
    demo_stages: list[str] = field(default_factory=list)
    """``module:attribute`` paths of :class:`market.demo.DemoStage` objects that ``flexmarket demo`` runs
    (imported only by the demo, so contexts add steps to it without ``market`` importing them)."""


def load_contexts() -> list[Context]:
    """Every installed context, ``market`` first, then the rest by name."""
    contexts = [ep.load() for ep in entry_points(group=ENTRY_POINT_GROUP)]
    for ctx in contexts:
        if not isinstance(ctx, Context):
            raise TypeError(f"entry point in {ENTRY_POINT_GROUP} must be a Context, got {ctx!r}")
    return sorted(contexts, key=lambda c: (c.name != "market", c.name))


def import_models() -> None:
    """Import every context's model modules so ``Base.metadata`` knows all tables."""
    for ctx in load_contexts():
        for module in ctx.model_modules:
            importlib.import_module(module)
