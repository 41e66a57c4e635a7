"""The settlement run over the 2025 National Day holiday (Oct 1-8; Sep 28 and Oct 11 are working days).

Payments and refunds are dated in the past by inserting their rows and posting
their ledger entries exactly as ``payments`` books them (``postings``), at their
own times. Every expected figure below is computed by hand in the comments.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from tests.payments_env import PaymentsEnv, Shop
from tests.settlement_helpers import pay

from zhangfang import ids
from zhangfang.db.uow import run_in_transaction
from zhangfang.jobs import periodic
from zhangfang.ledger import service as ledger
from zhangfang.ledger.tables import ledger_clock
from zhangfang.parties import service as parties
from zhangfang.payments import postings
from zhangfang.payments import service as payment_service
from zhangfang.payments.models import Payee, PayoutRequest
from zhangfang.payments.tables import payment_orders, refunds
from zhangfang.settlement import service as settlement
from zhangfang.settlement.calendar import Cycle, business_dates_settling_on
from zhangfang.settlement.fees import FeeContract, PercentageWithBounds, Tier, Tiered

SHANGHAI = ZoneInfo("Asia/Shanghai")
SEP_29, SEP_30, OCT_9 = dt.date(2025, 9, 29), dt.date(2025, 9, 30), dt.date(2025, 10, 9)


def at(month: int, day: int, hour: int = 12, minute: int = 0, second: int = 0) -> dt.datetime:
    """A moment of 2025 in Beijing time."""
    return dt.datetime(2025, month, day, hour, minute, second, tzinfo=SHANGHAI)


def refund(env: PaymentsEnv, shop: Shop, order: dict, amount: int, finished_at: dt.datetime) -> int:
    """A succeeded refund as ``payments`` books it (hold, post, fee returned); returns the fee returned."""
    returned = postings.fee_returned_for(
        fee=order["fee"], amount=order["amount"], refunded_before=order["refunded"], refund=amount
    )

    def work(conn):
        ref = ids.new_id("rfd")
        held = postings.refund_hold_for(fee=order["fee"], amount=order["amount"], refund=amount)
        hold = postings.hold_merchant_funds(
            conn,
            key=f"refund:{ref}:hold",
            business_code=postings.CODE_REFUND,
            merchant_ref=shop.ref,
            channel="alipay",
            amount=held,
            currency="CNY",
            metadata={"refund": ref},
            now=finished_at,
        )
        entry = postings.post_held(
            conn, hold_ref=hold, key=f"refund:{ref}:post", amount=amount - returned, now=finished_at
        )
        if returned:
            postings.post_fee_return(
                conn, refund_ref=ref, channel="alipay", amount=returned, currency="CNY", now=finished_at
            )
        conn.execute(
            refunds.insert().values(
                ref=ref,
                key=f"m:{shop.id}:{ref}",
                kind="merchant",
                order_id=order["id"],
                attempt_id=order["attempt_id"],
                merchant_id=shop.id,
                out_refund_no=ref,
                request_hash="x" * 64,
                state="succeeded",
                amount=amount,
                currency="CNY",
                fee_returned=returned,
                channel="alipay",
                hold_ref=hold,
                entry_ref=entry,
                created_at=finished_at,
                updated_at=finished_at,
                finished_at=finished_at,
            )
        )
        conn.execute(
            payment_orders.update()
            .where(payment_orders.c.id == order["id"])
            .values(refunded=payment_orders.c.refunded + amount)
        )

    run_in_transaction(env.engine, work)
    order["refunded"] += amount
    return returned


def run(env: PaymentsEnv, day: dt.date, now: dt.datetime):
    return run_in_transaction(
        env.engine,
        lambda conn: settlement.run_settlement(conn, settlement_date=day, registry=env.registry, now=now),
    )


def by_merchant(result) -> dict:
    return {batch.merchant_ref: batch for batch in result.batches}


def settle_payouts(env: PaymentsEnv) -> None:
    """The payout jobs run until the bank has answered every payout."""

    def all_finished() -> bool:
        env.run_jobs()
        with env.engine.connect() as conn:
            states = conn.execute(sa.text("SELECT state FROM payouts")).scalars().all()
        return all(state != "processing" for state in states)

    env.wait_for(all_finished, timeout_seconds=20)


def count_holds(env: PaymentsEnv) -> int:
    with env.engine.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM ledger_holds")).scalar_one()


def camt053(path: Path, closing_minor: int, day: dt.date) -> Path:
    """A one-entry camt.053 statement of the custody account closing at ``closing_minor`` on ``day``."""
    credit = 1_000
    opening = closing_minor - credit

    def text(minor: int) -> str:
        return f"{minor // 100}.{minor % 100:02d}"

    path.write_text(
        f"""<?xml version="1.0" encoding="UTF-8"?>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.02">
