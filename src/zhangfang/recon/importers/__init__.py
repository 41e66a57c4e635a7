"""Statement importers: channel bills and bank statements as a stream of normalized lines.

``iter_statement(source, fmt)`` reads one file of one format and yields, in file
order, a ``StatementLine`` for every record it accepts and a ``LineError`` for
every record it cannot accept or every place where the file disagrees with
itself; ``reader.totals`` keeps the running counts and sums per currency, the
file's own summary or balances, and is complete once the reader is exhausted.
``reader.batches()`` gives the same records with the accepted lines grouped in
``LineBatch`` columns (what a bulk writer wants: no object per line).

=============  ==========================================================  ===================
``fmt``        what                                                        module
=============  ==========================================================  ===================
bank_direct    a directly connected bank's trade bill (ICBC/CMB profiles)  ``bank_direct``
alipay         Alipay 业务明细 (the zip, or its GBK csv)                     ``alipay``
wechat         WeChat Pay trade bill (csv, or gzip), ALL layout            ``wechat``
mt940          SWIFT MT940 (through the ``mt-940`` library)                ``swift_mt940``
camt053        ISO 20022 camt.053, 001.02 … 001.13                         ``camt053``
=============  ==========================================================  ===================

Each module's docstring says which field lands where. In short: ``order_ref``
is always our number as the channel or bank knows it (the payment attempt
``pat_…`` as ``out_trade_no``, the refund ``rfd_…`` as the refund request
number, the end-to-end id or MT940 customer reference); ``channel_ref`` is the
channel's or bank's own number; ``fee`` is never negative (on a refund it is
the fee given back).

Guarantees
- Streaming: text is read from the (zip or gzip) stream 64 KiB at a time and
  its lines handed out as they are parsed; a line is never held after it is
  given out (``batches``: after its batch). Memory does not grow with the file
  (camt.053: one entry's XML subtree at a time; MT940: one statement's fields
  at a time).
- Bulk path (WeChat Pay): a block of plain detail rows — every value with its
  backtick, no quote, the header's width, values ``_row`` accepts as they are —
  is read a column at a time (``WechatParser._bulk``), a few calls per column
  instead of several per value; anything else in the block sends the whole block
  record by record. Either way the same lines, errors and totals come out
  (``tests/unit/test_recon_bulk_path.py`` reads damaged bills both ways).
- Never an exception mid-stream for anything in the file: a malformed record is
  a ``LineError`` with its line number and a reason, and reading goes on; an
  unreadable file (bad archive, XML not well-formed) ends the stream with a
  ``LineError``. Nothing is skipped silently: blank lines and the formats'
  comment lines are the only lines that yield nothing.
- Money is integer minor units, exact: an amount with more decimals than the
  currency has is refused, never rounded.
- Self-checks: a channel bill must agree with its own summary line(s) and a
  bank statement with its balances (opening + credits - debits = closing);
  disagreement is a ``LineError`` at the summary or closing balance line, and a
  truncated bill (no summary) is one too. ``totals.valid`` is true only for a
  file read to its end without a single ``LineError``.

Errors raised before reading (``zhangfang.recon.errors``): ``recon_format_invalid``,
``currency_unknown``, ``recon_profile_invalid``, ``recon_source_invalid``.
"""

from __future__ import annotations

import csv
import os
import zipfile
import zlib
from collections.abc import Iterator
from types import TracebackType
from typing import Any, BinaryIO

from zhangfang.channels.bank_direct import PROFILES, BankProfile
from zhangfang.money import currency as currency_of
from zhangfang.recon.errors import ReconFormatInvalid, ReconProfileInvalid, ReconSourceInvalid
from zhangfang.recon.importers._common import Parser, SourceUnreadable, is_path
from zhangfang.recon.importers.alipay import AlipayParser
from zhangfang.recon.importers.bank_direct import BankDirectParser
from zhangfang.recon.importers.camt053 import Camt053Parser
from zhangfang.recon.importers.models import (
    LINE_CODES,
    BillSummary,
    CurrencyTotals,
    LineBatch,
    LineError,
    ParseTotals,
    StatementBalance,
    StatementLine,
)
from zhangfang.recon.importers.swift_mt940 import Mt940Parser
from zhangfang.recon.importers.wechat import WechatParser

__all__ = [
    "FORMATS",
    "LINE_CODES",
    "BillSummary",
    "CurrencyTotals",
    "LineBatch",
    "LineError",
    "ParseTotals",
    "StatementBalance",
    "StatementLine",
    "StatementReader",
    "iter_statement",
]

FORMATS: tuple[str, ...] = ("bank_direct", "alipay", "wechat", "mt940", "camt053")
_PARSERS: dict[str, type[Parser]] = {
    "bank_direct": BankDirectParser,
    "alipay": AlipayParser,
    "wechat": WechatParser,
    "mt940": Mt940Parser,
    "camt053": Camt053Parser,
}
# What a damaged file raises while it is read (a cut gzip, a bad zip member, a device error).
_READ_ERRORS = (OSError, EOFError, zlib.error, zipfile.BadZipFile, UnicodeError, csv.Error, SourceUnreadable)


