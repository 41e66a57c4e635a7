"""What the format modules share: opening and unwrapping the source, reading text lines, parsing values.

Everything here streams: a zip member or gzip body is decompressed as it is read,
text is decoded in 64 KiB chunks and handed out line by line, and a zip that
cannot seek is first copied to a temporary file (held in memory up to 16 MiB,
then on disk) because a zip's directory sits at its end.
"""

from __future__ import annotations

import abc
import codecs
import csv
import datetime as dt
import gzip
import io
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator
from typing import IO, BinaryIO

from zhangfang.money import (
    AmountHasTooManyDecimals,
    AmountNotANumber,
    AmountOutOfRange,
    currency,
    format_minor,
    is_known_currency,
    parse_amount,
)
from zhangfang.recon.importers.models import LineBatch, LineError, ParseTotals, StatementLine

BEIJING = dt.timezone(dt.timedelta(hours=8), "Asia/Shanghai")  # no daylight saving since 1991
_ZIP_MAGIC = b"PK\x03\x04"
_GZIP_MAGIC = b"\x1f\x8b"
_SPOOL_BYTES_MAX = 16 << 20
_BEIJING_TIME = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")
_TWO_DECIMALS = re.compile(r"-?[0-9]{1,16}\.[0-9]{2}")
# A column of amounts, one a line, each ``_TWO_DECIMALS`` or empty: what reads as ``int(text.replace(".", ""))``.
_TWO_DECIMALS_LINES = re.compile(r"(?:-?[0-9]{1,16}\.[0-9]{2})?(?:\n(?:-?[0-9]{1,16}\.[0-9]{2})?)*")


class SourceUnreadable(Exception):
    """The file as a whole cannot be read (bad archive, no member to read); becomes a ``LineError`` at line 0."""


class BadValue(Exception):
    """One value of a record is wrong; ``reason`` and ``code`` become the record's ``LineError``."""

    def __init__(self, reason: str, code: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


# --------------------------------------------------------------------------- sources


def unwrap(stream: BinaryIO, pick_member: Callable[[list[str]], str]) -> BinaryIO:
    """The readable content of ``stream``: the chosen zip member, the gzip body, or the stream itself."""
    head, stream = _peek(stream, 4)
    if head.startswith(_GZIP_MAGIC):
        return gzip.GzipFile(fileobj=stream, mode="rb")  # type: ignore[return-value]
    if head.startswith(_ZIP_MAGIC):
        if not _seekable(stream):
            spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES_MAX)  # noqa: SIM115 - lives as long as the read
            shutil.copyfileobj(stream, spool)
            spool.seek(0)
            stream = spool  # type: ignore[assignment]
        try:
            archive = zipfile.ZipFile(stream)
        except zipfile.BadZipFile as error:
            raise SourceUnreadable(f"the zip archive cannot be opened: {error}") from error
        names = {_member_name(info): info for info in archive.infolist() if not info.is_dir()}
        chosen = pick_member(sorted(names))
        return archive.open(names[chosen])  # type: ignore[return-value]
    return stream


def only_member(names: list[str]) -> str:
    """The member of a zip that holds exactly one file."""
    if len(names) != 1:
        raise SourceUnreadable(f"the zip archive must hold exactly one file, it holds {len(names)}: {names[:5]}")
    return names[0]


def _member_name(info: zipfile.ZipInfo) -> str:
    """The member's name; names written without the UTF-8 flag by Chinese tools are GBK, not cp437."""
    if info.flag_bits & 0x800:
        return info.filename
    try:
        return info.filename.encode("cp437").decode("gb18030")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return info.filename


def _seekable(stream: IO[bytes]) -> bool:
    try:
        return stream.seekable()
    except (AttributeError, ValueError, OSError):
        return False


def _peek(stream: BinaryIO, size: int) -> tuple[bytes, BinaryIO]:
    """The first ``size`` bytes, and a stream that still starts at them."""
    if _seekable(stream):
        start = stream.tell()
        head = stream.read(size)
        stream.seek(start)
        return head, stream
    head = stream.read(size)
    return head, io.BufferedReader(_Prefixed(head, stream))  # type: ignore[return-value]


