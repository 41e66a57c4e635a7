"""Settlement test helpers: paid orders written the way ``payments`` leaves them, without a channel."""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal

from tests.payments_env import PaymentsEnv, Shop

from zhangfang import ids
from zhangfang.db.uow import run_in_transaction
from zhangfang.payments import postings
from zhangfang.payments.tables import payment_attempts, payment_orders

_numbers = itertools.count(1)


def pay(env: PaymentsEnv, shop: Shop, amount: int, paid_at: dt.datetime, fee_rate: str) -> dict:
    """A paid order as ``payments`` leaves it: the order, its succeeded attempt, its ledger entry."""
    fee = postings.fee_for(amount, Decimal(fee_rate))

    def work(conn):
        ref, attempt = ids.new_id("pay"), ids.new_id("pat")
        entry = postings.post_payment(
            conn,
            attempt_ref=attempt,
            order_ref=ref,
            merchant_ref=shop.ref,
            channel="alipay",
            amount=amount,
            fee=fee,
            currency="CNY",
            now=paid_at,
        )
        order_id = conn.execute(
            payment_orders.insert()
            .values(
                ref=ref,
                merchant_id=shop.id,
                merchant_ref=shop.ref,
                out_trade_no=f"o-{next(_numbers)}",
                request_hash="x" * 64,
                state="succeeded",
                amount=amount,
                currency="CNY",
                subject="茶",
                fee_rate=fee_rate,
                fee=fee,
                channel="alipay",
                attempt_ref=attempt,
                entry_ref=entry,
                created_at=paid_at,
                updated_at=paid_at,
                expires_at=paid_at + dt.timedelta(hours=2),
                paid_at=paid_at,
            )
            .returning(payment_orders.c.id)
        ).scalar_one()
        attempt_id = conn.execute(
            payment_attempts.insert()
            .values(
                ref=attempt,
                order_id=order_id,
                channel="alipay",
                method="alipay",
                channel_method="page",
                state="succeeded",
                amount=amount,
                currency="CNY",
                entry_ref=entry,
                created_at=paid_at,
                updated_at=paid_at,
                paid_at=paid_at,
            )
            .returning(payment_attempts.c.id)
        ).scalar_one()
        return {"id": order_id, "ref": ref, "attempt_id": attempt_id, "amount": amount, "fee": fee, "refunded": 0}

    return run_in_transaction(env.engine, work)
