"""Merchant fee models: what a merchant's contract charges per transaction, and what a refund gives back.

A merchant's contract is a ``FeeContract``: one fee model and the
``refund_returns_fee`` flag. It is stored as JSON (``to_dict``/``from_dict``)::

    {"fee_model": {"model": "percentage", "rate": "0.006"}, "refund_returns_fee": true}

Fee models (amounts are ``int`` of the currency's minor unit, fen for CNY;
rates are ``Decimal``, in JSON decimal text such as ``"0.006"`` for 0.6 %,
never a float):

=========================  ==============================================  ========================================
model                      fields                                          fee of one transaction of amount *a*
=========================  ==============================================  ========================================
``percentage``             ``rate``                                        round(*a* × rate)
``fixed``                  ``amount``                                      ``amount``, but at most *a*
``percentage_with_bounds`` ``rate``, ``min_fee`` (default 0),              round(*a* × rate) raised to ``min_fee``,
                           ``max_fee`` (default none: no maximum)          lowered to ``max_fee``, but at most *a*
``tiered``                 ``tiers``: ``[{"volume_from_minor": 0,          round(*a* × rate of the tier that the
                           "rate": …}, …]``                                monthly volume *before* it falls in)
=========================  ==============================================  ========================================

Rounding: per transaction, half up to the minor unit (0.5 fen becomes 1 fen),
computed exactly (integers and fractions, no ambient decimal context). It is
the rounding of ``payments.postings.fee_for``, so a ``Percentage`` contract
charges exactly the fee the payment was booked with at the same rate.

Tiered pricing: a transaction is charged the rate of the tier that the
merchant's monthly volume *before it* falls in (the highest tier whose
``volume_from_minor`` is at most ``monthly_volume_before``); the whole
transaction at that rate, it is not split across a threshold, and earlier
transactions are never re-priced when a later one crosses a threshold. This is
how payment companies price tiers incrementally: each fee is final when it is
charged, so T+1 settlement never waits for the month's end. The caller passes
``monthly_volume_before``: the sum of the merchant's payment amounts earlier in
the same calendar month (Asia/Shanghai business dates), refunds not deducted.
The other models ignore it.

Refunds: when the contract's ``refund_returns_fee`` is true (the default, what
``payments`` books today), a refund returns the fee in proportion to the amount
refunded, by ``payments.postings.fee_returned_for``: computed on cumulative
amounts, so however an order is refunded in parts, the parts returned sum to
the whole fee once it is refunded in full. When false, refunds return nothing.

Guarantees
- A fee is an ``int`` with 0 <= fee <= amount; ``percentage_with_bounds`` never
  charges more than ``max_fee`` nor less than ``min_fee`` unless the amount
  itself is less (then the fee is the amount).
- Models are immutable and their dict form round-trips:
  ``parse_fee_model(model.to_dict()) == model``, and the same for contracts.
- Bad contracts are refused with ``fee_model_invalid`` (or ``fee_contract_invalid``)
  naming the field; the catalogue is in ``settlement.errors``.

Constraints
- ``rate``: a finite ``Decimal`` (decimal text in JSON) from 0 to 0.1 inclusive
  (typical: 0.0005 to 0.006), at most 6 decimals — the rule of a merchant's
  ``fee_rate`` in ``parties``.
- ``amount``, ``min_fee``, ``max_fee``: ``int`` >= 0, ``min_fee`` <= ``max_fee``.
- ``tiers``: 1 to 20 tiers, the first from volume 0, ``volume_from_minor``
  strictly increasing.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any, ClassVar, NamedTuple

from zhangfang.parties.service import FEE_RATE_DECIMALS_MAX, FEE_RATE_MAX
from zhangfang.payments import postings
from zhangfang.settlement import errors

__all__ = [
    "RATE_DECIMALS_MAX",
    "RATE_MAX",
    "TIERS_MAX",
    "FeeContract",
    "FeeModel",
    "Fixed",
    "Percentage",
    "PercentageWithBounds",
    "Tier",
    "Tiered",
    "fee_for",
    "parse_fee_model",
]

RATE_MAX = FEE_RATE_MAX
RATE_DECIMALS_MAX = FEE_RATE_DECIMALS_MAX
RATE_TEXT_LENGTH_MAX = 20
TIERS_MAX = 20
_DECIMAL_TEXT = re.compile(r"[0-9]+(?:\.[0-9]+)?")


# --------------------------------------------------------------------------- checks


def _check_rate(value: Any, field: str) -> Decimal:
    if not isinstance(value, Decimal) or not value.is_finite():
        raise errors.FeeModelInvalid(f"{field} is a finite Decimal, never a float", field=field)
    exponent = value.normalize().as_tuple().exponent
    assert isinstance(exponent, int)
    if exponent < -RATE_DECIMALS_MAX:
        raise errors.FeeModelInvalid(f"{field} has at most {RATE_DECIMALS_MAX} decimals", field=field)
    if not Decimal(0) <= value <= RATE_MAX:
        raise errors.FeeModelInvalid(f"{field} is from 0 to {RATE_MAX}", field=field, rate=str(value))
    return value


def _check_minor(value: Any, field: str) -> int:
    if type(value) is not int or value < 0:
        raise errors.FeeModelInvalid(f"{field} is an int >= 0 of the minor unit (fen)", field=field)
    return value


def _round_half_up(exact: Fraction) -> int:
    """A non-negative fraction rounded to the nearest integer, halves up."""
    whole, rest = divmod(exact.numerator, exact.denominator)
    return whole + (1 if 2 * rest >= exact.denominator else 0)


def _percent_of(amount_minor: int, rate: Decimal) -> int:
    return _round_half_up(Fraction(amount_minor) * Fraction(rate))


def _rate_text(rate: Decimal) -> str:
    """Canonical text: no exponent, no trailing zeros (``0.006``, ``0.1``, ``0``)."""
    return "0" if rate.is_zero() else format(rate.normalize(), "f")


# --------------------------------------------------------------------------- the models


@dataclass(frozen=True)
class Percentage:
    """``rate`` of each transaction's amount."""

    rate: Decimal
    model: ClassVar[str] = "percentage"

    def __post_init__(self) -> None:
        _check_rate(self.rate, "rate")

    def _fee(self, amount_minor: int, monthly_volume_before: int) -> int:
        return _percent_of(amount_minor, self.rate)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "rate": _rate_text(self.rate)}


