"""Accounting (会计): the ledger's closed days become vouchers; manual vouchers need a second person; periods lock.

Every figure below is worked out by hand from the entries the test posts.
"""

from __future__ import annotations

import datetime as dt
import threading

import pytest
import sqlalchemy as sa
from tests.accounting_helpers import approve, install_chart, manual_voucher, open_books, submit

from zhangfang.accounting import service
from zhangfang.accounting.tables import exceptions, voucher_lines, vouchers
from zhangfang.db.uow import run_in_transaction
from zhangfang.errors import ZhangfangError
from zhangfang.ledger import service as ledger
from zhangfang.ledger.tables import ledger_clock


def count(engine, table) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


def rows_by_code(trial_balance, currency="CNY"):
    return {row.subject.code: row for row in trial_balance.rows if row.currency == currency}


def set_ledger_clock(engine, day: dt.date) -> None:
    """Start the ledger on ``day`` (a fresh database only: nothing is dated yet)."""
    with engine.begin() as conn:
        conn.execute(ledger_clock.update().values(open_date=day))


def a_day_of_business(books):
    """Two payments, a refund, a reversal and a channel settlement; returns the closed day."""
    books.pay("pay-1", "m001", 10_000, 60)
    books.pay("pay-2", "m002", 25_000, 150, channel="wechatpay")
    books.post("refund-1", "refund", ("m001", "debit", 3_000), ("alipay_clearing", "credit", 3_000))
    reversed_ref = books.pay("pay-3", "m001", 500, 3)
    run_in_transaction(books.engine, lambda conn: ledger.reverse_entry(conn, ref=reversed_ref, idempotency_key="rev-3"))
    books.post("settle-1", "channel_settlement", ("custody", "debit", 7_000), ("alipay_clearing", "credit", 7_000))
    return books.close_day()


def test_a_closed_ledger_day_becomes_numbered_summary_vouchers_that_tie_out(engine):
    books = open_books(engine)
    day = a_day_of_business(books)

    result = books.sync()

    assert [(d.accounting_date, d.entry_count, d.exception_count) for d in result.days] == [(day, 6, 0)]
    with engine.connect() as conn:
        booked = service.list_vouchers(conn)
    # one voucher per business code (reversals apart), numbered from 1 in the period
    assert sorted((v.business_code, v.summary.startswith("冲销"), v.entry_count) for v in booked) == [
        ("channel_settlement", False, 1),
        ("payment", False, 3),
        ("payment", True, 1),
        ("refund", False, 1),
    ]
    assert sorted(v.number for v in booked) == [1, 2, 3, 4]
    payments = next(v for v in booked if v.business_code == "payment" and not v.summary.startswith("冲销"))
    assert payments.total == 35_500
    assert {(line.subject_code, line.aux, line.debit, line.credit) for line in payments.lines} == {
        ("300101", "channel:alipay", 10_500, 0),
        ("300101", "channel:wechatpay", 25_000, 0),
        ("224101", "merchant:mch_m001", 0, 9_940 + 497),
        ("224101", "merchant:mch_m002", 0, 24_850),
        ("602101", "", 0, 213),
    }

    trial = books.trial_balance(date=day)
    assert trial.balanced
    rows = rows_by_code(trial)
    assert rows["300101"].balance == 10_500 + 25_000 - 3_000 - 500 - 7_000
    assert rows["224101"].balance == 9_940 + 24_850 - 3_000  # the reversed payment nets out
    assert rows["602101"].balance == 60 + 150
    assert rows["100202"].balance == 7_000
    assert rows["2241"].balance == rows["224101"].balance  # a parent rolls up its children
    assert books.check(day).ok

    again = books.sync()
    assert again.days == ()


def test_entry_mode_makes_one_voucher_per_entry_with_the_same_books(engine):
    books = open_books(engine)
    day = a_day_of_business(books)

    result = books.sync(mode="entry")

    assert result.voucher_count == 6
    with engine.connect() as conn:
        booked = service.list_vouchers(conn)
    assert all(v.kind == "entry" and v.entry_count == 1 and v.source_entry_ref for v in booked)
    assert sorted(v.number for v in booked) == list(range(1, 7))
    rows = rows_by_code(books.trial_balance(date=day))
    assert rows["300101"].balance == 25_000
    assert rows["602101"].balance == 210
    assert books.check(day).ok


