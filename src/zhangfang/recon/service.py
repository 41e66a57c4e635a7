"""Reconciliation (对账): import a channel's bill, match it against our records of the day, keep the differences.

Import (``import_bill``): the importer streams the file (``recon.importers``,
``reader.batches``: lines as columns); its lines are written in batches inside
one transaction (``_LineWriter``: one ``COPY`` on PostgreSQL, ``executemany``
on SQLite), each batch by a helper thread while the next is parsed. A file with
a malformed line imports nothing (``recon_file_invalid``, listing line numbers
and reasons; once a line is refused the rest is only read for its errors)
unless the caller asks for a partial import, which writes the valid lines and
returns the rejected ones (the CLI writes them to a rejects file). The same
bytes for the same channel and date import once.

Matching (``run``), per channel and bill date, in SQL:

- the pool on the channel's side is the day's new lines plus lines carried from
  earlier days; on ours, the channel's succeeded payment attempts and refunds of
  the day (Asia/Shanghai), and those of the last ``carry_seconds`` of the day
  before that no bill has matched yet;
- the key is our number at the channel (``pat_…`` for a payment, ``rfd_…`` for a
  refund); a second line with a key already on the bill is a ``duplicate``;
- same key, same amount, same fee (payments: the route's cost) → matched;
  otherwise ``amount_mismatch``, ``fee_mismatch``, or ``status_mismatch`` (the
  bill says the trade did not succeed);
- a line with no record of ours is ``channel_only`` (长款) — unless it falls in the
  last ``carry_seconds`` of the day, when it is carried to the next day's run first
  (跨日); a record of ours with no line is ``platform_only`` (短款) under the same rule.

The lines that agree are never written: the database finds the others (an
anti-join against our records) and only those are read into Python (a stream,
with our records fetched for a thousand lines at a time), classified, and marked
``differs`` or ``carried``. A line still ``new`` once its day has had its run is
a matched line; rewriting a million agreeing lines cost more than the rest of
the run together.

Guarantees
- A run happens once per channel and date; every pooled line ends matched,
  carried, or in exactly one discrepancy. A new bill for a day that has had its
  run is refused (``recon_run_exists``): nothing would ever match its lines.
- Nothing here moves money: resolutions that do go through the ledger (``workflow``).
"""

from __future__ import annotations

import datetime as dt
import gc
import hashlib
import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from itertools import chain, repeat
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from zhangfang import ids
from zhangfang.accounting import reports as books
from zhangfang.channels.registry import ChannelRegistry
from zhangfang.db.sql import sum_minor
from zhangfang.db.uow import run_in_transaction
from zhangfang.payments import reconciliation
from zhangfang.recon import errors
from zhangfang.recon.importers import LineBatch, LineError, iter_statement
from zhangfang.recon.tables import bill_lines, bills, discrepancies, runs

SHANGHAI = ZoneInfo("Asia/Shanghai")
# Lines per batch handed to the writer thread: each hand-off waits for the parser to let go of the GIL
# (up to 5 ms), so fewer, larger batches; 50,000 lines are about 10 MB, however long the file.
INSERT_BATCH = 50_000
CARRY_SECONDS_DEFAULT = 1_800  # items in the last half hour of a day may be on the next day's bill
# What the channels' bills say of a trade that went through (a line with no status — the direct banks
# list succeeded trades only — went through too); anything else is a status mismatch.
SUCCESS_STATUSES = ("SUCCESS", "TRADE_SUCCESS", "TRADE_FINISHED", "REFUND", "交易", "退款", "成功", "succeeded")


@dataclass(frozen=True)
class ImportResult:
    ref: str
    channel: str
    bill_date: dt.date
    line_count: int
    rejected: tuple[LineError, ...]
    totals: dict[str, Any]
    replayed: bool


@dataclass(frozen=True)
class RunResult:
    channel: str
    bill_date: dt.date
    matched_count: int
    matched_amount: int
    carried_count: int
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # class → {"count", "amount"}


