"""The beancount export (复核导出) checked by beancount itself: bean-check passes, and beancount's balances are ours.

A seeded scenario of a few thousand ledger entries over three ledger days (payments by card and
by wallet, refunds, top-ups, channel settlements, reversals; CNY and USD) is closed day by day,
booked into vouchers (two days summarized, one day a voucher per entry), plus a manual voucher a
second person approves. The export must pass ``bean-check`` with no output at all — every
transaction balances and every balance assertion (our trial balance) holds — and the balances
beancount computes from the file must equal, exactly, our trial balance and the scenario's own
running totals. A tampered file must fail ``bean-check``: the check can fail.
"""

from __future__ import annotations

import datetime as dt
import io
import random
import re
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from beancount import loader
from beancount.core import data
from sqlalchemy.engine import Engine

from zhangfang import money
from zhangfang.accounting import reports, service
from zhangfang.accounting import sync as accounting_sync
from zhangfang.accounting.beancount import account_name, export_beancount, quote
from zhangfang.accounting.models import ManualVoucherRequest, VoucherLine
from zhangfang.accounting.tables import voucher_lines, vouchers
from zhangfang.db.uow import run_in_transaction
from zhangfang.ledger import service as ledger
from zhangfang.ledger.models import AccountRequest, EntryRequest, EntryResult, Leg
from zhangfang.payments import postings

BEAN_CHECK = Path(sys.executable).parent / "bean-check"
FEE_RATE = Decimal("0.006")
# The subjects the default rules keep these ledger codes under (data/rules.toml).
SUBJECT_OF = {
    "channel_clearing": "300101",
    "merchant_pending": "224101",
    "fee_income": "602101",
    "user_wallet": "224102",
    "bank_custody": "100202",
}
TRICKY_SUMMARY = '对账差错调整 "渠道少付" \\ 手工凭证\n第二行'


def bean_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BEAN_CHECK), str(path)], capture_output=True, text=True, timeout=120)


@dataclass
class Scenario:
    """A seeded company's ledger days, and the scenario's own running totals per ledger code (debit positive)."""

    engine: Engine
    rng: random.Random
    refs: dict[str, str] = field(default_factory=dict)  # account key -> ref
    codes: dict[str, tuple[str, str]] = field(default_factory=dict)  # account key -> (ledger code, currency)
    net: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # account key -> debit - credit
    entries: int = 0
    reversals: int = 0
    days: list[dt.date] = field(default_factory=list)

    def open(self, request: AccountRequest) -> str:
        account, _ = run_in_transaction(self.engine, lambda conn: ledger.open_account(conn, request=request))
        self.refs[request.key] = account.ref
        self.codes[request.key] = (request.ledger_code, request.currency)
        return request.key

    def credit_balance(self, key: str) -> int:
        return -self.net[key]

    def request(self, key: str, business_code: str, currency: str, *legs: tuple[str, str, int]) -> EntryRequest:
        for account, side, amount in legs:
            self.net[account] += amount if side == "debit" else -amount
        return EntryRequest(
            idempotency_key=key,
            business_code=business_code,
            legs=tuple(Leg(self.refs[account], side, amount, currency) for account, side, amount in legs if amount),
        )


