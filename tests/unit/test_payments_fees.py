"""Fees and routing, without a database: ``postings.fee_for``, ``postings.fee_returned_for``, ``routing.rank``.

Fees are checked against an independent computation with exact fractions; the
routing order against the rules of ``routing``'s docstring, written out here.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zhangfang.channels.registry import Route
from zhangfang.payments import postings, routing
from zhangfang.payments.models import ChannelHealth
from zhangfang.payments.service import AMOUNT_MAX_MINOR

# --------------------------------------------------------------------------- the fee of a payment


def half_up(exact: Fraction) -> int:
    """A non-negative fraction rounded to the nearest integer, halves away from zero."""
    whole = exact.numerator // exact.denominator
    return whole + (1 if exact - whole >= Fraction(1, 2) else 0)


# Small amounts and rates of few decimals land on exact halves often, where half up and half even differ.
amounts = st.one_of(st.integers(1, 2_000), st.integers(min_value=1, max_value=AMOUNT_MAX_MINOR))
# What a merchant's fee_rate may be (parties.parse_fee_rate): 0 to 0.1, at most 6 decimals.
fee_rates = st.one_of(
    st.integers(0, 100).map(lambda thousandths: Decimal(thousandths).scaleb(-3)),
    st.integers(min_value=0, max_value=100_000).map(lambda millionths: Decimal(millionths).scaleb(-6)),
)


@given(amount=amounts, rate=fee_rates)
def test_the_fee_is_amount_times_rate_rounded_half_up(amount: int, rate: Decimal) -> None:
    fee = postings.fee_for(amount, rate)
    assert type(fee) is int
    assert fee == half_up(Fraction(amount) * Fraction(str(rate)))
    assert 0 <= fee <= amount


@given(n=st.integers(0, 10_000_000), rate=st.sampled_from(["0.1", "0.02", "0.01", "0.004", "0.002", "0.000002"]))
def test_a_fee_of_exactly_half_a_fen_more_than_n_rounds_up_to_n_plus_one(n: int, rate: str) -> None:
    inverse = 1 / Fraction(rate)  # an even integer for these rates
    amount = int((2 * n + 1) * inverse / 2)  # amount × rate = n + 1/2
    assert Fraction(amount) * Fraction(rate) == n + Fraction(1, 2)
    assert postings.fee_for(amount, Decimal(rate)) == n + 1


@pytest.mark.parametrize(
    "amount, rate, fee",
    [
        (12_345, "0.006", 74),  # 74.07
        (250, "0.006", 2),  # 1.5: the half goes up
        (2_500, "0.001", 3),  # 2.5: up, not to the even 2
        (500, "0.001", 1),  # 0.5: up, not to the even 0
        (249, "0.006", 1),  # 1.494
        (83, "0.006", 0),  # 0.498: a small payment pays no fee
        (1, "0.5", 1),  # 0.5
        (10_000_000_000, "0.1", 1_000_000_000),
        (10_000_000_000, "0.000001", 10_000),
        (999_999_999, "0.000001", 1_000),  # 999.999999
        (5, "0", 0),
    ],
)
def test_worked_fee_examples(amount: int, rate: str, fee: int) -> None:
    assert postings.fee_for(amount, Decimal(rate)) == fee


# --------------------------------------------------------------------------- the fee a refund returns


@st.composite
def refunds_of_an_order(draw: st.DrawFn) -> tuple[int, int, list[int]]:
    """(amount, fee ≤ amount, the amount split into refunds in some order)."""
    amount = draw(st.one_of(st.integers(1, 50), st.integers(1, AMOUNT_MAX_MINOR)))
    fee = draw(st.one_of(st.integers(0, amount), st.sampled_from([0, amount, amount // 2, 1 if amount else 0])))
    cut_count_max = min(amount - 1, 12)
    cuts = draw(st.lists(st.integers(1, max(amount - 1, 1)), max_size=cut_count_max, unique=True))
    cuts = sorted(cut for cut in cuts if cut < amount)
    parts = [high - low for low, high in zip([0, *cuts], [*cuts, amount], strict=True)]
    return amount, fee, draw(st.permutations(parts))


def returned_in_turn(amount: int, fee: int, parts: list[int]) -> list[int]:
    refunded = 0
    returned = []
    for part in parts:
        returned.append(postings.fee_returned_for(fee=fee, amount=amount, refunded_before=refunded, refund=part))
        refunded += part
    return returned


@given(refunds_of_an_order())
def test_refunds_in_any_parts_and_order_return_exactly_the_whole_fee(case: tuple[int, int, list[int]]) -> None:
    amount, fee, parts = case
    assert sum(parts) == amount and all(part > 0 for part in parts)
    returned = returned_in_turn(amount, fee, parts)
    assert all(0 <= back <= part for back, part in zip(returned, parts, strict=True)), (returned, parts)
    assert sum(returned) == fee


@given(refunds_of_an_order())
def test_the_fee_returned_so_far_stays_within_half_a_fen_of_its_proportional_share(
    case: tuple[int, int, list[int]],
) -> None:
    amount, fee, parts = case
    returned = returned_in_turn(amount, fee, parts)
    refunded = 0
    back = 0
    for part, part_back in zip(parts, returned, strict=True):
        refunded += part
        back += part_back
        assert abs(back - Fraction(fee * refunded, amount)) <= Fraction(1, 2)
        assert back <= fee


@pytest.mark.parametrize(
    "fee, amount, parts, returned",
    [
        (60, 10_000, [3_000, 7_000], [18, 42]),
        (60, 10_000, [7_000, 3_000], [42, 18]),
        (1, 3, [1, 1, 1], [0, 1, 0]),  # 1/3 → 0, 2/3 → 1, 3/3 → 1
        (1, 2, [1, 1], [1, 0]),  # the half goes up on the first
        (74, 12_345, [12_345], [74]),
        (0, 500, [100, 400], [0, 0]),
    ],
)
def test_worked_fee_return_examples(fee: int, amount: int, parts: list[int], returned: list[int]) -> None:
    assert returned_in_turn(amount, fee, parts) == returned


# --------------------------------------------------------------------------- routing


NOW = dt.datetime(2026, 3, 5, 10, 0, tzinfo=dt.UTC)
THRESHOLD = 3
CODES = ("alipay", "wechatpay", "bank_direct:icbc", "bank_direct:cmb")


def route(channel: str, rate: str = "0.0038", *, fixed: int = 0, priority: int = 100) -> Route:
    return Route(
        channel=channel,
        method="bank_card",
        channel_method="x",
        currency="CNY",
        amount_min_minor=1,
        amount_max_minor=AMOUNT_MAX_MINOR,
        cost_rate=Decimal(rate),
        cost_fixed_minor=fixed,
        priority=priority,
    )


def health(channel: str, breaker: str) -> ChannelHealth:
    """A breaker in state ``closed`` (some failures, under the threshold), ``open`` or ``half_open``."""
    if breaker == "closed":
        return ChannelHealth(channel, THRESHOLD - 1, None, NOW, "timeout")
    until = NOW + dt.timedelta(seconds=30) if breaker == "open" else NOW - dt.timedelta(seconds=1)
    return ChannelHealth(channel, THRESHOLD, until, NOW, "timeout")


def rank(routes: list[Route], amount: int = 10_000, preferred: str | None = None, **breakers: str) -> list[str]:
    healths = {code.replace("__", ":"): health(code.replace("__", ":"), state) for code, state in breakers.items()}
    ranked = routing.rank(
        routes, amount=amount, preferred_channel=preferred, healths=healths, threshold=THRESHOLD, now=NOW
    )
    return [r.channel for r in ranked]


def test_the_cheapest_route_for_the_amount_comes_first() -> None:
    routes = [route("alipay", "0.0038"), route("bank_direct:icbc", "0.0020"), route("wechatpay", "0.0030")]
    assert rank(routes) == ["bank_direct:icbc", "wechatpay", "alipay"]


def test_a_fixed_cost_makes_a_channel_cheaper_only_for_large_amounts() -> None:
    routes = [route("alipay", "0.0038"), route("bank_direct:icbc", "0.0020", fixed=100)]
    assert rank(routes, amount=10_000) == ["alipay", "bank_direct:icbc"]  # 38 against 120
    assert rank(routes, amount=1_000_000) == ["bank_direct:icbc", "alipay"]  # 3,800 against 2,100


def test_equal_costs_go_by_priority_then_by_code() -> None:
    routes = [route("wechatpay", priority=100), route("alipay", priority=100), route("bank_direct:cmb", priority=50)]
    assert rank(routes) == ["bank_direct:cmb", "alipay", "wechatpay"]


def test_the_preferred_channel_comes_first_even_when_dearer() -> None:
    routes = [route("alipay", "0.0038"), route("bank_direct:icbc", "0.0020")]
    assert rank(routes, preferred="alipay") == ["alipay", "bank_direct:icbc"]
    assert rank(routes, preferred="not_configured") == ["bank_direct:icbc", "alipay"]


def test_an_open_breaker_drops_the_channel_even_when_preferred() -> None:
    routes = [route("alipay", "0.0038"), route("bank_direct:icbc", "0.0020"), route("wechatpay", "0.0030")]
    assert rank(routes, preferred="bank_direct:icbc", bank_direct__icbc="open") == ["wechatpay", "alipay"]
    assert rank(routes, alipay="open", wechatpay="open", bank_direct__icbc="open") == []


def test_a_half_open_channel_comes_after_healthy_ones_and_failures_under_the_threshold_do_not_count() -> None:
    routes = [route("alipay", "0.0038"), route("bank_direct:icbc", "0.0020"), route("wechatpay", "0.0030")]
    assert rank(routes, bank_direct__icbc="half_open", wechatpay="closed") == [
        "wechatpay",
        "alipay",
        "bank_direct:icbc",
    ]
    assert rank(routes, preferred="bank_direct:icbc", bank_direct__icbc="half_open")[0] == "bank_direct:icbc"


def test_no_routes_rank_to_nothing() -> None:
    assert rank([]) == []


route_specs = st.tuples(
    st.sampled_from(CODES),
    st.integers(0, 1000).map(lambda bp: str(Decimal(bp).scaleb(-4))),
    st.integers(0, 300),
    st.integers(0, 3),
)


@given(
    specs=st.lists(route_specs, max_size=8),
    breakers=st.dictionaries(st.sampled_from(CODES), st.sampled_from(["closed", "open", "half_open"])),
    preferred=st.one_of(st.none(), st.sampled_from(CODES)),
    amount=st.integers(1, 100_000_000),
)
def test_rank_keeps_every_usable_route_and_never_puts_a_better_one_after_a_worse_one(
    specs: list[tuple[str, str, int, int]], breakers: dict[str, str], preferred: str | None, amount: int
) -> None:
    routes = [route(code, rate, fixed=fixed, priority=priority) for code, rate, fixed, priority in specs]
    healths = {code: health(code, state) for code, state in breakers.items()}
    ranked = routing.rank(
        routes, amount=amount, preferred_channel=preferred, healths=healths, threshold=THRESHOLD, now=NOW
    )

    usable = [r for r in routes if breakers.get(r.channel) != "open"]
    assert sorted(ranked, key=repr) == sorted(usable, key=repr)  # the same routes, none lost, no open breaker
    if any(r.channel == preferred for r in usable):
        assert ranked[0].channel == preferred

    def better(a: Route, b: Route) -> bool:
        """True when the docstring's rules, in their order, put ``a`` strictly before ``b``."""
        rules = (
            (a.channel == preferred, b.channel == preferred),  # preferred first
            (breakers.get(a.channel) != "half_open", breakers.get(b.channel) != "half_open"),  # healthy first
            (-a.cost_minor(amount), -b.cost_minor(amount)),  # cheaper first
            (-a.priority, -b.priority),  # lower priority number first
        )
        for mine, theirs in rules:
            if mine != theirs:
                return mine > theirs
        return a.channel < b.channel

    for i, earlier in enumerate(ranked):
        for later in ranked[i + 1 :]:
            assert not better(later, earlier), (later, earlier)
