"""Every domain's tables, imported so the shared ``metadata`` knows them all (for Alembic and tests)."""

from zhangfang.accounting import tables as accounting_tables  # noqa: F401
from zhangfang.db.metadata import metadata
from zhangfang.jobs import tables as jobs_tables  # noqa: F401
from zhangfang.ledger import tables as ledger_tables  # noqa: F401
from zhangfang.lending import tables as lending_tables  # noqa: F401
from zhangfang.mandates import tables as mandates_tables  # noqa: F401
from zhangfang.notify import tables as notify_tables  # noqa: F401
from zhangfang.parties import tables as parties_tables  # noqa: F401
from zhangfang.payments import tables as payments_tables  # noqa: F401
from zhangfang.recon import tables as recon_tables  # noqa: F401
from zhangfang.settlement import tables as settlement_tables  # noqa: F401

__all__ = ["metadata"]
