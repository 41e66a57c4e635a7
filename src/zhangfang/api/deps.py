"""Dependencies shared by every router: the admin key check, the engine, the settings."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Depends, Request, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer, utils
from sqlalchemy.engine import Engine

from zhangfang.api.responses import error_doc
from zhangfang.config import Settings
from zhangfang.errors import Unauthorized


class AdminKeyInvalid(Unauthorized):
    """The admin API takes ``Authorization: Bearer <ZHANGFANG_ADMIN_API_KEY>``."""

    code = "admin_key_invalid"


admin_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="AdminKey",
    description="Authorization: Bearer <ZHANGFANG_ADMIN_API_KEY>",
)


# The dependencies below are ``async`` on purpose: a plain ``def`` dependency runs in the threadpool, and a
# hop there and back costs more than the work they do (each merchant request would pay three).


async def get_settings(request: Request) -> Settings:
    """Returns the settings the app was created with."""
    return request.app.state.settings


async def get_engine(request: Request) -> Engine:
    """Returns the app's engine; handlers open their unit of work on it."""
    return request.app.state.engine


def _check_admin_key(request: Request, given: str) -> None:
    expected: str = request.app.state.settings.admin_api_key
    # Compare bytes in constant time: how long a wrong key takes says nothing about the right one.
    if not given or not hmac.compare_digest(given.encode(), expected.encode()):
        raise AdminKeyInvalid("missing or wrong admin key; send Authorization: Bearer <key>")


def require_admin(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(admin_bearer),
) -> None:
    """Refuses the request unless it carries the admin key as a bearer token."""
    _check_admin_key(request, credentials.credentials if credentials is not None else "")


class AdminRoute(APIRoute):
    """A route that checks the admin key before FastAPI reads the body.

    FastAPI parses a JSON body before it runs any dependency, so with
    ``require_admin`` alone a caller without the key could still make the
    server parse and validate a 5000-entry batch, and would see
    ``request_invalid`` rather than ``admin_key_invalid``. Routers that use
    this class keep ``Depends(require_admin)`` too: it documents the bearer
    scheme in OpenAPI.
    """

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()

        async def checked(request: Request) -> Response:
            scheme, credentials = utils.get_authorization_scheme_param(request.headers.get("Authorization"))
            _check_admin_key(request, credentials if scheme.lower() == "bearer" else "")
            return await handler(request)

        return checked


def make_admin_router(*, prefix: str, tags: list[str]) -> APIRouter:
    """A router for operators: the admin key checked before the body is read, common refusals documented."""
    return APIRouter(
        prefix=prefix,
        tags=tags,
        dependencies=[Depends(require_admin)],
        route_class=AdminRoute,
        responses={
            401: error_doc("missing or wrong admin key (admin_key_invalid)"),
            422: error_doc("the request is malformed (request_invalid, …)"),
            500: error_doc("internal_error"),
        },
    )
