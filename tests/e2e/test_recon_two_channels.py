"""A day of payments and refunds through Alipay and WeChat Pay, each bill made to disagree, on SQLite and PostgreSQL.

The acceptance day of reconciliation: both simulators' own bills, edited so that
each channel disagrees with us in every class — on payments and on refunds —
``recon run`` per channel finds exactly those discrepancies, ``auto_resolve``
closes the safe ones through the normal paths, the rest resolve through the
workflow, and the books (ledger → accounting) stay balanced.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from tests.payments_env import PaymentsEnv

from zhangfang.accounting import reports
from zhangfang.accounting import sync as accounting_sync
from zhangfang.db.uow import run_in_transaction
from zhangfang.errors import ZhangfangError
from zhangfang.ledger import service as ledger
from zhangfang.payments import flows
from zhangfang.recon import service, workflow
from zhangfang.sandbox.alipay import BILL_DETAIL_COLUMNS
from zhangfang.sandbox.wechatpay import BILL_ALL_HEADER

SHANGHAI = ZoneInfo("Asia/Shanghai")
AMOUNT = 10_000


def today() -> dt.date:
    return dt.datetime.now(SHANGHAI).date()


def attempt_of(payments: PaymentsEnv, order: dict[str, Any]) -> str:
    with payments.engine.connect() as conn:
        return conn.execute(
            sa.text("SELECT ref FROM payment_attempts WHERE order_id = (SELECT id FROM payment_orders WHERE ref = :r)"),
            {"r": order["id"]},
        ).scalar_one()


def refund(payments: PaymentsEnv, shop: Any, order: dict[str, Any], number: str, amount: int) -> str:
    """A merchant refund through the API, waited for until the channel has done it; returns its ``rfd_…``."""
    answer = shop.client.post(
        f"/v1/merchant/payments/{order['id']}/refunds",
        {"out_refund_no": number, "amount": amount},
        idempotency_key=f"refund:{number}",
    )
    assert answer.status_code == 201, answer.text
    ref = answer.json()["id"]
    payments.wait_for(
        lambda: any(r["id"] == ref and r["state"] == "succeeded" for r in payments.order(order["id"])["refunds"])
    )
    return ref


def pay_all(payments: PaymentsEnv, shop: Any, channel: str, names: str) -> dict[str, str]:
    """One paid order per name through ``channel``; returns name → attempt ref (our number at the channel)."""
    orders = {name: payments.create_order(shop, f"{channel}-{name}", amount=AMOUNT) for name in names}
    for order in orders.values():
        payments.pay(order, channel)
    for order in orders.values():
        payments.wait_for(lambda order=order: payments.order(order["id"])["state"] == "succeeded")
    return {name: attempt_of(payments, order) for name, order in orders.items()}, orders


def alipay_bill(sandbox: Any, day: dt.date, rows: list[dict[str, str]], path: Path, monkeypatch) -> Path:
    """The Alipay simulator's own bill zip with ``rows`` as its detail (its totals computed by the simulator)."""
    monkeypatch.setattr(
        sandbox.alipay,
        "_bill_detail_rows",
        lambda merchant, bill_date: [[r[c] for c in BILL_DETAIL_COLUMNS] for r in rows],
    )
    path.write_bytes(sandbox.alipay.bill_zip(day))
    monkeypatch.undo()
    return path


def wechat_bill(sandbox: Any, day: dt.date, rows: list[dict[str, str]], path: Path, monkeypatch) -> Path:
    monkeypatch.setattr(
        sandbox.wechatpay, "_bill_detail", lambda mchid, bill_date: [[r[c] for c in BILL_ALL_HEADER] for r in rows]
    )
    path.write_text(sandbox.wechatpay.bill_text(day), encoding="utf-8")
    monkeypatch.undo()
    return path


def discrepancies_of(engine, channel: str, day: dt.date) -> list[dict[str, Any]]:
    return run_in_transaction(
        engine, lambda conn: service.list_discrepancies(conn, channel=channel, bill_date=day), readonly=True
    )


@pytest.fixture
def channels_quiet(sandbox):
    yield
    for simulator in (sandbox.alipay, sandbox.wechatpay):
        simulator.delay_notify(0)


