"""Reconciliation of a full day with WeChat Pay, end to end, on SQLite and PostgreSQL.

Payments go through the cashier and the simulator; the simulator's bill for the
day is made to disagree in every class; ``recon run`` must find exactly those
discrepancies, resolve the safe ones by asking the channel, and the rest
resolve through the workflow with ledger entries the books accept.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from zhangfang.accounting import reports
from zhangfang.accounting import sync as accounting_sync
from zhangfang.db.uow import run_in_transaction
from zhangfang.errors import ZhangfangError
from zhangfang.ledger import service as ledger
from zhangfang.payments import flows
from zhangfang.recon import service, workflow
from zhangfang.recon.tables import actions
from zhangfang.sandbox.wechatpay import BILL_ALL_HEADER

CHANNEL = "wechatpay"


def today() -> dt.date:
    return dt.datetime.now(ZoneInfo("Asia/Shanghai")).date()


def paid_attempt(payments, order: dict) -> str:
    """The attempt (our number at the channel) that paid ``order``."""
    payments.wait_for(lambda: payments.order(order["id"])["state"] == "succeeded")
    with payments.engine.connect() as conn:
        return conn.execute(
            sa.text("SELECT attempt_ref FROM payment_orders WHERE ref = :ref"), {"ref": order["id"]}
        ).scalar_one()


def write_bill(sandbox, day: dt.date, rows: list[dict[str, str]], path: Path, monkeypatch) -> Path:
    """The simulator's own bill file for ``rows`` (its summary recomputed by the simulator itself)."""
    simulator = sandbox.wechatpay
    monkeypatch.setattr(
        simulator, "_bill_detail", lambda mchid, bill_date: [[row[name] for name in BILL_ALL_HEADER] for row in rows]
    )
    path.write_text(simulator.bill_text(day), encoding="utf-8")
    monkeypatch.undo()
    return path