@dataclass(frozen=True)
class Fixed:
    """``amount`` (minor units) per transaction, but never more than the transaction."""

    amount: int
    model: ClassVar[str] = "fixed"

    def __post_init__(self) -> None:
        _check_minor(self.amount, "amount")

    def _fee(self, amount_minor: int, monthly_volume_before: int) -> int:
        return min(self.amount, amount_minor)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "amount": self.amount}


@dataclass(frozen=True)
class PercentageWithBounds:
    """``rate`` of each transaction, at least ``min_fee`` and at most ``max_fee`` (``None``: no maximum)."""

    rate: Decimal
    min_fee: int = 0
    max_fee: int | None = None
    model: ClassVar[str] = "percentage_with_bounds"

    def __post_init__(self) -> None:
        _check_rate(self.rate, "rate")
        _check_minor(self.min_fee, "min_fee")
        if self.max_fee is not None:
            _check_minor(self.max_fee, "max_fee")
            if self.max_fee < self.min_fee:
                raise errors.FeeModelInvalid("max_fee is at least min_fee", field="max_fee")

    def _fee(self, amount_minor: int, monthly_volume_before: int) -> int:
        fee = max(_percent_of(amount_minor, self.rate), self.min_fee)
        if self.max_fee is not None:
            fee = min(fee, self.max_fee)
        return min(fee, amount_minor)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "rate": _rate_text(self.rate), "min_fee": self.min_fee, "max_fee": self.max_fee}


class Tier(NamedTuple):
    """From a monthly volume of ``volume_from_minor`` (inclusive), transactions are charged ``rate``."""

    volume_from_minor: int
    rate: Decimal