def build_scenario(engine: Engine, *, seed: int, days: int, entries_per_day: int) -> Scenario:
    s = Scenario(engine, random.Random(seed))
    rng = s.rng
    clearing = {
        ("alipay", "CNY"): s.open(postings.channel_clearing_request("alipay", "CNY")),
        ("wechatpay", "CNY"): s.open(postings.channel_clearing_request("wechatpay", "CNY")),
        ("alipay", "USD"): s.open(postings.channel_clearing_request("alipay", "USD")),
    }
    merchants = {
        "CNY": [s.open(postings.merchant_pending_request(f"m{n:03d}", "CNY")) for n in range(1, 9)],
        "USD": [s.open(postings.merchant_pending_request(f"m{n:03d}", "USD")) for n in range(1, 3)],
    }
    fee = {currency: s.open(postings.fee_income_request(currency)) for currency in ("CNY", "USD")}
    wallets = [
        s.open(
            AccountRequest(
                key=f"user:{user}:wallet",
                ledger_code="user_wallet",
                currency="CNY",
                owner_ref=f"user:{user}",
                debits_must_not_exceed_credits=True,
            )
        )
        for user in ("alice", "bob", "carol", "dave")
    ]
    custody = {
        "CNY": s.open(
            AccountRequest(
                key="bank:icbc:custody",
                ledger_code="bank_custody",
                currency="CNY",
                normal_side="debit",
                owner_ref="platform",
            )
        ),
        "USD": s.open(
            AccountRequest(
                key="bank:boc:custody:usd",
                ledger_code="bank_custody",
                currency="USD",
                normal_side="debit",
                owner_ref="platform",
            )
        ),
    }

    def payment(key: str) -> EntryRequest:
        currency = "USD" if rng.random() < 0.08 else "CNY"
        channel = "alipay" if currency == "USD" else rng.choice(("alipay", "wechatpay"))
        amount = rng.randint(100, 500_000 if currency == "CNY" else 50_000)
        fee_amount = postings.fee_for(amount, FEE_RATE)
        return s.request(
            key,
            "payment",
            currency,
            (clearing[(channel, currency)], "debit", amount),
            (rng.choice(merchants[currency]), "credit", amount - fee_amount),
            (fee[currency], "credit", fee_amount),
        )

    def wallet_payment(key: str) -> EntryRequest | None:
        user = rng.choice(wallets)
        if s.credit_balance(user) < 100:
            return None
        amount = rng.randint(100, s.credit_balance(user))
        fee_amount = postings.fee_for(amount, FEE_RATE)
        return s.request(
            key,
            "payment",
            "CNY",
            (user, "debit", amount),
            (rng.choice(merchants["CNY"]), "credit", amount - fee_amount),
            (fee["CNY"], "credit", fee_amount),
        )

    def topup(key: str) -> EntryRequest:
        channel = rng.choice(("alipay", "wechatpay"))
        amount = rng.randint(1_000, 200_000)
        return s.request(
            key,
            "wallet_topup",
            "CNY",
            (clearing[(channel, "CNY")], "debit", amount),
            (rng.choice(wallets), "credit", amount),
        )

    def refund(key: str) -> EntryRequest | None:
        currency = "USD" if rng.random() < 0.08 else "CNY"
        merchant = rng.choice(merchants[currency])
        if s.credit_balance(merchant) < 1:
            return None
        amount = rng.randint(1, min(s.credit_balance(merchant), 100_000))
        channel = "alipay" if currency == "USD" else rng.choice(("alipay", "wechatpay"))
        return s.request(
            key, "refund", currency, (merchant, "debit", amount), (clearing[(channel, currency)], "credit", amount)
        )

    def settlement(key: str) -> EntryRequest | None:
        (_channel, currency), account = rng.choice(sorted(clearing.items()))
        if s.net[account] < 1:
            return None
        amount = rng.randint(1, s.net[account])
        return s.request(
            key, "channel_settlement", currency, (custody[currency], "debit", amount), (account, "credit", amount)
        )

    kinds = [(payment, 50), (wallet_payment, 10), (topup, 12), (refund, 15), (settlement, 8)]
    makers = [maker for maker, weight in kinds for _ in range(weight)]
    for day_index in range(days):
        day = run_in_transaction(engine, ledger.open_date)
        made = 0
        while made < entries_per_day:
            batch: list[EntryRequest] = []
            while len(batch) < 250 and made + len(batch) < entries_per_day:
                request = rng.choice(makers)(f"d{day_index}-{made + len(batch)}")
                if request is not None:
                    batch.append(request)

            def post(conn, batch=batch) -> int:
                results = ledger.post_entries(conn, requests=batch, atomic=True)
                reversed_count = 0
                # Reverse a few: any settlement or refund, a payment if its merchant can give the money back.
                for request, result in zip(batch, results, strict=True):
                    assert isinstance(result, EntryResult)
                    if rng.random() >= 0.03:
                        continue
                    legs = [(_key_of(s, leg.account), leg.side, leg.amount) for leg in request.legs]
                    if any(
                        side == "credit"
                        and s.codes[key][0] in ("merchant_pending", "user_wallet")
                        and s.credit_balance(key) < amount
                        for key, side, amount in legs
                    ):
                        continue
                    ledger.reverse_entry(conn, ref=result.entry.ref)
                    for key, side, amount in legs:
                        s.net[key] += -amount if side == "debit" else amount
                    reversed_count += 1
                return reversed_count

            s.reversals += run_in_transaction(engine, post, attempts_max=1)
            made += len(batch)
        s.entries += made
        ledger.close_day(engine, accounting_date=day, wait_seconds_max=10)
        s.days.append(day)
    return s


