"""The webhooks' error catalogue, in order of precedence within each operation.

When a call breaks several rules, the first one listed for its operation is
reported: stateless checks before the ones that read the database, so the same
bad request gets the same code whatever the database holds.

Emitting an event (``service.emit``):

 1. ``idempotency_key_invalid``          key empty, longer than 200 or not printable ASCII
 2. ``webhook_event_type_invalid``       not dotted lower-case words (``payment.succeeded``), or over 64 characters
 3. ``webhook_payload_invalid``          ``data`` is not a plain JSON object of at most 64 KiB
 4. ``webhook_url_invalid``              not an absolute ``http``/``https`` URL with a host, at most 2048
                                         printable ASCII characters, without credentials or fragment
 5. ``webhook_url_must_be_https``        ``http`` to a host that is not loopback, and the setting
                                         ``ZHANGFANG_WEBHOOK_ALLOW_HTTP`` is off
 6. ``merchant_not_found``               no merchant has this id
 7. ``idempotency_key_conflict``         the merchant used the key for an event with other content

Reading and replaying events (``get_event``, ``list_events``, ``list_attempts``, ``replay``):

 8. ``webhook_event_state_invalid``      a state filter that is not ``pending|delivered|dead|disabled``
 9. ``limit_invalid``, ``cursor_invalid`` paging (1 to 500; the ``next_cursor`` of a previous page)
10. ``webhook_event_not_found``          no event has this id — also the answer for another
                                         merchant's event, so a merchant never learns it exists
11. ``webhook_event_not_replayable``     only a ``delivered``, ``dead`` or ``disabled`` event is replayed
                                         (or a ``pending`` one whose delivery job ended)

Rotating a merchant's signing secret (``rotate_secret``): ``merchant_not_found``.

A failing *delivery* is not an error of this catalogue: it is an attempt with
its HTTP status or error text, logged in ``webhook_attempts`` and retried.
"""

from __future__ import annotations

from zhangfang.errors import Conflict, InvalidInput, NotFound, Rejected


class IdempotencyKeyInvalid(InvalidInput):
    code = "idempotency_key_invalid"


class EventTypeInvalid(InvalidInput):
    """An event type is dotted lower-case words, ``resource.what_happened``, such as ``payment.succeeded``."""

    code = "webhook_event_type_invalid"


class PayloadInvalid(InvalidInput):
    """An event's data is a JSON object (string keys; dict, list, str, int, float, bool, None) of at most 64 KiB."""

    code = "webhook_payload_invalid"


class UrlInvalid(InvalidInput):
    code = "webhook_url_invalid"


class UrlMustBeHttps(InvalidInput):
    """Webhooks carry payment results: over the internet they travel over TLS only."""

    code = "webhook_url_must_be_https"


class EventStateInvalid(InvalidInput):
    code = "webhook_event_state_invalid"


class LimitInvalid(InvalidInput):
    code = "limit_invalid"


class CursorInvalid(InvalidInput):
    code = "cursor_invalid"


class MerchantNotFound(NotFound):
    code = "merchant_not_found"


class EventNotFound(NotFound):
    code = "webhook_event_not_found"


class IdempotencyKeyConflict(Conflict):
    code = "idempotency_key_conflict"


class EventNotReplayable(Rejected):
    """A pending event is still in the workers' hands: replay it once it is delivered, dead or disabled."""

    code = "webhook_event_not_replayable"
