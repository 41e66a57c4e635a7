"""The lending core's error catalogue, in order of precedence within each operation.

When a call breaks several rules, the first one listed for its operation is
reported. Every error names the parameter in ``field``.

Schedules (``schedule.build_schedule``):

 1. ``amount_must_be_integer``        ``principal_minor`` is an ``int`` of the minor unit (fen), never a float
 2. ``amount_must_be_positive``       ``principal_minor`` is at least 1
 3. ``loan_principal_too_large``      ``principal_minor`` is at most ``schedule.PRINCIPAL_MINOR_MAX``
 4. ``annual_rate_invalid``           not a finite ``Decimal`` from 0 (inclusive) to 10 (exclusive)
 5. ``period_count_invalid``          not an ``int`` from 1 to 600
 6. ``amortization_method_unknown``   not one of ``equal-installment``, ``equal-principal``,
                                      ``interest-first``, ``bullet``
 7. ``start_date_invalid``            not a ``datetime.date`` (a ``datetime`` is refused) of the years 1900 to 2999
 8. ``day_count_unknown``             not one of ``30/360``, ``actual/365``, ``actual/360``
 9. ``rounding_mode_unknown``         not one of the ``decimal`` rounding constants ``schedule.ROUNDING_MODES``
10. ``currency_unknown``              (``zhangfang.money``) not an ISO 4217 code with a minor unit

Repayment allocation (``allocation.allocate_repayment``):

 1. ``amount_must_be_integer``        the repayment is an ``int`` of the minor unit
 2. ``amount_must_be_positive``       the repayment is at least 1
 3. ``installment_due_invalid``       not an ``InstallmentDue``, a component not an ``int`` >= 0, or two
                                      installments with the same ``period``
 4. ``allocation_order_invalid``      the order is not each of penalty, fee, interest, principal exactly once
 5. ``allocation_mode_unknown``       not ``installment-first`` or ``component-first``

Penalty interest (``allocation.penalty_interest``):

 1. ``amount_must_be_integer``        the overdue principal is an ``int`` of the minor unit
 2. ``overdue_amount_invalid``        the overdue principal is negative
 3. ``penalty_rate_invalid``          the daily rate is not a finite ``Decimal`` from 0 to 0.01 inclusive
 4. ``days_late_invalid``             not an ``int`` >= 0
 5. ``rounding_mode_unknown``

Days late and days past due (``allocation.days_late``, ``delinquency.days_past_due``):

 1. ``as_of_date_invalid``            a date is not a ``datetime.date`` (a ``datetime`` is refused too)

Buckets (``delinquency.bucket_for``):

 1. ``days_past_due_invalid``         not an ``int`` >= 0
 2. ``delinquency_thresholds_invalid``  not ``BucketThresholds`` of ``int`` with 1 <= M1 end < M2 end

The aging report (``delinquency.aging_report``):

 1. ``as_of_date_invalid``            ``as_of`` is not a ``datetime.date``
 2. ``delinquency_thresholds_invalid``
 3. ``loan_exposure_invalid``         not a ``LoanExposure``, an empty ref, an oldest unpaid due date neither
                                      a ``datetime.date`` nor None, or outstanding not an ``int`` >= 0
 4. ``loan_ref_duplicate``            two exposures with the same loan ref (checked loan by loan, so an
                                      earlier loan's ``loan_exposure_invalid`` wins over a later duplicate)
"""

from __future__ import annotations

from zhangfang.errors import Conflict, InvalidInput, NotFound, Rejected
from zhangfang.payments.errors import AmountMustBeInteger, AmountMustBePositive

