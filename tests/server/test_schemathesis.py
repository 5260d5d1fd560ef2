"""Property-based fuzzing of every route in /openapi.json: no input may cause a 5xx.

Slow (run by `make fuzz-api`); drives a tiny-model server with a short context. The schema is the app's own
OpenAPI document (built without a server, so collection needs none); the test also checks that
the server serves the same document.
"""

from __future__ import annotations

from collections import Counter

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from server_helpers import API_KEY, ServerProc, start_server

from arborlm.runtime.server.http_server import ServerState, create_app

pytestmark = pytest.mark.slow
HEADERS = {"Authorization": f"Bearer {API_KEY}"}
OPENAPI = create_app(ServerState(tm=None, model_name="m", model_info={}, server_args={})).openapi()  # type: ignore[arg-type]
schema = schemathesis.openapi.from_dict(OPENAPI)
STATUSES: Counter[tuple[str, int]] = Counter()  # (operation, status) -> calls: printed at the end (-s)


@pytest.fixture(scope="module")
def fuzz_server(tiny_model_path: str, tmp_path_factory: pytest.TempPathFactory):
    """A short context bounds every generation the fuzzer asks for (it rarely sets max_tokens)."""
    srv = start_server(tiny_model_path, tmp_path_factory.mktemp("fuzz"), "--max-total-tokens", "4096",
                       "--max-context-len", "256", api_key=API_KEY)
    yield srv
    srv.stop()
    if STATUSES:
        print("\nschemathesis: " + ", ".join(f"{op} {st}×{n}" for (op, st), n in sorted(STATUSES.items())))


def test_served_schema_matches(fuzz_server: ServerProc) -> None:
    served = httpx.get(f"{fuzz_server.url}/openapi.json", headers=HEADERS).json()
    assert sorted(served["paths"]) == sorted(OPENAPI["paths"])


@schema.parametrize()
@settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_no_server_errors(case, fuzz_server: ServerProc) -> None:
    response = case.call_and_validate(base_url=fuzz_server.url, headers=HEADERS,
                                      checks=[schemathesis.checks.not_a_server_error], timeout=300)
    STATUSES[(f"{case.method} {case.path}", response.status_code)] += 1
