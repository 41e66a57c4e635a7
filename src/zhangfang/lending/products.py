"""Loan products (贷款产品): the catalogue of terms operators lend on, and how a drawdown takes them.

A product names a kind of loan (``pos-90d``: POS贷 over 3 months; ``term-12m``), its fixed terms
(kind, currency, amortization method, day count, penalty rate, allocation order, and for POS the
settlement share and the credit policy) and the bounds a drawdown chooses within (annual rate,
period count, principal). ``service.disburse`` with ``LoanRequest.product`` calls ``fill_terms``
and ``check_terms`` here; a drawdown without a product never reads the catalogue.

Every function that takes a ``Connection`` expects it inside a transaction and never commits:
the caller owns the unit of work.

Guarantees
- A product is created once per ``code``: the same definition replays it (``created`` False),
  another is ``loan_product_conflict``. A definition never changes after creation; only its state
  moves, ``active`` → ``retired``, once (retiring again changes nothing).
- A retired product takes no new loans (``loan_product_retired``). Its loans run on unchanged: each
  loan keeps its own copy of every term and the product's code (``loans.product_code``), and a
  drawdown replaying an earlier loan's key replays it whatever the product's state.
- A drawdown naming a product lends on the product's terms: a term the request leaves out
  (``models.UNSET``) is the product's — the annual rate or the period count only when the product
  allows a single value, otherwise ``loan_term_required``; a term the request gives lies within the
  product's bounds (rate, periods, principal: both ends inclusive) or equals its fixed term, otherwise
  ``loan_terms_outside_product`` naming the term in ``field``. Either way nothing is written.
- A POS product's credit policy, not ``CreditPolicy()``, limits its drawdowns (``service.credit_line``).
- A drawdown reads its product under a shared row lock (PostgreSQL ``FOR SHARE``), and retiring takes
  the row's update lock: once a retirement commits, no drawdown still in flight lends on the product.

Constraints (``create_product``; codes in ``errors``, in that order):

========================  =====================================================================
field                     constraint
========================  =====================================================================
``code``                  1 to 40 of ``a-z 0-9 - _``, first a letter or digit; unique
``name``                  1 to 100 characters, not only spaces
``kind``                  ``pos`` or ``term``
``currency``              an ISO 4217 code
``method``, ``day_count`` as ``schedule.build_schedule`` takes them
``annual_rate_min/max``   decimal text, 0 <= rate < 10, at most 10 decimal places; min <= max
``periods_min/max``       ``int`` 1 to 600 (months); min <= max
``principal_min/max``     ``int`` minor units, 1 to ``schedule.PRINCIPAL_MINOR_MAX``; min <= max
``penalty_daily_rate``    decimal text, 0 to 0.01
``allocation_order``      penalty, fee, interest, principal, each once
``settlement_share``      POS: decimal text 0 to 1, or None (no share); ``term``: none, ignored
``credit_…``              POS: ratio decimal text 0 to 10, lookback 1 to 3660 days, step >= 1,
                          maximum >= 0; left out, ``CreditPolicy``'s; ``term``: none, ignored
========================  =====================================================================

Rates are stored as canonical decimal text (``0.10`` is ``0.1``), so the same definition
written two ways replays.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal, InvalidOperation
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from zhangfang import money
from zhangfang.db.sql import insert_ignoring_conflict, request_digest
from zhangfang.lending import errors
from zhangfang.lending.allocation import DEFAULT_ORDER, Component, allocate_repayment
from zhangfang.lending.models import (
    DEFAULT_CURRENCY,
    DEFAULT_KIND,
    DEFAULT_METHOD,
    DEFAULT_PENALTY_DAILY_RATE,
    DEFAULT_SETTLEMENT_SHARE,
    UNSET,
    CreditPolicy,
    LoanProduct,
    LoanProductRequest,
    LoanRequest,
)
from zhangfang.lending.schedule import (
    ANNUAL_RATE_MAX,
    DEFAULT_DAY_COUNT,
    PERIOD_COUNT_MAX,
    PRINCIPAL_MINOR_MAX,
    DayCount,
    Method,
)
from zhangfang.lending.tables import LOAN_KINDS, PRODUCT_STATES, loan_products

CODE_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
NAME_LENGTH_MAX = 100
RATE_PLACES_MAX = 10
PENALTY_DAILY_RATE_MAX = Decimal("0.01")
SETTLEMENT_SHARE_MAX = Decimal(1)
CREDIT_RATIO_MAX = Decimal(10)
CREDIT_LOOKBACK_DAYS_MAX = 3660


def _now(now: dt.datetime | None) -> dt.datetime:
    return now or dt.datetime.now(dt.UTC)


# --------------------------------------------------------------------------- checks


def check_rate(
    value: Any, field: str, maximum: Decimal, error: type[errors.InvalidInput], *, below_maximum: bool = False
) -> Decimal:
    """A rate: decimal text (or a ``Decimal``, or an ``int``) from 0 to ``maximum``, at most
    ``RATE_PLACES_MAX`` decimal places; never a float. Loans, products and installment plans all check
    their rates here."""
    if isinstance(value, (float, bool)) or not isinstance(value, (str, Decimal, int)):
        raise error(f"{field} is decimal text such as 0.12, never a float; got {value!r}", field=field)
    try:
        number = Decimal(value.strip() if isinstance(value, str) else value)
    except InvalidOperation:
        raise error(f"{field} is decimal text such as 0.12, got {value!r}", field=field) from None
    in_range = number.is_finite() and (0 <= number < maximum if below_maximum else 0 <= number <= maximum)
    if not in_range:
        bound = f"less than {maximum}" if below_maximum else f"at most {maximum}"
        raise error(f"{field} is at least 0 and {bound}, got {value!r}", field=field)
    exponent = number.normalize().as_tuple().exponent
    assert isinstance(exponent, int)  # finite
    if exponent < -RATE_PLACES_MAX:
        raise error(f"{field} has at most {RATE_PLACES_MAX} decimal places, got {value!r}", field=field)
    return number


def _text(number: Decimal) -> str:
    """Canonical decimal text: ``0.10`` and ``0.1`` are both ``0.1``; never an exponent."""
    return format(number.normalize(), "f")


def _int(value: Any, field: str, minimum: int, maximum: int, error: type[errors.InvalidInput]) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise error(f"{field} is an int from {minimum} to {maximum}, got {value!r}", field=field)
    return value


def _principal(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise errors.AmountMustBeInteger(
            f"{field} is an int of the minor unit (fen), got {type(value).__name__}", field=field
        )
    if value < 1:
        raise errors.AmountMustBePositive(f"{field} must be at least 1 minor unit, got {value}", field=field)
    if value > PRINCIPAL_MINOR_MAX:
        raise errors.LoanPrincipalTooLarge(
            f"{field} must be at most {PRINCIPAL_MINOR_MAX} minor units, got {value}", field=field
        )
    return value


def _enum(value: Any, kind: type[Method] | type[DayCount], error: type[errors.InvalidInput], field: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        known = ", ".join(member.value for member in kind)
        raise error(f"{field} must be one of {known}, got {value!r}", field=field) from None


def _order(value: Any) -> tuple[Component, ...]:
    allocate_repayment(1, (), order=value)  # refuses an order not the four components once each
    return tuple(Component(c) for c in value)


def _bounds(minimum: Any, maximum: Any, field: str) -> None:
    if minimum > maximum:
        raise errors.LoanProductBoundsInvalid(
            f"{field}_min ({minimum}) is above {field}_max ({maximum})", field=f"{field}_min"
        )


def _credit_policy(request: LoanProductRequest) -> CreditPolicy:
    default = CreditPolicy()
    error = errors.CreditPolicyInvalid
    ratio = request.credit_ratio
    lookback = request.credit_lookback_days
    step = request.credit_step
    maximum = request.credit_maximum
    return CreditPolicy(
        ratio=default.ratio if ratio is None else check_rate(ratio, "credit_ratio", CREDIT_RATIO_MAX, error),
        lookback_days=default.lookback_days
        if lookback is None
        else _int(lookback, "credit_lookback_days", 1, CREDIT_LOOKBACK_DAYS_MAX, error),
        step=default.step if step is None else _int(step, "credit_step", 1, PRINCIPAL_MINOR_MAX, error),
        maximum=default.maximum if maximum is None else _int(maximum, "credit_maximum", 0, PRINCIPAL_MINOR_MAX, error),
    )


def check_code(code: Any) -> str:
    """Returns ``code`` if it is a product code (``CODE_PATTERN``); else ``loan_product_code_invalid``."""
    if not isinstance(code, str) or not CODE_PATTERN.fullmatch(code):
        raise errors.LoanProductCodeInvalid(
            f"code is 1 to 40 of a-z, 0-9, - and _, starting with a letter or digit (pos-90d); got {code!r}",
            field="code",
        )
    return code


# --------------------------------------------------------------------------- reading


def _product_of(row: Row[Any]) -> LoanProduct:
    policy = None
    if row.kind == "pos":
        policy = CreditPolicy(
            ratio=Decimal(row.credit_ratio),
            lookback_days=row.credit_lookback_days,
            step=row.credit_step,
            maximum=row.credit_maximum,
        )
    return LoanProduct(
        code=row.code,
        name=row.name,
        kind=row.kind,
        currency=row.currency,
        method=Method(row.method),
        day_count=DayCount(row.day_count),
        annual_rate_min=Decimal(row.annual_rate_min),
        annual_rate_max=Decimal(row.annual_rate_max),
        periods_min=row.periods_min,
        periods_max=row.periods_max,
        principal_min=row.principal_min,
        principal_max=row.principal_max,
        penalty_daily_rate=Decimal(row.penalty_daily_rate),
        allocation_order=tuple(Component(c) for c in row.allocation_order.split(",")),
        settlement_share=Decimal(row.settlement_share) if row.settlement_share is not None else None,
        credit_policy=policy,
        state=row.state,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _product_row(conn: Connection, code: Any, *, lock: str | None = None) -> Row[Any]:
    if not isinstance(code, str) or not CODE_PATTERN.fullmatch(code):
        raise errors.LoanProductNotFound(f"loan product {code!r} does not exist", field="product")
    query = sa.select(loan_products).where(loan_products.c.code == code)
    if lock is not None:
        query = query.with_for_update(read=lock == "share")
    row = conn.execute(query).first()
    if row is None:
        raise errors.LoanProductNotFound(f"loan product {code} does not exist", field="product")
    return row


def get_product(conn: Connection, *, code: str) -> LoanProduct:
    """The product with this code, active or retired."""
    return _product_of(_product_row(conn, code))


def product_for_drawdown(conn: Connection, *, code: str) -> LoanProduct:
    """The product a drawdown names, read under a shared lock so that a retirement waits for the drawdown."""
    return _product_of(_product_row(conn, code, lock="share"))


def list_products(conn: Connection, *, state: str | None = None) -> list[LoanProduct]:
    """The catalogue, by code; only the products in ``state`` (``active`` or ``retired``) when given."""
    query = sa.select(loan_products).order_by(loan_products.c.code)
    if state is not None:
        if state not in PRODUCT_STATES:
            raise errors.LoanProductStateInvalid(
                f"state is one of {', '.join(PRODUCT_STATES)}, not {state!r}", field="state"
            )
        query = query.where(loan_products.c.state == state)
    return [_product_of(row) for row in conn.execute(query)]


# --------------------------------------------------------------------------- writing


def create_product(
    conn: Connection, *, request: LoanProductRequest, now: dt.datetime | None = None
) -> tuple[LoanProduct, bool]:
    """Add a product to the catalogue, idempotently on its code; returns (product, created).

    See the module docstring for the constraints, checked in that order before anything is written.
    """
    code = check_code(request.code)
    name = request.name
    if not isinstance(name, str) or not name.strip() or len(name) > NAME_LENGTH_MAX:
        raise errors.LoanProductNameInvalid(
            f"name is 1 to {NAME_LENGTH_MAX} characters, not only spaces; got {name!r}", field="name"
        )
    if request.kind not in LOAN_KINDS:
        raise errors.LoanKindUnknown(f"kind is pos or term, not {request.kind!r}", field="kind")
    kind: str = request.kind
    money.currency(request.currency)
    method = _enum(request.method, Method, errors.AmortizationMethodUnknown, "method")
    day_count = _enum(request.day_count, DayCount, errors.DayCountUnknown, "day_count")
    rate_error = errors.AnnualRateInvalid
    rate_min = check_rate(request.annual_rate_min, "annual_rate_min", ANNUAL_RATE_MAX, rate_error, below_maximum=True)
    rate_max = check_rate(request.annual_rate_max, "annual_rate_max", ANNUAL_RATE_MAX, rate_error, below_maximum=True)
    periods_min = _int(request.periods_min, "periods_min", 1, PERIOD_COUNT_MAX, errors.PeriodCountInvalid)
    periods_max = _int(request.periods_max, "periods_max", 1, PERIOD_COUNT_MAX, errors.PeriodCountInvalid)
    principal_min = _principal(request.principal_min, "principal_min")
    principal_max = _principal(request.principal_max, "principal_max")
    _bounds(rate_min, rate_max, "annual_rate")
    _bounds(periods_min, periods_max, "periods")
    _bounds(principal_min, principal_max, "principal")
    penalty = check_rate(
        request.penalty_daily_rate, "penalty_daily_rate", PENALTY_DAILY_RATE_MAX, errors.PenaltyRateInvalid
    )
    order = _order(request.allocation_order)
    share = None
    policy = None
    if kind == "pos":  # a term loan is not repaid from settlement and has no credit line
        if request.settlement_share is not None:
            share = check_rate(
                request.settlement_share, "settlement_share", SETTLEMENT_SHARE_MAX, errors.SettlementShareInvalid
            )
        policy = _credit_policy(request)
    values: dict[str, Any] = {
        "name": name,
        "kind": kind,
        "currency": request.currency,
        "method": str(method),
        "day_count": str(day_count),
        "annual_rate_min": _text(rate_min),
        "annual_rate_max": _text(rate_max),
        "periods_min": periods_min,
        "periods_max": periods_max,
        "principal_min": principal_min,
        "principal_max": principal_max,
        "penalty_daily_rate": _text(penalty),
        "allocation_order": ",".join(str(c) for c in order),
        "settlement_share": _text(share) if share is not None else None,
        "credit_ratio": _text(policy.ratio) if policy else None,
        "credit_lookback_days": policy.lookback_days if policy else None,
        "credit_step": policy.step if policy else None,
        "credit_maximum": policy.maximum if policy else None,
    }
    digest = request_digest(values)
    now = _now(now)
    inserted = conn.execute(
        insert_ignoring_conflict(conn, loan_products, ["code"])
        .values(code=code, request_hash=digest, state="active", created_at=now, updated_at=now, **values)
        .returning(loan_products.c.id)
    ).first()
    row = _product_row(conn, code)
    if inserted is None and row.request_hash != digest:
        raise errors.LoanProductConflict(
            f"loan product {code} exists with another definition; a product never changes once created", field="code"
        )
    return _product_of(row), inserted is not None


def retire_product(conn: Connection, *, code: str, now: dt.datetime | None = None) -> tuple[LoanProduct, bool]:
    """Retire a product: it takes no new loans, its loans run on; returns (product, retired now).

    Retiring a retired product changes nothing (False).
    """
    row = _product_row(conn, code, lock="update")
    if row.state == "retired":
        return _product_of(row), False
    conn.execute(
        loan_products.update().where(loan_products.c.id == row.id).values(state="retired", updated_at=_now(now))
    )
    return get_product(conn, code=code), True


# --------------------------------------------------------------------------- drawdowns


def fill_terms(request: LoanRequest, product: LoanProduct | None) -> LoanRequest:
    """The request with every ``UNSET`` term filled: the product's, or without one the defaults.

    ``annual_rate`` and ``periods`` are filled only from a product allowing a single value;
    otherwise left out they are ``loan_term_required``. Nothing else is checked here.
    """
    for field in ("annual_rate", "periods"):
        if getattr(request, field) is not UNSET:
            continue
        if product is None:
            raise errors.LoanTermRequired(f"{field} is required: no product is named", field=field)
        low, high = getattr(product, f"{field}_min"), getattr(product, f"{field}_max")
        if low != high:
            raise errors.LoanTermRequired(
                f"{field} is required: product {product.code} allows {low} to {high}", field=field, product=product.code
            )
    if product is None:
        fixed: dict[str, Any] = {
            "method": DEFAULT_METHOD,
            "day_count": DEFAULT_DAY_COUNT,
            "kind": DEFAULT_KIND,
            "currency": DEFAULT_CURRENCY,
            "penalty_daily_rate": DEFAULT_PENALTY_DAILY_RATE,
            "allocation_order": DEFAULT_ORDER,
            "settlement_share": DEFAULT_SETTLEMENT_SHARE,
        }
    else:
        fixed = {
            "annual_rate": product.annual_rate_min,
            "periods": product.periods_min,
            "method": product.method,
            "day_count": product.day_count,
            "kind": product.kind,
            "currency": product.currency,
            "penalty_daily_rate": product.penalty_daily_rate,
            "allocation_order": product.allocation_order,
            "settlement_share": product.settlement_share,
        }
    filled = {name: value for name, value in fixed.items() if getattr(request, name) is UNSET}
    return LoanRequest(**{**vars(request), **filled})


def check_terms(
    product: LoanProduct,
    *,
    kind: str,
    currency: str,
    principal: int,
    annual_rate: Decimal,
    periods: int,
    method: Method,
    day_count: DayCount,
    penalty_daily_rate: Decimal,
    allocation_order: tuple[Component, ...],
    settlement_share: Decimal | None,
) -> None:
    """Refuses (``loan_terms_outside_product``) a drawdown's checked terms that the product does not offer."""
    _check_fixed(product, "kind", kind, product.kind)
    _check_fixed(product, "currency", currency, product.currency)
    for field, value, low, high in (
        ("principal", principal, product.principal_min, product.principal_max),
        ("annual_rate", annual_rate, product.annual_rate_min, product.annual_rate_max),
        ("periods", periods, product.periods_min, product.periods_max),
    ):
        if not low <= value <= high:
            raise errors.LoanTermsOutsideProduct(
                f"{field} {value} is outside product {product.code}'s {low} to {high}",
                field=field,
                product=product.code,
                minimum=str(low),
                maximum=str(high),
            )
    _check_fixed(product, "method", method, product.method)
    _check_fixed(product, "day_count", day_count, product.day_count)
    _check_fixed(product, "penalty_daily_rate", penalty_daily_rate, product.penalty_daily_rate)
    _check_fixed(product, "allocation_order", allocation_order, product.allocation_order)
    if kind == "pos":
        _check_fixed(product, "settlement_share", settlement_share, product.settlement_share)


def _check_fixed(product: LoanProduct, field: str, value: Any, expected: Any) -> None:
    if value != expected:

        def show(term: Any) -> str:
            return ",".join(str(c) for c in term) if isinstance(term, tuple) else str(term)

        raise errors.LoanTermsOutsideProduct(
            f"product {product.code} lends with {field} {show(expected)}, not {show(value)}",
            field=field,
            product=product.code,
            expected=show(expected),
        )