<BkToCstmrStmt><GrpHdr><MsgId>M1</MsgId><CreDtTm>{day}T23:00:00+08:00</CreDtTm></GrpHdr>
<Stmt><Id>S1</Id>
<Acct><Id><Othr><Id>6222000099990000</Id></Othr></Id><Ccy>CNY</Ccy></Acct>
<Bal><Tp><CdOrPrtry><Cd>OPBD</Cd></CdOrPrtry></Tp><Amt Ccy="CNY">{text(opening)}</Amt>
<CdtDbtInd>CRDT</CdtDbtInd><Dt><Dt>{day}</Dt></Dt></Bal>
<Bal><Tp><CdOrPrtry><Cd>CLBD</Cd></CdOrPrtry></Tp><Amt Ccy="CNY">{text(closing_minor)}</Amt>
<CdtDbtInd>CRDT</CdtDbtInd><Dt><Dt>{day}</Dt></Dt></Bal>
<Ntry><Amt Ccy="CNY">{text(credit)}</Amt><CdtDbtInd>CRDT</CdtDbtInd><Sts><Cd>BOOK</Cd></Sts>
<BookgDt><DtTm>{day}T10:00:00+08:00</DtTm></BookgDt><ValDt><Dt>{day}</Dt></ValDt>
<AcctSvcrRef>B-1</AcctSvcrRef><NtryDtls><TxDtls><Refs><EndToEndId>E1</EndToEndId></Refs></TxDtls></NtryDtls></Ntry>
</Stmt></BkToCstmrStmt></Document>
""",
        encoding="utf-8",
    )
    return path


def test_the_calendar_pays_the_holiday_on_the_first_working_day_after_it() -> None:
    days = [dt.date(2025, 9, 30) + dt.timedelta(days=i) for i in range(9)]
    assert business_dates_settling_on(OCT_9, Cycle.T1) == days  # Sep 30 (last working day) .. Oct 8
    assert business_dates_settling_on(OCT_9, Cycle.WEEKLY) == [SEP_29 + dt.timedelta(days=i) for i in range(7)]
    assert business_dates_settling_on(dt.date(2025, 10, 6), Cycle.WEEKLY) == []  # a holiday Monday
    assert business_dates_settling_on(SEP_30, Cycle.WEEKLY) == []


def test_a_week_spanning_national_day_pays_the_hand_computed_amounts_on_the_right_dates(
    payments: PaymentsEnv, tmp_path: Path
) -> None:
    env = payments
    with env.engine.begin() as conn:  # a fresh database: every entry is dated Oct 9
        conn.execute(ledger_clock.update().values(open_date=OCT_9))
    a = env.merchant("a", fee_rate="0.006")  # T1, the default contract: 0.6 % as booked
    b = env.merchant("b", fee_rate="0.006")  # T1, tiered: 0.6 %, 0.2 % from 1,000.00 in the month
    c = env.merchant("c", fee_rate="0.002")  # WEEKLY, 1 % within 0.50 .. 3.00, refunds return no fee
    d = env.merchant("d", fee_rate="0.006")  # T1, withdraws most of its money before settlement

    def configure(conn):
        settlement.set_merchant_settings(
            conn,
            merchant_ref=b.ref,
            fee_contract=FeeContract(Tiered((Tier(0, Decimal("0.006")), Tier(100_000, Decimal("0.002"))))),
        )
        settlement.set_merchant_settings(
            conn,
            merchant_ref=c.ref,
            cycle="WEEKLY",
            fee_contract=FeeContract(
                PercentageWithBounds(Decimal("0.01"), min_fee=50, max_fee=300),
                refund_returns_fee=False,
            ),
        )

    run_in_transaction(env.engine, configure)

    # A: Sep 29 200.00 (fee 1.20); Sep 30 23:59:59 100.00 (0.60); Oct 3 50.00 (0.30); Oct 9 70.00 (0.42);
    #    Oct 2 refund 50.00 of the Sep 29 payment, fee returned 1.20 x 50/200 = 0.30.
    a1 = pay(env, a, 20_000, at(9, 29, 10), "0.006")
    pay(env, a, 10_000, at(9, 30, 23, 59, 59), "0.006")
    pay(env, a, 5_000, at(10, 3), "0.006")
    pay(env, a, 7_000, at(10, 9, 9), "0.006")
    assert refund(env, a, a1, 5_000, at(10, 2)) == 30
    # B: Sep 29 1,500.00 (tier 1: 9.00, booked 9.00); Sep 30 500.00 (month volume 1,500.00: 0.2 % = 1.00,
    #    booked 3.00); Oct 1 300.00 (a new month, volume 0: 1.80, booked 1.80).
    pay(env, b, 150_000, at(9, 29), "0.006")
    pay(env, b, 50_000, at(9, 30), "0.006")
    pay(env, b, 30_000, at(10, 1), "0.006")
    # C: Sep 29 20.00 (1 % = 0.20 -> min 0.50; booked 0.04); Oct 2 1,000.00 (10.00 -> max 3.00; booked 2.00);
    #    Oct 5 100.00 (1.00; booked 0.20); Oct 4 refund 10.00 of the Oct 2 payment: booked fee returned
    #    2.00 x 10/1000 = 0.02, the contract returns none.
    pay(env, c, 2_000, at(9, 29), "0.002")
    c2 = pay(env, c, 100_000, at(10, 2), "0.002")
    pay(env, c, 10_000, at(10, 5), "0.002")
    assert refund(env, c, c2, 1_000, at(10, 4)) == 2
    # D: Sep 29 100.00 (0.60), then it pays 90.00 out of its balance itself.
    pay(env, d, 10_000, at(9, 29), "0.006")

    def withdraw(conn):
        merchant = parties.get_merchant(conn, ref=d.ref)
        payment_service.create_payout(
            conn,
            merchant=merchant,
            request=PayoutRequest("own-1", 9_000, "CNY", Payee("6214830212345678", "示例商户")),
            registry=env.registry,
            now=at(9, 29, 20),
        )

    run_in_transaction(env.engine, withdraw)

    # ---- Sep 30 (T1 pays Sep 29; Tuesday, no weekly run)
    first = run(env, SEP_30, at(9, 30, 9))
    batches = by_merchant(first)
    assert set(batches) == {a.ref, b.ref, d.ref}
    assert (batches[a.ref].captured, batches[a.ref].fees, batches[a.ref].net, batches[a.ref].amount) == (
        20_000, 120, 19_880, 19_880,
    )  # fmt: skip
    assert (batches[b.ref].fees, batches[b.ref].fee_adjustment, batches[b.ref].amount) == (900, 0, 149_100)
    # D: net 99.40, but only 100.00 - 0.60 - 90.00 = 9.40 is available: 9.40 paid, 90.00 carried.
    assert (batches[d.ref].net, batches[d.ref].available, batches[d.ref].amount, batches[d.ref].carried_out) == (
        9_940, 940, 940, 9_000,
    )  # fmt: skip
    assert all(batch.state == "paying" for batch in first.batches)

    # Running the date again moves nothing and returns the same batches.
    holds_before = count_holds(env)
    again = run(env, SEP_30, at(9, 30, 10))
    assert (again.created, again.replayed) == (0, 3)
    assert [batch.ref for batch in again.batches] == [batch.ref for batch in first.batches]
    assert count_holds(env) == holds_before

    settle_payouts(env)
    assert periodic.sync_settlement_batches(env.engine) == 3  # what the worker does every round
    assert env.merchant_balance(a) == 10_000 - 60 + 5_000 - 30 + 7_000 - 42 - (5_000 - 30)

    # ---- Oct 1-8: holidays, nothing settles
    for holiday in (dt.date(2025, 10, 1), dt.date(2025, 10, 6), dt.date(2025, 10, 8)):
        assert run(env, holiday, at(10, 1)).batches == []

    # ---- Oct 9: T1 pays Sep 30 .. Oct 8; the weekly run of Sep 29 - Oct 5 moves here from Monday Oct 6.
    second = run(env, OCT_9, at(10, 9, 9))
    batches = by_merchant(second)
    assert set(batches) == {a.ref, b.ref, c.ref, d.ref}
    # A: 100.00 + 50.00 captured - 50.00 refunded - 0.90 fees + 0.30 returned = 99.40.
    batch = batches[a.ref]
    assert (batch.first_business_date, batch.last_business_date) == (SEP_30, dt.date(2025, 10, 8))
    assert (batch.captured, batch.refunds, batch.fees, batch.fees_returned, batch.net) == (15_000, 5_000, 90, 30, 9_940)
    assert (batch.fee_adjustment, batch.fee_entry_ref, batch.amount) == (0, None, 9_940)
    active = [day for day in batch.days if day.payment_count or day.refund_count]
    assert [(day.business_date, day.payment_count, day.captured, day.refunds) for day in active] == [
        (SEP_30, 1, 10_000, 0),
        (dt.date(2025, 10, 2), 0, 0, 5_000),
        (dt.date(2025, 10, 3), 1, 5_000, 0),
    ]  # fmt: skip
    # B: fees 1.00 + 1.80 = 2.80 against 4.80 booked: 2.00 given back; net 800.00 - 2.80 = 797.20.
    batch = batches[b.ref]
    assert (batch.captured, batch.fees, batch.fees_booked, batch.fee_adjustment, batch.net) == (
        80_000,
        280,
        480,
        -200,
        79_720,
    )
    assert batch.amount == 79_720
    # C: fees 0.50 + 3.00 + 1.00 = 4.50 against 2.24 booked, and 0.02 returned the contract does not return:
    #    2.28 more; net 1,120.00 - 10.00 - 4.50 = 1,105.50.
    batch = batches[c.ref]
    assert (batch.first_business_date, batch.last_business_date) == (SEP_29, dt.date(2025, 10, 5))
    assert (batch.captured, batch.refunds, batch.fees, batch.fees_returned) == (112_000, 1_000, 450, 0)
    assert (batch.fees_booked, batch.fees_returned_booked, batch.fee_adjustment, batch.net) == (224, 2, 228, 110_550)
    assert batch.amount == 110_550
    # D: nothing new, 90.00 carried in, nothing available: all of it carried again.
    batch = batches[d.ref]
    assert (batch.carried_in, batch.available, batch.amount, batch.carried_out, batch.state) == (
        9_000, 0, 0, 9_000, "nothing_to_pay",
    )  # fmt: skip

    # The fee adjustment entries: one per merchant and run, Dr merchant / Cr fee income for more, the mirror for less.
    def legs(ref):
        entry = run_in_transaction(env.engine, lambda conn: ledger.get_entry(conn, ref=ref), readonly=True)
        return entry.business_code, sorted((p.side, p.amount) for p in entry.postings)

    def account_ref(shop):
        request = postings.merchant_pending_request(shop.ref, "CNY")
        return run_in_transaction(env.engine, lambda conn: ledger.ensure_account(conn, request=request))

    code, sides = legs(batches[c.ref].fee_entry_ref)
    assert code == "fee" and sides == [("credit", 228), ("debit", 228)]
    code, sides = legs(batches[b.ref].fee_entry_ref)
    assert code == "fee" and sides == [("credit", 200), ("debit", 200)]

    def merchant_side(batch, shop):
        entry = run_in_transaction(env.engine, lambda conn: ledger.get_entry(conn, ref=batch.fee_entry_ref))
        return [p.side for p in entry.postings if p.account == account_ref(shop)]

    assert merchant_side(batches[c.ref], c) == ["debit"]  # charged more
    assert merchant_side(batches[b.ref], b) == ["credit"]  # given back
    # The ledger now equals the contract: C's pending balance for its week is exactly the statement's net.
    assert env.merchant_balance(c) == 110_550

    # The float at the end of Oct 9: the Oct 9 batches are paying, A's Oct 9 payment is unsettled.
    report = run_in_transaction(env.engine, lambda conn: settlement.float_report(conn, as_of=OCT_9), readonly=True)
    assert report.by_merchant[a.ref]["total"] == 9_940 + (7_000 - 42)
    assert report.by_merchant[b.ref]["total"] == 79_720
    assert report.by_merchant[c.ref]["total"] == 110_550
    assert report.by_merchant[d.ref] == {"unsettled": 0, "carried": 9_000, "total": 0}
    assert report.by_date[OCT_9] == 7_000 - 42
    balances = sum(env.merchant_balance(shop) for shop in (a, b, c, d))
    assert report.total == balances == 9_940 + 6_958 + 79_720 + 110_550

    # The statement: per business date, totals and the settlement, as UTF-8 CSV with a BOM.
    text = run_in_transaction(
        env.engine,
        lambda conn: settlement.statement_csv(conn, merchant_ref=a.ref, settlement_date=OCT_9),
        readonly=True,
    )
    assert text.startswith("\ufeff结算单")
    assert "2025-10-02,0,0.00,1,50.00,0.00,0.30,-49.70" in text
    assert "合计 total,2,150.00,1,50.00,0.90,0.30,99.40" in text
    assert "本期结算 paid,99.40" in text

    # The reserve-fund check: customer funds (merchant pending settlement here) against the custody statement.
    settle_payouts(env)
    customer_funds = sum(env.merchant_balance(shop) for shop in (a, b, c, d))
    assert customer_funds == 7_000 - 42  # everything else was paid out

    def check(path):
        return run_in_transaction(
            env.engine,
            lambda conn: settlement.reserve_check(conn, date=OCT_9, statement=path, fmt="camt053"),
            readonly=True,
        )

    agrees = check(camt053(tmp_path / "even.xml", customer_funds, OCT_9))
    assert (agrees.customer_funds, agrees.bank_balance, agrees.gap, agrees.agrees) == (6_958, 6_958, 0, True)
    assert agrees.ledger_codes["merchant_pending"] == 6_958
    short = check(camt053(tmp_path / "short.xml", customer_funds - 100, OCT_9))
    assert (short.gap, short.agrees) == (-100, False)
    # the same over HTTP, the statement as the body; a statement of another date is refused
    answer = env.admin.post(
        "/v1/settlement/reserve-check",
        params={"date": OCT_9.isoformat(), "format": "camt053"},
        content=(tmp_path / "short.xml").read_bytes(),
    )
    assert answer.status_code == 200, answer.text
    assert {key: answer.json()[key] for key in ("customer_funds", "bank_balance", "gap", "agrees")} == {
        "customer_funds": 6_958,
        "bank_balance": 6_858,
        "gap": -100,
        "agrees": False,
    }
    other_day = env.admin.post(
        "/v1/settlement/reserve-check",
        params={"date": "2025-10-10", "format": "camt053"},
        content=(tmp_path / "short.xml").read_bytes(),
    )
    assert (other_day.status_code, other_day.json()["error"]["code"]) == (422, "reserve_statement_date_mismatch")
