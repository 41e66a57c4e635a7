"""Financial statements (总账, 明细账, 资产负债表, 利润表) and their CSV/XLSX exports, on SQLite and PostgreSQL.

The scenario: a payment company's ledger on 2025-12-30 and 2025-12-31, booked into vouchers
by the accounting sync, plus a manual voucher of channel costs. Every figure below is computed
by hand from the entries (amounts in fen).

2025-12-30 (记-2025-12-0001 payment, 0002 wallet_topup)
  wallet_topup  Dr alipay clearing 100000            Cr alice wallet 100000
  payment       Dr alipay clearing  20000            Cr m001 19880, fee 120
  payment       Dr alipay clearing  10000            Cr m002  9940, fee  60
  payment       Dr alice wallet     30000            Cr m001 29820, fee 180
2025-12-31 (记-2025-12-0003 channel_settlement, 0004 refund, 0005 the manual voucher)
  refund              Dr m001 5000                   Cr alipay clearing 5000
  channel_settlement  Dr ICBC custody 130000         Cr alipay clearing 130000
  manual              Dr 642101 channel costs 90     Cr 300101 alipay clearing 90
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from decimal import Decimal
from pathlib import Path

import pytest
from openpyxl import load_workbook
from sqlalchemy.engine import Engine

from zhangfang.accounting import errors, export, reports, service, statements
from zhangfang.accounting.models import ManualVoucherRequest, VoucherLine
from zhangfang.accounting.sync import sync
from zhangfang.db.uow import run_in_transaction
from zhangfang.ledger import service as ledger
from zhangfang.ledger.models import AccountRequest, EntryRequest, Leg
from zhangfang.ledger.tables import ledger_clock
from zhangfang.payments import postings

D0 = dt.date(2025, 12, 30)
D1 = dt.date(2025, 12, 31)
CUSTODY = "bank:icbc:custody"

ACCOUNTS = {
    "clearing": postings.channel_clearing_request("alipay", "CNY"),
    "fee": postings.fee_income_request("CNY"),
    "m001": postings.merchant_pending_request("m001", "CNY"),
    "m002": postings.merchant_pending_request("m002", "CNY"),
    "alice": AccountRequest(
        key="user:alice:wallet",
        ledger_code="user_wallet",
        currency="CNY",
        owner_ref="user:alice",
        debits_must_not_exceed_credits=True,
    ),
    "custody": AccountRequest(
        key=CUSTODY, ledger_code="bank_custody", currency="CNY", normal_side="debit", owner_ref="platform"
    ),
}


# ---- building the books -------------------------------------------------------------------------


def start_ledger_on(engine: Engine, day: dt.date) -> None:
    """Set the ledger's open date, so the scenario has fixed dates and voucher labels."""
    run_in_transaction(engine, lambda conn: conn.execute(ledger_clock.update().values(open_date=day)))


def post(engine: Engine, refs: dict[str, str], key: str, code: str, *legs: tuple[str, str, int]) -> None:
    request = EntryRequest(
        idempotency_key=key,
        business_code=code,
        legs=tuple(Leg(refs[name], side, amount, "CNY") for name, side, amount in legs),
    )
    run_in_transaction(engine, lambda conn: ledger.post_entry(conn, request=request))


def close(engine: Engine, day: dt.date) -> None:
    assert run_in_transaction(engine, ledger.open_date) == day
    ledger.close_day(engine, accounting_date=day, wait_seconds_max=10)


def manual(engine: Engine, key: str, day: dt.date, summary: str, *lines: VoucherLine) -> str:
    request = ManualVoucherRequest(
        idempotency_key=key, voucher_date=day, currency="CNY", summary=summary, lines=lines, maker="li.maker"
    )
    voucher, _ = run_in_transaction(engine, lambda conn: service.submit_manual_voucher(conn, request=request))
    posted = run_in_transaction(
        engine, lambda conn: service.approve_voucher(conn, ref=voucher.ref, checker="wang.checker")
    )
    assert posted.state == "posted"
    return posted.label


