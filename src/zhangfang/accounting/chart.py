"""The chart of accounts (会计科目表) and the posting rules (记账规则), read from TOML files.

Both come with defaults (``data/chart.toml``, ``data/rules.toml``) and can be
replaced by files of the operator's (``ZHANGFANG_ACCOUNTING_CHART_FILE``,
``ZHANGFANG_ACCOUNTING_RULES_FILE``). The files are the source of truth; the
database keeps a copy (``install``) so that vouchers can refer to subjects and
the sync can join the journal with the rules in SQL.

Guarantees
- A file that breaks a rule is refused as a whole, naming the file, the entry and
  the rule; nothing is installed from it.
- Every rule books to leaf subjects of the chart; every ledger code a template
  names is mapped to a subject.
- Installing changes a subject's names freely, but never the type or parent of a
  subject that vouchers already use (``chart_change_refused``); subjects are never deleted.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from zhangfang.accounting import errors
from zhangfang.accounting.models import NORMAL_SIDE, Chart, LedgerCodeMapping, Rule, Rules, Subject
from zhangfang.accounting.tables import ledger_codes, rule_legs, rules, subjects, voucher_lines
from zhangfang.config import Settings, get_settings

SUBJECT_CODE = re.compile(r"[0-9A-Za-z]{1,20}")
IDENTIFIER = re.compile(r"[a-z][a-z0-9_]{0,63}")
DIMENSION_SOURCES = ("owner", "account")


def default_chart_path() -> Path:
    return Path(str(resources.files("zhangfang.accounting") / "data" / "chart.toml"))


def default_rules_path() -> Path:
    return Path(str(resources.files("zhangfang.accounting") / "data" / "rules.toml"))


def _read_toml(path: Path, error: type[errors.ChartFileInvalid | errors.RulesFileInvalid]) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except OSError as failure:
        raise error(f"{path}: cannot be read ({failure.strerror})") from failure
    except tomllib.TOMLDecodeError as failure:
        raise error(f"{path}: not valid TOML ({failure})") from failure


def parse_chart(document: dict[str, Any], *, source: str = "chart") -> Chart:
    """The chart a parsed TOML document describes, validated (see the module's guarantees)."""

    def refuse(message: str) -> errors.ChartFileInvalid:
        return errors.ChartFileInvalid(f"{source}: {message}")

    entries = document.get("subject")
    if not isinstance(entries, list) or not entries:
        raise refuse("no [[subject]] entries")
    seen: dict[str, dict[str, Any]] = {}
    for index, entry in enumerate(entries, start=1):
        where = f"subject #{index}"
        if not isinstance(entry, dict):
            raise refuse(f"{where} is not a table")
        unknown = set(entry) - {"code", "name_zh", "name_en", "type", "parent", "normal_side"}
        if unknown:
            raise refuse(f"{where} has unknown keys {sorted(unknown)}")
        code = entry.get("code")
        if not isinstance(code, str) or not SUBJECT_CODE.fullmatch(code):
            raise refuse(f"{where}: code must be 1 to 20 letters or digits, got {code!r}")
        where = f"subject {code}"
        if code in seen:
            raise refuse(f"{where} is listed twice")
        for name in ("name_zh", "name_en"):
            value = entry.get(name)
            if not isinstance(value, str) or not value.strip() or len(value) > 100:
                raise refuse(f"{where}: {name} must be 1 to 100 characters")
        kind = entry.get("type")
        if kind not in NORMAL_SIDE:
            raise refuse(f"{where}: type must be one of {sorted(NORMAL_SIDE)}, got {kind!r}")
        side = entry.get("normal_side", NORMAL_SIDE[kind])
        if side not in ("debit", "credit"):
            raise refuse(f"{where}: normal_side must be debit or credit, got {side!r}")
        parent = entry.get("parent")
        if parent is not None:
            if parent not in seen:
                raise refuse(f"{where}: parent {parent!r} must be listed before it")
            if seen[parent]["type"] != kind:
                raise refuse(f"{where}: type {kind} differs from its parent {parent}'s {seen[parent]['type']}")
        seen[code] = {**entry, "normal_side": side}
    parents = {entry.get("parent") for entry in seen.values()}
    return Chart(
        subjects=tuple(
            Subject(
                code=code,
                name_zh=entry["name_zh"].strip(),
                name_en=entry["name_en"].strip(),
                type=entry["type"],
                normal_side=entry["normal_side"],
                parent_code=entry.get("parent"),
                leaf=code not in parents,
            )
            for code, entry in seen.items()
        )
    )


def load_chart(path: Path | None = None) -> Chart:
    """The chart in ``path`` (default: the packaged chart of a payment institution)."""
    path = path or default_chart_path()
    return parse_chart(_read_toml(path, errors.ChartFileInvalid), source=str(path))


def parse_rules(document: dict[str, Any], chart: Chart, *, source: str = "rules") -> Rules:
    """The posting rules a parsed TOML document describes, validated against ``chart``."""

    def refuse(message: str) -> errors.RulesFileInvalid:
        return errors.RulesFileInvalid(f"{source}: {message}")

    unknown = set(document) - {"ledger_codes", "business"}
    if unknown:
        raise refuse(f"unknown sections {sorted(unknown)}")
    by_code = chart.by_code()
    mappings: dict[str, LedgerCodeMapping] = {}
    for ledger_code, entry in (document.get("ledger_codes") or {}).items():
        where = f"ledger_codes.{ledger_code}"
        if not IDENTIFIER.fullmatch(ledger_code):
            raise refuse(f"{where}: a ledger code is lowercase letters, digits and _")
        if not isinstance(entry, dict) or set(entry) - {"subject", "dimension", "source"}:
            raise refuse(f"{where}: expected {{ subject = …, dimension = …, source = … }}")
        subject = by_code.get(entry.get("subject"))  # type: ignore[arg-type]
        if subject is None:
            raise refuse(f"{where}: subject {entry.get('subject')!r} is not in the chart")
        if not subject.leaf:
            raise refuse(f"{where}: subject {subject.code} has children; book to a leaf subject")
        dimension = entry.get("dimension")
        if dimension is not None and not (isinstance(dimension, str) and IDENTIFIER.fullmatch(dimension)):
            raise refuse(f"{where}: dimension must be a lowercase name, got {dimension!r}")
        dimension_source = entry.get("source", "owner")
        if dimension_source not in DIMENSION_SOURCES:
            raise refuse(f"{where}: source must be one of {list(DIMENSION_SOURCES)}, got {dimension_source!r}")
        mappings[ledger_code] = LedgerCodeMapping(ledger_code, subject.code, dimension, dimension_source)
    templates: dict[str, Rule] = {}
    for business_code, entry in (document.get("business") or {}).items():
        where = f"business.{business_code}"
        if not isinstance(entry, dict) or set(entry) - {"summary", "debit", "credit"}:
            raise refuse(f"{where}: expected summary, debit and credit")
        summary = entry.get("summary")
        if not isinstance(summary, str) or not summary.strip() or len(summary) > 200:
            raise refuse(f"{where}: summary must be 1 to 200 characters")
        sides: dict[str, tuple[str, ...]] = {}
        for side in ("debit", "credit"):
            codes = entry.get(side)
            if not isinstance(codes, list) or not codes or not all(isinstance(code, str) for code in codes):
                raise refuse(f"{where}: {side} must list at least one ledger code")
            for code in codes:
                if code not in mappings:
                    raise refuse(f"{where}: {side} names ledger code {code!r}, which [ledger_codes] does not map")
            if len(set(codes)) != len(codes):
                raise refuse(f"{where}: {side} lists a ledger code twice")
            sides[side] = tuple(codes)
        templates[business_code] = Rule(business_code, summary.strip(), sides["debit"], sides["credit"])
    if not templates:
        raise refuse("no [business.<code>] templates")
    canonical = json.dumps(
        {
            "ledger_codes": {code: vars(mapping) for code, mapping in sorted(mappings.items())},
            "business": {code: vars(rule) for code, rule in sorted(templates.items())},
        },
        sort_keys=True,
        ensure_ascii=False,
    )
    return Rules(ledger_codes=mappings, rules=templates, digest=hashlib.sha256(canonical.encode("utf-8")).hexdigest())


def load_rules(chart: Chart, path: Path | None = None) -> Rules:
    """The posting rules in ``path`` (default: the packaged rules), checked against ``chart``."""
    path = path or default_rules_path()
    return parse_rules(_read_toml(path, errors.RulesFileInvalid), chart, source=str(path))


def configured(settings: Settings | None = None) -> tuple[Chart, Rules]:
    """The chart and rules the settings name (``accounting_chart_file``, ``accounting_rules_file``), validated."""
    settings = settings or get_settings()
    chart = load_chart(settings.accounting_chart_file)
    return chart, load_rules(chart, settings.accounting_rules_file)


def install_configured(conn: Connection, settings: Settings | None = None) -> Rules:
    """Install the configured chart and rules (see ``configured``); returns the rules installed."""
    chart, posting_rules = configured(settings)
    install(conn, chart, posting_rules)
    return posting_rules


def install(conn: Connection, chart: Chart, posting_rules: Rules) -> None:
    """Copy the chart and the rules into the database (see the module's guarantees)."""
    existing = {row.code: row for row in conn.execute(sa.select(subjects))}
    used = set(conn.execute(sa.select(voucher_lines.c.subject_code).distinct()).scalars())
    missing = []
    for subject in chart.subjects:
        row = existing.get(subject.code)
        values = {
            "name_zh": subject.name_zh,
            "name_en": subject.name_en,
            "type": subject.type,
            "normal_side": subject.normal_side,
            "parent_code": subject.parent_code,
            "leaf": subject.leaf,
        }
        if row is None:
            missing.append({"code": subject.code, **values})
            continue
        if subject.code in used and (
            (row.type, row.normal_side, row.parent_code, row.leaf)
            != (subject.type, subject.normal_side, subject.parent_code, subject.leaf)
        ):
            raise errors.ChartChangeRefused(
                f"subject {subject.code} is used by vouchers; its type, side and parent cannot change "
                f"(add a new subject instead)",
                subject=subject.code,
            )
        if any(getattr(row, name) != value for name, value in values.items()):
            conn.execute(subjects.update().where(subjects.c.code == subject.code).values(**values))
    if missing:
        conn.execute(subjects.insert(), missing)
    wanted = _rule_rows(posting_rules)
    if all(_rows_of(conn, table) == rows for table, rows in wanted.items()):
        return  # the usual case: nothing changed, nothing written, no lock taken
    for table in (rule_legs, rules, ledger_codes):
        conn.execute(table.delete())
    for table in (ledger_codes, rules, rule_legs):
        if wanted[table]:
            conn.execute(table.insert(), [dict(row) for row in wanted[table]])


def _rule_rows(posting_rules: Rules) -> dict[sa.Table, set[tuple[tuple[str, object], ...]]]:
    """The rows of the three rule tables the rules make, each a sorted tuple of (column, value)."""

    def row(**values: object) -> tuple[tuple[str, object], ...]:
        return tuple(sorted(values.items()))

    return {
        ledger_codes: {
            row(
                ledger_code=mapping.ledger_code,
                subject_code=mapping.subject_code,
                dimension=mapping.dimension,
                dimension_source=mapping.dimension_source,
            )
            for mapping in posting_rules.ledger_codes.values()
        },
        rules: {row(business_code=rule.business_code, summary=rule.summary) for rule in posting_rules.rules.values()},
        rule_legs: {
            row(
                business_code=rule.business_code,
                side=side,
                ledger_code=code,
                subject_code=posting_rules.ledger_codes[code].subject_code,
                dimension=posting_rules.ledger_codes[code].dimension,
                dimension_source=posting_rules.ledger_codes[code].dimension_source,
            )
            for rule in posting_rules.rules.values()
            for side, codes in (("debit", rule.debit), ("credit", rule.credit))
            for code in codes
        },
    }


def _rows_of(conn: Connection, table: sa.Table) -> set[tuple[tuple[str, object], ...]]:
    return {tuple(sorted(row._mapping.items())) for row in conn.execute(sa.select(table))}
