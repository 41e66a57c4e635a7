"""``zhangfang accounting …`` end to end on the demo's books, on SQLite and PostgreSQL.

The issue's acceptance: after the demo's payments, refunds and fees, the trial
balance of the day balances and 账账核对 finds no difference; a manual voucher
cannot be posted by its maker; a closed period refuses vouchers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from zhangfang.cli.main import app

runner = CliRunner()


@pytest.fixture
def cli(database, engine):
    def run(*args: str, expect: int = 0):
        result = runner.invoke(app, ["--database-url", database.url, *args])
        assert result.exit_code == expect, (result.stdout, result.stderr, result.exception)
        return result

    return run


@pytest.fixture
def demo_day(cli) -> str:
    """The demo loaded, its ledger day closed (日切) and booked; returns the day."""
    cli("demo", "load")
    day = json.loads(cli("ledger", "day-end", "--json").stdout)["accounting_date"]
    cli("accounting", "sync")
    return day


def test_the_demo_books_balance_and_agree_with_the_ledger(cli, demo_day):
    trial = json.loads(cli("accounting", "trial-balance", "--date", demo_day, "--json").stdout)

    assert trial["balanced"] is True
    assert [total["currency"] for total in trial["totals"]] == ["CNY", "USD"]
    rows = {(row["currency"], row["code"]): row for row in trial["rows"]}
    # the demo: 1,300.00 settled into custody; fees of 0.6% on 430.00 of payments, 50.00 of them refunded
    assert rows[("CNY", "100202")]["balance"] == "1300.00"
    assert rows[("CNY", "602101")]["balance"] == "2.28"
    assert rows[("CNY", "602101")]["credit"] == "2.58"  # gross: the refund's fee comes back as a debit
    assert rows[("CNY", "300101")]["closing_debit"] == "500.00"
    assert all(isinstance(row["debit"], str) and Decimal(row["debit"]) >= 0 for row in trial["rows"])

    check = json.loads(cli("accounting", "check", "--date", demo_day, "--json").stdout)
    assert (check["ok"], check["differences"], check["unmapped_ledger_codes"]) == (True, 0, [])
    assert {item["code"] for item in check["subjects"]} == {"100202", "224101", "224102", "300101", "602101"}


def test_a_manual_voucher_needs_a_second_person_on_the_command_line_too(cli, demo_day):
    made = json.loads(
        cli(
            "accounting", "vouchers", "submit",
            "--key", "adj-1", "--date", demo_day, "--summary", "渠道手续费 channel fees",
            "--maker", "li.kuaiji", "--debit", "642101@channel:alipay:1.20", "--credit", "300101@channel:alipay:1.20",
            "--json",
        ).stdout
    )  # fmt: skip
    assert (made["state"], made["total"], made["lines"][0]["aux"]) == ("pending", 120, "channel:alipay")

    refused = cli("accounting", "vouchers", "approve", made["ref"], "--checker", "li.kuaiji", expect=2)
    assert refused.stderr.startswith("error: maker_cannot_approve:")

    posted = json.loads(
        cli("accounting", "vouchers", "approve", made["ref"], "--checker", "wang.zhuguan", "--json").stdout
    )
    assert (posted["state"], posted["label"]) == ("posted", f"记-{demo_day[:7]}-0007")

    # the books now differ from the ledger on channel clearing, and the check names the voucher
    differs = cli("accounting", "check", "--date", demo_day, "--json", expect=1)
    check = json.loads(differs.stdout)
    differing = {item["code"]: item for item in check["subjects"] if item["difference"] != "0.00"}
    assert {code: item["difference"] for code, item in differing.items()} == {"300101": "-1.20", "642101": "1.20"}
    assert {item["causes"][0]["ref"] for item in differing.values()} == {made["ref"]}


def test_unbalanced_and_malformed_vouchers_are_refused_with_stable_codes(cli, demo_day):
    base = ("accounting", "vouchers", "submit", "--key", "k", "--date", demo_day, "--summary", "s", "--maker", "m")
    unbalanced = cli(*base, "--debit", "642101:1.00", "--credit", "300101:0.99", expect=2)
    assert unbalanced.stderr.startswith("error: voucher_must_balance:")
    malformed = cli(*base, "--debit", "642101", "--credit", "300101:1.00", expect=2)
    assert malformed.stderr.startswith("error: voucher_line_format_invalid:")
    too_precise = cli(*base, "--debit", "642101:1.001", "--credit", "300101:1.001", expect=2)
    assert too_precise.stderr.startswith("error: amount_too_precise:") or "error:" in too_precise.stderr
    listed = json.loads(cli("accounting", "vouchers", "list", "--kind", "manual", "--json").stdout)
    assert listed["vouchers"] == []


def test_the_beancount_export_passes_bean_check(cli, demo_day, tmp_path: Path):
    out = tmp_path / "books.beancount"
    cli("accounting", "export", "--format", "beancount", "--out", str(out))
    checked = subprocess.run(
        [str(Path(sys.executable).parent / "bean-check"), str(out)], capture_output=True, text=True, check=False
    )
    assert (checked.returncode, checked.stdout, checked.stderr) == (0, "", "")
    refused = cli("accounting", "export", "--format", "qif", "--out", str(out), expect=2)
    assert refused.stderr.startswith("error: report_format_invalid:")


def test_reports_export_as_csv_and_xlsx(cli, demo_day, tmp_path: Path):
    csv_file = tmp_path / "tb.csv"
    cli("accounting", "trial-balance", "--date", demo_day, "--out", str(csv_file), "--format", "csv")
    assert "100202" in csv_file.read_text(encoding="utf-8-sig")
    xlsx_file = tmp_path / "bs.xlsx"
    cli("accounting", "report", "balance-sheet", "--date", demo_day, "--out", str(xlsx_file), "--format", "xlsx")
    assert xlsx_file.read_bytes()[:2] == b"PK"  # a zip: the XLSX container
    sheet = json.loads(cli("accounting", "report", "balance-sheet", "--date", demo_day, "--json").stdout)
    assert sheet["rows"]
