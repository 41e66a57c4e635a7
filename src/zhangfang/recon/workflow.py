"""Resolving reconciliation discrepancies: automatically where safe, otherwise by people, every step logged.

Automatic (``auto_resolve``), after a run:

- ``channel_only`` for a payment attempt we know but did not record as paid (a
  lost notify): ask the channel; if it says paid, the payment completes through
  the normal path (``payments.flows.verify_with_channel``: booked, merchant told)
  — 补单, action ``supplemented``;
- ``platform_only`` payment or refund: ask the channel; if it says paid (refunded),
  its bill left the trade out and nothing is wrong with the money — action
  ``confirmed_by_query``.

Everything else waits for operations: ``assign`` to a person, then ``resolve``
with an action and a reason:

============== ==========================================================  ===========
action         what it does                                                 money
============== ==========================================================  ===========
no_action      explained, nothing to change (e.g. a fee rounding)            no
supplement     ask the channel again and complete the payment (补单)          through payments
write_off      the channel has less than we booked: Dr fund losses (资金损失), yes: approval
               Cr channel clearing, for the shortfall
book_overage   the channel has more than we know: Dr channel clearing,      yes: approval
               Cr non-operating income (营业外收入), for the excess
============== ==========================================================  ===========

A money-moving resolution waits in ``pending_approval`` until a second person
approves it (``approve``; its resolver cannot: ``approver_must_differ``); the
approval posts one ledger entry (business code ``recon_adjustment``, keyed by the
discrepancy so it posts once), which accounting books like any other.

Guarantees
- Every step (auto or by hand) writes a ``recon_actions`` row: who, what, when, details.
- A discrepancy moves open → assigned → (pending_approval →) resolved, or open →
  auto_resolved; any other step is ``discrepancy_state_invalid`` and changes nothing.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from zhangfang.db.uow import run_in_transaction
from zhangfang.ledger import service as ledger
from zhangfang.ledger.models import AccountRequest, EntryRequest, Leg
from zhangfang.payments import flows
from zhangfang.payments import postings as payment_postings
from zhangfang.recon import errors
from zhangfang.recon.tables import actions, discrepancies

ACTIONS = ("no_action", "supplement", "write_off", "book_overage")
MONEY_ACTIONS = ("write_off", "book_overage")
OPERATOR = re.compile(r"[^\x00-\x1f\x7f]{1,64}")
BUSINESS_CODE = "recon_adjustment"
SYSTEM = "zhangfang"


def _check_operator(name: object, field: str) -> str:
    if not isinstance(name, str) or not OPERATOR.fullmatch(name) or not name.strip():
        raise errors.OperatorInvalid(f"{field} must be 1 to 64 printable characters naming a person", field=field)
    return name


def _log(conn: Connection, discrepancy_id: int, actor: str, step: str, now: dt.datetime, **detail: Any) -> None:
    conn.execute(
        actions.insert().values(discrepancy_id=discrepancy_id, actor=actor, action=step, detail=detail or None, at=now)
    )


def _locked(conn: Connection, ref: str) -> Any:
    row = conn.execute(sa.select(discrepancies).where(discrepancies.c.ref == ref).with_for_update()).first()
    if row is None:
        raise errors.DiscrepancyNotFound(f"no discrepancy {ref!r}", field="ref")
    return row


def _move(conn: Connection, row: Any, now: dt.datetime, **values: Any) -> None:
    conn.execute(discrepancies.update().where(discrepancies.c.id == row.id).values(updated_at=now, **values))


def _require_state(row: Any, *states: str) -> None:
    if row.state not in states:
        raise errors.DiscrepancyStateInvalid(
            f"discrepancy {row.ref} is {row.state}; this step needs it {' or '.join(states)}", state=row.state
        )


def auto_resolve(engine: Engine, *, channel: str, bill_date: dt.date, now: dt.datetime | None = None) -> int:
    """Resolve the safe discrepancies of a run (see the module docstring); returns how many."""
    now = now or dt.datetime.now(dt.UTC)
    candidates = run_in_transaction(
        engine,
        lambda conn: conn.execute(
            sa.select(
                discrepancies.c.ref, discrepancies.c.kind, discrepancies.c["class"], discrepancies.c.order_ref
            ).where(
                discrepancies.c.channel == channel,
                discrepancies.c.bill_date == bill_date,
                discrepancies.c.state == "open",
                sa.or_(
                    sa.and_(
                        discrepancies.c.kind == "payment",
                        discrepancies.c["class"].in_(("channel_only", "platform_only")),
                    ),
                    sa.and_(discrepancies.c.kind == "refund", discrepancies.c["class"] == "platform_only"),
                ),
                discrepancies.c.order_ref.is_not(None),
            )
        ).all(),
        readonly=True,
    )
    resolved = 0
    for ref, kind, klass, order_ref in candidates:
        if kind == "refund":
            outcome = flows.verify_refund_with_channel(engine, refund_ref=order_ref)
        else:
            outcome = flows.verify_with_channel(engine, attempt_ref=order_ref, now=now)
        action = None
        if klass == "channel_only" and outcome in ("applied", "duplicate"):
            action = "supplemented"
        elif klass == "platform_only" and outcome == "already_applied":
            action = "confirmed_by_query"
        if action is None:
            continue

        def close(conn: Connection, ref: str = ref, action: str = action, outcome: str = outcome) -> None:
            row = _locked(conn, ref)
            if row.state != "open":
                return
            _move(conn, row, now, state="auto_resolved", action=action, resolved_by=SYSTEM)
            _log(conn, row.id, SYSTEM, action, now, channel_query=outcome)

        run_in_transaction(engine, close)
        resolved += 1
    return resolved


def assign(conn: Connection, *, ref: str, assignee: str, actor: str, now: dt.datetime | None = None) -> None:
    """Give an open (or assigned) discrepancy to a person."""
    _check_operator(assignee, "assignee")
    _check_operator(actor, "actor")
    now = now or dt.datetime.now(dt.UTC)
    row = _locked(conn, ref)
    _require_state(row, "open", "assigned")
    _move(conn, row, now, state="assigned", assignee=assignee)
    _log(conn, row.id, actor, "assign", now, assignee=assignee)


def resolve(engine: Engine, *, ref: str, action: str, reason: str, actor: str, now: dt.datetime | None = None) -> str:
    """Resolve a discrepancy with an action and a reason; returns its new state (see the module docstring)."""
    _check_operator(actor, "actor")
    if action not in ACTIONS:
        raise errors.ResolutionActionInvalid(f"action is one of {', '.join(ACTIONS)}, not {action!r}", field="action")
    if not isinstance(reason, str) or not reason.strip() or len(reason) > 500:
        raise errors.ResolutionReasonInvalid("a resolution needs a reason of 1 to 500 characters", field="reason")
    now = now or dt.datetime.now(dt.UTC)
    if action == "supplement":
        row = run_in_transaction(engine, lambda conn: _locked(conn, ref), readonly=True)
        _require_state(row, "open", "assigned")
        if row.kind != "payment" or not row.order_ref:
            raise errors.ResolutionActionInvalid("only a payment we know can be supplemented", field="action")
        outcome = flows.verify_with_channel(engine, attempt_ref=row.order_ref, now=now)
        if outcome not in ("applied", "duplicate", "already_applied"):
            raise errors.SupplementRefused(
                f"the channel does not confirm {row.order_ref} as paid ({outcome}); nothing changed", outcome=outcome
            )

    def work(conn: Connection) -> str:
        row = _locked(conn, ref)
        _require_state(row, "open", "assigned")
        if action in MONEY_ACTIONS:
            _adjustment_legs(row, action)  # refuses an action that does not fit before anything is written
            _move(conn, row, now, state="pending_approval", action=action, reason=reason.strip(), resolved_by=actor)
            _log(conn, row.id, actor, "resolve", now, action=action, reason=reason.strip(), awaits="approval")
            return "pending_approval"
        _move(conn, row, now, state="resolved", action=action, reason=reason.strip(), resolved_by=actor)
        _log(conn, row.id, actor, "resolve", now, action=action, reason=reason.strip())
        return "resolved"

    return run_in_transaction(engine, work)


def approve(conn: Connection, *, ref: str, actor: str, now: dt.datetime | None = None) -> str:
    """A second person approves a money-moving resolution: its ledger entry is posted; returns the entry's ref."""
    _check_operator(actor, "actor")
    now = now or dt.datetime.now(dt.UTC)
    row = _locked(conn, ref)
    _require_state(row, "pending_approval")
    if row.resolved_by == actor:
        raise errors.ApproverMustDiffer(
            f"{actor} resolved {ref}; a second person approves a resolution that moves money", field="actor"
        )
    (debit, credit), amount = _adjustment_legs(row, row.action)
    refs = {name: ledger.open_account(conn, request=request)[0].ref for name, request in (("d", debit), ("c", credit))}
    entry = ledger.post_entry(
        conn,
        request=EntryRequest(
            idempotency_key=f"recon:{row.ref}",
            business_code=BUSINESS_CODE,
            legs=(
                Leg(refs["d"], "debit", amount, row.currency),
                Leg(refs["c"], "credit", amount, row.currency),
            ),
            metadata={
                "discrepancy": row.ref,
                "class": row._mapping["class"],
                "action": row.action,
                "order_ref": row.order_ref,
            },
        ),
        now=now,
    ).entry
    _move(conn, row, now, state="resolved", approved_by=actor, entry_ref=entry.ref)
    _log(conn, row.id, actor, "approve", now, entry=entry.ref, amount=amount)
    return entry.ref


