"""Property tests: random sequences of valid and invalid ledger operations keep every invariant.

After every step:
- per currency, total debits equal total credits (posted, and pending);
- no constrained account breaks its constraint;
- each account's balance equals the sum of the postings of the entries accepted so far
  (a model kept beside the ledger from what the ledger returned);
and every refused or replayed operation leaves the database exactly as it was.
At the end, the chain verifies; tampering with any one stored entry makes it fail naming that entry.
"""

from __future__ import annotations

import datetime as dt
import shutil
import uuid
from collections import defaultdict

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from tests.conftest import reset_postgres
from tests.integration.test_ledger_chain import tamper
from tests.ledger_helpers import snapshot

from zhangfang.db.engine import create_engine
from zhangfang.db.uow import run_in_transaction
from zhangfang.errors import ZhangfangError
from zhangfang.ledger import service as ledger
from zhangfang.ledger.models import AccountRequest, EntryRequest, EntryResult, Leg
from zhangfang.ledger.tables import accounts as accounts_table

NOW = dt.datetime(2026, 11, 25, 8, 0, tzinfo=dt.UTC)

ACCOUNTS = {
    # name: (currency, normal side, flags)
    "bank": ("CNY", "debit", {}),
    "alice": ("CNY", "credit", {"debits_must_not_exceed_credits": True}),
    "bob": ("CNY", "credit", {"debits_must_not_exceed_credits": True}),
    "shop": ("CNY", "credit", {"debits_must_not_exceed_credits": True}),
    "limited": ("CNY", "debit", {"credits_must_not_exceed_debits": True}),
    "fee": ("CNY", "credit", {"hot": True}),
    "usd_bank": ("USD", "debit", {}),
    "usd_wallet": ("USD", "credit", {"debits_must_not_exceed_credits": True}),
}
NAMES = sorted(ACCOUNTS)
KEYS = [f"k{i}" for i in range(12)]  # a small pool, so keys collide: replays and conflicts


def fresh_engine(database, tmp_path_factory, template):
    if database.kind == "sqlite":
        path = tmp_path_factory.mktemp("prop") / f"{uuid.uuid4().hex}.db"
        shutil.copyfile(template, path)
        return create_engine(f"sqlite:///{path}")
    engine = create_engine(database.url)
    reset_postgres(engine)
    return engine


legs_strategy = st.lists(
    st.tuples(st.sampled_from(NAMES), st.sampled_from(["debit", "credit"]), st.integers(-5, 400)),
    min_size=1,
    max_size=4,
)


