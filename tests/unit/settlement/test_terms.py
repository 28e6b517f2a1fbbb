import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from market.core.errors import InvalidInput
from settlement.runs.terms import SettlementTerms, terms_errors


def test_defaults_are_valid_and_pay_utilisation_only() -> None:
    terms = SettlementTerms()
    assert terms_errors(terms) == []
    assert terms.currency == "EUR"
    assert terms.penalty_price_per_mwh == terms.tolerance == terms.aggregator_fee_share == 0
    assert not terms.sliding_scale


@pytest.mark.parametrize(
    ("changes", "field", "reason"),
    [
        ({"penalty_price_per_mwh": Decimal(-1)}, "penalty_price_per_mwh", "must not be negative"),
        ({"penalty_price_per_mwh": Decimal(1_000_001)}, "penalty_price_per_mwh", "must be at most 1000000"),
        ({"availability_price_per_mw_h": Decimal("0.0000001")}, "availability_price_per_mw_h", "at most 6 decimal"),
        ({"operator_fee_per_mwh": Decimal("NaN")}, "operator_fee_per_mwh", "must be a finite number"),
        ({"tolerance": Decimal(1)}, "tolerance", "must be below 1"),
        ({"tolerance": Decimal("-0.01")}, "tolerance", "must not be negative"),
        ({"aggregator_fee_share": Decimal("1.01")}, "aggregator_fee_share", "must be at most 1"),
        ({"currency": "eur"}, "currency", "3-letter ISO 4217"),
        ({"currency": "XYZ"}, "currency", "no known minor unit"),
    ],
)
def test_terms_errors_name_the_field_and_reason(changes: dict[str, Any], field: str, reason: str) -> None:
    errors = terms_errors(SettlementTerms(**changes), prefix="terms.")
    assert len(errors) == 1
    assert errors[0].field == f"terms.{field}"
    assert reason in errors[0].reason


def test_every_bad_field_is_reported() -> None:
    terms = SettlementTerms(currency="E", tolerance=Decimal(2), aggregator_fee_share=Decimal(-1))
    assert [e.field for e in terms_errors(terms)] == ["currency", "tolerance", "aggregator_fee_share"]


def test_boundaries_are_accepted() -> None:
    terms = SettlementTerms(
        currency="JPY",
        penalty_price_per_mwh=Decimal(1_000_000),
        tolerance=Decimal("0.999999"),
        aggregator_fee_share=Decimal(1),
        operator_fee_per_mwh=Decimal("0.000001"),
    )
    assert terms_errors(terms) == []


def test_json_round_trip_keeps_decimals_exact() -> None:
    terms = SettlementTerms(
        penalty_price_per_mwh=Decimal("300.000"),
        tolerance=Decimal("0.05"),
        sliding_scale=True,
        availability_price_per_mw_h=Decimal("12.345678"),
        aggregator_fee_share=Decimal("0.2"),
    )
    stored = json.loads(json.dumps(terms.to_dict()))
    assert stored["penalty_price_per_mwh"] == "300"  # canonical form
    assert stored["tolerance"] == "0.05"
    assert SettlementTerms.from_dict(stored) == terms


def test_from_dict_refuses_bad_documents_with_every_reason() -> None:
    with pytest.raises(InvalidInput) as caught:
        SettlementTerms.from_dict(
            {"tolerance": 0.05, "penalty": "1", "sliding_scale": "yes", "operator_fee_per_mwh": "x"}
        )
    fields = {e.field for e in caught.value.errors}
    assert fields == {"tolerance", "penalty", "sliding_scale", "operator_fee_per_mwh"}
    with pytest.raises(InvalidInput) as caught:
        SettlementTerms.from_dict({"tolerance": "1.5"}, prefix="terms.")
    assert [(e.field, e.reason) for e in caught.value.errors] == [
        ("terms.tolerance", "must be below 1 (it is a share of the ordered energy)")
    ]


def test_from_dict_fills_defaults() -> None:
    assert SettlementTerms.from_dict({}) == SettlementTerms()
    assert SettlementTerms.from_dict({"penalty_price_per_mwh": 300}).penalty_price_per_mwh == 300


prices = st.decimals(min_value=0, max_value=1_000_000, places=6, allow_nan=False, allow_infinity=False)
shares = st.decimals(min_value=0, max_value=1, places=6, allow_nan=False, allow_infinity=False)


@settings(max_examples=100, deadline=None)
@given(prices, shares.filter(lambda s: s < 1), st.booleans(), prices, prices, shares, st.sampled_from(["EUR", "JPY"]))
def test_valid_terms_survive_json(
    penalty: Decimal, tolerance: Decimal, sliding: bool, availability: Decimal, fee: Decimal, share: Decimal, cur: str
) -> None:
    terms = SettlementTerms(cur, penalty, tolerance, sliding, availability, fee, share)
    assert terms_errors(terms) == []
    assert SettlementTerms.from_dict(json.loads(json.dumps(terms.to_dict()))) == terms
