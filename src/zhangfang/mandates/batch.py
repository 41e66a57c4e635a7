"""Withholding batch files (代扣文件): a merchant's CSV of debits, checked as a whole, executed row by row.

The file is UTF-8 (a BOM is allowed) CSV with this header and one debit per row::

    merchant_batch_no,row_no,mandate,amount,due_date,reference
    B20261201,1,mdt_01J…,12.34,2026-12-01,INV-0001

- ``merchant_batch_no``: the merchant's number for the file, the same on every
  row; a file is accepted once per number (the same file again returns the
  first batch; another file under the number is ``merchant_batch_no_conflict``).
- ``row_no``: a positive integer, unique in the file.
- ``mandate``: one of the merchant's mandates (``mdt_…``) in CNY.
- ``amount``: yuan with at most two decimals, positive (``12.34``).
- ``due_date``: ``YYYY-MM-DD`` (Asia/Shanghai), today to a year ahead.
- ``reference``: the merchant's, at most 64 printable characters; may be empty.

Guarantees
- Checked as a whole: any bad row refuses the file (``batch_file_invalid``,
  every problem listed in ``details.errors`` with its row number, line and
  code) and nothing is created.
- An accepted file is a batch (``dbb_…``) of rows; a job (``mandates.batch``)
  turns each row into a debit (``purpose="batch"``, key
  ``batch:<dbb_…>:<row_no>``) in a transaction of its own, so a crash resumes
  where it stopped and never makes a row's debit twice. A row the debit rules
  refuse (mandate not active, a limit, a restricted industry) is ``refused``
  with that code; the others are executed as any debit.
- The results file (``results_csv``) has one line per row, in row order, with
  its state, failure class, reason and debit; the merchant downloads it any time
  (rows not final yet say so) and hears ``debit_batch.finished`` once every row is final.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, Row

from zhangfang import ids, money
from zhangfang.config import Settings, get_settings
from zhangfang.db.sql import request_digest
from zhangfang.db.uow import run_in_transaction
from zhangfang.errors import ZhangfangError
from zhangfang.jobs import queue
from zhangfang.mandates import errors, service
from zhangfang.mandates.models import BatchResult, DebitBatch
from zhangfang.mandates.tables import mandate_batch_rows, mandate_batches, mandate_debits
from zhangfang.parties.models import Merchant

HEADER = ("merchant_batch_no", "row_no", "mandate", "amount", "due_date", "reference")
RESULT_HEADER = (*HEADER, "state", "failure_class", "reason", "debit")
ROWS_MAX = 10_000
FILE_BYTES_MAX = 2 * 1024 * 1024
ERRORS_LISTED_MAX = 100
CURRENCY = "CNY"  # amounts in the file are yuan
_ROW_NO = re.compile(r"[1-9][0-9]{0,8}")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


@dataclass(frozen=True)
class _Row:
    line: int
    row_no: int
    mandate: str
    amount: int
    due_date: dt.date
    reference: str | None


def _problem(problems: list[dict[str, Any]], line: int, row_no: Any, code: str, message: str) -> None:
    problems.append({"line": line, "row_no": row_no, "code": code, "message": message})


def _read(content: str | bytes) -> tuple[str | None, list[_Row], list[dict[str, Any]]]:
    """The batch number, the rows and every problem found without the database."""
    problems: list[dict[str, Any]] = []
    if isinstance(content, bytes):
        if len(content) > FILE_BYTES_MAX:
            _problem(problems, 0, None, "file_too_large", f"the file is more than {FILE_BYTES_MAX} bytes")
            return None, [], problems
        try:
            content = content.decode("utf-8")
        except UnicodeDecodeError:
            _problem(problems, 0, None, "encoding_invalid", "the file is not UTF-8")
            return None, [], problems
    if len(content.encode()) > FILE_BYTES_MAX:
        _problem(problems, 0, None, "file_too_large", f"the file is more than {FILE_BYTES_MAX} bytes")
        return None, [], problems
    lines = list(csv.reader(io.StringIO(content.removeprefix("\ufeff"), newline="")))
    if not lines or tuple(cell.strip() for cell in lines[0]) != HEADER:
        _problem(problems, 1, None, "header_invalid", f"the first line must be {','.join(HEADER)}")
        return None, [], problems
    numbers: set[str] = set()
    row_nos: set[int] = set()
    rows: list[_Row] = []
    today = service.business_date(dt.datetime.now(dt.UTC))
    for line, cells in enumerate(lines[1:], start=2):
        if not cells or all(not cell.strip() for cell in cells):
            continue  # blank lines (a trailing newline) are no rows
        if len(cells) != len(HEADER):
            _problem(
                problems, line, None, "column_count_invalid", f"{len(cells)} columns; the header has {len(HEADER)}"
            )
            continue
        number, row_no_text, mandate, amount_text, due_text, reference = (cell.strip() for cell in cells)
        row_no: int | None = int(row_no_text) if _ROW_NO.fullmatch(row_no_text) else None
        if row_no is None:
            _problem(problems, line, row_no_text, "row_no_invalid", "row_no is a positive integer")
        elif row_no in row_nos:
            _problem(problems, line, row_no, "row_no_duplicate", f"row_no {row_no} appears twice")
        else:
            row_nos.add(row_no)
        numbers.add(number)
        if not re.fullmatch(r"[A-Za-z0-9_\-.:]{1,64}", number):
            _problem(
                problems,
                line,
                row_no,
                "merchant_batch_no_invalid",
                "merchant_batch_no is 1 to 64 of A-Z a-z 0-9 _ - . :",
            )
        if not ids.is_valid_id(mandate, "mdt"):
            _problem(problems, line, row_no, "mandate_invalid", f"mandate {mandate!r} is not a mandate id (mdt_…)")
        amount = 0
        try:
            amount = money.parse_amount(amount_text, CURRENCY)
        except (ZhangfangError, ValueError):
            _problem(
                problems, line, row_no, "amount_invalid", f"amount {amount_text!r} is not yuan with at most 2 decimals"
            )
        else:
            if amount <= 0 or amount > 10_000_000_000:
                _problem(problems, line, row_no, "amount_invalid", f"amount {amount_text} must be positive")
        due = None
        try:
            due = dt.date.fromisoformat(due_text) if _DATE.fullmatch(due_text) else None
        except ValueError:
            due = None
        if due is None:
            _problem(problems, line, row_no, "due_date_invalid", f"due_date {due_text!r} is not YYYY-MM-DD")
        elif not today <= due <= today + dt.timedelta(days=service.DUE_DAYS_AHEAD_MAX):
            _problem(problems, line, row_no, "due_date_invalid", "due_date is from today to a year ahead")
        if reference and (len(reference) > 64 or not reference.isprintable()):
            _problem(problems, line, row_no, "reference_invalid", "reference is at most 64 printable characters")
        if row_no is not None and due is not None:
            rows.append(_Row(line, row_no, mandate, amount, due, reference or None))
    if len(numbers) > 1:
        _problem(problems, 0, None, "merchant_batch_no_mixed", "every row must carry the same merchant_batch_no")
    if not rows and not problems:
        _problem(problems, 2, None, "file_empty", "the file has no rows")
    if len(rows) > ROWS_MAX:
        _problem(problems, 0, None, "too_many_rows", f"a file has at most {ROWS_MAX} rows")
    return (numbers.pop() if len(numbers) == 1 else None), rows, problems


def _batch_from_row(conn: Connection, row: Row[Any]) -> DebitBatch:
    return DebitBatch(
        id=row.id,
        ref=row.ref,
        merchant_id=row.merchant_id,
        merchant_batch_no=row.merchant_batch_no,
        state=row.state,
        row_count=row.row_count,
        amount_total=row.amount_total,
        currency=row.currency,
        notify_url=row.notify_url,
        created_at=row.created_at,
        finished_at=row.finished_at,
        counts=service.batch_counts(conn, batch_id=row.id),
    )


def upload(
    conn: Connection,
    *,
    merchant: Merchant,
    content: str | bytes,
    notify_url: str | None = None,
    settings: Settings | None = None,
    now: dt.datetime | None = None,
) -> BatchResult:
    """Accept a batch file as a whole (or refuse it, writing nothing); its rows become debits by a job.

    Idempotent on the file's ``merchant_batch_no``. Refusals:
    ``merchant_batch_no_conflict``, then ``batch_file_invalid`` with every problem.
    """
    settings = settings or get_settings()
    now = dt.datetime.now(dt.UTC) if now is None else now.astimezone(dt.UTC)
    notify_url = service._check_url(notify_url)
    number, rows, problems = _read(content)
    digest = request_digest(
        {
            "rows": [[r.row_no, r.mandate, r.amount, r.due_date.isoformat(), r.reference] for r in rows],
            "notify_url": notify_url,
        }
    )
    if number is not None:
        existing = conn.execute(
            sa.select(mandate_batches).where(
                mandate_batches.c.merchant_id == merchant.id, mandate_batches.c.merchant_batch_no == number
            )
        ).first()
        if existing is not None:
            if existing.request_hash != digest or problems:
                raise errors.MerchantBatchNoConflict(
                    "a batch with this merchant_batch_no was uploaded with other content",
                    field="merchant_batch_no",
                    batch=existing.ref,
                )
            return BatchResult(batch=_batch_from_row(conn, existing), created=False)
    known = service.merchant_mandates(conn, merchant_id=merchant.id, refs=[row.mandate for row in rows])
    for row in rows:
        found = known.get(row.mandate)
        if found is None and ids.is_valid_id(row.mandate, "mdt"):
            _problem(problems, row.line, row.row_no, "mandate_not_found", f"you have no mandate {row.mandate}")
        elif found is not None and found.currency != CURRENCY:
            _problem(
                problems, row.line, row.row_no, "currency_mismatch", f"mandate {row.mandate} debits {found.currency}"
            )
    if problems:
        problems.sort(key=lambda problem: problem["line"])
        raise errors.BatchFileInvalid(
            f"the file has {len(problems)} problem(s); nothing was created",
            field="content",
            errors=problems[:ERRORS_LISTED_MAX],
            error_count=len(problems),
        )
    assert number is not None
    batch = conn.execute(
        mandate_batches.insert()
        .values(
            ref=ids.new_id("dbb"),
            merchant_id=merchant.id,
            merchant_batch_no=number,
            request_hash=digest,
            state="processing",
            row_count=len(rows),
            amount_total=sum(row.amount for row in rows),
            currency=CURRENCY,
            notify_url=notify_url,
            created_at=now,
            updated_at=now,
        )
        .returning(*mandate_batches.c)
    ).one()
    conn.execute(
        mandate_batch_rows.insert(),
        [
            {
                "batch_id": batch.id,
                "row_no": row.row_no,
                "mandate_ref": row.mandate,
                "amount": row.amount,
                "due_date": row.due_date,
                "reference": row.reference,
                "state": "pending",
            }
            for row in sorted(rows, key=lambda row: row.row_no)
        ],
    )
    queue.enqueue(conn, kind=service.JOB_BATCH, payload={"batch": batch.ref}, dedupe_key=f"{batch.ref}:submit", now=now)
    return BatchResult(batch=_batch_from_row(conn, batch))


def _batch_row(conn: Connection, *, ref: str, merchant_id: int | None) -> Row[Any]:
    query = sa.select(mandate_batches).where(mandate_batches.c.ref == service._check_ref(ref, "dbb"))
    if merchant_id is not None:
        query = query.where(mandate_batches.c.merchant_id == merchant_id)
    row = conn.execute(query).first()
    if row is None:
        raise errors.DebitBatchNotFound(f"batch {ref} does not exist", field="batch")
    return row


def get_batch(conn: Connection, *, ref: str, merchant_id: int | None = None) -> DebitBatch:
    """Returns a batch with its rows counted by result; with ``merchant_id``, only that merchant's."""
    return _batch_from_row(conn, _batch_row(conn, ref=ref, merchant_id=merchant_id))


