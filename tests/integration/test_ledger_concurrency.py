"""Concurrency: several processes post at once; nothing is lost, overdrawn, or surfaced as a deadlock."""

from __future__ import annotations

import multiprocessing
import random
from collections import defaultdict

from tests.ledger_helpers import account, bank, open_account, transfer, wallet

from zhangfang.db.engine import create_engine
from zhangfang.db.uow import run_in_transaction
from zhangfang.errors import ZhangfangError
from zhangfang.ledger import service as ledger
from zhangfang.ledger.models import EntryRequest, Leg

PROCESSES = 4
OPERATIONS_PER_PROCESS = 250


def _worker(url: str, refs: dict[str, str], seed: int, queue) -> None:
    """Post random transfers, batches and replays; report accepted postings and every unexpected error."""
    rng = random.Random(seed)
    engine = create_engine(url, pool_size=2)
    accepted: list[tuple[str, list[tuple[str, str, int]]]] = []
    refused: dict[str, int] = defaultdict(int)
    unexpected: list[str] = []
    wallets = [refs[name] for name in ("w1", "w2", "w3", "w4")]

    def request(key: str) -> EntryRequest:
        debit, credit = rng.sample([*wallets, refs["bank"]], 2)
        amount = rng.randint(2, 300)
        legs = [Leg(debit, "debit", amount, "CNY"), Leg(credit, "credit", amount - 1, "CNY")]
        legs.append(Leg(refs["fee"], "credit", 1, "CNY"))  # every entry touches the hot account
        return EntryRequest(idempotency_key=key, business_code="stress", legs=tuple(legs))

    def note(result) -> None:
        if not result.replayed:
            accepted.append((result.entry.ref, [(p.account, p.side, p.amount) for p in result.entry.postings]))

    for i in range(OPERATIONS_PER_PROCESS):
        key = f"p{seed}-{i}"
        choice = rng.random()
        try:
            if choice < 0.5:
                note(ledger.post_entry_alone(engine, request=request(key)))
            elif choice < 0.75:
                r = request(key)
                note(run_in_transaction(engine, lambda conn, r=r: ledger.post_entry(conn, request=r)))
            elif choice < 0.9:
                batch = [request(f"{key}-{j}") for j in range(rng.randint(2, 6))]
                results = run_in_transaction(
                    engine, lambda conn, b=batch: ledger.post_entries(conn, requests=b, atomic=False)
                )
                for result in results:
                    if isinstance(result, ZhangfangError):
                        refused[result.code] += 1
                    else:
                        note(result)
            elif accepted:
                # Replay an earlier key of this process: must come back replayed, change nothing.
                earlier_ref = rng.choice(accepted)[0]
                entry = run_in_transaction(engine, lambda conn, e=earlier_ref: ledger.get_entry(conn, ref=e))
                replay = EntryRequest(
                    idempotency_key=entry.idempotency_key,
                    business_code=entry.business_code,
                    legs=tuple(Leg(p.account, p.side, p.amount, p.currency) for p in entry.postings),
                )
                result = ledger.post_entry_alone(engine, request=replay)
                if not result.replayed:
                    unexpected.append(f"replay of {entry.idempotency_key} was not recognised")
        except ZhangfangError as error:
            refused[error.code] += 1
        except Exception as error:  # a deadlock, a serialization failure: must never reach the caller
            unexpected.append(f"{type(error).__name__}: {error}")
    engine.dispose()
    queue.put({"accepted": accepted, "refused": dict(refused), "unexpected": unexpected})


def test_concurrent_writers_never_lose_an_update_or_overdraw(database, engine):
    source, fee = bank(engine), open_account(engine, "fee", hot=True)
    refs = {"bank": source.ref, "fee": fee.ref}
    for name in ("w1", "w2", "w3", "w4"):
        refs[name] = wallet(engine, name).ref
        transfer(engine, f"seed-{name}", source.ref, refs[name], 2_000)
    expected: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for name in ("w1", "w2", "w3", "w4"):
        expected[refs[name]]["credit"] += 2_000
        expected[source.ref]["debit"] += 2_000

    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    processes = [context.Process(target=_worker, args=(database.url, refs, seed, queue)) for seed in range(PROCESSES)]
    for process in processes:
        process.start()
    reports = [queue.get(timeout=300) for _ in processes]
    for process in processes:
        process.join(timeout=60)

    assert [r["unexpected"] for r in reports] == [[]] * PROCESSES
    refusal_codes = {code for r in reports for code in r["refused"]}
    assert refusal_codes <= {"debits_exceed_credits"}
    accepted_refs = set()
    for report in reports:
        for ref, postings in report["accepted"]:
            accepted_refs.add(ref)
            for account_ref, side, amount in postings:
                expected[account_ref][side] += amount
    assert len(accepted_refs) > PROCESSES * OPERATIONS_PER_PROCESS // 3

    with engine.connect() as conn:
        stored = conn.exec_driver_sql("SELECT count(*) FROM ledger_entries WHERE business_code = 'stress'").scalar()
    assert stored == len(accepted_refs)
    run_in_transaction(engine, lambda conn: ledger.fold_hot_accounts(conn))
    for ref in refs.values():
        balance = account(engine, ref).balance
        assert (balance.debits_posted, balance.credits_posted) == (expected[ref]["debit"], expected[ref]["credit"])
        if ref != source.ref and ref != fee.ref:
            assert balance.debits_posted <= balance.credits_posted
