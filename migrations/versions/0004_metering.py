"""meter files, readings with versioned corrections, re-settlement marks

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 05:45:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import market.core.db
import advanced_alchemy.types


revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APPEND_ONLY_TABLES = ('meter_reading',)

# Shared with the ledger (migration 0006 defines the same function with CREATE OR REPLACE).
REFUSE_CHANGE_FUNCTION = """
CREATE OR REPLACE FUNCTION flex_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END $$;
"""


def _create_append_only_triggers() -> None:
    """Refuse UPDATE and DELETE on readings; TRUNCATE (test clean-up) fires no row trigger."""
    if op.get_bind().dialect.name == 'postgresql':
        op.execute(REFUSE_CHANGE_FUNCTION)
        for table in APPEND_ONLY_TABLES:
            op.execute(
                f'CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} '
                'FOR EACH ROW EXECUTE FUNCTION flex_refuse_change()'
            )
        return
    for table in APPEND_ONLY_TABLES:
        for event in ('update', 'delete'):
            op.execute(
                f'CREATE TRIGGER {table}_append_only_{event} BEFORE {event.upper()} ON {table} '
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
            )


def _drop_append_only_triggers() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        for table in APPEND_ONLY_TABLES:
            op.execute(f'DROP TRIGGER IF EXISTS {table}_append_only ON {table}')
        # flex_refuse_change() stays: the ledger's triggers (migration 0006) use it too.
        return
    for table in APPEND_ONLY_TABLES:
        for event in ('update', 'delete'):
            op.execute(f'DROP TRIGGER IF EXISTS {table}_append_only_{event}')


def upgrade() -> None:
    op.create_table('meter_file',
    sa.Column('market_id', sa.Uuid(), nullable=False),
    sa.Column('uploaded_by', sa.Uuid(), nullable=False),
    sa.Column('filename', sa.String(length=255), nullable=False),
    sa.Column('format', sa.Enum('csv', 'parquet', 'json', name='meter_file_format', native_enum=False, create_constraint=True, length=16), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('size_bytes', sa.Integer(), nullable=False),
    sa.Column('content', sa.LargeBinary(), nullable=False),
    sa.Column('status', sa.Enum('pending', 'done', 'rejected', name='meter_file_status', native_enum=False, create_constraint=True, length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('report', sa.JSON(), nullable=True),
    sa.Column('enqueued_at', advanced_alchemy.types.datetime.DateTimeUTC(timezone=True), nullable=True),
    sa.Column('resends', sa.Integer(), nullable=False),
    sa.Column('processed_at', advanced_alchemy.types.datetime.DateTimeUTC(timezone=True), nullable=True),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created_at', advanced_alchemy.types.datetime.DateTimeUTC(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['market_id'], ['market.id'], name=op.f('fk_meter_file_market_id_market'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['uploaded_by'], ['participant.id'], name=op.f('fk_meter_file_uploaded_by_participant'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_meter_file')),
    sa.UniqueConstraint('market_id', 'uploaded_by', 'sha256', name=op.f('uq_meter_file_market_id_uploaded_by_sha256'))
    )
    op.create_index('ix_meter_file_market', 'meter_file', ['market_id', 'created_at'], unique=False)
    op.create_index('ix_meter_file_pending', 'meter_file', ['status', 'enqueued_at'], unique=False)
    # No foreign keys on meter_reading: one check query per row triples the cost of a bulk COPY
    # (see settlement.metering.models.MeterReading).
    op.create_table('meter_reading',
    sa.Column('site_id', sa.Uuid(), nullable=False),
    sa.Column('isp_start', advanced_alchemy.types.datetime.DateTimeUTC(timezone=True), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('import_kwh', market.core.db.ExactDecimal(20, 6), nullable=False),
    sa.Column('export_kwh', market.core.db.ExactDecimal(20, 6), nullable=False),
    sa.Column('file_id', sa.Uuid(), nullable=False),
    sa.Column('recorded_at', advanced_alchemy.types.datetime.DateTimeUTC(timezone=True), nullable=False),
    sa.CheckConstraint('export_kwh >= 0', name=op.f('ck_meter_reading_export_not_negative')),
    sa.CheckConstraint('import_kwh >= 0', name=op.f('ck_meter_reading_import_not_negative')),
    sa.CheckConstraint('version >= 1', name=op.f('ck_meter_reading_version_positive')),
    sa.PrimaryKeyConstraint('site_id', 'isp_start', 'version', name=op.f('pk_meter_reading'))
    )
    op.create_table('resettlement_mark',
    sa.Column('market_id', sa.Uuid(), nullable=False),
    sa.Column('site_id', sa.Uuid(), nullable=False),
    sa.Column('delivery_day', sa.Date(), nullable=False),
    sa.Column('file_id', sa.Uuid(), nullable=False),
    sa.Column('created_at', advanced_alchemy.types.datetime.DateTimeUTC(timezone=True), nullable=False),
    sa.Column('settled_by_run_id', sa.Uuid(), nullable=True),
    sa.ForeignKeyConstraint(['file_id'], ['meter_file.id'], name=op.f('fk_resettlement_mark_file_id_meter_file'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['market_id'], ['market.id'], name=op.f('fk_resettlement_mark_market_id_market'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['site_id'], ['site.id'], name=op.f('fk_resettlement_mark_site_id_site'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('market_id', 'site_id', 'delivery_day', 'file_id', name=op.f('pk_resettlement_mark'))
    )
    op.create_index('ix_resettlement_mark_open', 'resettlement_mark', ['market_id', 'settled_by_run_id', 'delivery_day'], unique=False)
    _create_append_only_triggers()


def downgrade() -> None:
    _drop_append_only_triggers()
    op.drop_index('ix_resettlement_mark_open', table_name='resettlement_mark')
    op.drop_table('resettlement_mark')
    op.drop_table('meter_reading')
    op.drop_index('ix_meter_file_pending', table_name='meter_file')
    op.drop_index('ix_meter_file_market', table_name='meter_file')
    op.drop_table('meter_file')
