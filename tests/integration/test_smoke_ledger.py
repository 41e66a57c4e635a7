from zhangfang.db.uow import run_in_transaction
from zhangfang.ledger import service as ledger
from zhangfang.ledger.models import AccountRequest


def test_an_opened_account_starts_at_zero(engine):
    account, created = run_in_transaction(
        engine,
        lambda conn: ledger.open_account(
            conn, request=AccountRequest(key="wallet:1", ledger_code="wallet", currency="CNY")
        ),
    )
    assert created
    assert account.balance.posted == 0
