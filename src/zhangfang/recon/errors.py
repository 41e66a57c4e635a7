"""The reconciliation errors, each with a stable code, in order of precedence within each operation.

Reading a bill or statement (``importers.iter_statement``), checked before any byte is read:

 1. ``recon_format_invalid``        ``fmt`` is not one of ``importers.FORMATS``
 2. ``currency_unknown``            ``currency`` is not an ISO 4217 code with a minor unit (``zhangfang.money``)
 3. ``recon_profile_invalid``       ``profile`` given for a format other than ``bank_direct``, or not a
                                    known ``BankProfile`` code (``icbc``, ``cmb``)
 4. ``recon_source_invalid``        the source is neither a path nor a binary stream

Importing (``service.import_bill``): ``bill_date_invalid``, ``recon_run_exists`` (a new bill for a day already
reconciled: nothing would ever match its lines; the same file again is a replay), the reader's errors above, then
``recon_file_invalid`` (malformed lines, with their numbers and reasons; nothing imported unless ``partial``).

Matching (``service.run``): ``bill_date_invalid``, ``recon_run_exists`` (the channel's day is reconciled already).

Resolving (``workflow``): ``operator_invalid``; ``discrepancy_not_found``;
``resolution_action_invalid`` (not one of the actions, or one that does not fit the
difference's direction); ``resolution_reason_invalid``; ``discrepancy_state_invalid``
(the step does not follow from its state); ``supplement_refused`` (the channel does not
confirm the payment); ``approver_must_differ`` (the resolver cannot approve).

Everything wrong *inside* the file is not an exception: the reader yields a
``LineError`` (line number, reason, code) and goes on, so one pass reports every
malformed line (see ``importers``).
"""

from __future__ import annotations

from zhangfang.errors import Conflict, InvalidInput, NotFound, Rejected


class ReconFormatInvalid(InvalidInput):
    code = "recon_format_invalid"


class ReconProfileInvalid(InvalidInput):
    code = "recon_profile_invalid"


class ReconSourceInvalid(InvalidInput):
    code = "recon_source_invalid"


class BillDateInvalid(InvalidInput):
    code = "bill_date_invalid"


class ReconFileInvalid(InvalidInput):
    """A bill with malformed lines imports nothing (unless a partial import was asked for)."""

    code = "recon_file_invalid"


class ReconRunExists(Conflict):
    code = "recon_run_exists"


class OperatorInvalid(InvalidInput):
    code = "operator_invalid"


class DiscrepancyNotFound(NotFound):
    code = "discrepancy_not_found"


class DiscrepancyStateInvalid(Conflict):
    code = "discrepancy_state_invalid"


class ResolutionActionInvalid(InvalidInput):
    code = "resolution_action_invalid"


class ResolutionReasonInvalid(InvalidInput):
    code = "resolution_reason_invalid"


class SupplementRefused(Rejected):
    code = "supplement_refused"


class ApproverMustDiffer(Rejected):
    code = "approver_must_differ"
