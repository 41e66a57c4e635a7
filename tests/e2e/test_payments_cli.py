"""``zhangfang payments …`` and ``zhangfang channels …`` end to end, on SQLite and PostgreSQL.

Real payments (the ``payments`` fixture: sandbox channels, the API on a port, a
payer's browser) make the orders, attempts, refunds and notifies; the command
line reads them from the same database. Every ``--json`` answer is compared
with the admin API's answer for the same object, and every table with the
values it must show (amounts in yuan).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from zhangfang.channels import registry as channel_registry
from zhangfang.cli.main import app
from zhangfang.config import get_settings
from zhangfang.payments import routing

SRC = Path(__file__).resolve().parents[2] / "src"
runner = CliRunner()

Cli = Callable[..., Any]


@pytest.fixture
def cli_env(payments) -> dict[str, str | None]:
    """The environment an operator's shell would have beside this server: its channels file and settings."""
    return {
        "ZHANGFANG_CHANNELS_FILE": str(payments.sandbox.config_path),
        "ZHANGFANG_SANDBOX": None,
        "ZHANGFANG_PUBLIC_BASE_URL": payments.settings.public_base_url,
        "ZHANGFANG_CHANNEL_FAILURE_THRESHOLD": str(payments.settings.channel_failure_threshold),
    }


def make_cli(database, default_env: dict[str, str | None]) -> Cli:
    """Run ``zhangfang --database-url <the test database> ARGS…`` in this process; by default expect success.

    The settings are read from the environment afresh for each run (``get_settings`` caches them).
    """

    def run(*args: str, expect: int = 0, env: dict[str, str | None] | None = None) -> Any:
        get_settings.cache_clear()
        try:
            result = runner.invoke(
                app, ["--database-url", database.url, *args], env=default_env if env is None else env
            )
        finally:
            get_settings.cache_clear()
        assert result.exit_code == expect, (result.stdout, result.stderr, result.exception)
        return result

    return run


@pytest.fixture
def cli(database, payments, cli_env) -> Cli:
    """The command line beside the ``payments`` server: same database, same channels file."""
    return make_cli(database, cli_env)


@pytest.fixture
def bare_cli(database, engine) -> Cli:
    """The command line on a clean database, without channels (for refusals that need no payments)."""
    return make_cli(database, {"ZHANGFANG_CHANNELS_FILE": None, "ZHANGFANG_SANDBOX": None})


def as_json(result: Any) -> Any:
    return json.loads(result.stdout)


def api(payments, path: str, **params: Any) -> Any:
    response = payments.admin.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def line_of(text: str, needle: str) -> str:
    """The one table line that shows ``needle``."""
    lines = [line for line in text.splitlines() if needle in line]
    assert len(lines) == 1, (needle, text)
    return lines[0]


def rows(text: str) -> list[list[str]]:
    """The cells of every table row in ``text`` (a Rich table's lines between its ``│`` borders)."""
    return [[cell.strip() for cell in line.strip()[1:-1].split("│")] for line in text.splitlines() if "│" in line]


def row_of(text: str, first: str) -> list[str]:
    """The cells of the one row of a many-column table whose first cell is ``first``."""
    [cells] = [cells for cells in rows(text) if len(cells) > 2 and cells[0] == first]
    return cells


def field(text: str, name: str) -> str:
    """The value of a field in a two-column (field, value) table."""
    [value] = [cells[1] for cells in rows(text) if len(cells) == 2 and cells[0] == name]
    return value


def pay(payments, order: dict[str, Any], method: str = "alipay") -> dict[str, Any]:
    payments.pay(order, method)
    return payments.wait_for(lambda: (o := payments.order(order["id"]))["state"] == "succeeded" and o)


