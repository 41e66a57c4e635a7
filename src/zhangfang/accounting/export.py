"""Exporting reports as tables: CSV for any tool, XLSX for finance staff.

Every report (trial balance, general ledger, subsidiary ledger, balance sheet,
income statement) turns itself into a ``Table``: a title, column names and rows
of strings, amounts already written as exact decimal strings of the currency's
major unit (``format_minor``: 1234 fen is ``"12.34"``). Writers only lay the
strings out; none of them computes.

Guarantees
- CSV: UTF-8 with a byte-order mark, one header row, then the rows; every cell is
  exactly the table's string, so reading the file back gives the table back.
- XLSX: one sheet named after the title (at most 31 characters, without the
  characters Excel refuses), a bold header row, then the rows. A cell of an
  amount column is a number with a thousands-separated format of the amount's
  own decimals when Excel can hold it exactly (at most 15 significant digits,
  Excel's precision); otherwise it is left as its text, so no fen is ever lost
  to rounding. Other cells are text. No float arithmetic: a number is handed to
  openpyxl as a ``Decimal`` parsed from the cell's string.
- ``write_table`` writes ``csv`` or ``xlsx``; any other format is
  ``report_format_invalid`` and writes nothing.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import IO

from zhangfang.accounting import errors, reports
from zhangfang.money import format_minor

FORMATS = ("csv", "xlsx")

# Excel keeps 15 significant decimal digits; a longer amount would come back rounded.
EXCEL_DIGITS_MAX = 15
SHEET_NAME_LENGTH_MAX = 31
SHEET_NAME_INVALID = re.compile(r"[\[\]:*?/\\]")
COLUMN_WIDTH_MAX = 60
AMOUNT = re.compile(r"-?[0-9]+(\.[0-9]+)?")


@dataclass(frozen=True)
class Table:
    """A report laid flat: its title, its column names, and rows of strings (amounts as decimal strings).

    ``amount_columns`` names the columns that hold amounts, so XLSX can write them as numbers.
    """

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    amount_columns: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        assert all(len(row) == len(self.columns) for row in self.rows), f"{self.title}: a row has the wrong width"
        assert set(self.amount_columns) <= set(self.columns), f"{self.title}: unknown amount columns"

    def as_json(self) -> dict[str, object]:
        """The JSON the CLI's ``--json`` and the API give for a report."""
        return {"title": self.title, "columns": list(self.columns), "rows": [list(row) for row in self.rows]}


def write_csv(table: Table, path_or_stream: str | Path | IO[str] | IO[bytes]) -> None:
    """Write ``table`` as CSV (header, then rows) to a path or an open stream, UTF-8 with a BOM."""
    # The byte-order mark is what makes Excel read a CSV file as UTF-8; without it Excel
    # assumes the system code page (GBK on Chinese Windows) and garbles 科目 names.
    if isinstance(path_or_stream, str | Path):
        with open(path_or_stream, "w", encoding="utf-8-sig", newline="") as file:
            _write_csv_rows(table, file)
        return
    if isinstance(path_or_stream, io.TextIOBase) or hasattr(path_or_stream, "encoding"):
        text_stream: IO[str] = path_or_stream  # type: ignore[assignment]
        text_stream.write("\ufeff")
        _write_csv_rows(table, text_stream)
        return
    buffer = io.StringIO(newline="")
    _write_csv_rows(table, buffer)
    path_or_stream.write(("\ufeff" + buffer.getvalue()).encode("utf-8"))  # type: ignore[arg-type]


def _write_csv_rows(table: Table, file: IO[str]) -> None:
    writer = csv.writer(file)
    writer.writerow(table.columns)
    writer.writerows(table.rows)


def sheet_name(title: str) -> str:
    """``title`` as Excel allows a sheet name: without []:*?/\\, at most 31 characters, never empty."""
    name = SHEET_NAME_INVALID.sub(" ", title).strip().strip("'")[:SHEET_NAME_LENGTH_MAX].strip()
    return name or "Sheet1"


