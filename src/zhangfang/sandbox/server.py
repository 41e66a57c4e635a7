"""Serve a simulator (an ASGI app) on a loopback port in a background thread.

The channel SDKs (python-alipay-sdk, wechatpayv3) make real HTTP requests, so
their simulators must listen on a real socket. ``serve_in_thread`` starts
uvicorn on 127.0.0.1 (port 0 picks a free one) and returns once it accepts
connections; ``stop()`` shuts it down.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import uvicorn


@dataclass
class RunningServer:
    server: uvicorn.Server
    thread: threading.Thread
    host: str
    port: int

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def serve_in_thread(
    app: object, *, host: str = "127.0.0.1", port: int = 0, timeout_seconds: float = 10.0
) -> RunningServer:
    """Start ``app`` with uvicorn in a daemon thread; returns when it is listening."""
    # No log_config and no log_level: uvicorn would otherwise reconfigure its loggers for the whole process,
    # and the API server that starts the sandbox (``make run``) would stop saying where it listens.
    config = uvicorn.Config(
        app, host=host, port=port, log_config=None, log_level=None, lifespan="off", access_log=False
    )
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]  # not the main thread
    thread = threading.Thread(target=server.run, name=f"sandbox-{host}:{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_seconds
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"simulator did not start on {host}:{port}")
        time.sleep(0.01)
    bound_port = server.servers[0].sockets[0].getsockname()[1]
    return RunningServer(server=server, thread=thread, host=host, port=bound_port)
