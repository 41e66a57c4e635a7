"""The ``zhangfang`` command line, end to end through Typer's runner, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from zhangfang.cli.main import app, exit_code_for
from zhangfang.config import get_settings
from zhangfang.db.migrate import alembic_config
from zhangfang.db.uow import run_in_transaction
from zhangfang.errors import Conflict, InvalidInput, NotFound, Rejected, Unauthorized
from zhangfang.ledger import service as ledger
from zhangfang.ledger.tables import journal_entries
from zhangfang.settlement.calendar import CHINESE_WORKING_DAYS

SRC = Path(__file__).resolve().parents[2] / "src"

HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()
runner = CliRunner()


@pytest.fixture
def cli(database, engine):
    """Run ``zhangfang --database-url <clean test database> ARGS…``; by default expect success."""

    def run(*args: str, expect: int = 0):
        result = runner.invoke(app, ["--database-url", database.url, *args])
        assert result.exit_code == expect, (result.stdout, result.stderr, result.exception)
        return result

    return run


def as_json(result) -> dict:
    return json.loads(result.stdout)


def create_account(cli, key: str, *flags: str) -> str:
    return as_json(cli("ledger", "accounts", "create", "--key", key, "--ledger-code", "test", *flags, "--json"))["id"]


@pytest.fixture
def bank_and_wallet(cli) -> tuple[str, str]:
    bank = create_account(cli, "bank", "--normal-side", "debit")
    wallet = create_account(cli, "wallet:alice", "--no-overdraft")
    return bank, wallet


def all_balances(engine) -> dict[str, dict]:
    page = run_in_transaction(engine, lambda conn: ledger.list_accounts(conn, limit=500), readonly=True)
    return {account.ref: account.balance.as_dict() for account in page.items}


def entry_count(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(journal_entries)).scalar_one()


# --------------------------------------------------------------------------- db


def test_db_upgrade_creates_a_new_sqlite_database_and_running_it_again_changes_nothing(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    before = runner.invoke(app, ["--database-url", url, "db", "current"])
    assert before.exit_code == 0 and before.stdout.startswith("none")
    for _ in range(2):
        result = runner.invoke(app, ["--database-url", url, "db", "upgrade"])
        assert result.exit_code == 0, (result.stdout, result.exception)
        assert result.stdout.strip() == f"database at revision {HEAD}"
    current = runner.invoke(app, ["--database-url", url, "db", "current"])
    assert current.stdout.strip() == f"{HEAD} (head)"


def test_db_upgrade_on_a_migrated_database_is_a_no_op(cli, engine):
    bank = create_account(cli, "bank", "--normal-side", "debit")
    cli("db", "upgrade")
    assert cli("db", "current").stdout.strip() == f"{HEAD} (head)"
    assert bank in all_balances(engine)


# --------------------------------------------------------------------------- accounts


def test_accounts_are_created_idempotently_shown_and_listed(cli):
    first = as_json(
        cli(
            "ledger", "accounts", "create", "--key", "wallet:bob", "--ledger-code", "user_wallet",
            "--owner-ref", "user:bob", "--no-overdraft", "--json",
        )
    )  # fmt: skip
    assert first["created"] is True
    assert first["flags"]["debits_must_not_exceed_credits"] is True
    assert first["normal_side"] == "credit" and first["currency"] == "CNY"
    again = as_json(
        cli(
            "ledger", "accounts", "create", "--key", "wallet:bob", "--ledger-code", "user_wallet",
            "--owner-ref", "user:bob", "--no-overdraft", "--json",
        )
    )  # fmt: skip
    assert again["created"] is False and again["id"] == first["id"]
    hot = create_account(cli, "fees", "--hot")

    shown = as_json(cli("ledger", "accounts", "show", first["id"], "--json"))
    assert shown["owner_ref"] == "user:bob" and shown["balance"]["posted"] == 0
    assert first["id"] in cli("ledger", "accounts", "show", first["id"]).stdout

    listed = as_json(cli("ledger", "accounts", "list", "--json"))
    assert [item["id"] for item in listed["items"]] == [first["id"], hot]
    assert listed["items"][1]["flags"]["hot"] is True
    table = cli("ledger", "accounts", "list").stdout
    assert first["id"] in table and hot in table


def test_an_account_with_a_zero_balance_can_be_closed(cli):
    ref = create_account(cli, "empty")
    closed = as_json(cli("ledger", "accounts", "close", ref, "--json"))
    assert closed["flags"]["closed"] is True and closed["closed_at"]


# --------------------------------------------------------------------------- entries


def test_post_takes_major_units_and_balance_json_shows_minor_units(cli, bank_and_wallet):
    bank, wallet = bank_and_wallet
    posted = as_json(
        cli("ledger", "post", "--key", "topup:1", "--code", "wallet_topup",
            "--debit", f"{bank}:12.34", "--credit", f"{wallet}:12.34", "--json")
    )  # fmt: skip
    assert posted["replayed"] is False
    assert sorted((p["side"], p["amount"]) for p in posted["postings"]) == [("credit", 1234), ("debit", 1234)]

    balance = as_json(cli("ledger", "balance", wallet, "--json"))
    assert balance["posted"] == 1234 and balance["available"] == 1234 and balance["currency"] == "CNY"
    assert as_json(cli("ledger", "balance", bank, "--json"))["posted"] == 1234
    assert "12.34" in cli("ledger", "balance", wallet).stdout

    replay = as_json(
        cli("ledger", "post", "--key", "topup:1", "--code", "wallet_topup",
            "--debit", f"{bank}:12.34", "--credit", f"{wallet}:12.34", "--json")
    )  # fmt: skip
    assert replay["replayed"] is True and replay["id"] == posted["id"]
    assert as_json(cli("ledger", "balance", wallet, "--json"))["posted"] == 1234

    as_of = as_json(cli("ledger", "balance", wallet, "--as-of-entry", posted["id"], "--json"))
    assert as_of["posted"] == 1234
    statement = as_json(cli("ledger", "statement", wallet, "--json"))
    assert [(i["entry"], i["amount"], i["posted_balance_after"]) for i in statement["items"]] == [
        (posted["id"], 1234, 1234)
    ]


def test_one_entry_may_have_several_debits_and_credits(cli, bank_and_wallet):
    bank, wallet = bank_and_wallet
    fees = create_account(cli, "fees", "--hot")
    cli("ledger", "post", "--key", "k1", "--code", "topup", "--debit", f"{bank}:100", "--credit", f"{wallet}:100")
    cli(
        "ledger", "post", "--key", "k2", "--code", "payment", "--debit", f"{wallet}:10.00",
        "--credit", f"{bank}:9.94", "--credit", f"{fees}:0.06",
    )  # fmt: skip
    assert as_json(cli("ledger", "balance", wallet, "--json"))["posted"] == 9000
    assert as_json(cli("ledger", "balance", fees, "--json"))["posted"] == 6


@pytest.mark.parametrize(
    ("debit", "credit", "code"),
    [
        ("{bank}:10.00", "{wallet}:9.99", "entry_must_balance"),
        ("acc_01NOSUCHACCOUNT000000000000:1.00", "{wallet}:1.00", "account_not_found"),
        ("{bank}:1.234", "{wallet}:1.234", "amount_has_too_many_decimals"),
        ("{bank}:1e3", "{wallet}:1e3", "amount_not_a_number"),
        ("{bank}:-1.00", "{wallet}:-1.00", "amount_must_be_positive"),
        ("{bank}", "{wallet}:1.00", "leg_format_invalid"),
        ("{wallet}:5.00", "{bank}:5.00", "debits_exceed_credits"),
    ],
)
def test_a_refused_post_is_one_line_on_stderr_with_its_code_exits_2_and_writes_nothing(
    cli, engine, bank_and_wallet, debit, credit, code
):
    bank, wallet = bank_and_wallet
    before = (all_balances(engine), entry_count(engine))
    result = cli(
        "ledger", "post", "--key", "bad:1", "--code", "transfer",
        "--debit", debit.format(bank=bank, wallet=wallet), "--credit", credit.format(bank=bank, wallet=wallet),
        expect=2,
    )  # fmt: skip
    assert result.stderr.startswith(f"error: {code}: ")
    assert result.stderr.count("\n") == 1 and result.stderr.endswith("\n")
    assert result.stdout == ""
    assert (all_balances(engine), entry_count(engine)) == before


def test_unknown_references_are_refused_with_exit_2(cli):
    result = cli("ledger", "accounts", "show", "acc_01NOSUCHACCOUNT000000000000", expect=2)
    assert result.stderr == "error: account_not_found: account acc_01NOSUCHACCOUNT000000000000 does not exist\n"
    assert cli("ledger", "reverse", "je_nope", expect=2).stderr.startswith("error: entry_not_found: ")
    assert cli("ledger", "hold", "show", "hld_nope", expect=2).stderr.startswith("error: hold_not_found: ")


def test_every_kind_of_refusal_exits_2_and_unauthorized_exits_3():
    assert [exit_code_for(kind("x")) for kind in (InvalidInput, NotFound, Conflict, Rejected)] == [2, 2, 2, 2]
    assert exit_code_for(Unauthorized("x")) == 3


def test_an_unexpected_error_propagates_instead_of_becoming_a_refusal(tmp_path):
    url = f"sqlite:///{tmp_path / 'not-migrated.db'}"
    result = runner.invoke(app, ["--database-url", url, "ledger", "accounts", "list"])
    assert result.exit_code == 1
    assert isinstance(result.exception, sa.exc.OperationalError)
    assert "error: " not in result.stderr


def test_an_entry_is_reversed_once(cli, bank_and_wallet):
    bank, wallet = bank_and_wallet
    entry = as_json(
        cli("ledger", "post", "--key", "t1", "--code", "topup", "--debit", f"{bank}:8", "--credit", f"{wallet}:8",
            "--json")
    )  # fmt: skip
    reversal = as_json(cli("ledger", "reverse", entry["id"], "--json"))
    assert reversal["kind"] == "reversal" and reversal["reverses"] == entry["id"]
    assert as_json(cli("ledger", "balance", wallet, "--json"))["posted"] == 0
    again = cli("ledger", "reverse", entry["id"], "--key", "another-key", expect=2)
    assert again.stderr.startswith("error: entry_already_reversed: ")


# --------------------------------------------------------------------------- holds


def test_holds_are_created_posted_in_part_and_voided(cli, bank_and_wallet):
    bank, wallet = bank_and_wallet
    merchant = create_account(cli, "merchant")
    cli("ledger", "post", "--key", "t1", "--code", "topup", "--debit", f"{bank}:100", "--credit", f"{wallet}:100")

    hold = as_json(
        cli("ledger", "hold", "create", "--key", "h1", "--debit", wallet, "--credit", merchant,
            "--amount", "60.00", "--code", "preauth", "--expires-at", "2999-01-01T00:00:00", "--json")
    )  # fmt: skip
    assert hold["state"] == "pending" and hold["amount"] == 6000
    assert hold["expires_at"].startswith("2998-12-31T16:00:00")  # read in Asia/Shanghai
    assert as_json(cli("ledger", "balance", wallet, "--json"))["available"] == 4000

    posted = as_json(cli("ledger", "hold", "post", hold["id"], "--amount", "45", "--json"))
    assert posted["state"] == "posted" and posted["posted_amount"] == 4500
    balance = as_json(cli("ledger", "balance", wallet, "--json"))
    assert (balance["posted"], balance["available"]) == (5500, 5500)
    again = cli("ledger", "hold", "void", hold["id"], expect=2)
    assert again.stderr.startswith("error: hold_already_resolved: ")

    second = as_json(
        cli("ledger", "hold", "create", "--key", "h2", "--debit", wallet, "--credit", merchant,
            "--amount", "10", "--code", "preauth", "--json")
    )  # fmt: skip
    assert as_json(cli("ledger", "hold", "void", second["id"], "--json"))["state"] == "voided"
    assert as_json(cli("ledger", "hold", "show", second["id"], "--json"))["state"] == "voided"
    assert as_json(cli("ledger", "balance", wallet, "--json"))["available"] == 5500
    assert "voided" in cli("ledger", "hold", "show", second["id"]).stdout


def test_a_hold_beyond_the_available_balance_is_refused(cli, bank_and_wallet):
    bank, wallet = bank_and_wallet
    result = cli(
        "ledger", "hold", "create", "--key", "h1", "--debit", wallet, "--credit", bank,
        "--amount", "1.00", "--code", "preauth", expect=2,
    )  # fmt: skip
    assert result.stderr.startswith("error: debits_exceed_credits: ")


# --------------------------------------------------------------------------- chain


def tamper_with_first_sealed_entry(engine) -> str:
    """Add one fen to a posting of the entry at chain position 1, past the append-only trigger."""
    with engine.connect() as conn:
        entry_id, ref = conn.execute(
            sa.select(journal_entries.c.id, journal_entries.c.ref).where(journal_entries.c.seal_seq == 1)
        ).one()
    update = sa.text("UPDATE ledger_postings SET amount = amount + 1 WHERE entry_id = :entry_id")
    if engine.dialect.name == "postgresql":
        try:
            with engine.begin() as conn:
                conn.execute(sa.text("ALTER TABLE ledger_postings DISABLE TRIGGER ledger_postings_append_only"))
                conn.execute(update, {"entry_id": entry_id})
        finally:
            with engine.begin() as conn:
                conn.execute(sa.text("ALTER TABLE ledger_postings ENABLE TRIGGER ledger_postings_append_only"))
    else:
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TRIGGER ledger_postings_no_update"))
            conn.execute(update, {"entry_id": entry_id})
    return ref


def test_verify_says_ok_until_a_posting_is_changed_then_exits_1_naming_the_entry(cli, engine, bank_and_wallet):
    bank, wallet = bank_and_wallet
    for n in (1, 2):
        cli("ledger", "post", "--key", f"t{n}", "--code", "topup", "--debit", f"{bank}:1", "--credit", f"{wallet}:1")
    assert cli("ledger", "verify").stdout == "chain ok: 0 entries checked, 2 not yet sealed\n"
    assert cli("ledger", "seal").stdout == "sealed 2 entries; the chain is at position 2\n"
    cli("ledger", "post", "--key", "t3", "--code", "topup", "--debit", f"{bank}:1", "--credit", f"{wallet}:1")
    assert cli("ledger", "verify").stdout == "chain ok: 2 entries checked, 1 not yet sealed\n"
    status = as_json(cli("ledger", "chain-status", "--json"))
    assert (status["sealed_seq"], status["unsealed_count"]) == (2, 1)

    ref = tamper_with_first_sealed_entry(engine)
    broken = cli("ledger", "verify", expect=1)
    assert broken.stderr.startswith(f"chain broken at entry {ref} (position 1): content_changed")
    assert broken.stderr.count("\n") == 1
    assert as_json(cli("ledger", "verify", "--json", expect=1))["first_bad_entry"] == ref


# --------------------------------------------------------------------------- maintenance


def test_fold_and_expire_holds_report_what_they_did(cli, bank_and_wallet):
    bank, _wallet = bank_and_wallet
    fees = create_account(cli, "fees", "--hot")
    cli("ledger", "post", "--key", "t1", "--code", "fee", "--debit", f"{bank}:1", "--credit", f"{fees}:1")
    assert as_json(cli("ledger", "fold", "--json")) == {"folded": 1}
    assert as_json(cli("ledger", "fold", "--json")) == {"folded": 0}
    assert as_json(cli("ledger", "balance", fees, "--json"))["posted"] == 100
    assert as_json(cli("ledger", "expire-holds", "--json")) == {"expired": 0}


def test_day_end_closes_the_open_date_and_lists_it(cli, bank_and_wallet):
    bank, wallet = bank_and_wallet
    cli("ledger", "post", "--key", "t1", "--code", "topup", "--debit", f"{bank}:7", "--credit", f"{wallet}:7")
    open_date = as_json(cli("ledger", "day-end", "list", "--json"))["open_date"]

    close = as_json(cli("ledger", "day-end", "--json"))
    assert close["accounting_date"] == open_date
    assert (close["state"], close["entry_count"], close["account_count"]) == ("closed", 1, 2)
    again = as_json(cli("ledger", "day-end", "--date", open_date, "--json"))
    assert again == close
    out_of_order = cli("ledger", "day-end", "--date", "2000-01-01", expect=2)
    assert out_of_order.stderr.startswith("error: day_end_out_of_order: ")
    assert cli("ledger", "day-end", "--date", "yesterday", expect=2).stderr.startswith("error: date_invalid: ")

    listed = as_json(cli("ledger", "day-end", "list", "--json"))
    assert [item["accounting_date"] for item in listed["closes"]] == [open_date]
    assert listed["open_date"] > open_date
    history = as_json(cli("ledger", "history", wallet, "--from", open_date, "--to", open_date, "--json"))
    assert [(i["accounting_date"], i["posted"]) for i in history["items"]] == [(open_date, 700)]
    assert as_json(cli("ledger", "history", wallet, "--json"))["items"] == history["items"]


def test_jobs_run_once_seals_and_folds(cli, bank_and_wallet):
    bank, wallet = bank_and_wallet
    cli("ledger", "post", "--key", "t1", "--code", "topup", "--debit", f"{bank}:7", "--credit", f"{wallet}:7")
    counts = as_json(cli("jobs", "run-once", "--json"))
    assert counts["sealed"] == 1 and counts["folded"] == 0 and counts["expired"] == 0
    assert cli("ledger", "verify").stdout == "chain ok: 1 entries checked, 0 not yet sealed\n"


# --------------------------------------------------------------------------- demo


def test_demo_load_twice_changes_nothing(cli, engine):
    first = cli("demo", "load")
    curl = 'curl -H "Authorization: Bearer $ZHANGFANG_ADMIN_API_KEY" http://127.0.0.1:8000/v1/ledger/accounts/acc_'
    assert curl in first.stdout
    assert "bank:icbc:custody" in first.stdout and "platform:fee_income" in first.stdout
    balances, entries = all_balances(engine), entry_count(engine)
    assert len(balances) == 11 and entries == 13

    refs = as_json(cli("demo", "load", "--json"))
    assert (all_balances(engine), entry_count(engine)) == (balances, entries)
    wallet = balances[refs["wallet_alice"]]
    assert (wallet["posted"], wallet["available"]) == (82500, 82500)
    assert balances[refs["wallet_bob"]]["available"] == 17000  # 80.00 frozen by the pending hold
    assert balances[refs["fee_income"]]["posted"] == 228
    assert balances[refs["usd_wallet_dave"]]["currency"] == "USD"
    assert cli("ledger", "seal").stdout == "sealed 13 entries; the chain is at position 13\n"
    assert cli("ledger", "verify").stdout == "chain ok: 13 entries checked, 0 not yet sealed\n"


# --------------------------------------------------------------------------- worker


def test_the_worker_stops_cleanly_on_sigterm(sqlite_template, tmp_path):
    path = tmp_path / "worker.db"
    shutil.copyfile(sqlite_template, path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen(
        [
            sys.executable, "-c", "from zhangfang.cli.main import app; app()",
            "--database-url", f"sqlite:///{path}", "worker", "--interval", "0.05",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        lines = []
        while time.monotonic() < deadline:
            line = process.stderr.readline()
            lines.append(line)
            if "running every" in line or not line:
                break
        assert any("running every" in line for line in lines), lines
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    assert "SIGTERM: stopping after this round" in stderr and "stopped" in stderr


def test_keys_are_printed_as_given_without_emoji_or_markup(cli, bank_and_wallet):
    bank, wallet = bank_and_wallet
    out = cli("ledger", "post", "--key", "gift:1:[red]x", "--code", "t", "--debit", f"{bank}:1",
              "--credit", f"{wallet}:1").stdout  # fmt: skip
    assert "gift:1:[red]x" in out


def test_db_upgrade_creates_a_missing_postgresql_database(postgres_database):
    # PostgreSQL only: SQLite creates its file itself.
    name = f"zf_created_{uuid.uuid4().hex[:8]}"
    url = make_url(postgres_database).set(database=name).render_as_string(hide_password=False)
    try:
        result = runner.invoke(app, ["--database-url", url, "db", "upgrade"])
        assert result.exit_code == 0, result.stdout
        assert f"created database {name}" in result.stdout
        again = runner.invoke(app, ["--database-url", url, "db", "upgrade"])
        assert again.exit_code == 0 and "created database" not in again.stdout
    finally:
        admin = sa.create_engine(make_url(postgres_database).set(database="postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_a_bad_published_holiday_file_stops_every_command_and_a_good_one_extends_the_calendar(
    cli, tmp_path, monkeypatch
):
    year = CHINESE_WORKING_DAYS.last_year + 1
    schedule = tmp_path / "holidays.toml"
    monkeypatch.setenv("ZHANGFANG_SETTLEMENT_CALENDAR_FILE", str(schedule))
    get_settings.cache_clear()
    try:
        schedule.write_text(f"[{year}]\nworking_days = [{year}-01-06]\n", encoding="utf-8")  # not a weekend day
        bad = cli("db", "current", expect=2)
        assert bad.stderr.startswith("error: settlement_calendar_file_invalid: ")
        assert CHINESE_WORKING_DAYS.last_year == year - 1

        schedule.write_text(f"[{year}]\nholidays = [{year}-01-01]\n", encoding="utf-8")
        cli("db", "current")
        assert CHINESE_WORKING_DAYS.last_year == year
        assert not CHINESE_WORKING_DAYS.is_working_day(dt.date(year, 1, 1))
    finally:
        CHINESE_WORKING_DAYS.publish({}, source="")
        get_settings.cache_clear()