def submit_rows(engine: Engine, *, batch_ref: str, settings: Settings, now: dt.datetime) -> int:
    """Makes each pending row of a batch a debit, one transaction per row; returns how many rows it handled."""
    batch = run_in_transaction(engine, lambda conn: _batch_row(conn, ref=batch_ref, merchant_id=None), readonly=True)
    pending = run_in_transaction(
        engine,
        lambda conn: conn.execute(
            sa.select(mandate_batch_rows)
            .where(mandate_batch_rows.c.batch_id == batch.id, mandate_batch_rows.c.state == "pending")
            .order_by(mandate_batch_rows.c.row_no)
        ).all(),
        readonly=True,
    )
    for row in pending:

        def submit(conn: Connection, row: Row[Any] = row) -> None:
            current = conn.execute(
                sa.select(mandate_batch_rows.c.state)
                .where(mandate_batch_rows.c.batch_id == batch.id, mandate_batch_rows.c.row_no == row.row_no)
                .with_for_update()
            ).scalar_one()
            if current != "pending":
                return
            result = service.request_debit(
                conn,
                merchant_id=batch.merchant_id,
                mandate_ref=row.mandate_ref,
                amount=row.amount,
                currency=batch.currency,
                key=f"batch:{batch.ref}:{row.row_no}",
                due_date=row.due_date,
                purpose="batch",
                purpose_ref=f"{batch.merchant_batch_no}:{row.row_no}"[:64],
                description=row.reference,
                notify_url=batch.notify_url,
                batch_id=batch.id,
                settings=settings,
                now=now,
            )
            conn.execute(
                mandate_batch_rows.update()
                .where(mandate_batch_rows.c.batch_id == batch.id, mandate_batch_rows.c.row_no == row.row_no)
                .values(state="submitted", debit_id=result.debit.id)
            )

        def refuse(conn: Connection, error: ZhangfangError, row: Row[Any] = row) -> None:
            conn.execute(
                mandate_batch_rows.update()
                .where(
                    mandate_batch_rows.c.batch_id == batch.id,
                    mandate_batch_rows.c.row_no == row.row_no,
                    mandate_batch_rows.c.state == "pending",
                )
                .values(state="refused", failure_code=error.code, failure_message=error.message[:500])
            )

        try:
            run_in_transaction(engine, submit)
        except ZhangfangError as error:
            run_in_transaction(engine, lambda conn, error=error: refuse(conn, error))
    run_in_transaction(engine, lambda conn: service.finish_batch_if_done(conn, batch_id=batch.id, now=now))
    return len(pending)


