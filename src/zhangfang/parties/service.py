"""Parties: merchants (商户), their payers (users), and the merchant API's credentials and bookkeeping.

Every function that takes a ``Connection`` expects it inside a transaction and
never commits: the caller owns the unit of work (``zhangfang.db.uow``).
``platform_key`` takes the engine, because it generates a key outside any
transaction and stores it in one of its own.

Guarantees
- Creating a merchant is idempotent on the operator's ``key``: the same key
  with the same attributes returns the first merchant (``created=False``, and
  the HMAC secret is not shown again); with other attributes it is
  ``idempotency_key_conflict``. Creating a user is idempotent on the
  merchant's identity for the payer (``external_ref``, else ``phone_hash``).
- A merchant's status only moves along ``models.MERCHANT_TRANSITIONS``
  (active ⇄ suspended, either → closed; closed is final); anything else is
  ``merchant_transition_invalid``. Asking for the current status changes nothing.
- The fee rate is a ``Decimal`` from 0 to 0.1 with at most 6 decimals, stored as
  canonical text and read back exactly; a float is refused.
- An RSA2 merchant's public key is an RSA key of 2048 to 8192 bits, stored as
  SubjectPublicKeyInfo PEM. An HMAC-SHA256 merchant's secret is 32 random bytes
  (64 hex characters), generated here and returned only by the call that
  generated it.
- A user belongs to exactly one merchant; ``get_user`` for another merchant's
  user raises ``user_not_found``, as for an id that does not exist.
- A nonce is accepted once per app_id (``record_nonce``), even under concurrent
  requests: the primary key decides.
- A refused request raises a ``ZhangfangError`` before anything is written
  (``parties.errors`` lists the codes and their precedence).
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from decimal import Decimal, InvalidOperation
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from zhangfang import ids
from zhangfang.db.sql import Prepared, insert_ignoring_conflict, insert_ignoring_conflict_in, request_digest
from zhangfang.db.types import UtcDateTime
from zhangfang.db.uow import run_in_transaction
from zhangfang.parties import errors, signing
from zhangfang.parties.models import (
    MERCHANT_STATUSES,
    MERCHANT_TRANSITIONS,
    IdempotencyRecord,
    Merchant,
    MerchantRequest,
    MerchantResult,
    Page,
    PlatformKey,
    SettlementAccount,
    User,
)
from zhangfang.parties.tables import idempotency_records, merchants, platform_keys, request_nonces, users

__all__ = [
    "change_merchant_status",
    "check_idempotency_key",
    "create_merchant",
    "create_user",
    "find_idempotency_record",
    "find_merchant_by_app_id",
    "get_merchant",
    "get_user",
    "list_merchants",
    "parse_fee_rate",
    "platform_key",
    "prune_nonces",
    "record_nonce",
    "rotate_credentials",
    "save_idempotency_record",
    "store_platform_key",
]

KEY_LENGTH_MAX = 200
NAME_LENGTH_MAX = 100
EXTERNAL_REF_LENGTH_MAX = 64
FEE_RATE_MAX = Decimal("0.1")
FEE_RATE_DECIMALS_MAX = 6
FEE_RATE_TEXT_LENGTH_MAX = 20
RSA_KEY_BITS_MIN = 2048
RSA_KEY_BITS_MAX = 8192
PAGE_LIMIT_MAX = 500
PLATFORM_KEY_NAME = "response-signing"
# A signed request is acceptable from 300 s before its timestamp to 300 s after: a nonce older than twice
# that can never be replayed, and is forgotten.
NONCE_RETENTION_SECONDS = 2 * signing.TIMESTAMP_TOLERANCE_SECONDS

_MCC = re.compile(r"[0-9]{4}")
_ACCOUNT_NUMBER = re.compile(r"[0-9]{8,32}")
_DECIMAL_TEXT = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?")
_PHONE_HASH = re.compile(r"[0-9a-f]{64}")
APP_ID_PATTERN = re.compile(r"app_[0-9a-f]{16}")


# --------------------------------------------------------------------------- validation


def _now(now: dt.datetime | None) -> dt.datetime:
    if now is None:
        return dt.datetime.now(dt.UTC)
    assert now.tzinfo is not None, "now must be time zone aware"
    return now.astimezone(dt.UTC)


def _printable_ascii(value: Any, length_max: int) -> bool:
    return isinstance(value, str) and 1 <= len(value) <= length_max and value.isprintable() and value.isascii()


def check_idempotency_key(key: Any, field: str = "key") -> str:
    """Returns ``key`` if it is 1 to 200 printable ASCII characters; ``idempotency_key_invalid`` otherwise."""
    if not _printable_ascii(key, KEY_LENGTH_MAX):
        raise errors.IdempotencyKeyInvalid(
            f"{field} must be 1 to {KEY_LENGTH_MAX} printable ASCII characters", field=field
        )
    return key


def _check_text(value: Any, error: type[errors.InvalidInput], field: str, length_max: int = NAME_LENGTH_MAX) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > length_max or not value.isprintable():
        raise error(f"{field} must be 1 to {length_max} printable characters", field=field)
    return value.strip()


def parse_fee_rate(value: Any, field: str = "fee_rate") -> Decimal:
    """A fee rate from a ``Decimal`` or decimal text: 0 to 0.1, at most 6 decimals, never a float."""
    if isinstance(value, float):
        raise errors.FeeRateInvalid('a fee rate is decimal text such as "0.006", never a float', field=field)
    if isinstance(value, Decimal):
        rate = value
    elif isinstance(value, str) and len(value) <= FEE_RATE_TEXT_LENGTH_MAX and _DECIMAL_TEXT.fullmatch(value.strip()):
        try:
            rate = Decimal(value.strip())
        except InvalidOperation:  # pragma: no cover - the pattern admits only plain decimals
            raise errors.FeeRateInvalid('a fee rate is decimal text such as "0.006"', field=field) from None
    else:
        raise errors.FeeRateInvalid('a fee rate is decimal text such as "0.006" (0.6 %)', field=field)
    if not rate.is_finite():
        raise errors.FeeRateInvalid("a fee rate is a finite decimal", field=field)
    rate = rate.normalize()
    exponent = rate.as_tuple().exponent
    assert isinstance(exponent, int)
    if exponent < -FEE_RATE_DECIMALS_MAX:
        raise errors.FeeRateInvalid(f"a fee rate has at most {FEE_RATE_DECIMALS_MAX} decimals", field=field)
    if not Decimal(0) <= rate <= FEE_RATE_MAX:
        raise errors.FeeRateOutOfRange(f"a fee rate is from 0 to {FEE_RATE_MAX}", field=field, fee_rate=str(rate))
    return rate


def _fee_rate_text(rate: Decimal) -> str:
    """Canonical text: no exponent, no trailing zeros (``0.006``, ``0.1``, ``0``)."""
    return "0" if rate.is_zero() else format(rate.normalize(), "f")


def _check_settlement_account(account: Any) -> SettlementAccount:
    if not isinstance(account, SettlementAccount):
        raise errors.SettlementAccountInvalid("a settlement account is required", field="settlement_account")
    bank_name = _check_text(account.bank_name, errors.SettlementAccountInvalid, "settlement_account.bank_name")
    number = account.account_number
    if not isinstance(number, str) or not _ACCOUNT_NUMBER.fullmatch(number):
        raise errors.SettlementAccountInvalid(
            "an account number is 8 to 32 digits", field="settlement_account.account_number"
        )
    account_name = _check_text(account.account_name, errors.SettlementAccountInvalid, "settlement_account.account_name")
    return SettlementAccount(bank_name=bank_name, account_number=number, account_name=account_name)


def _check_sign_type(sign_type: Any) -> str:
    if sign_type not in signing.SIGN_TYPES:
        raise errors.SignTypeInvalid(f"sign_type must be one of {', '.join(signing.SIGN_TYPES)}", field="sign_type")
    return sign_type


def _check_public_key(pem: Any, sign_type: str) -> str | None:
    """The merchant's key as SubjectPublicKeyInfo PEM for RSA2; None for HMAC-SHA256."""
    if sign_type == signing.SIGN_TYPE_HMAC:
        if pem is not None:
            raise errors.PublicKeyInvalid(
                "an HMAC-SHA256 merchant has no public key; its secret is generated", field="public_key_pem"
            )
        return None
    if not isinstance(pem, str) or not pem.strip():
        raise errors.PublicKeyInvalid("an RSA2 merchant needs its RSA public key (PEM)", field="public_key_pem")
    try:
        key = signing.load_public_key(pem.strip())
    except signing.KeyInvalid as exc:
        raise errors.PublicKeyInvalid(f"public_key_pem: {exc}", field="public_key_pem") from None
    if key.key_size > RSA_KEY_BITS_MAX:
        raise errors.PublicKeyInvalid(f"an RSA key has at most {RSA_KEY_BITS_MAX} bits", field="public_key_pem")
    if key.key_size < RSA_KEY_BITS_MIN:
        raise errors.PublicKeyTooShort(
            f"an RSA key has at least {RSA_KEY_BITS_MIN} bits; this one has {key.key_size}",
            field="public_key_pem",
            key_bits=key.key_size,
        )
    return signing.public_key_pem(key)


