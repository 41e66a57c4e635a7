"""Lending (借贷): loan schedules, repayment allocation and delinquency, as pure functions (docs/lending.md).

- ``schedule``: amortization schedules (equal installment 等额本息, equal principal 等额本金,
  interest first 先息后本, bullet 到期还本付息) under a day-count convention, to the fen.
- ``allocation``: a repayment split over the due components of installments (penalty, fee,
  interest, principal by default); overpayment; penalty interest (罚息) on overdue principal.
- ``delinquency``: days past due, buckets (current, M1, M2, M3+) and the aging report.
- ``errors``: the error catalogue, in order of precedence.
- ``cli`` (``zhangfang lending …``): translation only.

Nothing here touches a database: amounts are ``int`` of the minor unit (fen), rates ``Decimal``.
"""
