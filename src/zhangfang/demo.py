"""Demo data: a small payment company's ledger to explore with the CLI and the API.

``zhangfang demo load`` (or ``load_demo(engine)``) writes, in CNY unless said:

- ``bank:icbc:custody``: the reserve-fund (备付金) custody account at the bank (debit-normal)
- ``channel:alipay:clearing``, ``channel:wechatpay:clearing``: what each channel owes us (debit-normal, hot:
  the accounts real payments through those channels book to)
- ``platform:fee_income``: fee income, a hot account (热点账户)
- two merchants' pending-settlement accounts (``merchant:m001|m002:pending_settlement``)
- three user wallets (alice, bob, carol) that cannot be overdrawn, topped up through the channels
- Alipay settling its clearing balance into the custody account
- four payments from wallets to merchants, each with a 0.6% fee to the hot fee account
- a refund: carol's payment reversed
- a hold (冻结): bob's pre-authorization of 80.00 for m001, still pending
- a posted hold: alice's pre-authorization of 60.00 for m002, captured at 45.00 (15.00 released)
- a USD pair: custody at the Bank of China and dave's USD wallet, with a 500.00 USD top-up
- two loan products (贷款产品, ``lending.products``): ``pos-90d``, a POS loan over 3 months at 12 % to 18 %
  a year, and ``term-12m``, a term loan over 6 to 12 months at 8 % to 15 % (refs ``loan_product_…``: codes)

Guarantees
- Idempotent: every account and every entry has a fixed key (``demo:topup:alice``), every
  product a fixed code, so a second load replays them all and changes nothing.
- All or nothing: the whole demo is written in one unit of work.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from sqlalchemy.engine import Connection, Engine

from zhangfang import money
from zhangfang.db.uow import run_in_transaction
from zhangfang.ledger import service as ledger
from zhangfang.ledger.models import AccountRequest, EntryRequest, Leg
from zhangfang.lending import products
from zhangfang.lending.models import LoanProductRequest
from zhangfang.payments import postings

FEE_RATE = Decimal("0.006")

ACCOUNTS: dict[str, AccountRequest] = {
    "bank_custody": AccountRequest(
        key="bank:icbc:custody",
        ledger_code="bank_custody",
        currency="CNY",
        normal_side="debit",
        owner_ref="platform",
        metadata={"bank": "ICBC", "purpose": "reserve funds (备付金) custody"},
    ),
    # The same accounts payments book to, so the demo's history and real payments share them.
    "alipay_clearing": postings.channel_clearing_request("alipay", "CNY"),
    "wechatpay_clearing": postings.channel_clearing_request("wechatpay", "CNY"),
    "fee_income": postings.fee_income_request("CNY"),
    "merchant_m001": AccountRequest(
        key="merchant:m001:pending_settlement",
        ledger_code="merchant_pending",
        currency="CNY",
        owner_ref="merchant:m001",
        metadata={"name": "西湖茶馆 West Lake Teahouse"},
    ),
    "merchant_m002": AccountRequest(
        key="merchant:m002:pending_settlement",
        ledger_code="merchant_pending",
        currency="CNY",
        owner_ref="merchant:m002",
        metadata={"name": "书香书店 Bookworm Books"},
    ),
    **{
        f"wallet_{user}": AccountRequest(
            key=f"user:{user}:wallet",
            ledger_code="user_wallet",
            currency="CNY",
            owner_ref=f"user:{user}",
            debits_must_not_exceed_credits=True,
        )
        for user in ("alice", "bob", "carol")
    },
    "usd_bank_custody": AccountRequest(
        key="bank:boc:custody:usd",
        ledger_code="bank_custody",
        currency="USD",
        normal_side="debit",
        owner_ref="platform",
        metadata={"bank": "Bank of China", "purpose": "USD custody"},
    ),
    "usd_wallet_dave": AccountRequest(
        key="user:dave:wallet:usd",
        ledger_code="user_wallet",
        currency="USD",
        owner_ref="user:dave",
        debits_must_not_exceed_credits=True,
    ),
}

# (name, payer wallet, merchant, amount in major units)
PAYMENTS: tuple[tuple[str, str, str, str], ...] = (
    ("payment_alice_001", "wallet_alice", "merchant_m001", "100.00"),
    ("payment_bob_001", "wallet_bob", "merchant_m002", "250.00"),
    ("payment_carol_001", "wallet_carol", "merchant_m001", "50.00"),
    ("payment_alice_002", "wallet_alice", "merchant_m002", "30.00"),
)

# The account whose curl command ``demo load`` prints.
SHOWCASE_ACCOUNT = "wallet_alice"

# Loan products operators lend on (amounts in fen).
LOAN_PRODUCTS: tuple[LoanProductRequest, ...] = (
    LoanProductRequest(
        code="pos-90d",
        name="POS贷 90 天",
        kind="pos",
        annual_rate_min=Decimal("0.12"),
        annual_rate_max=Decimal("0.18"),
        periods_min=3,
        periods_max=3,
        principal_min=1_000_00,
        principal_max=200_000_00,
        settlement_share=Decimal("0.2"),
        credit_ratio=Decimal("0.5"),
        credit_lookback_days=90,
        credit_step=100_00,
        credit_maximum=500_000_00,
    ),
    LoanProductRequest(
        code="term-12m",
        name="经营贷 12 个月",
        kind="term",
        annual_rate_min=Decimal("0.08"),
        annual_rate_max=Decimal("0.15"),
        periods_min=6,
        periods_max=12,
        principal_min=10_000_00,
        principal_max=1_000_000_00,
        settlement_share=None,
    ),
)


def load_demo(engine: Engine) -> dict[str, str]:
    """Write the demo (or find it written); returns the refs by name: accounts, entries and holds."""
    return run_in_transaction(engine, _load)


def account_names() -> Sequence[str]:
    """The names ``load_demo`` gives its accounts, in the order they are opened."""
    return tuple(ACCOUNTS)


def _load(conn: Connection) -> dict[str, str]:
    refs: dict[str, str] = {}
    for name, request in ACCOUNTS.items():
        account, _created = ledger.open_account(conn, request=request)
        refs[name] = account.ref

    def post(name: str, key: str, code: str, legs: list[tuple[str, str, str]], currency: str = "CNY") -> str:
        """``legs``: (account name, side, amount in major units)."""
        request = EntryRequest(
            idempotency_key=key,
            business_code=code,
            legs=tuple(
                Leg(
                    account=refs[account],
                    side=side,
                    amount=money.parse_amount(amount, currency),
                    currency=currency,
                )
                for account, side, amount in legs
            ),
        )
        refs[name] = ledger.post_entry(conn, request=request).entry.ref
        return refs[name]

    topups = (("alice", "alipay", "1000.00"), ("bob", "wechatpay", "500.00"), ("carol", "alipay", "300.00"))
    for user, channel, amount in topups:
        post(
            f"topup_{user}",
            f"demo:topup:{user}",
            "wallet_topup",
            [(f"{channel}_clearing", "debit", amount), (f"wallet_{user}", "credit", amount)],
        )
    post(
        "channel_settlement_alipay",
        "demo:channel_settlement:alipay",
        "channel_settlement",
        [("bank_custody", "debit", "1300.00"), ("alipay_clearing", "credit", "1300.00")],
    )
    for name, wallet, merchant, amount in PAYMENTS:
        _post_payment(conn, refs, name, wallet, merchant, money.parse_amount(amount, "CNY"))

    refund = ledger.reverse_entry(
        conn,
        ref=refs["payment_carol_001"],
        idempotency_key="demo:refund:carol:001",
        metadata={"reason": "goods returned"},
    )
    refs["refund_carol_001"] = refund.entry.ref

    pending = ledger.create_hold(
        conn,
        idempotency_key="demo:hold:bob:preauth",
        debit_account=refs["wallet_bob"],
        credit_account=refs["merchant_m001"],
        amount=money.parse_amount("80.00", "CNY"),
        currency="CNY",
        business_code="preauth",
    )
    refs["hold_bob_preauth"] = pending.hold.ref

    captured = ledger.create_hold(
        conn,
        idempotency_key="demo:hold:alice:preauth",
        debit_account=refs["wallet_alice"],
        credit_account=refs["merchant_m002"],
        amount=money.parse_amount("60.00", "CNY"),
        currency="CNY",
        business_code="preauth",
    )
    refs["hold_alice_preauth"] = captured.hold.ref
    posted = ledger.post_hold(
        conn,
        ref=captured.hold.ref,
        idempotency_key="demo:hold-post:alice:preauth",
        amount=money.parse_amount("45.00", "CNY"),
    )
    refs["hold_post_alice_preauth"] = posted.entry.ref

    post(
        "topup_dave_usd",
        "demo:topup:dave:usd",
        "wallet_topup",
        [("usd_bank_custody", "debit", "500.00"), ("usd_wallet_dave", "credit", "500.00")],
        currency="USD",
    )
    for request in LOAN_PRODUCTS:
        product, _created = products.create_product(conn, request=request)
        refs[f"loan_product_{product.code.replace('-', '_')}"] = product.code
    return refs


def _post_payment(conn: Connection, refs: dict[str, str], name: str, wallet: str, merchant: str, amount: int) -> None:
    """The payer's wallet pays the merchant; the platform keeps ``FEE_RATE`` of it as fee income."""
    net, fee = money.allocate(amount, [1 - FEE_RATE, FEE_RATE])
    legs = [
        Leg(account=refs[wallet], side="debit", amount=amount, currency="CNY"),
        Leg(account=refs[merchant], side="credit", amount=net, currency="CNY"),
        Leg(account=refs["fee_income"], side="credit", amount=fee, currency="CNY"),
    ]
    request = EntryRequest(
        idempotency_key=f"demo:{name.replace('_', ':')}",
        business_code="payment",
        legs=tuple(legs),
        metadata={"fee_rate": str(FEE_RATE)},
    )
    refs[name] = ledger.post_entry(conn, request=request).entry.ref