def _check_limit(limit: Any) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not (1 <= limit <= PAGE_LIMIT_MAX):
        raise errors.LimitInvalid(f"limit must be from 1 to {PAGE_LIMIT_MAX}", field="limit")
    return limit


def _check_cursor(cursor: str) -> int:
    if not (cursor.isascii() and cursor.isdigit()) or len(cursor) > 19:
        raise errors.CursorInvalid("cursor must be the next_cursor of a previous page", field="cursor")
    return int(cursor)


# --------------------------------------------------------------------------- merchants


def _merchant_from_row(row: Any) -> Merchant:
    return Merchant(
        id=row.id,
        ref=row.ref,
        key=row.key,
        name=row.name,
        mcc=row.mcc,
        status=row.status,
        fee_rate=Decimal(row.fee_rate),
        settlement_account=SettlementAccount(
            bank_name=row.bank_name, account_number=row.bank_account_number, account_name=row.bank_account_name
        ),
        app_id=row.app_id,
        sign_type=row.sign_type,
        public_key_pem=row.public_key_pem,
        hmac_secret=row.hmac_secret,
        created_at=row.created_at,
        status_changed_at=row.status_changed_at,
        credentials_rotated_at=row.credentials_rotated_at,
    )


def create_merchant(conn: Connection, *, request: MerchantRequest, now: dt.datetime | None = None) -> MerchantResult:
    """Create a merchant, idempotently on ``request.key``; an HMAC merchant's new secret is in the result."""
    key = check_idempotency_key(request.key)
    name = _check_text(request.name, errors.MerchantNameInvalid, "name")
    if not isinstance(request.mcc, str) or not _MCC.fullmatch(request.mcc):
        raise errors.MccInvalid("mcc is the 4-digit merchant category code, such as 5812", field="mcc")
    fee_rate = _fee_rate_text(parse_fee_rate(request.fee_rate))
    account = _check_settlement_account(request.settlement_account)
    sign_type = _check_sign_type(request.sign_type)
    public_key = _check_public_key(request.public_key_pem, sign_type)
    payload = {
        "name": name,
        "mcc": request.mcc,
        "fee_rate": fee_rate,
        "bank_name": account.bank_name,
        "bank_account_number": account.account_number,
        "bank_account_name": account.account_name,
        "sign_type": sign_type,
        "public_key_pem": public_key,
    }
    digest = request_digest(payload)
    existing = conn.execute(sa.select(merchants.c.ref, merchants.c.request_hash).where(merchants.c.key == key)).first()
    if existing is None:
        ref = ids.new_id("mch")
        secret = signing.new_hmac_secret() if sign_type == signing.SIGN_TYPE_HMAC else None
        inserted = conn.execute(
            insert_ignoring_conflict(conn, merchants, ["key"])
            .returning(merchants.c.id)
            .values(
                ref=ref,
                key=key,
                request_hash=digest,
                status="active",
                app_id=_new_app_id(conn),
                hmac_secret=secret,
                created_at=_now(now),
                **payload,
            )
        ).first()
        if inserted is not None:
            return MerchantResult(merchant=get_merchant(conn, ref=ref), created=True, hmac_secret=secret)
        existing = conn.execute(
            sa.select(merchants.c.ref, merchants.c.request_hash).where(merchants.c.key == key)
        ).one()
    if existing.request_hash != digest:
        raise errors.IdempotencyKeyConflict(
            "a merchant with this key was created with different attributes", field="key", key=key
        )
    return MerchantResult(merchant=get_merchant(conn, ref=existing.ref), created=False)


