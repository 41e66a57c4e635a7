"""Loan products (贷款产品) on SQLite and PostgreSQL: the catalogue, retirement, and drawdowns that name a product.

The worked loan is the one of test_lending_loans.py: 10,000.00 at 12 % a year over 12 months,
equal installments, from 2026-01-15 — EMI 888.49, period 1 = 100.00 interest + 788.49 principal.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from tests.integration.test_lending_loans import START, balance, code_of, merchant
from tests.payments_env import PaymentsEnv
from tests.settlement_helpers import pay

from zhangfang.db.uow import run_in_transaction
from zhangfang.errors import ZhangfangError
from zhangfang.lending import pos, products, service
from zhangfang.lending.models import LoanProductRequest, LoanRequest
from zhangfang.lending.tables import loan_products
from zhangfang.settlement import service as settlement

TERM = LoanProductRequest(
    code="term-12m",
    name="经营贷 12 个月",
    kind="term",
    annual_rate_min="0.12",
    annual_rate_max="0.12",
    periods_min=12,
    periods_max=12,
    principal_min=100_000,
    principal_max=5_000_000,
    settlement_share=None,
)
RANGED = LoanProductRequest(
    code="term-flex",
    name="经营贷 6 到 24 个月",
    kind="term",
    annual_rate_min="0.08",
    annual_rate_max="0.15",
    periods_min=6,
    periods_max=24,
    principal_min=100_000,
    principal_max=5_000_000,
    method="equal-principal",
)


def create(engine, request: LoanProductRequest = TERM, **changes):
    request = LoanProductRequest(**{**vars(request), **changes})
    return run_in_transaction(engine, lambda conn: products.create_product(conn, request=request))


def draw(engine, shop: str, key: str = "L-1", **terms):
    request = LoanRequest(key=key, merchant_ref=shop, principal=terms.pop("principal", 1_000_000), start=START, **terms)
    return run_in_transaction(engine, lambda conn: service.disburse(conn, request=request))


def count(engine, table: str) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()


# --------------------------------------------------------------------------- the catalogue


def test_a_product_is_created_once_per_code_and_another_definition_is_a_conflict(engine):
    product, created = create(engine)
    assert created and (product.code, product.state, product.credit_policy) == ("term-12m", "active", None)
    assert product.as_json()["annual_rate_min"] == "0.12" and product.as_json()["principal_max"] == 5_000_000

    replayed, created = create(engine, annual_rate_min="0.120", annual_rate_max=Decimal("0.12"))
    assert (replayed, created) == (product, False)  # the same definition, written another way

    assert code_of(lambda: create(engine, principal_max=6_000_000)) == "loan_product_conflict"
    assert code_of(lambda: create(engine, name="another name")) == "loan_product_conflict"
    with engine.connect() as conn:
        assert products.get_product(conn, code="term-12m") == product
        assert products.list_products(conn) == [product]
        assert products.list_products(conn, state="retired") == []
        assert code_of(lambda: products.list_products(conn, state="gone")) == "loan_product_state_invalid"
        assert code_of(lambda: products.get_product(conn, code="nope")) == "loan_product_not_found"
        assert code_of(lambda: products.get_product(conn, code="../x")) == "loan_product_not_found"


def test_a_pos_product_takes_the_default_credit_policy_for_what_it_leaves_out(engine):
    product, _ = create(
        engine, code="pos-90d", kind="pos", periods_min=3, periods_max=3, settlement_share="0.25", credit_ratio="0.3"
    )
    policy = product.credit_policy
    assert (policy.ratio, policy.lookback_days, policy.step, policy.maximum) == (
        Decimal("0.3"),
        90,
        100_00,
        1_000_000_00,
    )
    assert product.settlement_share == Decimal("0.25")


@pytest.mark.parametrize(
    "changes, code, field",
    [
        ({"code": "POS 90"}, "loan_product_code_invalid", "code"),
        ({"code": "-pos"}, "loan_product_code_invalid", "code"),
        ({"name": "  "}, "loan_product_name_invalid", "name"),
        ({"kind": "payday"}, "loan_kind_unknown", "kind"),
        ({"currency": "cny"}, "currency_unknown", "currency"),
        ({"method": "balloon"}, "amortization_method_unknown", "method"),
        ({"day_count": "actual/actual"}, "day_count_unknown", "day_count"),
        ({"annual_rate_min": 0.1}, "annual_rate_invalid", "annual_rate_min"),
        ({"annual_rate_max": "10"}, "annual_rate_invalid", "annual_rate_max"),
        ({"annual_rate_max": "NaN"}, "annual_rate_invalid", "annual_rate_max"),
        ({"annual_rate_max": "0.12345678901"}, "annual_rate_invalid", "annual_rate_max"),
        ({"periods_min": 0}, "period_count_invalid", "periods_min"),
        ({"periods_max": 601}, "period_count_invalid", "periods_max"),
        ({"principal_min": 1.5}, "amount_must_be_integer", "principal_min"),
        ({"principal_min": 0}, "amount_must_be_positive", "principal_min"),
        ({"principal_max": 10**16}, "loan_principal_too_large", "principal_max"),
        ({"annual_rate_min": "0.2"}, "loan_product_bounds_invalid", "annual_rate_min"),
        ({"periods_min": 13}, "loan_product_bounds_invalid", "periods_min"),
        ({"principal_min": 5_000_001}, "loan_product_bounds_invalid", "principal_min"),
        ({"penalty_daily_rate": "0.02"}, "penalty_rate_invalid", "penalty_daily_rate"),
        ({"allocation_order": ("principal",)}, "allocation_order_invalid", "order"),
        ({"kind": "pos", "settlement_share": "1.5"}, "settlement_share_invalid", "settlement_share"),
        ({"kind": "pos", "credit_ratio": "-1"}, "credit_policy_invalid", "credit_ratio"),
        ({"kind": "pos", "credit_lookback_days": 0}, "credit_policy_invalid", "credit_lookback_days"),
        ({"kind": "pos", "credit_step": 0}, "credit_policy_invalid", "credit_step"),
    ],
)
def test_a_product_breaking_a_rule_is_refused_with_its_code_and_nothing_is_written(engine, changes, code, field):
    with pytest.raises(ZhangfangError) as raised:
        create(engine, **changes)
    assert (raised.value.code, raised.value.field) == (code, field)
    assert count(engine, "loan_products") == 0


def test_the_database_refuses_a_product_breaking_its_constraints(engine):
    product, _ = create(engine)
    row = {k: v for k, v in vars(product).items() if k in loan_products.c and k != "credit_policy"}
    row |= {
        "method": str(product.method),
        "day_count": str(product.day_count),
        "annual_rate_min": "0.12",
        "annual_rate_max": "0.12",
        "penalty_daily_rate": "0.0005",
        "allocation_order": "penalty,fee,interest,principal",
        "settlement_share": None,
        "request_hash": "x",
    }
    for bad in (
        {"code": "term-12m"},  # unique
        {"principal_min": 6_000_000},
        {"periods_max": 601},
        {"state": "paused"},
        {"kind": "pos"},  # a POS product without its credit policy
        {"credit_ratio": "0.5"},  # a term product with one
    ):
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
            conn.execute(loan_products.insert().values(**{**row, "code": "other", **bad}))
    assert count(engine, "loan_products") == 1


# --------------------------------------------------------------------------- drawdowns naming a product


def test_a_drawdown_naming_a_product_takes_the_terms_it_leaves_out(engine):
    shop = merchant(engine)
    create(engine)
    loan, created = draw(engine, shop, product="term-12m")
    assert created and loan.product_code == "term-12m"
    assert (loan.kind, loan.annual_rate, loan.periods, loan.method, loan.settlement_share) == (
        "term",
        Decimal("0.12"),
        12,
        "equal-installment",
        None,
    )
    first = loan.installments[0]
    assert (first.interest, first.principal) == (10_000, 78_849)  # the worked loan: EMI 888.49
    assert loan.as_json(START)["product"] == "term-12m"

    # the same schedule as the loan drawn with every term spelled out and no product
    plain, _ = draw(engine, shop, key="L-plain", annual_rate=Decimal("0.12"), periods=12, kind="term")
    assert plain.product_code is None
    assert [(i.principal, i.interest) for i in plain.installments] == [
        (i.principal, i.interest) for i in loan.installments
    ]
    # terms given within the product's bounds are accepted; the key replays
    again, created = draw(engine, shop, product="term-12m", annual_rate="0.12", periods=12, kind="term")
    assert (again.ref, created) == (loan.ref, False)
    assert code_of(lambda: draw(engine, shop, product="term-12m", principal=1_000_001)) == "loan_key_conflict"


def test_a_product_with_a_range_needs_the_drawdown_to_choose_within_it(engine):
    shop = merchant(engine)
    create(engine, RANGED)
    with pytest.raises(ZhangfangError) as raised:
        draw(engine, shop, product="term-flex", periods=12)
    assert (raised.value.code, raised.value.field) == ("loan_term_required", "annual_rate")
    assert code_of(lambda: draw(engine, shop, product="term-flex", annual_rate="0.1")) == "loan_term_required"
    loan, _ = draw(engine, shop, product="term-flex", annual_rate="0.15", periods=6)  # both ends inclusive
    assert (loan.method, loan.periods, loan.kind) == ("equal-principal", 6, "term")
    # without a product, the rate and the term are required as they always were
    assert code_of(lambda: draw(engine, shop, key="L-2", periods=12)) == "loan_term_required"


@pytest.mark.parametrize(
    "terms, field",
    [
        ({"kind": "pos"}, "kind"),
        ({"currency": "USD"}, "currency"),
        ({"principal": 99_999}, "principal"),
        ({"principal": 5_000_001}, "principal"),
        ({"annual_rate": "0.079"}, "annual_rate"),
        ({"annual_rate": "0.1500001"}, "annual_rate"),
        ({"periods": 25}, "periods"),
        ({"method": "bullet"}, "method"),
        ({"day_count": "actual/365"}, "day_count"),
        ({"penalty_daily_rate": "0.001"}, "penalty_daily_rate"),
        ({"allocation_order": ("principal", "interest", "fee", "penalty")}, "allocation_order"),
    ],
)
def test_a_drawdown_outside_its_product_is_refused_naming_the_term_and_nothing_is_written(engine, terms, field):
    shop = merchant(engine)
    create(engine, RANGED)
    entries = count(engine, "ledger_entries")
    with pytest.raises(ZhangfangError) as raised:
        draw(engine, shop, product="term-flex", **{"annual_rate": "0.1", "periods": 12, **terms})
    assert (raised.value.code, raised.value.field) == ("loan_terms_outside_product", field)
    assert raised.value.details["product"] == "term-flex"
    assert (count(engine, "loans"), count(engine, "ledger_entries")) == (0, entries)
    assert balance(engine, f"merchant:{shop}:loan_principal") == 0


def test_a_drawdown_naming_an_unknown_product_is_refused(engine):
    shop = merchant(engine)
    assert code_of(lambda: draw(engine, shop, product="no-such")) == "loan_product_not_found"
    assert count(engine, "loans") == 0


def test_a_retired_product_takes_no_new_loans_and_its_loans_run_on(engine):
    shop = merchant(engine)
    create(engine)
    loan, _ = draw(engine, shop, product="term-12m")
    retire = lambda: run_in_transaction(engine, lambda conn: products.retire_product(conn, code="term-12m"))  # noqa: E731
    product, retired = retire()
    assert (product.state, retired) == ("retired", True) and product.updated_at >= product.created_at
    assert retire()[1] is False  # retiring again changes nothing

    assert code_of(lambda: draw(engine, shop, key="L-2", product="term-12m")) == "loan_product_retired"
    replayed, created = draw(engine, shop, product="term-12m")  # the first loan's key still replays it
    assert (replayed.ref, created) == (loan.ref, False)
    assert count(engine, "loans") == 1
    repaid = run_in_transaction(
        engine,
        lambda conn: service.repay(
            conn, loan_ref=loan.ref, amount=88_849, source="manual", key="p1", as_of=dt.date(2026, 2, 15)
        ),
    )
    assert repaid.applied == 88_849
    with engine.connect() as conn:
        assert service.get_loan(conn, ref=loan.ref).product_code == "term-12m"
        assert [p.code for p in products.list_products(conn, state="retired")] == ["term-12m"]
        assert products.list_products(conn, state="active") == []
    assert code_of(lambda: run_in_transaction(engine, lambda c: products.retire_product(c, code="x"))) == (
        "loan_product_not_found"
    )


# --------------------------------------------------------------------------- a POS product's credit policy

SHANGHAI = ZoneInfo("Asia/Shanghai")
MON, TUE, WED = (dt.date(2026, 3, day) for day in (2, 3, 4))


def test_a_pos_product_s_credit_policy_replaces_the_default_one(payments: PaymentsEnv):
    env = payments
    shop = env.merchant("pos-shop")
    pay(env, shop, 10_000_000, dt.datetime.combine(MON, dt.time(12), SHANGHAI), "0.006")  # 100,000.00 settled
    run_in_transaction(
        env.engine,
        lambda conn: settlement.run_settlement(
            conn,
            settlement_date=TUE,
            registry=env.registry,
            now=dt.datetime.combine(TUE, dt.time(12), SHANGHAI),
            deduction_providers=pos.settlement_deductions(),
        ),
    )
    pos_product = dict(
        kind="pos", annual_rate_min="0.12", annual_rate_max="0.12", periods_min=3, periods_max=3, settlement_share="0.2"
    )
    create(env.engine, code="pos-tight", principal_max=10_000_000, credit_ratio="0.2", **pos_product)
    create(env.engine, code="pos-wide", principal_max=10_000_000, credit_ratio="0.8", **pos_product)

    def lend(key: str, principal: int, product: str | None = None):
        terms = {"annual_rate": "0.12", "periods": 3} if product is None else {}
        request = LoanRequest(key=key, merchant_ref=shop.ref, principal=principal, start=WED, product=product, **terms)
        return run_in_transaction(env.engine, lambda conn: service.disburse(conn, request=request))

    # the default policy lends half the settled volume: 50,000.00
    with pytest.raises(ZhangfangError) as raised:
        lend("wide-default", 6_000_000)
    assert (raised.value.code, raised.value.details["available"]) == ("credit_line_exceeded", 5_000_000)
    with pytest.raises(ZhangfangError) as raised:
        lend("tight", 3_000_000, "pos-tight")  # 0.2 of it: 20,000.00
    assert (raised.value.code, raised.value.details["available"]) == ("credit_line_exceeded", 2_000_000)
    loan, created = lend("wide", 6_000_000, "pos-wide")  # 0.8 of it: 80,000.00
    assert created and (loan.kind, loan.product_code, loan.settlement_share) == ("pos", "pos-wide", Decimal("0.2"))
