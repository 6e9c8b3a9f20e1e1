"""A schemathesis run of the API's own OpenAPI document against the real `refunds api`
process: for every operation, generated valid and invalid requests (a capped number each);
no answer is a 5xx, every answer is documented and matches its schema, and invalid requests
never reach a simulator (the journals are unchanged)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.result import Err

from core.models import ProviderName
from tests.api.conftest import ApiStack

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

EXAMPLES = 25
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def fuzz(api_url: str, headers: dict[str, str], mode: GenerationMode, methods: set[str]) -> int:
    """Run every operation with ``methods`` in ``mode``; the number of requests sent."""
    schema = schemathesis.openapi.from_url(f"{api_url}/openapi.json")
    sent = 0
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            raise result.err()
        operation = result.ok()
        if operation.method.upper() not in methods:
            continue

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            nonlocal sent
            response = case.call(headers=headers, timeout=30)
            sent += 1
            case.validate_response(response, checks=CHECKS)

        try:
            run()
        except Unsatisfiable:
            # Nothing to make invalid (no parameters, no body): /healthz, /readyz.
            assert mode is GenerationMode.NEGATIVE, operation.label
    return sent


async def test_fuzzed_requests_get_documented_answers_and_reach_no_provider(
    api_stack: ApiStack,
) -> None:
    journals = {provider: await api_stack.journal(provider) for provider in ProviderName}
    headers = api_stack.auth("operator")
    # Invalid input to every operation, valid input to the ones that start nothing (the
    # fuzzed keys name no refund, so cancel and resolve answer 404 or 422).
    sent = await asyncio.to_thread(
        fuzz, api_stack.api_url, headers, GenerationMode.NEGATIVE, {"GET", "POST"}
    )
    sent += await asyncio.to_thread(
        fuzz, api_stack.api_url, headers, GenerationMode.POSITIVE, {"GET"}
    )
    assert sent > 100
    for provider in ProviderName:
        before, after = journals[provider], await api_stack.journal(provider)
        assert after["requests"][: len(before["requests"])] == before["requests"]
        # Refunds of earlier tests may still be running: every call after the fuzz run must
        # be about a payment those refunds name, or a refund made for one of them.
        payments = {refund["payment_id"] for refund in after["refunds"]}
        known = {request["path"] for request in before["requests"]}
        made = [r for r in after["refunds"] if r not in before["refunds"]]
        for refund in made:
            assert any(refund["payment_id"] in path for path in known), refund
        ids = payments | {refund["refund_id"] for refund in after["refunds"]}
        for request in after["requests"][len(before["requests"]) :]:
            assert any(known_id in request["path"] for known_id in ids), request