def _new_app_id(conn: Connection) -> str:
    """``app_`` and 16 random hex digits, not yet taken (64 random bits: a clash is all but impossible)."""
    while True:
        app_id = "app_" + secrets.token_hex(8)
        taken = conn.execute(sa.select(merchants.c.id).where(merchants.c.app_id == app_id)).first()
        if taken is None:
            return app_id


def get_merchant(conn: Connection, *, ref: str) -> Merchant:
    """Returns the merchant with this id (``mch_…``)."""
    row = conn.execute(sa.select(merchants).where(merchants.c.ref == ref)).first()
    if row is None:
        raise errors.MerchantNotFound(f"merchant {ref} does not exist", field="merchant")
    return _merchant_from_row(row)


def find_merchant_by_id(conn: Connection, *, merchant_id: int) -> Merchant | None:
    """Returns the merchant with this internal key (other domains hold it), or None."""
    row = conn.execute(sa.select(merchants).where(merchants.c.id == merchant_id)).first()
    return None if row is None else _merchant_from_row(row)


def find_merchant_by_app_id(conn: Connection, *, app_id: str) -> Merchant | None:
    """Returns the merchant with this ``app_id``, or None."""
    if not isinstance(app_id, str) or not APP_ID_PATTERN.fullmatch(app_id):
        return None
    row = conn.execute(sa.select(merchants).where(merchants.c.app_id == app_id)).first()
    return None if row is None else _merchant_from_row(row)


