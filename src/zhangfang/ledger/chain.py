"""The hash chain: every committed entry is sealed, after the fact, in the order it became visible.

Writers never touch the chain, so it is no global lock: ``seal_entries`` (a
job) takes unsealed entries oldest id first, hashes each one's stored content
(entry fields and postings), and links it to the previous seal:

    seal(n) = sha256(seal(n-1) ‖ n ‖ content_hash(entry))

An entry whose transaction commits late simply gets a later position. The
chain head (last position and seal) lives in ``ledger_chain_head``; the lag is
what ``chain_status`` reports.

Guarantees
- Positions are 1, 2, 3, … with no gap (the head row is locked while sealing).
- ``verify_chain`` recomputes every seal from stored rows and names the first
  entry whose content, position or seal no longer matches, and detects a chain
  cut short at the end.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from zhangfang.db.sql import canonical_json
from zhangfang.ledger.models import ChainStatus, VerifyReport
from zhangfang.ledger.posting import sha256_hex
from zhangfang.ledger.tables import chain_head, journal_entries, postings

GENESIS_SEAL = sha256_hex("zhangfang ledger genesis")


def content_hash(entry: Any, entry_postings: Sequence[Any]) -> str:
    """Hash of an entry as stored: every column that says what happened, and its postings."""
    content = {
        "ref": entry.ref,
        "idempotency_key": entry.idempotency_key,
        "request_hash": entry.request_hash,
        "kind": entry.kind,
        "business_code": entry.business_code,
        "accounting_date": entry.accounting_date.isoformat(),
        "metadata": entry.metadata,
        "reverses_entry_id": entry.reverses_entry_id,
        "hold_id": entry.hold_id,
        "created_at": entry.created_at.astimezone(dt.UTC).isoformat(),
        "postings": [[p.seq, p.account_id, p.side, p.effect, p.amount, p.currency] for p in entry_postings],
    }
    return sha256_hex(canonical_json(content))


def link(previous_seal: str, seal_seq: int, digest: str) -> str:
    return sha256_hex(f"{previous_seal}:{seal_seq}:{digest}")


def _postings_by_entry(conn: Connection, entry_ids: Sequence[int]) -> dict[int, list[Any]]:
    rows = conn.execute(
        sa.select(postings).where(postings.c.entry_id.in_(entry_ids)).order_by(postings.c.entry_id, postings.c.seq)
    ).all()
    grouped: dict[int, list[Any]] = defaultdict(list)
    for row in rows:
        grouped[row.entry_id].append(row)
    return grouped


def seal_entries(conn: Connection, *, limit: int = 5000) -> int:
    """Seal up to ``limit`` committed, unsealed entries onto the chain; returns how many."""
    head = conn.execute(sa.select(chain_head).where(chain_head.c.id == 1).with_for_update()).one()
    e = journal_entries
    entries = conn.execute(sa.select(e).where(e.c.seal_seq.is_(None)).order_by(e.c.id).limit(limit)).all()
    if not entries:
        return 0
    by_entry = _postings_by_entry(conn, [row.id for row in entries])
    seal, seq = head.seal, head.seal_seq
    updates = []
    for row in entries:
        seq += 1
        seal = link(seal, seq, content_hash(row, by_entry[row.id]))
        updates.append({"entry_id_": row.id, "seal_seq_": seq, "seal_": seal})
    conn.execute(
        e.update()
        .where(e.c.id == sa.bindparam("entry_id_"), e.c.seal_seq.is_(None))
        .values(seal_seq=sa.bindparam("seal_seq_"), seal=sa.bindparam("seal_")),
        updates,
    )
    conn.execute(chain_head.update().where(chain_head.c.id == 1).values(seal_seq=seq, seal=seal))
    return len(updates)


def chain_status(conn: Connection, *, now: dt.datetime | None = None) -> ChainStatus:
    """How far sealing has got: last position, entries waiting, and the age of the oldest one."""
    now = now or dt.datetime.now(dt.UTC)
    head = conn.execute(sa.select(chain_head.c.seal_seq).where(chain_head.c.id == 1)).scalar_one()
    e = journal_entries
    waiting = conn.execute(sa.select(sa.func.count(), sa.func.min(e.c.id)).where(e.c.seal_seq.is_(None))).one()
    oldest_ref, lag = None, 0.0
    if waiting[1] is not None:
        oldest = conn.execute(sa.select(e.c.ref, e.c.created_at).where(e.c.id == waiting[1])).one()
        oldest_ref = oldest.ref
        lag = max(0.0, (now - oldest.created_at).total_seconds())
    return ChainStatus(sealed_seq=head, unsealed_count=waiting[0], lag_seconds=lag, oldest_unsealed=oldest_ref)


def verify_chain(conn: Connection, *, batch: int = 5000) -> VerifyReport:
    """Walk the chain from the genesis seal and report the first entry that no longer matches."""
    e = journal_entries
    previous_seal, expected_seq, checked = GENESIS_SEAL, 1, 0
    unsealed = conn.execute(sa.select(sa.func.count()).where(e.c.seal_seq.is_(None))).scalar_one()
    while True:
        rows = conn.execute(sa.select(e).where(e.c.seal_seq >= expected_seq).order_by(e.c.seal_seq).limit(batch)).all()
        if not rows:
            break
        by_entry = _postings_by_entry(conn, [row.id for row in rows])
        for row in rows:
            if row.seal_seq != expected_seq:
                return VerifyReport(
                    ok=False,
                    checked=checked,
                    unsealed=unsealed,
                    first_bad_entry=row.ref,
                    first_bad_seq=expected_seq,
                    reason="entry_missing",
                    details={"message": f"no entry at chain position {expected_seq}; the next one is {row.ref}"},
                )
            recomputed = link(previous_seal, row.seal_seq, content_hash(row, by_entry[row.id]))
            if recomputed != row.seal:
                return VerifyReport(
                    ok=False,
                    checked=checked,
                    unsealed=unsealed,
                    first_bad_entry=row.ref,
                    first_bad_seq=row.seal_seq,
                    reason="content_changed",
                    details={"message": f"entry {row.ref} (chain position {row.seal_seq}) does not match its seal"},
                )
            previous_seal, expected_seq, checked = row.seal, expected_seq + 1, checked + 1
    head = conn.execute(sa.select(chain_head).where(chain_head.c.id == 1)).one()
    if head.seal_seq != expected_seq - 1 or head.seal != previous_seal:
        return VerifyReport(
            ok=False,
            checked=checked,
            unsealed=unsealed,
            first_bad_seq=expected_seq,
            reason="chain_truncated",
            details={"message": f"the chain head says {head.seal_seq} entries, the journal has {expected_seq - 1}"},
        )
    return VerifyReport(ok=True, checked=checked, unsealed=unsealed)
