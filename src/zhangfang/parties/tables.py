"""Parties storage: merchants, their payers (users), the platform's signing key, and the request bookkeeping
of the merchant API (nonces seen, idempotent responses).

Guarantees the database enforces on its own, beside the service's checks:

- ``merchants``: one row per creation key and per ``app_id``; ``status`` and
  ``sign_type`` come from closed sets; the fee rate is from 0 to 0.1; an RSA2
  merchant has a public key and no secret, an HMAC-SHA256 merchant a secret and
  no public key.
- ``users``: one user per (merchant, identity); a user has an external ref or a
  phone hash.
- ``request_nonces``: an app_id uses a nonce once (primary key), which is what
  refuses a replayed request even when two copies arrive at the same moment.
- ``idempotency_records``: one response per (app_id, key).

Columns and their constraints
- ``merchants.fee_rate``: the rate as canonical decimal text (``"0.006"``),
  never a float; read back as ``Decimal``. Text, because SQLite keeps NUMERIC
  as a binary float.
- ``merchants.bank_account_number``: 8 to 32 digits, shown masked to
  merchants. Stored in clear for now: encrypting it at rest comes with the
  key-management work.
- ``merchants.hmac_secret``: 64 hex characters, the HMAC key itself. It must be
  readable to verify signatures, so it cannot be hashed; it is stored in clear
  for now and must be encrypted at rest (envelope encryption with a KMS key)
  before production.
- ``platform_keys.private_key_pem``: the platform's response-signing key,
  generated on first use unless settings provide one. Same at-rest caveat.
- ``request_nonces.seen_at``: when the nonce was accepted; rows older than twice
  the timestamp window can never be replayed and are pruned.
- ``idempotency_records.response_body``: the exact JSON text first answered,
  replayed byte for byte.
"""

from __future__ import annotations

import sqlalchemy as sa

from zhangfang.db.metadata import BigId, metadata
from zhangfang.db.types import UtcDateTime

merchants = sa.Table(
    "merchants",
    metadata,
    sa.Column("id", BigId, primary_key=True),
    sa.Column("ref", sa.String(40), nullable=False, unique=True, comment="external id, mch_…"),
    sa.Column("key", sa.String(200), nullable=False, unique=True, comment="operator's creation key"),
    sa.Column("request_hash", sa.String(64), nullable=False),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("mcc", sa.String(4), nullable=False, comment="industry category, 4 digits"),
    sa.Column("status", sa.String(10), nullable=False, comment="active | suspended | closed"),
    sa.Column("fee_rate", sa.String(12), nullable=False, comment="decimal text, 0 to 0.1"),
    sa.Column("bank_name", sa.String(100), nullable=False),
    sa.Column("bank_account_number", sa.String(32), nullable=False, comment="digits; shown masked to merchants"),
    sa.Column("bank_account_name", sa.String(100), nullable=False),
    sa.Column("app_id", sa.String(20), nullable=False, unique=True, comment="public, app_ + 16 hex"),
    sa.Column("sign_type", sa.String(11), nullable=False, comment="RSA2 | HMAC-SHA256"),
    sa.Column("public_key_pem", sa.Text, nullable=True, comment="merchant's RSA public key (RSA2)"),
    sa.Column("hmac_secret", sa.String(64), nullable=True, comment="HMAC key (HMAC-SHA256); to encrypt at rest"),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("status_changed_at", UtcDateTime, nullable=True),
    sa.Column("credentials_rotated_at", UtcDateTime, nullable=True),
    sa.CheckConstraint("status IN ('active', 'suspended', 'closed')", name="status_valid"),
    sa.CheckConstraint("sign_type IN ('RSA2', 'HMAC-SHA256')", name="sign_type_valid"),
    sa.CheckConstraint("length(mcc) = 4", name="mcc_four_digits"),
    sa.CheckConstraint(
        "CAST(fee_rate AS NUMERIC) >= 0 AND CAST(fee_rate AS NUMERIC) <= 0.1", name="fee_rate_within_range"
    ),
    sa.CheckConstraint(
        "(sign_type = 'RSA2' AND public_key_pem IS NOT NULL AND hmac_secret IS NULL) OR "
        "(sign_type = 'HMAC-SHA256' AND hmac_secret IS NOT NULL AND public_key_pem IS NULL)",
        name="credentials_match_sign_type",
    ),
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", BigId, primary_key=True),
    sa.Column("ref", sa.String(40), nullable=False, unique=True, comment="external id, usr_…"),
    sa.Column("merchant_id", BigId, sa.ForeignKey("merchants.id"), nullable=False),
    sa.Column("identity", sa.String(80), nullable=False, comment="ref:<external_ref> or phone:<phone_hash>"),
    sa.Column("external_ref", sa.String(64), nullable=True, comment="the merchant's id for the payer"),
    sa.Column("phone_hash", sa.String(64), nullable=True, comment="sha256 hex of the E.164 phone number"),
    sa.Column("request_hash", sa.String(64), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.UniqueConstraint("merchant_id", "identity"),
    sa.CheckConstraint("external_ref IS NOT NULL OR phone_hash IS NOT NULL", name="identified"),
)

platform_keys = sa.Table(
    "platform_keys",
    metadata,
    sa.Column("name", sa.String(40), primary_key=True, comment="purpose, e.g. response-signing"),
    sa.Column("private_key_pem", sa.Text, nullable=False, comment="PKCS#8 PEM; to encrypt at rest"),
    sa.Column("public_key_pem", sa.Text, nullable=False),
    sa.Column("fingerprint", sa.String(64), nullable=False, comment="sha256 hex of the DER public key"),
    sa.Column("created_at", UtcDateTime, nullable=False),
)

request_nonces = sa.Table(
    "request_nonces",
    metadata,
    sa.Column("app_id", sa.String(20), primary_key=True),
    sa.Column("nonce", sa.String(64), primary_key=True),
    sa.Column("seen_at", UtcDateTime, nullable=False),
    sa.Index("ix_request_nonces_seen_at", "seen_at"),
)

idempotency_records = sa.Table(
    "idempotency_records",
    metadata,
    sa.Column("id", BigId, primary_key=True),
    sa.Column("app_id", sa.String(20), nullable=False),
    sa.Column("key", sa.String(200), nullable=False),
    sa.Column("request_hash", sa.String(64), nullable=False, comment="sha256 of method, path, query and body"),
    sa.Column("status_code", sa.SmallInteger, nullable=False),
    sa.Column("response_body", sa.Text, nullable=False, comment="the JSON first answered, byte for byte"),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.UniqueConstraint("app_id", "key"),
)