BILL_DATE_MIN, BILL_DATE_MAX = dt.date(2000, 1, 1), dt.date(9998, 12, 31)


def check_bill_date(day: object) -> dt.date:
    """A bill's business date: a date between 2000 and 9998 (``bill_date_invalid``)."""
    if not isinstance(day, dt.date) or isinstance(day, dt.datetime) or not BILL_DATE_MIN <= day <= BILL_DATE_MAX:
        raise errors.BillDateInvalid(
            f"bill_date must be a date from {BILL_DATE_MIN} to {BILL_DATE_MAX}", field="bill_date"
        )
    return day


def day_bounds(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """The UTC instants a business date (Asia/Shanghai) starts and ends."""
    start = dt.datetime.combine(day, dt.time(), SHANGHAI).astimezone(dt.UTC)
    return start, start + dt.timedelta(days=1)


# --------------------------------------------------------------------------- import


def import_bill(
    engine: Engine,
    *,
    channel: str,
    bill_date: dt.date,
    path: Path,
    fmt: str,
    partial: bool = False,
    on_lines: Callable[[int], None] | None = None,
    now: dt.datetime | None = None,
) -> ImportResult:
    """Import a bill file for a channel and date (see the module docstring); ``on_lines`` reports progress."""
    check_bill_date(bill_date)
    now = now or dt.datetime.now(dt.UTC)
    digest = _sha256(path)

    def work(conn: Connection) -> ImportResult:
        existing = conn.execute(
            sa.select(bills).where(bills.c.channel == channel, bills.c.bill_date == bill_date, bills.c.sha256 == digest)
        ).first()
        if existing is not None:
            return ImportResult(
                existing.ref, channel, bill_date, existing.line_count, (), existing.totals, replayed=True
            )
        if conn.execute(sa.select(runs.c.id).where(runs.c.channel == channel, runs.c.bill_date == bill_date)).first():
            raise errors.ReconRunExists(
                f"{channel} {bill_date} is reconciled already: a bill imported now would never be matched",
                field="bill_date",
            )
        ref = ids.new_id("rcb")
        bill_id = conn.execute(
            bills.insert()
            .values(
                ref=ref,
                channel=channel,
                bill_date=bill_date,
                format=fmt,
                file_name=path.name,
                sha256=digest,
                line_count=0,
                rejected_count=0,
                totals={},
                imported_at=now,
            )
            .returning(bills.c.id)
        ).scalar_one()
        reader = iter_statement(path, fmt)
        rejected: list[LineError] = []
        pending: list[LineBatch] = []
        pending_count = written = 0
        with (
            _cycle_collector_paused(),
            _LineWriter(conn, bill_id=bill_id, channel=channel, bill_date=bill_date) as writer,
        ):
            for chunk in reader.batches(INSERT_BATCH):
                if isinstance(chunk, LineError):
                    rejected.append(chunk)
                    continue
                pending.append(chunk)
                pending_count += len(chunk)
                if pending_count >= INSERT_BATCH:
                    if partial or not rejected:  # else the import fails: the rest is read only for its errors
                        writer.write(pending)
                    written += pending_count
                    pending, pending_count = [], 0
                    if on_lines is not None:
                        on_lines(written)
            if pending:
                if partial or not rejected:
                    writer.write(pending)
                written += pending_count
                if on_lines is not None:
                    on_lines(written)
        if rejected and not partial:
            raise errors.ReconFileInvalid(
                f"{path.name}: {len(rejected)} malformed line(s); nothing imported "
                f"(first: line {rejected[0].line_no}: {rejected[0].reason})",
                field="file",
                lines=[{"line": error.line_no, "reason": error.reason} for error in rejected[:100]],
            )
        totals = reader.totals.as_json()
        conn.execute(
            bills.update()
            .where(bills.c.id == bill_id)
            .values(line_count=written, rejected_count=len(rejected), totals=totals)
        )
        return ImportResult(ref, channel, bill_date, written, tuple(rejected), totals, replayed=False)

    return run_in_transaction(engine, work)


@contextmanager
def _cycle_collector_paused() -> Iterator[None]:
    """Parsing makes and drops millions of short-lived containers with no cycles among them; Python's
    cyclic collector scanned them again and again (7 % of a million-line import). Reference counting
    still frees every one of them at once."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


LINE_COLUMNS = (
    "bill_id", "channel", "bill_date", "line_no", "kind", "channel_ref", "order_ref", "amount", "fee", "currency",
    "status", "occurred_at", "state",
)  # fmt: skip
_COPY_SPECIAL = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


class _LineWriter:
    """Writes a bill's lines by the database's bulk path, a column at a time, while the file is read on.

    PostgreSQL: one ``COPY`` for the whole bill, fed text built with a few ``str.join`` calls per
    batch; SQLite: one ``INSERT … SELECT … FROM json_each(?)`` per batch, its rows one JSON text — no
    per-line Python beyond that (a per-line function call costs as much as the parsing). The
    database's side of a batch runs in a helper thread (libpq's send and SQLite's statement let go
    of the GIL) while the next batch is parsed;
    at most one batch is in flight, so memory does not grow with the file. Use it as a context manager:
    leaving it waits for the last batch and raises what writing raised.
    """

    def __init__(self, conn: Connection, *, bill_id: int, channel: str, bill_date: dt.date) -> None:
        self.conn = conn
        dialect = conn.dialect
        self.postgres = dialect.name == "postgresql"
        self.driver = conn.connection.driver_connection
        names = ", ".join(LINE_COLUMNS)
        if self.postgres:
            self.copy_sql = f"COPY recon_bill_lines ({names}) FROM STDIN"
            self.constants: tuple[Any, ...] = (
                str(bill_id), channel.translate(_COPY_SPECIAL), bill_date.isoformat()
            )  # fmt: skip
        else:
            # One statement per batch, its rows a JSON array that SQLite takes apart itself: the whole
            # insert then runs in SQLite's C with the GIL let go, beside the parsing of the next batch
            # (``executemany`` binds every value under the GIL and so ran after the parsing, not beside it).
            per_line = ", ".join(f"json_extract(value, '$[{i}]')" for i in range(len(LINE_COLUMNS) - 4))
            self.insert_sql = (
                f"INSERT INTO recon_bill_lines ({names}) SELECT ?, ?, ?, {per_line}, 'new' FROM json_each(?)"
            )
            to_db = bill_lines.c.bill_date.type.bind_processor(dialect)
            self.constants = (bill_id, channel, _sqlite_value(to_db(bill_date) if to_db else bill_date))
            self.time_to_db = bill_lines.c.occurred_at.type.bind_processor(dialect)
        self._helper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recon-import")
        self._in_flight: Future[None] | None = None
        self._copy: Any = None
        self._copy_context: Any = None

    def __enter__(self) -> _LineWriter:
        if self.postgres:
            self._cursor = self.driver.cursor()
            self._copy_context = self._cursor.copy(self.copy_sql)
            self._copy = self._copy_context.__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, traceback: Any) -> None:
        try:
            if self._in_flight is not None:
                in_flight, self._in_flight = self._in_flight, None
                if error is None:
                    in_flight.result()
                else:
                    wait([in_flight])
        except BaseException as failure:
            kind, error, traceback = type(failure), failure, failure.__traceback__
            raise
        finally:
            self._helper.shutdown()
            if self._copy_context is not None:
                self._copy_context.__exit__(kind, error, traceback)
                self._cursor.close()

    def write(self, batches: list[LineBatch]) -> None:
        """Hands ``batches`` to the database once the batch before them is written (raising what it raised)."""
        if self.postgres:
            work: Callable[[], None] = partial(self._copy.write, "".join(map(self._copy_text, batches)))
        else:
            rows = json.dumps(list(chain.from_iterable(map(self._rows, batches))), ensure_ascii=False)
            work = partial(self._insert, rows)
        if self._in_flight is not None:
            in_flight, self._in_flight = self._in_flight, None
            in_flight.result()
        self._in_flight = self._helper.submit(work)

    def _insert(self, rows: str) -> None:
        # The cursor is closed here, in the helper thread: left to the garbage collector of the main
        # thread, it would reset its (cached, shared) statement while the next batch is being written.
        self.driver.execute(self.insert_sql, (*self.constants, rows)).close()

    def _rows(self, batch: LineBatch) -> Iterable[tuple[Any, ...]]:
        """The batch's lines as rows of the columns that vary (the bill, channel, date and state do not)."""
        to_db = self.time_to_db
        times = {at: None if at is None else _sqlite_value(to_db(at) if to_db else at) for at in set(batch.occurred_at)}
        return zip(
            batch.line_no, batch.kind, batch.channel_ref, batch.order_ref, batch.amount, batch.fee, batch.currency,
            _statuses(batch.status), map(times.__getitem__, batch.occurred_at), strict=True,
        )  # fmt: skip

    def _copy_text(self, batch: LineBatch) -> str:
        """The batch as ``COPY`` text: a row a line, tab between values, ``\\N`` for NULL, specials escaped."""
        times = {at: "\\N" if at is None else at.isoformat() for at in set(batch.occurred_at)}
        bill_id, channel, day = self.constants
        columns = (
            repeat(bill_id), repeat(channel), repeat(day), map(str, batch.line_no), _copy_texts(batch.kind),
            _copy_texts(batch.channel_ref), _copy_texts(batch.order_ref), map(str, batch.amount),
            map(str, batch.fee), _copy_texts(batch.currency), _copy_texts(_statuses(batch.status)),
            map(times.__getitem__, batch.occurred_at), repeat("new"),
        )  # fmt: skip
        return "".join(map("%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n".__mod__, zip(*columns, strict=False)))