@pytest.fixture
def books(engine: Engine) -> Engine:
    """The scenario of the module docstring, synced and with the manual voucher posted."""
    start_ledger_on(engine, D0)
    refs = {
        name: run_in_transaction(engine, lambda conn, request=request: ledger.open_account(conn, request=request))[
            0
        ].ref
        for name, request in ACCOUNTS.items()
    }
    post(engine, refs, "t:topup", "wallet_topup", ("clearing", "debit", 100000), ("alice", "credit", 100000))
    post(
        engine,
        refs,
        "t:pay1",
        "payment",
        ("clearing", "debit", 20000),
        ("m001", "credit", 19880),
        ("fee", "credit", 120),
    )
    post(
        engine, refs, "t:pay2", "payment", ("clearing", "debit", 10000), ("m002", "credit", 9940), ("fee", "credit", 60)
    )
    post(
        engine, refs, "t:pay3", "payment", ("alice", "debit", 30000), ("m001", "credit", 29820), ("fee", "credit", 180)
    )
    close(engine, D0)
    post(engine, refs, "t:refund", "refund", ("m001", "debit", 5000), ("clearing", "credit", 5000))
    post(engine, refs, "t:settle", "channel_settlement", ("custody", "debit", 130000), ("clearing", "credit", 130000))
    close(engine, D1)
    result = sync(engine)
    assert result.exception_count == 0 and result.voucher_count == 4
    label = manual(
        engine,
        "costs:2025-12",
        D1,
        "渠道手续费 Channel costs for December",
        VoucherLine("642101", debit=90, dimension="channel", aux="channel:alipay"),
        VoucherLine("300101", credit=90, dimension="channel", aux="channel:alipay"),
    )
    assert label == "记-2025-12-0005"
    return engine


def read(engine: Engine, function, **arguments):
    return run_in_transaction(engine, lambda conn: function(conn, **arguments), readonly=True)


def amounts(section: statements.StatementSection) -> dict[str, int]:
    return {row.code or row.name_zh: row.amount for row in section.rows}


# ---- balance sheet ------------------------------------------------------------------------------


def test_the_balance_sheet_balances_and_shows_hand_computed_balances_on_each_day(books):
    first = read(books, statements.balance_sheet, date=D0)
    assert amounts(first.assets) == {"3001": 130000, "300101": 130000}
    assert amounts(first.liabilities) == {"2241": 129640, "224101": 59640, "224102": 70000}
    assert amounts(first.equity) == {statements.CURRENT_PROFIT_ZH: 360}
    assert (first.assets.total, first.liabilities.total, first.equity.total) == (130000, 129640, 360)
    assert first.balanced and first.current_year_profit == 360

    second = read(books, statements.balance_sheet, date=D1)
    assert amounts(second.assets) == {"1002": 130000, "100202": 130000}
    assert amounts(second.liabilities) == {
        "2241": 124640,
        "224101": 54640,
        "224102": 70000,
        "3001": 5090,
        "300101": 5090,
    }
    assert amounts(second.equity) == {statements.CURRENT_PROFIT_ZH: 270}
    assert second.assets.total == second.liabilities_and_equity == 130000
    assert second.balanced


def test_a_common_subject_stands_under_assets_with_a_debit_balance_and_under_liabilities_with_a_credit(books):
    on_d0 = read(books, statements.balance_sheet, date=D0)
    on_d1 = read(books, statements.balance_sheet, date=D1)
    assert on_d0.assets.row("3001").amount == 130000
    with pytest.raises(KeyError):
        on_d0.liabilities.row("3001")
    assert on_d1.liabilities.row("3001").amount == 5090
    with pytest.raises(KeyError):
        on_d1.assets.row("3001")


def test_the_balance_sheet_counts_only_posted_vouchers_in_the_currency_asked(books):
    request = ManualVoucherRequest(
        idempotency_key="pending:1",
        voucher_date=D1,
        currency="CNY",
        summary="not approved yet",
        lines=(VoucherLine("6602", debit=1000), VoucherLine("100201", credit=1000)),
        maker="li.maker",
    )
    run_in_transaction(books, lambda conn: service.submit_manual_voucher(conn, request=request))
    assert read(books, statements.balance_sheet, date=D1).assets.total == 130000
    usd = read(books, statements.balance_sheet, date=D1, currency="USD")
    assert (usd.assets.rows, usd.liabilities.rows, usd.balanced) == ((), (), True)


