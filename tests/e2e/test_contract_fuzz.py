"""Contract fuzzing: Schemathesis generates requests from functions/openapi.yaml and sends them through
the local gateway. No 5xx, every response as documented, every error an RFC 9457 problem.

`make test` runs a few examples per operation (FUZZ_EXAMPLES); `make fuzz` runs 100.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import ignored_auth, negative_data_rejection, positive_data_acceptance

SPEC = Path(__file__).resolve().parents[2] / "functions" / "openapi.yaml"
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "5"))
# A request that matches the schema may still be refused for what no schema can say: an opaque
# page token or state that this server did not issue, a control character in free text.
# Those refusals are 4xx problems, which the other checks hold to the contract.
EXCLUDED = [positive_data_acceptance]

schema = schemathesis.openapi.from_path(SPEC)

pytestmark = pytest.mark.usefixtures("running_stack")


def problem_documents(ctx, response, case) -> bool | None:
    """Every error is an RFC 9457 problem document."""
    if response.status_code >= 400:
        content_type = response.headers.get("content-type", [""])
        content_type = content_type[0] if isinstance(content_type, list) else content_type
        assert content_type.startswith("application/problem+json"), f"{response.status_code} with {content_type}"
        body = response.json()
        assert body["status"] == response.status_code
        assert body["type"].startswith("urn:orderpally:problem:")
    return None


@schema.parametrize()
@settings(max_examples=EXAMPLES, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
def test_anonymous_callers_get_documented_answers(case, running_stack):
    response = case.call(base_url=running_stack.gateway_url, timeout=30)
    case.validate_response(response, additional_checks=[problem_documents], excluded_checks=EXCLUDED)


_CREDENTIALS: dict[str, dict[str, str]] = {}


def _customer_credentials(operation: str) -> dict[str, str]:
    """One customer per operation, made at its first example: an operation's examples share it."""
    if operation in _CREDENTIALS:
        return _CREDENTIALS[operation]
    from datetime import UTC, datetime, timedelta

    from orderpally import clients
    from orderpally.access import api_keys
    from orderpally.config import settings
    from support.identities import browser_headers, create_customer

    customer = create_customer()
    now = datetime.now(UTC)
    _, key = api_keys.create(
        clients.firestore_client(),
        customer.uid,
        "fuzz",
        list(api_keys.SCOPES),
        now + timedelta(days=1),
        settings().secret("API_KEY_PEPPER"),
        now,
    )
    _CREDENTIALS[operation] = {**browser_headers(customer), "Authorization": f"Bearer {key}"}
    return _CREDENTIALS[operation]


@schema.parametrize()
@settings(max_examples=EXAMPLES, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
def test_signed_in_callers_get_documented_answers(case, running_stack):
    # One customer per operation, with a browser session and an API key of every scope; an
    # Authorization header wins over the cookie, so each example picks one of the two.
    operation = f"{case.method} {case.path}"
    credentials = _customer_credentials(operation)
    use_key = zlib.crc32(operation.encode()) % 2 == 0  # the same split every run
    headers = {k: v for k, v in credentials.items() if (k == "Authorization") == use_key or k == "Origin"}
    response = case.call(base_url=running_stack.gateway_url, headers=headers, timeout=30)
    # The caller's real credentials replace whatever Schemathesis generated for the security
    # schemes, so its checks of generated (and deliberately missing) credentials do not apply
    # here; the anonymous run above holds every route to them.
    own_auth = [ignored_auth, negative_data_rejection] if case.operation.security else []
    case.validate_response(response, additional_checks=[problem_documents], excluded_checks=EXCLUDED + own_auth)
