"""Matching keeps its promise on any day: every pooled line ends matched, carried, or in one discrepancy.

Hypothesis draws a day of a channel: our succeeded payments (some near midnight, some the evening
before) and the channel's WeChat Pay bill of them, with lines dropped, amounts changed, trades
failed, lines repeated and lines we never saw. The run's outcome is compared with a model of the
rules written out in Python, on SQLite and PostgreSQL. A line the run leaves ``new`` counts as
matched (the run writes only the lines that differ or wait); the model checks that too.
"""

from __future__ import annotations

import csv
import datetime as dt
import itertools
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zhangfang.db.uow import run_in_transaction
from zhangfang.money import format_minor
from zhangfang.parties import service as parties
from zhangfang.parties.models import MerchantRequest, SettlementAccount
from zhangfang.payments.tables import payment_attempts, payment_orders
from zhangfang.recon import service as recon
from zhangfang.recon.tables import bill_lines, discrepancies
from zhangfang.sandbox.wechatpay import BILL_ALL_HEADER, BILL_SUMMARY_HEADER

SHANGHAI = ZoneInfo("Asia/Shanghai")
DAY = dt.date(2026, 11, 2)
START, END = recon.day_bounds(DAY)
CARRY = dt.timedelta(seconds=recon.CARRY_SECONDS_DEFAULT)
_numbers = itertools.count(1)


@dataclass(frozen=True)
class Record:
    ref: str
    amount: int
    at: dt.datetime  # paid, UTC


@dataclass(frozen=True)
class Line:
    order_ref: str
    amount: int
    status: str
    at: dt.datetime  # the bill's time, UTC


# seconds into the day (Asia/Shanghai), drawn often near either midnight
seconds = st.one_of(st.integers(0, 86_399), st.integers(86_399 - 2_400, 86_399), st.integers(-3_600, -1))


@st.composite
def days(draw: st.DrawFn) -> tuple[list[Record], list[Line]]:
    n = next(_numbers)
    records = [
        Record(f"pat_prop{n:08d}x{i:014d}", draw(st.integers(1, 50_000)), START + dt.timedelta(seconds=draw(seconds)))
        for i in range(draw(st.integers(0, 12)))
    ]
    lines: list[Line] = []
    for record in records:
        fate = draw(st.sampled_from(["agree", "agree", "agree", "missing", "amount", "failed", "twice", "late"]))
        if fate == "missing":
            continue
        amount = record.amount + 1 if fate == "amount" else record.amount
        status = "PAYERROR" if fate == "failed" else "SUCCESS"
        at = record.at if fate != "late" else END + dt.timedelta(seconds=draw(st.integers(1, 600)))
        at = min(max(at, START), END - dt.timedelta(seconds=1))  # the bill lists its own day only
        lines.append(Line(record.ref, amount, status, at))
        if fate == "twice":
            lines.append(Line(record.ref, amount, status, at))
    for i in range(draw(st.integers(0, 3))):  # trades we have no record of
        at = START + dt.timedelta(seconds=draw(st.integers(0, 86_399)))
        lines.append(Line(f"pat_prop{n:08d}y{i:014d}", draw(st.integers(1, 50_000)), "SUCCESS", at))
    return records, draw(st.permutations(lines))


def model(records: list[Record], lines: list[Line]) -> tuple[dict[str, int], int, int, int]:
    """What the rules say: discrepancies per class, matched count and amount, carried count."""
    ours = {record.ref: record for record in records if START - CARRY <= record.at < END}
    carry_from = END - CARRY
    classes: dict[str, int] = {}
    matched = matched_amount = carried = 0
    seen: set[str] = set()
    for line in lines:
        if line.order_ref in seen:
            klass = "duplicate"
        else:
            seen.add(line.order_ref)
            record = ours.get(line.order_ref)
            if record is None:
                if line.at >= carry_from:
                    carried += 1
                    continue
                klass = "channel_only"
            elif line.status != "SUCCESS":
                klass = "status_mismatch"
            elif line.amount != record.amount:
                klass = "amount_mismatch"
            else:
                matched, matched_amount = matched + 1, matched_amount + line.amount
                continue
        classes[klass] = classes.get(klass, 0) + 1
    billed = {line.order_ref for line in lines}
    for record in ours.values():
        if record.ref not in billed:
            if record.at >= carry_from:
                carried += 1
            else:
                classes["platform_only"] = classes.get("platform_only", 0) + 1
    return classes, matched, matched_amount, carried


