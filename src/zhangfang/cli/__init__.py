"""The ``zhangfang`` command line: one Typer sub-command group per domain.

``cli.main`` assembles the app; each domain keeps its own group in its
``cli.py`` (``ledger.cli``). This module holds what every group shares: the
state the root command leaves on the context (settings with the database URL,
an engine made on first use and disposed when the command ends) and the
output helpers (Rich tables for people, ``--json`` for machines).

Guarantees
- A command that moves money or changes state runs its service calls in its
  own unit of work (``run_in_transaction``) and commits only when they succeed.
- Amounts are shown in major units (``"12.34"``) in tables and as integer
  minor units (``1234``) in JSON; money never passes through a ``float``.
- Exit codes: 0 done; 1 a check found a problem (``ledger verify``); 2 the
  request was refused (every ``ZhangfangError`` but ``Unauthorized``; also a
  usage error); 3 unauthorized. A refusal is one line on stderr:
  ``error: <code>: <message>``. Anything else is a bug and propagates.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import sys
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import typer
from rich.console import Console
from sqlalchemy.engine import Engine

from zhangfang.config import Settings, get_settings
from zhangfang.db.engine import create_engine

__all__ = ["CliState", "console", "err_console", "get_state", "print_json"]

# Tables are as wide as the terminal; piped or captured output gets room for ids.
WIDTH_NOT_A_TERMINAL = 200


@dataclasses.dataclass
class CliState:
    """What the root command passes down: settings, and the engine made on first use."""

    settings: Settings
    _engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = create_engine(
                self.settings.database_url,
                sqlite_synchronous=self.settings.sqlite_synchronous,
                pool_size=self.settings.database_pool_size,
            )
        return self._engine

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


def get_state(ctx: typer.Context) -> CliState:
    """The root command's state; a group run on its own gets one from the environment's settings."""
    root = ctx.find_root()
    if not isinstance(root.obj, CliState):
        root.obj = CliState(settings=get_settings())
        root.call_on_close(root.obj.close)
    return root.obj


# Keys, codes and metadata are the caller's text: Rich must print them as they are, so no markup
# ("[red]") and no emoji shortcodes (a key "gift:1:x" would otherwise show a 🎁).
def console() -> Console:
    width = None if sys.stdout.isatty() else WIDTH_NOT_A_TERMINAL
    return Console(width=width, highlight=False, markup=False, emoji=False)


def err_console() -> Console:
    width = None if sys.stderr.isatty() else WIDTH_NOT_A_TERMINAL
    return Console(stderr=True, width=width, highlight=False, markup=False, emoji=False)


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Mapping):
        return dict(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def print_json(value: Any) -> None:
    """Print ``value`` as JSON on stdout (dates as ISO 8601, amounts as they are: integer minor units)."""
    typer.echo(json.dumps(value, ensure_ascii=False, indent=2, default=_json_default))