def test_a_day_that_disagrees_in_every_class(payments, sandbox, tmp_path, monkeypatch):
    shop = payments.merchant("recon-shop")
    orders = {name: payments.create_order(shop, f"recon-{name}", amount=10_000) for name in "ABCDEF"}
    for name in "ABCDE":
        payments.pay(orders[name], "wechatpay")
    refs = {name: paid_attempt(payments, orders[name]) for name in "ABCDE"}
    # F: the payer pays, but the channel's notify never reaches us (held far longer than the test)
    sandbox.wechatpay.delay_notify(3_600)
    payments.pay(orders["F"], "wechatpay")
    with payments.engine.connect() as conn:
        refs["F"] = conn.execute(
            sa.text("SELECT ref FROM payment_attempts WHERE order_id = (SELECT id FROM payment_orders WHERE ref = :r)"),
            {"r": orders["F"]["id"]},
        ).scalar_one()
    sandbox.wechatpay.delay_notify(0)
    assert payments.order(orders["F"]["id"])["state"] == "pending"

    day = today()
    rows = {row["商户订单号"]: row for row in sandbox.wechatpay.bill_rows(day)}
    assert set(rows) >= {refs[name] for name in "ABCDEF"}
    bill = [rows[refs["A"]], rows[refs["F"]]]
    bill.append({**rows[refs["B"]], "应结订单金额": "99.00", "订单金额": "99.00"})  # amount mismatch (short 1.00)
    bill.append({**rows[refs["D"]], "手续费": "0.99"})  # fee mismatch
    bill.append({**rows[refs["E"]], "交易状态": "PAYERROR"})  # status mismatch
    bill.append(dict(rows[refs["A"]]))  # duplicate of A
    stranger = {**rows[refs["A"]], "商户订单号": "pat_UNKNOWNUNKNOWNUNKNOWN000", "微信订单号": "4200000000000000000001"}
    bill.append(stranger)  # channel-only, no order of ours (长款)
    # C is on no line: platform-only (短款); the channel's query still says paid
    path = write_bill(sandbox, day, bill, tmp_path / "wechat.csv", monkeypatch)

    imported = service.import_bill(payments.engine, channel=CHANNEL, bill_date=day, path=path, fmt="wechat")
    assert (imported.line_count, imported.rejected) == (7, ())
    again = service.import_bill(payments.engine, channel=CHANNEL, bill_date=day, path=path, fmt="wechat")
    assert again.replayed and again.ref == imported.ref

    result = service.run(payments.engine, channel=CHANNEL, bill_date=day, registry=payments.registry, carry_seconds=0)

    assert (result.matched_count, result.carried_count) == (1, 0)
    found = run_in_transaction(
        payments.engine, lambda conn: service.list_discrepancies(conn, channel=CHANNEL, bill_date=day), readonly=True
    )
    by_order = {(item["class"], item["order_ref"]) for item in found}
    assert by_order == {
        ("channel_only", refs["F"]),
        ("channel_only", stranger["商户订单号"]),
        ("platform_only", refs["C"]),
        ("amount_mismatch", refs["B"]),
        ("fee_mismatch", refs["D"]),
        ("status_mismatch", refs["E"]),
        ("duplicate", refs["A"]),
    }
    with pytest.raises(ZhangfangError) as twice:
        service.run(payments.engine, channel=CHANNEL, bill_date=day)
    assert twice.value.code == "recon_run_exists"

    # the safe ones: F is supplemented (补单) through the normal path, C confirmed by the channel's query
    flows.install_settings(payments.settings)
    assert workflow.auto_resolve(payments.engine, channel=CHANNEL, bill_date=day) == 2
    assert payments.order(orders["F"]["id"])["state"] == "succeeded"
    states = {
        item["order_ref"]: (item["state"], item["action"])
        for item in run_in_transaction(
            payments.engine, lambda conn: service.list_discrepancies(conn, channel=CHANNEL), readonly=True
        )
    }
    assert states[refs["F"]] == ("auto_resolved", "supplemented")
    assert states[refs["C"]] == ("auto_resolved", "confirmed_by_query")

    by_class = {item["class"]: item["ref"] for item in found}
    engine = payments.engine

    def step(fn, **kwargs):
        return run_in_transaction(engine, lambda conn: fn(conn, **kwargs))

    # the channel paid us 1.00 less for B than we booked: a write-off, approved by a second person
    step(workflow.assign, ref=by_class["amount_mismatch"], assignee="chen.yunying", actor="li.zhuguan")
    assert (
        workflow.resolve(
            engine, ref=by_class["amount_mismatch"], action="write_off", reason="渠道少结 short", actor="chen.yunying"
        )
        == "pending_approval"
    )
    with pytest.raises(ZhangfangError) as same_person:
        step(workflow.approve, ref=by_class["amount_mismatch"], actor="chen.yunying")
    assert same_person.value.code == "approver_must_differ"
    write_off = step(workflow.approve, ref=by_class["amount_mismatch"], actor="li.zhuguan")
    # the unknown credit on the bill: booked as non-operating income, approved
    stranger_ref = next(item["ref"] for item in found if item["order_ref"] == stranger["商户订单号"])
    workflow.resolve(engine, ref=stranger_ref, action="book_overage", reason="无主长款", actor="chen.yunying")
    overage = step(workflow.approve, ref=stranger_ref, actor="li.zhuguan")
    # a refused action changes nothing
    with pytest.raises(ZhangfangError) as wrong_way:
        workflow.resolve(engine, ref=by_class["fee_mismatch"], action="book_overage", reason="x", actor="chen.yunying")
    assert wrong_way.value.code == "resolution_action_invalid"
    for klass in ("fee_mismatch", "status_mismatch", "duplicate"):
        assert workflow.resolve(
            engine, ref=by_class[klass], action="no_action", reason="核实无误", actor="chen.yunying"
        ) == ("resolved")

    report = run_in_transaction(
        engine, lambda conn: service.report(conn, channel=CHANNEL, bill_date=day), readonly=True
    )
    assert report.by_state == {"auto_resolved": 2, "resolved": 5}
    entries = {
        ref: run_in_transaction(engine, lambda conn, ref=ref: ledger.get_entry(conn, ref=ref), readonly=True)
        for ref in (write_off, overage)
    }
    assert {entry.business_code for entry in entries.values()} == {"recon_adjustment"}
    assert sorted(posting.amount for entry in entries.values() for posting in entry.postings) == [
        100,
        100,
        10_000,
        10_000,
    ]
    with engine.connect() as conn:
        audit = conn.execute(sa.select(sa.func.count()).select_from(actions)).scalar_one()
    assert audit == 2 + 1 + 2 + 2 + 3  # auto ×2, assign, resolve+approve ×2, no_action ×3

    # the books take the adjustments: the day closes, accounting books it, the trial balance balances
    ledger.close_day(engine, accounting_date=run_in_transaction(engine, ledger.open_date), wait_seconds_max=10)
    booked = accounting_sync.sync(engine)
    assert booked.exception_count == 0
    trial = run_in_transaction(engine, lambda conn: reports.trial_balance(conn, date=day), readonly=True)
    assert trial.balanced
    losses = {row.subject.code: row.balance for row in trial.rows}
    assert losses["671101"] == 100 and losses["6301"] == 10_000


