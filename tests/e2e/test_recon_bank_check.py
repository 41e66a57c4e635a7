"""账实核对 on the command line: the books' custody account against the bank's camt.053 statement."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from zhangfang.cli.main import app

runner = CliRunner()

CAMT = """<?xml version="1.0" encoding="UTF-8"?>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.02">
  <BkToCstmrStmt>
    <GrpHdr><MsgId>ICBC-{day}</MsgId><CreDtTm>{day}T23:59:00</CreDtTm></GrpHdr>
    <Stmt>
      <Id>ICBC-CUSTODY-{day}</Id>
      <CreDtTm>{day}T23:59:00</CreDtTm>
      <Acct><Id><Othr><Id>6222000000000001</Id></Othr></Id><Ccy>CNY</Ccy></Acct>
      <Bal><Tp><CdOrPrtry><Cd>OPBD</Cd></CdOrPrtry></Tp><Amt Ccy="CNY">0.00</Amt>
        <CdtDbtInd>CRDT</CdtDbtInd><Dt><Dt>{day}</Dt></Dt></Bal>
      <Bal><Tp><CdOrPrtry><Cd>CLBD</Cd></CdOrPrtry></Tp><Amt Ccy="CNY">{closing}</Amt>
        <CdtDbtInd>CRDT</CdtDbtInd><Dt><Dt>{day}</Dt></Dt></Bal>
      <Ntry>
        <NtryRef>1</NtryRef><Amt Ccy="CNY">{closing}</Amt><CdtDbtInd>CRDT</CdtDbtInd><Sts>BOOK</Sts>
        <BookgDt><Dt>{day}</Dt></BookgDt><ValDt><Dt>{day}</Dt></ValDt><AcctSvcrRef>ALIPAY-SETTLE-1</AcctSvcrRef>
      </Ntry>
    </Stmt>
  </BkToCstmrStmt>
</Document>
"""


@pytest.fixture
def cli(database, engine):
    def run(*args: str, expect: int = 0):
        result = runner.invoke(app, ["--database-url", database.url, *args])
        assert result.exit_code == expect, (result.stdout, result.stderr, result.exception)
        return result

    return run


def test_the_books_agree_with_the_bank_statement_and_a_gap_is_reported(cli, tmp_path: Path):
    cli("demo", "load")  # the demo settles 1,300.00 from Alipay into the ICBC custody account
    day = json.loads(cli("ledger", "day-end", "--json").stdout)["accounting_date"]
    cli("accounting", "sync")
    statement = tmp_path / "icbc.xml"

    statement.write_text(CAMT.format(day=day, closing="1300.00"), encoding="utf-8")
    agrees = json.loads(
        cli(
            "recon", "bank-check", str(statement), "--date", day, "--format", "camt053",
            "--account", "bank:icbc:custody", "--json",
        ).stdout
    )  # fmt: skip
    assert (agrees["agrees"], agrees["books_balance"], agrees["statement_balance"]) == (True, 130_000, 130_000)

    statement.write_text(CAMT.format(day=day, closing="1299.00"), encoding="utf-8")
    gap = cli(
        "recon", "bank-check", str(statement), "--date", day, "--format", "camt053", "--account", "bank:icbc:custody",
        expect=1,
    )  # fmt: skip
    assert "differ by 1.00" in gap.stdout

    refused = cli("recon", "bank-check", str(statement), "--date", day, "--format", "wechat", expect=2)
    assert refused.stderr.startswith("error: recon_format_invalid:")
