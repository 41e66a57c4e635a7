"""The job queue's error catalogue, in order of precedence.

When one ``enqueue`` breaks several rules, the first one in this list is
reported (stateless checks before the one that reads the database, so the same
bad request always gets the same code whatever the queue holds):

 1. ``job_kind_unknown``             no handler is registered for the kind
 2. ``job_payload_invalid``          the payload is not a plain JSON object of at most 64 KiB
 3. ``job_dedupe_key_invalid``       the dedupe key is not 1 to 200 printable ASCII characters
 4. ``time_zone_missing``            ``run_at`` (or ``now``) has no time zone
 5. ``job_attempts_max_invalid``     ``attempts_max`` is not an integer from 1 to 100
 6. ``job_key_conflict``             the dedupe key was used for a different kind or payload

Operations on existing jobs add their own:

 7. ``job_not_found``                no job has this ref
 8. ``job_not_replayable``           only a ``dead`` or ``failed`` job can be replayed
 9. ``job_state_invalid``            a state filter that is not one of the five states
10. ``limit_invalid``, ``cursor_invalid``   paging, as in the ledger (same codes, same meaning)

A failing *handler* is not an error of this catalogue: its exception is recorded
on the job (``last_error``) and the job is retried, failed or dead-lettered.
"""

from __future__ import annotations

from zhangfang.errors import Conflict, InvalidInput, NotFound, Rejected


class JobKindUnknown(InvalidInput):
    """A job's kind names its handler; a kind nobody registered would never run."""

    code = "job_kind_unknown"


class JobPayloadInvalid(InvalidInput):
    """A payload is a JSON object (string keys; dict, list, str, int, float, bool, None) of at most 64 KiB."""

    code = "job_payload_invalid"


class JobDedupeKeyInvalid(InvalidInput):
    code = "job_dedupe_key_invalid"


class TimeZoneMissing(InvalidInput):
    """Times are instants: they carry a time zone offset, and are stored in UTC."""

    code = "time_zone_missing"


class JobAttemptsMaxInvalid(InvalidInput):
    code = "job_attempts_max_invalid"


class JobKeyConflict(Conflict):
    """The dedupe key already names a job with a different kind or payload."""

    code = "job_key_conflict"


class JobNotFound(NotFound):
    code = "job_not_found"


class JobNotReplayable(Rejected):
    """Replay hands a ``dead`` or ``failed`` job back to the workers; any other state is still theirs."""

    code = "job_not_replayable"


class JobStateInvalid(InvalidInput):
    code = "job_state_invalid"


class LimitInvalid(InvalidInput):
    code = "limit_invalid"


class CursorInvalid(InvalidInput):
    code = "cursor_invalid"
