"""Schema-driven fuzzing: schemathesis generates requests for every operation in the service's
own OpenAPI document; no answer may be a 5xx or break the documented schema."""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from app.api.app import create_app
from tests.unit.hardening.env import make_settings

MAX_EXAMPLES = 40  # per operation: bounded for the normal test run


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, rsa_keys_dir: Path):  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("fuzz")
    return create_app(make_settings(tmp, rsa_keys_dir, audit_log=None))


@pytest.fixture(scope="module")
def loaded_schema(app):  # type: ignore[no-untyped-def]
    # Built by the app, not fetched: the service does not serve its schema.
    loaded = schemathesis.openapi.from_dict(app.openapi())
    loaded.app = app
    return loaded


def test_every_endpoint_is_in_the_schema(loaded_schema) -> None:  # type: ignore[no-untyped-def]
    paths = set(loaded_schema.raw_schema["paths"])
    assert {"/token", "/healthz", "/readyz", "/.well-known/jwks.json", "/metrics"} <= paths
    token = loaded_schema.raw_schema["paths"]["/token"]
    assert {p["name"] for p in token["get"]["parameters"]} >= {"service", "scope", "account"}
    assert "application/x-www-form-urlencoded" in token["post"]["requestBody"]["content"]


def test_no_5xx_and_no_schema_violation(loaded_schema) -> None:  # type: ignore[no-untyped-def]
    operations = [result.ok() for result in loaded_schema.get_all_operations()]
    assert len(operations) == 6  # GET+POST /token (here also the realm), health x2, keys, metrics
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        )
        def fuzz(case) -> None:  # type: ignore[no-untyped-def]
            # Every check but "schema-valid data is accepted": the scope grammar and the one
            # service name are not expressible in JSON Schema, so a schema-valid scope may
            # rightly get 400. 5xx, status codes, content types and bodies are all checked.
            case.call_and_validate(excluded_checks=[positive_data_acceptance])

        fuzz()
