"""The hash chain: sealed after commit, verified from stored rows, tampering named."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from tests.ledger_helpers import bank, transfer, wallet

from zhangfang.db.uow import run_in_transaction
from zhangfang.ledger import service as ledger


def seal_all(engine):
    return run_in_transaction(engine, lambda conn: ledger.seal_entries(conn))


def verify(engine):
    return run_in_transaction(engine, lambda conn: ledger.verify_chain(conn), readonly=True)


def tamper(engine, sql: str) -> None:
    """Change stored rows as someone with database access could, past the append-only triggers."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text("ALTER TABLE ledger_postings DISABLE TRIGGER USER"))
            conn.execute(sa.text("ALTER TABLE ledger_entries DISABLE TRIGGER USER"))
            conn.execute(sa.text(sql))
            conn.execute(sa.text("ALTER TABLE ledger_postings ENABLE TRIGGER USER"))
            conn.execute(sa.text("ALTER TABLE ledger_entries ENABLE TRIGGER USER"))
        else:
            for trigger in (
                "ledger_postings_no_update",
                "ledger_postings_no_delete",
                "ledger_entries_seal_once",
                "ledger_entries_no_delete",
            ):
                conn.execute(sa.text(f"DROP TRIGGER IF EXISTS {trigger}"))
            conn.execute(sa.text(sql))


@pytest.fixture
def three_entries(engine):
    source, alice = bank(engine), wallet(engine, "alice")
    entries = [transfer(engine, f"t{i}", source.ref, alice.ref, 100 + i).entry for i in range(3)]
    return entries


def test_entries_wait_unsealed_until_the_sealing_job_runs(engine, three_entries):
    status = run_in_transaction(engine, lambda conn: ledger.chain_status(conn))
    assert (status.sealed_seq, status.unsealed_count) == (0, 3)
    assert status.oldest_unsealed == three_entries[0].ref
    assert seal_all(engine) == 3
    status = run_in_transaction(engine, lambda conn: ledger.chain_status(conn))
    assert (status.sealed_seq, status.unsealed_count, status.lag_seconds) == (3, 0, 0.0)
    report = verify(engine)
    assert report.ok and report.checked == 3


def test_changing_a_posting_amount_breaks_the_chain_at_that_entry(engine, three_entries):
    seal_all(engine)
    target = three_entries[1]
    tamper(engine, f"UPDATE ledger_postings SET amount = amount + 1 WHERE entry_id = {target.id}")
    report = verify(engine)
    assert not report.ok
    assert (report.first_bad_entry, report.reason) == (target.ref, "content_changed")


def test_changing_an_entry_field_breaks_the_chain_at_that_entry(engine, three_entries):
    seal_all(engine)
    target = three_entries[2]
    tamper(engine, f"UPDATE ledger_entries SET business_code = 'other' WHERE id = {target.id}")
    report = verify(engine)
    assert (report.ok, report.first_bad_entry) == (False, target.ref)


def test_deleting_an_entry_is_found_as_a_gap(engine, three_entries):
    seal_all(engine)
    target = three_entries[0]
    tamper(engine, f"DELETE FROM ledger_postings WHERE entry_id = {target.id}")
    tamper(engine, f"DELETE FROM ledger_entries WHERE id = {target.id}")
    report = verify(engine)
    assert (report.ok, report.reason, report.first_bad_seq) == (False, "entry_missing", 1)


def test_the_journal_refuses_updates_and_deletes(engine, three_entries):
    seal_all(engine)
    target = three_entries[0]
    for statement in (
        f"UPDATE ledger_postings SET amount = 1 WHERE entry_id = {target.id}",
        f"DELETE FROM ledger_postings WHERE entry_id = {target.id}",
        f"UPDATE ledger_entries SET business_code = 'x' WHERE id = {target.id}",
        f"UPDATE ledger_entries SET seal = 'x' WHERE id = {target.id}",
        f"DELETE FROM ledger_entries WHERE id = {target.id}",
        "DELETE FROM ledger_accounts",
    ):
        with pytest.raises(sa.exc.DBAPIError), engine.begin() as conn:
            conn.execute(sa.text(statement))
    assert verify(engine).ok
