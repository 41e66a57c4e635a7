"""The accounting system's error catalogue, in order of precedence within each operation.

Configuration (``chart.load_chart``, ``chart.load_rules``; at sync and at start):
``chart_file_invalid`` and ``rules_file_invalid`` name the file, the entry and the rule broken.
``chart_change_refused``: the file changes the type or parent of a subject vouchers already use.

Submitting a manual voucher (``service.submit_manual_voucher``):

 1. ``operator_invalid``              maker: 1 to 64 printable characters
 2. ``idempotency_key_invalid``       1 to 200 printable ASCII characters
 3. ``voucher_date_invalid``          a date
 4. ``currency_unknown``              not an ISO 4217 code
 5. ``voucher_summary_invalid``       1 to 200 characters
 6. ``voucher_lines_too_few``         at least two lines
 7. ``voucher_line_invalid``          each line: exactly one of debit and credit, an integer > 0 of the minor unit
                                      (at most 10**17 in all); a dimension of at most 20 lowercase characters;
                                      an auxiliary value of at most 200
 8. ``voucher_must_balance``          total debits equal total credits
 9. ``subject_not_found``             a line names a subject the chart does not have
10. ``subject_not_leaf``              vouchers book to leaf subjects only
11. ``period_closed``                 the voucher's date is in a closed period (adjust in the open period)
12. ``voucher_key_conflict``          the key was used for a different voucher

Approving or rejecting (``service.approve_voucher``, ``service.reject_voucher``):
``operator_invalid``, ``voucher_not_found``, ``voucher_not_pending`` (already posted or
rejected; approving a posted voucher again by its checker returns it), ``maker_cannot_approve``
(maker-checker: a second person approves), ``period_closed``.

Closing a period (``service.close_period``): ``operator_invalid``, ``period_invalid``,
``period_out_of_order`` (an earlier period is open), ``period_not_synced`` (a ledger day of the
period is not closed or not booked yet), ``period_has_pending_vouchers``,
``trial_balance_unbalanced``. Closing a closed period returns it unchanged.

Booking (``sync.sync``): ``sync_mode_invalid`` (summary or entry).

Listing vouchers: ``period_invalid``, ``cursor_invalid`` (not the ref of a voucher).

Reports and checks: ``period_invalid``, ``day_not_accounted`` (账账核对 needs a day the ledger
has closed and accounting has booked), ``report_format_invalid``.
"""

from __future__ import annotations

from zhangfang.errors import Conflict, InvalidInput, NotFound, Rejected


class ChartFileInvalid(InvalidInput):
    code = "chart_file_invalid"


class RulesFileInvalid(InvalidInput):
    code = "rules_file_invalid"


class ChartChangeRefused(Conflict):
    code = "chart_change_refused"


class OperatorInvalid(InvalidInput):
    code = "operator_invalid"


class IdempotencyKeyInvalid(InvalidInput):
    code = "idempotency_key_invalid"


class VoucherDateInvalid(InvalidInput):
    code = "voucher_date_invalid"


class VoucherSummaryInvalid(InvalidInput):
    code = "voucher_summary_invalid"


class VoucherLinesTooFew(InvalidInput):
    code = "voucher_lines_too_few"


class VoucherLineInvalid(InvalidInput):
    code = "voucher_line_invalid"


class VoucherMustBalance(InvalidInput):
    code = "voucher_must_balance"


class SubjectNotFound(NotFound):
    code = "subject_not_found"


class SubjectNotLeaf(InvalidInput):
    code = "subject_not_leaf"


class PeriodClosed(Rejected):
    code = "period_closed"


class VoucherKeyConflict(Conflict):
    code = "voucher_key_conflict"


class VoucherNotFound(NotFound):
    code = "voucher_not_found"


class VoucherNotPending(Conflict):
    code = "voucher_not_pending"


class MakerCannotApprove(Rejected):
    code = "maker_cannot_approve"


class PeriodInvalid(InvalidInput):
    code = "period_invalid"


class PeriodOutOfOrder(Rejected):
    code = "period_out_of_order"


class PeriodNotSynced(Rejected):
    code = "period_not_synced"


class PeriodHasPendingVouchers(Rejected):
    code = "period_has_pending_vouchers"


class TrialBalanceUnbalanced(Rejected):
    code = "trial_balance_unbalanced"


class DayNotAccounted(Rejected):
    code = "day_not_accounted"


class SyncModeInvalid(InvalidInput):
    code = "sync_mode_invalid"


class CursorInvalid(InvalidInput):
    code = "cursor_invalid"


class ReportFormatInvalid(InvalidInput):
    code = "report_format_invalid"
