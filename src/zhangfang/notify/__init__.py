"""Notify (通知): outbound merchant webhooks, signed per Standard Webhooks, retried, dead-lettered, replayable.

Files: ``tables.py`` (secrets, events, attempts), ``models.py`` (frozen
dataclasses), ``errors.py`` (the error catalogue and its precedence),
``service.py`` (``emit`` in the caller's transaction, the ``notify.deliver``
job handler, the published retry schedule, replay, secret rotation),
``api.py`` (merchant and admin routers), ``cli.py`` (``zhangfang webhooks …``).
The merchants' guide is ``docs/webhooks.md``.
"""