def test_items_of_the_neighbouring_day_are_carried_and_matched_the_next_day(payments, sandbox, tmp_path, monkeypatch):
    """跨日: one payment we booked at 23:50 that the channel bills the next day, and one the channel
    billed at 23:55 that we booked at 00:05 — both carried once, both matched the next day."""
    shop = payments.merchant("recon-crossday")
    orders = [payments.create_order(shop, f"cross-{n}", amount=5_000) for n in range(2)]
    for order in orders:
        payments.pay(order, "wechatpay")
    ours_late, theirs_late = (paid_attempt(payments, order) for order in orders)
    day = today() - dt.timedelta(days=1)
    shanghai = ZoneInfo("Asia/Shanghai")
    late_evening = dt.datetime.combine(day, dt.time(23, 50), shanghai).astimezone(dt.UTC)
    just_after = dt.datetime.combine(today(), dt.time(0, 5), shanghai).astimezone(dt.UTC)
    with payments.engine.begin() as conn:
        for ref, paid_at in ((ours_late, late_evening), (theirs_late, just_after)):
            conn.execute(
                sa.text("UPDATE payment_attempts SET paid_at = :at WHERE ref = :ref"), {"at": paid_at, "ref": ref}
            )
    rows = {row["商户订单号"]: row for row in sandbox.wechatpay.bill_rows(today())}
    yesterday_bill = [{**rows[theirs_late], "交易时间": f"{day:%Y-%m-%d} 23:55:00"}]
    today_bill = [{**rows[ours_late], "交易时间": f"{today():%Y-%m-%d} 00:01:00"}]

    def import_and_run(bill_day: dt.date, bill: list[dict[str, str]]) -> service.RunResult:
        path = write_bill(sandbox, bill_day, bill, tmp_path / f"{bill_day}.csv", monkeypatch)
        service.import_bill(payments.engine, channel=CHANNEL, bill_date=bill_day, path=path, fmt="wechat")
        return service.run(payments.engine, channel=CHANNEL, bill_date=bill_day, registry=payments.registry)

    first = import_and_run(day, yesterday_bill)
    assert (first.matched_count, first.carried_count, first.counts) == (0, 2, {})

    second = import_and_run(today(), today_bill)
    assert (second.matched_count, second.counts) == (2, {})
    assert second.matched_amount == 10_000


