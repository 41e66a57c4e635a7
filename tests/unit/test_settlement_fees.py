"""Merchant fee models, without a database: ``settlement.fees``.

Worked figures are computed by hand (shown beside each); the properties check
every model against an independent exact computation with ``Fraction``, and the
percentage model against the fee ``payments`` books at the same rate.
"""

from __future__ import annotations

import json
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zhangfang.payments import postings
from zhangfang.settlement import errors
from zhangfang.settlement.fees import (
    FeeContract,
    FeeModel,
    Fixed,
    Percentage,
    PercentageWithBounds,
    Tier,
    Tiered,
    fee_for,
    parse_fee_model,
)

R = Decimal

# --------------------------------------------------------------------------- worked figures


@pytest.mark.parametrize(
    "model, amount, fee",
    [
        (Percentage(R("0.006")), 12_345, 74),  # 74.07
        (Percentage(R("0.006")), 250, 2),  # 1.5: the half goes up
        (Percentage(R("0.001")), 2_500, 3),  # 2.5: up, not to the even 2
        (Percentage(R("0.006")), 83, 0),  # 0.498: a small payment pays no fee
        (Percentage(R("0.0038")), 1_234_567, 4_691),  # 4691.3546
        (Percentage(R("0.0005")), 1_000, 1),  # 0.5
        (Percentage(R("0")), 1_000_000, 0),
        (Fixed(30), 10_000, 30),
        (Fixed(30), 20, 20),  # never more than the transaction
        (Fixed(0), 1, 0),
        (PercentageWithBounds(R("0.006"), min_fee=10, max_fee=2_500), 1_000, 10),  # 6, raised to the minimum
        (PercentageWithBounds(R("0.006"), min_fee=10, max_fee=2_500), 100_000, 600),
        (PercentageWithBounds(R("0.006"), min_fee=10, max_fee=2_500), 1_000_000, 2_500),  # 6000, capped
        (PercentageWithBounds(R("0.006"), min_fee=10, max_fee=2_500), 5, 5),  # the minimum, but at most the amount
        (PercentageWithBounds(R("0.005"), max_fee=2_000), 500_000, 2_000),  # 借记卡 0.5 % 封顶 20 元
        (PercentageWithBounds(R("0.005")), 500_000, 2_500),  # no maximum
        (PercentageWithBounds(R("0.006"), min_fee=100, max_fee=100), 50_000, 100),  # min = max: a fixed fee
    ],
)
def test_worked_fees(model: FeeModel, amount: int, fee: int) -> None:
    assert fee_for(model, amount) == fee


TIERED = Tiered(
    (
        Tier(0, R("0.006")),  # below 100,000.00 yuan in the month: 0.6 %
        Tier(10_000_000, R("0.005")),  # from 100,000.00 yuan: 0.5 %
        Tier(100_000_000, R("0.0038")),  # from 1,000,000.00 yuan: 0.38 %
    )
)


@pytest.mark.parametrize(
    "volume_before, fee",
    [
        (0, 600),
        (9_999_999, 600),  # this transaction crosses 100,000.00 but is charged the tier it starts in
        (10_000_000, 500),
        (99_999_999, 500),
        (100_000_000, 380),
        (10**12, 380),
    ],
)
def test_a_tiered_fee_is_at_the_rate_of_the_tier_the_volume_before_it_falls_in(volume_before: int, fee: int) -> None:
    assert fee_for(TIERED, 100_000, monthly_volume_before=volume_before) == fee


def test_a_month_of_tiered_fees_worked_by_hand() -> None:
    amounts = [6_000_000, 5_000_000, 1_000_000, 90_000_000, 333]
    volume = 0
    fees = []
    for amount in amounts:
        fees.append(fee_for(TIERED, amount, monthly_volume_before=volume))
        volume += amount
    assert fees == [
        36_000,  # at 0: 0.6 %
        30_000,  # at 6,000,000: still 0.6 %, though the month passes 10,000,000 with it
        5_000,  # at 11,000,000: 0.5 %
        450_000,  # at 12,000,000: 0.5 %
        1,  # at 102,000,000: 0.38 % of 333 = 1.2654
    ]


def test_other_models_ignore_the_monthly_volume() -> None:
    assert fee_for(Percentage(R("0.006")), 100_000, monthly_volume_before=10**9) == 600
    assert fee_for(Fixed(30), 100_000, monthly_volume_before=10**9) == 30