@pytest.mark.parametrize("mode", ["summary", "entry"])
def test_an_entry_no_rule_covers_is_reported_not_booked_and_the_check_names_it(engine, mode):
    books = open_books(engine)
    books.pay("pay-1", "m001", 10_000, 60)
    unknown = books.post("gift-1", "marketing_gift", ("fee_income", "debit", 100), ("m001", "credit", 100))
    stray_leg = books.post("pay-odd", "payment", ("custody", "debit", 50), ("m001", "credit", 50))
    day = books.close_day()

    result = books.sync(mode=mode)

    assert (result.entry_count, result.exception_count, result.voucher_count) == (1, 2, 1)
    with engine.connect() as conn:
        reported = {(x.entry_ref, x.reason) for x in service.list_exceptions(conn)}
    assert reported == {(unknown, "no_rule"), (stray_leg, "leg_not_in_rule")}
    assert books.trial_balance(date=day).balanced  # an entry is booked whole or not at all
    check = books.check(day)
    assert not check.ok
    merchant = next(item for item in check.differences if item.subject.code == "224101")
    assert (merchant.ledger_balance, merchant.accounting_balance) == (-(9_940 + 150), -9_940)
    assert {(cause.kind, cause.ref, cause.amount) for cause in merchant.causes} == {
        ("unbooked_entry", unknown, -100),
        ("unbooked_entry", stray_leg, -50),
    }


def test_a_ledger_code_no_rule_maps_is_listed_as_outside_the_books(engine):
    books = open_books(engine)
    stranger = run_in_transaction(
        engine,
        lambda conn: ledger.open_account(
            conn,
            request=ledger.AccountRequest(key="test:suspense", ledger_code="suspense", currency="CNY"),
        )[0],
    )
    books.refs["suspense"] = stranger.ref
    books.post("odd", "payment", ("alipay_clearing", "debit", 70), ("suspense", "credit", 70))
    day = books.close_day()
    books.sync()

    check = books.check(day)

    assert [(u.ledger_code, u.balance) for u in check.unmapped] == [("suspense", -70)]


def test_a_manual_voucher_waits_for_a_second_person_and_is_then_numbered(engine):
    books = open_books(engine)
    books.pay("pay-1", "m001", 10_000, 60)
    day = books.close_day()
    books.sync()
    request = manual_voucher("adj-1", day, ("642101", 25, 0), ("300101", 0, 25), maker="li.kuaiji")

    pending = submit(engine, request)
    assert (pending.state, pending.number, pending.kind) == ("pending", None, "manual")
    assert rows_by_code(books.trial_balance(date=day)).get("642101") is None  # not in the books yet

    with pytest.raises(ZhangfangError) as refused:
        approve(engine, pending.ref, checker="li.kuaiji")
    assert refused.value.code == "maker_cannot_approve"
    with engine.connect() as conn:
        assert service.get_voucher(conn, ref=pending.ref).state == "pending"

    posted = approve(engine, pending.ref, checker="wang.zhuguan")
    assert (posted.state, posted.checker, posted.number) == ("posted", "wang.zhuguan", 2)
    assert posted.label == f"记-{day:%Y-%m}-0002"
    assert approve(engine, pending.ref, checker="wang.zhuguan") == posted  # a retried approval
    with pytest.raises(ZhangfangError) as again:
        approve(engine, pending.ref, checker="zhao.cfo")
    assert again.value.code == "voucher_not_pending"
    rows = rows_by_code(books.trial_balance(date=day))
    assert rows["642101"].balance == 25
    # the books now differ from the ledger on clearing, and the check says which voucher did it
    clearing = next(item for item in books.check(day).differences if item.subject.code == "300101")
    assert [(cause.kind, cause.ref, cause.amount) for cause in clearing.causes] == [("manual_voucher", posted.ref, -25)]


def test_a_rejected_voucher_is_kept_and_never_posted(engine):
    install_chart(engine)
    day = dt.date(2026, 11, 2)
    pending = submit(engine, manual_voucher("adj-r", day, ("642101", 10, 0), ("300101", 0, 10)))
    rejected = run_in_transaction(
        engine, lambda conn: service.reject_voucher(conn, ref=pending.ref, checker="wang.zhuguan", reason="wrong side")
    )
    assert (rejected.state, rejected.rejected_reason, rejected.number) == ("rejected", "wrong side", None)
    with pytest.raises(ZhangfangError) as refused:
        approve(engine, pending.ref)
    assert refused.value.code == "voucher_not_pending"


@pytest.mark.parametrize(
    ("lines", "code"),
    [
        ((("642101", 100, 0), ("300101", 0, 99)), "voucher_must_balance"),
        ((("642101", 100, 0),), "voucher_lines_too_few"),
        ((("642101", 100, 100), ("300101", 0, 0)), "voucher_line_invalid"),
        ((("642101", -5, 0), ("300101", 0, -5)), "voucher_line_invalid"),
        ((("6421", 100, 0), ("300101", 0, 100)), "subject_not_leaf"),
        ((("9999", 100, 0), ("300101", 0, 100)), "subject_not_found"),
    ],
)
def test_bad_manual_vouchers_are_refused_and_change_nothing(engine, lines, code):
    install_chart(engine)
    day = dt.date(2026, 11, 3)
    with pytest.raises(ZhangfangError) as refused:
        submit(engine, manual_voucher("bad", day, *lines))
    assert refused.value.code == code
    assert (count(engine, vouchers), count(engine, voucher_lines)) == (0, 0)