def list_merchants(conn: Connection, *, status: str | None = None, cursor: str | None = None, limit: int = 50) -> Page:
    """Returns merchants in creation order, optionally of one status, one page at a time."""
    limit = _check_limit(limit)
    query = sa.select(merchants).order_by(merchants.c.id).limit(limit + 1)
    if status is not None:
        if status not in MERCHANT_STATUSES:
            raise errors.MerchantStatusInvalid(f"status must be one of {', '.join(MERCHANT_STATUSES)}", field="status")
        query = query.where(merchants.c.status == status)
    if cursor is not None:
        query = query.where(merchants.c.id > _check_cursor(cursor))
    rows = conn.execute(query).all()
    items = [_merchant_from_row(row) for row in rows[:limit]]
    return Page(items=items, next_cursor=str(items[-1].id) if len(rows) > limit else None)


def _lock_merchant(conn: Connection, ref: str) -> Any:
    row = conn.execute(sa.select(merchants).where(merchants.c.ref == ref).with_for_update()).first()
    if row is None:
        raise errors.MerchantNotFound(f"merchant {ref} does not exist", field="merchant")
    return row


def change_merchant_status(conn: Connection, *, ref: str, status: str, now: dt.datetime | None = None) -> Merchant:
    """Move a merchant along its state machine; asking for its current status returns it unchanged."""
    row = _lock_merchant(conn, ref)
    if status not in MERCHANT_STATUSES:
        raise errors.MerchantStatusInvalid(f"status must be one of {', '.join(MERCHANT_STATUSES)}", field="status")
    if status == row.status:
        return _merchant_from_row(row)
    if status not in MERCHANT_TRANSITIONS[row.status]:
        allowed = sorted(MERCHANT_TRANSITIONS[row.status])
        raise errors.MerchantTransitionInvalid(
            f"a {row.status} merchant cannot become {status}"
            + (f"; it may become {' or '.join(allowed)}" if allowed else "; closed is final"),
            field="status",
            status=row.status,
            allowed=allowed,
        )
    conn.execute(
        merchants.update()
        .where(merchants.c.id == row.id, merchants.c.status == row.status)
        .values(status=status, status_changed_at=_now(now))
    )
    return get_merchant(conn, ref=ref)


