"""baseline configuration and nominations, delivery, settlement terms and runs

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 05:45:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import market.core.db
import advanced_alchemy.types


revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
