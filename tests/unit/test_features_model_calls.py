"""What features makes of the regression service's answers, its sidecar faked: only the model's verdict on the data
(400, 422) sends a reading to the dead letters; an answer that may change (401 or 403 after a token or policy
change, 404 while a model is unloaded, 429, 5xx) is retried."""

import asyncio

import httpx
import pytest

from features import main
from tandem.sidecar import Sidecar, SidecarError

ROWS = {"rows": [{"feature": 1.0}]}


def sidecar_answering(status: int) -> Sidecar:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == f"/v1.0/invoke/{main.settings.regression_app}/method/predict/maintenance-rul"
        return httpx.Response(status, json={"error": "no"} if status >= 300 else {"predictions": [{"rul": 3.0}]})

    return Sidecar("http://sidecar", transport=httpx.MockTransport(handler))


@pytest.mark.parametrize("status", [400, 422])
def test_the_models_verdict_on_the_data_is_unprocessable(status: int):
    with pytest.raises(main.Unprocessable, match=f"refused the features: {status}"):
        asyncio.run(main.invoke_model(sidecar_answering(status), "maintenance-rul", ROWS))


@pytest.mark.parametrize("status", [401, 403, 404, 429, 500, 503])
def test_answers_that_may_change_are_retried(status: int):
    with pytest.raises(SidecarError) as raised:
        asyncio.run(main.invoke_model(sidecar_answering(status), "maintenance-rul", ROWS))
    assert raised.value.status == status


def test_a_good_answer_is_returned():
    answer = asyncio.run(main.invoke_model(sidecar_answering(200), "maintenance-rul", ROWS))
    assert answer == {"predictions": [{"rul": 3.0}]}