def write_records(engine: sa.Engine, merchant_id: int, merchant_ref: str, channel: str, records: list[Record]) -> None:
    with engine.begin() as conn:
        for record in records:
            order_id = conn.execute(
                payment_orders.insert()
                .values(
                    ref=record.ref.replace("pat_", "pay_"),
                    merchant_id=merchant_id,
                    merchant_ref=merchant_ref,
                    out_trade_no=record.ref,
                    request_hash="0" * 64,
                    state="succeeded",
                    amount=record.amount,
                    currency="CNY",
                    subject="prop",
                    fee_rate="0.006",
                    fee=0,
                    channel=channel,
                    attempt_ref=record.ref,
                    entry_ref=record.ref.replace("pat_", "je_"),
                    created_at=record.at,
                    updated_at=record.at,
                    expires_at=record.at,
                    paid_at=record.at,
                )
                .returning(payment_orders.c.id)
            ).scalar_one()
            conn.execute(
                payment_attempts.insert().values(
                    ref=record.ref,
                    order_id=order_id,
                    channel=channel,
                    method="wechatpay",
                    channel_method="native",
                    state="succeeded",
                    amount=record.amount,
                    currency="CNY",
                    entry_ref=record.ref.replace("pat_", "je_"),
                    created_at=record.at,
                    updated_at=record.at,
                    paid_at=record.at,
                )
            )


def write_bill(path: Path, lines: list[Line]) -> None:
    """The lines as a WeChat Pay ALL bill with its summary, as the channel writes it."""
    with path.open("w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file, lineterminator="\r\n")
        writer.writerow(BILL_ALL_HEADER)
        for n, line in enumerate(lines):
            total = format_minor(line.amount, "CNY")
            at = line.at.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M:%S")
            row = [at, "wx0000000000000001", "1900000001", "0", "", f"42{n:026d}", line.order_ref, "openid",
                   "NATIVE", line.status, "OTHERS", "CNY", total, "0.00", "0", "0", "0.00", "0.00", "", "", "prop",
                   "", "0.00", "0.38%", total, "0.00", ""]  # fmt: skip
            writer.writerow(["`" + value for value in row])
        writer.writerow(BILL_SUMMARY_HEADER)
        settled = format_minor(sum(line.amount for line in lines), "CNY")
        writer.writerow(["`" + value for value in [str(len(lines)), settled, "0.00", "0.00", "0.00", settled, "0.00"]])


def test_a_run_classifies_every_line_and_record_as_the_rules_say(engine, tmp_path_factory) -> None:  # type: ignore[no-untyped-def]
    request = MerchantRequest(
        key="recon-properties",
        name="对账性质",
        mcc="5812",
        fee_rate="0.006",
        settlement_account=SettlementAccount("ICBC", "6222000000000000", "对账性质"),
        sign_type="HMAC-SHA256",
    )
    merchant = run_in_transaction(engine, lambda conn: parties.create_merchant(conn, request=request)).merchant
    channels = (f"wechatpay-prop-{n}" for n in itertools.count())  # a channel per example: days apart

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(days())
    def check(day: tuple[list[Record], list[Line]]) -> None:
        records, lines = day
        channel = next(channels)
        write_records(engine, merchant.id, merchant.ref, channel, records)
        bill = tmp_path_factory.mktemp("bill") / "bill.csv"
        write_bill(bill, lines)
        recon.import_bill(engine, channel=channel, bill_date=DAY, path=bill, fmt="wechat")
        result = recon.run(engine, channel=channel, bill_date=DAY)

        classes, matched, matched_amount, carried = model(records, lines)
        assert {klass: figures["count"] for klass, figures in result.counts.items()} == classes
        assert (result.matched_count, result.matched_amount, result.carried_count) == (
            matched,
            matched_amount,
            carried,
        )
        with engine.connect() as conn:
            states = dict(
                conn.execute(
                    sa.select(bill_lines.c.state, sa.func.count())
                    .where(bill_lines.c.channel == channel)
                    .group_by(bill_lines.c.state)
                ).all()
            )
            lined = conn.execute(
                sa.select(discrepancies.c.bill_line_id, sa.func.count())
                .where(discrepancies.c.channel == channel, discrepancies.c.bill_line_id.is_not(None))
                .group_by(discrepancies.c.bill_line_id)
            ).all()
        # every line ends in one place: left new (matched), carried, or differing with exactly one discrepancy
        assert states.get("new", 0) == matched
        assert states.get("matched", 0) == 0  # nothing is carried in from another day here
        assert sum(states.values()) == len(lines)
        assert all(count == 1 for _, count in lined)
        assert len(lined) == states.get("differs", 0) == sum(classes.values()) - classes.get("platform_only", 0)

    check()
