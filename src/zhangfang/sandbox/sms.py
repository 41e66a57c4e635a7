"""A sandbox SMS gateway: text messages "sent" to phones are kept where tests and the demo can read them.

zhangfang sends one kind of SMS today: the one-time code a payer gives to
authorize a withholding mandate (``zhangfang.mandates``). In the sandbox no
message leaves the machine: ``SandboxSmsGateway.send`` keeps it in memory and,
with a ``directory``, appends it as a JSON line to ``<directory>/sms.jsonl``,
so another process (``zhangfang mandates sms``, the admin API's
``GET /v1/admin/mandates/sandbox/sms``) can read it too. The demo's directory
is ``ZHANGFANG_SANDBOX_DIR``.

Guarantees
- ``send`` never raises for a well-formed message: a file that cannot be
  written is logged and the message is still kept in memory.
- ``messages`` returns what was sent, oldest first, from the file when there
  is one (every process's messages), else from memory.

This is for development and tests only: codes sit in clear in the file. A
production gateway implements the same ``send(phone=…, text=…)``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

__all__ = ["FILE_NAME", "SandboxSmsGateway", "SmsGateway", "SmsMessage", "current", "install"]

logger = logging.getLogger(__name__)

FILE_NAME = "sms.jsonl"
_CODE = re.compile(r"(?<![0-9])([0-9]{6})(?![0-9])")


@dataclass(frozen=True)
class SmsMessage:
    phone: str
    text: str
    sent_at: dt.datetime

    @property
    def code(self) -> str | None:
        """The first six-digit number in the text (the one-time code), if any."""
        found = _CODE.search(self.text)
        return found.group(1) if found else None


class SmsGateway(Protocol):
    def send(self, *, phone: str, text: str, now: dt.datetime | None = None) -> SmsMessage: ...


class SandboxSmsGateway:
    """Keeps every message in memory and, with ``directory``, in ``<directory>/sms.jsonl``."""

    def __init__(self, directory: Path | None = None) -> None:
        self.path = None if directory is None else Path(directory) / FILE_NAME
        self._lock = threading.Lock()
        self._sent: list[SmsMessage] = []

    def send(self, *, phone: str, text: str, now: dt.datetime | None = None) -> SmsMessage:
        """Sends (keeps) one message."""
        message = SmsMessage(phone=phone, text=text, sent_at=(now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC))
        with self._lock:
            self._sent.append(message)
            if self.path is not None:
                line = json.dumps(
                    {"phone": phone, "text": text, "sent_at": message.sent_at.isoformat()}, ensure_ascii=False
                )
                try:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    with self.path.open("a", encoding="utf-8") as file:
                        file.write(line + "\n")
                except OSError as error:
                    logger.error("sandbox sms: could not write %s: %s", self.path, error)
        return message

    def messages(self, phone: str | None = None) -> list[SmsMessage]:
        """The messages sent (to ``phone``, if given), oldest first."""
        with self._lock:
            found = self._read_file() if self.path is not None and self.path.exists() else list(self._sent)
        return [message for message in found if phone is None or message.phone == phone]

    def last_code(self, phone: str) -> str | None:
        """The code in the latest message to ``phone`` that carries one."""
        for message in reversed(self.messages(phone)):
            if message.code is not None:
                return message.code
        return None

    def _read_file(self) -> list[SmsMessage]:
        assert self.path is not None
        found = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                item = json.loads(line)
                found.append(SmsMessage(item["phone"], item["text"], dt.datetime.fromisoformat(item["sent_at"])))
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a crash: skip it
        return found


_installed: SandboxSmsGateway | None = None
_installed_lock = threading.Lock()


def install(gateway: SandboxSmsGateway | None) -> None:
    """Makes ``gateway`` the one this process sends through (None: back to a fresh in-memory one on next use)."""
    global _installed
    with _installed_lock:
        _installed = gateway


def current(directory: Path | None = None) -> SandboxSmsGateway:
    """The gateway this process sends through; the first call creates one (on ``directory``, if given)."""
    global _installed
    with _installed_lock:
        if _installed is None:
            _installed = SandboxSmsGateway(directory)
        return _installed