def _sqlite_value(value: Any) -> Any:
    """What the sqlite3 module would store for ``value`` (its adapters, e.g. dates as ISO text), done once."""
    return sqlite3.adapt(value, sqlite3.PrepareProtocol, value)


def _statuses(statuses: list[str | None]) -> list[str | None]:
    """A line's status as stored: at most 32 characters, None when empty."""
    stored = {status: (status or "")[:32] or None for status in set(statuses)}
    return list(map(stored.__getitem__, statuses))


def _copy_texts(values: list[str | None]) -> list[str]:
    """Text values for ``COPY``: backslash, tab and line ends escaped, None as ``\\N``."""
    has_null = None in values
    present: list[str] = [value for value in values if value is not None] if has_null else values  # type: ignore[assignment]
    joined = "".join(present)
    if "\\" in joined or "\t" in joined or "\n" in joined or "\r" in joined:
        return ["\\N" if value is None else value.translate(_COPY_SPECIAL) for value in values]
    if has_null:
        return ["\\N" if value is None else value for value in values]
    return present


# --------------------------------------------------------------------------- matching


def run(
    engine: Engine,
    *,
    channel: str,
    bill_date: dt.date,
    registry: ChannelRegistry | None = None,
    carry_seconds: int = CARRY_SECONDS_DEFAULT,
    now: dt.datetime | None = None,
) -> RunResult:
    """Match the channel's bill of ``bill_date`` against our records (see the module docstring); once per day."""
    check_bill_date(bill_date)
    now = now or dt.datetime.now(dt.UTC)
    start, end = day_bounds(bill_date)
    carry_from = end - dt.timedelta(seconds=carry_seconds)
    fee_sql = reconciliation.channel_fee(registry, channel)

    def work(conn: Connection) -> RunResult:
        if conn.execute(sa.select(runs.c.id).where(runs.c.channel == channel, runs.c.bill_date == bill_date)).first():
            raise errors.ReconRunExists(f"{channel} {bill_date} is reconciled already", field="bill_date")
        run_id = conn.execute(
            runs.insert()
            .values(
                channel=channel,
                bill_date=bill_date,
                matched_count=0,
                matched_amount=0,
                carried_count=0,
                counts={},
                ran_at=now,
            )
            .returning(runs.c.id)
        ).scalar_one()
        if conn.dialect.name == "postgresql":
            # The bill was just imported: without fresh statistics the planner takes it for empty and
            # joins it row by row with our payments.
            conn.exec_driver_sql("ANALYZE recon_bill_lines")
            # The streamed reads below are read to their end: plan them for the whole, not the first rows.
            conn.exec_driver_sql("SET LOCAL cursor_tuple_fraction = 1.0")
        in_pool = _pool(channel, bill_date)
        _mark_duplicates(conn, run_id, channel, bill_date, in_pool, now)
        since = start - dt.timedelta(seconds=carry_seconds)
        sides = {
            "payment": reconciliation.succeeded_payments(channel, since, end, fee_sql),
            "refund": reconciliation.succeeded_refunds(channel, since, end),
        }
        carried = late_matched = late_matched_amount = 0
        new_rows: list[dict[str, Any]] = []
        line_states: dict[int, str] = {}
        # Only the lines that may differ are read (the day's lines with no agreeing record, and the lines
        # carried from earlier days): a stream, with our records fetched a thousand lines at a time.
        for query in (_disagreeing(in_pool, bill_date, sides), _carried_in(in_pool, bill_date)):
            for lines in conn.execute(query.execution_options(yield_per=1000)).partitions():
                ours = _records_for(conn, sides, lines)
                for line in lines:
                    record = ours.get((line.kind, line.order_ref)) if line.order_ref else None
                    if record is None:
                        if line.occurred_at is not None and line.occurred_at >= carry_from:
                            # 跨日: our record may be dated the next day (a late notify); that run pools it again
                            line_states[line.id] = "carried"
                            carried += 1
                            continue
                        known = reconciliation.find_trade(conn, kind=line.kind, ref=line.order_ref)
                        new_rows.append(_discrepancy(run_id, channel, bill_date, "channel_only", line, known, now))
                    else:
                        klass = _compare(line, record)
                        if klass is None:  # a line carried from an earlier day whose record has come now
                            line_states[line.id] = "matched"
                            late_matched += 1
                            late_matched_amount += line.amount
                            continue
                        new_rows.append(_discrepancy(run_id, channel, bill_date, klass, line, record, now))
                    line_states[line.id] = "differs"
        # Our records no line of the bill carries.
        for kind, records in sides.items():
            for record in conn.execute(_unlined(kind, records, channel)).mappings():
                if record["at"] >= carry_from:
                    carried += 1  # may be on tomorrow's bill: the next run pools it again
                    continue
                new_rows.append(_discrepancy(run_id, channel, bill_date, "platform_only", None, dict(record), now))
        _set_states(conn, line_states, run_id)
        if new_rows:
            conn.execute(discrepancies.insert(), new_rows)
        # What is left "new" of the day agreed with our records: with this run it counts as matched.
        agreed, agreed_amount = conn.execute(
            sa.select(sa.func.count(), sa.func.coalesce(sum_minor(bill_lines.c.amount), 0)).where(
                bill_lines.c.channel == channel, bill_lines.c.bill_date == bill_date, bill_lines.c.state == "new"
            )
        ).one()
        matched_count, matched_amount = agreed + late_matched, agreed_amount + late_matched_amount
        counts: dict[str, dict[str, int]] = {}
        for row in conn.execute(
            sa.select(
                discrepancies.c["class"],
                sa.func.count(),
                sum_minor(sa.func.coalesce(discrepancies.c.channel_amount, discrepancies.c.platform_amount)),
            )
            .where(discrepancies.c.run_id == run_id)
            .group_by(discrepancies.c["class"])
        ):
            counts[row[0]] = {"count": row[1], "amount": row[2] or 0}
        conn.execute(
            runs.update()
            .where(runs.c.id == run_id)
            .values(matched_count=matched_count, matched_amount=matched_amount, carried_count=carried, counts=counts)
        )
        return RunResult(channel, bill_date, matched_count, matched_amount, carried, counts)

    return run_in_transaction(engine, work)


