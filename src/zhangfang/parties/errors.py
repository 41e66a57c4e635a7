"""The parties' error catalogue, in order of precedence within each operation.

When a request breaks several rules, the first one listed for its operation is
reported: stateless checks before stateful ones, so the same bad request gets
the same code whatever the database holds.

Creating a merchant (``service.create_merchant``):

 1. ``idempotency_key_invalid``       key empty, longer than 200 or not printable ASCII
 2. ``merchant_name_invalid``         name 1 to 100 printable characters
 3. ``mcc_invalid``                   industry category: exactly 4 digits (ISO 18245)
 4. ``fee_rate_invalid``              a decimal string with at most 6 decimals; never a float
 5. ``fee_rate_out_of_range``         from 0 to 0.1 inclusive
 6. ``settlement_account_invalid``    bank name and account name 1 to 100 printable characters;
                                      account number 8 to 32 digits
 7. ``sign_type_invalid``             ``RSA2`` or ``HMAC-SHA256``
 8. ``public_key_invalid``            RSA2 needs a PEM RSA public key (at most 8192 bits);
                                      HMAC-SHA256 takes none
 9. ``public_key_too_short``          an RSA key has at least 2048 bits
10. ``idempotency_key_conflict``      the key was used to create a merchant with other attributes

Changing a merchant: ``merchant_not_found``, then ``merchant_status_invalid``
(not ``active|suspended|closed``), then ``merchant_transition_invalid`` (the
state machine in ``models.MERCHANT_TRANSITIONS`` has no such arrow), and for
``rotate_credentials`` ``merchant_closed`` before the key rules 8-9.

Listing merchants: ``merchant_status_invalid``, ``cursor_invalid``, ``limit_invalid`` (1 to 500).

Users (payers): ``external_ref_invalid``, ``phone_hash_invalid``,
``user_identity_missing``, ``user_identity_conflict``; reading one another
merchant owns is ``user_not_found``, the same answer as for an id that does not
exist, so a merchant never learns whether another's object exists.

Authenticating a merchant request (``zhangfang.api.merchant_auth``), all 401:

 1. ``signature_missing``             a Zhangfang-* header is missing or empty
 2. ``signature_header_invalid``      timestamp not unix seconds, nonce not 16-64 of
                                      ``[A-Za-z0-9_-]``, sign type not RSA2|HMAC-SHA256
 3. ``timestamp_stale``               more than 300 s before or after the server's clock
 4. ``app_id_unknown``                no merchant has this app_id
 5. ``sign_type_mismatch``            the sign type is not the merchant's scheme
 6. ``signature_invalid``             the signature does not verify with the merchant's key
 7. ``merchant_not_active``           the merchant is suspended or closed
 8. ``nonce_replayed``                this app_id used this nonce within the window

Idempotent merchant POSTs: ``idempotency_key_invalid``, then
``idempotency_key_conflict`` (the key was used for a different request).
"""

from __future__ import annotations

from zhangfang.errors import Conflict, InvalidInput, NotFound, Rejected, Unauthorized

# Merchants and users: input


class IdempotencyKeyInvalid(InvalidInput):
    code = "idempotency_key_invalid"


class MerchantNameInvalid(InvalidInput):
    code = "merchant_name_invalid"


class MccInvalid(InvalidInput):
    code = "mcc_invalid"


class FeeRateInvalid(InvalidInput):
    code = "fee_rate_invalid"


class FeeRateOutOfRange(InvalidInput):
    code = "fee_rate_out_of_range"


class SettlementAccountInvalid(InvalidInput):
    code = "settlement_account_invalid"


class SignTypeInvalid(InvalidInput):
    code = "sign_type_invalid"


class PublicKeyInvalid(InvalidInput):
    code = "public_key_invalid"


class PublicKeyTooShort(InvalidInput):
    code = "public_key_too_short"


class MerchantStatusInvalid(InvalidInput):
    code = "merchant_status_invalid"


class ExternalRefInvalid(InvalidInput):
    code = "external_ref_invalid"


class PhoneHashInvalid(InvalidInput):
    code = "phone_hash_invalid"


class UserIdentityMissing(InvalidInput):
    """A user is identified by the merchant's ``external_ref``, or by ``phone_hash``, or both."""

    code = "user_identity_missing"


class LimitInvalid(InvalidInput):
    code = "limit_invalid"


class CursorInvalid(InvalidInput):
    code = "cursor_invalid"


# Merchants and users: state


class IdempotencyKeyConflict(Conflict):
    code = "idempotency_key_conflict"


class UserIdentityConflict(Conflict):
    """The merchant already has a user with this identity, created with other attributes."""

    code = "user_identity_conflict"


class MerchantNotFound(NotFound):
    code = "merchant_not_found"


class UserNotFound(NotFound):
    code = "user_not_found"


class MerchantTransitionInvalid(Rejected):
    code = "merchant_transition_invalid"


class MerchantClosed(Rejected):
    """A closed merchant is final: its credentials are not rotated."""

    code = "merchant_closed"


# Request authentication


class SignatureMissing(Unauthorized):
    code = "signature_missing"


class SignatureHeaderInvalid(Unauthorized):
    code = "signature_header_invalid"


class TimestampStale(Unauthorized):
    code = "timestamp_stale"


class AppIdUnknown(Unauthorized):
    code = "app_id_unknown"


class SignTypeMismatch(Unauthorized):
    code = "sign_type_mismatch"


class SignatureInvalid(Unauthorized):
    code = "signature_invalid"


class MerchantNotActive(Unauthorized):
    code = "merchant_not_active"


class NonceReplayed(Unauthorized):
    code = "nonce_replayed"