def test_a_contract_charges_its_models_fee() -> None:
    contract = FeeContract(TIERED)
    assert contract.fee_for(100_000, monthly_volume_before=10_000_000) == 500
    assert contract.refund_returns_fee is True


# --------------------------------------------------------------------------- refunds


def test_refunds_in_three_parts_return_the_whole_fee_by_hand() -> None:
    contract = FeeContract(Percentage(R("0.006")))
    # 12,345 fen at 0.6 % is a fee of 74; refunded as 4,115 three times.
    returned = [
        contract.fee_returned_for(fee=74, amount=12_345, refunded_before=0, refund=4_115),  # 24.67 → 25
        contract.fee_returned_for(fee=74, amount=12_345, refunded_before=4_115, refund=4_115),  # 49.33 → 49; 24
        contract.fee_returned_for(fee=74, amount=12_345, refunded_before=8_230, refund=4_115),  # 74; 25
    ]
    assert returned == [25, 24, 25]
    assert sum(returned) == 74


def test_a_contract_without_fee_return_returns_nothing() -> None:
    contract = FeeContract(Fixed(30), refund_returns_fee=False)
    assert contract.fee_returned_for(fee=30, amount=10_000, refunded_before=0, refund=10_000) == 0


@st.composite
def refunds_of_a_payment(draw: st.DrawFn) -> tuple[int, int, list[int]]:
    """(amount, fee of some model, the amount split into refunds)."""
    model = draw(fee_models)
    amount = draw(amounts)
    fee = fee_for(model, amount, monthly_volume_before=draw(volumes))
    cuts = sorted(set(draw(st.lists(st.integers(1, max(amount - 1, 1)), max_size=8))) - {amount})
    parts = [high - low for low, high in zip([0, *cuts], [*cuts, amount], strict=True)]
    return amount, fee, parts


@given(case=refunds_of_a_payment(), returns_fee=st.booleans())
def test_partial_refunds_return_the_whole_fee_or_none_of_it(
    case: tuple[int, int, list[int]], returns_fee: bool
) -> None:
    amount, fee, parts = case
    contract = FeeContract(Fixed(0), refund_returns_fee=returns_fee)
    refunded = 0
    returned = []
    for part in parts:
        returned.append(contract.fee_returned_for(fee=fee, amount=amount, refunded_before=refunded, refund=part))
        refunded += part
    assert all(0 <= back <= part for back, part in zip(returned, parts, strict=True))
    assert sum(returned) == (fee if returns_fee else 0)


# --------------------------------------------------------------------------- properties

amounts = st.one_of(st.integers(1, 2_000), st.integers(1, 10_000_000_000))
volumes = st.one_of(st.just(0), st.integers(0, 10**12))
rates = st.one_of(
    st.integers(0, 100).map(lambda thousandths: Decimal(thousandths).scaleb(-3)),
    st.integers(0, 100_000).map(lambda millionths: Decimal(millionths).scaleb(-6)),
    st.sampled_from([R("0.0005"), R("0.001"), R("0.0038"), R("0.006"), R("0.002")]),
)
fees_minor = st.integers(0, 1_000_000)


@st.composite
def bounded(draw: st.DrawFn) -> PercentageWithBounds:
    low = draw(fees_minor)
    high = draw(st.one_of(st.none(), st.integers(low, low + 1_000_000)))
    return PercentageWithBounds(draw(rates), min_fee=low, max_fee=high)


@st.composite
def tiered(draw: st.DrawFn) -> Tiered:
    starts = sorted(set(draw(st.lists(st.integers(1, 10**11), max_size=19))))
    return Tiered(tuple(Tier(start, draw(rates)) for start in [0, *starts]))


fee_models = st.one_of(rates.map(Percentage), fees_minor.map(Fixed), bounded(), tiered())


def half_up(exact: Fraction) -> int:
    whole = exact.numerator // exact.denominator
    return whole + (1 if exact - whole >= Fraction(1, 2) else 0)


def expected_fee(model: FeeModel, amount: int, volume_before: int) -> int:
    """The fee by the module docstring's table, computed independently with exact fractions."""
    if isinstance(model, Fixed):
        return min(model.amount, amount)
    if isinstance(model, Tiered):
        rate = [tier.rate for tier in model.tiers if tier.volume_from_minor <= volume_before][-1]
        return half_up(amount * Fraction(str(rate)))
    fee = half_up(amount * Fraction(str(model.rate)))
    if isinstance(model, PercentageWithBounds):
        fee = max(fee, model.min_fee)
        fee = fee if model.max_fee is None else min(fee, model.max_fee)
        fee = min(fee, amount)
    return fee


