"""The error shape every endpoint answers with, and helpers to document responses in OpenAPI."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    code: str = Field(description="stable code named after the broken rule, e.g. entry_must_balance")
    message: str = Field(description="for people; may change")
    field: str | None = Field(default=None, description="the request field at fault, when there is one")
    details: dict[str, Any] | None = Field(default=None, description="machine-readable specifics")


class ErrorResponse(BaseModel):
    """Every refusal: ``{"error": {"code", "message", "field"?, "details"?}}``."""

    error: ErrorBody


def error_doc(description: str) -> dict[str, Any]:
    """An OpenAPI ``responses`` entry for an error status, with the error shape and what it means."""
    return {"model": ErrorResponse, "description": description}
