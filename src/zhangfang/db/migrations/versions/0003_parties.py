"""parties: merchants, users, platform keys, request nonces, idempotency records

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "merchants",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("ref", sa.String(length=40), nullable=False, comment="external id, mch_…"),
        sa.Column("key", sa.String(length=200), nullable=False, comment="operator's creation key"),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("mcc", sa.String(length=4), nullable=False, comment="industry category, 4 digits"),
        sa.Column("status", sa.String(length=10), nullable=False, comment="active | suspended | closed"),
        sa.Column("fee_rate", sa.String(length=12), nullable=False, comment="decimal text, 0 to 0.1"),
        sa.Column("bank_name", sa.String(length=100), nullable=False),
        sa.Column(
            "bank_account_number", sa.String(length=32), nullable=False, comment="digits; shown masked to merchants"
        ),
        sa.Column("bank_account_name", sa.String(length=100), nullable=False),
        sa.Column("app_id", sa.String(length=20), nullable=False, comment="public, app_ + 16 hex"),
        sa.Column("sign_type", sa.String(length=11), nullable=False, comment="RSA2 | HMAC-SHA256"),
        sa.Column("public_key_pem", sa.Text(), nullable=True, comment="merchant's RSA public key (RSA2)"),
        sa.Column(
            "hmac_secret", sa.String(length=64), nullable=True, comment="HMAC key (HMAC-SHA256); to encrypt at rest"
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status_changed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("credentials_rotated_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("status IN ('active', 'suspended', 'closed')", name=op.f("ck_merchants_status_valid")),
        sa.CheckConstraint("sign_type IN ('RSA2', 'HMAC-SHA256')", name=op.f("ck_merchants_sign_type_valid")),
        sa.CheckConstraint("length(mcc) = 4", name=op.f("ck_merchants_mcc_four_digits")),
        sa.CheckConstraint(
            "CAST(fee_rate AS NUMERIC) >= 0 AND CAST(fee_rate AS NUMERIC) <= 0.1",
            name=op.f("ck_merchants_fee_rate_within_range"),
        ),
        sa.CheckConstraint(
            "(sign_type = 'RSA2' AND public_key_pem IS NOT NULL AND hmac_secret IS NULL) OR "
            "(sign_type = 'HMAC-SHA256' AND hmac_secret IS NOT NULL AND public_key_pem IS NULL)",
            name=op.f("ck_merchants_credentials_match_sign_type"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_merchants")),
        sa.UniqueConstraint("app_id", name=op.f("uq_merchants_app_id")),
        sa.UniqueConstraint("key", name=op.f("uq_merchants_key")),
        sa.UniqueConstraint("ref", name=op.f("uq_merchants_ref")),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("ref", sa.String(length=40), nullable=False, comment="external id, usr_…"),
        sa.Column("merchant_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("identity", sa.String(length=80), nullable=False, comment="ref:<external_ref> or phone:<phone_hash>"),
        sa.Column("external_ref", sa.String(length=64), nullable=True, comment="the merchant's id for the payer"),
        sa.Column("phone_hash", sa.String(length=64), nullable=True, comment="sha256 hex of the E.164 phone number"),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("external_ref IS NOT NULL OR phone_hash IS NOT NULL", name=op.f("ck_users_identified")),
        sa.ForeignKeyConstraint(["merchant_id"], ["merchants.id"], name=op.f("fk_users_merchant_id_merchants")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("merchant_id", "identity", name=op.f("uq_users_merchant_id")),
        sa.UniqueConstraint("ref", name=op.f("uq_users_ref")),
    )
    op.create_table(
        "platform_keys",
        sa.Column("name", sa.String(length=40), nullable=False, comment="purpose, e.g. response-signing"),
        sa.Column("private_key_pem", sa.Text(), nullable=False, comment="PKCS#8 PEM; to encrypt at rest"),
        sa.Column("public_key_pem", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False, comment="sha256 hex of the DER public key"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_platform_keys")),
    )
    op.create_table(
        "request_nonces",
        sa.Column("app_id", sa.String(length=20), nullable=False),
        sa.Column("nonce", sa.String(length=64), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("app_id", "nonce", name=op.f("pk_request_nonces")),
    )
    with op.batch_alter_table("request_nonces", schema=None) as batch_op:
        batch_op.create_index("ix_request_nonces_seen_at", ["seen_at"], unique=False)

    op.create_table(
        "idempotency_records",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("app_id", sa.String(length=20), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column(
            "request_hash", sa.String(length=64), nullable=False, comment="sha256 of method, path, query and body"
        ),
        sa.Column("status_code", sa.SmallInteger(), nullable=False),
        sa.Column("response_body", sa.Text(), nullable=False, comment="the JSON first answered, byte for byte"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_idempotency_records")),
        sa.UniqueConstraint("app_id", "key", name=op.f("uq_idempotency_records_app_id")),
    )


def downgrade() -> None:
    op.drop_table("idempotency_records")
    with op.batch_alter_table("request_nonces", schema=None) as batch_op:
        batch_op.drop_index("ix_request_nonces_seen_at")

    op.drop_table("request_nonces")
    op.drop_table("platform_keys")
    op.drop_table("users")
    op.drop_table("merchants")
