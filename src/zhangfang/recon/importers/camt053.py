"""ISO 20022 camt.053 bank-to-customer statements (BkToCstmrStmt), any version (001.02 … 001.13).

How it streams: ``xml.etree.ElementTree.XMLPullParser`` (the parser under
``iterparse``) is fed the file a line at a time, so each element's line is
known; each ``Bal`` and ``Ntry`` is handled when it ends and then removed from
its ``Stmt``, and each ``Stmt`` from the document, so only one entry's subtree
is held at a time. The namespace is stripped: any ``Document`` whose namespace
names camt.053 (or none) is read, the differences between versions (``Sts``
text or ``Sts/Cd``, ``BIC`` or ``BICFI``, parties wrapped in ``Pty``) do not
touch what is read here.

Mapping (statements.md, "camt.053")
- each ``Ntry`` → one ``credit``/``debit`` line (``CdtDbtInd``; with
  ``RvslInd`` true the description says it is a reversal), ``amount`` and
  ``currency`` from ``Amt``/``@Ccy``, ``status`` the ``Sts`` code (BOOK, PDNG,
  INFO, FUTR; others are a ``LineError``), ``booking_date``/``value_date``
  from ``BookgDt``/``ValDt``, ``occurred_at`` from ``BookgDt/DtTm`` when it has a
  UTC offset, ``channel_ref`` the entry's ``AcctSvcrRef`` (else the
  transaction's, else ``NtryRef``), ``order_ref`` the transaction's
  ``EndToEndId`` (``NOTPROVIDED`` is none), ``description`` the remittance
  information (``Ustrd``, creditor reference), ``AddtlTxInf`` and ``AddtlNtryInf``.
- Batch entries: an ``Ntry`` with two or more ``TxDtls`` that each state their
  amount (``TxDtls/Amt`` or ``AmtDtls/TxAmt/Amt``, in the entry's currency) is
  given out as one line per ``TxDtls`` (its line, its ``EndToEndId`` and
  ``AcctSvcrRef``), because each is one of our payments or payouts; the amounts,
  signed by their own ``CdtDbtInd``, must add up to the entry (else a
  ``batch_amount_mismatch`` on the entry). A batch whose transactions do not
  state amounts stays one line, without ``order_ref``.
- Balances: opening is ``OPBD`` (else ``PRCD``), closing ``CLBD``, signed
  (``DBIT`` negative); the statement date is the closing balance's date (else
  ``FrToDt/ToDtTm``, else ``CreDtTm``).

Self-check per ``Stmt``: opening + booked (``BOOK``) credits - booked debits
must equal closing (``balance_mismatch`` on the ``CLBD`` line), and
``TxsSummry``, when present, must match the entries' counts and sums
(``balance_mismatch`` on the ``TxsSummry`` line).
"""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field

from zhangfang.money import format_minor
from zhangfang.recon.importers._common import BadValue, Parser, amount_minor, known_currency, only_member, unwrap
from zhangfang.recon.importers.models import LineError, StatementBalance, StatementLine

STATUSES = ("BOOK", "PDNG", "INFO", "FUTR")
_CHUNK_BYTES_MAX = 1 << 16


@dataclass
class _Balance:
    line_no: int
    amount: int
    currency: str
    day: dt.date | None


@dataclass
class _Stmt:
    line_no: int
    opening: _Balance | None = None
    previous_closing: _Balance | None = None  # PRCD, the opening when there is no OPBD
    closing: _Balance | None = None
    booked: dict[str, int] = field(default_factory=lambda: {"credit": 0, "debit": 0})
    entries: dict[str, list[int]] = field(default_factory=lambda: {"credit": [0, 0], "debit": [0, 0]})
    summary: tuple[int, ET.Element] | None = None
    currency: str | None = None  # of its balances, else of its first entry