class LedgerMachine(RuleBasedStateMachine):
    holds = Bundle("holds")
    entries = Bundle("entries")

    def __init__(self, make_engine):
        super().__init__()
        self.engine = make_engine()
        self.refs: dict[str, str] = {}
        self.expected: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.expired_seen: set[str] = set()
        self.posted_requests: list[EntryRequest] = []

    def teardown(self):
        self.engine.dispose()

    # ------------------------------------------------------------------ helpers

    def run(self, work):
        return run_in_transaction(self.engine, work)

    def record(self, result):
        if isinstance(result, EntryResult) and not result.replayed:
            for p in result.entry.postings:
                kind = "posted" if p.effect == "posted" else "pending"
                sign = -1 if p.effect == "release" else 1
                self.expected[p.account][f"{p.side}s_{kind}"] += sign * p.amount

    def attempt(self, work):
        """Run an operation; a refusal must leave every row as it was."""
        before = snapshot(self.engine)
        try:
            return self.run(work)
        except ZhangfangError:
            assert snapshot(self.engine) == before
            return None

    # ------------------------------------------------------------------ rules

    @initialize()
    def open_accounts(self):
        for name, (currency, side, flags) in ACCOUNTS.items():
            request = AccountRequest(key=name, ledger_code=name, currency=currency, normal_side=side, **flags)
            account, _ = self.run(lambda conn, r=request: ledger.open_account(conn, request=r))
            self.refs[name] = account.ref

    @rule(
        target=entries,
        key=st.sampled_from(KEYS),
        legs=legs_strategy,
        balance_it=st.booleans(),
        currency=st.sampled_from(["CNY", "CNY", "USD"]),
        alone=st.booleans(),
    )
    def post_entry(self, key, legs, balance_it, currency, alone):
        built = [Leg(self.refs[name], side, amount, currency) for name, side, amount in legs]
        if balance_it:
            net = sum(leg.amount if leg.side == "debit" else -leg.amount for leg in built)
            if net:
                counter = "bank" if currency == "CNY" else "usd_bank"
                built.append(Leg(self.refs[counter], "credit" if net > 0 else "debit", abs(net), currency))
        request = EntryRequest(idempotency_key=key, business_code="prop", legs=tuple(built))
        before = snapshot(self.engine)
        try:
            if alone:  # its own transaction: on PostgreSQL the one-statement fast path
                result = ledger.post_entry_alone(self.engine, request=request)
            else:
                result = self.run(lambda conn: ledger.post_entry(conn, request=request))
        except ZhangfangError:
            assert snapshot(self.engine) == before
            return None
        if result.replayed:
            assert snapshot(self.engine) == before
        else:
            self.posted_requests.append(request)
        self.record(result)
        return result.entry.ref

    @rule(data=st.data())
    def replay_an_accepted_entry(self, data):
        if not self.posted_requests:
            return
        request = data.draw(st.sampled_from(self.posted_requests))
        before = snapshot(self.engine)
        result = self.run(lambda conn: ledger.post_entry(conn, request=request))
        assert result.replayed
        assert result.entry.idempotency_key == request.idempotency_key
        assert snapshot(self.engine) == before

    @rule(
        requests=st.lists(st.tuples(st.sampled_from(KEYS), legs_strategy), min_size=1, max_size=5),
        atomic=st.booleans(),
    )
    def post_batch(self, requests, atomic):
        built = []
        for key, legs in requests:
            parts = [Leg(self.refs[name], side, amount, "CNY") for name, side, amount in legs]
            net = sum(leg.amount if leg.side == "debit" else -leg.amount for leg in parts)
            if net:
                parts.append(Leg(self.refs["bank"], "credit" if net > 0 else "debit", abs(net), "CNY"))
            built.append(EntryRequest(idempotency_key=f"batch-{key}", business_code="prop", legs=tuple(parts)))
        results = self.attempt(lambda conn: ledger.post_entries(conn, requests=built, atomic=atomic))
        for result in results or []:
            self.record(result)

    @rule(
        target=holds,
        debit=st.sampled_from(NAMES),
        credit=st.sampled_from(NAMES),
        amount=st.integers(-1, 300),
        expiring=st.booleans(),
        key=st.sampled_from(KEYS),
    )
    def create_hold(self, debit, credit, amount, expiring, key):
        currency = ACCOUNTS[debit][0]
        result = self.attempt(
            lambda conn: ledger.create_hold(
                conn,
                idempotency_key=f"hold-{key}",
                debit_account=self.refs[debit],
                credit_account=self.refs[credit],
                amount=amount,
                currency=currency,
                business_code="prop",
                expires_at=NOW + dt.timedelta(hours=1) if expiring else None,
                now=NOW,
            )
        )
        if result is None:
            return "hld_none"
        if not result.replayed:
            self.record(EntryResult(entry=result.entry))
        return result.hold.ref

    @rule(hold=holds, amount=st.one_of(st.none(), st.integers(-1, 320)), key=st.sampled_from(KEYS))
    def post_hold(self, hold, amount, key):
        result = self.attempt(
            lambda conn: ledger.post_hold(conn, ref=hold, idempotency_key=f"post-{key}", amount=amount, now=NOW)
        )
        if result is not None and not result.replayed:
            self.record(EntryResult(entry=result.entry))

    @rule(hold=holds, key=st.sampled_from(KEYS))
    def void_hold(self, hold, key):
        result = self.attempt(lambda conn: ledger.void_hold(conn, ref=hold, idempotency_key=f"void-{key}", now=NOW))
        if result is not None and not result.replayed:
            self.record(EntryResult(entry=result.entry))

    @rule(entry=entries)
    def reverse(self, entry):
        if entry is None:
            return
        result = self.attempt(lambda conn: ledger.reverse_entry(conn, ref=entry))
        if result is not None:
            self.record(result)

    @rule(hours=st.integers(0, 3))
    def expire_holds(self, hours):
        released = self.run(lambda conn: ledger.expire_holds(conn, now=NOW + dt.timedelta(hours=hours)))
        with self.engine.connect() as conn:
            refs = conn.execute(sa.text("SELECT ref FROM ledger_entries WHERE kind = 'hold_expire'")).scalars().all()
        unseen = [ref for ref in refs if ref not in self.expired_seen]
        assert len(unseen) == released
        for ref in unseen:
            self.expired_seen.add(ref)
            self.record(EntryResult(entry=self.run(lambda conn, r=ref: ledger.get_entry(conn, ref=r))))

    @rule()
    def fold(self):
        self.run(lambda conn: ledger.fold_hot_accounts(conn))

    @rule()
    def seal(self):
        self.run(lambda conn: ledger.seal_entries(conn, limit=7))

    @rule()
    def close_day(self):
        day = self.run(ledger.open_date)
        ledger.close_day(self.engine, accounting_date=day, wait_seconds_max=10)

    # ------------------------------------------------------------------ invariants

    @invariant()
    def balances_equal_the_accepted_postings_and_debits_equal_credits(self):
        if not self.refs:
            return
        totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for name, ref in self.refs.items():
            account = self.run(lambda conn, r=ref: ledger.get_account(conn, ref=r))
            b = account.balance
            expected = self.expected[ref]
            assert (b.debits_posted, b.credits_posted, b.debits_pending, b.credits_pending) == (
                expected["debits_posted"],
                expected["credits_posted"],
                expected["debits_pending"],
                expected["credits_pending"],
            ), name
            if account.debits_must_not_exceed_credits:
                assert b.debits_posted + b.debits_pending <= b.credits_posted, name
            if account.credits_must_not_exceed_debits:
                assert b.credits_posted + b.credits_pending <= b.debits_posted, name
            totals[account.currency][0] += b.debits_posted - b.credits_posted
            totals[account.currency][1] += b.debits_pending - b.credits_pending
        assert all(posted == 0 and pending == 0 for posted, pending in totals.values()), dict(totals)

    @invariant()
    def stored_rows_agree_with_the_balance_rows(self):
        # Non-hot balance rows must equal the sum of their postings; hot rows plus deltas likewise.
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(accounts_table.c.ref)).scalars().all()
        for ref in rows:
            now = self.run(lambda conn, r=ref: ledger.get_account(conn, ref=r)).balance
            from_postings = self.run(lambda conn, r=ref: ledger.balance(conn, ref=r, as_of_entry_id=10**12))
            assert (now.debits_posted, now.credits_posted, now.debits_pending, now.credits_pending) == (
                from_postings.debits_posted,
                from_postings.credits_posted,
                from_postings.debits_pending,
                from_postings.credits_pending,
            )

    def check_chain(self):
        while self.run(lambda conn: ledger.seal_entries(conn)):
            pass
        report = self.run(lambda conn: ledger.verify_chain(conn))
        assert report.ok, report