def _pool(channel: str, bill_date: dt.date) -> sa.ColumnElement[bool]:
    """The lines this run considers: the day's new lines and lines carried from before, not yet decided."""
    return sa.and_(
        bill_lines.c.channel == channel,
        sa.or_(
            sa.and_(bill_lines.c.bill_date == bill_date, bill_lines.c.state == "new"),
            sa.and_(bill_lines.c.bill_date < bill_date, bill_lines.c.state == "carried"),
        ),
    )


def _mark_duplicates(
    conn: Connection, run_id: int, channel: str, bill_date: dt.date, in_pool: sa.ColumnElement[bool], now: dt.datetime
) -> None:
    """A line whose (kind, number) an earlier line carries — in this pool or matched before — is a duplicate."""
    earlier = bill_lines.alias("earlier")
    extra = conn.execute(
        sa.select(bill_lines).where(
            in_pool,
            bill_lines.c.order_ref.is_not(None),
            sa.exists().where(
                earlier.c.order_ref == bill_lines.c.order_ref,
                earlier.c.kind == bill_lines.c.kind,
                earlier.c.channel == channel,
                earlier.c.id < bill_lines.c.id,
                sa.or_(
                    earlier.c.state == "matched",
                    sa.and_(earlier.c.bill_date == bill_date, earlier.c.state == "new"),
                    sa.and_(earlier.c.bill_date < bill_date, earlier.c.state == "carried"),
                    sa.and_(earlier.c.bill_date < bill_date, earlier.c.state == "new", _day_reconciled(earlier)),
                ),
            ),
        )
    ).all()
    if not extra:
        return
    conn.execute(
        discrepancies.insert(),
        [_discrepancy(run_id, channel, bill_date, "duplicate", line, None, now) for line in extra],
    )
    _set_states(conn, {line.id: "differs" for line in extra}, run_id)


