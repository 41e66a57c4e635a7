"""The settlement core's error catalogue, in order of precedence within each operation.

When a call breaks several rules, the first one listed for its operation is
reported.

Settlement dates (``calendar.settlement_date``, ``calendar.business_dates_settling_on``):

 1. ``business_date_invalid``             the date is not a ``datetime.date`` (a ``datetime`` is refused too:
                                          business dates are dates in Asia/Shanghai, not instants)
 2. ``settlement_cycle_invalid``          not a ``Cycle``, or a cycle text ``Cycle.parse`` does not know
 3. ``settlement_calendar_unknown_year``  the answer needs a year the installed ``chinese-calendar``
                                          does not cover (never guessed: upgrade the package, or give the
                                          published schedule in ``settlement_calendar_file``)

The published schedules (``calendar.read_published_years``, ``calendar.install_published_years``):
``settlement_calendar_file_invalid``, ``field`` naming the year and list at fault (``2027.working_days``),
or ``file`` for a file that is not TOML or years that do not follow the package's last one.

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

Merchant settlement terms (``service.set_merchant_settings``, ``service.get_merchant_settings``):

 1. ``merchant_not_found``                the merchant does not exist (``parties``)
 2. ``settlement_cycle_invalid``          the cycle text
 3. ``fee_contract_invalid`` / ``fee_model_invalid``   the contract, as above
 4. ``settlement_payee_invalid``          account number not 8 to 32 digits, name empty or over 100
                                          characters, bank code not 2 to 16 letters and digits, or a
                                          number without a name (or the reverse)
 5. ``payout_minimum_invalid``            not an ``int`` >= 0 of the minor unit

A settlement run (``service.run_settlement``):

 1. ``business_date_invalid``             the settlement date is not a ``datetime.date`` of the years
                                          2000 to 2999 (every date parameter of ``service`` is checked so)
 2. ``settlement_calendar_unknown_year``  the calendar does not cover the date
 3. ``settlement_payout_channel_unavailable``  no configured channel pays out the currency
 A merchant the run cannot settle is not an error of the run: it is left out,
 with nothing written for it, and reported in ``RunResult.skipped`` with
 ``settlement_payee_invalid`` (its payout account is unusable) or
 ``merchant_balance_insufficient`` (its balance cannot cover a higher contract fee).

Batches and statements (``service.get_batch``, ``service.statement_csv``):

 1. ``merchant_not_found``
 2. ``settlement_batch_not_found``        no batch of that merchant on that settlement date

Reserve-fund check (``service.reserve_check``):

 1. ``reserve_statement_invalid``         the statement has malformed lines, or no closing balance in
                                          the currency
 2. ``reserve_statement_date_mismatch``   the statement's closing date is not the date checked
"""

from __future__ import annotations

from zhangfang.errors import InvalidInput, NotFound, Rejected
from zhangfang.payments.errors import AmountMustBeInteger, AmountMustBePositive

__all__ = [
    "AmountMustBeInteger",
    "AmountMustBePositive",
    "BusinessDateInvalid",
    "FeeContractInvalid",
    "FeeModelInvalid",
    "MonthlyVolumeInvalid",
    "PayoutMinimumInvalid",
    "ReserveStatementDateMismatch",
    "ReserveStatementInvalid",
    "SettlementBatchNotFound",
    "SettlementCalendarUnknownYear",
    "SettlementCycleInvalid",
    "SettlementPayeeInvalid",
    "SettlementPayoutChannelUnavailable",
]


class BusinessDateInvalid(InvalidInput):
    """A business date is a ``datetime.date`` (Asia/Shanghai), not a ``datetime`` nor text."""

    code = "business_date_invalid"


class SettlementCycleInvalid(InvalidInput):
    """A settlement cycle is ``T<n>``, ``D<n>`` (0 to 30) or ``WEEKLY[:<weekday>]``."""

    code = "settlement_cycle_invalid"


class SettlementCalendarFileInvalid(InvalidInput):
    """The published holiday schedules (``settlement_calendar_file``) cannot be used; nothing of it is."""

    code = "settlement_calendar_file_invalid"


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


class SettlementPayeeInvalid(InvalidInput):
    """A payout account: 8 to 32 digits, a name of 1 to 100 characters, an optional bank code (2-16 characters)."""

    code = "settlement_payee_invalid"


class PayoutMinimumInvalid(InvalidInput):
    """A minimum payout amount is an ``int`` >= 0 of the minor unit (or none)."""

    code = "payout_minimum_invalid"


class SettlementPayoutChannelUnavailable(Rejected):
    """No configured channel can pay out the settlement currency: the run writes nothing."""

    code = "settlement_payout_channel_unavailable"


class SettlementBatchNotFound(NotFound):
    """No settlement batch of this merchant on this settlement date."""

    code = "settlement_batch_not_found"


class ReserveStatementInvalid(InvalidInput):
    """The custody bank statement has malformed lines or no closing balance in the currency checked."""

    code = "reserve_statement_invalid"


class ReserveStatementDateMismatch(InvalidInput):
    """The custody bank statement closes on another date than the one checked."""

    code = "reserve_statement_date_mismatch"
