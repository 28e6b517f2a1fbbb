"""settlement lines carry their delivery: each award is written once per settlement run

Until now a settlement run wrote every award (offer × ISP) twice: once into delivery_line (its
delivery computation: baseline, actual, delivered, status, method) and once into settlement_line
(its amounts), about a million rows each for a day of 10,000 offers. settlement_line now also holds
the delivery facts of the award it settles (baseline_kw, actual_kw, status, method,
method_version), so a statement line is one row, read without a join.

A delivery computation made by a settlement run is *embedded* (delivery_computation.embedded): its
award lines are the settlement lines of the runs that use it, and it writes no delivery_line rows.
A computation made on its own (verifying a day through the API or after a meter upload) still
writes delivery_line. Member-site delivery (member_delivery) is written by every computation.

Existing settlement lines get their delivery facts from the delivery_line rows of their run's
computation (the append-only trigger is lifted for that one statement).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 13:10:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import market.core.db


revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FACTS = ('baseline_kw', 'actual_kw', 'status', 'method', 'method_version')

BACKFILL_POSTGRES = """
UPDATE settlement_line sl
SET baseline_kw = dl.baseline_kw, actual_kw = dl.actual_kw, status = dl.status,
    method = dl.method, method_version = dl.method_version
FROM settlement_run r, delivery_line dl
WHERE r.id = sl.run_id AND dl.computation_id = r.delivery_computation_id
  AND dl.offer_id = sl.offer_id AND dl.isp_start = sl.isp_start
"""

BACKFILL_SQLITE = """
UPDATE settlement_line
SET (baseline_kw, actual_kw, status, method, method_version) = (
    SELECT dl.baseline_kw, dl.actual_kw, dl.status, dl.method, dl.method_version
    FROM settlement_run r JOIN delivery_line dl ON dl.computation_id = r.delivery_computation_id
    WHERE r.id = settlement_line.run_id AND dl.offer_id = settlement_line.offer_id
      AND dl.isp_start = settlement_line.isp_start
)
"""


def _sqlite_line_triggers() -> None:
    """settlement_line's triggers of migration 0009 (SQLite drops them when batch mode rebuilds the table)."""
    op.execute(
        'CREATE TRIGGER settlement_line_parent BEFORE INSERT ON settlement_line '
        'WHEN NOT EXISTS (SELECT 1 FROM settlement_run WHERE id = NEW.run_id) '
        "BEGIN SELECT RAISE(ABORT, 'settlement_line.run_id refers to no settlement_run'); END"
    )
    for event in ('update', 'delete'):
        op.execute(
            f'CREATE TRIGGER settlement_line_append_only_{event} BEFORE {event.upper()} ON settlement_line '
            "BEGIN SELECT RAISE(ABORT, 'settlement_line is append-only'); END"
        )


def _drop_sqlite_line_triggers() -> None:
    for name in ('parent', 'append_only_update', 'append_only_delete'):
        op.execute(f'DROP TRIGGER IF EXISTS settlement_line_{name}')


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == 'postgresql'
    op.add_column(
        'delivery_computation',
        sa.Column('embedded', sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.add_column('settlement_line', sa.Column('baseline_kw', market.core.db.ExactDecimal(20, 6), nullable=True))
    op.add_column('settlement_line', sa.Column('actual_kw', market.core.db.ExactDecimal(20, 6), nullable=True))
    op.add_column('settlement_line', sa.Column('status', sa.String(length=20), nullable=True))
    op.add_column('settlement_line', sa.Column('method', sa.String(length=32), nullable=True))
    op.add_column('settlement_line', sa.Column('method_version', sa.Integer(), nullable=True))
    if postgres:
        op.execute('ALTER TABLE settlement_line DISABLE TRIGGER settlement_line_append_only')
        op.execute(BACKFILL_POSTGRES)
        op.execute('ALTER TABLE settlement_line ENABLE TRIGGER settlement_line_append_only')
    else:
        _drop_sqlite_line_triggers()
        op.execute(BACKFILL_SQLITE)
    with op.batch_alter_table('settlement_line') as batch:
        batch.alter_column('status', existing_type=sa.String(length=20), nullable=False)
        batch.create_check_constraint('delivery_status', sa.text("status IN ('ok', 'no_baseline', 'missing_readings')"))
        batch.alter_column('method', existing_type=sa.String(length=32), nullable=False)
        batch.alter_column('method_version', existing_type=sa.Integer(), nullable=False)
    if not postgres:
        _sqlite_line_triggers()


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == 'postgresql'
    # Lines of embedded computations exist only in settlement_line: restore them into delivery_line
    # (from the first run that used each computation) before the facts are dropped.
    op.execute(
        """
        INSERT INTO delivery_line (computation_id, offer_id, isp_start, seller_id, resource_id, direction,
                                   ordered_kw, baseline_kw, actual_kw, delivered_kw, status, method, method_version)
        SELECT c.id, sl.offer_id, sl.isp_start, sl.seller_id, COALESCE(o.site_id, o.portfolio_id), o.direction,
               sl.ordered_kw, sl.baseline_kw, sl.actual_kw, sl.delivered_kw, sl.status, sl.method, sl.method_version
        FROM delivery_computation c
        JOIN settlement_run r ON r.delivery_computation_id = c.id
        JOIN settlement_line sl ON sl.run_id = r.id
        JOIN flex_offer o ON o.id = sl.offer_id
        WHERE c.embedded AND r.version = (
            SELECT MIN(r2.version) FROM settlement_run r2 WHERE r2.delivery_computation_id = c.id
        )
        """
    )
    if not postgres:
        _drop_sqlite_line_triggers()
    with op.batch_alter_table('settlement_line') as batch:
        batch.drop_constraint(op.f('ck_settlement_line_delivery_status'), type_='check')
        for column in FACTS:
            batch.drop_column(column)
    if not postgres:
        _sqlite_line_triggers()
    # Not batch mode: rebuilding delivery_computation would trip (and drop) SQLite's triggers that name it.
    op.drop_column('delivery_computation', 'embedded')