def test_a_contra_subject_reduces_the_assets_and_profit_counts_as_equity(engine):
    sync(engine)  # installs the chart
    day = dt.date(2026, 3, 10)
    manual(
        engine,
        "capital",
        day,
        "实收资本 Paid-in capital",
        VoucherLine("100201", debit=100000000, dimension="bank_account", aux="bank:icbc:own"),
        VoucherLine("4001", credit=100000000),
    )
    manual(
        engine,
        "other-income",
        day,
        "其他业务收入 Other income receivable",
        VoucherLine("112201", debit=500000, dimension="merchant", aux="merchant:m009"),
        VoucherLine("6051", credit=500000),
    )
    manual(
        engine,
        "allowance",
        day,
        "计提坏账准备 Bad-debt allowance",
        VoucherLine("6701", debit=20000),
        VoucherLine("1231", credit=20000),
    )
    sheet = read(engine, statements.balance_sheet, date=day)
    assert amounts(sheet.assets) == {
        "1002": 100000000,
        "100201": 100000000,
        "1122": 500000,
        "112201": 500000,
        "1231": -20000,
    }
    assert sheet.assets.total == 100480000
    assert amounts(sheet.equity) == {"4001": 100000000, statements.CURRENT_PROFIT_ZH: 480000}
    assert sheet.liabilities.total == 0 and sheet.balanced
    before = read(engine, statements.balance_sheet, date=day - dt.timedelta(days=1))
    assert (before.assets.total, before.equity.total, before.balanced) == (0, 0, True)


# ---- income statement ---------------------------------------------------------------------------


def test_net_profit_is_fee_income_less_the_channel_costs_booked_by_hand(books):
    statement = read(books, statements.income_statement, date_from=D0, date_to=D1)
    assert amounts(statement.income) == {"6021": 360, "602101": 360}
    assert amounts(statement.expenses) == {"6421": 90, "642101": 90}
    assert (statement.income.total, statement.expenses.total, statement.net_profit) == (360, 90, 270)
    first_day = read(books, statements.income_statement, date_from=D0, date_to=D0)
    assert first_day.net_profit == 360 and first_day.expenses.rows == ()


def test_year_end_closing_moves_profit_into_equity_but_the_income_statement_still_shows_the_year(books):
    run_in_transaction(books, lambda conn: service.close_period(conn, period="2025-12", operator="zhao.cfo"))
    statement = read(books, statements.income_statement, date_from=D0, date_to=D1)
    assert statement.net_profit == 270
    sheet = read(books, statements.balance_sheet, date=D1)
    assert amounts(sheet.equity) == {"4104": 270, "410401": 270, statements.CURRENT_PROFIT_ZH: 0}
    assert sheet.balanced and sheet.assets.total == 130000
    fees = read(books, statements.general_ledger, subject_code="602101", date_from=D0, date_to=D1)
    assert [(day.debit, day.credit, day.balance) for day in fees.days] == [(0, 360, 360), (360, 0, 0)]
    assert fees.closing_side == "flat"


# ---- general ledger -----------------------------------------------------------------------------


def test_the_general_ledger_gives_a_running_balance_per_day_on_the_subjects_normal_side(books):
    clearing = read(books, statements.general_ledger, subject_code="300101", date_from=D0, date_to=D1)
    assert clearing.opening_balance == 0
    assert [(day.date, day.debit, day.credit, day.balance, day.side) for day in clearing.days] == [
        (D0, 130000, 0, 130000, "debit"),
        (D1, 0, 135090, -5090, "credit"),
    ]
    assert (clearing.debit, clearing.credit, clearing.closing_balance, clearing.closing_side) == (
        130000,
        135090,
        -5090,
        "credit",
    )
    parent = read(books, statements.general_ledger, subject_code="3001", date_from=D0, date_to=D1)
    assert parent.days == clearing.days


def test_a_parent_subjects_general_ledger_rolls_up_its_children_and_opens_with_the_earlier_days(books):
    payables = read(books, statements.general_ledger, subject_code="2241", date_from=D1, date_to=D1)
    assert payables.subject.normal_side == "credit"
    assert (payables.opening_balance, payables.opening_side) == (129640, "credit")
    assert [(day.debit, day.credit, day.balance) for day in payables.days] == [(5000, 0, 124640)]
    assert payables.closing_balance == 124640
    quiet = read(
        books,
        statements.general_ledger,
        subject_code="2241",
        date_from=D1 + dt.timedelta(days=1),
        date_to=D1 + dt.timedelta(days=5),
    )
    assert (quiet.opening_balance, quiet.days, quiet.closing_balance) == (124640, (), 124640)


def test_the_general_ledger_refuses_an_unknown_subject_and_an_inverted_range(books):
    with pytest.raises(errors.SubjectNotFound):
        read(books, statements.general_ledger, subject_code="9999", date_from=D0, date_to=D1)
    with pytest.raises(errors.PeriodInvalid):
        read(books, statements.general_ledger, subject_code="300101", date_from=D1, date_to=D0)


# ---- subsidiary ledger --------------------------------------------------------------------------