def refund(payments, shop, order: dict[str, Any], out_refund_no: str, amount: int) -> dict[str, Any]:
    answer = shop.client.post(
        f"/v1/merchant/payments/{order['id']}/refunds",
        {"out_refund_no": out_refund_no, "amount": amount, "reason": "顾客退货"},
        idempotency_key=f"refund:{out_refund_no}",
    )
    assert answer.status_code == 201, answer.text
    created = answer.json()
    payments.wait_for(
        lambda: (
            next(r for r in payments.order(order["id"])["refunds"] if r["id"] == created["id"])["state"] == "succeeded"
        )
    )
    return created


# --------------------------------------------------------------------------- payments list


def test_payments_list_shows_every_merchants_orders_newest_first_and_its_json_is_the_admin_apis(cli, payments):
    shop, other = payments.merchant("shop-a"), payments.merchant("shop-b")
    first = payments.create_order(shop, "A-1", amount=1999)
    paid = payments.create_order(other, "B-1", amount=12345)
    last = payments.create_order(shop, "A-2", amount=100)
    pay(payments, paid)

    listed = as_json(cli("payments", "list", "--json"))
    assert listed == api(payments, "/v1/admin/payments")
    assert [o["id"] for o in listed["items"]] == [last["id"], paid["id"], first["id"]]
    assert listed["items"][1]["amount"] == 12345 and listed["next_cursor"] is None

    table = cli("payments", "list").stdout
    row = line_of(table, paid["id"])
    for shown in (other.ref, "B-1", "succeeded", "123.45", "CNY", "alipay"):
        assert shown in row
    assert "12345" not in row
    row = line_of(table, first["id"])
    assert shop.ref in row and "19.99" in row and "pending" in row
    assert "1.00" in line_of(table, last["id"])

    mine = as_json(cli("payments", "list", "--merchant", shop.ref, "--json"))
    assert mine == api(payments, "/v1/admin/payments", merchant_id=shop.ref)
    assert [o["id"] for o in mine["items"]] == [last["id"], first["id"]]
    succeeded = as_json(cli("payments", "list", "--state", "succeeded", "--json"))
    assert succeeded == api(payments, "/v1/admin/payments", state="succeeded")
    assert [o["id"] for o in succeeded["items"]] == [paid["id"]]
    assert other.ref not in cli("payments", "list", "--merchant", shop.ref).stdout
    assert "no payments" in cli("payments", "list", "--state", "refunded").stdout


def test_payments_list_pages_with_the_cursor_it_prints(cli, payments):
    shop = payments.merchant()
    orders = [payments.create_order(shop, f"P-{n}", amount=100 + n) for n in range(3)]

    page = as_json(cli("payments", "list", "--limit", "2", "--json"))
    assert page == api(payments, "/v1/admin/payments", limit=2)
    assert [o["id"] for o in page["items"]] == [orders[2]["id"], orders[1]["id"]] and page["next_cursor"]
    assert f"more: --cursor {page['next_cursor']}" in cli("payments", "list", "--limit", "2").stdout
    rest = as_json(cli("payments", "list", "--limit", "2", "--cursor", page["next_cursor"], "--json"))
    assert rest == api(payments, "/v1/admin/payments", limit=2, cursor=page["next_cursor"])
    assert [o["id"] for o in rest["items"]] == [orders[0]["id"]] and rest["next_cursor"] is None


def test_payments_list_refuses_bad_filters_with_one_error_line(bare_cli):
    for args, code in (
        (("--merchant", "mch_nobody"), "merchant_not_found"),
        (("--state", "paid"), "payment_state_invalid"),
        (("--limit", "0"), "limit_invalid"),
        (("--limit", "501"), "limit_invalid"),
        (("--cursor", "abc"), "cursor_invalid"),
    ):
        refused = bare_cli("payments", "list", *args, expect=2)
        assert refused.stderr.startswith(f"error: {code}: ") and refused.stderr.count("\n") == 1, args
        assert refused.stdout == ""


# --------------------------------------------------------------------------- payments show