@dataclass(frozen=True)
class Tiered:
    """The rate of the tier the merchant's monthly volume before the transaction falls in (see the module doc)."""

    tiers: tuple[Tier, ...]
    model: ClassVar[str] = "tiered"

    def __post_init__(self) -> None:
        if not isinstance(self.tiers, tuple | list) or not 1 <= len(self.tiers) <= TIERS_MAX:
            raise errors.FeeModelInvalid(f"tiers is a list of 1 to {TIERS_MAX} tiers", field="tiers")
        tiers = []
        for i, tier in enumerate(self.tiers):
            if not isinstance(tier, tuple) or len(tier) != 2:
                raise errors.FeeModelInvalid("a tier is (volume_from_minor, rate)", field=f"tiers[{i}]")
            volume_from = _check_minor(tier[0], f"tiers[{i}].volume_from_minor")
            rate = _check_rate(tier[1], f"tiers[{i}].rate")
            if i == 0 and volume_from != 0:
                raise errors.FeeModelInvalid("the first tier starts at volume 0", field="tiers[0].volume_from_minor")
            if i > 0 and volume_from <= tiers[-1].volume_from_minor:
                raise errors.FeeModelInvalid(
                    "tiers are in strictly increasing volume_from_minor", field=f"tiers[{i}].volume_from_minor"
                )
            tiers.append(Tier(volume_from, rate))
        object.__setattr__(self, "tiers", tuple(tiers))

    def rate_for(self, monthly_volume_before: int) -> Decimal:
        """The rate of the highest tier starting at or below ``monthly_volume_before``."""
        i = bisect.bisect_right([tier.volume_from_minor for tier in self.tiers], monthly_volume_before) - 1
        assert i >= 0, monthly_volume_before
        return self.tiers[i].rate

    def _fee(self, amount_minor: int, monthly_volume_before: int) -> int:
        return _percent_of(amount_minor, self.rate_for(monthly_volume_before))

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "tiers": [{"volume_from_minor": t.volume_from_minor, "rate": _rate_text(t.rate)} for t in self.tiers],
        }


FeeModel = Percentage | Fixed | PercentageWithBounds | Tiered
_MODELS: dict[str, type[Percentage | Fixed | PercentageWithBounds | Tiered]] = {
    cls.model: cls for cls in (Percentage, Fixed, PercentageWithBounds, Tiered)
}


def fee_for(model: FeeModel, amount_minor: int, *, monthly_volume_before: int = 0) -> int:
    """Returns the fee, in minor units, that ``model`` charges on one transaction of ``amount_minor``.

    ``monthly_volume_before`` (``Tiered`` only): the merchant's volume earlier
    in the same calendar month. Rounded half up to the minor unit; 0 <= fee <= amount.
    """
    if not isinstance(model, Percentage | Fixed | PercentageWithBounds | Tiered):
        raise errors.FeeModelInvalid("model is a Percentage, Fixed, PercentageWithBounds or Tiered", field="model")
    if type(amount_minor) is not int:
        raise errors.AmountMustBeInteger("an amount is an int of the minor unit (fen)", field="amount_minor")
    if amount_minor <= 0:
        raise errors.AmountMustBePositive("an amount is positive", field="amount_minor")
    if type(monthly_volume_before) is not int or monthly_volume_before < 0:
        raise errors.MonthlyVolumeInvalid(
            "monthly_volume_before is an int >= 0 of the minor unit", field="monthly_volume_before"
        )
    fee = model._fee(amount_minor, monthly_volume_before)
    assert type(fee) is int and 0 <= fee <= amount_minor, (model, amount_minor, fee)
    return fee


# --------------------------------------------------------------------------- the dict (JSON) form


def _parse_rate(value: Any, field: str) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, str) and len(value) <= RATE_TEXT_LENGTH_MAX and _DECIMAL_TEXT.fullmatch(value.strip()):
        try:
            return Decimal(value.strip())
        except InvalidOperation:  # pragma: no cover - the pattern admits only plain decimals
            pass
    raise errors.FeeModelInvalid(f'{field} is decimal text such as "0.006" (0.6 %), never a number', field=field)


def _check_keys(data: Mapping[str, Any], required: Iterable[str], optional: Iterable[str] = ()) -> None:
    required = tuple(required)
    for key in data:
        if key not in required and key not in optional:
            raise errors.FeeModelInvalid(f"unknown key {key!r}", field=str(key))
    for key in required:
        if key not in data:
            raise errors.FeeModelInvalid(f"{key} is missing", field=key)