def test_two_channels_with_refunds_disagree_in_every_class(payments, sandbox, tmp_path, monkeypatch, channels_quiet):
    shop = payments.merchant("recon-two")
    day = today()
    flows.install_settings(payments.settings)

    # Per channel: A matched, B amount, C platform-only, D fee, E status, A again (duplicate), F notify
    # lost, a stranger's trade; refunds R1 matched, R2 refunded more on the bill, R3 missing from it.
    alipay, alipay_orders = pay_all(payments, shop, "alipay", "ABCDEG")
    wechat, wechat_orders = pay_all(payments, shop, "wechatpay", "ABCDEG")
    alipay_refunds, wechat_refunds = {}, {}
    for number, order, amount in (("R1", "A", 3_000), ("R2", "G", 2_000), ("R3", "D", 1_000)):
        alipay_refunds[number] = refund(payments, shop, alipay_orders[order], f"ali-{number}", amount)
        wechat_refunds[number] = refund(payments, shop, wechat_orders[order], f"wx-{number}", amount)
    # F last: the payer pays, the notify is held far longer than the test, and no job polls it before the run
    for channel, ours, orders in (("alipay", alipay, alipay_orders), ("wechatpay", wechat, wechat_orders)):
        sandbox.simulator(channel).delay_notify(3_600)
        orders["F"] = payments.create_order(shop, f"{channel}-F", amount=AMOUNT)
        payments.pay(orders["F"], channel)
        ours["F"] = attempt_of(payments, orders["F"])
        assert payments.order(orders["F"]["id"])["state"] == "pending"

    # ---- the Alipay bill: keyed by 商户订单号 (payments) and 退款批次号/请求号 (refunds), IDs end in a tab
    rows = sandbox.alipay.bill_rows(day)
    trades = {row["商户订单号"].strip(): row for row in rows if row["业务类型"] == "交易"}
    refunded = {row["退款批次号/请求号"].strip(): row for row in rows if row["业务类型"] == "退款"}
    assert set(trades) >= {alipay[name] for name in "ABCDEFG"}
    assert set(refunded) >= set(alipay_refunds.values())
    ali_bill = [
        trades[alipay["A"]],
        trades[alipay["F"]],
        trades[alipay["G"]],
        {**trades[alipay["B"]], "订单金额（元）": "99.00", "商家实收（元）": "99.00", "服务费（元）": "-0.38"},
        {**trades[alipay["D"]], "服务费（元）": "-0.60"},  # the channel charged 0.60, the route costs 0.38
        trades[alipay["E"]],  # Alipay's bill lists settled trades only: it cannot show a failed status
        dict(trades[alipay["A"]]),
        {
            **trades[alipay["A"]],
            "商户订单号": "pat_ALIPAYSTRANGER0000000000\t",
            "支付宝交易号": "2026000000000000001\t",
        },
        refunded[alipay_refunds["R1"]],
        {**refunded[alipay_refunds["R2"]], "商家实收（元）": "-25.00"},
    ]
    ali_path = alipay_bill(sandbox, day, ali_bill, tmp_path / "alipay.zip", monkeypatch)

    # ---- the WeChat Pay bill
    rows = sandbox.wechatpay.bill_rows(day)
    paid = {row["商户订单号"]: row for row in rows if row["交易状态"] != "REFUND"}
    back = {row["商户退款单号"]: row for row in rows if row["交易状态"] == "REFUND"}
    wx_bill = [
        paid[wechat["A"]],
        paid[wechat["F"]],
        paid[wechat["G"]],
        {**paid[wechat["B"]], "应结订单金额": "99.00", "订单金额": "99.00"},
        {**paid[wechat["D"]], "手续费": "0.99"},
        {**paid[wechat["E"]], "交易状态": "PAYERROR"},
        dict(paid[wechat["A"]]),
        {**paid[wechat["A"]], "商户订单号": "pat_WECHATSTRANGER000000000", "微信订单号": "4200000000000000000009"},
        back[wechat_refunds["R1"]],
        {**back[wechat_refunds["R2"]], "退款金额": "25.00", "申请退款金额": "25.00"},
    ]
    wx_path = wechat_bill(sandbox, day, wx_bill, tmp_path / "wechat.csv", monkeypatch)

    for channel, path, fmt in (("alipay", ali_path, "alipay"), ("wechatpay", wx_path, "wechat")):
        imported = service.import_bill(payments.engine, channel=channel, bill_date=day, path=path, fmt=fmt)
        assert (imported.line_count, imported.rejected) == (10, ()), channel
        result = service.run(
            payments.engine, channel=channel, bill_date=day, registry=payments.registry, carry_seconds=0
        )
        matched = 4 if channel == "alipay" else 3  # A, G, R1 (and Alipay's E)
        assert (result.matched_count, result.carried_count) == (matched, 0), (channel, result.counts)

    found = {}
    for channel, ours, refunds_of in (("alipay", alipay, alipay_refunds), ("wechatpay", wechat, wechat_refunds)):
        items = discrepancies_of(payments.engine, channel, day)
        found[channel] = items
        known = {*ours.values(), *refunds_of.values()}
        stranger = next(item["order_ref"] for item in items if item["order_ref"] not in known)
        expected = {
            ("payment", "channel_only", ours["F"]),
            ("payment", "channel_only", stranger),
            ("payment", "platform_only", ours["C"]),
            ("payment", "amount_mismatch", ours["B"]),
            ("payment", "fee_mismatch", ours["D"]),
            ("payment", "duplicate", ours["A"]),
            ("refund", "amount_mismatch", refunds_of["R2"]),
            ("refund", "platform_only", refunds_of["R3"]),
        }
        if channel == "wechatpay":
            expected.add(("payment", "status_mismatch", ours["E"]))
        assert {(item["kind"], item["class"], item["order_ref"]) for item in items} == expected, channel

    # the safe ones, per channel: F supplemented (补单), C and R3 confirmed by the channel's query
    engine = payments.engine
    for channel, orders in (("alipay", alipay_orders), ("wechatpay", wechat_orders)):
        assert workflow.auto_resolve(engine, channel=channel, bill_date=day) == 3, channel
        assert payments.order(orders["F"]["id"])["state"] == "succeeded"
    auto = {
        (item["order_ref"], item["action"])
        for channel in ("alipay", "wechatpay")
        for item in discrepancies_of(engine, channel, day)
        if item["state"] == "auto_resolved"
    }
    assert auto == {
        (ours[name], action)
        for ours, refunds_of in ((alipay, alipay_refunds), (wechat, wechat_refunds))
        for name, action in (("F", "supplemented"), ("C", "confirmed_by_query"))
    } | {(refunds_of["R3"], "confirmed_by_query") for refunds_of in (alipay_refunds, wechat_refunds)}

    # the rest through the workflow: money-moving actions need a second person
    def settle(item: dict[str, Any], action: str, reason: str) -> str | None:
        run_in_transaction(
            engine, lambda conn: workflow.assign(conn, ref=item["ref"], assignee="chen.yunying", actor="li.zhuguan")
        )
        state = workflow.resolve(engine, ref=item["ref"], action=action, reason=reason, actor="chen.yunying")
        if state != "pending_approval":
            return None
        return run_in_transaction(engine, lambda conn: workflow.approve(conn, ref=item["ref"], actor="li.zhuguan"))

    entries = []
    for channel in ("alipay", "wechatpay"):
        for item in discrepancies_of(engine, channel, day):
            if item["state"] != "open":
                continue
            if (item["class"], item["kind"]) in (("amount_mismatch", "payment"), ("fee_mismatch", "payment")):
                entries.append(settle(item, "write_off", "渠道少结 short"))
            elif item["class"] == "amount_mismatch":  # the channel refunded 5.00 more than we asked
                with pytest.raises(ZhangfangError) as wrong_way:
                    workflow.resolve(engine, ref=item["ref"], action="book_overage", reason="x", actor="chen.yunying")
                assert wrong_way.value.code == "resolution_action_invalid"
                entries.append(settle(item, "write_off", "渠道多退 over-refunded"))
            elif item["class"] == "channel_only":
                entries.append(settle(item, "book_overage", "无主长款"))
            else:
                assert settle(item, "no_action", "核实无误") is None
    posted = {
        ref: run_in_transaction(engine, lambda conn, ref=ref: ledger.get_entry(conn, ref=ref), readonly=True)
        for ref in entries
    }
    # per channel: B short 1.00, R2 over-refunded 5.00, the fee over-charged (Alipay 0.60 − 0.38, WeChat 0.99 − 0.38),
    # the stranger's 100.00
    assert sorted(entry.postings[0].amount for entry in posted.values()) == [22, 61, 100, 100, 500, 500, 10_000, 10_000]
    for channel in ("alipay", "wechatpay"):
        report = run_in_transaction(
            engine, lambda conn, channel=channel: service.report(conn, channel=channel, bill_date=day), readonly=True
        )
        assert report.by_state == {"auto_resolved": 3, "resolved": 6 if channel == "wechatpay" else 5}, channel

    # the books take it all: the day closes, accounting books it, the trial balance balances
    ledger.close_day(engine, accounting_date=run_in_transaction(engine, ledger.open_date), wait_seconds_max=10)
    assert accounting_sync.sync(engine).exception_count == 0
    trial = run_in_transaction(engine, lambda conn: reports.trial_balance(conn, date=day), readonly=True)
    assert trial.balanced
    balances = {row.subject.code: row.balance for row in trial.rows}
    assert balances["671101"] == 2 * (100 + 500) + 22 + 61 and balances["6301"] == 2 * 10_000
