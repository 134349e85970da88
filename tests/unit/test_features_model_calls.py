"""What features makes of the regression service's answers, its sidecar faked: only the model's verdict on the data
(400, 422) sends readings to the dead letters; an answer that may change (401 or 403 after a token or policy
change, 404 while a model is unloaded, 429, 5xx) is retried; a good answer gives one row per window."""

import asyncio
import json

import httpx
import numpy as np
import pytest

from features import main
from tandem.sidecar import Sidecar, SidecarError

ROWS = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)
ANSWER = {
    "model_name": "maintenance-rul",
    "model_version": "1",
    "outputs": [{"name": "rul", "datatype": "FP32", "shape": [2, 1], "data": [30.5, 12.0]}],
}


def sidecar_answering(status: int) -> Sidecar:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == f"/v1.0/invoke/{main.settings.regression_app}/method/v2/models/maintenance-rul/infer"
        sent = json.loads(request.content)["inputs"]
        assert sent == [{"name": "input", "datatype": "FP32", "shape": [2, 2], "data": [1.0, 2.0, 3.0, 4.0]}]
        return httpx.Response(status, json={"error": "no"} if status >= 300 else ANSWER)

    return Sidecar("http://sidecar", transport=httpx.MockTransport(handler))


@pytest.mark.parametrize("status", [400, 422])
def test_the_models_verdict_on_the_data_is_unprocessable(status: int):
    with pytest.raises(main.Unprocessable, match=f"refused the features: {status}"):
        asyncio.run(main.infer(sidecar_answering(status), "maintenance-rul", ROWS))


@pytest.mark.parametrize("status", [401, 403, 404, 429, 500, 503])
def test_answers_that_may_change_are_retried(status: int):
    with pytest.raises(SidecarError) as raised:
        asyncio.run(main.infer(sidecar_answering(status), "maintenance-rul", ROWS))
    assert raised.value.status == status


def test_a_good_answer_gives_each_output_shaped_one_row_per_window():
    outputs, model = asyncio.run(main.infer(sidecar_answering(200), "maintenance-rul", ROWS))
    assert model == "maintenance-rul/1"
    assert outputs["rul"].tolist() == [[30.5], [12.0]]
