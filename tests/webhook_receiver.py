"""A loopback webhook receiver for tests: plans answers per path, records and verifies what arrives.

Registered as a pytest plugin (``tests/conftest.py``), so ``receiver`` and
``receiver_server`` are fixtures in every test module.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from zhangfang.sandbox.server import RunningServer, serve_in_thread


@dataclass(frozen=True)
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    verified_by: list[int]  # indexes of the receiver's secrets whose Webhook(secret).verify accepted it

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """A merchant's webhook endpoint (ASGI): records and verifies every request, answers as planned per path.

    ``plan(path, *answers)``: the n-th request to ``path`` gets the n-th answer, the last one repeats
    (default 200 "ok"). ``hold(path)``: the first request to ``path`` waits, after setting ``held``,
    until ``release`` is set (30 s at most) — a worker caught in the middle of a delivery.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.base_url = ""
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.received: list[Received] = []
            self.secrets: list[str] = []
            self.plans: dict[str, list[Answer]] = {}
            self.hold_path: str | None = None
            self.held = threading.Event()
            self.release = threading.Event()

    def plan(self, path: str, *answers: Answer) -> None:
        with self.lock:
            self.plans[path] = list(answers)

    def hold(self, path: str) -> None:
        with self.lock:
            self.hold_path = path

    def requests(self, path: str | None = None) -> list[Received]:
        with self.lock:
            return [r for r in self.received if path is None or r.path == path]

    def _verified_by(self, body: bytes, headers: dict[str, str]) -> list[int]:
        verified = []
        for index, secret in enumerate(list(self.secrets)):
            try:
                Webhook(secret).verify(body, headers)
            except WebhookVerificationError:
                continue
            verified.append(index)
        return verified

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        assert scope["type"] == "http", scope["type"]
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
        path = scope["path"]
        verified_by = self._verified_by(body, headers)
        with self.lock:
            earlier = sum(1 for r in self.received if r.path == path)
            self.received.append(Received(path, headers, body, verified_by))
            answers = self.plans.get(path) or [Answer()]
            answer = answers[min(earlier, len(answers) - 1)]
            hold = path == self.hold_path and earlier == 0
        if hold:
            self.held.set()
            deadline = time.monotonic() + 30
            while not self.release.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
        extra = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in answer.headers.items()]
        await send(
            {
                "type": "http.response.start",
                "status": answer.status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"), *extra],
            }
        )
        await send({"type": "http.response.body", "body": answer.body})


@pytest.fixture(scope="module")
def receiver_server() -> Iterator[RunningServer]:
    server = serve_in_thread(Receiver())
    yield server
    server.stop()


@pytest.fixture
def receiver(receiver_server: RunningServer) -> Receiver:
    app = receiver_server.server.config.app
    assert isinstance(app, Receiver)
    app.reset()
    app.base_url = receiver_server.base_url
    return app
