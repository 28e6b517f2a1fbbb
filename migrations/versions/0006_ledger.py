"""ledger accounts and transfers (append-only, balanced by construction)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 05:45:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import market.core.db
import advanced_alchemy.types


revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APPEND_ONLY_TABLES = ('ledger_account', 'journal_entry')

# CREATE OR REPLACE: migration 0004 may define the same function; defining it twice is harmless.
REFUSE_CHANGE_FUNCTION = """
CREATE OR REPLACE FUNCTION flex_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END $$;
"""


def _create_append_only_triggers() -> None:
    """Refuse UPDATE and DELETE on the ledger tables; TRUNCATE (test clean-up) fires no row trigger."""
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
        # flex_refuse_change() is left in place: other tables' triggers (migration 0004) may use it.
        return
    for table in APPEND_ONLY_TABLES:
        for event in ('update', 'delete'):
            op.execute(f'DROP TRIGGER IF EXISTS {table}_append_only_{event}')


def upgrade() -> None:
    op.create_table('ledger_account',
    sa.Column('participant_id', sa.Uuid(), nullable=True),
    sa.Column('market_id', sa.Uuid(), nullable=False),
    sa.Column('kind', sa.Enum('participant', 'operator_fees', name='ledger_account_kind', native_enum=False, create_constraint=True, length=24), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('code', sa.String(length=100), nullable=False),
    sa.Column('created_at', advanced_alchemy.types.datetime.DateTimeUTC(timezone=True), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.CheckConstraint("(participant_id IS NULL) = (kind = 'operator_fees')", name=op.f('ck_ledger_account_participant_iff_not_fees')),
    sa.CheckConstraint('length(currency) = 3', name=op.f('ck_ledger_account_currency_code')),
    sa.ForeignKeyConstraint(['market_id'], ['market.id'], name=op.f('fk_ledger_account_market_id_market'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['participant_id'], ['participant.id'], name=op.f('fk_ledger_account_participant_id_participant'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ledger_account')),
    sa.UniqueConstraint('code', name=op.f('uq_ledger_account_code')),
    sa.UniqueConstraint('id', 'currency', name=op.f('uq_ledger_account_id_currency')),
    sa.UniqueConstraint('market_id', 'participant_id', 'kind', 'currency', name=op.f('uq_ledger_account_market_id_participant_id_kind_currency'))
    )
    op.create_index(op.f('ix_ledger_account_participant_id'), 'ledger_account', ['participant_id'], unique=False)
    op.create_table('journal_entry',
    sa.Column('settlement_run_id', sa.Uuid(), nullable=False),
    sa.Column('offer_id', sa.Uuid(), nullable=False),
    sa.Column('kind', sa.Enum('utilisation', 'availability', 'penalty', 'operator_fee', 'pass_through', name='journal_entry_kind', native_enum=False, create_constraint=True, length=24), nullable=False),
    sa.Column('debit_account_id', sa.Uuid(), nullable=False),
    sa.Column('credit_account_id', sa.Uuid(), nullable=False),
    sa.Column('amount', market.core.db.ExactDecimal(20, 6), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('delivery_day', sa.Date(), nullable=False),
    sa.Column('memo', sa.Text(), nullable=True),
    sa.Column('created_at', advanced_alchemy.types.datetime.DateTimeUTC(timezone=True), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.CheckConstraint('amount > 0', name=op.f('ck_journal_entry_amount_positive')),
    sa.CheckConstraint('debit_account_id <> credit_account_id', name=op.f('ck_journal_entry_two_accounts')),
    sa.ForeignKeyConstraint(['credit_account_id', 'currency'], ['ledger_account.id', 'ledger_account.currency'], name=op.f('fk_journal_entry_credit_account_id_ledger_account'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['debit_account_id', 'currency'], ['ledger_account.id', 'ledger_account.currency'], name=op.f('fk_journal_entry_debit_account_id_ledger_account'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['settlement_run_id'], ['settlement_run.id'], name=op.f('fk_journal_entry_settlement_run_id_settlement_run'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_journal_entry')),
    sa.UniqueConstraint('settlement_run_id', 'offer_id', 'kind', 'debit_account_id', 'credit_account_id', name='uq_journal_entry_posting_key')
    )
    op.create_index('ix_journal_entry_credit', 'journal_entry', ['credit_account_id', 'delivery_day'], unique=False)
    op.create_index('ix_journal_entry_debit', 'journal_entry', ['debit_account_id', 'delivery_day'], unique=False)
    _create_append_only_triggers()


def downgrade() -> None:
    _drop_append_only_triggers()
    op.drop_index('ix_journal_entry_debit', table_name='journal_entry')
    op.drop_index('ix_journal_entry_credit', table_name='journal_entry')
    op.drop_table('journal_entry')
    op.drop_index(op.f('ix_ledger_account_participant_id'), table_name='ledger_account')
    op.drop_table('ledger_account')