def rotate_credentials(
    conn: Connection, *, ref: str, public_key_pem: str | None = None, now: dt.datetime | None = None
) -> MerchantResult:
    """Replace a merchant's credentials: a new HMAC secret (returned once), or the RSA2 merchant's new public key.

    The old credential stops working at once. Not idempotent: every call makes a new secret.
    """
    row = _lock_merchant(conn, ref)
    if row.status == "closed":
        raise errors.MerchantClosed(f"merchant {ref} is closed; its credentials are final", field="merchant")
    public_key = _check_public_key(public_key_pem, row.sign_type)
    secret = signing.new_hmac_secret() if row.sign_type == signing.SIGN_TYPE_HMAC else None
    conn.execute(
        merchants.update()
        .where(merchants.c.id == row.id)
        .values(public_key_pem=public_key, hmac_secret=secret, credentials_rotated_at=_now(now))
    )
    return MerchantResult(merchant=get_merchant(conn, ref=ref), created=False, hmac_secret=secret)


# --------------------------------------------------------------------------- users (payers)


def _user_from_row(row: Any) -> User:
    return User(
        id=row.id,
        ref=row.ref,
        merchant_id=row.merchant_id,
        external_ref=row.external_ref,
        phone_hash=row.phone_hash,
        created_at=row.created_at,
    )


def create_user(
    conn: Connection,
    *,
    merchant_id: int,
    external_ref: str | None = None,
    phone_hash: str | None = None,
    now: dt.datetime | None = None,
) -> tuple[User, bool]:
    """Create a payer of this merchant, idempotently on its identity; returns the user and whether it is new.

    The identity is ``external_ref`` (the merchant's id for the payer) when given,
    else ``phone_hash`` (lower-case hex SHA-256 of the E.164 number; zhangfang
    never sees the number itself).
    """
    if external_ref is not None and not _printable_ascii(external_ref, EXTERNAL_REF_LENGTH_MAX):
        raise errors.ExternalRefInvalid(
            f"external_ref must be 1 to {EXTERNAL_REF_LENGTH_MAX} printable ASCII characters", field="external_ref"
        )
    if phone_hash is not None and (not isinstance(phone_hash, str) or not _PHONE_HASH.fullmatch(phone_hash)):
        raise errors.PhoneHashInvalid(
            "phone_hash is the lower-case hex SHA-256 of the E.164 phone number (64 characters)",
            field="phone_hash",
        )
    if external_ref is None and phone_hash is None:
        raise errors.UserIdentityMissing("a user needs external_ref or phone_hash", field="external_ref")
    identity = f"ref:{external_ref}" if external_ref is not None else f"phone:{phone_hash}"
    digest = request_digest({"external_ref": external_ref, "phone_hash": phone_hash})

    def existing_row() -> Any:
        return conn.execute(
            sa.select(users).where(users.c.merchant_id == merchant_id, users.c.identity == identity)
        ).first()

    row = existing_row()
    if row is None:
        inserted = conn.execute(
            insert_ignoring_conflict(conn, users, ["merchant_id", "identity"])
            .returning(users.c.id)
            .values(
                ref=ids.new_id("usr"),
                merchant_id=merchant_id,
                identity=identity,
                external_ref=external_ref,
                phone_hash=phone_hash,
                request_hash=digest,
                created_at=_now(now),
            )
        ).first()
        row = existing_row()
        assert row is not None
        if inserted is not None:
            return _user_from_row(row), True
    if row.request_hash != digest:
        raise errors.UserIdentityConflict(
            "this merchant already has a user with this identity and other attributes",
            field="external_ref" if external_ref is not None else "phone_hash",
            user=row.ref,
        )
    return _user_from_row(row), False