def excel_number(text: str) -> Decimal | None:
    """The amount ``text`` as a number Excel holds exactly, or None (empty, not a decimal, or too long)."""
    if not AMOUNT.fullmatch(text):
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:  # pragma: no cover - the pattern admits only decimals
        return None
    digits = value.as_tuple().digits
    significant = len(digits) - next((index for index, digit in enumerate(digits) if digit), len(digits))
    return value if significant <= EXCEL_DIGITS_MAX else None


def number_format(text: str) -> str:
    """The Excel format that shows an amount with its own decimals and thousands separators."""
    decimals = len(text.partition(".")[2])
    return "#,##0" + ("." + "0" * decimals if decimals else "")


def write_xlsx(table: Table, path: str | Path) -> None:
    """Write ``table`` as a one-sheet XLSX workbook (see the module's guarantees)."""
    from openpyxl import Workbook
    from openpyxl.styles import Font
    from openpyxl.utils import get_column_letter

    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.title = sheet_name(table.title)
    sheet.append(list(table.columns))
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    amount_indexes = {table.columns.index(name) for name in table.amount_columns}
    for row_number, row in enumerate(table.rows, start=2):
        for index, text in enumerate(row):
            cell = sheet.cell(row=row_number, column=index + 1)
            value = excel_number(text) if index in amount_indexes else None
            if value is None:
                cell.value = text
                cell.data_type = "s"  # text as text, even when it looks like a number (codes, ids)
            else:
                cell.value = value
                cell.number_format = number_format(text)
    for index, column in enumerate(table.columns):
        width = max(_display_width(text) for text in _column_texts(table, index, column))
        sheet.column_dimensions[get_column_letter(index + 1)].width = min(width + 2, COLUMN_WIDTH_MAX)
    sheet.freeze_panes = "A2"
    workbook.save(path)


def _column_texts(table: Table, index: int, column: str) -> Iterable[str]:
    yield column
    for row in table.rows:
        yield row[index]


def _display_width(text: str) -> int:
    # CJK characters take two columns in Excel's default fonts.
    return sum(2 if ord(char) > 0x2E7F else 1 for char in text)


def write_table(table: Table, path: str | Path, fmt: str) -> None:
    """Write ``table`` to ``path`` as ``csv`` or ``xlsx``; ``report_format_invalid`` for any other format."""
    if fmt == "csv":
        write_csv(table, path)
    elif fmt == "xlsx":
        write_xlsx(table, path)
    else:
        raise errors.ReportFormatInvalid(
            f"a report is written as {' or '.join(FORMATS)}, not {fmt!r}", field="format", formats=list(FORMATS)
        )


TRIAL_BALANCE_AMOUNTS = reports.TOTAL_COLUMNS


def trial_balance_table(tb: reports.TrialBalance) -> Table:
    """The trial balance (试算平衡表) as a table: a row per subject, then a totals row per currency."""
    columns = ("currency", "code", "name_zh", "name_en", *TRIAL_BALANCE_AMOUNTS)
    rows: list[tuple[str, ...]] = []
    for totals in tb.totals:
        currency = totals.currency
        for row in tb.rows:
            if row.currency != currency:
                continue
            rows.append(
                (
                    currency,
                    row.subject.code,
                    row.subject.name_zh,
                    row.subject.name_en,
                    *(_amount(getattr(row, name), currency) for name in TRIAL_BALANCE_AMOUNTS),
                )
            )
        rows.append(
            (
                currency,
                "",
                "合计",
                "Total",
                *(_amount(getattr(totals, name), currency) for name in TRIAL_BALANCE_AMOUNTS),
            )
        )
    return Table(
        title=f"试算平衡表 Trial balance {tb.date_from.isoformat()} {tb.date_to.isoformat()}",
        columns=columns,
        rows=tuple(rows),
        amount_columns=TRIAL_BALANCE_AMOUNTS,
    )


def _amount(value: int | Decimal, currency: str) -> str:
    # PostgreSQL sums BIGINT columns as NUMERIC, so a report's sums may arrive as an integral Decimal.
    amount = int(value)
    assert amount == value, f"an amount of minor units is a whole number, got {value!r}"
    return format_minor(amount, currency)
