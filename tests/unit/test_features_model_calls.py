"""What features makes of the regression service's answers, its sidecar faked: only the model's verdict on the data
(400, 422) sends readings to the dead letters; an answer that may change (401 or 403 after a token or policy
change, 404 while a model is unloaded, 429, 5xx) is retried; a good answer gives one row per window. The rows go
as binary tensors, and the answer comes back so."""

import asyncio

import httpx
import numpy as np
import pytest

from features import main
from tandem.protocol import HEADER_LENGTH, decode_request, encode_response
from tandem.sidecar import Sidecar, SidecarError

ROWS = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)


def sidecar_answering(status: int) -> Sidecar:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == f"/v1.0/invoke/{main.settings.regression_app}/method/v2/models/maintenance-rul/infer"
        _, sent = decode_request(request.content, request.headers.get(HEADER_LENGTH))
        assert list(sent) == ["input"] and sent["input"].dtype == np.float32
        assert sent["input"].tolist() == ROWS.tolist()
        if status >= 300:
            return httpx.Response(status, json={"error": "no"})
        body, headers = encode_response(
            "maintenance-rul", "1", None, {"rul": np.array([[30.5], [12.0]], np.float32)}, {"rul"}
        )
        return httpx.Response(status, content=body, headers=headers)

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