def _day_reconciled(line: sa.FromClause) -> sa.ColumnElement[bool]:
    """The line's day has had its run (so a line of it still "new" agreed with our record)."""
    return sa.exists().where(runs.c.channel == line.c.channel, runs.c.bill_date == line.c.bill_date)


def _disagreeing(in_pool: sa.ColumnElement[bool], bill_date: dt.date, sides: dict[str, sa.Select]) -> sa.Select:
    """The day's pooled lines that no record of ours agrees with: same number, amount, currency and fee,
    and a status that says the trade went through. Anti-joins, so the database reads the million lines
    that agree and writes none of them."""
    agreeing = []
    for kind, records in sides.items():
        record = records.subquery(f"{kind}_record")
        agreeing.append(
            ~sa.exists().where(
                record.c.ref == bill_lines.c.order_ref,
                bill_lines.c.kind == kind,
                bill_lines.c.amount == record.c.amount,
                bill_lines.c.currency == record.c.currency,
                sa.or_(bill_lines.c.status.is_(None), bill_lines.c.status.in_(SUCCESS_STATUSES)),
                sa.or_(record.c.fee.is_(None), bill_lines.c.fee == record.c.fee),
            )
        )
    return (
        sa.select(bill_lines).where(in_pool, bill_lines.c.bill_date == bill_date, *agreeing).order_by(bill_lines.c.id)
    )