def results_csv(conn: Connection, *, ref: str, merchant_id: int | None = None) -> str:
    """The per-row results of a batch, as CSV (UTF-8, header first, rows in row order)."""
    batch = _batch_row(conn, ref=ref, merchant_id=merchant_id)
    r, d = mandate_batch_rows.c, mandate_debits.c
    rows = conn.execute(
        sa.select(
            r.row_no,
            r.mandate_ref,
            r.amount,
            r.due_date,
            r.reference,
            r.state,
            r.failure_code,
            d.ref.label("debit_ref"),
            d.state.label("debit_state"),
            d.failure_class,
            d.failure_code.label("debit_failure_code"),
        )
        .select_from(mandate_batch_rows.outerjoin(mandate_debits, d.id == r.debit_id))
        .where(r.batch_id == batch.id)
        .order_by(r.row_no)
    ).all()
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(RESULT_HEADER)
    for row in rows:
        if row.state == "refused":
            state, failure_class, reason = "failed", "hard", row.failure_code
        elif row.state == "pending":
            state, failure_class, reason = "pending", "", ""
        else:
            state, failure_class, reason = row.debit_state, row.failure_class or "", row.debit_failure_code or ""
        writer.writerow(
            [
                batch.merchant_batch_no,
                row.row_no,
                row.mandate_ref,
                money.format_minor(row.amount, batch.currency),
                row.due_date.isoformat(),
                row.reference or "",
                state,
                failure_class,
                reason,
                row.debit_ref or "",
            ]
        )
    return out.getvalue()