def _key_of(s: Scenario, ref: str) -> str:
    for key, account_ref in s.refs.items():
        if account_ref == ref:
            return key
    raise KeyError(ref)


def book(s: Scenario) -> str:
    """Sync the days (all but the last summarized, the last a voucher per entry) and add manual vouchers."""
    accounting_sync.sync(s.engine, through=s.days[-2], mode="summary")
    accounting_sync.sync(s.engine, mode="entry")
    lines = (
        VoucherLine("671101", debit=1_234),
        VoucherLine("300101", credit=1_234, dimension="channel", aux="channel:alipay"),
    )

    def manual(key: str, maker: str = "alice") -> str:
        request = ManualVoucherRequest(key, s.days[-1], "CNY", TRICKY_SUMMARY, lines, maker)
        voucher, _ = run_in_transaction(s.engine, lambda conn: service.submit_manual_voucher(conn, request=request))
        return voucher.ref

    approved = manual("adj-1")
    run_in_transaction(s.engine, lambda conn: service.approve_voucher(conn, ref=approved, checker="bob"))
    manual("adj-pending")  # awaits approval: not in the books, not in the export
    rejected = manual("adj-rejected")
    run_in_transaction(
        s.engine, lambda conn: service.reject_voucher(conn, ref=rejected, checker="bob", reason="wrong amount")
    )
    return approved


def _count_posted(conn) -> tuple[int, int]:
    posted = sa.select(vouchers.c.id).where(vouchers.c.state == "posted")
    return (
        conn.execute(sa.select(sa.func.count()).select_from(posted.subquery())).scalar_one(),
        conn.execute(
            sa.select(sa.func.count()).select_from(voucher_lines).where(voucher_lines.c.voucher_id.in_(posted))
        ).scalar_one(),
    )


def export(engine: Engine, path: Path, *, through: dt.date | None = None):
    with path.open("w", encoding="utf-8") as out:
        return run_in_transaction(engine, lambda conn: export_beancount(conn, out, through=through), readonly=True)


def beancount_balances(path: Path) -> tuple[list[data.Directive], dict[tuple[str, str], Decimal]]:
    """The file as beancount reads it, and its balances summed from the transactions' postings."""
    entries, errors, _ = loader.load_file(str(path))
    assert errors == []
    balances: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for entry in entries:
        if isinstance(entry, data.Transaction):
            for posting in entry.postings:
                balances[(posting.account, posting.units.currency)] += posting.units.number
    return entries, balances


def leaf_closing(engine: Engine, day: dt.date) -> tuple[dict[tuple[str, str], Decimal], dict[str, str]]:
    """Our trial balance's leaf closing balances at ``day``, by beancount account, debit positive."""

    def read(conn):
        chart = reports.load_subjects(conn)
        trial = reports.trial_balance(conn, date=day)
        assert trial.balanced
        return {
            # int(): PostgreSQL's SUM of a BIGINT is NUMERIC, so the trial balance may hold whole Decimals.
            (account_name(chart, row.subject.code), row.currency): money.to_decimal(
                int(row.closing_debit - row.closing_credit), row.currency
            )
            for row in trial.rows
            if row.subject.leaf
        }, {code: account_name(chart, code) for code in chart}

    return run_in_transaction(engine, read, readonly=True)