def _carried_in(in_pool: sa.ColumnElement[bool], bill_date: dt.date) -> sa.Select:
    """The pooled lines carried from earlier days: each now matches, differs, or is channel-only."""
    return sa.select(bill_lines).where(in_pool, bill_lines.c.bill_date < bill_date).order_by(bill_lines.c.id)


def _records_for(
    conn: Connection, sides: dict[str, sa.Select], lines: Iterable[Any]
) -> dict[tuple[str, str], dict[str, Any]]:
    """Our records of the day with the lines' numbers, by (kind, number)."""
    refs: dict[str, set[str]] = {}
    for line in lines:
        if line.kind in sides and line.order_ref:
            refs.setdefault(line.kind, set()).add(line.order_ref)
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for kind, numbers in refs.items():
        record = sides[kind].subquery("record")
        for row in conn.execute(sa.select(record).where(record.c.ref.in_(sorted(numbers)))).mappings():
            found.setdefault((kind, row["ref"]), dict(row))
    return found


def _unlined(kind: str, records: sa.Select, channel: str) -> sa.Select:
    """Our records of the day that no line of the channel's bills carries."""
    record = records.subquery("record")
    return sa.select(record).where(
        ~sa.exists().where(
            bill_lines.c.order_ref == record.c.ref, bill_lines.c.kind == kind, bill_lines.c.channel == channel
        )
    )