def get_user(conn: Connection, *, merchant_id: int, ref: str) -> User:
    """Returns the merchant's user with this id; another merchant's user is ``user_not_found`` too."""
    row = conn.execute(sa.select(users).where(users.c.ref == ref, users.c.merchant_id == merchant_id)).first()
    if row is None:
        raise errors.UserNotFound(f"user {ref} does not exist", field="user")
    return _user_from_row(row)


# --------------------------------------------------------------------------- the platform's key


def _platform_key_of(private_pem: str, created_at: dt.datetime | None) -> PlatformKey:
    key = signing.load_private_key(private_pem)
    return PlatformKey(
        name=PLATFORM_KEY_NAME,
        private_key_pem=private_pem,
        public_key_pem=signing.public_key_pem(key),
        fingerprint=signing.public_key_fingerprint(key),
        created_at=created_at,
    )


def store_platform_key(conn: Connection, *, private_key_pem: str, now: dt.datetime | None = None) -> PlatformKey:
    """Store the platform's signing key unless one is stored already; returns the stored one (first wins)."""
    candidate = _platform_key_of(private_key_pem, _now(now))
    conn.execute(
        insert_ignoring_conflict(conn, platform_keys, ["name"]).values(
            name=PLATFORM_KEY_NAME,
            private_key_pem=candidate.private_key_pem,
            public_key_pem=candidate.public_key_pem,
            fingerprint=candidate.fingerprint,
            created_at=candidate.created_at,
        )
    )
    stored = _stored_platform_key(conn)
    assert stored is not None
    return stored


def _stored_platform_key(conn: Connection) -> PlatformKey | None:
    row = conn.execute(sa.select(platform_keys).where(platform_keys.c.name == PLATFORM_KEY_NAME)).first()
    if row is None:
        return None
    return PlatformKey(
        name=row.name,
        private_key_pem=row.private_key_pem,
        public_key_pem=row.public_key_pem,
        fingerprint=row.fingerprint,
        created_at=row.created_at,
    )


def platform_key(engine: Engine, *, configured_pem: str | None = None) -> PlatformKey:
    """The platform's response-signing key: from settings when configured, else stored, else generated now.

    Generation (2048-bit RSA) happens outside any transaction; if two processes
    generate at once, the first stored key wins and both use it.
    """
    if configured_pem:
        return _platform_key_of(configured_pem, None)
    stored = run_in_transaction(engine, _stored_platform_key, readonly=True)
    if stored is not None:
        return stored
    private_pem = signing.private_key_pem(signing.generate_private_key())
    return run_in_transaction(engine, lambda conn: store_platform_key(conn, private_key_pem=private_pem))


# --------------------------------------------------------------------------- request bookkeeping