def test_the_subsidiary_ledger_keeps_a_running_balance_per_merchant(books):
    ledger_ = read(books, statements.subsidiary_ledger, subject_code="224101", date_from=D0, date_to=D1)
    assert [account.aux for account in ledger_.accounts] == ["merchant:m001", "merchant:m002"]
    m001 = ledger_.account("merchant:m001")
    assert [
        (line.date, line.voucher_label, line.debit, line.credit, line.balance, line.side) for line in m001.lines
    ] == [
        (D0, "记-2025-12-0001", 0, 49700, 49700, "credit"),
        (D1, "记-2025-12-0004", 5000, 0, 44700, "credit"),
    ]
    assert [line.summary for line in m001.lines] == ["收单交易 Payments collected", "退款 Refunds"]
    assert (m001.opening_balance, m001.debit, m001.credit, m001.closing_balance) == (0, 5000, 49700, 44700)
    m002 = ledger_.account("merchant:m002")
    assert [(line.voucher_label, line.credit, line.balance) for line in m002.lines] == [("记-2025-12-0001", 9940, 9940)]


def test_the_subsidiary_ledger_of_one_merchant_opens_with_its_balance_before_the_range(books):
    later = read(books, statements.subsidiary_ledger, subject_code="224101", date_from=D1, date_to=D1)
    assert [(a.aux, a.opening_balance, len(a.lines), a.closing_balance) for a in later.accounts] == [
        ("merchant:m001", 49700, 1, 44700),
        ("merchant:m002", 9940, 0, 9940),  # no line in the range, but a balance: still an account
    ]
    only = read(
        books, statements.subsidiary_ledger, subject_code="224101", date_from=D1, date_to=D1, aux="merchant:m002"
    )
    assert [(a.aux, a.opening_balance, a.lines) for a in only.accounts] == [("merchant:m002", 9940, ())]


def test_the_subsidiary_ledger_of_a_parent_lists_its_childrens_lines_in_voucher_order(books):
    clearing = read(books, statements.subsidiary_ledger, subject_code="3001", date_from=D0, date_to=D1)
    (alipay,) = clearing.accounts
    assert alipay.aux == "channel:alipay"
    assert [
        (line.voucher_label, line.subject_code, line.debit, line.credit, line.balance) for line in alipay.lines
    ] == [
        ("记-2025-12-0001", "300101", 30000, 0, 30000),
        ("记-2025-12-0002", "300101", 100000, 0, 130000),
        ("记-2025-12-0003", "300101", 0, 130000, 0),
        ("记-2025-12-0004", "300101", 0, 5000, -5000),
        ("记-2025-12-0005", "300101", 0, 90, -5090),
    ]
    assert alipay.lines[2].side == "flat" and alipay.lines[-1].side == "credit"


# ---- exports ------------------------------------------------------------------------------------


def read_csv(path: Path) -> list[list[str]]:
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf"), "Excel needs the BOM to read UTF-8"
    return list(csv.reader(io.StringIO(raw.decode("utf-8-sig"), newline="")))


def test_a_statement_round_trips_through_csv(books, tmp_path):
    table = read(books, statements.balance_sheet, date=D1).to_table()
    path = tmp_path / "balance_sheet.csv"
    export.write_table(table, path, "csv")
    rows = read_csv(path)
    assert tuple(rows[0]) == table.columns == ("section", "code", "name_zh", "name_en", "level", "amount")
    assert [tuple(row) for row in rows[1:]] == list(table.rows)
    assert ["assets", "1002", "银行存款", "Bank deposits", "1", "1300.00"] in rows
    assert ["liabilities", "300101", "渠道清算款", "Channel clearing", "2", "50.90"] in rows
    assert ["equity", "", "本年利润（未结转）", "Current-year profit not yet closed", "1", "2.70"] in rows
    assert rows[-1] == ["", "", "负债和所有者权益总计", "Total liabilities and equity", "", "1300.00"]


def test_csv_goes_to_a_text_or_a_binary_stream_too(books):
    table = read(books, statements.income_statement, date_from=D0, date_to=D1).to_table()
    text, binary = io.StringIO(newline=""), io.BytesIO()
    export.write_csv(table, text)
    export.write_csv(table, binary)
    assert binary.getvalue().decode("utf-8") == text.getvalue()
    rows = list(csv.reader(io.StringIO(text.getvalue().lstrip("\ufeff"))))
    assert rows[-1] == ["", "", "净利润", "Net profit", "", "2.70"]