def test_bean_check_recomputes_our_trial_balance_from_thousands_of_entries(engine, tmp_path):
    started = time.perf_counter()
    s = build_scenario(engine, seed=20260501, days=3, entries_per_day=1_000)
    built = time.perf_counter()
    approved = book(s)
    booked = time.perf_counter()
    path = tmp_path / "books.beancount"
    summary = export(engine, path)
    exported = time.perf_counter()
    checked = bean_check(path)
    assert (checked.returncode, checked.stdout, checked.stderr) == (0, "", "")
    bean_checked = time.perf_counter()

    assert s.entries == 3_000 and s.reversals > 20
    entries, balances = beancount_balances(path)
    transactions = [entry for entry in entries if isinstance(entry, data.Transaction)]
    assertions = [entry for entry in entries if isinstance(entry, data.Balance)]
    opens = {entry.account: entry for entry in entries if isinstance(entry, data.Open)}
    posted, lines = run_in_transaction(engine, _count_posted, readonly=True)
    assert summary.vouchers == len(transactions) == posted > 1_000  # the last day: a voucher per entry
    assert summary.postings == sum(len(t.postings) for t in transactions) == lines
    assert summary.accounts == len(opens) and summary.assertions == len(assertions)
    assert (summary.first_date, summary.last_date) == (s.days[0], s.days[-1])
    assert {entry.date for entry in assertions} == {s.days[-1] + dt.timedelta(days=1)}

    # Beancount's balances are our trial balance's leaf closing balances, exactly, and nothing else.
    ours, accounts = leaf_closing(engine, s.days[-1])
    assert dict(balances) == ours
    assert all(isinstance(value, Decimal) for value in balances.values())
    # … and the scenario's own running totals, per subject: an oracle independent of the books.
    expected: dict[tuple[str, str], int] = defaultdict(int)
    for key, net in s.net.items():
        ledger_code, currency = s.codes[key]
        expected[(accounts[SUBJECT_OF[ledger_code]], currency)] += net
    expected[(accounts["671101"], "CNY")] += 1_234  # the approved manual voucher
    expected[(accounts["300101"], "CNY")] -= 1_234
    assert {key: money.to_decimal(value, key[1]) for key, value in expected.items()} == dict(balances)

    # The shape of the file: accounts by code under their type's root, names and aux as metadata.
    assert set(opens) == {
        "Assets:1002:100202",
        "Assets:3001:300101",
        "Liabilities:2241:224101",
        "Liabilities:2241:224102",
        "Income:6021:602101",
        "Expenses:6711:671101",
    }
    clearing = opens["Assets:3001:300101"]
    assert (clearing.meta["name_zh"], clearing.meta["name_en"]) == ("渠道清算款", "Channel clearing")
    assert clearing.currencies == ["CNY", "USD"]
    merchant_auxes = {
        posting.meta["aux"]
        for t in transactions
        for posting in t.postings
        if posting.account == "Liabilities:2241:224101"
    }
    assert merchant_auxes == {f"merchant:m{n:03d}" for n in range(1, 9)}
    custody_auxes = {
        posting.meta.get("aux") for t in transactions for posting in t.postings if "100202" in posting.account
    }
    assert custody_auxes == {"bank:icbc:custody", "bank:boc:custody:usd"}
    by_ref = {t.meta["ref"]: t for t in transactions}
    manual = by_ref[approved]
    assert manual.narration == TRICKY_SUMMARY
    assert re.fullmatch(r"记-\d{4}-\d{2}-\d{4}", manual.meta["voucher"]) and manual.meta["kind"] == "manual"
    assert [(p.account, p.units.number, p.meta.get("aux")) for p in manual.postings] == [
        ("Expenses:6711:671101", Decimal("12.34"), None),
        ("Assets:3001:300101", Decimal("-12.34"), "channel:alipay"),
    ]
    assert any(t.narration.startswith("冲销 Reversal: ") for t in transactions)

    # Exporting through an earlier day leaves later vouchers out and asserts that day's trial balance.
    early = tmp_path / "early.beancount"
    early_summary = export(engine, early, through=s.days[-2])
    checked = bean_check(early)
    assert (checked.returncode, checked.stdout, checked.stderr) == (0, "", "")
    _, early_balances = beancount_balances(early)
    early_ours, _ = leaf_closing(engine, s.days[-2])
    assert dict(early_balances) == early_ours
    assert early_summary.last_date == s.days[-2] and early_summary.vouchers < summary.vouchers
    finished = time.perf_counter()
    print(
        f"\n[{engine.dialect.name}] build {built - started:.1f}s, book {booked - built:.1f}s, "
        f"export {exported - booked:.2f}s ({summary.vouchers} vouchers, {summary.postings} postings, "
        f"{path.stat().st_size // 1024} KiB), bean-check {bean_checked - exported:.1f}s, "
        f"total {finished - started:.1f}s"
    )