class _Prefixed(io.RawIOBase):
    """A non-seekable stream with bytes already read put back in front of it."""

    def __init__(self, prefix: bytes, rest: IO[bytes]) -> None:
        super().__init__()
        self._prefix = prefix
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if self._prefix:
            count = min(len(buffer), len(self._prefix))
            buffer[:count] = self._prefix[:count]
            self._prefix = self._prefix[count:]
            return count
        data = self._rest.read(len(buffer))
        if not data:
            return 0
        buffer[: len(data)] = data
        return len(data)


class TextLines:
    """The decoded lines of a binary stream, each with its ``\\n`` or ``\\r\\n``; iterate it once.

    Only ``\\n`` ends a line (so line numbers are what an editor shows).
    Undecodable bytes become U+FFFD and the numbers of the lines holding one are
    kept in ``bad`` (checked per chunk, so a clean file costs nothing per line).
    """

    def __init__(self, stream: BinaryIO, encoding: str) -> None:
        self._stream = stream
        self._decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
        self.bad: set[int] = set()

    def spans_bad(self, first: int, last: int) -> bool:
        """Whether a record on lines ``first`` to ``last`` has undecodable bytes."""
        return bool(self.bad) and any(line_no in self.bad for line_no in range(first, last + 1))

    def blocks(self) -> Iterator[str]:
        """The text as it is decoded, one chunk at a time, cut after its last ``\\n`` (the file's last line may
        end without one); concatenated, the blocks are the whole text."""
        pending = ""
        count = 0
        while True:
            chunk = self._stream.read(1 << 16)
            text = pending + self._decoder.decode(chunk, final=not chunk)
            cut = text.rfind("\n") + 1
            block, pending = text[:cut], text[cut:]  # after the last line end: an unfinished line, waiting
            if "\ufffd" in block:
                parts = block.split("\n")
                self.bad.update(count + 1 + i for i, part in enumerate(parts) if "\ufffd" in part)
            count += block.count("\n")
            if block:
                yield block
            if not chunk:
                if pending:
                    if "\ufffd" in pending:
                        self.bad.add(count + 1)
                    yield pending
                return

    def __iter__(self) -> Iterator[str]:
        for block in self.blocks():
            parts = block.split("\n")
            last = parts.pop()  # "" after a block's final line end; the file's unended last line otherwise
            for part in parts:
                yield part + "\n"
            if last:
                yield last


class BlockLines:
    """The lines of a ``TextLines`` one by one, or, between blocks, a whole block at once (``take_block``).

    A parser reads the lines it must look at one by one and hands a block of plain detail rows to a
    bulk path; ``line_no`` is the number of lines handed out so far, either way.
    """

    def __init__(self, lines: TextLines) -> None:
        self._blocks = lines.blocks()
        self._lines: list[str] = []
        self._next = 0
        self.line_no = 0

    @property
    def at_block_end(self) -> bool:
        """No line of the current block is left."""
        return self._next >= len(self._lines)

    def take_block(self) -> str | None:
        """The next block whole (None at the end of the text); only at a block end."""
        assert self.at_block_end
        block = next(self._blocks, None)
        if block is not None:
            self.line_no += block.count("\n") + (not block.endswith("\n"))
        return block

    def give_back(self, block: str) -> None:
        """Puts a block ``take_block`` returned back, to be read line by line."""
        assert self.at_block_end
        self.line_no -= block.count("\n") + (not block.endswith("\n"))
        self._open(block)

    def _open(self, block: str) -> None:
        parts = block.split("\n")
        last = parts.pop()
        self._lines = [part + "\n" for part in parts]
        if last:
            self._lines.append(last)
        self._next = 0

    def __iter__(self) -> BlockLines:
        return self

    def __next__(self) -> str:
        while self._next >= len(self._lines):
            self._open(next(self._blocks))  # StopIteration at the end of the text
        line = self._lines[self._next]
        self._next += 1
        self.line_no += 1
        return line


def text_lines(stream: BinaryIO, encoding: str) -> TextLines:
    return TextLines(stream, encoding)


