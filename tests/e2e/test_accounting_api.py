"""Accounting over HTTP (``/v1/accounting``), on SQLite and PostgreSQL: finance staff's console.

Refusals are checked for their stable code and for changing nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from openpyxl import load_workbook
from sqlalchemy.engine import Engine
from tests.accounting_helpers import open_books

from zhangfang.accounting.tables import voucher_lines, vouchers
from zhangfang.api.app import create_app
from zhangfang.config import Settings

ADMIN_KEY = "test-key"
BASE = "/v1/accounting"


@pytest.fixture
def client(engine: Engine) -> Iterator[TestClient]:
    settings = Settings(
        admin_api_key=ADMIN_KEY,
        database_url=engine.url.render_as_string(hide_password=False),
        transaction_age_max_seconds=10,
        run_jobs_in_server=False,
    )
    with TestClient(create_app(settings, engine), headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as test_client:
        yield test_client


@pytest.fixture
def booked_day(engine: Engine, client: TestClient) -> str:
    books = open_books(engine)
    books.pay("pay-1", "m001", 10_000, 60)
    books.pay("pay-2", "m002", 20_000, 120, channel="wechatpay")
    books.post("refund-1", "refund", ("m001", "debit", 1_000), ("alipay_clearing", "credit", 1_000))
    day = books.close_day().isoformat()
    response = client.post(f"{BASE}/sync", json={})
    assert response.status_code == 200, response.text
    assert [(d["accounting_date"], d["entry_count"]) for d in response.json()["days"]] == [(day, 3)]
    return day


def error_of(response: Any, status_code: int) -> dict[str, Any]:
    assert response.status_code == status_code, response.text
    return response.json()["error"]


def rows(engine: Engine) -> tuple[int, int]:
    with engine.connect() as conn:
        return tuple(
            conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
            for table in (vouchers, voucher_lines)
        )


def voucher_body(key: str, day: str, debit: int = 120, credit: int = 120) -> dict[str, Any]:
    return {
        "idempotency_key": key,
        "voucher_date": day,
        "summary": "渠道手续费 channel fees",
        "lines": [
            {"subject_code": "642101", "debit": debit, "dimension": "channel", "aux": "channel:alipay"},
            {"subject_code": "300101", "credit": credit, "dimension": "channel", "aux": "channel:alipay"},
        ],
    }


def test_trial_balance_and_check_over_http(client, booked_day):
    trial = client.get(f"{BASE}/trial-balance", params={"date": booked_day}).json()
    assert trial["balanced"] is True
    balances = {row["code"]: row["balance"] for row in trial["rows"]}
    assert balances["602101"] == "1.80"
    assert balances["300101"] == "290.00"
    check = client.get(f"{BASE}/check", params={"date": booked_day}).json()
    assert check["ok"] is True
    vouchers_page = client.get(f"{BASE}/vouchers").json()
    assert [v["business_code"] for v in vouchers_page["data"]] == ["payment", "refund"]
    one = client.get(f"{BASE}/vouchers/{vouchers_page['data'][0]['label']}").json()
    assert one["ref"] == vouchers_page["data"][0]["ref"]


def test_maker_checker_over_http(client, engine, booked_day):
    made = client.post(f"{BASE}/vouchers", json=voucher_body("adj-1", booked_day), headers={"X-Operator": "li.kuaiji"})
    assert made.status_code == 201, made.text
    replay = client.post(
        f"{BASE}/vouchers", json=voucher_body("adj-1", booked_day), headers={"X-Operator": "li.kuaiji"}
    )
    assert (replay.status_code, replay.json()["ref"]) == (200, made.json()["ref"])
    ref = made.json()["ref"]

    before = rows(engine)
    refused = client.post(f"{BASE}/vouchers/{ref}/approve", headers={"X-Operator": "li.kuaiji"})
    assert error_of(refused, 422)["code"] == "maker_cannot_approve"
    assert rows(engine) == before

    posted = client.post(f"{BASE}/vouchers/{ref}/approve", headers={"X-Operator": "wang.zhuguan"})
    assert (posted.status_code, posted.json()["state"], posted.json()["number"]) == (200, "posted", 3)
    again = client.post(f"{BASE}/vouchers/{ref}/reject", json={"reason": "late"}, headers={"X-Operator": "zhao"})
    assert error_of(again, 409)["code"] == "voucher_not_pending"


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"debit": 120, "credit": 119}, 422, "voucher_must_balance"),
        ({"debit": 0, "credit": 0}, 422, "voucher_line_invalid"),
    ],
)
def test_bad_vouchers_are_refused_and_change_nothing(client, engine, booked_day, change, status, code):
    before = rows(engine)
    response = client.post(
        f"{BASE}/vouchers", json=voucher_body("bad", booked_day, **change), headers={"X-Operator": "li.kuaiji"}
    )
    assert error_of(response, status)["code"] == code
    assert rows(engine) == before


def test_a_voucher_needs_an_operator_and_well_formed_amounts(client, engine, booked_day):
    before = rows(engine)
    anonymous = client.post(f"{BASE}/vouchers", json=voucher_body("anon", booked_day))
    assert error_of(anonymous, 422)["code"] == "request_invalid"
    body = voucher_body("float", booked_day)
    body["lines"][0]["debit"] = 1.2
    assert error_of(client.post(f"{BASE}/vouchers", json=body, headers={"X-Operator": "a"}), 422)["code"] == (
        "request_invalid"
    )
    assert rows(engine) == before


def test_reports_download_as_xlsx_and_csv(client, booked_day, tmp_path):
    xlsx = client.get(f"{BASE}/reports/balance-sheet", params={"date": booked_day, "format": "xlsx"})
    assert xlsx.status_code == 200, xlsx.text
    path = tmp_path / "bs.xlsx"
    path.write_bytes(xlsx.content)
    sheet = load_workbook(path).active
    cells = [str(cell.value) for row in sheet.iter_rows() for cell in row if cell.value is not None]
    assert any("资产" in cell for cell in cells)
    csv = client.get(f"{BASE}/reports/income-statement", params={"date": booked_day, "format": "csv"})
    assert csv.status_code == 200 and "text/csv" in csv.headers["content-type"]
    missing = client.get(f"{BASE}/reports/general-ledger", params={"from": booked_day, "to": booked_day})
    assert error_of(missing, 422)["field"] == "subject"
    beancount = client.get(f"{BASE}/export/beancount")
    assert beancount.status_code == 200 and "open Assets:3001:300101" in beancount.text


def test_the_check_refuses_a_day_not_booked(client, engine):
    open_books(engine)
    response = client.get(f"{BASE}/check", params={"date": "2030-01-01"})
    assert error_of(response, 422)["code"] == "day_not_accounted"
