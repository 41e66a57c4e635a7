"""``zhangfang lending schedule``, end to end through Typer's runner and once as a process (no database)."""

from __future__ import annotations

import json
import os
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
