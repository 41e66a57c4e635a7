"""Signed order creation over HTTP against ``zhangfang serve`` on PostgreSQL, against a bare floor; JSON lines.

    python benchmarks/payments_api.py [--clients 50,200] [--seconds 12] [--warmup 3] [--profile-dir DIR]
    python benchmarks/payments_api.py --deploy [--seconds 12] [--warmup 3] [--deploy-clients 50]

What it measures (each figure a line ``{"name", "value", "unit", ...}``):

- ``commit_baseline`` (and ``commit_baseline_after``): one-row INSERT + COMMIT per second on one
  connection, as in ``ledger_throughput.py``: this shared machine's speed in this run.
- ``loadgen_ceiling_cN``: the load generator alone against a trivial HTTP server (raw asyncio, a fixed
  201 answer, no framework, no database): what the generator can drive on this machine while sharing
  it with a server, and its CPU per request.
- ``payments_floor_cN``: the floor: a bare FastAPI app (started by this script, as its own uvicorn
  process with the same settings as ``zhangfang serve``: one process, ``--log-level warning``, the
  same uvloop/httptools defaults) whose one POST endpoint validates the same JSON body (zhangfang's own
  ``PaymentIn`` model) and inserts one row with SQLAlchemy through ``zhangfang.db.engine.create_engine``
  (the server's pool: 10 + 10 overflow), in the same database, and answers 201 with a small JSON.
- ``payments_create_hmac_cN`` / ``payments_create_rsa2_cN``: ``POST /v1/merchant/payments`` of
  ``zhangfang serve`` (``ZHANGFANG_RUN_JOBS_IN_SERVER=false`` unless ``--jobs-in-server``) for an
  HMAC-SHA256 merchant and an RSA2 merchant: signature checked, nonce recorded, idempotency key
  stored, order and its expiry job written, answer signed (HMAC, or RSA with the platform key).
- ``hmac_vs_floor_throughput_cN`` (target >= 0.5) and ``hmac_vs_floor_p99_cN`` (target <= 2.0), the
  same for RSA2 (reported, no target), and ``payments_api_targets``: whether every HMAC target held.

Every figure line carries: throughput (2xx answers per second in the measured window), ``p50_ms`` and
``p99_ms`` latency, ``errors`` (any answer but 201, or a dropped connection: the script fails when there
is one), ``requests`` measured, and the CPU the window cost per request, in microseconds: the
load generator (``cpu_us_loadgen``), the server process (``cpu_us_server``, of which
``cpu_us_server_kernel`` in the kernel: system calls, network, thread wake-ups), the whole PostgreSQL
server, exited backends included (``cpu_us_postgres``; other databases' work counts too), everything
else on the machine (``cpu_us_other``: other users' processes; large means a disturbed run), and how
busy the machine was (``machine_busy_pct``, 100 = both cores). From ``pg_stat_database`` of the
benchmark's database: connections opened in the window (``db_connections_opened``: a pool's overflow
connections are opened and closed under load) and commits per request (``db_commits_per_request``).
``--profile-dir DIR`` records each server run with ``py-spy record --gil`` (raw collapsed stacks; with
``--deploy``, the first worker while it drains).

The load generator is closed-loop: N clients, each with one raw HTTP/1.1 keep-alive connection
(asyncio on uvloop, no HTTP library), each sending its next request when the previous answer has
arrived. It warms up for ``--warmup`` seconds, then measures for ``--seconds``.

Requests are signed BEFORE each timed run, not during it: signing is the merchant's cost, not the
server's, and a load generator that signs (RSA above all) would take CPU from the server on a 2-core
machine where generator, server and database share the cores. Each request has its own
``out_trade_no``, ``Idempotency-Key`` and nonce; signatures carry the signing time, which the server
accepts for 300 s, so requests are signed per run and runs are short (warm-up + measurement + the
signing itself stay far below 300 s). The number signed is 1.5 times what the previous figure
suggests the run can use; if a run ever needs more, the rest are signed during the run and the line
says how many (``signed_during_run``). The first answer of every run has its signature verified
(HMAC secret, or the platform's public key for RSA2).

``--deploy`` measures the deployment of ``docs/deploy.md`` instead: two ``zhangfang serve`` processes
(two ports, ``ZHANGFANG_RUN_JOBS_IN_SERVER=false``) and two ``zhangfang worker`` processes on one
database, an HMAC merchant creating orders across both ports (``--deploy-clients`` in total, split
evenly). Phase A creates orders that expire about a minute later (``expires_at``), with a
``notify_url`` on a local webhook receiver, while the workers have nothing due (they poll and run
their periodic rounds). When those orders expire, every one is a due ``payments.expire`` job that
closes the order and enqueues a ``payment.closed`` webhook (``notify.deliver``), so the workers drain
two jobs per phase-A order; phase B creates orders again while they drain. Lines: the API figures of
both phases, the drain (jobs, seconds, jobs/s, how much it overlapped phase B's window), and how the
two workers shared the jobs: from each worker's own log (claims and deliveries per worker id), and
from the ``jobs`` table, sampled every 50 ms while jobs run (``locked_by`` is set only while a job
runs, so the table alone cannot say afterwards who ran what).

PostgreSQL comes from ``ZHANGFANG_TEST_POSTGRES_URL`` (default postgres@127.0.0.1:5432); the script
creates its own database and drops it at the end, and stops every process it started, also on failure.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import collections
import dataclasses
import datetime as dt
import json
import math
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
import uvloop

from bench_db import fresh_database
from zhangfang.parties import signing
from zhangfang.payments.api import PaymentIn  # the floor validates the body with the very same model

ADMIN_KEY = "zf-bench-admin-key"
ORDER_PATH = "/v1/merchant/payments"
HOST = "127.0.0.1"
LOG_LEVEL = "warning"
FLOOR_TABLE = "bench_floor_orders"
SUBJECT = "西湖龙井 250g"
NOTIFY_URL = "https://merchant.example/notify"
RETURN_URL = "https://merchant.example/return"
CLK_TCK = os.sysconf("SC_CLK_TCK")
SIGNED_MARGIN = 1.5
ERROR_SAMPLES_MAX = 5


def emit(name: str, value: float, unit: str, **extra: object) -> None:
    print(json.dumps({"name": name, "value": round(value, 3), "unit": unit, "database": "postgresql", **extra}))
    sys.stdout.flush()


def note(text: str) -> None:
    print(f"# {text}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- database (as ledger_throughput.py)


def commit_baseline(engine: sa.Engine, seconds: float = 2.0) -> float:
    """Transactions per second of a bare one-row insert and commit on one connection (ledger_throughput.py's)."""
    with engine.connect() as conn:
        conn.execute(sa.text("CREATE TABLE bench_baseline (id INTEGER PRIMARY KEY, v INTEGER)"))
        conn.commit()
        count, began = 0, time.perf_counter()
        while time.perf_counter() - began < seconds:
            conn.execute(sa.text("INSERT INTO bench_baseline (id, v) VALUES (:id, 1)"), {"id": count})
            conn.commit()
            count += 1
        elapsed = time.perf_counter() - began
        conn.execute(sa.text("DROP TABLE bench_baseline"))
        conn.commit()
    return count / elapsed


# --------------------------------------------------------------------------- CPU accounting (/proc)


def _stat_fields(pid: int) -> list[bytes] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()  # fields from the 3rd (state) on
    except OSError:
        return None


def process_system_cpu_seconds(pid: int) -> float:
    """System (kernel) CPU seconds of one process: system calls, network, thread wake-ups."""
    fields = _stat_fields(pid)
    return 0.0 if fields is None else int(fields[12]) / CLK_TCK  # stime (field 15 of the line)


def process_cpu_seconds(pid: int, *, reaped_children: bool = False) -> float:
    """User + system CPU seconds of one process (0 when it is gone); with its waited-for children's too."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of the line)
    if reaped_children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime: children that exited and were waited for
    return ticks / CLK_TCK


def postgres_cpu_seconds() -> float:
    """CPU of the whole PostgreSQL server: its live processes, and its backends that already exited.

    Backends come and go (a pool's overflow connections are closed when returned), so the postmaster's
    reaped-children time is counted too. This is every database's work, not only the benchmark's.
    """
    total = 0.0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/comm", "rb") as f:
                if f.read().strip() != b"postgres":
                    continue
        except OSError:
            continue
        fields = _stat_fields(int(entry.name))
        if fields is None:
            continue
        parent = int(fields[1])
        try:
            with open(f"/proc/{parent}/comm", "rb") as f:
                is_postmaster = f.read().strip() != b"postgres"
        except OSError:
            is_postmaster = False
        total += process_cpu_seconds(int(entry.name), reaped_children=is_postmaster)
    return total


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine since boot."""
    with open("/proc/stat", "rb") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


@dataclasses.dataclass
class CpuSnapshot:
    at: float
    loadgen: float
    server: float
    server_system: float
    postgres: float
    busy: int
    total: int
    sessions: int
    commits: int


class CpuMeter:
    """Samples the CPU of the load generator, the server processes, PostgreSQL and the whole machine."""

    def __init__(self, server_pids: Sequence[int], engine: sa.Engine) -> None:
        self.server_pids = list(server_pids)
        self.engine = engine

    def database_counters(self) -> tuple[int, int]:
        """Connections ever opened to the benchmark's database, and transactions committed in it."""
        with self.engine.connect() as conn:
            conn.execute(sa.text("SELECT pg_stat_clear_snapshot()"))
            row = conn.execute(
                sa.text("SELECT sessions, xact_commit FROM pg_stat_database WHERE datname = current_database()")
            ).one()
        return row.sessions, row.xact_commit

    def snapshot(self) -> CpuSnapshot:
        busy, total = machine_jiffies()
        sessions, commits = self.database_counters()
        return CpuSnapshot(
            at=time.perf_counter(),
            loadgen=time.process_time(),
            server=sum(process_cpu_seconds(pid) for pid in self.server_pids),
            server_system=sum(process_system_cpu_seconds(pid) for pid in self.server_pids),
            postgres=postgres_cpu_seconds(),
            busy=busy,
            total=total,
            sessions=sessions,
            commits=commits,
        )


# --------------------------------------------------------------------------- trivial HTTP server


class _TrivialHttp(asyncio.Protocol):
    """Answers every request with a fixed 201 (``GET /count``: how many requests it answered)."""

    count = 0

    def __init__(self) -> None:
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).lower()
            match = re.search(rb"content-length:\s*(\d+)", head)
            need = end + 4 + (int(match.group(1)) if match else 0)
            if len(self.buf) < need:
                return
            del self.buf[:need]
            if head.startswith(b"get /count"):
                body = str(_TrivialHttp.count).encode()
                status = b"200 OK"
            else:
                _TrivialHttp.count += 1
                body = b'{"ok":true}'
                status = b"201 Created"
            assert self.transport is not None
            self.transport.write(
                b"HTTP/1.1 "
                + status
                + b"\r\ncontent-type: application/json\r\ncontent-length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
            )
            if b"connection: close" in head:
                self.transport.close()
                return


def serve_trivial(port: int) -> None:
    async def run() -> None:
        server = await asyncio.get_running_loop().create_server(_TrivialHttp, HOST, port, backlog=2048)
        async with server:
            await server.serve_forever()

    uvloop.run(run())


# --------------------------------------------------------------------------- the floor app


def floor_table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        FLOOR_TABLE,
        metadata,
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("out_trade_no", sa.String(64), nullable=False, unique=True),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("notify_url", sa.Text),
        sa.Column("return_url", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def floor_app(database_url: str) -> Any:
    """One POST endpoint: validate the order body (zhangfang's ``PaymentIn``), insert one row, answer 201."""
    from fastapi import FastAPI, status

    from zhangfang.db.engine import create_engine

    engine = create_engine(database_url)  # the pool zhangfang serve uses: 10 + 10 overflow
    table = floor_table(sa.MetaData())
    app = FastAPI()

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post(ORDER_PATH, status_code=status.HTTP_201_CREATED)
    def create(body: PaymentIn) -> dict[str, Any]:
        with engine.begin() as conn:
            row_id = conn.execute(
                table.insert()
                .values(
                    out_trade_no=body.out_trade_no,
                    amount=body.amount,
                    currency=body.currency,
                    subject=body.subject,
                    notify_url=body.notify_url,
                    return_url=body.return_url,
                    created_at=dt.datetime.now(dt.UTC),
                )
                .returning(table.c.id)
            ).scalar_one()
        return {"id": row_id, "out_trade_no": body.out_trade_no}

    return app


def serve_floor(port: int) -> None:
    import uvicorn

    # Exactly how ``zhangfang serve`` starts uvicorn: uvicorn.run(app, host=..., port=..., log_level=...).
    uvicorn.run(floor_app(os.environ["ZHANGFANG_DATABASE_URL"]), host=HOST, port=port, log_level=LOG_LEVEL)


# --------------------------------------------------------------------------- requests


@dataclasses.dataclass
class Shop:
    """A merchant as the load generator signs for it."""

    app_id: str
    sign_type: str
    hmac_secret: str | None = None
    private_key: Any = None


def order_body(out_trade_no: str, *, notify_url: str, expires_at: str | None) -> bytes:
    body: dict[str, Any] = {
        "out_trade_no": out_trade_no,
        "amount": 1999,
        "currency": "CNY",
        "subject": SUBJECT,
        "notify_url": notify_url,
        "return_url": RETURN_URL,
    }
    if expires_at is not None:
        body["expires_at"] = expires_at
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class RequestSource:
    """Signed order creations as raw HTTP/1.1 bytes: pre-built ones first, then (counted) signed on demand."""

    def __init__(
        self, shop: Shop, tag: str, *, notify_url: str = NOTIFY_URL, expires_at: dt.datetime | None = None
    ) -> None:
        self.shop = shop
        self.tag = tag
        self.notify_url = notify_url
        self.expires_at = None if expires_at is None else expires_at.isoformat().replace("+00:00", "Z")
        self.built: list[bytes] = []
        self.position = 0
        self.signed_during_run = 0

    def build(self, number: int) -> bytes:
        out_trade_no = f"{self.tag}-{number:07d}"
        body = order_body(out_trade_no, notify_url=self.notify_url, expires_at=self.expires_at)
        signed = signing.sign_request(
            method="POST",
            path=ORDER_PATH,
            app_id=self.shop.app_id,
            sign_type=self.shop.sign_type,
            private_key=self.shop.private_key,
            hmac_secret=self.shop.hmac_secret,
            body=body,
        )
        lines = [f"POST {ORDER_PATH} HTTP/1.1", f"Host: {HOST}", "Content-Type: application/json"]
        lines.append(f"Content-Length: {len(body)}")
        lines.extend(f"{name}: {value}" for name, value in signed.headers.items())
        lines.append(f"Idempotency-Key: {out_trade_no}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body

    def prebuild(self, count: int) -> float:
        began = time.perf_counter()
        self.built = [self.build(i) for i in range(count)]
        return time.perf_counter() - began

    def next(self) -> bytes:
        position = self.position
        self.position += 1
        if position < len(self.built):
            return self.built[position]
        self.signed_during_run += 1
        return self.build(position)


class FixedSource:
    """The same request every time (the generator's ceiling: no uniqueness needed)."""

    signed_during_run = 0

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.position = 0

    def next(self) -> bytes:
        self.position += 1
        return self.request


# --------------------------------------------------------------------------- the load generator


class _Client(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; ``request`` sends bytes and awaits ``(status, raw answer)``."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.need: int | None = None
        self.status = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"connection lost: {exc}"))

    def request(self, data: bytes) -> asyncio.Future[tuple[int, bytes]]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self.waiter

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if self.need is None:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).lower()
            at = head.find(b"content-length:")
            if at < 0:
                self._fail(f"answer without content-length: {bytes(buf[:200])!r}")
                return
            stop = head.find(b"\r\n", at)
            self.need = end + 4 + int(head[at + 15 : stop if stop >= 0 else None])
            self.status = int(head[9:12])
        if len(buf) >= self.need:
            raw = bytes(buf[: self.need])
            del buf[: self.need]
            self.need = None
            waiter, self.waiter = self.waiter, None
            if waiter is not None and not waiter.done():
                waiter.set_result((self.status, raw))

    def _fail(self, reason: str) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(reason))
        if self.transport is not None:
            self.transport.close()


