"""The FastAPI application: one router per domain, one error shape for every refusal.

Guarantees
- Every error leaves as ``{"error": {"code", "message", "field"?, "details"?}}``
  with a stable ``code``: domain errors (``ZhangfangError``) by kind
  (InvalidInput 422, NotFound 404, Conflict 409, Rejected 422, Unauthorized
  401); a request FastAPI cannot parse as ``request_invalid`` (422) naming the
  first field at fault (``legs.0.amount``); an unknown route or method as
  ``route_not_found``/``method_not_allowed``; anything unexpected as
  ``internal_error`` (500, logged with its traceback, never shown).
- The app refuses to start without an admin key (``ZHANGFANG_ADMIN_API_KEY``).
- An engine the app created is disposed when the app shuts down; an engine
  passed in belongs to the caller.
"""

from __future__ import annotations

import functools
import gc
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, Literal

import anyio.to_thread
import sqlalchemy as sa
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.engine import Engine
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import zhangfang
from zhangfang.accounting import api as accounting_api
from zhangfang.accounting import chart as accounting_chart
from zhangfang.api.responses import ErrorResponse
from zhangfang.channels import registry as channel_registry
from zhangfang.channels.registry import ChannelRegistry
from zhangfang.config import Settings, get_settings
from zhangfang.db.engine import create_engine
from zhangfang.db.uow import run_in_transaction
from zhangfang.errors import ZhangfangError
from zhangfang.jobs.periodic import start_in_thread
from zhangfang.ledger import api as ledger_api
from zhangfang.lending import api as lending_api
from zhangfang.lending import installments_api
from zhangfang.mandates import api as mandates_api
from zhangfang.notify import api as notify_api
from zhangfang.parties import api as parties_api
from zhangfang.payments import api as payments_api
from zhangfang.payments import flows as payment_flows
from zhangfang.recon import api as recon_api
from zhangfang.settlement import api as settlement_api
from zhangfang.settlement import calendar as settlement_calendar
from zhangfang.web import cashier

logger = logging.getLogger("zhangfang.api")

STATUS_BY_KIND = {
    "invalid_input": 422,
    "not_found": 404,
    "conflict": 409,
    "rejected": 422,
    "unauthorized": 401,
    "unavailable": 503,
}
LOCATION_SOURCES = {"body", "query", "path", "header", "cookie"}


def error_response(
    status_code: int,
    code: str,
    message: str,
    *,
    field: str | None = None,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        body["field"] = field
    if details:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=status_code, headers=headers)


def _dotted(location: Sequence[Any]) -> str:
    """``("body", "legs", 0, "amount")`` → ``legs.0.amount``; the source alone if nothing follows it."""
    parts = list(location)
    if len(parts) > 1 and parts[0] in LOCATION_SOURCES:
        parts = parts[1:]
    return ".".join(str(part) for part in parts)


async def _domain_error(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, ZhangfangError)
    status_code = STATUS_BY_KIND.get(error.kind, 400)
    headers = {"WWW-Authenticate": "Bearer"} if status_code == 401 else None
    return JSONResponse({"error": error.to_dict()}, status_code=status_code, headers=headers)


def _problem(problem: Any) -> dict[str, str]:
    """One pydantic error as ``{"field", "message", "type"}``, with the field dotted."""
    message = str(problem.get("msg", "invalid"))
    location = list(problem.get("loc", ()))
    if problem.get("type") == "json_invalid":
        # Located at ("body", <character offset>): name the body, say the offset in the message.
        reason = (problem.get("ctx") or {}).get("error")
        offset = f" at character {location[1]}" if len(location) > 1 else ""
        return {"field": "body", "message": f"{message}{offset}: {reason}", "type": "json_invalid"}
    return {"field": _dotted(location), "message": message, "type": str(problem.get("type"))}


