"""The ledger's error catalogue, in order of precedence.

When a request breaks several rules, the first one in this list is reported
(stateless checks before stateful ones, so the same bad request always gets the
same code whatever the database holds). Legs are checked one after another,
each through rules 4-8, so a bad first leg is reported before a bad second one:

 1. ``idempotency_key_invalid``       key empty, too long or not printable ASCII
 2. ``business_code_invalid``         business code empty or too long
 3. ``postings_too_few``              an entry needs at least two legs
 4. ``account_ref_invalid``           an account id is 1 to 40 characters
 5. ``amount_must_be_integer``        amounts are integers of the minor unit
 6. ``amount_must_be_positive``       zero and negative amounts are refused
 7. ``currency_unknown``              not an ISO 4217 code (from ``money``)
 8. ``side_invalid``                  side is ``debit`` or ``credit``
 9. ``entry_must_balance``            per currency, debits must equal credits
10. ``metadata_invalid``              metadata is a JSON object of at most 4 KiB
11. ``idempotency_key_conflict``      the key was used for a different request
12. ``account_not_found``             a posting names an unknown account
13. ``account_currency_mismatch``     posting currency differs from the account's
14. ``account_closed``                the account is closed
15. ``debits_exceed_credits``         would break ``debits_must_not_exceed_credits``
16. ``credits_exceed_debits``         would break ``credits_must_not_exceed_debits``

Rules 12-16 are checked leg by leg too (12-14 for every leg before 15-16).
Holds, reversals, accounts and day-end add their own, each named after its rule.
"""

from __future__ import annotations

from zhangfang.errors import Conflict, InvalidInput, NotFound, Rejected


class IdempotencyKeyInvalid(InvalidInput):
    code = "idempotency_key_invalid"


class BusinessCodeInvalid(InvalidInput):
    code = "business_code_invalid"


class PostingsTooFew(InvalidInput):
    code = "postings_too_few"


class AmountMustBeInteger(InvalidInput):
    code = "amount_must_be_integer"


class AmountMustBePositive(InvalidInput):
    code = "amount_must_be_positive"


class SideInvalid(InvalidInput):
    code = "side_invalid"


class EntryMustBalance(InvalidInput):
    code = "entry_must_balance"


class IdempotencyKeyConflict(Conflict):
    code = "idempotency_key_conflict"


class AccountNotFound(NotFound):
    code = "account_not_found"


class AccountCurrencyMismatch(Rejected):
    code = "account_currency_mismatch"


class AccountClosed(Rejected):
    code = "account_closed"


class DebitsExceedCredits(Rejected):
    code = "debits_exceed_credits"


class CreditsExceedDebits(Rejected):
    code = "credits_exceed_debits"


# Accounts
class AccountFlagsInvalid(InvalidInput):
    """Both balance constraints at once, or ``hot`` with a balance constraint."""

    code = "account_flags_invalid"


class LedgerCodeInvalid(InvalidInput):
    code = "ledger_code_invalid"


class NormalSideInvalid(InvalidInput):
    code = "normal_side_invalid"


class AccountBalanceNotZero(Rejected):
    """Only an account with nothing posted or pending on it net can be closed."""

    code = "account_balance_not_zero"


# Entries and reversals
class EntryNotFound(NotFound):
    code = "entry_not_found"


class EntryNotReversible(Rejected):
    """Only plain entries are reversed; holds are voided, reversals are not reversed again."""

    code = "entry_not_reversible"


# Holds
class HoldNotFound(NotFound):
    code = "hold_not_found"


class HoldAccountsMustDiffer(InvalidInput):
    code = "hold_accounts_must_differ"


class HoldExpiryInPast(InvalidInput):
    code = "hold_expiry_in_past"


class HoldAlreadyResolved(Conflict):
    """The hold was already posted, voided or expired."""

    code = "hold_already_resolved"


class HoldExpired(Rejected):
    code = "hold_expired"


class HoldPostAmountExceedsHold(Rejected):
    code = "hold_post_amount_exceeds_hold"


# Day-end
class DayEndOutOfOrder(Rejected):
    """Accounting dates close one after another: only the open date can be closed."""

    code = "day_end_out_of_order"


class DayEndBlocked(Rejected):
    """A transaction that may still write to the closing date did not finish in time."""

    code = "day_end_blocked"


# Queries
class CursorInvalid(InvalidInput):
    code = "cursor_invalid"


class LimitInvalid(InvalidInput):
    code = "limit_invalid"


class MetadataInvalid(InvalidInput):
    """Metadata is a JSON object of at most 4 KiB."""

    code = "metadata_invalid"


class EntryAlreadyReversed(Conflict):
    code = "entry_already_reversed"


class AccountRefInvalid(InvalidInput):
    code = "account_ref_invalid"


class TimeZoneMissing(InvalidInput):
    """Times are instants: they carry a time zone offset, and are stored in UTC."""

    code = "time_zone_missing"


class IdempotencyKeyMismatch(InvalidInput):
    """The body's ``idempotency_key`` and the ``Idempotency-Key`` header name different keys."""

    code = "idempotency_key_mismatch"


class DateRangeInvalid(InvalidInput):
    """``date_from`` after ``date_to``, or a range longer than the API allows at once."""

    code = "date_range_invalid"