@given(model=fee_models, amount=amounts, volume=volumes)
def test_a_fee_is_never_negative_never_above_the_amount_and_as_the_table_says(
    model: FeeModel, amount: int, volume: int
) -> None:
    fee = fee_for(model, amount, monthly_volume_before=volume)
    assert type(fee) is int
    assert 0 <= fee <= amount
    assert fee == expected_fee(model, amount, volume)


@given(model=bounded(), amount=amounts)
def test_a_bounded_fee_respects_its_minimum_and_maximum(model: PercentageWithBounds, amount: int) -> None:
    fee = fee_for(model, amount)
    assert fee >= min(model.min_fee, amount)
    if model.max_fee is not None:
        assert fee <= model.max_fee


@given(rate=rates, amount=amounts)
def test_a_percentage_fee_is_the_fee_payments_books_at_the_same_rate(rate: Decimal, amount: int) -> None:
    assert fee_for(Percentage(rate), amount) == postings.fee_for(amount, rate)


@given(model=fee_models, returns_fee=st.booleans())
def test_contracts_round_trip_through_json(model: FeeModel, returns_fee: bool) -> None:
    contract = FeeContract(model, refund_returns_fee=returns_fee)
    stored = json.dumps(contract.to_dict())
    assert FeeContract.from_dict(json.loads(stored)) == contract
    assert parse_fee_model(json.loads(json.dumps(model.to_dict()))) == model


# --------------------------------------------------------------------------- the dict form


def test_the_dict_forms_of_each_model() -> None:
    assert Percentage(R("0.0060")).to_dict() == {"model": "percentage", "rate": "0.006"}
    assert Fixed(30).to_dict() == {"model": "fixed", "amount": 30}
    assert PercentageWithBounds(R("0.006"), 10).to_dict() == {
        "model": "percentage_with_bounds",
        "rate": "0.006",
        "min_fee": 10,
        "max_fee": None,
    }
    assert TIERED.to_dict() == {
        "model": "tiered",
        "tiers": [
            {"volume_from_minor": 0, "rate": "0.006"},
            {"volume_from_minor": 10_000_000, "rate": "0.005"},
            {"volume_from_minor": 100_000_000, "rate": "0.0038"},
        ],
    }
    assert FeeContract(Fixed(30)).to_dict() == {
        "fee_model": {"model": "fixed", "amount": 30},
        "refund_returns_fee": True,
    }


def test_a_contract_reads_from_json_with_defaults() -> None:
    contract = FeeContract.from_dict(
        json.loads('{"fee_model": {"model": "percentage_with_bounds", "rate": "0.006", "max_fee": 2500}}')
    )
    assert contract == FeeContract(PercentageWithBounds(R("0.006"), min_fee=0, max_fee=2_500), refund_returns_fee=True)


def test_tiers_given_as_plain_tuples_become_tiers() -> None:
    model = Tiered(((0, R("0.006")), (100, R("0.005"))))  # type: ignore[arg-type]
    assert model.tiers == (Tier(0, R("0.006")), Tier(100, R("0.005")))
    assert model.rate_for(99) == R("0.006")
    assert model.rate_for(100) == R("0.005")


# --------------------------------------------------------------------------- bad contracts


@pytest.mark.parametrize(
    "make, field",
    [
        (lambda: Percentage(0.006), "rate"),  # a float
        (lambda: Percentage(R("-0.001")), "rate"),
        (lambda: Percentage(R("0.1000001")), "rate"),  # above 0.1 (and 7 decimals)
        (lambda: Percentage(R("0.11")), "rate"),
        (lambda: Percentage(R("1")), "rate"),
        (lambda: Percentage(R("NaN")), "rate"),
        (lambda: Percentage(R("0.0000005")), "rate"),  # 7 decimals
        (lambda: Fixed(-1), "amount"),
        (lambda: Fixed(1.0), "amount"),
        (lambda: Fixed(True), "amount"),
        (lambda: PercentageWithBounds(R("0.006"), min_fee=-1), "min_fee"),
        (lambda: PercentageWithBounds(R("0.006"), min_fee=10, max_fee=9), "max_fee"),
        (lambda: Tiered(()), "tiers"),
        (lambda: Tiered(tuple(Tier(i, R("0.006")) for i in range(21))), "tiers"),
        (lambda: Tiered((Tier(1, R("0.006")),)), "tiers[0].volume_from_minor"),
        (lambda: Tiered((Tier(0, R("0.006")), Tier(0, R("0.005")))), "tiers[1].volume_from_minor"),
        (lambda: Tiered((Tier(0, R("0.006")), Tier(5, R("0.2")))), "tiers[1].rate"),
        (lambda: Tiered(((0,),)), "tiers[0]"),
    ],
)
def test_bad_models_are_refused_naming_the_field(make: Any, field: str) -> None:
    with pytest.raises(errors.FeeModelInvalid) as raised:
        make()
    assert raised.value.code == "fee_model_invalid"
    assert raised.value.field == field