class _Feed:
    """The lines a ``csv.reader`` reads: one put in front, then more from the file if a quoted value spans lines."""

    def __init__(self, lines: Iterator[str]) -> None:
        self._lines = lines
        self.first: str | None = None
        self.taken = 0

    def __iter__(self) -> _Feed:
        return self

    def __next__(self) -> str:
        if self.first is not None:
            line, self.first = self.first, None
            return line
        line = next(self._lines)
        self.taken += 1
        return line


def records(
    lines: Iterable[str], delimiter: str = ",", *, prefix: str = "", line_no: int = 0
) -> Iterator[tuple[int, int, list[str] | str]]:
    """``(first line, last line, values)`` per CSV record; ``values`` is the reason when it cannot be read.

    A line without a quote is split at the delimiter (what ``csv`` would do, in
    one C call); a line with a quote goes through ``csv``, which takes further
    lines while a quoted value runs on. ``prefix`` (WeChat Pay's backtick) is
    taken off the front of every value that has it. ``line_no`` is the number of lines before ``lines``.
    """
    source = iter(lines)
    feed = _Feed(source)
    reader = csv.reader(feed, delimiter=delimiter)
    for line in source:
        line_no += 1
        if '"' not in line:
            text = line.rstrip("\r\n")
            if prefix:
                text = text.removeprefix(prefix).replace(delimiter + prefix, delimiter)
            yield line_no, line_no, text.split(delimiter)
            continue
        start = line_no
        feed.first, feed.taken = line, 0
        try:
            row: list[str] | str = next(reader)
        except csv.Error as error:
            row = f"the line cannot be read as CSV: {error}"
        except StopIteration:  # pragma: no cover - a line was put in front
            row = "the line cannot be read as CSV"
        line_no += feed.taken
        if prefix and not isinstance(row, str):
            row = [value.removeprefix(prefix) for value in row]
        yield start, line_no, row


def is_path(source: object) -> bool:
    return isinstance(source, str | os.PathLike)


# --------------------------------------------------------------------------- values


def _exponent(code: str) -> int:
    found = _EXPONENTS.get(code)
    if found is None:
        found = _EXPONENTS[code] = currency(code).exponent
    return found


_EXPONENTS: dict[str, int] = {}


def amount_minor(text: str, code: str, label: str) -> int:
    """``text`` (major units, e.g. ``12.34``) as signed minor units; ``BadValue`` names ``label``."""
    if _TWO_DECIMALS.fullmatch(text) and _exponent(code) == 2:
        return int(text.replace(".", ""))
    try:
        return parse_amount(text, code)
    except AmountHasTooManyDecimals:
        raise BadValue(f"{label} {text} has more than {currency(code).exponent} decimals", "amount_invalid") from None
    except AmountNotANumber:
        raise BadValue(f"{label} {text!r} is not an amount", "amount_invalid") from None
    except AmountOutOfRange:
        raise BadValue(f"{label} {text} is out of range", "amount_invalid") from None


def fee_minor(text: str, code: str, label: str) -> int:
    """A fee cell: like ``amount_minor`` but an empty cell is 0 and errors carry the fee code."""
    if not text:
        return 0
    try:
        return amount_minor(text, code, label)
    except BadValue as error:
        raise BadValue(error.reason, "fee_invalid") from None


def beijing_time(text: str, label: str) -> dt.datetime:
    """``YYYY-MM-DD HH:MM:SS`` in Beijing time, as an aware UTC datetime."""
    found = _TIMES.get(text)
    if found is not None:
        return found
    if len(_TIMES) > 4096:  # rows come in time order: the recent seconds are the ones asked again
        _TIMES.clear()
    if _BEIJING_TIME.fullmatch(text):
        try:
            local = dt.datetime(
                int(text[0:4]),
                int(text[5:7]),
                int(text[8:10]),
                int(text[11:13]),
                int(text[14:16]),
                int(text[17:19]),
                tzinfo=BEIJING,
            )
        except ValueError:
            pass
        else:
            found = _TIMES[text] = local.astimezone(dt.UTC)
            return found
    raise BadValue(f"{label} {text!r} is not a time (YYYY-MM-DD HH:MM:SS)", "time_invalid")