def test_payments_show_gives_the_order_its_attempts_refunds_and_entry_as_the_admin_api_does(cli, payments):
    shop = payments.merchant()
    order = payments.create_order(shop, "S-1", amount=12345)
    paid = pay(payments, order)
    given = refund(payments, shop, order, "R-1", 2345)

    shown = as_json(cli("payments", "show", order["id"], "--json"))
    assert shown == payments.order(order["id"])
    assert shown["entry"] == paid["entry"] and shown["entry"].startswith("je_")
    assert [(a["channel"], a["state"], a["duplicate"]) for a in shown["attempts"]] == [("alipay", "succeeded", False)]
    [refunded] = shown["refunds"]
    assert (refunded["id"], refunded["kind"], refunded["state"], refunded["amount"]) == (
        given["id"],
        "merchant",
        "succeeded",
        2345,
    )
    assert refunded["fee_returned"] > 0  # 0.6 % of 123.45 is 0.74; 23.45 of it gives back 0.14

    table = cli("payments", "show", order["id"]).stdout
    assert (field(table, "merchant"), field(table, "out_trade_no"), field(table, "state")) == (
        shop.ref,
        "S-1",
        "succeeded",
    )
    assert (field(table, "amount"), field(table, "fee rate"), field(table, "fee")) == ("123.45 CNY", "0.006", "0.74")
    assert (field(table, "refunded"), field(table, "refunding")) == ("23.45", "0.00")
    assert field(table, "ledger entry") == paid["entry"]
    assert field(table, "channel trade no") == paid["channel_trade_no"]
    [attempt] = shown["attempts"]
    assert row_of(table, attempt["id"]) == [
        attempt["id"],
        "alipay",
        "alipay (page)",
        "succeeded",
        "123.45",
        "no",
        paid["channel_trade_no"],
        dt.datetime.fromisoformat(attempt["created_at"]).isoformat(timespec="seconds"),
        dt.datetime.fromisoformat(attempt["paid_at"]).isoformat(timespec="seconds"),
        "",
    ]
    row = row_of(table, given["id"])
    fee_returned = f"0.{refunded['fee_returned']:02d}"
    assert row[:6] == [given["id"], "merchant", "R-1", "succeeded", "23.45", fee_returned]


def test_payments_show_and_close_refuse_an_unknown_payment(bare_cli):
    for args in (("show", "pay_01M8N5N25C9N8PAKYVTQSDD08G"), ("show", "nonsense"), ("close", "pay_nothing")):
        refused = bare_cli("payments", *args, expect=2)
        assert refused.stderr.startswith(f"error: payment_not_found: payment {args[1]} does not exist")


# --------------------------------------------------------------------------- payments close


def test_payments_close_closes_an_unpaid_order_once_and_tells_its_merchant(cli, payments):
    shop = payments.merchant()
    order = payments.create_order(shop, "C-1")

    closed = cli("payments", "close", order["id"])
    assert closed.stdout.startswith(f"{order['id']} is closed: it can no longer be paid")
    after = payments.order(order["id"])
    assert after["state"] == "closed" and after["close_reason"] == "operator" and after["closed_at"]
    again = cli("payments", "close", order["id"])
    assert "was already closed" in again.stdout and "nothing changed" in again.stdout
    assert as_json(cli("payments", "close", order["id"], "--json")) == payments.order(order["id"])
    assert payments.order(order["id"])["closed_at"] == after["closed_at"]

    payments.run_jobs()
    [webhook] = payments.receiver.requests(f"/webhooks/{shop.ref}")
    body = json.loads(webhook.body)
    assert body["type"] == "payment.closed" and body["data"]["id"] == order["id"]


def test_payments_close_refuses_a_paid_order_and_changes_nothing(cli, payments):
    shop = payments.merchant()
    order = payments.create_order(shop, "C-2")
    paid = pay(payments, order)

    refused = cli("payments", "close", order["id"], expect=2)
    assert refused.stderr.startswith("error: payment_already_paid: ")
    assert "refund it instead" in refused.stderr and refused.stdout == ""
    assert payments.order(order["id"]) == paid


