"""The API against its own OpenAPI description, fuzzed by schemathesis.

For every operation, valid and invalid requests generated from the schema must
never make the server fail (no 5xx), and every answer must be one the schema
documents: its status code, its content type and its body shape.
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from zhangfang.api.app import create_app
from zhangfang.channels import registry as channel_registry
from zhangfang.config import Settings

ADMIN_KEY = "fuzz-key"
# CI runs a fixed set of examples so a green build stays green; set ZHANGFANG_FUZZ_EXAMPLES (and
# ZHANGFANG_FUZZ_RANDOM=1) to explore further by hand.
EXAMPLES = int(os.environ.get("ZHANGFANG_FUZZ_EXAMPLES", "25"))
DERANDOMIZE = os.environ.get("ZHANGFANG_FUZZ_RANDOM") != "1"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_generated_request_breaks_the_api_or_its_schema(engine, sandbox, mode):
    app_settings = Settings(
        admin_api_key=ADMIN_KEY,
        database_url=engine.url.render_as_string(hide_password=False),
        run_jobs_in_server=False,
        transaction_age_max_seconds=5,
    )
    registry = sandbox.registry()
    app = create_app(app_settings, engine, registry=registry)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: list[tuple[str, str]] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        check_operation(operation, mode, failures)
    channel_registry.install(None)
    registry.close()
    assert failures == []


def check_operation(operation, mode: GenerationMode, failures: list[tuple[str, str]]) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
        derandomize=DERANDOMIZE,
    )
    def check(case):
        response = case.call(headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        try:
            case.validate_response(response, checks=CHECKS)
        except Exception as error:  # schemathesis reports failures as exception groups
            failures.append((operation.label, str(error)[:600]))

    try:
        check()
    except Unsatisfiable:
        # An operation without parameters or body has no invalid request to generate.
        assert mode is GenerationMode.NEGATIVE, operation.label