__all__ = [
    "AllocationModeUnknown",
    "AllocationOrderInvalid",
    "AmortizationMethodUnknown",
    "AmountMustBeInteger",
    "AmountMustBePositive",
    "AnnualRateInvalid",
    "AsOfDateInvalid",
    "CreditLineExceeded",
    "CreditPolicyInvalid",
    "DayCountUnknown",
    "DaysLateInvalid",
    "DaysPastDueInvalid",
    "DelinquencyThresholdsInvalid",
    "InstallmentDebitInFlight",
    "InstallmentDueInvalid",
    "InstallmentMandateNotActive",
    "InstallmentModeUnknown",
    "InstallmentPlanInvalid",
    "InstallmentPlanKeyConflict",
    "InstallmentPlanLimitInvalid",
    "InstallmentPlanNotActive",
    "InstallmentPlanNotFound",
    "InstallmentPlanStateInvalid",
    "LoanExposureInvalid",
    "LoanKeyConflict",
    "LoanKindUnknown",
    "LoanNotFound",
    "LoanPrincipalTooLarge",
    "LoanProductBoundsInvalid",
    "LoanProductCodeInvalid",
    "LoanProductConflict",
    "LoanProductNameInvalid",
    "LoanProductNotFound",
    "LoanProductRetired",
    "LoanProductStateInvalid",
    "LoanRefDuplicate",
    "LoanSettled",
    "LoanTermRequired",
    "LoanTermsOutsideProduct",
    "OverdueAmountInvalid",
    "PenaltyRateInvalid",
    "PeriodCountInvalid",
    "RepaymentAmountInvalid",
    "RepaymentKeyConflict",
    "RepaymentSourceInvalid",
    "RoundingModeUnknown",
    "SettlementShareInvalid",
    "StartDateInvalid",
]


class LoanPrincipalTooLarge(InvalidInput):
    """A principal beyond ``schedule.PRINCIPAL_MINOR_MAX``: its interest might not fit a 64-bit amount."""

    code = "loan_principal_too_large"


class AnnualRateInvalid(InvalidInput):
    """A nominal annual rate is a finite ``Decimal`` with 0 <= rate < 10 (0.12 is 12 % a year)."""

    code = "annual_rate_invalid"


class PeriodCountInvalid(InvalidInput):
    """A loan runs 1 to 600 monthly periods (50 years)."""

    code = "period_count_invalid"


class AmortizationMethodUnknown(InvalidInput):
    """The amortization method is not one ``schedule.Method`` knows."""

    code = "amortization_method_unknown"


class StartDateInvalid(InvalidInput):
    """The start (disbursement) date is a ``datetime.date`` of the years 1900 to 2999."""

    code = "start_date_invalid"


class DayCountUnknown(InvalidInput):
    """The day-count convention is not one ``schedule.DayCount`` knows."""

    code = "day_count_unknown"


class RoundingModeUnknown(InvalidInput):
    """The rounding mode is not one of the ``decimal`` module's constants listed in ``schedule.ROUNDING_MODES``."""

    code = "rounding_mode_unknown"


class InstallmentDueInvalid(InvalidInput):
    """What an installment owes: ``int`` >= 0 per component, one entry per period."""

    code = "installment_due_invalid"


class AllocationOrderInvalid(InvalidInput):
    """An allocation order names each of penalty, fee, interest and principal exactly once."""

    code = "allocation_order_invalid"


class AllocationModeUnknown(InvalidInput):
    """The allocation mode is ``installment-first`` or ``component-first``."""

    code = "allocation_mode_unknown"


class OverdueAmountInvalid(InvalidInput):
    """The overdue principal penalty interest accrues on is an ``int`` >= 0 of the minor unit."""

    code = "overdue_amount_invalid"


class PenaltyRateInvalid(InvalidInput):
    """A daily penalty rate is a finite ``Decimal`` from 0 to 0.01 (1 % a day) inclusive."""

    code = "penalty_rate_invalid"


class DaysLateInvalid(InvalidInput):
    """Days late is an ``int`` >= 0."""

    code = "days_late_invalid"


class AsOfDateInvalid(InvalidInput):
    """An as-of date or due date is a ``datetime.date`` (Asia/Shanghai), not a ``datetime`` nor text."""

    code = "as_of_date_invalid"


class DaysPastDueInvalid(InvalidInput):
    """Days past due is an ``int`` >= 0."""

    code = "days_past_due_invalid"