@dataclasses.dataclass
class RunResult:
    name: str
    seconds: float
    clients: int
    latencies: list[float]
    errors: int
    error_samples: list[str]
    first_answer: bytes | None
    cpu: tuple[CpuSnapshot, CpuSnapshot]
    signed_during_run: int
    sent: int

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds

    def percentile_ms(self, fraction: float) -> float:
        ordered = sorted(self.latencies)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))] * 1000

    def fields(self) -> dict[str, Any]:
        start, end = self.cpu
        count = max(1, len(self.latencies))

        def per_request(seconds: float) -> float:
            return round(seconds / count * 1e6, 1)

        return {
            "p50_ms": round(self.percentile_ms(0.50), 2),
            "p99_ms": round(self.percentile_ms(0.99), 2),
            "errors": self.errors,
            "clients": self.clients,
            "requests": len(self.latencies),
            "seconds": self.seconds,
            "cpu_us_loadgen": per_request(end.loadgen - start.loadgen),
            "cpu_us_server": per_request(end.server - start.server),
            "cpu_us_server_kernel": per_request(end.server_system - start.server_system),
            "cpu_us_postgres": per_request(end.postgres - start.postgres),
            "cpu_us_other": per_request(
                (end.busy - start.busy) / CLK_TCK
                - (end.loadgen - start.loadgen)
                - (end.server - start.server)
                - (end.postgres - start.postgres)
            ),
            "machine_busy_pct": round(100 * (end.busy - start.busy) / max(1, end.total - start.total), 1),
            "db_connections_opened": end.sessions - start.sessions,
            "db_commits_per_request": round((end.commits - start.commits) / count, 2),
            "signed_during_run": self.signed_during_run,
        }