def _adjustment_legs(row: Any, action: str) -> tuple[tuple[AccountRequest, AccountRequest], int]:
    """The accounts (debit, credit) and amount a money-moving action posts for a discrepancy."""
    channel_amount, platform_amount = row.channel_amount or 0, row.platform_amount or 0
    if row._mapping["class"] == "fee_mismatch":
        channel_amount, platform_amount = -(row.channel_fee or 0), -(row.platform_fee or 0)
    difference = channel_amount - platform_amount
    if row.kind == "refund":
        difference = -difference  # a refund is money leaving the channel: more refunded there, less held
    # difference > 0: the channel holds more than we booked
    clearing = payment_postings.channel_clearing_request(row.channel, row.currency)
    if action == "write_off" and difference < 0:
        return (_platform_account("fund_losses", row.currency), clearing), -difference
    if action == "book_overage" and difference > 0:
        return (clearing, _platform_account("non_operating_income", row.currency)), difference
    raise errors.ResolutionActionInvalid(
        f"{action} does not fit {row.ref}: the channel's side differs from ours by {difference}", field="action"
    )


def _platform_account(ledger_code: str, currency: str) -> AccountRequest:
    suffix = "" if currency == "CNY" else f":{currency}"
    return AccountRequest(
        key=f"platform:{ledger_code}{suffix}",
        ledger_code=ledger_code,
        currency=currency,
        normal_side="debit" if ledger_code == "fund_losses" else "credit",
        owner_ref="platform",
    )


def history(conn: Connection, *, ref: str) -> list[dict[str, Any]]:
    """Every step taken on a discrepancy, oldest first."""
    row = conn.execute(sa.select(discrepancies.c.id).where(discrepancies.c.ref == ref)).first()
    if row is None:
        raise errors.DiscrepancyNotFound(f"no discrepancy {ref!r}", field="ref")
    return [
        {"actor": step.actor, "action": step.action, "detail": step.detail, "at": step.at}
        for step in conn.execute(sa.select(actions).where(actions.c.discrepancy_id == row.id).order_by(actions.c.id))
    ]
