"""The mandates' error catalogue, in order of precedence within each operation.

When a request breaks several rules, the first one listed for its operation is
reported: stateless checks before the ones that read the database.

Requesting a mandate (``service.create_mandate``):

 1. ``out_mandate_no_invalid``              1 to 64 characters of ``[A-Za-z0-9_-]``, ``.``, ``:``
 2. ``currency_unknown``                    not an ISO 4217 code
 3. ``mandate_account_invalid``             account number not 8 to 32 digits, or name empty or over 100
 4. ``mandate_phone_invalid``               not a mainland mobile number (11 digits from 1, optional +86)
 5. ``mandate_limits_invalid``              a limit not a positive integer of the minor unit, above the
                                            platform's cap, or out of order (debit <= day <= month <= total)
 6. ``mandate_expires_at_invalid``          not time-zone aware, or not in the future
 7. ``mandate_description_invalid``         at most 256 printable characters
 8. ``mandate_url_invalid``                 ``notify_url`` breaks the webhook rules
 9. ``mandate_channel_unavailable``         no configured bank signs withholding agreements (or not ``channel``)
10. ``mandate_industry_restricted``         the merchant's category (mcc) is refused for withholding
11. ``user_not_found``                      ``user`` is not one of this merchant's payers
12. ``out_mandate_no_conflict``             the merchant used this number for another mandate

Authorizing (``service.check_code`` through ``flows.confirm``): ``mandate_not_found``,
``mandate_not_pending`` (it is no longer awaiting authorization), ``authorization_code_format_invalid``
(not 6 digits), ``authorization_code_missing`` (none sent, or the last one was used or spent),
``authorization_code_expired``, ``authorization_code_attempts_exceeded`` (this wrong code was the
last allowed: ask for a new one), ``authorization_code_wrong``. A wrong code is counted even though
it is refused: that is the one write a refusal makes.

Changing a mandate (``service.suspend_mandate``, ``resume_mandate``, ``revoke_mandate``):
``mandate_not_found``, ``mandate_revoked_by_invalid``, ``mandate_reason_invalid``, then
``mandate_transition_not_allowed`` (the state machine has no such arrow). Revoking a revoked
mandate returns it unchanged.

Creating a debit (``service.create_debit``):

 1. ``debit_key_invalid``                   1 to 200 printable ASCII characters
 2. ``amount_must_be_integer``, ``amount_must_be_positive``, ``amount_too_large``
 3. ``currency_unknown``
 4. ``due_date_invalid``                    a ``datetime.date`` no earlier than today and at most a year ahead
 5. ``debit_purpose_invalid``               1 to 32 of ``[a-z0-9_]``; ``purpose_ref`` at most 64 printable
 6. ``mandate_description_invalid``, ``mandate_url_invalid``
 7. ``mandate_not_found``                   also another merchant's mandate: no debit without a mandate
                                            for that merchant
 8. ``debit_key_conflict``                  the key was used for another debit
 9. ``currency_mismatch``                   the debit's currency is not the mandate's
10. ``mandate_not_active``                  pending authorization, suspended, revoked, expired or failed
11. ``mandate_industry_restricted``         the merchant's category is (now) refused for withholding
12. ``amount_exceeds_debit_limit``          above the mandate's per-debit limit or the platform's cap
13. ``daily_limit_exceeded``                the due date's debits would exceed the mandate's daily limit or
                                            the platform's daily cap
14. ``monthly_limit_exceeded``              the due month's debits would exceed the monthly limit
15. ``total_limit_exceeded``                all debits would exceed the total limit
 Debits that failed do not count; pending, retrying and succeeded ones do.

Batch files (``batch.upload``): ``merchant_batch_no_conflict`` (the number was used for another
file), then ``batch_file_invalid`` with every problem in ``details.errors`` (``row_no``, ``line``,
``code``, ``message``): the file is refused as a whole and nothing is created. Rows then meet the
debit rules above one by one, each refusal reported in the results file.

Debit failure reasons (``Debit.failure_code``; not errors of a request): soft —
``insufficient_funds``, ``channel_timeout`` (retried on ``ZHANGFANG_MANDATE_RETRY_SCHEDULE``);
hard — ``mandate_revoked``, ``mandate_suspended``, ``mandate_expired``, ``account_closed``,
``agreement_invalid``, ``industry_restricted``, ``bank_refused``, and for batch rows any refusal of
``create_debit`` above (``mandate_not_active``, ``amount_exceeds_debit_limit``, …).
"""