def test_the_same_key_returns_the_voucher_and_other_content_conflicts(engine):
    install_chart(engine)
    day = dt.date(2026, 11, 3)
    first = submit(engine, manual_voucher("adj-k", day, ("642101", 10, 0), ("300101", 0, 10)))
    assert submit(engine, manual_voucher("adj-k", day, ("642101", 10, 0), ("300101", 0, 10))) == first
    with pytest.raises(ZhangfangError) as conflict:
        submit(engine, manual_voucher("adj-k", day, ("642101", 11, 0), ("300101", 0, 11)))
    assert conflict.value.code == "voucher_key_conflict"
    assert count(engine, vouchers) == 1


def test_a_period_closes_in_order_when_booked_and_then_refuses_vouchers(engine):
    set_ledger_clock(engine, dt.date(2026, 1, 31))
    books = open_books(engine)
    books.pay("pay-jan", "m001", 10_000, 60)
    january_31 = books.close_day()

    def close(period, operator="wang.zhuguan"):
        return run_in_transaction(engine, lambda conn: service.close_period(conn, period=period, operator=operator))

    with pytest.raises(ZhangfangError) as not_booked:
        close("2026-01")
    assert not_booked.value.code == "period_not_synced"
    books.sync()
    pending = submit(engine, manual_voucher("adj-jan", january_31, ("642101", 5, 0), ("300101", 0, 5)))
    with pytest.raises(ZhangfangError) as waiting:
        close("2026-01")
    assert waiting.value.code == "period_has_pending_vouchers"
    approve(engine, pending.ref)
    with pytest.raises(ZhangfangError) as out_of_order:
        close("2026-02")
    assert out_of_order.value.code in ("period_not_synced", "period_out_of_order")

    closed = close("2026-01")
    assert (closed.state, closed.closed_by) == ("closed", "wang.zhuguan")
    assert close("2026-01") == closed  # idempotent

    with pytest.raises(ZhangfangError) as locked:
        submit(engine, manual_voucher("adj-late", january_31, ("642101", 5, 0), ("300101", 0, 5)))
    assert locked.value.code == "period_closed"
    # adjustments go to the open period
    february = submit(engine, manual_voucher("adj-feb", dt.date(2026, 2, 1), ("642101", 5, 0), ("300101", 0, 5)))
    assert february.period == "2026-02"


def test_year_end_close_carries_income_and_expenses_into_undistributed_profit(engine):
    set_ledger_clock(engine, dt.date(2025, 12, 31))
    books = open_books(engine)
    books.pay("pay-1", "m001", 100_000, 600)
    books.pay("pay-2", "m002", 50_000, 300)
    december_31 = books.close_day()
    books.sync()
    approve(engine, submit(engine, manual_voucher("cost", december_31, ("642101", 400, 0), ("300101", 0, 400))).ref)

    run_in_transaction(engine, lambda conn: service.close_period(conn, period="2025-12", operator="wang.zhuguan"))

    with engine.connect() as conn:
        closing = service.list_vouchers(conn, kind="closing")
    assert len(closing) == 1
    rows = rows_by_code(books.trial_balance(date=december_31))
    assert rows["410401"].balance == 900 - 400
    assert "602101" not in rows or rows["602101"].balance == 0
    assert "642101" not in rows or rows["642101"].balance == 0
    assert books.trial_balance(date=december_31).balanced
    # the closing voucher is not a difference between the books and the ledger
    fee = next(item for item in books.check(december_31).subjects if item.subject.code == "602101")
    assert fee.difference == 0


def test_posted_vouchers_cannot_be_changed_even_in_the_database(engine):
    books = open_books(engine)
    books.pay("pay-1", "m001", 10_000, 60)
    books.close_day()
    books.sync()
    with pytest.raises(sa.exc.DatabaseError), engine.begin() as conn:
        conn.execute(voucher_lines.update().values(debit=voucher_lines.c.debit + 1).where(voucher_lines.c.debit > 0))
    with pytest.raises(sa.exc.DatabaseError), engine.begin() as conn:
        conn.execute(vouchers.update().values(total=1))
    with pytest.raises(sa.exc.DatabaseError), engine.begin() as conn:
        conn.execute(vouchers.delete())
    assert count(engine, exceptions) == 0


def test_the_check_needs_a_booked_day(engine):
    books = open_books(engine)
    day = books.open_date()
    with pytest.raises(ZhangfangError) as refused:
        books.check(day)
    assert refused.value.code == "day_not_accounted"


def test_two_workers_syncing_at_once_book_each_day_once(engine):
    set_ledger_clock(engine, dt.date(2026, 3, 10))
    books = open_books(engine)
    for day_number in range(3):
        books.pay(f"pay-{day_number}", "m001", 1_000 + day_number, 6)
        books.close_day()
    results, failures = [], []

    def worker():
        try:
            results.append(books.sync())
        except Exception as error:  # the test reports any failure of either worker
            failures.append(error)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    assert sum(len(result.days) for result in results) == 3
    with engine.connect() as conn:
        booked = service.list_vouchers(conn)
    assert sorted(v.number for v in booked) == [1, 2, 3]
    assert books.trial_balance(date=books.open_date() - dt.timedelta(days=1)).balanced
