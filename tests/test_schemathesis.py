"""Schemathesis against /openapi.json with every check: the plain ASGI control plane over real
Redis and PostgreSQL answers only what its schema documents, and accepts what it documents."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.specs.openapi.checks import positive_data_acceptance

from neo_ray.config import Mode, Settings
from neo_ray.control import api
from neo_ray.control.wiring import control_state

TOKEN = "schema-test-token-" + uuid.uuid4().hex
APP = api.create_app()
SCHEMA = schemathesis.openapi.from_asgi("/openapi.json", APP)
OPERATIONS = {op.label: op for op in (r.ok() for r in SCHEMA.get_all_operations())}
load_all_checks()
ALL_CHECKS = CHECKS.get_all()


def takes_input(label: str) -> bool:
    operation = OPERATIONS[label]
    return bool(list(operation.iter_parameters())) or bool(operation.body)


def takes_repo_url(label: str) -> bool:
    """Whether a repository URL is among the inputs: one the schema cannot judge. Which hosts
    are allowed and which addresses are refused (SSRF rules) is the server's policy, so a
    schema-valid URL may be refused with the documented 400; every other check still runs."""
    operation = OPERATIONS[label]
    names = {p.name for p in operation.iter_parameters()}
    body = str(operation.definition.raw.get("requestBody", ""))
    return "repo_url" in names or "ImpactRequest" in body


CASES = [
    (label, mode)
    for label in sorted(OPERATIONS)
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode is GenerationMode.POSITIVE or takes_input(label)
]


@pytest.fixture(scope="module")
def live_app(redis_url: str, database_url: str) -> Iterator[None]:
    """The cloud control plane (plain ASGI routes) over a real Redis queue and PostgreSQL."""
    chosen = Settings(
        mode=Mode.CLOUD,
        admin_token=SecretStr(TOKEN),
        redis_url=redis_url,
        redis_prefix=f"schema-{uuid.uuid4().hex[:8]}:",
        database_url=database_url,
        max_queue_size=5,
    )
    state = control_state(chosen)
    api.configure(state, APP)
    try:
        yield
    finally:
        state.broker.close()


@pytest.mark.parametrize(("label", "mode"), CASES)
def test_every_answer_is_documented(live_app: None, label: str, mode: GenerationMode) -> None:
    operation = OPERATIONS[label]
    excluded = [positive_data_acceptance] if takes_repo_url(label) else []

    @given(case=operation.as_strategy(mode), authorized=st.booleans())
    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    def run(case: schemathesis.Case, authorized: bool) -> None:
        # Some examples carry the admin token, so the accepting paths are reached too.
        headers = {"Authorization": f"Bearer {TOKEN}"} if authorized else None
        case.call_and_validate(headers=headers, checks=ALL_CHECKS, excluded_checks=excluded)

    run()
