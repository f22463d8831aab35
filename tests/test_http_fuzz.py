"""Schemathesis over our own /openapi.json against a real server on the simulator: neither
inputs that fit the schema nor inputs that break it may give a 5xx."""

from __future__ import annotations

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode

from http_server import serving
from support import sim_settings
from threatintel.http_api import build_app
from threatintel.simulator import SimulatorServer

TOKEN = "fuzz-token-91c2"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: Examples per mode over all operations: enough to reach each one many times, under ~20 s.
EXAMPLES = 250


@pytest.mark.timeout(90)
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_generated_request_is_a_server_error(sim: SimulatorServer, mode: GenerationMode) -> None:
    """Every operation, with generated valid and invalid inputs (fixed seed), answers below
    500: bad input is always the caller's 4xx."""
    settings = sim_settings(
        sim,
        cache_backend="memory",
        threatintel_api_token=TOKEN,
        api_rate_limit=0,
        api_max_indicators=20,  # keeps generated analyses small (the cap answers 413)
    )
    with serving(build_app(settings)) as url:
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json", headers=AUTH)
        operations = {
            (op.method.upper(), op.path)
            for result in schema.get_all_operations()
            for op in [result.ok()]
        }
        assert len(operations) == 10
        seen: set[tuple[str, str]] = set()

        @hypothesis.seed(20261206)
        @hypothesis.settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @hypothesis.given(case=schema.as_strategy(mode))
        def call(case: schemathesis.Case) -> None:
            seen.add((case.method.upper(), case.operation.path))
            case.call_and_validate(headers=AUTH, checks=[not_a_server_error], timeout=30)

        call()
    # Operations without any input have no invalid form: the negative run skips them.
    expected = (
        operations
        if mode == GenerationMode.POSITIVE
        else {op for op in operations if op[1].startswith("/api/")}
    )
    assert seen >= expected, f"never generated: {expected - seen}"