def test_random_operations_keep_every_ledger_invariant(database, tmp_path_factory, sqlite_template):
    class Machine(LedgerMachine):
        def __init__(self):
            super().__init__(lambda: fresh_engine(database, tmp_path_factory, sqlite_template))

        def teardown(self):
            self.check_chain()
            super().teardown()

    run_state_machine_as_test(
        Machine,
        settings=settings(
            max_examples=12 if database.kind == "postgresql" else 20,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        ),
    )


@pytest.mark.parametrize("seed", [0])
@given(data=st.data())
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_tampering_with_any_one_entry_is_named_by_verify(database, tmp_path_factory, sqlite_template, seed, data):
    engine = fresh_engine(database, tmp_path_factory, sqlite_template)
    try:
        machine_refs = {}
        for name in ("bank", "alice"):
            currency, side, flags = ACCOUNTS[name]
            request = AccountRequest(key=name, ledger_code=name, currency=currency, normal_side=side, **flags)
            machine_refs[name] = run_in_transaction(
                engine, lambda conn, r=request: ledger.open_account(conn, request=r)
            )[0]
        count = data.draw(st.integers(1, 12))
        posted = []
        for i in range(count):
            request = EntryRequest(
                idempotency_key=f"t{i}",
                business_code="prop",
                legs=(
                    Leg(machine_refs["bank"].ref, "debit", i + 1, "CNY"),
                    Leg(machine_refs["alice"].ref, "credit", i + 1, "CNY"),
                ),
            )
            posted.append(run_in_transaction(engine, lambda conn, r=request: ledger.post_entry(conn, request=r)).entry)
            if data.draw(st.booleans()):
                run_in_transaction(engine, lambda conn: ledger.seal_entries(conn))
        run_in_transaction(engine, lambda conn: ledger.seal_entries(conn))
        assert run_in_transaction(engine, lambda conn: ledger.verify_chain(conn)).ok
        victim = data.draw(st.sampled_from(posted))
        change = data.draw(
            st.sampled_from(
                [
                    f"UPDATE ledger_postings SET amount = amount + 1 WHERE entry_id = {victim.id} AND seq = 0",
                    "UPDATE ledger_postings SET account_id = account_id WHERE 1 = 0",  # no-op control
                    f"UPDATE ledger_entries SET metadata = '{{\"x\": 1}}' WHERE id = {victim.id}",
                    "UPDATE ledger_entries SET created_at = created_at WHERE 1 = 0",  # no-op control
                    f"UPDATE ledger_postings SET side = CASE side WHEN 'debit' THEN 'credit' ELSE 'debit' END "
                    f"WHERE entry_id = {victim.id}",
                ]
            )
        )
        tamper(engine, change)
        report = run_in_transaction(engine, lambda conn: ledger.verify_chain(conn))
        if "1 = 0" in change:
            assert report.ok
        else:
            assert (report.ok, report.first_bad_entry) == (False, victim.ref)
    finally:
        engine.dispose()