def iter_statement(
    source: str | os.PathLike[str] | BinaryIO,
    fmt: str,
    *,
    currency: str = "CNY",
    profile: str | BankProfile | None = None,
) -> StatementReader:
    """Returns a reader of ``source`` (a path, or a binary stream left open) in format ``fmt`` (``FORMATS``).

    ``currency`` is the currency of bills that do not name one (Alipay; WeChat
    Pay rows with an empty 货币种类). ``profile`` chooses the ``bank_direct``
    layout (``"icbc"``, ``"cmb"`` or a ``BankProfile``); without it the layout is
    recognised from the file's first line.
    """
    if fmt not in FORMATS:
        raise ReconFormatInvalid(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}", field="format")
    currency_of(currency)
    chosen: BankProfile | None = None
    if profile is not None:
        if fmt != "bank_direct":
            raise ReconProfileInvalid(f"a bank profile applies to bank_direct bills, not {fmt}", field="profile")
        if isinstance(profile, BankProfile):
            chosen = profile
        elif isinstance(profile, str) and profile in PROFILES:
            chosen = PROFILES[profile]
        else:
            raise ReconProfileInvalid(
                f"profile must be one of {', '.join(PROFILES)} or a BankProfile, got {profile!r}", field="profile"
            )
    if not is_path(source) and not callable(getattr(source, "read", None)):
        raise ReconSourceInvalid(
            f"source must be a path or a binary stream, got {type(source).__name__}", field="source"
        )
    return StatementReader(source, fmt, currency=currency, profile=chosen)


class StatementReader(Iterator[StatementLine | LineError]):
    """An iterator of ``StatementLine | LineError`` over one file, with its running ``totals``.

    Use it as a context manager, or exhaust it: a file it opened itself (a path)
    is closed at the end; a stream it was given is left open.
    """

    def __init__(
        self,
        source: str | os.PathLike[str] | BinaryIO,
        fmt: str,
        *,
        currency: str = "CNY",
        profile: BankProfile | None = None,
    ) -> None:
        self.format = fmt
        self.totals = ParseTotals(format=fmt)
        if is_path(source):
            self._file: BinaryIO | None = open(source, "rb")  # noqa: SIM115 - closed by close()
            stream: BinaryIO = self._file
        else:
            self._file = None
            stream = source  # type: ignore[assignment]
        options: dict[str, Any] = {"profile": profile} if fmt == "bank_direct" else {}
        self._parser = _PARSERS[fmt](stream, self.totals, currency=currency, **options)
        self._chunks = self._guarded()
        self._items = self._flat()

    def _guarded(self) -> Iterator[LineBatch | StatementLine | LineError]:
        try:
            yield from self._parser.chunks()
        except _READ_ERRORS as error:
            line_no = 0 if isinstance(error, SourceUnreadable) else self._parser.line_no
            yield LineError(line_no, f"the file cannot be read: {error}", "file_unreadable")
        self.totals.complete = True

    def _flat(self) -> Iterator[StatementLine | LineError]:
        for chunk in self._chunks:
            if type(chunk) is LineBatch:
                yield from chunk.lines()
            else:
                yield chunk

    def batches(self, size: int = 5_000) -> Iterator[LineBatch | LineError]:
        """The same records as iterating the reader, in file order, but accepted lines come in batches
        (up to about ``size`` lines; a format's bulk path gives its own); ``totals`` is kept the same way.

        Read a reader one way only: by iterating it or through ``batches``.
        """
        pending: list[StatementLine] = []
        try:
            for chunk in self._chunks:
                kind = type(chunk)
                if kind is StatementLine:
                    pending.append(chunk)  # type: ignore[arg-type]
                    if len(pending) < size:
                        continue
                    chunk = LineBatch.of(pending)
                    pending = []
                elif pending:
                    first = LineBatch.of(pending)
                    pending = []
                    self.totals.add_batch(first)
                    yield first
                if type(chunk) is LineBatch:
                    self.totals.add_batch(chunk)
                else:
                    self.totals.error_count += 1
                yield chunk  # type: ignore[misc]
            if pending:
                last = LineBatch.of(pending)
                self.totals.add_batch(last)
                yield last
        finally:
            self.close()

    def __iter__(self) -> StatementReader:
        return self

    def __next__(self) -> StatementLine | LineError:
        try:
            item = next(self._items)
        except StopIteration:
            self.close()
            raise
        if type(item) is StatementLine:
            self.totals.add_line(item)
        else:
            self.totals.error_count += 1
        return item

    def totals_json(self) -> dict[str, Any]:
        """``totals`` as plain JSON types (see ``ParseTotals.as_json``)."""
        return self.totals.as_json()

    def close(self) -> None:
        """Stops reading and closes the file if the reader opened it."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> StatementReader:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()
