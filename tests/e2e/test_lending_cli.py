"""``zhangfang lending schedule``, end to end through Typer's runner and once as a process (no database)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from zhangfang.cli.main import app

SRC = Path(__file__).resolve().parents[2] / "src"
runner = CliRunner()

ACCEPTANCE = (
    "lending",
    "schedule",
    "--principal",
    "10000.00",
    "--annual-rate",
    "0.12",
    "--periods",
    "12",
    "--method",
    "equal-installment",
    "--start",
    "2026-01-15",
)


def run(*args: str, expect: int = 0):
    result = runner.invoke(app, list(args))
    assert result.exit_code == expect, (result.stdout, result.stderr, result.exception)
    return result


def test_the_acceptance_command_prints_the_schedule_as_json_in_yuan():
    periods = json.loads(run(*ACCEPTANCE, "--json").stdout)
    assert isinstance(periods, list) and len(periods) == 12
    keys = {"period", "due_date", "principal", "interest", "total", "remaining_principal"}
    assert all(set(p) == keys for p in periods)
    # The hand-computed figures of tests/unit/test_lending_schedule.py: EMI 888.49, the last 888.47.
    assert periods[0] == {
        "period": 1,
        "due_date": "2026-02-15",
        "principal": "788.49",
        "interest": "100.00",
        "total": "888.49",
        "remaining_principal": "9211.51",
    }
    assert periods[-1] == {
        "period": 12,
        "due_date": "2027-01-15",
        "principal": "879.67",
        "interest": "8.80",
        "total": "888.47",
        "remaining_principal": "0.00",
    }
    assert all(isinstance(p[k], str) for p in periods for k in keys - {"period"})
    assert sum(Decimal(p["principal"]) for p in periods) == Decimal("10000.00")
    assert sum(Decimal(p["interest"]) for p in periods) == Decimal("661.86")


@pytest.mark.parametrize(
    "method, day_count, count, last_total",
    [
        ("equal-principal", "30/360", 12, "841.70"),
        ("interest-first", "30/360", 12, "10100.00"),
        ("bullet", "30/360", 1, "11200.00"),
        ("bullet", "actual/365", 1, "11200.00"),
        ("interest-first", "actual/360", 12, "10103.33"),  # Dec 15 -> Jan 15 is 31 days: 103.33
    ],
)
def test_every_method_and_day_count_is_accepted(method, day_count, count, last_total):
    args = [a if a != "equal-installment" else method for a in ACCEPTANCE]
    periods = json.loads(run(*args, "--day-count", day_count, "--json").stdout)
    assert len(periods) == count and periods[-1]["total"] == last_total


def test_without_json_the_schedule_is_a_table_with_totals():
    out = run(*ACCEPTANCE).stdout
    assert "888.49" in out and "9211.51" in out and "2027-01-15" in out
    assert "10661.86" in out and "661.86" in out  # the totals row


@pytest.mark.parametrize(
    "option, value, code",
    [
        ("--principal", "abc", "amount_not_a_number"),
        ("--principal", "10.001", "amount_has_too_many_decimals"),
        ("--principal", "0", "amount_must_be_positive"),
        ("--principal", "-100.00", "amount_must_be_positive"),
        ("--annual-rate", "12%", "annual_rate_invalid"),
        ("--annual-rate", "10", "annual_rate_invalid"),
        ("--periods", "0", "period_count_invalid"),
        ("--periods", "601", "period_count_invalid"),
        ("--periods", "twelve", "period_count_invalid"),
        ("--method", "flat", "amortization_method_unknown"),
        ("--start", "2026-02-30", "date_invalid"),
        ("--day-count", "actual/actual", "day_count_unknown"),
        ("--rounding", "nearest", "rounding_mode_unknown"),
        ("--currency", "YUAN", "currency_unknown"),
    ],
)
def test_a_bad_argument_is_one_error_line_on_stderr_and_exit_2(option, value, code):
    args = list(ACCEPTANCE)
    if option in args:
        args[args.index(option) + 1] = value
    else:
        args += [option, value]
    refused = run(*args, "--json", expect=2)
    assert refused.stderr.startswith(f"error: {code}: ") and refused.stderr.count("\n") == 1, refused.stderr
    assert refused.stdout == ""


def test_a_missing_option_is_one_error_line_too():
    args = list(ACCEPTANCE)
    del args[args.index("--start") : args.index("--start") + 2]
    refused = run(*args, expect=2)
    assert refused.stderr == "error: option_required: --start is required\n"


def test_the_command_runs_as_a_process_without_a_database(tmp_path):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
        # A database URL that cannot be opened: the command must not need one.
        "ZHANGFANG_DATABASE_URL": f"sqlite:///{tmp_path / 'missing' / 'no.db'}",
    }
    code = "from zhangfang.cli.main import app; app()"
    done = subprocess.run(
        [sys.executable, "-c", code, *ACCEPTANCE, "--json"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[0]["total"] == "888.49"
    bad = subprocess.run(
        [sys.executable, "-c", code, *ACCEPTANCE[:-2], "--start", "soon"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and bad.stderr.startswith("error: date_invalid: ")


# --------------------------------------------------------------------------- loans, on a SQLite database


@pytest.fixture
def db_cli(sqlite_template, tmp_path):
    """Runs ``zhangfang --database-url <a fresh migrated SQLite copy> …``."""
    path = tmp_path / "zhangfang.db"
    shutil.copyfile(sqlite_template, path)
    url = f"sqlite:///{path}"

    def invoke(*args: str, expect: int = 0):
        return run("--database-url", url, *args, expect=expect)

    return invoke


@pytest.fixture
def merchant_ref(db_cli) -> str:
    created = db_cli(
        "merchants", "create", "--key", "noodle-shop", "--name", "兰州拉面", "--mcc", "5812", "--fee-rate", "0.006",
        "--bank-name", "招商银行", "--account-number", "6214830212345678", "--account-name", "店主",
        "--sign-type", "HMAC-SHA256", "--json",
    )  # fmt: skip
    return json.loads(created.stdout)["id"]


DRAWDOWN = ("--principal", "10000.00", "--annual-rate", "0.12", "--periods", "3", "--start", "2026-01-15")


def test_an_operator_lends_shows_and_takes_a_repayment_in_yuan(db_cli, merchant_ref):
    args = ("lending", "drawdown", "--merchant", merchant_ref, "--key", "loan-1", "--kind", "term", *DRAWDOWN)
    loan = json.loads(db_cli(*args, "--json").stdout)
    assert (loan["created"], loan["principal"], loan["kind"]) == (True, 1_000_000, "term")
    assert [i["principal"] + i["interest"] for i in loan["installments"]] == [340022, 340022, 340023]
    again = json.loads(db_cli(*args, "--json").stdout)
    assert (again["created"], again["id"]) == (False, loan["id"])

    shown = json.loads(db_cli("lending", "show", loan["id"], "--as-of", "2026-03-01", "--json").stdout)
    assert shown["owed"] == 330022 + 10000 + 2310  # 14 days of penalty on the overdue principal
    assert [i["state"] for i in shown["installments"]] == ["overdue", "pending", "pending"]

    paid = db_cli(
        "lending", "repay", loan["id"], "--amount", "3500.00", "--source", "manual", "--key", "pay-1",
        "--as-of", "2026-03-01", "--json",
    )  # fmt: skip
    repayment = json.loads(paid.stdout)
    assert (repayment["amount"], repayment["applied"], repayment["overpayment"]) == (350000, 350000, 0)
    assert repayment["split"] == [
        {"period": 1, "penalty": 2310, "interest": 10000, "principal": 330022},
        {"period": 2, "penalty": 0, "interest": 6700, "principal": 968},
    ]
    listed = json.loads(db_cli("lending", "repayments", loan["id"], "--json").stdout)
    assert [item["ref"] for item in listed] == [repayment["ref"]]
    table = db_cli("lending", "show", loan["id"], "--as-of", "2026-03-01").stdout
    assert "3423.32" in table and "paid" in table and "6690.10" in table  # period 1 paid with its penalty

    listed = json.loads(db_cli("lending", "loans", "--merchant", merchant_ref, "--json").stdout)
    assert [item["outstanding_principal"] for item in listed] == [1_000_000 - 330022 - 968]
    aging = json.loads(db_cli("lending", "aging", "--as-of", "2026-03-20", "--json").stdout)
    assert [(row["bucket"], row["loan_count"]) for row in aging["rows"]] == [
        ("current", 0),
        ("M1", 1),
        ("M2", 0),
        ("M3+", 0),
    ]
    assert "M1" in db_cli("lending", "aging", "--as-of", "2026-03-20").stdout


def test_a_pos_drawdown_beyond_the_credit_line_is_one_error_line(db_cli, merchant_ref):
    line = json.loads(db_cli("lending", "credit-line", merchant_ref, "--as-of", "2026-01-15", "--json").stdout)
    assert (line["limit"], line["available"]) == (0, 0)

    refused = db_cli("lending", "drawdown", "--merchant", merchant_ref, "--key", "pos-1", *DRAWDOWN, expect=2)

    assert refused.stderr.startswith("error: credit_line_exceeded: ") and refused.stderr.count("\n") == 1
    assert json.loads(db_cli("lending", "loans", "--json").stdout) == []


@pytest.mark.parametrize(
    "args, code",
    [
        (("repay", "loan_01M8NT8D17N87DWYEQ5W1D0J8Z", "--amount", "1.00", "--source", "manual", "--key", "k"),
         "loan_not_found"),
        (("repay", "{loan}", "--amount", "1.001", "--source", "manual", "--key", "k"), "amount_has_too_many_decimals"),
        (("repay", "{loan}", "--amount", "1.00", "--source", "cash", "--key", "k"), "repayment_source_invalid"),
        (("repay", "{loan}", "--amount", "1.00", "--source", "manual"), "option_required"),
        (("show", "{loan}", "--as-of", "someday"), "date_invalid"),
        (("aging", "--as-of", "0001-01-01"), "as_of_date_invalid"),
        (("drawdown", "--merchant", "{merchant}", "--key", "k2", "--kind", "term", "--principal", "1.00",
          "--annual-rate", "0.12", "--periods", "3", "--start", "2026-01-15", "--allocation-order", "principal"),
         "allocation_order_invalid"),
    ],
)  # fmt: skip
def test_a_refused_loan_command_is_one_error_line_and_changes_nothing(db_cli, merchant_ref, args, code):
    args_base = ("lending", "drawdown", "--merchant", merchant_ref, "--key", "loan-1", "--kind", "term", *DRAWDOWN)
    loan = json.loads(db_cli(*args_base, "--json").stdout)
    filled = [arg.format(loan=loan["id"], merchant=merchant_ref) for arg in args]

    refused = db_cli("lending", *filled, expect=2)

    assert refused.stderr.startswith(f"error: {code}: ") and refused.stderr.count("\n") == 1, refused.stderr
    after = json.loads(db_cli("lending", "show", loan["id"], "--json").stdout)
    assert after["outstanding_principal"] == 1_000_000
    assert [item["id"] for item in json.loads(db_cli("lending", "loans", "--json").stdout)] == [loan["id"]]


# --------------------------------------------------------------------------- loan products, on a SQLite database

TERM_PRODUCT = (
    "lending", "product-create", "--code", "term-3m", "--name", "经营贷 3 个月", "--kind", "term",
    "--annual-rate-min", "0.12", "--annual-rate-max", "0.12", "--periods-min", "3", "--periods-max", "3",
    "--principal-min", "1000.00", "--principal-max", "200000.00", "--settlement-share", "none",
)  # fmt: skip


def test_an_operator_creates_a_product_lends_on_it_and_retires_it(db_cli, merchant_ref):
    product = json.loads(db_cli(*TERM_PRODUCT, "--json").stdout)
    assert (product["created"], product["principal_min"], product["annual_rate_max"]) == (True, 100000, "0.12")
    assert json.loads(db_cli(*TERM_PRODUCT, "--json").stdout)["created"] is False
    conflict = db_cli(*TERM_PRODUCT[:-2], "--settlement-share", "none", "--periods-max", "6", expect=2)
    assert conflict.stderr.startswith("error: loan_product_conflict: ") and conflict.stderr.count("\n") == 1
    assert "term-3m" in db_cli("lending", "products").stdout
    assert json.loads(db_cli("lending", "product", "term-3m", "--json").stdout)["state"] == "active"

    args = ("lending", "drawdown", "--merchant", merchant_ref, "--key", "loan-p", "--principal", "10000.00",
            "--start", "2026-01-15", "--product", "term-3m")  # fmt: skip
    loan = json.loads(db_cli(*args, "--json").stdout)
    assert (loan["created"], loan["product"], loan["kind"], loan["periods"]) == (True, "term-3m", "term", 3)
    assert [i["principal"] + i["interest"] for i in loan["installments"]] == [340022, 340022, 340023]

    outside = db_cli(*args[:-2], "--product", "term-3m", "--annual-rate", "0.2", expect=2)
    assert outside.stderr.startswith("error: loan_terms_outside_product: ") and outside.stderr.count("\n") == 1
    missing = db_cli(*args[:-2], expect=2)  # no product: the rate is required as it always was
    assert missing.stderr.startswith("error: option_required: --annual-rate")

    retired = json.loads(db_cli("lending", "product-retire", "term-3m", "--json").stdout)
    assert (retired["state"], retired["retired_now"]) == ("retired", True)
    refused = db_cli(*args[:4], "--key", "loan-q", *args[6:], expect=2)
    assert refused.stderr.startswith("error: loan_product_retired: ")
    assert json.loads(db_cli(*args, "--json").stdout)["created"] is False  # its loan still replays
    assert [item["id"] for item in json.loads(db_cli("lending", "loans", "--json").stdout)] == [loan["id"]]
    assert json.loads(db_cli("lending", "products", "--state", "active", "--json").stdout) == []
