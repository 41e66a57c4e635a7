"""The payments' error catalogue, in order of precedence within each operation.

When a request breaks several rules, the first one listed for its operation is
reported: stateless checks before the ones that read the database, so the same
bad request gets the same code whatever the database holds.

Creating an order (``service.create_order``):

 1. ``out_trade_no_invalid``          1 to 64 characters of ``[A-Za-z0-9_-]``, ``.``, ``:``
 2. ``amount_must_be_integer``        an amount is an integer of the currency's minor unit (fen)
 3. ``amount_must_be_positive``       zero and negative amounts are refused
 4. ``amount_too_large``              above ``AMOUNT_MAX_MINOR`` (100,000,000.00 in CNY)
 5. ``currency_unknown``              not an ISO 4217 code
 6. ``subject_invalid``               1 to 256 printable characters
 7. ``description_invalid``           at most 1000 printable characters
 8. ``payment_url_invalid``           ``notify_url``/``return_url``: absolute http(s) URL (webhook rules
                                      for ``notify_url``: https unless loopback or allowed by settings)
 9. ``expires_at_invalid``            time-zone aware, 1 minute to 7 days ahead
10. ``metadata_invalid``              a JSON object of at most 4 KiB
11. ``currency_not_supported``        no configured channel collects this currency
12. ``payment_method_unavailable``    ``method`` is not offered for this currency and amount
13. ``channel_unknown``               ``preferred_channel`` is not a configured channel
14. ``no_route_for_payment``          no channel takes this currency and amount
15. ``user_not_found``                ``user`` is not one of this merchant's payers
16. ``out_trade_no_conflict``         the merchant used this ``out_trade_no`` for another order

Reading: ``payment_not_found`` (also for another merchant's order), ``refund_not_found``,
``payout_not_found``; listing: ``payment_state_invalid``, ``limit_invalid``, ``cursor_invalid``.

Closing an order (``service.close_order``): ``payment_not_found``, then
``payment_already_paid`` (succeeded or refunded: refund it instead); closing a
closed order returns it unchanged.

Paying at the cashier (``flows.open_attempt``): ``payment_not_found``,
``payment_method_unavailable``, ``payment_not_payable`` (paid, closed or expired),
``channel_unavailable`` (every channel for the method failed or is cooling down).

Refunding (``service.create_refund``):

 1. ``out_refund_no_invalid``         like ``out_trade_no``
 2. ``amount_must_be_integer``, ``amount_must_be_positive``
 3. ``refund_reason_invalid``         at most 256 printable characters
 4. ``payment_url_invalid``           ``notify_url``
 5. ``payment_not_found``
 6. ``out_refund_no_conflict``        the number was used for another refund
 7. ``payment_not_refundable``        the order is not paid (pending or closed)
 8. ``refund_exceeds_paid``           more than the order's amount minus what is refunded or being refunded
 9. ``merchant_balance_insufficient`` the merchant's pending-settlement balance cannot cover the refund

Paying out (``service.create_payout``): ``out_payout_no_invalid``, the amount rules,
``currency_unknown``, ``payee_invalid``, ``payout_remark_invalid``,
``payment_url_invalid``, ``channel_unknown``, ``payout_channel_unavailable`` (no
configured channel pays out in this currency), ``out_payout_no_conflict``,
``merchant_balance_insufficient``.
"""

from __future__ import annotations

from zhangfang.errors import Conflict, InvalidInput, NotFound, Rejected, ZhangfangError


class OutTradeNoInvalid(InvalidInput):
    code = "out_trade_no_invalid"


class OutRefundNoInvalid(InvalidInput):
    code = "out_refund_no_invalid"


class OutPayoutNoInvalid(InvalidInput):
    code = "out_payout_no_invalid"


class AmountMustBeInteger(InvalidInput):
    code = "amount_must_be_integer"


class AmountMustBePositive(InvalidInput):
    code = "amount_must_be_positive"


class AmountTooLarge(InvalidInput):
    code = "amount_too_large"


class SubjectInvalid(InvalidInput):
    code = "subject_invalid"


class DescriptionInvalid(InvalidInput):
    code = "description_invalid"


class PaymentUrlInvalid(InvalidInput):
    """``notify_url`` and ``return_url`` are absolute http(s) URLs; webhooks go over https unless to loopback."""

    code = "payment_url_invalid"


class ExpiresAtInvalid(InvalidInput):
    code = "expires_at_invalid"


class MetadataInvalid(InvalidInput):
    code = "metadata_invalid"


class RefundReasonInvalid(InvalidInput):
    code = "refund_reason_invalid"


class PayeeInvalid(InvalidInput):
    code = "payee_invalid"


class PayoutRemarkInvalid(InvalidInput):
    code = "payout_remark_invalid"


class PaymentStateInvalid(InvalidInput):
    code = "payment_state_invalid"


class LimitInvalid(InvalidInput):
    code = "limit_invalid"


class CursorInvalid(InvalidInput):
    code = "cursor_invalid"


class CurrencyNotSupported(Rejected):
    """No configured channel collects (or pays out) in this currency."""

    code = "currency_not_supported"


class PaymentMethodUnavailable(Rejected):
    code = "payment_method_unavailable"


class ChannelUnknown(InvalidInput):
    code = "channel_unknown"


class NoRouteForPayment(Rejected):
    """No channel takes this currency and amount (every route's amount band excludes it)."""

    code = "no_route_for_payment"


class PaymentNotFound(NotFound):
    code = "payment_not_found"


class RefundNotFound(NotFound):
    code = "refund_not_found"


class PayoutNotFound(NotFound):
    code = "payout_not_found"


class OutTradeNoConflict(Conflict):
    """The merchant already created an order with this ``out_trade_no`` and other content."""

    code = "out_trade_no_conflict"


class OutRefundNoConflict(Conflict):
    code = "out_refund_no_conflict"


class OutPayoutNoConflict(Conflict):
    code = "out_payout_no_conflict"


class PaymentAlreadyPaid(Rejected):
    """A paid order cannot be closed; refund it instead."""

    code = "payment_already_paid"


class PaymentNotPayable(Rejected):
    """The order is paid, closed or past its expiry: the payer cannot pay it."""

    code = "payment_not_payable"


class PaymentNotRefundable(Rejected):
    code = "payment_not_refundable"


class RefundExceedsPaid(Rejected):
    code = "refund_exceeds_paid"


class MerchantBalanceInsufficient(Rejected):
    """The merchant's pending-settlement balance cannot cover this refund or payout now."""

    code = "merchant_balance_insufficient"


class PayoutChannelUnavailable(Rejected):
    code = "payout_channel_unavailable"


class ChannelUnavailable(ZhangfangError):
    """Every channel that could take this payment failed or is cooling down; try again shortly (HTTP 503)."""

    kind = "unavailable"
    code = "channel_unavailable"


class ChannelsNotConfigured(ZhangfangError):
    """This server has no payment channels: set ZHANGFANG_CHANNELS_FILE (or ZHANGFANG_SANDBOX=1 to develop)."""

    kind = "unavailable"
    code = "channels_not_configured"


class ChannelNotConfigured(NotFound):
    code = "channel_not_configured"
