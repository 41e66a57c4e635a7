"""Settlement (清结算): paying merchants what they are owed, on their cycle (docs/settlement.md).

- ``calendar``: Chinese working days; cycles T0/T<n>/D<n>/WEEKLY; settlement dates with the holiday shift.
- ``fees``: fee models and a merchant's ``FeeContract``; fees and fees returned, rounded half up.
- ``models``: merchants' terms, batches and their lines, deductions, run results, float and reserve reports.
- ``tables``: ``settlement_merchants``, ``settlement_batches``, ``settlement_batch_days``.
- ``service``: terms, the settlement run, statements (CSV), the float, the reserve-fund check.
- ``errors``: the error catalogue, in order of precedence.
- ``cli`` (``zhangfang settlement …``) and ``api`` (``/v1/settlement``): translation only.
"""