class DelinquencyThresholdsInvalid(InvalidInput):
    """Bucket thresholds: the last day of M1 and of M2, with 1 <= M1 end < M2 end."""

    code = "delinquency_thresholds_invalid"


class LoanExposureInvalid(InvalidInput):
    """One loan in an aging report: a non-empty ref, an optional due date, outstanding ``int`` >= 0."""

    code = "loan_exposure_invalid"


class LoanRefDuplicate(InvalidInput):
    """An aging report counts each loan once: two exposures share a loan ref."""

    code = "loan_ref_duplicate"


# --------------------------------------------------------------------------- loans (``lending.service``)
# Drawdown: idempotency_key_invalid, loan_product_not_found (a product named), loan_term_required (annual_rate,
# then periods: neither given nor fixed by the product), loan_kind_unknown, settlement_share_invalid,
# penalty_rate_invalid, the schedule's errors above, allocation_order_invalid, loan_terms_outside_product (in
# the order kind, currency, principal, annual_rate, periods, method, day_count, penalty_daily_rate,
# allocation_order, settlement_share), merchant_not_found, mandate_not_found (not the borrower's),
# loan_key_conflict (the same request replays its loan, the product retired or not), loan_product_retired,
# credit_line_exceeded.
# Repayment: repayment_source_invalid, repayment_amount_invalid, idempotency_key_invalid, as_of_date_invalid,
# loan_not_found, repayment_key_conflict, loan_settled, then the ledger's (the merchant's balance is short).
# Credit line, accrual, aging: as_of_date_invalid (the years 1900 to 2999), then merchant_not_found.


class LoanNotFound(NotFound):
    """No loan has this ref."""

    code = "loan_not_found"


class LoanKindUnknown(InvalidInput):
    """A loan is ``pos`` (POS贷, repaid from settlement first) or ``term``."""

    code = "loan_kind_unknown"


class SettlementShareInvalid(InvalidInput):
    """The share of each settlement a POS loan takes: decimal text from 0 to 1."""

    code = "settlement_share_invalid"


class LoanKeyConflict(Conflict):
    """The merchant's key was used for a loan on other terms."""

    code = "loan_key_conflict"


class CreditLineExceeded(Rejected):
    """A POS drawdown beyond what the merchant's credit line has available."""

    code = "credit_line_exceeded"


class RepaymentSourceInvalid(InvalidInput):
    """A repayment comes from ``settlement``, ``withholding`` or ``manual``."""

    code = "repayment_source_invalid"


class RepaymentAmountInvalid(InvalidInput):
    """A repayment is a positive ``int`` of the minor unit."""

    code = "repayment_amount_invalid"


class RepaymentKeyConflict(Conflict):
    """The key was used for a repayment of another amount or source."""

    code = "repayment_key_conflict"


class LoanSettled(Conflict):
    """The loan owes nothing more: it takes no repayment."""

    code = "loan_settled"


# --------------------------------------------------------------------------- loan products (``lending.products``)
# Creating a product: loan_product_code_invalid, loan_product_name_invalid, loan_kind_unknown, currency_unknown,
# amortization_method_unknown, day_count_unknown, annual_rate_invalid (min, then max), period_count_invalid
# (min, then max), amount_must_be_integer / amount_must_be_positive / loan_principal_too_large (principal_min,
# then principal_max), loan_product_bounds_invalid (annual_rate, periods, principal: a min above its max),
# penalty_rate_invalid, allocation_order_invalid, settlement_share_invalid, credit_policy_invalid (ratio,
# lookback_days, step, maximum), then loan_product_conflict (the code holds another definition; the same one
# replays, whatever the product's state).
# Reading and retiring: loan_product_not_found. Listing: loan_product_state_invalid.


class LoanProductCodeInvalid(InvalidInput):
    """A product code is 1 to 40 of a-z, 0-9, ``-`` and ``_``, starting with a letter or digit (``pos-90d``)."""

    code = "loan_product_code_invalid"


class LoanProductNameInvalid(InvalidInput):
    """A product name is 1 to 100 characters of text, not only spaces."""

    code = "loan_product_name_invalid"