def test_the_general_ledger_exports_as_xlsx_with_numbers_a_bold_header_and_a_sheet_named_after_it(books, tmp_path):
    table = read(books, statements.general_ledger, subject_code="300101", date_from=D0, date_to=D1).to_table()
    path = tmp_path / "gl.xlsx"
    export.write_table(table, path, "xlsx")
    sheet = load_workbook(path).active
    assert sheet.title == export.sheet_name(table.title) and len(sheet.title) <= 31
    assert sheet.title.startswith("总账 300101")
    assert [cell.value for cell in sheet[1]] == list(table.columns)
    assert all(cell.font.b for cell in sheet[1])
    day_two = [cell.value for cell in sheet[4]]
    assert day_two[:2] == ["2025-12-31", "本日合计 Day total"]
    assert Decimal(str(day_two[3])) == Decimal("1350.90") and day_two[4] == "credit"
    assert Decimal(str(day_two[5])) == Decimal("50.90")
    assert sheet.cell(row=4, column=4).number_format == "#,##0.00"
    assert sheet.column_dimensions["B"].width > 10


def test_xlsx_keeps_codes_and_formulas_as_text_and_an_amount_excel_cannot_hold_exactly_as_text(tmp_path):
    table = export.Table(
        title="测试 Test: [a/b]*?",
        columns=("code", "amount"),
        rows=(("100202", "12.34"), ("4001", "1234567890123456.78"), ("x", ""), ("=SUM(A1)", "-0.05")),
        amount_columns=("amount",),
    )
    path = tmp_path / "t.xlsx"
    export.write_xlsx(table, path)
    sheet = load_workbook(path).active
    assert sheet.title == "测试 Test   a b"
    values = [[cell.value for cell in row] for row in sheet.iter_rows(min_row=2)]
    assert values[0][0] == "100202" and Decimal(str(values[0][1])) == Decimal("12.34")
    assert values[1:3] == [["4001", "1234567890123456.78"], ["x", None]]
    assert values[3][0] == "=SUM(A1)" and sheet["A5"].data_type == "s"  # text, never a formula
    assert Decimal(str(values[3][1])) == Decimal("-0.05")


def test_an_unknown_format_is_refused_and_writes_nothing(books, tmp_path):
    table = read(books, statements.balance_sheet, date=D1).to_table()
    with pytest.raises(errors.ReportFormatInvalid) as refused:
        export.write_table(table, tmp_path / "sheet.pdf", "pdf")
    assert refused.value.code == "report_format_invalid"
    assert not (tmp_path / "sheet.pdf").exists()


def test_the_trial_balance_exports_with_a_totals_row_per_currency(books, tmp_path):
    tb = read(books, reports.trial_balance, period="2025-12")
    table = export.trial_balance_table(tb)
    assert table.columns[:4] == ("currency", "code", "name_zh", "name_en")
    by_code = {row[1]: row for row in table.rows}
    assert by_code["300101"] == (
        "CNY",
        "300101",
        "渠道清算款",
        "Channel clearing",
        "0.00",
        "0.00",
        "1300.00",
        "1350.90",
        "0.00",
        "50.90",
    )
    assert table.rows[-1] == ("CNY", "", "合计", "Total", "0.00", "0.00", "2950.90", "2950.90", "1300.90", "1300.90")
    path = tmp_path / "tb.csv"
    export.write_table(table, path, "csv")
    assert [tuple(row) for row in read_csv(path)[1:]] == list(table.rows)


def test_every_statement_table_exports_as_csv_and_xlsx(books, tmp_path):
    tables = [
        read(books, statements.general_ledger, subject_code="2241", date_from=D0, date_to=D1).to_table(),
        read(books, statements.subsidiary_ledger, subject_code="224101", date_from=D0, date_to=D1).to_table(),
        read(books, statements.balance_sheet, date=D1).to_table(),
        read(books, statements.income_statement, date_from=D0, date_to=D1).to_table(),
    ]
    for index, table in enumerate(tables):
        export.write_table(table, tmp_path / f"{index}.csv", "csv")
        export.write_table(table, tmp_path / f"{index}.xlsx", "xlsx")
        assert [tuple(row) for row in read_csv(tmp_path / f"{index}.csv")[1:]] == list(table.rows)
        sheet = load_workbook(tmp_path / f"{index}.xlsx").active
        assert sheet.max_row == len(table.rows) + 1
    subsidiary = tables[1]
    assert (
        "merchant:m001",
        "2025-12-31",
        "记-2025-12-0004",
        "224101",
        "退款 Refunds",
        "50.00",
        "0.00",
        "credit",
        "447.00",
    ) in subsidiary.rows