def parse_fee_model(data: Any) -> FeeModel:
    """Returns the fee model of a dict like ``{"model": "percentage", "rate": "0.006"}`` (what ``to_dict`` writes)."""
    if not isinstance(data, Mapping):
        raise errors.FeeModelInvalid("a fee model is an object", field="model")
    name = data.get("model")
    if name not in _MODELS:
        raise errors.FeeModelInvalid(f"model is one of {', '.join(_MODELS)}", field="model")
    if name == Percentage.model:
        _check_keys(data, ("model", "rate"))
        return Percentage(rate=_parse_rate(data["rate"], "rate"))
    if name == Fixed.model:
        _check_keys(data, ("model", "amount"))
        return Fixed(amount=data["amount"])
    if name == PercentageWithBounds.model:
        _check_keys(data, ("model", "rate"), ("min_fee", "max_fee"))
        return PercentageWithBounds(
            rate=_parse_rate(data["rate"], "rate"), min_fee=data.get("min_fee", 0), max_fee=data.get("max_fee")
        )
    _check_keys(data, ("model", "tiers"))
    rows = data["tiers"]
    if not isinstance(rows, list | tuple):
        raise errors.FeeModelInvalid("tiers is a list", field="tiers")
    tiers = []
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping) or set(row) != {"volume_from_minor", "rate"}:
            raise errors.FeeModelInvalid('a tier is {"volume_from_minor": …, "rate": …}', field=f"tiers[{i}]")
        tiers.append(Tier(row["volume_from_minor"], _parse_rate(row["rate"], f"tiers[{i}].rate")))
    return Tiered(tiers=tuple(tiers))


# --------------------------------------------------------------------------- the contract


@dataclass(frozen=True)
class FeeContract:
    """A merchant's fee terms: the model, and whether refunds return the fee in proportion."""

    fee_model: FeeModel
    refund_returns_fee: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.fee_model, Percentage | Fixed | PercentageWithBounds | Tiered):
            raise errors.FeeContractInvalid("fee_model is a fee model", field="fee_model")
        if type(self.refund_returns_fee) is not bool:
            raise errors.FeeContractInvalid("refund_returns_fee is true or false", field="refund_returns_fee")

    @classmethod
    def from_dict(cls, data: Any) -> FeeContract:
        """The contract of ``{"fee_model": {…}, "refund_returns_fee": true}`` (``refund_returns_fee`` defaults to true).

        A bad model is ``fee_model_invalid`` with the field under ``fee_model.`` (``fee_model.rate``).
        """
        if not isinstance(data, Mapping):
            raise errors.FeeContractInvalid("a fee contract is an object", field="fee_contract")
        for key in data:
            if key not in ("fee_model", "refund_returns_fee"):
                raise errors.FeeContractInvalid(f"unknown key {key!r}", field=str(key))
        if "fee_model" not in data:
            raise errors.FeeContractInvalid("fee_model is missing", field="fee_model")
        try:
            model = parse_fee_model(data["fee_model"])
        except errors.FeeModelInvalid as error:
            raise errors.FeeModelInvalid(error.message, field=f"fee_model.{error.field}", **error.details) from None
        return cls(fee_model=model, refund_returns_fee=data.get("refund_returns_fee", True))

    def to_dict(self) -> dict[str, Any]:
        return {"fee_model": self.fee_model.to_dict(), "refund_returns_fee": self.refund_returns_fee}

    def fee_for(self, amount_minor: int, *, monthly_volume_before: int = 0) -> int:
        """The fee of one transaction (``fees.fee_for`` with this contract's model)."""
        return fee_for(self.fee_model, amount_minor, monthly_volume_before=monthly_volume_before)

    def fee_returned_for(self, *, fee: int, amount: int, refunded_before: int, refund: int) -> int:
        """The part of a payment's ``fee`` a refund of ``refund`` returns (0 unless ``refund_returns_fee``).

        ``amount`` is the payment's, ``refunded_before`` what earlier refunds of it
        took; proportional with cumulative half-up rounding (``postings.fee_returned_for``).
        """
        assert 0 <= fee <= amount, (fee, amount)
        assert 0 < refund <= refund + refunded_before <= amount, (amount, refunded_before, refund)
        if not self.refund_returns_fee:
            return 0
        return postings.fee_returned_for(fee=fee, amount=amount, refunded_before=refunded_before, refund=refund)
