"""A small payment company's ledger day for accounting tests, and shortcuts to book and read it."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy.engine import Engine

from zhangfang.accounting import chart, reports, service
from zhangfang.accounting import sync as accounting_sync
from zhangfang.accounting.models import ManualVoucherRequest, VoucherLine
from zhangfang.db.uow import run_in_transaction
from zhangfang.ledger import service as ledger
from zhangfang.ledger.models import AccountRequest, EntryRequest, Leg
from zhangfang.payments import postings


@dataclass
class Books:
    """The refs of the accounts a scenario opened, by name."""

    engine: Engine
    refs: dict[str, str]

    def post(self, key: str, business_code: str, *legs: tuple[str, str, int], currency: str = "CNY") -> str:
        request = EntryRequest(
            idempotency_key=key,
            business_code=business_code,
            legs=tuple(Leg(self.refs[name], side, amount, currency) for name, side, amount in legs),
        )
        return run_in_transaction(self.engine, lambda conn: ledger.post_entry(conn, request=request)).entry.ref

    def pay(self, key: str, merchant: str, amount: int, fee: int, channel: str = "alipay") -> str:
        """A payment booked as payments books it: Dr clearing, Cr merchant net, Cr fee income."""
        return self.post(
            key,
            "payment",
            (f"{channel}_clearing", "debit", amount),
            (merchant, "credit", amount - fee),
            ("fee_income", "credit", fee),
        )

    def open_date(self) -> dt.date:
        return run_in_transaction(self.engine, ledger.open_date)

    def close_day(self) -> dt.date:
        day = self.open_date()
        ledger.close_day(self.engine, accounting_date=day, wait_seconds_max=10)
        return day

    def sync(self, **options) -> accounting_sync.SyncResult:
        return accounting_sync.sync(self.engine, **options)

    def trial_balance(self, **options) -> reports.TrialBalance:
        return run_in_transaction(self.engine, lambda conn: reports.trial_balance(conn, **options), readonly=True)

    def check(self, day: dt.date) -> reports.CheckResult:
        return run_in_transaction(self.engine, lambda conn: reports.check_ledger(conn, date=day), readonly=True)


def open_books(engine: Engine) -> Books:
    """Channel clearing (hot), two merchants, fee income (hot), custody at the bank, a user wallet; the chart."""
    install_chart(engine)
    requests = {
        "alipay_clearing": postings.channel_clearing_request("alipay", "CNY"),
        "wechatpay_clearing": postings.channel_clearing_request("wechatpay", "CNY"),
        "fee_income": postings.fee_income_request("CNY"),
        "m001": postings.merchant_pending_request("mch_m001", "CNY"),
        "m002": postings.merchant_pending_request("mch_m002", "CNY"),
        "custody": AccountRequest(
            key="bank:icbc:custody",
            ledger_code="bank_custody",
            currency="CNY",
            normal_side="debit",
            owner_ref="platform",
        ),
        "alice": AccountRequest(
            key="user:alice:wallet",
            ledger_code="user_wallet",
            currency="CNY",
            owner_ref="user:alice",
            debits_must_not_exceed_credits=True,
        ),
    }

    def open_all(conn) -> dict[str, str]:
        return {name: ledger.open_account(conn, request=request)[0].ref for name, request in requests.items()}

    return Books(engine, run_in_transaction(engine, open_all))


def install_chart(engine: Engine) -> None:
    """The configured chart and rules in the database, as the server and the CLI install them."""
    run_in_transaction(engine, chart.install_configured)


def manual_voucher(
    key: str,
    day: dt.date,
    *lines: tuple[str, int, int],
    maker: str = "li.kuaiji",
    summary: str = "调整 adjustment",
    currency: str = "CNY",
) -> ManualVoucherRequest:
    """``lines``: (subject, debit, credit)."""
    return ManualVoucherRequest(
        idempotency_key=key,
        voucher_date=day,
        currency=currency,
        summary=summary,
        lines=tuple(VoucherLine(subject, debit=debit, credit=credit) for subject, debit, credit in lines),
        maker=maker,
    )


def submit(engine: Engine, request: ManualVoucherRequest):
    return run_in_transaction(engine, lambda conn: service.submit_manual_voucher(conn, request=request))[0]


def approve(engine: Engine, ref: str, checker: str = "wang.zhuguan"):
    return run_in_transaction(engine, lambda conn: service.approve_voucher(conn, ref=ref, checker=checker))