_TIMES: dict[str, dt.datetime] = {}


def known_currency(code: str, label: str) -> str:
    if is_known_currency(code):
        return code
    raise BadValue(f"{label} {code!r} is not a known ISO 4217 currency", "currency_unknown")


def mismatch(label: str, stated: int, counted: int, code: str | None) -> str:
    """The reason of a summary disagreement, amounts shown in major units when ``code`` is a currency."""
    if code is None:
        return f"the file's summary says {label} {stated} but its detail lines count {counted}"
    return (
        f"the file's summary says {label} {format_minor(stated, code)} "
        f"but its detail lines sum to {format_minor(counted, code)}"
    )


# --------------------------------------------------------------------------- parsers


class Parser(abc.ABC):
    """One pass over one file: ``items()`` yields lines and errors and keeps ``totals`` and ``line_no`` current.

    Each format's module subclasses it (``AlipayParser``, ``WechatParser``, …)."""

    def __init__(self, stream: BinaryIO, totals: ParseTotals, *, currency: str) -> None:
        self.stream = stream
        self.totals = totals
        self.currency = currency
        self.line_no = 0

    @abc.abstractmethod
    def items(self) -> Iterator[StatementLine | LineError]:
        """The file's lines and errors, in file order."""

    def chunks(self) -> Iterator[LineBatch | StatementLine | LineError]:
        """``items()``, with stretches of accepted lines given as one ``LineBatch`` where the format has a
        bulk path (the same records either way)."""
        return self.items()


def uniform_line_ends(block: str) -> tuple[str, str] | None:
    """``block`` with one kind of line end, and that end (``"\r\n"`` or ``"\n"``), for a bulk path to cut
    at; None when a ``\r`` does not end a line (it stays in its value, where ``records`` would strip several)."""
    carriage_returns = block.count("\r")
    if carriage_returns:
        if carriage_returns != block.count("\r\n"):
            return None
        if carriage_returns != block.count("\n"):
            block = block.replace("\r\n", "\n")  # \r\n and \n mixed
    return block, "\r\n" if "\r" in block else "\n"


class BlockParser(Parser):
    """A text format read through ``read_blocks``: record by record (``_record``), and a whole block of
    plain detail rows at a time where ``_bulk`` takes it; ``items()`` gives the batches' lines one by one."""

    stopped = False  # set by ``_record`` when nothing after this record can be read (a header refused)

    def items(self) -> Iterator[StatementLine | LineError]:
        for chunk in self.chunks():
            if type(chunk) is LineBatch:
                yield from chunk.lines()
            else:
                yield chunk  # type: ignore[misc]

    @abc.abstractmethod
    def chunks(self) -> Iterator[LineBatch | StatementLine | LineError]:
        """The file's records, stretches of plain detail rows as one ``LineBatch`` each."""

    def read_blocks(self, lines: TextLines, *, prefix: str = "") -> Iterator[LineBatch | StatementLine | LineError]:
        """The records of ``lines``: a block at a time through ``_bulk`` where it takes the block, else
        record by record through ``_record`` up to the end of that block (or of the record running past it)."""
        feed = BlockLines(lines)
        while True:
            if feed.at_block_end:
                first = feed.line_no + 1
                block = feed.take_block()
                if block is None:
                    return
                batch = self._bulk(first, block)
                if batch is not None:
                    self.line_no = feed.line_no
                    yield batch
                    continue
                feed.give_back(block)
            for start, end, row in records(feed, prefix=prefix, line_no=feed.line_no):
                item = self._record(start, end, row, lines)
                if item is not None:
                    yield item
                if self.stopped:
                    return
                if feed.at_block_end:
                    break
            else:
                return

    def _bulk(self, first: int, block: str) -> LineBatch | None:
        """The records of ``block`` (whole lines, the first numbered ``first``) as one batch, when they are
        all plain detail rows; None sends the block record by record."""
        return None

    @abc.abstractmethod
    def _record(self, start: int, end: int, row: list[str] | str, lines: TextLines) -> StatementLine | LineError | None:
        """One record (lines ``start`` to ``end``; ``row`` its values, or why it cannot be read)."""