def test_a_tampered_export_fails_bean_check(engine, tmp_path):
    s = build_scenario(engine, seed=7, days=2, entries_per_day=60)
    book(s)
    path = tmp_path / "books.beancount"
    export(engine, path)
    assert bean_check(path).returncode == 0
    text = path.read_text(encoding="utf-8")

    # One posting's amount changed by a fen: that transaction no longer balances.
    match = re.search(r"^  (Liabilities:2241:224101)  (\d+)\.(\d\d) CNY$", text, flags=re.MULTILINE)
    assert match is not None
    cents = int(match[2]) * 100 + int(match[3]) + 1
    changed = text[: match.start()] + f"  {match[1]}  {money.format_minor(cents, 'CNY')} CNY" + text[match.end() :]
    (tmp_path / "amount.beancount").write_text(changed, encoding="utf-8")
    result = bean_check(tmp_path / "amount.beancount")
    assert result.returncode != 0 and "does not balance" in result.stdout + result.stderr

    # A balanced change (money that left the clearing account booked as leaving custody instead): every
    # transaction still balances, so only the balance assertions — our trial balance — can notice.
    moved, count = re.subn(
        r"^  Assets:3001:300101  (-\S+ CNY)$", r"  Assets:1002:100202  \1", text, count=1, flags=re.MULTILINE
    )
    assert count == 1
    (tmp_path / "moved.beancount").write_text(moved, encoding="utf-8")
    result = bean_check(tmp_path / "moved.beancount")
    assert result.returncode != 0 and "Balance failed" in result.stdout + result.stderr

    # A balance assertion changed: the books no longer agree with the trial balance written in them.
    match = re.search(r"^(\S+ balance Assets:3001:300101  )(-?\d+\.\d\d) CNY$", text, re.MULTILINE)
    assert match is not None
    wrong = money.format_minor(money.parse_amount(match[2], "CNY") + 100, "CNY")
    (tmp_path / "balance.beancount").write_text(text[: match.start(2)] + wrong + text[match.end(2) :], encoding="utf-8")
    result = bean_check(tmp_path / "balance.beancount")
    assert result.returncode != 0 and "Balance failed" in result.stdout + result.stderr


def test_an_empty_book_exports_a_valid_file(engine, tmp_path):
    path = tmp_path / "empty.beancount"
    summary = export(engine, path)
    assert (summary.vouchers, summary.postings, summary.accounts, summary.assertions) == (0, 0, 0, 0)
    assert summary.first_date is None
    checked = bean_check(path)
    assert (checked.returncode, checked.stdout, checked.stderr) == (0, "", "")


def test_strings_are_escaped_and_codes_become_valid_account_names():
    assert quote('a "b" \\ c\nd\te') == '"a \\"b\\" \\\\ c\\nd\\te"'
    chart = {
        "1002": reports.SubjectInfo("1002", "银行存款", "Bank", "asset", "debit", None, False, 1),
        "100202": reports.SubjectInfo("100202", "备付金", "Custody", "asset", "debit", "1002", True, 2),
        "3001": reports.SubjectInfo("3001", "清算", "Clearing", "common", "debit", None, True, 1),
        "abc": reports.SubjectInfo("abc", "自定义", "Custom", "expense", "debit", None, True, 1),
    }
    assert account_name(chart, "100202") == "Assets:1002:100202"
    assert account_name(chart, "3001") == "Assets:3001"
    assert account_name(chart, "abc") == "Expenses:C-abc"
    name = quote('自定义 "x"')
    out = io.StringIO()
    out.write(f"2026-01-01 open {account_name(chart, 'abc')} CNY\n  name_zh: {name}\n")
    entries, errors, _ = loader.load_string(out.getvalue())
    assert errors == [] and entries[0].meta["name_zh"] == '自定义 "x"'


@pytest.fixture(autouse=True)
def _bean_check_installed():
    if not BEAN_CHECK.exists():
        pytest.fail(f"bean-check is not installed next to {sys.executable}: install the beancount extra")