# Every merchant request runs these: built once (``db.sql.Prepared``).
_INSERT_NONCE = Prepared(
    lambda dialect: insert_ignoring_conflict_in(dialect, request_nonces, ["app_id", "nonce"]).returning(
        request_nonces.c.nonce
    )
)
_SELECT_IDEMPOTENCY_RECORD = sa.select(idempotency_records).where(
    idempotency_records.c.app_id == sa.bindparam("app_id"), idempotency_records.c.key == sa.bindparam("key")
)
_NONCE_AND_IDEMPOTENCY_RECORD = (
    sa.text(
        "WITH fresh AS ("
        " INSERT INTO request_nonces (app_id, nonce, seen_at) VALUES (:app_id, :nonce, :seen_at)"
        " ON CONFLICT (app_id, nonce) DO NOTHING RETURNING 1"
        ") SELECT (SELECT count(*) FROM fresh) AS nonce_fresh, r.app_id, r.key, r.request_hash, r.status_code,"
        " r.response_body, r.created_at"
        " FROM (SELECT 1) AS one LEFT JOIN idempotency_records AS r ON r.app_id = :app_id AND r.key = :key"
    )
    .bindparams(sa.bindparam("seen_at", type_=UtcDateTime))
    .columns(created_at=UtcDateTime)
)
_INSERT_IDEMPOTENCY_RECORD = Prepared(
    lambda dialect: insert_ignoring_conflict_in(dialect, idempotency_records, ["app_id", "key"]).returning(
        idempotency_records.c.id
    )
)


def record_nonce(conn: Connection, *, app_id: str, nonce: str, now: dt.datetime | None = None) -> bool:
    """Remember that ``app_id`` used ``nonce``; False if it had been used already."""
    inserted = conn.execute(_INSERT_NONCE(conn), {"app_id": app_id, "nonce": nonce, "seen_at": _now(now)}).first()
    return inserted is not None


def prune_nonces(conn: Connection, *, before: dt.datetime) -> int:
    """Forget nonces accepted before ``before``; returns how many were forgotten."""
    return conn.execute(request_nonces.delete().where(request_nonces.c.seen_at < before)).rowcount


def find_idempotency_record(conn: Connection, *, app_id: str, key: str) -> IdempotencyRecord | None:
    """Returns the first response recorded under this merchant's key, or None."""
    row = conn.execute(_SELECT_IDEMPOTENCY_RECORD, {"app_id": app_id, "key": key}).first()
    return None if row is None else _idempotency_record(row)


def record_nonce_and_find_idempotency_record(
    conn: Connection, *, app_id: str, nonce: str, key: str, now: dt.datetime | None = None
) -> tuple[bool, IdempotencyRecord | None]:
    """``record_nonce`` and ``find_idempotency_record`` at once: what every idempotent merchant POST starts with.

    On PostgreSQL one statement (a data-modifying CTE), one round trip; on
    SQLite the two statements.
    """
    if conn.dialect.name != "postgresql":
        accepted = record_nonce(conn, app_id=app_id, nonce=nonce, now=now)
        return accepted, find_idempotency_record(conn, app_id=app_id, key=key)
    row = conn.execute(
        _NONCE_AND_IDEMPOTENCY_RECORD, {"app_id": app_id, "nonce": nonce, "seen_at": _now(now), "key": key}
    ).one()
    return bool(row.nonce_fresh), None if row.request_hash is None else _idempotency_record(row)


def _idempotency_record(row: Any) -> IdempotencyRecord:
    return IdempotencyRecord(
        app_id=row.app_id,
        key=row.key,
        request_hash=row.request_hash,
        status_code=row.status_code,
        response_body=row.response_body,
        created_at=row.created_at,
    )


def save_idempotency_record(
    conn: Connection,
    *,
    app_id: str,
    key: str,
    request_hash: str,
    status_code: int,
    response_body: str,
    now: dt.datetime | None = None,
) -> bool:
    """Record the response to a merchant's key; False if a concurrent request recorded one first."""
    check_idempotency_key(key, "Idempotency-Key")
    values = {
        "app_id": app_id,
        "key": key,
        "request_hash": request_hash,
        "status_code": status_code,
        "response_body": response_body,
        "created_at": _now(now),
    }
    return conn.execute(_INSERT_IDEMPOTENCY_RECORD(conn), values).first() is not None
