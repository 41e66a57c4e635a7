"""The error hierarchy: every refusal zhangfang gives has a stable ``code``.

Guarantees
- An error is named after the rule the caller broke (``amount_must_be_positive``),
  never after the place it was detected. Codes are part of the public API:
  they never change meaning and are never reused.
- Domain packages define their errors beside the rule, as subclasses of the
  kinds below. Only ``api``/``cli`` turn a kind into an HTTP status or an exit
  code; the domain never knows about either.
- Raising one of these means nothing was written: services raise before they
  write, or inside the unit of work that the caller then rolls back.

Kinds and what the edge makes of them:

=================  ===========  ==================================================
kind               HTTP status  meaning
=================  ===========  ==================================================
InvalidInput       422          the request itself is malformed or out of range
NotFound           404          a referenced object does not exist
Conflict           409          the request contradicts an earlier one (same key,
                                different content; state already moved on)
Rejected           422          well-formed, but the current state refuses it
                                (overdraft, closed account, expired hold)
=================  ===========  ==================================================
"""

from __future__ import annotations

from typing import Any, ClassVar


class ZhangfangError(Exception):
    """Base of every error a caller can cause. ``code`` is stable; ``message`` is for people."""

    code: ClassVar[str] = "error"
    kind: ClassVar[str] = "error"

    def __init__(self, message: str, *, field: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        if self.details:
            body["details"] = self.details
        return body

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class InvalidInput(ZhangfangError):
    kind = "invalid_input"
    code = "invalid_input"


class NotFound(ZhangfangError):
    kind = "not_found"
    code = "not_found"


class Conflict(ZhangfangError):
    kind = "conflict"
    code = "conflict"


class Rejected(ZhangfangError):
    kind = "rejected"
    code = "rejected"


class Unauthorized(ZhangfangError):
    kind = "unauthorized"
    code = "unauthorized"