def test_a_payer_who_pays_an_order_closed_by_an_operator_is_refunded_and_show_says_so(cli, payments):
    shop = payments.merchant()
    order = payments.create_order(shop, "C-3", amount=880)
    browser, answer = payments.open_payment(order, "alipay")
    channel_page = payments.channel_page(browser, answer, "alipay")

    closed = cli("payments", "close", order["id"])
    [attempt] = payments.order(order["id"])["attempts"]
    assert f"closes its attempts still open at channels: {attempt['id']}" in closed.stdout
    assert browser.post(channel_page, data={}).status_code in (200, 302, 303)  # the payer was already at Alipay

    def refunded() -> dict[str, Any] | None:
        seen = payments.order(order["id"])
        return seen if seen["refunds"] and seen["refunds"][0]["state"] == "succeeded" else None

    seen = payments.wait_for(refunded)
    shown = as_json(cli("payments", "show", order["id"], "--json"))
    assert shown == seen and shown["state"] == "closed"
    assert [(a["state"], a["duplicate"]) for a in shown["attempts"]] == [("succeeded", True)]
    assert [(r["kind"], r["amount"]) for r in shown["refunds"]] == [("duplicate", 880)]
    table = cli("payments", "show", order["id"]).stdout
    assert row_of(table, attempt["id"])[5] == "yes: refunded to the payer"
    assert row_of(table, shown["refunds"][0]["id"])[1:6] == ["duplicate", "", "succeeded", "8.80", "0.00"]


# --------------------------------------------------------------------------- payments notifies


def test_payments_notifies_lists_what_channels_sent_with_the_outcome_of_each(cli, payments):
    shop = payments.merchant()
    order = payments.create_order(shop, "N-1", amount=500)
    paid = pay(payments, order)
    forged = httpx.post(f"{payments.base_url}/v1/channels/alipay/notify", data={"out_trade_no": "x", "sign": "no"})
    assert forged.status_code == 200 and "success" not in forged.text

    listed = as_json(cli("payments", "notifies", "--json"))
    assert listed == api(payments, "/v1/admin/channel-notifies")
    assert [(n["outcome"], n["ref"]) for n in listed] == [("refused", None), ("applied", paid["attempt"])]
    one = as_json(cli("payments", "notifies", "--ref", paid["attempt"], "--json"))
    assert one == api(payments, "/v1/admin/channel-notifies", ref=paid["attempt"])
    assert [n["outcome"] for n in one] == ["applied"]
    assert as_json(cli("payments", "notifies", "--limit", "1", "--json")) == listed[:1]

    table = cli("payments", "notifies").stdout
    applied = line_of(table, paid["attempt"])
    assert "alipay" in applied and "payment" in applied and "applied" in applied
    assert listed[0]["reason"] and listed[0]["reason"].split(":")[0] in line_of(table, "refused")
    assert "no notifies" in cli("payments", "notifies", "--ref", "pat_nothing").stdout
    assert cli("payments", "notifies", "--limit", "0", expect=2).stderr.startswith("error: limit_invalid: ")


# --------------------------------------------------------------------------- channels


def trip_breaker(payments, channel: str) -> None:
    for _ in range(payments.settings.channel_failure_threshold):
        routing.record_failure(
            payments.engine,
            channel=channel,
            error="connect timeout",
            threshold=payments.settings.channel_failure_threshold,
            cooldown_seconds=payments.settings.channel_cooldown_seconds,
            now=dt.datetime.now(dt.UTC),
        )


