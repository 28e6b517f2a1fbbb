"""From a run's settlement amounts to ledger transfers: only the difference against what earlier runs
posted, so a re-run never edits a past entry and a run with no changes posts nothing (MARKET.md,
Settlement runs). Pure: frames and dictionaries in, transfers out.

Who pays whom, per order (offer) and delivery day, each a separate posting kind:

* ``utilisation`` and ``availability``: the utility pays the seller;
* ``penalty``: the seller pays the utility;
* ``operator_fee``: the seller pays the operator's fee account;
* ``pass_through``: an aggregator pays each member site's owner its share.

Postings are per (order, day, kind, payer, payee): the ISP detail lives in the run's settlement
lines, and their rounded amounts add up to exactly the posted sum.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

FlowKey = tuple[uuid.UUID, str, uuid.UUID, uuid.UUID]
"""(offer id, kind, payer account, payee account)."""


@dataclass(frozen=True, slots=True)
class Flow:
    """Money that should have moved, in total over every run, for one key."""

    offer_id: uuid.UUID
    kind: str
    payer_account: uuid.UUID
    payee_account: uuid.UUID
    amount: Decimal


@dataclass(frozen=True, slots=True)
class Difference:
    """A transfer this run must post: ``amount`` > 0 from ``debit`` (payer) to ``credit`` (payee)."""

    offer_id: uuid.UUID
    kind: str
    debit_account: uuid.UUID
    credit_account: uuid.UUID
    amount: Decimal


def net_by_key(flows: Iterable[Flow]) -> dict[FlowKey, Decimal]:
    """Flows summed per key, with a transfer from B to A counted as a negative flow from A to B
    (the pair is ordered so both directions meet under one key): the convention of
    :func:`settlement.ledger.service.posted_totals`, so targets and postings compare directly."""
    totals: dict[FlowKey, Decimal] = {}
    for flow in flows:
        if flow.payer_account <= flow.payee_account:
            key = (flow.offer_id, flow.kind, flow.payer_account, flow.payee_account)
            signed = flow.amount
        else:
            key = (flow.offer_id, flow.kind, flow.payee_account, flow.payer_account)
            signed = -flow.amount
        totals[key] = totals.get(key, Decimal(0)) + signed
    return totals


def differences(target: Mapping[FlowKey, Decimal], posted: Mapping[FlowKey, Decimal]) -> list[Difference]:
    """The transfers that take the ledger from ``posted`` to ``target`` (both from :func:`net_by_key`).

    Per key: Δ = target − posted. Δ > 0 moves Δ from the key's first account to its second; Δ < 0
    moves |Δ| back. Δ = 0 posts nothing. Sorted, so the same inputs give the same postings.
    """
    out: list[Difference] = []
    for key in sorted(set(target) | set(posted), key=lambda k: (str(k[0]), k[1], str(k[2]), str(k[3]))):
        delta = target.get(key, Decimal(0)) - posted.get(key, Decimal(0))
        if delta == 0:
            continue
        offer_id, kind, first, second = key
        if delta > 0:
            out.append(Difference(offer_id, kind, first, second, delta))
        else:
            out.append(Difference(offer_id, kind, second, first, -delta))
    return out