@pytest.mark.parametrize(
    "data, field",
    [
        ([], "model"),
        ({"rate": "0.006"}, "model"),
        ({"model": "percent", "rate": "0.006"}, "model"),
        ({"model": "percentage"}, "rate"),
        ({"model": "percentage", "rate": 0.006}, "rate"),  # a JSON number: refused, decimal text only
        ({"model": "percentage", "rate": "6e-3"}, "rate"),
        ({"model": "percentage", "rate": "0.6%"}, "rate"),
        ({"model": "percentage", "rate": "0.006", "max_fee": 5}, "max_fee"),  # not a key of this model
        ({"model": "fixed", "amount": "30"}, "amount"),
        ({"model": "percentage_with_bounds", "rate": "0.006", "min_fee": 5, "max_fee": 1}, "max_fee"),
        ({"model": "tiered", "tiers": "0:0.006"}, "tiers"),
        ({"model": "tiered", "tiers": []}, "tiers"),
        ({"model": "tiered", "tiers": [{"volume_from_minor": 0}]}, "tiers[0]"),
        ({"model": "tiered", "tiers": [{"volume_from_minor": 0, "rate": 0.006}]}, "tiers[0].rate"),
        (
            {
                "model": "tiered",
                "tiers": [{"volume_from_minor": 0, "rate": "0.006"}, {"volume_from_minor": -5, "rate": "0"}],
            },
            "tiers[1].volume_from_minor",
        ),
    ],
)
def test_bad_model_dicts_are_refused_naming_the_field(data: Any, field: str) -> None:
    with pytest.raises(errors.FeeModelInvalid) as raised:
        parse_fee_model(data)
    assert raised.value.field == field
    with pytest.raises(errors.FeeModelInvalid) as raised:
        FeeContract.from_dict({"fee_model": data})
    assert raised.value.field == f"fee_model.{field}"


@pytest.mark.parametrize(
    "data, field",
    [
        ("percentage", "fee_contract"),
        ({}, "fee_model"),
        ({"fee_model": {"model": "fixed", "amount": 1}, "refund_returns_fee": "yes"}, "refund_returns_fee"),
        ({"fee_model": {"model": "fixed", "amount": 1}, "refund_returns_fee": 1}, "refund_returns_fee"),
        ({"fee_model": {"model": "fixed", "amount": 1}, "refunds_return_fee": True}, "refunds_return_fee"),
    ],
)
def test_bad_contract_dicts_are_refused_naming_the_field(data: Any, field: str) -> None:
    with pytest.raises(errors.FeeContractInvalid) as raised:
        FeeContract.from_dict(data)
    assert raised.value.code == "fee_contract_invalid"
    assert raised.value.field == field


@pytest.mark.parametrize(
    "amount, volume, error",
    [
        (0, 0, errors.AmountMustBePositive),
        (-100, 0, errors.AmountMustBePositive),
        (100.0, 0, errors.AmountMustBeInteger),
        (True, 0, errors.AmountMustBeInteger),
        (R("100"), 0, errors.AmountMustBeInteger),
        (100, -1, errors.MonthlyVolumeInvalid),
        (100, 1.5, errors.MonthlyVolumeInvalid),
    ],
)
def test_bad_amounts_and_volumes_are_refused(amount: Any, volume: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        fee_for(TIERED, amount, monthly_volume_before=volume)


def test_fee_for_refuses_what_is_not_a_fee_model() -> None:
    with pytest.raises(errors.FeeModelInvalid) as raised:
        fee_for({"model": "fixed", "amount": 30}, 100)  # type: ignore[arg-type]
    assert raised.value.field == "model"