def test_channels_list_shows_each_channels_breaker_and_routes_as_the_admin_api_does(cli, payments):
    installed = channel_registry.installed()
    listed = as_json(cli("channels", "list", "--json"))
    assert listed == api(payments, "/v1/admin/channels")
    assert channel_registry.installed() is installed  # the command put the process's registry back
    codes = [c["code"] for c in listed["items"]]
    assert "alipay" in codes and all(c["breaker"] == "closed" for c in listed["items"])

    trip_breaker(payments, "alipay")
    tripped = as_json(cli("channels", "list", "--json"))
    assert tripped == api(payments, "/v1/admin/channels")
    alipay = next(c for c in tripped["items"] if c["code"] == "alipay")
    assert (alipay["breaker"], alipay["consecutive_failures"], alipay["last_error"]) == ("open", 2, "connect timeout")

    table = rows(cli("channels", "list").stdout)
    [channel_row] = [cells for cells in table if len(cells) == 8 and cells[0] == "alipay"]
    assert channel_row[:7] == ["alipay", "indirect", "open", "2", channel_row[4], "no", str(len(alipay["routes"]))]
    assert channel_row[4] and channel_row[7] == "connect timeout"
    [route] = alipay["routes"]
    [route_row] = [cells for cells in table if len(cells) == 9 and cells[0] == "alipay"]
    assert route_row == [
        "alipay",
        route["method"],
        route["channel_method"],
        "CNY",
        "0.01",
        f"{route['amount_max'] // 100}.{route['amount_max'] % 100:02d}",
        route["cost_rate"],
        "0.00",
        "100",
    ]


def test_channels_reset_puts_a_tripped_channel_back_in_rotation(cli, payments):
    trip_breaker(payments, "alipay")

    reset = cli("channels", "reset", "alipay")
    assert reset.stdout.startswith("alipay is back in rotation: its breaker was open after 2 failures in a row")
    channels = api(payments, "/v1/admin/channels")
    alipay = next(c for c in channels["items"] if c["code"] == "alipay")
    assert (alipay["breaker"], alipay["consecutive_failures"], alipay["open_until"]) == ("closed", 0, None)
    assert "nothing changed" in cli("channels", "reset", "alipay").stdout

    trip_breaker(payments, "alipay")
    answered = as_json(cli("channels", "reset", "alipay", "--json"))
    assert answered == payments.admin.post("/v1/admin/channels/alipay/reset").json()

    refused = cli("channels", "reset", "paypal", expect=2)
    assert refused.stderr.startswith("error: channel_not_configured: no channel is called 'paypal'")


def test_channels_commands_need_a_channels_file(bare_cli, tmp_path):
    for args in (("channels", "list"), ("channels", "reset", "alipay")):
        refused = bare_cli(*args, expect=2)
        assert refused.stderr.startswith("error: channels_not_configured: ")
        assert "ZHANGFANG_CHANNELS_FILE" in refused.stderr and refused.stderr.count("\n") == 1

    broken = tmp_path / "channels.toml"
    broken.write_text('[[channels]]\ncode = "alipay"\nkind = "paypal"\n', encoding="utf-8")
    refused = bare_cli("channels", "list", expect=2, env={"ZHANGFANG_CHANNELS_FILE": str(broken)})
    assert refused.stderr.startswith(f"error: channels_file_invalid: channel configuration {broken} is invalid: ")
    assert refused.stderr.count("\n") == 1


def test_the_installed_command_reads_the_channels_file_from_its_environment(database, payments, cli_env):
    env = {key: value for key, value in os.environ.items() if not key.startswith("ZHANGFANG_")}
    env |= {key: value for key, value in cli_env.items() if value is not None}
    env |= {"ZHANGFANG_DATABASE_URL": database.url, "PYTHONPATH": str(SRC), "NO_COLOR": "1"}
    trip_breaker(payments, "alipay")

    def zhangfang(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "zhangfang.cli.main", *args], env=env, capture_output=True, text=True, timeout=60
        )

    listed = zhangfang("channels", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == api(payments, "/v1/admin/channels")
    assert zhangfang("channels", "reset", "alipay").stdout.startswith("alipay is back in rotation")
    assert all(c["breaker"] == "closed" for c in api(payments, "/v1/admin/channels")["items"])


# --------------------------------------------------------------------------- help


def test_every_payments_and_channels_command_explains_itself():
    for group, commands in (("payments", ("list", "show", "close", "notifies")), ("channels", ("list", "reset"))):
        listing = runner.invoke(app, [group, "--help"])
        assert listing.exit_code == 0
        for command in commands:
            assert command in listing.stdout
            helped = runner.invoke(app, [group, command, "--help"])
            assert helped.exit_code == 0 and "--json" in helped.stdout