def test_the_console_works_a_day_over_http(payments, sandbox, tmp_path, monkeypatch):
    shop = payments.merchant("recon-http")
    order = payments.create_order(shop, "http-1", amount=8_000)
    payments.pay(order, "wechatpay")
    ref = paid_attempt(payments, order)
    day = today()
    row = {r["商户订单号"]: r for r in sandbox.wechatpay.bill_rows(day)}[ref]
    more = {**row, "应结订单金额": "81.00", "订单金额": "81.00"}  # the channel settled 1.00 more than we booked
    path = write_bill(sandbox, day, [more], tmp_path / "b.csv", monkeypatch)
    admin, params = payments.admin, {"channel": CHANNEL, "bill_date": day.isoformat()}

    imported = admin.post("/v1/recon/bills", params={**params, "format": "wechat"}, content=path.read_bytes())
    assert imported.status_code == 200, imported.text
    assert imported.json()["lines"] == 1
    bad = admin.post("/v1/recon/bills", params={**params, "format": "wechat"}, content=b"not a bill")
    assert (bad.status_code, bad.json()["error"]["code"]) == (422, "recon_file_invalid")

    ran = admin.post("/v1/recon/runs", params=params)
    assert ran.status_code == 200, ran.text
    assert ran.json()["counts"] == {"amount_mismatch": {"count": 1, "amount": 8_100}}
    again = admin.post("/v1/recon/runs", params=params)
    assert (again.status_code, again.json()["error"]["code"]) == (409, "recon_run_exists")

    [found] = admin.get("/v1/recon/discrepancies", params={"state": "open"}).json()["discrepancies"]
    base = f"/v1/recon/discrepancies/{found['ref']}"
    resolved = admin.post(
        f"{base}/resolve", json={"action": "book_overage", "reason": "多结"}, headers={"X-Operator": "chen"}
    )
    assert resolved.json()["state"] == "pending_approval"
    same = admin.post(f"{base}/approve", headers={"X-Operator": "chen"})
    assert (same.status_code, same.json()["error"]["code"]) == (422, "approver_must_differ")
    approved = admin.post(f"{base}/approve", headers={"X-Operator": "li"})
    assert approved.status_code == 200 and approved.json()["entry"].startswith("je_")
    detail = admin.get(base).json()
    assert (detail["state"], [step["action"] for step in detail["history"]]) == ("resolved", ["resolve", "approve"])


def test_a_line_billed_again_after_its_day_matched_is_a_duplicate_and_a_late_bill_is_refused(
    payments, sandbox, tmp_path, monkeypatch
):
    """A line that agreed on its day (left as it was by the run) still counts as matched: the same
    trade on the next day's bill is a duplicate. A new bill for a reconciled day imports nothing."""
    shop = payments.merchant("recon-again")
    order = payments.create_order(shop, "again-1", amount=7_000)
    payments.pay(order, "wechatpay")
    attempt = paid_attempt(payments, order)
    row = {row["商户订单号"]: row for row in sandbox.wechatpay.bill_rows(today())}[attempt]
    tomorrow = today() + dt.timedelta(days=1)

    def bill(day: dt.date, name: str) -> Path:
        return write_bill(sandbox, day, [row], tmp_path / name, monkeypatch)

    service.import_bill(payments.engine, channel=CHANNEL, bill_date=today(), path=bill(today(), "a.csv"), fmt="wechat")
    first = service.run(payments.engine, channel=CHANNEL, bill_date=today(), registry=payments.registry)
    assert (first.matched_count, first.matched_amount, first.counts) == (1, 7_000, {})

    with pytest.raises(ZhangfangError) as refused:
        path = tmp_path / "late.csv"
        path.write_bytes(bill(today(), "b.csv").read_bytes() + b"\r\n")  # other bytes, the same day
        service.import_bill(payments.engine, channel=CHANNEL, bill_date=today(), path=path, fmt="wechat")
    assert refused.value.code == "recon_run_exists"
    with payments.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM recon_bills")).scalar_one() == 1

    service.import_bill(
        payments.engine, channel=CHANNEL, bill_date=tomorrow, path=bill(tomorrow, "c.csv"), fmt="wechat"
    )
    second = service.run(payments.engine, channel=CHANNEL, bill_date=tomorrow, registry=payments.registry)
    assert second.matched_count == 0
    assert second.counts == {"duplicate": {"count": 1, "amount": 7_000}}
