"""The settlement core's error catalogue, in order of precedence within each operation.

When a call breaks several rules, the first one listed for its operation is
reported.

Settlement dates (``calendar.settlement_date``, ``calendar.business_dates_settling_on``):

 1. ``business_date_invalid``             the date is not a ``datetime.date`` (a ``datetime`` is refused too:
                                          business dates are dates in Asia/Shanghai, not instants)
 2. ``settlement_cycle_invalid``          not a ``Cycle``, or a cycle text ``Cycle.parse`` does not know
 3. ``settlement_calendar_unknown_year``  the answer needs a year the installed ``chinese-calendar``
                                          does not cover (never guessed: upgrade the package)

Fees (``fees.fee_for``):

 1. ``fee_model_invalid``                 not a fee model, or a model breaking a rule of its kind; ``field``
                                          names the part (``rate``, ``min_fee``, ``tiers[1].volume_from_minor``)
 2. ``amount_must_be_integer``            an amount is an ``int`` of the minor unit (fen), never a float
 3. ``amount_must_be_positive``           zero and negative amounts are refused
 4. ``monthly_volume_invalid``            ``monthly_volume_before`` is a non-negative ``int``

Reading a contract (``fees.FeeContract.from_dict``, ``fees.parse_fee_model``):

 1. ``fee_contract_invalid``              not an object, an unknown key, or ``fee_model`` missing
 2. ``fee_model_invalid``                 the model, its field under ``fee_model.`` (``fee_model.rate``):
                                          ``model`` unknown, then an unknown or missing key, then the
                                          values in the order the model lists its fields
 3. ``fee_contract_invalid``              ``refund_returns_fee`` not true or false
"""

from __future__ import annotations

from zhangfang.errors import InvalidInput, Rejected
from zhangfang.payments.errors import AmountMustBeInteger, AmountMustBePositive

__all__ = [
    "AmountMustBeInteger",
    "AmountMustBePositive",
    "BusinessDateInvalid",
    "FeeContractInvalid",
    "FeeModelInvalid",
    "MonthlyVolumeInvalid",
    "SettlementCalendarUnknownYear",
    "SettlementCycleInvalid",
]


class BusinessDateInvalid(InvalidInput):
    """A business date is a ``datetime.date`` (Asia/Shanghai), not a ``datetime`` nor text."""

    code = "business_date_invalid"


class SettlementCycleInvalid(InvalidInput):
    """A settlement cycle is ``T<n>``, ``D<n>`` (0 to 30) or ``WEEKLY[:<weekday>]``."""

    code = "settlement_cycle_invalid"


class SettlementCalendarUnknownYear(Rejected):
    """The installed working-day calendar does not cover this year; the date is refused, never guessed."""

    code = "settlement_calendar_unknown_year"


class FeeModelInvalid(InvalidInput):
    """A fee model breaks a rule of its kind; ``field`` says which part."""

    code = "fee_model_invalid"


class FeeContractInvalid(InvalidInput):
    """A fee contract (the model plus ``refund_returns_fee``) is malformed."""

    code = "fee_contract_invalid"


class MonthlyVolumeInvalid(InvalidInput):
    """The merchant's monthly volume before a transaction is a non-negative ``int`` of the minor unit."""

    code = "monthly_volume_invalid"