async def _drive(
    name: str,
    targets: Sequence[int],
    clients: int,
    source: RequestSource | FixedSource,
    warmup: float,
    seconds: float,
    meter: CpuMeter,
) -> RunResult:
    loop = asyncio.get_running_loop()
    connections: list[_Client] = []
    for n in range(clients):
        _transport, protocol = await loop.create_connection(_Client, HOST, targets[n % len(targets)])
        connections.append(protocol)
    window = {"start": math.inf, "end": math.inf}
    latencies: list[float] = []
    errors = 0
    samples: list[str] = []
    first: list[bytes] = []
    clock = time.perf_counter

    async def client(connection: _Client) -> None:
        nonlocal errors
        while True:
            began = clock()
            if began >= window["end"]:
                return
            try:
                status, raw = await connection.request(source.next())
            except ConnectionError as error:
                errors += 1
                if len(samples) < ERROR_SAMPLES_MAX:
                    samples.append(str(error))
                return
            done = clock()
            if status != 201:
                errors += 1
                if len(samples) < ERROR_SAMPLES_MAX:
                    samples.append(raw.decode("utf-8", "replace")[-600:])
                continue
            if not first:
                first.append(raw)
            if window["start"] <= done <= window["end"]:
                latencies.append(done - began)

    tasks = [asyncio.ensure_future(client(c)) for c in connections]
    await asyncio.sleep(warmup)
    start = meter.snapshot()
    window["start"], window["end"] = start.at, start.at + seconds
    await asyncio.sleep(seconds)
    end = meter.snapshot()
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)
    for connection in connections:
        if connection.transport is not None:
            connection.transport.close()
    return RunResult(
        name=name,
        seconds=seconds,
        clients=clients,
        latencies=latencies,
        errors=errors,
        error_samples=samples,
        first_answer=first[0] if first else None,
        cpu=(start, end),
        signed_during_run=source.signed_during_run,
        sent=source.position,
    )


