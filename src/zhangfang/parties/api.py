"""The parties' HTTP routers: merchants for operators (admin key), the merchant API (signed), the platform key.

- ``admin_router`` (``/v1/admin/merchants``, admin bearer key): create, list,
  show, change status, rotate credentials. Operators see the full settlement
  account number; an HMAC merchant's secret is in the answer that created or
  rotated it, and in no other.
- ``router``: ``/v1/merchant/…`` for merchants, every request signed and every
  response signed (``zhangfang.api.merchant_auth``), and the public
  ``GET /v1/platform/public-key`` that verifies RSA2 response signatures.
  A merchant only ever reaches its own objects: another merchant's user is
  ``404 user_not_found``, exactly as an id that does not exist.

Each handler is one unit of work (``run_in_transaction``); services never
commit. Creating answers 201, and 200 when the key replays an earlier creation.
Fee rates travel as decimal strings (``"0.006"``), never as JSON numbers.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from fastapi import APIRouter, Body, Depends, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.engine import Connection, Engine

from zhangfang.api.deps import get_engine, make_admin_router
from zhangfang.api.merchant_auth import (
    IdempotentPost,
    authenticated_merchant,
    forget_merchant,
    idempotent_post,
    make_merchant_router,
    platform_key,
    signed_doc,
)
from zhangfang.api.responses import error_doc
from zhangfang.db.uow import run_in_transaction
from zhangfang.parties import service as parties
from zhangfang.parties.models import Merchant, MerchantRequest, MerchantResult, SettlementAccount, User

# --------------------------------------------------------------------------- shapes


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


SignType = Literal["RSA2", "HMAC-SHA256"]
MerchantStatus = Literal["active", "suspended", "closed"]


class SettlementAccountIn(_Request):
    bank_name: str = Field(examples=["招商银行上海分行"])
    account_number: str = Field(description="8 to 32 digits", examples=["6214830212345678"])
    account_name: str = Field(examples=["上海示例餐饮有限公司"])


class MerchantIn(_Request):
    key: str = Field(description="operator's key; creating again with the same key returns the same merchant")
    name: str = Field(description="1 to 100 characters", examples=["示例餐饮"])
    mcc: str = Field(description="merchant category code (行业类别), 4 digits", examples=["5812"])
    fee_rate: str = Field(
        description='fee rate as decimal text from 0 to 0.1 with at most 6 decimals ("0.006" is 0.6 %); '
        "never a JSON number",
        examples=["0.006"],
    )
    settlement_account: SettlementAccountIn
    sign_type: str = Field(description="RSA2 or HMAC-SHA256", json_schema_extra={"enum": ["RSA2", "HMAC-SHA256"]})
    public_key_pem: str | None = Field(
        default=None, description="RSA2 only: the merchant's RSA public key, PEM, at least 2048 bits"
    )


class SettlementAccountOut(BaseModel):
    bank_name: str
    account_name: str
    account_number_masked: str = Field(description="the last four digits only", examples=["****5678"])

    @classmethod
    def of(cls, account: SettlementAccount) -> SettlementAccountOut:
        return cls(
            bank_name=account.bank_name,
            account_name=account.account_name,
            account_number_masked=account.account_number_masked,
        )


class AdminSettlementAccountOut(SettlementAccountOut):
    account_number: str = Field(description="in full: operators only")

    @classmethod
    def of(cls, account: SettlementAccount) -> AdminSettlementAccountOut:
        return cls(**SettlementAccountOut.of(account).model_dump(), account_number=account.account_number)


class MerchantProfileOut(BaseModel):
    """A merchant as the merchant itself sees it: the settlement account number masked, no credentials."""

    id: str = Field(description="merchant id, mch_…")
    name: str
    mcc: str
    status: MerchantStatus
    fee_rate: str = Field(description="decimal text", examples=["0.006"])
    settlement_account: SettlementAccountOut
    app_id: str
    sign_type: SignType
    created_at: dt.datetime

    @classmethod
    def of(cls, merchant: Merchant) -> MerchantProfileOut:
        return cls(
            id=merchant.ref,
            name=merchant.name,
            mcc=merchant.mcc,
            status=merchant.status,  # type: ignore[arg-type]
            fee_rate=str(merchant.fee_rate),
            settlement_account=SettlementAccountOut.of(merchant.settlement_account),
            app_id=merchant.app_id,
            sign_type=merchant.sign_type,  # type: ignore[arg-type]
            created_at=merchant.created_at,
        )


class MerchantOut(BaseModel):
    """A merchant as an operator sees it. Never the HMAC secret."""

    id: str = Field(description="merchant id, mch_…")
    key: str
    name: str
    mcc: str
    status: MerchantStatus
    fee_rate: str = Field(description="decimal text", examples=["0.006"])
    settlement_account: AdminSettlementAccountOut
    app_id: str
    sign_type: SignType
    public_key_pem: str | None = Field(description="RSA2 merchants: their public key")
    created_at: dt.datetime
    status_changed_at: dt.datetime | None
    credentials_rotated_at: dt.datetime | None

    @classmethod
    def fields_of(cls, merchant: Merchant) -> dict[str, Any]:
        return {
            "id": merchant.ref,
            "key": merchant.key,
            "name": merchant.name,
            "mcc": merchant.mcc,
            "status": merchant.status,
            "fee_rate": str(merchant.fee_rate),
            "settlement_account": AdminSettlementAccountOut.of(merchant.settlement_account),
            "app_id": merchant.app_id,
            "sign_type": merchant.sign_type,
            "public_key_pem": merchant.public_key_pem,
            "created_at": merchant.created_at,
            "status_changed_at": merchant.status_changed_at,
            "credentials_rotated_at": merchant.credentials_rotated_at,
        }

    @classmethod
    def of(cls, merchant: Merchant) -> MerchantOut:
        return cls(**cls.fields_of(merchant))


class MerchantCredentialsOut(MerchantOut):
    hmac_secret: str | None = Field(
        description="HMAC-SHA256 merchants: the new secret, shown this once (64 hex characters; the HMAC key is "
        "this text's ASCII bytes). Null for RSA2 merchants and on a replayed creation."
    )

    @classmethod
    def of_result(cls, result: MerchantResult) -> MerchantCredentialsOut:
        return cls(**MerchantOut.fields_of(result.merchant), hmac_secret=result.hmac_secret)


class MerchantCreatedOut(MerchantCredentialsOut):
    replayed: bool = Field(description="true when the key had created this merchant before; no secret then")

    @classmethod
    def of_created(cls, result: MerchantResult) -> MerchantCreatedOut:
        return cls(**MerchantCredentialsOut.of_result(result).model_dump(), replayed=not result.created)


class MerchantPage(BaseModel):
    items: list[MerchantOut]
    next_cursor: str | None = Field(description="pass as cursor for the next page; null on the last page")


class MerchantStatusIn(_Request):
    status: str = Field(
        description="active, suspended or closed; allowed moves: active ⇄ suspended, either → closed",
        json_schema_extra={"enum": ["active", "suspended", "closed"]},
    )


class RotateIn(_Request):
    public_key_pem: str | None = Field(
        default=None, description="RSA2 merchants: the new public key (PEM). HMAC merchants: omit it"
    )


class UserIn(_Request):
    external_ref: str | None = Field(
        default=None, description="your id for the payer, 1 to 64 printable ASCII characters", examples=["u-1001"]
    )
    phone_hash: str | None = Field(
        default=None, description="lower-case hex SHA-256 of the payer's E.164 phone number (+8613…)"
    )


class UserOut(BaseModel):
    id: str = Field(description="user id, usr_…")
    external_ref: str | None
    phone_hash: str | None
    created_at: dt.datetime

    @classmethod
    def fields_of(cls, user: User) -> dict[str, Any]:
        return {
            "id": user.ref,
            "external_ref": user.external_ref,
            "phone_hash": user.phone_hash,
            "created_at": user.created_at,
        }

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls(**cls.fields_of(user))


class UserCreatedOut(UserOut):
    replayed: bool = Field(description="true when you already had a user with this identity; nothing was written")


class PlatformKeyOut(BaseModel):
    algorithm: Literal["RSA2"] = Field(description="RSASSA-PKCS1-v1_5 with SHA-256")
    public_key_pem: str = Field(description="SubjectPublicKeyInfo PEM; pin it in your integration")
    fingerprint_sha256: str = Field(description="hex SHA-256 of the DER public key, to compare out of band")


# --------------------------------------------------------------------------- helpers


# --------------------------------------------------------------------------- merchant API (signed)

merchant_router = make_merchant_router(prefix="/v1/merchant", tags=["merchant"])


@merchant_router.get(
    "/me",
    response_model=MerchantProfileOut,
    summary="The authenticated merchant's profile (settlement account number masked)",
    responses={200: signed_doc(MerchantProfileOut, "your profile")},
)
def me(merchant: Merchant = Depends(authenticated_merchant)) -> MerchantProfileOut:
    return MerchantProfileOut.of(merchant)


@merchant_router.post(
    "/users",
    response_model=UserCreatedOut,
    status_code=status.HTTP_201_CREATED,
    summary="Create a payer of yours (idempotent on its identity, and on Idempotency-Key)",
    responses={
        201: signed_doc(UserCreatedOut, "created", replayable=True),
        200: signed_doc(UserCreatedOut, "you already had a user with this identity", replayable=True),
        409: error_doc("idempotency_key_conflict, user_identity_conflict"),
        422: error_doc(
            "request_invalid (Idempotency-Key missing, …), idempotency_key_invalid, external_ref_invalid, "
            "phone_hash_invalid, user_identity_missing"
        ),
    },
)
def create_user(
    body: UserIn,
    merchant: Merchant = Depends(authenticated_merchant),
    idempotency: IdempotentPost = Depends(idempotent_post),
    engine: Engine = Depends(get_engine),
) -> Response:
    def work(conn: Connection) -> tuple[int, BaseModel]:
        user, created = parties.create_user(
            conn, merchant_id=merchant.id, external_ref=body.external_ref, phone_hash=body.phone_hash
        )
        result = UserCreatedOut(**UserOut.fields_of(user), replayed=not created)
        return (status.HTTP_201_CREATED if created else status.HTTP_200_OK), result

    return idempotency.respond(engine, work)


@merchant_router.get(
    "/users/{user_id}",
    response_model=UserOut,
    summary="One of your payers",
    responses={
        200: signed_doc(UserOut, "the user"),
        404: error_doc("user_not_found (also for another merchant's user)"),
    },
)
def get_user(
    user_id: str, merchant: Merchant = Depends(authenticated_merchant), engine: Engine = Depends(get_engine)
) -> UserOut:
    user = run_in_transaction(
        engine, lambda conn: parties.get_user(conn, merchant_id=merchant.id, ref=user_id), readonly=True
    )
    return UserOut.of(user)


platform_router = APIRouter(prefix="/v1/platform", tags=["platform"])


@platform_router.get(
    "/public-key",
    response_model=PlatformKeyOut,
    summary="The platform's RSA public key, which signs responses to RSA2 merchants",
    responses={500: error_doc("internal_error")},
)
async def get_platform_public_key(request: Request) -> PlatformKeyOut:
    key = await platform_key(request)
    return PlatformKeyOut(algorithm="RSA2", public_key_pem=key.public_key_pem, fingerprint_sha256=key.fingerprint)


# --------------------------------------------------------------------------- admin: merchants

admin_router = make_admin_router(prefix="/v1/admin/merchants", tags=["admin: merchants"])


@admin_router.post(
    "",
    response_model=MerchantCreatedOut,
    status_code=status.HTTP_201_CREATED,
    summary="Create a merchant (idempotent on key); an HMAC merchant's secret is shown in this answer only",
    responses={
        200: {"model": MerchantCreatedOut, "description": "the key replayed an earlier creation; no secret"},
        409: error_doc("idempotency_key_conflict"),
        422: error_doc(
            "request_invalid, idempotency_key_invalid, merchant_name_invalid, mcc_invalid, fee_rate_invalid, "
            "fee_rate_out_of_range, settlement_account_invalid, sign_type_invalid, public_key_invalid, "
            "public_key_too_short"
        ),
    },
)
def create_merchant(body: MerchantIn, response: Response, engine: Engine = Depends(get_engine)) -> MerchantCreatedOut:
    request = MerchantRequest(
        key=body.key,
        name=body.name,
        mcc=body.mcc,
        fee_rate=body.fee_rate,
        settlement_account=SettlementAccount(**body.settlement_account.model_dump()),
        sign_type=body.sign_type,
        public_key_pem=body.public_key_pem,
    )
    result = run_in_transaction(engine, lambda conn: parties.create_merchant(conn, request=request))
    response.status_code = status.HTTP_201_CREATED if result.created else status.HTTP_200_OK
    return MerchantCreatedOut.of_created(result)


@admin_router.get("", response_model=MerchantPage, summary="List merchants in creation order")
def list_merchants(
    merchant_status: MerchantStatus | None = Query(default=None, alias="status"),
    cursor: str | None = Query(default=None, description="next_cursor of the previous page"),
    limit: int = Query(default=50, description="1 to 500"),
    engine: Engine = Depends(get_engine),
) -> MerchantPage:
    page = run_in_transaction(
        engine,
        lambda conn: parties.list_merchants(conn, status=merchant_status, cursor=cursor, limit=limit),
        readonly=True,
    )
    return MerchantPage(items=[MerchantOut.of(m) for m in page.items], next_cursor=page.next_cursor)


@admin_router.get(
    "/{merchant_id}",
    response_model=MerchantOut,
    summary="A merchant, with its full settlement account",
    responses={404: error_doc("merchant_not_found")},
)
def get_merchant(merchant_id: str, engine: Engine = Depends(get_engine)) -> MerchantOut:
    merchant = run_in_transaction(engine, lambda conn: parties.get_merchant(conn, ref=merchant_id), readonly=True)
    return MerchantOut.of(merchant)


@admin_router.post(
    "/{merchant_id}/status",
    response_model=MerchantOut,
    summary="Move a merchant along active ⇄ suspended → closed (asking for its current status changes nothing)",
    responses={
        404: error_doc("merchant_not_found"),
        422: error_doc("request_invalid, merchant_status_invalid, merchant_transition_invalid"),
    },
)
def change_status(
    merchant_id: str, body: MerchantStatusIn, request: Request, engine: Engine = Depends(get_engine)
) -> MerchantOut:
    merchant = run_in_transaction(
        engine, lambda conn: parties.change_merchant_status(conn, ref=merchant_id, status=body.status)
    )
    forget_merchant(request, merchant.app_id)
    return MerchantOut.of(merchant)


@admin_router.post(
    "/{merchant_id}/rotate-secret",
    response_model=MerchantCredentialsOut,
    summary="Replace a merchant's credentials: a new HMAC secret (shown once), or an RSA2 merchant's new public key",
    description="The old secret or key stops working at once. Every call to an HMAC merchant makes a new secret.",
    responses={
        404: error_doc("merchant_not_found"),
        422: error_doc("request_invalid, merchant_closed, public_key_invalid, public_key_too_short"),
    },
)
def rotate_secret(
    merchant_id: str,
    request: Request,
    body: RotateIn | None = Body(default=None),
    engine: Engine = Depends(get_engine),
) -> MerchantCredentialsOut:
    public_key_pem = body.public_key_pem if body is not None else None
    result = run_in_transaction(
        engine, lambda conn: parties.rotate_credentials(conn, ref=merchant_id, public_key_pem=public_key_pem)
    )
    forget_merchant(request, result.merchant.app_id)
    return MerchantCredentialsOut.of_result(result)


# --------------------------------------------------------------------------- what the app includes

router = APIRouter()
router.include_router(merchant_router)
router.include_router(platform_router)