def _compare(line: Any, record: dict[str, Any]) -> str | None:
    """The class of difference between a line and our record of the same number, or None when they agree."""
    if line.status is not None and line.status.strip() not in SUCCESS_STATUSES:
        return "status_mismatch"
    if line.amount != record["amount"] or line.currency != record["currency"]:
        return "amount_mismatch"
    if record["fee"] is not None and line.fee != record["fee"]:
        return "fee_mismatch"
    return None


def _discrepancy(
    run_id: int,
    channel: str,
    bill_date: dt.date,
    klass: str,
    line: Any | None,
    record: dict[str, Any] | None,
    now: dt.datetime,
) -> dict[str, Any]:
    return {
        "ref": ids.new_id("dsc"),
        "run_id": run_id,
        "channel": channel,
        "bill_date": bill_date,
        "class": klass,
        "kind": line.kind if line is not None else record["kind"],
        "order_ref": line.order_ref if line is not None else record["ref"],
        "channel_ref": line.channel_ref if line is not None else None,
        "bill_line_id": line.id if line is not None else None,
        "currency": line.currency if line is not None else record["currency"],
        "channel_amount": line.amount if line is not None else None,
        "platform_amount": record["amount"] if record is not None else None,
        "channel_fee": line.fee if line is not None else None,
        "platform_fee": record["fee"] if record is not None else None,
        "channel_status": line.status if line is not None else None,
        "platform_status": record["status"] if record is not None else None,
        "state": "open",
        "created_at": now,
        "updated_at": now,
    }


def _set_states(conn: Connection, states: dict[int, str], run_id: int) -> None:
    """Write the lines the run decided one by one (never the day's agreeing lines: they stay "new")."""
    by_state: dict[str, list[int]] = {}
    for line_id, state in states.items():
        by_state.setdefault(state, []).append(line_id)
    for state, line_ids in by_state.items():
        for chunk in _chunks(line_ids, 10_000):
            conn.execute(bill_lines.update().where(bill_lines.c.id.in_(chunk)).values(state=state, run_id=run_id))


def _chunks(values: list[int], size: int) -> Iterable[list[int]]:
    for index in range(0, len(values), size):
        yield values[index : index + size]


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class DayReport:
    """A channel's day: bills imported, lines matched and carried, discrepancies by class and by state."""

    channel: str
    bill_date: dt.date
    bills: int
    lines: int
    matched_count: int
    matched_amount: int
    carried_count: int
    by_class: dict[str, dict[str, int]]
    by_state: dict[str, int]
    reconciled: bool  # a run happened


def report(conn: Connection, *, channel: str, bill_date: dt.date) -> DayReport:
    """The daily report of one channel (see ``DayReport``)."""
    bill_count, line_count = conn.execute(
        sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(bills.c.line_count), 0)).where(
            bills.c.channel == channel, bills.c.bill_date == bill_date
        )
    ).one()
    run_row = conn.execute(sa.select(runs).where(runs.c.channel == channel, runs.c.bill_date == bill_date)).first()
    by_state = dict(
        conn.execute(
            sa.select(discrepancies.c.state, sa.func.count())
            .where(discrepancies.c.channel == channel, discrepancies.c.bill_date == bill_date)
            .group_by(discrepancies.c.state)
        ).all()
    )
    return DayReport(
        channel=channel,
        bill_date=bill_date,
        bills=bill_count,
        lines=int(line_count),
        matched_count=run_row.matched_count if run_row else 0,
        matched_amount=run_row.matched_amount if run_row else 0,
        carried_count=run_row.carried_count if run_row else 0,
        by_class=dict(run_row.counts) if run_row else {},
        by_state=by_state,
        reconciled=run_row is not None,
    )