from __future__ import annotations

from zhangfang.errors import Conflict, InvalidInput, NotFound, Rejected, ZhangfangError
from zhangfang.payments.errors import AmountMustBeInteger, AmountMustBePositive, AmountTooLarge

__all__ = ["AmountMustBeInteger", "AmountMustBePositive", "AmountTooLarge"]


class OutMandateNoInvalid(InvalidInput):
    code = "out_mandate_no_invalid"


class MandateAccountInvalid(InvalidInput):
    code = "mandate_account_invalid"


class MandatePhoneInvalid(InvalidInput):
    code = "mandate_phone_invalid"


class MandateLimitsInvalid(InvalidInput):
    code = "mandate_limits_invalid"


class MandateExpiresAtInvalid(InvalidInput):
    code = "mandate_expires_at_invalid"


class MandateDescriptionInvalid(InvalidInput):
    code = "mandate_description_invalid"


class MandateUrlInvalid(InvalidInput):
    code = "mandate_url_invalid"


class MandateChannelUnavailable(Rejected):
    code = "mandate_channel_unavailable"


class MandateIndustryRestricted(Rejected):
    """The merchant's category (mcc) is in ``ZHANGFANG_MANDATE_RESTRICTED_MCCS``."""

    code = "mandate_industry_restricted"


class MandateNotFound(NotFound):
    code = "mandate_not_found"


class OutMandateNoConflict(Conflict):
    code = "out_mandate_no_conflict"


class MandateNotPending(Rejected):
    code = "mandate_not_pending"


class AuthorizationCodeFormatInvalid(InvalidInput):
    code = "authorization_code_format_invalid"


class AuthorizationCodeMissing(Rejected):
    code = "authorization_code_missing"


class AuthorizationCodeExpired(Rejected):
    code = "authorization_code_expired"


class AuthorizationCodeAttemptsExceeded(Rejected):
    code = "authorization_code_attempts_exceeded"


class AuthorizationCodeWrong(Rejected):
    code = "authorization_code_wrong"


class MandateRevokedByInvalid(InvalidInput):
    code = "mandate_revoked_by_invalid"


class MandateReasonInvalid(InvalidInput):
    code = "mandate_reason_invalid"


class MandateTransitionNotAllowed(Rejected):
    code = "mandate_transition_not_allowed"


class MandateStateInvalid(InvalidInput):
    code = "mandate_state_invalid"


class DebitKeyInvalid(InvalidInput):
    code = "debit_key_invalid"


class DueDateInvalid(InvalidInput):
    code = "due_date_invalid"


class DebitPurposeInvalid(InvalidInput):
    code = "debit_purpose_invalid"


class DebitKeyConflict(Conflict):
    code = "debit_key_conflict"


class DebitNotFound(NotFound):
    code = "debit_not_found"


class CurrencyMismatch(Rejected):
    code = "currency_mismatch"


class MandateNotActive(Rejected):
    code = "mandate_not_active"


class AmountExceedsDebitLimit(Rejected):
    code = "amount_exceeds_debit_limit"


class DailyLimitExceeded(Rejected):
    code = "daily_limit_exceeded"


class MonthlyLimitExceeded(Rejected):
    code = "monthly_limit_exceeded"


class TotalLimitExceeded(Rejected):
    code = "total_limit_exceeded"


class MerchantBatchNoInvalid(InvalidInput):
    code = "merchant_batch_no_invalid"


class MerchantBatchNoConflict(Conflict):
    code = "merchant_batch_no_conflict"


class BatchFileInvalid(InvalidInput):
    """The batch file breaks its rules; ``details.errors`` lists every problem with its row number and code."""

    code = "batch_file_invalid"


class DebitBatchNotFound(NotFound):
    code = "debit_batch_not_found"


class ListLimitInvalid(InvalidInput):
    code = "limit_invalid"


class CursorInvalid(InvalidInput):
    code = "cursor_invalid"


class BankUnavailable(ZhangfangError):
    """The bank did not answer the signing request; the mandate stays authorized and a job signs it later."""

    kind = "unavailable"
    code = "bank_unavailable"