class LoanProductBoundsInvalid(InvalidInput):
    """A product's minimum rate, period count or principal is above its maximum."""

    code = "loan_product_bounds_invalid"


class CreditPolicyInvalid(InvalidInput):
    """A POS product's credit policy: ratio decimal text from 0 to 10, lookback 1 to 3660 days, step >= 1 and
    maximum >= 0 in minor units, both at most ``schedule.PRINCIPAL_MINOR_MAX``."""

    code = "credit_policy_invalid"


class LoanProductConflict(Conflict):
    """The product code is taken by another definition: a product never changes once created."""

    code = "loan_product_conflict"


class LoanProductNotFound(NotFound):
    """No loan product has this code."""

    code = "loan_product_not_found"


class LoanProductRetired(Rejected):
    """The product is retired: it takes no new loans (its loans run on)."""

    code = "loan_product_retired"


class LoanProductStateInvalid(InvalidInput):
    """Products are listed by state: ``active`` or ``retired``."""

    code = "loan_product_state_invalid"


class LoanTermRequired(InvalidInput):
    """A drawdown gives ``annual_rate`` and ``periods``, unless its product allows a single value of the term."""

    code = "loan_term_required"


class LoanTermsOutsideProduct(Rejected):
    """A drawdown's term outside its product: a rate, period count or principal beyond the product's bounds, or
    another kind, currency, method, day count, penalty rate, allocation order or settlement share than its own."""

    code = "loan_terms_outside_product"


# ------------------------------------------------------------------- installment plans (``lending.installments``)
# Creating a plan: idempotency_key_invalid, installment_plan_key_conflict (the key was used for another request;
# the same request replays the first plan before any rule below is judged), installment_mode_unknown,
# penalty_rate_invalid, webhook_url_invalid / webhook_url_must_be_https, installment_plan_invalid (periods and
# terms given together, 1 to 120 periods, amounts, due dates increasing and not past, a first period computed
# in the past), annual_rate_invalid and the schedule's errors above, mandate_not_found (another merchant's too),
# installment_mandate_not_active, installment_plan_invalid (field currency: not the mandate's), then the
# ledger's.
# Early repayment: installment_plan_not_found, installment_plan_not_active, installment_debit_in_flight, then
# the mandate's refusals (mandate_not_active, the limits).
# Cancelling: installment_plan_not_found, installment_plan_not_active, then the ledger's (advance mode: the
# merchant's balance is short of the principal to return).
# Listing: installment_plan_state_invalid, installment_plan_limit_invalid.


class InstallmentPlanNotFound(NotFound):
    """No installment plan of this merchant has this ref."""

    code = "installment_plan_not_found"


class InstallmentPlanInvalid(InvalidInput):
    """The periods (1 to 120, due dates increasing and not past, amounts positive) or the terms to compute them."""

    code = "installment_plan_invalid"


class InstallmentModeUnknown(InvalidInput):
    """A plan's mode is ``per_period`` (分期回款) or ``advance`` (不分期回款)."""

    code = "installment_mode_unknown"


class InstallmentMandateNotActive(Rejected):
    """A plan debits an active mandate only."""

    code = "installment_mandate_not_active"


class InstallmentPlanKeyConflict(Conflict):
    """The merchant's key was used for another plan."""

    code = "installment_plan_key_conflict"


class InstallmentPlanNotActive(Conflict):
    """The plan is completed or cancelled."""

    code = "installment_plan_not_active"


class InstallmentDebitInFlight(Conflict):
    """A period's debit is at the bank: early repayment waits for its answer."""

    code = "installment_debit_in_flight"


class InstallmentPlanStateInvalid(InvalidInput):
    """Plans are listed by state: ``active``, ``completed`` or ``cancelled``."""

    code = "installment_plan_state_invalid"


class InstallmentPlanLimitInvalid(InvalidInput):
    """A list of plans holds 1 to ``installments.LIST_LIMIT_MAX`` plans."""

    code = "installment_plan_limit_invalid"
