"""audit log (append-only)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-08 09:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import advanced_alchemy.types


revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = 'audit_event'


def _create_append_only_triggers() -> None:
    """Refuse UPDATE and DELETE on the audit log; TRUNCATE (test clean-up) fires no row trigger.
    PostgreSQL reuses flex_refuse_change(), defined by migration 0004."""
    if op.get_bind().dialect.name == 'postgresql':
        op.execute(
            f'CREATE TRIGGER {TABLE}_append_only BEFORE UPDATE OR DELETE ON {TABLE} '
            'FOR EACH ROW EXECUTE FUNCTION flex_refuse_change()'
        )
        return
    for event in ('update', 'delete'):
        op.execute(
            f'CREATE TRIGGER {TABLE}_append_only_{event} BEFORE {event.upper()} ON {TABLE} '
            f"BEGIN SELECT RAISE(ABORT, '{TABLE} is append-only'); END"
        )


def _drop_append_only_triggers() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute(f'DROP TRIGGER IF EXISTS {TABLE}_append_only ON {TABLE}')
        return
    for event in ('update', 'delete'):
        op.execute(f'DROP TRIGGER IF EXISTS {TABLE}_append_only_{event}')


def upgrade() -> None:
    op.create_table('audit_event',
    sa.Column('at', advanced_alchemy.types.datetime.DateTimeUTC(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=64), nullable=False),
    sa.Column('actor_participant_id', sa.Uuid(), nullable=True),
    sa.Column('actor_api_key_id', sa.Uuid(), nullable=True),
    sa.Column('action', sa.String(length=40), nullable=False),
    sa.Column('object_type', sa.String(length=40), nullable=False),
    sa.Column('object_id', sa.Uuid(), nullable=False),
    sa.Column('before', sa.JSON(none_as_null=True), nullable=True),
    sa.Column('after', sa.JSON(none_as_null=True), nullable=True),
    sa.Column('request_id', sa.String(length=64), nullable=True),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_event'))
    )
    op.create_index('ix_audit_event_actor', 'audit_event', ['actor_participant_id', 'at'], unique=False)
    op.create_index('ix_audit_event_at', 'audit_event', ['at'], unique=False)
    op.create_index('ix_audit_event_object', 'audit_event', ['object_id', 'at'], unique=False)
    _create_append_only_triggers()


def downgrade() -> None:
    _drop_append_only_triggers()
    op.drop_index('ix_audit_event_object', table_name='audit_event')
    op.drop_index('ix_audit_event_at', table_name='audit_event')
    op.drop_index('ix_audit_event_actor', table_name='audit_event')
    op.drop_table('audit_event')
