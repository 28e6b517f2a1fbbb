"""bulk line tables: parents checked once per statement, lines append-only, seller-first settlement lines

A settlement run COPYs about a million rows each into delivery_line, member_delivery and
settlement_line. A foreign key checks its parent once per row (an SPI look-up with a row lock on
the parent): measured at 2.5-2.8 s per million rows on 2 cores, almost half of the COPY. The same
rule is now kept by the database set-wise:

* PostgreSQL: an AFTER INSERT ... FOR EACH STATEMENT trigger with a transition table refuses the
  statement if any new line names a parent that does not exist (one anti-join per COPY).
  SQLite has no statement triggers; a BEFORE INSERT row trigger does the same look-up there.
* Parents are never deleted (delivery_computation, settlement_run) and lines are append-only
  (no UPDATE or DELETE), so a line can never lose its parent afterwards either. TRUNCATE (test
  clean-up) fires no row trigger.

settlement_line's primary key becomes (run_id, seller_id, offer_id, isp_start): one index serves
both uniqueness and a seller's lines of a run (statements), instead of the primary key plus a
separate seller index. An offer has one seller, so uniqueness is unchanged.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 12:40:00
"""
from collections.abc import Sequence

from alembic import op


revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (child table, parent column, parent table, old foreign key name)
CHILDREN = (
    ('delivery_line', 'computation_id', 'delivery_computation', 'fk_delivery_line_computation_id_delivery_computation'),
    ('member_delivery', 'computation_id', 'delivery_computation', 'fk_member_delivery_computation_id_delivery_computation'),
    ('settlement_line', 'run_id', 'settlement_run', 'fk_settlement_line_run_id_settlement_run'),
)
PARENTS = ('delivery_computation', 'settlement_run')

REFUSE_DELETE_FUNCTION = """
CREATE OR REPLACE FUNCTION flex_refuse_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% rows are never deleted', TG_TABLE_NAME;
END $$;
"""


def _parent_check_function(child: str, column: str, parent: str) -> str:
    return f"""
CREATE OR REPLACE FUNCTION flex_{child}_parent() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM new_rows n WHERE NOT EXISTS (SELECT 1 FROM {parent} p WHERE p.id = n.{column})) THEN
        RAISE EXCEPTION USING
            ERRCODE = 'foreign_key_violation',
            MESSAGE = '{child}.{column} refers to no {parent}';
    END IF;
    RETURN NULL;
END $$;
"""


def _create_triggers(dialect: str) -> None:
    if dialect == 'postgresql':
        op.execute(REFUSE_DELETE_FUNCTION)
        for parent in PARENTS:
            op.execute(
                f'CREATE TRIGGER {parent}_never_deleted BEFORE DELETE ON {parent} '
                'FOR EACH ROW EXECUTE FUNCTION flex_refuse_delete()'
            )
        for child, column, parent, _ in CHILDREN:
            op.execute(_parent_check_function(child, column, parent))
            op.execute(
                f'CREATE TRIGGER {child}_parent AFTER INSERT ON {child} REFERENCING NEW TABLE AS new_rows '
                f'FOR EACH STATEMENT EXECUTE FUNCTION flex_{child}_parent()'
            )
            # flex_refuse_change() is defined by migration 0004.
            op.execute(
                f'CREATE TRIGGER {child}_append_only BEFORE UPDATE OR DELETE ON {child} '
                'FOR EACH ROW EXECUTE FUNCTION flex_refuse_change()'
            )
        return
    for parent in PARENTS:
        op.execute(
            f'CREATE TRIGGER {parent}_never_deleted BEFORE DELETE ON {parent} '
            f"BEGIN SELECT RAISE(ABORT, '{parent} rows are never deleted'); END"
        )
    for child, column, parent, _ in CHILDREN:
        op.execute(
            f'CREATE TRIGGER {child}_parent BEFORE INSERT ON {child} '
            f'WHEN NOT EXISTS (SELECT 1 FROM {parent} WHERE id = NEW.{column}) '
            f"BEGIN SELECT RAISE(ABORT, '{child}.{column} refers to no {parent}'); END"
        )
        for event in ('update', 'delete'):
            op.execute(
                f'CREATE TRIGGER {child}_append_only_{event} BEFORE {event.upper()} ON {child} '
                f"BEGIN SELECT RAISE(ABORT, '{child} is append-only'); END"
            )


def _drop_triggers(dialect: str) -> None:
    if dialect == 'postgresql':
        for child, _, _, _ in CHILDREN:
            op.execute(f'DROP TRIGGER IF EXISTS {child}_append_only ON {child}')
            op.execute(f'DROP TRIGGER IF EXISTS {child}_parent ON {child}')
            op.execute(f'DROP FUNCTION IF EXISTS flex_{child}_parent()')
        for parent in PARENTS:
            op.execute(f'DROP TRIGGER IF EXISTS {parent}_never_deleted ON {parent}')
        op.execute('DROP FUNCTION IF EXISTS flex_refuse_delete()')
        return
    for child, _, _, _ in CHILDREN:
        op.execute(f'DROP TRIGGER IF EXISTS {child}_parent')
        for event in ('update', 'delete'):
            op.execute(f'DROP TRIGGER IF EXISTS {child}_append_only_{event}')
    for parent in PARENTS:
        op.execute(f'DROP TRIGGER IF EXISTS {parent}_never_deleted')


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    for child, _, _, foreign_key in CHILDREN:
        with op.batch_alter_table(child) as batch:
            batch.drop_constraint(foreign_key, type_='foreignkey')
    op.drop_index('ix_settlement_line_seller_id', table_name='settlement_line')
    with op.batch_alter_table('settlement_line') as batch:
        batch.drop_constraint('pk_settlement_line', type_='primary')
        batch.create_primary_key('pk_settlement_line', ['run_id', 'seller_id', 'offer_id', 'isp_start'])
    _create_triggers(dialect)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    _drop_triggers(dialect)
    with op.batch_alter_table('settlement_line') as batch:
        batch.drop_constraint('pk_settlement_line', type_='primary')
        batch.create_primary_key('pk_settlement_line', ['run_id', 'offer_id', 'isp_start'])
    op.create_index('ix_settlement_line_seller_id', 'settlement_line', ['seller_id'], unique=False)
    for child, column, parent, foreign_key in CHILDREN:
        with op.batch_alter_table(child) as batch:
            batch.create_foreign_key(foreign_key, parent, [column], ['id'], ondelete='RESTRICT')