async def _request_invalid(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    problems = [_problem(problem) for problem in error.errors()]
    first = problems[0] if problems else {"field": "", "message": "request invalid"}
    return error_response(
        422,
        "request_invalid",
        first["message"],
        field=first["field"] or None,
        details={"errors": problems},
    )


async def _http_error(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    if error.status_code == 400:
        # FastAPI's answer to a body it cannot even decode: the same refusal as malformed JSON.
        return error_response(422, "request_invalid", "the request body is not valid UTF-8 JSON", field="body")
    code = {404: "route_not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
    return error_response(error.status_code, code, str(error.detail), headers=error.headers)


class EdgeMiddleware:
    """The two rules every request meets first, in one ASGI layer (each layer costs every request a little).

    - Text never contains NUL: a request whose path, query or body carries a
      NUL character is refused as ``request_invalid``. PostgreSQL text can
      never hold NUL, so such input could only fail deep in a query (a 500) or
      be stored differently on SQLite. The body is read once here and handed
      on unchanged.
    - An unexpected exception becomes a 500 in the error shape, logged with its
      traceback. A plain ASGI middleware rather than an ``Exception`` handler:
      Starlette re-raises after running such a handler, so the server would log
      every failure twice.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracking(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self._refuse_nul_or_pass(scope, receive, send_tracking)
        except Exception:
            logger.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            await error_response(500, "internal_error", "internal error")(scope, receive, send)

    async def _refuse_nul_or_pass(self, scope: Scope, receive: Receive, send: Send) -> None:
        query = scope.get("query_string", b"")
        if "\x00" in scope.get("path", ""):
            await self._refuse(scope, receive, send, "path")
            return
        if b"\x00" in query or b"%00" in query:
            await self._refuse(scope, receive, send, "query")
            return
        chunks, first = [], None
        while True:
            message = await receive()
            if message["type"] != "http.request":
                first = message  # the client went away: let the app see it
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if b"\x00" in body or b"\\u0000" in body:
            await self._refuse(scope, receive, send, "body")
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return first or {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, field: str) -> None:
        await error_response(422, "request_invalid", "text may not contain NUL characters", field=field)(
            scope, receive, send
        )


class HealthOut(BaseModel):
    status: Literal["ok"]
    database: Literal["sqlite", "postgresql"]


def healthz(request: Request) -> Any:
    """Liveness and database check: 200 when the database answers, 503 ``database_unavailable`` otherwise."""
    db: Engine = request.app.state.engine
    try:
        with db.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError:
        logger.exception("health check: database does not answer")
        return error_response(503, "database_unavailable", "the database does not answer")
    return HealthOut(status="ok", database=db.dialect.name)  # type: ignore[arg-type]


@functools.cache
def all_routes() -> APIRouter:
    """The API's routes, one table per process that every app built here shares.

    Handlers take everything per app from ``request.app.state`` (settings,
    engine, channels), so one table serves any number of apps; tests build
    hundreds, and each would otherwise pay again for the validators of every
    route it reaches.
    """
    routes = APIRouter()
    routes.add_api_route(
        "/healthz",
        healthz,
        methods=["GET"],
        response_model=HealthOut,
        tags=["health"],
        summary="Liveness and database check",
        responses={503: {"model": ErrorResponse, "description": "the database does not answer"}},
    )
    # Routes are matched in order, one after another: the busiest (merchants' payments) go first.
    for router in (
        payments_api.router,
        ledger_api.router,
        accounting_api.router,
        recon_api.router,
        settlement_api.router,
        mandates_api.router,
        mandates_api.admin_router,
        lending_api.router,
        installments_api.router,
        installments_api.admin_router,
        parties_api.admin_router,
        parties_api.router,
        notify_api.admin_router,
        notify_api.router,
        payments_api.admin_router,
        cashier.router,
    ):
        routes.include_router(router)
    return routes


def create_app(
    settings: Settings | None = None, engine: Engine | None = None, registry: ChannelRegistry | None = None
) -> FastAPI:
    """Returns the API application on ``engine`` (created from ``settings`` when not given).

    Payment channels: ``registry`` when given; else the file ``channels_file``
    names; else, with ``sandbox`` on, the local simulators, started with the app
    (and stopped with it); else none (payment endpoints answer
    ``channels_not_configured``). The registry is also installed process-wide,
    for the job handlers that run in this process.
    """
    settings = settings or get_settings()
    if not settings.admin_api_key:
        raise RuntimeError(
            "zhangfang's API needs an admin key: set ZHANGFANG_ADMIN_API_KEY "
            "(or Settings(admin_api_key=...)); the server does not start without one"
        )
    owns_engine = engine is None
    if engine is None:
        engine = create_engine(
            settings.database_url,
            sqlite_synchronous=settings.sqlite_synchronous,
            pool_size=settings.database_pool_size,
        )
    if registry is None and settings.channels_file is not None:
        registry = channel_registry.load_registry(settings.channels_file)
    if registry is not None:
        channel_registry.install(registry)
    payment_flows.install_settings(settings)
    settlement_calendar.install_published_years(settings.settlement_calendar_file)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Blocking handlers (every database call) run in this many threads. More threads than cores only
        # fight over the GIL: under load, requests wait their turn in the event loop instead, which is cheap.
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.api_threads
        sandbox = None
        if app.state.registry is None and settings.sandbox:
            from zhangfang.sandbox.environment import DEFAULT_PORTS, start_sandbox

            sandbox = start_sandbox(settings.sandbox_dir, ports=DEFAULT_PORTS, notify_delay_seconds=1.0)
            app.state.sandbox = sandbox
            app.state.registry = sandbox.registry()
            channel_registry.install(app.state.registry)
            logger.info("sandbox channels running; their configuration is %s", sandbox.config_path)
        # The chart of accounts and posting rules are files: a bad one stops the start, not a finance report later.
        # A database that does not answer yet must not: /healthz says so, and every sync installs them again.
        chart, posting_rules = accounting_chart.configured(settings)
        try:
            run_in_transaction(engine, lambda conn: accounting_chart.install(conn, chart, posting_rules))
        except sa.exc.OperationalError:
            logger.warning("the database does not answer: the chart of accounts is installed by the next sync")
        # The periodic ledger jobs (seal, fold, expire holds, day-end) and the job queue run beside the API
        # when asked, so `make run` is one process; production runs `zhangfang worker` separately.
        jobs = start_in_thread(engine, settings) if settings.run_jobs_in_server else None
        # Everything alive now (the app, its routes, SQLAlchemy's metadata, pydantic's schemas) lives as long as
        # the process: keep the cyclic garbage collector from scanning it again on every full collection.
        gc.collect()
        gc.freeze()
        yield
        if jobs is not None:
            thread, stop_event = jobs
            stop_event.set()
            thread.join(timeout=30)
        if sandbox is not None:
            sandbox.stop()
        if owns_engine:
            engine.dispose()

    app = FastAPI(
        title="zhangfang (账房)",
        version=zhangfang.__version__,
        description=(
            "The money core: accounts, balanced journal entries, holds, day-end; merchants, payments through "
            "channels, refunds, payouts, webhooks. "
            "Amounts are integers in the currency's minor unit (fen for CNY). "
            'Every error is `{"error": {"code", "message", "field"?, "details"?}}` with a stable code.'
        ),
        docs_url="/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.registry = registry
    app.state.sandbox = None

    app.add_exception_handler(ZhangfangError, _domain_error)
    app.add_exception_handler(RequestValidationError, _request_invalid)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_middleware(EdgeMiddleware)

    # Every app shares the process's route table (see all_routes): FastAPI builds a route's validators the
    # first time a request reaches it, per router it was included in, so a table built once is built once.
    app.router.routes.extend(all_routes().routes)
    return app
