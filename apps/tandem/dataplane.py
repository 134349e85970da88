"""The one place requests meet models: look-up, readiness, decode -> predict -> encode."""

import time
from typing import Any

from .metrics import INFERENCE_SECONDS, INFERENCES
from .protocol import InferenceError, InferenceRequest, InferenceResponse, decode_input, encode_output
from .repository import ModelRepository


class DataPlane:
    def __init__(self, repository: ModelRepository, server_name: str, server_version: str):
        self.repository = repository
        self.server_name = server_name
        self.server_version = server_version

    def server_metadata(self) -> dict[str, Any]:
        return {"name": self.server_name, "version": self.server_version, "extensions": []}

    def model_metadata(self, name: str, version: str | None = None) -> dict[str, Any]:
        return self.repository.get(name, version).metadata(self.repository.versions(name))

    def model_ready(self, name: str, version: str | None = None) -> bool:
        self.repository.get(name, version)
        return True

    def infer(self, name: str, version: str | None, request: InferenceRequest) -> InferenceResponse:
        model = self.repository.get(name, version)
        started = time.perf_counter()
        try:
            inputs: dict = {}
            for tensor in request.inputs:
                if tensor.name in inputs:
                    raise InferenceError(f"input '{tensor.name}' is given twice")
                inputs[tensor.name] = decode_input(tensor)
            wanted = [output.name for output in request.outputs] if request.outputs else None
            results = model.runtime.predict(inputs, wanted)
            response = InferenceResponse(
                model_name=model.name,
                model_version=model.version,
                id=request.id,
                outputs=[encode_output(out_name, array) for out_name, array in results.items()],
            )
        except InferenceError:
            INFERENCES.labels(model.name, model.version, "bad_request").inc()
            raise
        INFERENCES.labels(model.name, model.version, "ok").inc()
        INFERENCE_SECONDS.labels(model.name, model.version).observe(time.perf_counter() - started)
        return response