def drive(
    name: str,
    targets: Sequence[int],
    clients: int,
    source: RequestSource | FixedSource,
    warmup: float,
    seconds: float,
    meter: CpuMeter,
) -> RunResult:
    return uvloop.run(_drive(name, targets, clients, source, warmup, seconds, meter))


def split_answer(raw: bytes) -> tuple[dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    headers = {}
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        headers[name.strip()] = value.strip()
    return headers, body


def check(result: RunResult, *, verify: Callable[[bytes], None] | None = None) -> None:
    """Fail loudly on any error; verify the first answer's signature."""
    if result.errors:
        for sample in result.error_samples:
            note(f"{result.name}: error answer: {sample}")
        raise SystemExit(f"{result.name}: {result.errors} requests did not answer 201 (samples above)")
    if not result.latencies:
        raise SystemExit(f"{result.name}: no request completed in the measured window")
    if verify is not None:
        assert result.first_answer is not None
        verify(result.first_answer)


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


class Processes:
    """Every process this script starts, with its log file; ``stop_all`` ends them (SIGTERM, then SIGKILL)."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.running: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = self.logdir / f"{name}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=self.logdir)
        self.running[name] = (process, log)
        return process

    def log(self, name: str) -> str:
        return self.running[name][1].read_text(errors="replace")

    def tail(self, name: str, lines: int = 30) -> str:
        return "\n".join(self.log(name).splitlines()[-lines:])

    def stop(self, name: str, timeout: float = 30) -> None:
        process, _ = self.running[name]
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def stop_all(self) -> None:
        for name in list(self.running):
            try:
                self.stop(name)
            except Exception as error:  # keep stopping the others
                note(f"stopping {name}: {error}")

    def wait_ready(self, name: str, port: int, path: str = "/healthz", timeout: float = 90) -> None:
        process, _ = self.running[name]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SystemExit(f"{name} exited with {process.returncode}:\n{self.tail(name)}")
            try:
                if httpx.get(f"http://{HOST}:{port}{path}", timeout=2).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"{name} did not answer on port {port} within {timeout} s:\n{self.tail(name)}")


def script_argv(*args: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), *args]


def zhangfang_argv(*args: str) -> list[str]:
    """The ``zhangfang`` command of this virtualenv (``python -m zhangfang.cli.main`` when there is none)."""
    command = Path(sys.executable).parent / "zhangfang"
    return [str(command), *args] if command.exists() else [sys.executable, "-m", "zhangfang.cli.main", *args]


def server_env(database_url: str, channels_file: Path, platform_key_pem: str, *, jobs_in_server: bool) -> dict:
    env = {key: value for key, value in os.environ.items() if not key.startswith("ZHANGFANG_")}
    env.update(
        ZHANGFANG_DATABASE_URL=database_url,
        ZHANGFANG_ADMIN_API_KEY=ADMIN_KEY,
        ZHANGFANG_RUN_JOBS_IN_SERVER="true" if jobs_in_server else "false",
        ZHANGFANG_CHANNELS_FILE=str(channels_file),
        ZHANGFANG_PLATFORM_PRIVATE_KEY_PEM=platform_key_pem,
    )
    return env


def channels_file(directory: Path) -> Path:
    """A valid channels TOML from the sandbox; its simulators are stopped again (creating orders never calls them)."""
    from zhangfang.sandbox.environment import start_sandbox

    sandbox = start_sandbox(directory)
    sandbox.stop()
    return sandbox.config_path


def migrate(database_url: str, env: dict[str, str], cwd: Path) -> None:
    done = subprocess.run(
        zhangfang_argv("--database-url", database_url, "db", "upgrade"), env=env, cwd=cwd, capture_output=True
    )
    if done.returncode != 0:
        raise SystemExit(f"zhangfang db upgrade failed:\n{done.stdout.decode()}{done.stderr.decode()}")


def create_shops(port: int) -> tuple[Shop, Shop, str]:
    """One HMAC-SHA256 merchant and one RSA2 merchant over the admin API; and the platform's public key."""
    admin = httpx.Client(base_url=f"http://{HOST}:{port}", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    shops = []
    for sign_type in (signing.SIGN_TYPE_HMAC, signing.SIGN_TYPE_RSA2):
        body: dict[str, Any] = {
            "key": f"bench-{sign_type.lower()}",
            "name": f"压测商户 {sign_type}",
            "mcc": "5812",
            "fee_rate": "0.006",
            "settlement_account": {
                "bank_name": "招商银行上海分行",
                "account_number": "6214830212345678",
                "account_name": "上海示例餐饮有限公司",
            },
            "sign_type": sign_type,
        }
        private_key = None
        if sign_type == signing.SIGN_TYPE_RSA2:
            private_key = signing.generate_private_key()
            body["public_key_pem"] = signing.public_key_pem(private_key)
        answer = admin.post("/v1/admin/merchants", json=body)
        if answer.status_code != 201:
            raise SystemExit(f"creating the {sign_type} merchant: HTTP {answer.status_code} {answer.text}")
        created = answer.json()
        shops.append(Shop(created["app_id"], sign_type, created["hmac_secret"], private_key))
    platform_public_key = admin.get("/v1/platform/public-key").json()["public_key_pem"]
    admin.close()
    return shops[0], shops[1], platform_public_key


def verifier(shop: Shop, platform_public_key: str) -> Callable[[bytes], None]:
    def verify(raw: bytes) -> None:
        headers, body = split_answer(raw)
        signing.verify_platform_response(
            headers=headers,
            body=body,
            platform_public_key=platform_public_key if shop.sign_type == signing.SIGN_TYPE_RSA2 else None,
            hmac_secret=shop.hmac_secret if shop.sign_type == signing.SIGN_TYPE_HMAC else None,
        )

    return verify


class Profiler:
    """``py-spy record`` of one process for one timed run (``--profile-dir``): raw collapsed stacks.

    With ``--gil``: only the thread holding the GIL is sampled, which shows where the process's Python
    CPU goes (threads waiting for PostgreSQL or for the GIL are not counted).
    """

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None
        self.timeout = 60.0

    def start(self, pid: int, name: str, seconds: float, delay: float) -> None:
        if self.directory is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        self.timeout = delay + seconds + 30
        py_spy = Path(sys.executable).parent / "py-spy"
        argv = [str(py_spy), "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "200"]
        argv += ["--gil", "--format", "raw", "--output", str(self.directory / f"{name}.txt"), "--nonblocking"]
        # Start sampling when the warm-up ends.
        command = f"sleep {delay}; exec " + " ".join(argv)
        self.process = subprocess.Popen(["sh", "-c", command], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def wait(self) -> None:
        if self.process is not None:
            try:
                self.process.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None


# --------------------------------------------------------------------------- the benchmark


def figure_line(name: str, result: RunResult, unit: str, **extra: Any) -> None:
    emit(name, result.rate, unit, **result.fields(), **extra)


def prepare(workdir: Path, jobs_in_server: bool) -> tuple[str, Callable[[], None], sa.Engine, dict[str, str]]:
    """A fresh database, migrated; the environment every server process gets."""
    database_url, drop = fresh_database("postgresql")
    try:
        platform_key_pem = signing.private_key_pem(signing.generate_private_key())
        env = server_env(
            database_url, channels_file(workdir / "sandbox"), platform_key_pem, jobs_in_server=jobs_in_server
        )
        migrate(database_url, env, workdir)
        engine = sa.create_engine(database_url)
    except BaseException:
        drop()
        raise
    return database_url, drop, engine, env


SETTLE_SECONDS = 3.0


def settle(engine: sa.Engine) -> None:
    """Lets the database finish the previous run's work (a checkpoint, then a pause) before the next one starts.

    Without it, the run that follows another — the HMAC run follows the floor's,
    which opens and closes a thousand connections — pays for the previous run's
    checkpoint and cleanup, and the figures depend on the order of the runs.
    """
    with engine.connect() as conn:
        conn.execute(sa.text("CHECKPOINT"))
    time.sleep(SETTLE_SECONDS)


def bench(args: argparse.Namespace, workdir: Path) -> None:
    _url, drop, engine, env = prepare(workdir, args.jobs_in_server)
    processes = Processes(workdir)
    profiler = Profiler(Path(args.profile_dir) if args.profile_dir else None)
    try:
        emit("commit_baseline", commit_baseline(engine), "transactions/s")
        floor_table(sa.MetaData()).create(engine)

        ports = {"server": free_port(), "floor": free_port(), "trivial": free_port()}
        server = processes.start(
            "server",
            zhangfang_argv("serve", "--host", HOST, "--port", str(ports["server"]), "--log-level", LOG_LEVEL),
            env,
        )
        floor = processes.start("floor", script_argv("--serve", "floor", "--port", str(ports["floor"])), env)
        trivial = processes.start("trivial", script_argv("--serve", "trivial", "--port", str(ports["trivial"])), env)
        processes.wait_ready("server", ports["server"])
        processes.wait_ready("floor", ports["floor"])
        processes.wait_ready("trivial", ports["trivial"], path="/count")
        hmac_shop, rsa_shop, platform_public_key = create_shops(ports["server"])
        note(
            f"server pid {server.pid} (jobs in server: {args.jobs_in_server}), floor pid {floor.pid}, logs in {workdir}"
        )

        ceiling_request = RequestSource(hmac_shop, "ceiling").build(0)
        ratios: dict[str, bool] = {}
        for clients in args.clients:
            meter = CpuMeter([trivial.pid], engine)
            ceiling_seconds = min(args.seconds, 5.0)
            result = drive(
                f"c{clients}", [ports["trivial"]], clients, FixedSource(ceiling_request), 1.0, ceiling_seconds, meter
            )
            check(result)
            figure_line(
                f"loadgen_ceiling_c{clients}",
                result,
                "requests/s",
                note="generator + a trivial raw-asyncio server sharing the machine; cpu_us_server is that server",
            )

            runs: dict[str, RunResult] = {}
            plan = [
                ("floor", hmac_shop, floor, ports["floor"], "requests/s", None),
                ("hmac", hmac_shop, server, ports["server"], "orders/s", verifier(hmac_shop, platform_public_key)),
                ("rsa2", rsa_shop, server, ports["server"], "orders/s", verifier(rsa_shop, platform_public_key)),
            ]
            rate_hint = 3000.0
            for label, shop, process, port, unit, verify in plan:
                tag = f"{label}-c{clients}-{secrets.token_hex(3)}"
                source = RequestSource(shop, tag)
                signed_seconds = source.prebuild(
                    int(rate_hint * SIGNED_MARGIN * (args.warmup + args.seconds)) + 4 * clients
                )
                note(f"{tag}: signed {len(source.built)} requests in {signed_seconds:.1f} s")
                name = "payments_floor" if label == "floor" else f"payments_create_{label}"
                settle(engine)
                profiler.start(process.pid, f"{name}_c{clients}", args.seconds, args.warmup)
                result = drive(tag, [port], clients, source, args.warmup, args.seconds, CpuMeter([process.pid], engine))
                profiler.wait()
                check(result, verify=verify)
                figure_line(f"{name}_c{clients}", result, unit, signed_before_run=len(source.built))
                runs[label] = result
                rate_hint = max(result.rate, 50.0)

            floor_run = runs["floor"]
            for label in ("hmac", "rsa2"):
                throughput = runs[label].rate / floor_run.rate
                p99 = runs[label].percentile_ms(0.99) / floor_run.percentile_ms(0.99)
                if label == "hmac":
                    ratios[f"throughput_c{clients}"] = throughput >= 0.5
                    ratios[f"p99_c{clients}"] = p99 <= 2.0
                    emit(f"hmac_vs_floor_throughput_c{clients}", throughput, "ratio", target=0.5, met=throughput >= 0.5)
                    emit(f"hmac_vs_floor_p99_c{clients}", p99, "ratio", target=2.0, met=p99 <= 2.0)
                else:
                    emit(f"rsa2_vs_floor_throughput_c{clients}", throughput, "ratio")
                    emit(f"rsa2_vs_floor_p99_c{clients}", p99, "ratio")
        emit("payments_api_targets", float(all(ratios.values())), "bool", met=all(ratios.values()), checks=ratios)
        emit("commit_baseline_after", commit_baseline(engine), "transactions/s")
    except BaseException:
        for name in processes.running:
            note(f"--- last lines of {name}:\n{processes.tail(name)}")
        raise
    finally:
        profiler.wait()
        processes.stop_all()
        engine.dispose()
        drop()


# --------------------------------------------------------------------------- --deploy: 2 API + 2 workers


class RunningJobsSampler(threading.Thread):
    """Samples ``jobs`` every ``interval`` s: which worker id held which running job (``locked_by``)."""

    def __init__(self, engine: sa.Engine, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.engine = engine
        self.interval = interval
        self.stop_event = threading.Event()
        self.seen: dict[tuple[int, int], str] = {}

    def run(self) -> None:
        query = sa.text("SELECT id, attempts, locked_by FROM jobs WHERE state = 'running'")
        with self.engine.connect() as conn:
            while not self.stop_event.is_set():
                for row in conn.execute(query).all():
                    self.seen[(row.id, row.attempts)] = row.locked_by
                conn.commit()
                self.stop_event.wait(self.interval)

    def by_worker(self) -> dict[str, int]:
        return dict(collections.Counter(self.seen.values()))


def worker_shares(log: str) -> dict[str, Any]:
    """From one worker's log: its id, jobs claimed and succeeded, webhooks delivered."""
    found = re.search(r"jobs: worker (\S+) running", log)
    claimed = succeeded = 0
    for match in re.finditer(r"INFO zhangfang\.jobs\.queue: jobs: (\{.*\})", log):
        counts = ast.literal_eval(match.group(1))
        claimed += counts.get("claimed", 0)
        succeeded += counts.get("succeeded", 0)
    delivered = len(re.findall(r"webhooks: \S+ attempt \d+ .* delivered", log))
    return {
        "worker_id": found.group(1) if found else None,
        "claimed": claimed,
        "succeeded": succeeded,
        "webhooks_delivered": delivered,
        "warnings": len(re.findall(r" (WARNING|ERROR) ", log)),
    }


def deploy(args: argparse.Namespace, workdir: Path) -> None:
    _url, drop, engine, env = prepare(workdir, jobs_in_server=False)
    processes = Processes(workdir)
    sampler = RunningJobsSampler(engine)
    profiler = Profiler(Path(args.profile_dir) if args.profile_dir else None)
    try:
        emit("commit_baseline", commit_baseline(engine), "transactions/s")
        api_ports = [free_port(), free_port()]
        sink_port = free_port()
        api = [
            processes.start(
                f"api{n}", zhangfang_argv("serve", "--host", HOST, "--port", str(port), "--log-level", LOG_LEVEL), env
            )
            for n, port in enumerate(api_ports, 1)
        ]
        workers = [processes.start(f"worker{n}", zhangfang_argv("worker"), env) for n in (1, 2)]
        processes.start("sink", script_argv("--serve", "trivial", "--port", str(sink_port)), env)
        for n, port in enumerate(api_ports, 1):
            processes.wait_ready(f"api{n}", port)
        processes.wait_ready("sink", sink_port, path="/count")
        hmac_shop, _rsa, platform_public_key = create_shops(api_ports[0])
        verify = verifier(hmac_shop, platform_public_key)
        meter = CpuMeter([p.pid for p in api + workers], engine)
        notify_url = f"http://{HOST}:{sink_port}/notify"
        clients = args.deploy_clients
        note(f"api pids {[p.pid for p in api]}, worker pids {[p.pid for p in workers]}, logs in {workdir}")

        # Phase A: orders that all expire together about a minute after the last of them is created.
        tag_a = f"deployA-{secrets.token_hex(3)}"
        duration = args.warmup + args.seconds
        expiry_wait = 60 + 5
        budget = int(3000 * SIGNED_MARGIN * duration) + 4 * clients
        # The expiry is fixed before signing; signing takes a moment, so leave room for it.
        sign_estimate = 6.0
        expires_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=sign_estimate + duration + expiry_wait)
        source_a = RequestSource(hmac_shop, tag_a, notify_url=notify_url, expires_at=expires_at)
        signed_seconds = source_a.prebuild(budget)
        if signed_seconds > sign_estimate:
            raise SystemExit(f"signing took {signed_seconds:.1f} s, more than the {sign_estimate} s allowed for it")
        note(f"{tag_a}: signed {budget} requests in {signed_seconds:.1f} s; they expire at {source_a.expires_at}")
        sampler.start()
        result_a = drive(tag_a, api_ports, clients, source_a, args.warmup, args.seconds, meter)
        check(result_a, verify=verify)
        figure_line(
            f"deploy_hmac_c{clients}_workers_idle",
            result_a,
            "orders/s",
            api_processes=2,
            workers=2,
            note="cpu_us_server: both API processes and both workers",
        )

        # Phase B: order creation again, its measured window starting as phase A's orders expire.
        tag_b = f"deployB-{secrets.token_hex(3)}"
        source_b = RequestSource(hmac_shop, tag_b, notify_url=notify_url)
        source_b.prebuild(int(max(result_a.rate, 50.0) * SIGNED_MARGIN * duration) + 4 * clients)
        wait = (expires_at - dt.datetime.now(dt.UTC)).total_seconds() - args.warmup
        note(f"waiting {wait:.0f} s for phase A's orders to expire")
        time.sleep(max(0.0, wait))
        workers_cpu_before = sum(process_cpu_seconds(p.pid) for p in workers)
        profiler.start(workers[0].pid, "deploy_worker1_drain", 90, args.warmup)
        result_b = drive(tag_b, api_ports, clients, source_b, args.warmup, args.seconds, meter)
        window_b = (result_b.cpu[0].at, result_b.cpu[1].at)
        wall_offset = time.time() - time.perf_counter()
        check(result_b, verify=verify)
        figure_line(
            f"deploy_hmac_c{clients}_workers_draining",
            result_b,
            "orders/s",
            api_processes=2,
            workers=2,
            note="cpu_us_server: both API processes and both workers",
        )

        # The drain: every phase-A order closed by its expire job, and its payment.closed webhook delivered.
        with engine.connect() as conn:
            orders_a = conn.execute(
                sa.text("SELECT count(*) FROM payment_orders WHERE out_trade_no LIKE :tag"), {"tag": f"{tag_a}-%"}
            ).scalar_one()
        query = sa.text(
            "SELECT kind, state, count(*) AS n, max(finished_at) AS last_finished "
            "FROM jobs WHERE kind IN ('payments.expire', 'notify.deliver') "
            "AND (kind = 'notify.deliver' OR run_at <= :horizon OR finished_at IS NOT NULL) GROUP BY kind, state"
        )
        horizon = expires_at + dt.timedelta(minutes=5)
        deadline = time.monotonic() + args.drain_timeout
        while True:
            with engine.connect() as conn:
                rows = conn.execute(query, {"horizon": horizon}).all()
            done = {(row.kind, row.state): row for row in rows}
            expired = done.get(("payments.expire", "succeeded"))
            delivered = done.get(("notify.deliver", "succeeded"))
            if expired and delivered and expired.n >= orders_a and delivered.n >= orders_a:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"the workers did not drain {orders_a} expiries within {args.drain_timeout} s: {rows}")
            time.sleep(0.5)
        workers_cpu = sum(process_cpu_seconds(p.pid) for p in workers) - workers_cpu_before
        sampler.stop_event.set()
        sampler.join()
        profiler.wait()
        with engine.connect() as conn:
            closed = conn.execute(
                sa.text("SELECT count(*) FROM payment_orders WHERE out_trade_no LIKE :tag AND state = 'closed'"),
                {"tag": f"{tag_a}-%"},
            ).scalar_one()
            states = {
                f"{row.kind}:{row.state}": row.n
                for row in conn.execute(sa.text("SELECT kind, state, count(*) AS n FROM jobs GROUP BY kind, state"))
            }
            webhook_states = dict(
                conn.execute(sa.text("SELECT state, count(*) FROM webhook_events GROUP BY state")).all()
            )
        sink_count = int(httpx.get(f"http://{HOST}:{sink_port}/count").text)
        first_due = expires_at  # every phase-A order expires at this moment: its expire job is due then
        last_finished = max(expired.last_finished, delivered.last_finished)
        drain_seconds = (last_finished - first_due).total_seconds()
        jobs_done = expired.n + delivered.n
        due_at, over_at = first_due.timestamp() - wall_offset, last_finished.timestamp() - wall_offset
        overlap = max(0.0, min(over_at, window_b[1]) - max(due_at, window_b[0]))
        emit(
            "deploy_worker_drain",
            jobs_done / drain_seconds,
            "jobs/s",
            jobs=jobs_done,
            expire_jobs=expired.n,
            webhook_jobs=delivered.n,
            orders_expired=orders_a,
            orders_closed=closed,
            webhooks_received_by_sink=sink_count,
            drain_seconds=round(drain_seconds, 2),
            worker_cpu_ms_per_job=round(workers_cpu / jobs_done * 1000, 2),
            overlap_with_phase_b_window_s=round(overlap, 2),
            jobs_by_kind_and_state=states,
            webhook_events_by_state=webhook_states,
        )
        shares = {f"worker{n}": worker_shares(processes.log(f"worker{n}")) for n in (1, 2)}
        seen = sampler.by_worker()
        for share in shares.values():
            share["seen_running_in_jobs_table"] = seen.get(share["worker_id"], 0)
        total_claimed = sum(share["claimed"] for share in shares.values()) or 1
        emit(
            "deploy_worker_share",
            min(share["claimed"] for share in shares.values()) / total_claimed,
            "fraction of claims taken by the less busy worker",
            workers=shares,
        )
    except BaseException:
        for name in processes.running:
            note(f"--- last lines of {name}:\n{processes.tail(name)}")
        raise
    finally:
        sampler.stop_event.set()
        if sampler.is_alive():
            sampler.join(timeout=5)
        profiler.wait()
        processes.stop_all()
        engine.dispose()
        drop()


# --------------------------------------------------------------------------- driver


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", default="50,200", help="concurrent clients, comma-separated (default 50,200)")
    parser.add_argument("--seconds", type=float, default=12.0, help="measured seconds per run (default 12)")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds before each run (default 3)")
    parser.add_argument(
        "--jobs-in-server", action="store_true", help="ZHANGFANG_RUN_JOBS_IN_SERVER=true (default: false)"
    )
    parser.add_argument("--profile-dir", help="record each zhangfang run with py-spy (raw stacks) into this directory")
    parser.add_argument("--deploy", action="store_true", help="2 API processes + 2 workers (docs/deploy.md)")
    parser.add_argument("--deploy-clients", type=int, default=50, help="clients in --deploy, across both ports")
    parser.add_argument("--drain-timeout", type=float, default=300.0, help="--deploy: seconds to wait for the drain")
    parser.add_argument("--serve", choices=["floor", "trivial"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve == "floor":
        serve_floor(args.port)
        return
    if args.serve == "trivial":
        serve_trivial(args.port)
        return
    args.clients = [int(c) for c in str(args.clients).split(",") if c.strip()]

    def on_sigterm(_signum: int, _frame: object) -> None:
        raise SystemExit("SIGTERM: stopping the processes and dropping the database")

    signal.signal(signal.SIGTERM, on_sigterm)  # so that the cleanup in the finally blocks runs
    if args.warmup + args.seconds > 60:
        parser.error("keep --warmup + --seconds within 60: signatures are accepted for 300 s after signing")
    with tempfile.TemporaryDirectory(prefix="zf-bench-api-") as workdir:
        if args.deploy:
            deploy(args, Path(workdir))
        else:
            bench(args, Path(workdir))


if __name__ == "__main__":
    main()
