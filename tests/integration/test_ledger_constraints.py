"""The database keeps the ledger's rules too: each constraint fires when code would break it."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from tests.ledger_helpers import bank, open_account, transfer, wallet


def violate(engine, statement: str) -> None:
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.execute(sa.text(statement))


def test_a_constrained_account_cannot_be_overdrawn_even_by_direct_sql(engine):
    source, alice = bank(engine), wallet(engine, "alice")
    transfer(engine, "t", source.ref, alice.ref, 100)
    violate(engine, f"UPDATE ledger_accounts SET debits_posted = 101 WHERE id = {alice.id}")
    violate(engine, f"UPDATE ledger_accounts SET debits_pending = 101 WHERE id = {alice.id}")


def test_the_mirror_constraint_holds_for_credits(engine):
    limited = open_account(engine, "limited", normal_side="debit", credits_must_not_exceed_debits=True)
    violate(engine, f"UPDATE ledger_accounts SET credits_posted = 1 WHERE id = {limited.id}")


def test_balances_are_never_negative(engine):
    source = bank(engine)
    violate(engine, f"UPDATE ledger_accounts SET credits_pending = -1 WHERE id = {source.id}")


def test_a_hot_account_with_a_balance_constraint_is_refused_by_the_database(engine):
    fee = open_account(engine, "fee", hot=True)
    violate(engine, f"UPDATE ledger_accounts SET debits_must_not_exceed_credits = TRUE WHERE id = {fee.id}")


def test_both_balance_constraints_at_once_are_refused_by_the_database(engine):
    alice = wallet(engine, "alice")
    violate(engine, f"UPDATE ledger_accounts SET credits_must_not_exceed_debits = TRUE WHERE id = {alice.id}")


def test_posting_amounts_are_positive_and_keys_unique(engine):
    source, alice = bank(engine), wallet(engine, "alice")
    entry = transfer(engine, "t", source.ref, alice.ref, 100).entry
    violate(
        engine,
        "INSERT INTO ledger_postings (entry_id, seq, account_id, side, effect, amount, currency) "
        f"VALUES ({entry.id}, 9, {alice.id}, 'debit', 'posted', 0, 'CNY')",
    )
    violate(
        engine,
        "INSERT INTO ledger_entries (ref, idempotency_key, request_hash, kind, business_code, accounting_date, "
        "created_at) VALUES ('je_dup', 't', 'h', 'entry', 'x', '2026-01-01', '2026-01-01T00:00:00+00:00')",
    )


def test_sides_effects_and_kinds_come_from_closed_sets(engine):
    source, alice = bank(engine), wallet(engine, "alice")
    entry = transfer(engine, "t", source.ref, alice.ref, 100).entry
    for side, effect in (("side", "posted"), ("debit", "later"), ("Debit", "posted")):
        violate(
            engine,
            "INSERT INTO ledger_postings (entry_id, seq, account_id, side, effect, amount, currency) "
            f"VALUES ({entry.id}, 9, {alice.id}, '{side}', '{effect}', 1, 'CNY')",
        )
    violate(
        engine,
        "INSERT INTO ledger_entries (ref, idempotency_key, request_hash, kind, business_code, accounting_date, "
        "created_at) VALUES ('je_kind', 'k', 'h', 'gift', 'x', '2026-01-01', '2026-01-01T00:00:00+00:00')",
    )
