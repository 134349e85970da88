"""A small schemathesis run against every app's OpenAPI through its own sidecar, with the tokens, on the whole stack
(bench/fuzz.py is the large one): no 5xx, and status codes, content types and bodies as documented. Inputs are
schemathesis's: valid and invalid bodies, path and query parameters of every operation (examples and fuzzing
phases). Also what fuzzing found, each on its own: a method name with a control character, which daprd 1.18.2
answered with 500 (dapr/runtime/patches/invoke-invalid-method-400.patch)."""

import secrets
from pathlib import Path

import httpx
import pytest

from bench.fuzz import fuzz_app
from tests.integration.full_stack import APPS, FullStack, start_full_stack

from .stack import ROOT, Stack

pytestmark = pytest.mark.integration

KEY = secrets.token_urlsafe(24)


@pytest.fixture(scope="module")
def full(stack: Stack, model_repository: Path) -> FullStack:
    return start_full_stack(stack, model_repository, {"fuzz": KEY}, GATEWAY_RATE_LIMIT="0")


@pytest.mark.parametrize("app", APPS)
def test_schemathesis_finds_no_5xx_and_nothing_undocumented(full: FullStack, stack: Stack, app: str, tmp_path: Path):
    headers = {"dapr-api-token": stack.dapr_api_token}
    if app == "gateway":
        headers["Authorization"] = f"Bearer {KEY}"
    result = fuzz_app(full, app, headers, cases=40, seed=0, work=tmp_path, phases="examples,fuzzing")
    assert result["cases"] >= 40
    assert result["failures"] == {}, f"see {ROOT / '.data' / 'fuzz' / app}-*.txt"
    assert all(process.popen.poll() is None for process in full.apps.values())


def test_a_method_with_a_control_character_is_the_callers_400_not_a_500(full: FullStack, stack: Stack):
    headers = {"dapr-api-token": stack.dapr_api_token}
    for path in ("v2/models/%09/infer", "v2/models/a%00b", "predict/%7F"):
        answer = httpx.post(full.url("regression", path), headers=headers, json={})
        assert answer.status_code == 400, (path, answer.text)
        assert "invalid method" in answer.json()["message"]