def list_discrepancies(
    conn: Connection,
    *,
    channel: str | None = None,
    bill_date: dt.date | None = None,
    state: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Discrepancies, oldest first, filtered."""
    query = sa.select(discrepancies).order_by(discrepancies.c.id).limit(limit)
    if channel is not None:
        query = query.where(discrepancies.c.channel == channel)
    if bill_date is not None:
        query = query.where(discrepancies.c.bill_date == bill_date)
    if state is not None:
        query = query.where(discrepancies.c.state == state)
    return [discrepancy_view(row) for row in conn.execute(query)]


def get_discrepancy(conn: Connection, *, ref: str) -> dict[str, Any]:
    row = conn.execute(sa.select(discrepancies).where(discrepancies.c.ref == ref)).first()
    if row is None:
        raise errors.DiscrepancyNotFound(f"no discrepancy {ref!r}", field="ref")
    return discrepancy_view(row)


def discrepancy_view(row: Any) -> dict[str, Any]:
    """A discrepancy as the API and ``--json`` show it (amounts in minor units)."""
    names = (
        "ref", "channel", "bill_date", "class", "kind", "order_ref", "channel_ref", "currency", "channel_amount",
        "platform_amount", "channel_fee", "platform_fee", "channel_status", "platform_status", "state", "assignee",
        "action", "reason", "resolved_by", "approved_by", "entry_ref", "created_at", "updated_at",
    )  # fmt: skip
    return {name: row._mapping[name] for name in names}


# --------------------------------------------------------------------------- 账实核对


@dataclass(frozen=True)
class BankBalanceCheck:
    """账实核对: the books' balance of a bank account against the bank's own statement."""

    date: dt.date
    currency: str
    subject_code: str
    aux: str | None
    statement_balance: int  # the statement's closing balance, signed (credit to us positive)
    books_balance: int  # debit positive: money at the bank is a debit balance of the asset subject

    @property
    def difference(self) -> int:
        return self.books_balance - self.statement_balance

    @property
    def agrees(self) -> bool:
        return self.difference == 0


def bank_balance_check(
    conn: Connection,
    *,
    statement: Path,
    fmt: str,
    date: dt.date,
    subject_code: str = "100202",
    aux: str | None = None,
) -> BankBalanceCheck:
    """Compare the books (accounting) with a bank statement's closing balance (MT940 or camt.053).

    The statement must read without a malformed line and carry a closing balance in
    exactly one currency (``recon_file_invalid`` otherwise); ``aux`` names the bank
    account in the books (its ledger key, e.g. ``bank:icbc:custody``), else the whole subject.
    """
    if fmt not in ("mt940", "camt053"):
        raise errors.ReconFormatInvalid("a bank balance comes from an mt940 or camt053 statement", field="format")
    reader = iter_statement(statement, fmt)
    problems = [item for item in reader if isinstance(item, LineError)]
    balances = {code: totals.closing_balance for code, totals in reader.totals.currencies.items()}
    balances = {code: value for code, value in balances.items() if value is not None}
    if problems or len(balances) != 1:
        reason = problems[0].reason if problems else f"closing balances in {len(balances)} currencies, not one"
        raise errors.ReconFileInvalid(
            f"{statement.name}: cannot give one closing balance ({reason})", field="statement"
        )
    [(currency, closing)] = balances.items()
    books_balance = books.subject_balance(conn, subject_code=subject_code, date=date, currency=currency, aux=aux)
    return BankBalanceCheck(date, currency, subject_code, aux, closing, books_balance)