class Camt053Parser(Parser):
    def items(self) -> Iterator[StatementLine | LineError]:
        stream = unwrap(self.stream, only_member)
        parser = ET.XMLPullParser(events=("start", "end"))
        self._ns = ""
        self._stmt: _Stmt | None = None
        self._tx_lines: dict[int, int] = {}
        stack: list[tuple[ET.Element, int]] = []
        lines_fed = 0
        while True:
            chunk = stream.readline(_CHUNK_BYTES_MAX)
            done = not chunk
            line_at = lines_fed + 1
            lines_fed += chunk.count(b"\n")
            try:
                if done:
                    parser.close()
                else:
                    parser.feed(chunk)
            except ET.ParseError as error:
                self.line_no = error.position[0] or line_at
                yield LineError(self.line_no, f"the XML is not well-formed: {error}", "file_unreadable")
                return
            for event, element in parser.read_events():
                assert isinstance(element, ET.Element)
                if event == "start":
                    if not stack and (problem := self._root(element, line_at)) is not None:
                        yield problem
                        return
                    stack.append((element, line_at))
                    if element.tag == self._ns + "Stmt":
                        self._stmt = _Stmt(line_at)
                    continue
                _, line_no = stack.pop()
                self.line_no = line_no
                parent = stack[-1][0] if stack else None
                yield from self._end(element, line_no, parent)
            if done:
                break
        if lines_fed == 0 and not stack:
            yield LineError(0, "the file is empty", "file_unreadable")

    def _root(self, element: ET.Element, line_no: int) -> LineError | None:
        namespace, _, name = element.tag[1:].rpartition("}") if element.tag.startswith("{") else ("", "", element.tag)
        if name != "Document" or (namespace and "camt.053" not in namespace):
            found = f"{{{namespace}}}{name}" if namespace else name
            return LineError(line_no, f"not a camt.053 Document: the root element is {found}", "file_unreadable")
        self._ns = f"{{{namespace}}}" if namespace else ""
        return None

    def _q(self, path: str) -> str:
        return "/".join(self._ns + part for part in path.split("/"))

    def _text(self, element: ET.Element, path: str) -> str | None:
        found = element.find(self._q(path))
        if found is None or found.text is None:
            return None
        return found.text.strip() or None

    def _end(self, element: ET.Element, line_no: int, parent: ET.Element | None) -> Iterator[StatementLine | LineError]:
        name = element.tag[len(self._ns) :] if element.tag.startswith(self._ns) else element.tag
        if name == "TxDtls":
            self._tx_lines[id(element)] = line_no
        elif name == "Ntry":
            yield from self._entry(element, line_no)
            self._tx_lines.clear()
            self._forget(element, parent)
        elif name == "Bal" and self._stmt is not None:
            problem = self._balance(element, line_no)
            if problem is not None:
                yield problem
            self._forget(element, parent)
        elif name == "TxsSummry" and self._stmt is not None:
            self._stmt.summary = (line_no, element)
        elif name == "Stmt":
            yield from self._end_statement(element)
            self._stmt = None
            self._forget(element, parent)

    @staticmethod
    def _forget(element: ET.Element, parent: ET.Element | None) -> None:
        element.clear()
        if parent is not None:
            parent.remove(element)

    # ------------------------------------------------------------------ entries

    def _entry(self, ntry: ET.Element, line_no: int) -> Iterator[StatementLine | LineError]:
        stmt = self._stmt
        if stmt is None:
            yield LineError(line_no, "an Ntry outside a Stmt", "file_unreadable")
            return
        try:
            amount, code = self._amount(ntry.find(self._q("Amt")), "Ntry/Amt")
            indicator = self._text(ntry, "CdtDbtInd")
            direction = {"CRDT": "credit", "DBIT": "debit"}.get(indicator or "")
            if direction is None:
                raise BadValue(f"Ntry/CdtDbtInd {indicator!r} is neither CRDT nor DBIT", "kind_unknown")
            stmt.currency = stmt.currency or code
            counted = stmt.entries[direction]
            counted[0] += 1
            counted[1] += amount
            if amount == 0:
                raise BadValue(f"Ntry/Amt of 0 {code}", "amount_sign_invalid")
            status = self._text(ntry, "Sts/Cd") or self._text(ntry, "Sts")
            if status not in STATUSES:
                raise BadValue(f"Ntry/Sts {status!r} is not one of {', '.join(STATUSES)}", "status_unknown")
            booking_date, occurred_at = self._when(ntry, "BookgDt")
            value_date, _ = self._when(ntry, "ValDt")
        except BadValue as error:
            yield LineError(line_no, error.reason, error.code)
            return
        reversal = (self._text(ntry, "RvslInd") or "").lower() == "true"
        entry_ref = self._text(ntry, "AcctSvcrRef")
        entry_info = self._text(ntry, "AddtlNtryInf")
        transactions = ntry.findall(self._q("NtryDtls/TxDtls"))
        signed = amount if direction == "credit" else -amount

        def line(at: int, tx: ET.Element | None, amount: int, direction: str, channel_ref: str | None) -> StatementLine:
            texts = ["reversal"] if reversal else []
            if tx is not None:
                texts += [found.text.strip() for found in tx.iterfind(self._q("RmtInf/Ustrd")) if found.text]
                texts += [self._text(tx, "RmtInf/Strd/CdtrRefInf/Ref"), self._text(tx, "AddtlTxInf")]
            elif len(transactions) > 1:
                texts.append(f"batch of {len(transactions)} transactions")
            texts.append(entry_info)
            end_to_end = self._text(tx, "Refs/EndToEndId") if tx is not None else None
            if status == "BOOK":
                stmt.booked[direction] += amount
            return StatementLine(
                line_no=at,
                kind=direction,  # type: ignore[arg-type]
                channel_ref=channel_ref or self._text(ntry, "NtryRef"),
                order_ref=None if end_to_end in (None, "NOTPROVIDED") else end_to_end,
                original_ref=None,
                amount=amount,
                fee=0,
                currency=code,
                direction=direction,  # type: ignore[arg-type]
                status=status,
                occurred_at=occurred_at,
                value_date=value_date,
                description=" / ".join(dict.fromkeys(text for text in texts if text)),
                booking_date=booking_date,
            )

        if len(transactions) >= 2:
            try:
                parts = [self._tx_amount(tx, code, direction) for tx in transactions]
            except BadValue as error:
                yield LineError(line_no, error.reason, error.code)
                return
            if all(part is not None for part in parts):
                total = sum(part for part in parts if part is not None)
                if total != signed:
                    yield LineError(
                        line_no,
                        f"batch entry of {format_minor(signed, code)} {code} but its {len(parts)} transactions "
                        f"add up to {format_minor(total, code)}",
                        "batch_amount_mismatch",
                    )
                    return
                for tx, part in zip(transactions, parts, strict=True):
                    assert part is not None
                    at = self._tx_lines.get(id(tx), line_no)
                    if part == 0:
                        yield LineError(at, f"TxDtls amount of 0 {code}", "amount_sign_invalid")
                        continue
                    tx_direction = "credit" if part > 0 else "debit"
                    yield line(at, tx, abs(part), tx_direction, self._text(tx, "Refs/AcctSvcrRef") or entry_ref)
                return
        single = transactions[0] if len(transactions) == 1 else None
        tx_ref = self._text(single, "Refs/AcctSvcrRef") if single is not None else None
        yield line(line_no, single, amount, direction, entry_ref or tx_ref)

    def _tx_amount(self, tx: ET.Element, code: str, direction: str) -> int | None:
        """A transaction's amount signed by its direction; None when it states none in the entry's currency."""
        found = tx.find(self._q("Amt"))
        if found is None:
            found = tx.find(self._q("AmtDtls/TxAmt/Amt"))
        if found is None or found.get("Ccy") != code:
            return None
        amount, _ = self._amount(found, "TxDtls/Amt")
        indicator = self._text(tx, "CdtDbtInd")
        if indicator is None:
            indicator = "CRDT" if direction == "credit" else "DBIT"
        if indicator not in ("CRDT", "DBIT"):
            raise BadValue(f"TxDtls/CdtDbtInd {indicator!r} is neither CRDT nor DBIT", "kind_unknown")
        return amount if indicator == "CRDT" else -amount

    def _amount(self, element: ET.Element | None, label: str) -> tuple[int, str]:
        if element is None or not (element.text or "").strip():
            raise BadValue(f"{label} is missing", "amount_invalid")
        code = known_currency((element.get("Ccy") or "").strip(), f"{label}/@Ccy")
        amount = amount_minor(element.text.strip(), code, label)  # type: ignore[union-attr]
        if amount < 0:
            raise BadValue(f"{label} {element.text} is negative (the direction is CdtDbtInd's)", "amount_sign_invalid")
        return amount, code

    def _when(self, element: ET.Element, name: str) -> tuple[dt.date | None, dt.datetime | None]:
        """A ``…Dt`` choice: (its date, its instant in UTC when it is a ``DtTm`` with an offset)."""
        day = self._text(element, f"{name}/Dt")
        if day is not None:
            try:
                return dt.date.fromisoformat(day[:10]), None
            except ValueError:
                raise BadValue(f"{name}/Dt {day!r} is not a date", "time_invalid") from None
        moment = self._text(element, f"{name}/DtTm")
        if moment is None:
            return None, None
        try:
            parsed = dt.datetime.fromisoformat(moment)
        except ValueError:
            raise BadValue(f"{name}/DtTm {moment!r} is not a date and time", "time_invalid") from None
        if parsed.tzinfo is None:
            return parsed.date(), None
        return parsed.date(), parsed.astimezone(dt.UTC)

    # ------------------------------------------------------------------ balances

    def _balance(self, bal: ET.Element, line_no: int) -> LineError | None:
        stmt = self._stmt
        assert stmt is not None
        kind = self._text(bal, "Tp/CdOrPrtry/Cd") or self._text(bal, "Tp/CdOrPrtry/Prtry")
        if kind not in ("OPBD", "PRCD", "CLBD"):
            return None
        try:
            amount, code = self._amount(bal.find(self._q("Amt")), f"Bal {kind}/Amt")
            indicator = self._text(bal, "CdtDbtInd")
            if indicator not in ("CRDT", "DBIT"):
                raise BadValue(f"Bal {kind}/CdtDbtInd {indicator!r} is neither CRDT nor DBIT", "kind_unknown")
            day, _ = self._when(bal, "Dt")
        except BadValue as error:
            return LineError(line_no, error.reason, error.code)
        balance = _Balance(line_no, amount if indicator == "CRDT" else -amount, code, day)
        stmt.currency = code
        if kind == "OPBD":
            stmt.opening = balance
        elif kind == "PRCD":
            stmt.previous_closing = balance
        else:
            stmt.closing = balance
        return None

    def _end_statement(self, element: ET.Element) -> Iterator[LineError]:
        stmt = self._stmt
        assert stmt is not None
        yield from self._check_summary(stmt)
        opening = stmt.opening or stmt.previous_closing
        closing = stmt.closing
        day = closing.day if closing is not None else None
        if day is None:
            for path in ("FrToDt/ToDtTm", "CreDtTm"):
                text = self._text(element, path)
                if text is not None:
                    try:
                        day = dt.datetime.fromisoformat(text).date()
                    except ValueError:
                        continue
                    break
        if opening is None or closing is None:
            if day is not None:
                self.totals.add_statement_date(day)
            missing = "opening balance (OPBD/PRCD)" if opening is None else "closing balance (CLBD)"
            yield LineError(stmt.line_no, f"the Stmt has no {missing}", "balance_missing")
            return
        if opening.currency != closing.currency:
            reason = f"opening balance in {opening.currency} but closing balance in {closing.currency}"
            yield LineError(closing.line_no, reason, "balance_mismatch")
            return
        code = closing.currency
        account = self._text(element, "Acct/Id/IBAN") or self._text(element, "Acct/Id/Othr/Id")
        balance = StatementBalance(
            line_no=closing.line_no,
            account=account,
            currency=code,
            opening_balance=opening.amount,
            closing_balance=closing.amount,
            credit_sum=stmt.booked["credit"],
            debit_sum=stmt.booked["debit"],
            closing_date=day,
        )
        self.totals.add_statement(balance)
        if not balance.agrees:
            expected = opening.amount + balance.credit_sum - balance.debit_sum
            yield LineError(
                closing.line_no,
                f"closing balance (CLBD) {format_minor(closing.amount, code)} {code} is not opening "
                f"{format_minor(opening.amount, code)} + booked credits {format_minor(balance.credit_sum, code)} "
                f"- booked debits {format_minor(balance.debit_sum, code)} = {format_minor(expected, code)}",
                "balance_mismatch",
            )

    def _check_summary(self, stmt: _Stmt) -> Iterator[LineError]:
        if stmt.summary is None:
            return
        line_no, summary = stmt.summary
        credits, debits = stmt.entries["credit"], stmt.entries["debit"]
        code = stmt.currency
        checks = (
            ("TtlNtries", credits[0] + debits[0], credits[1] + debits[1]),
            ("TtlCdtNtries", credits[0], credits[1]),
            ("TtlDbtNtries", debits[0], debits[1]),
        )
        for name, count, total in checks:
            stated_count = self._text(summary, f"{name}/NbOfNtries")
            if stated_count is not None and stated_count != str(count):
                reason = f"TxsSummry/{name} says {stated_count} entries but the statement has {count}"
                yield LineError(line_no, reason, "balance_mismatch")
            stated_sum = self._text(summary, f"{name}/Sum")
            if stated_sum is not None and code is not None:
                try:
                    stated = amount_minor(stated_sum, code, f"TxsSummry/{name}/Sum")
                except BadValue as error:
                    yield LineError(line_no, error.reason, "balance_mismatch")
                    continue
                if stated != total:
                    reason = (
                        f"TxsSummry/{name} sums to {stated_sum} but the statement's entries "
                        f"sum to {format_minor(total, code)}"
                    )
                    yield LineError(line_no, reason, "balance_mismatch")
