"""The one place requests meet models: look-up, readiness, decode -> predict -> encode, load/unload."""

import time
from typing import Any

import numpy as np

from .metrics import INFERENCE_SECONDS, INFERENCES
from .protocol import InferenceError, InferenceResponse, binary_outputs, decode_request, encode_response
from .repository import ModelRepository

EXTENSIONS = ["binary_tensor_data", "model_repository"]


class DataPlane:
    def __init__(self, repository: ModelRepository, server_name: str, server_version: str):
        self.repository = repository
        self.server_name = server_name
        self.server_version = server_version

    def server_metadata(self) -> dict[str, Any]:
        return {"name": self.server_name, "version": self.server_version, "extensions": EXTENSIONS}

    def model_metadata(self, name: str, version: str | None = None) -> dict[str, Any]:
        return self.repository.get(name, version).metadata(self.repository.versions(name))

    def model_ready(self, name: str, version: str | None = None) -> bool:
        self.repository.get(name, version)
        return True

    async def infer(
        self, name: str, version: str | None, body: bytes, header_length: str | None = None
    ) -> tuple[bytes, dict[str, str]]:
        """Runs one OIP request; returns the response body and its headers (JSON or binary)."""
        model = self.repository.get(name, version)
        started = time.perf_counter()
        try:
            request, inputs = decode_request(body, header_length)
            wanted = [output.name for output in request.outputs] if request.outputs else None
            results = await model.predict(inputs, wanted)
        except InferenceError:
            INFERENCES.labels(model.name, model.version, "bad_request").inc()
            raise
        response = InferenceResponse(model_name=model.name, model_version=model.version, id=request.id, outputs=[])
        encoded = encode_response(response, results, binary_outputs(request, list(results)))
        INFERENCES.labels(model.name, model.version, "ok").inc()
        INFERENCE_SECONDS.labels(model.name, model.version).observe(time.perf_counter() - started)
        return encoded

    async def predict(
        self, name: str, inputs: dict[str, np.ndarray], outputs: list[str] | None = None, version: str | None = None
    ) -> dict[str, np.ndarray]:
        """A model's outputs for arrays already decoded: what the routes for people call."""
        return await self.repository.get(name, version).predict(inputs, outputs)

    def index(self, ready_only: bool = False) -> list[dict[str, Any]]:
        return [entry for entry in self.repository.index() if not ready_only or entry["state"] == "READY"]

    async def load(self, name: str) -> None:
        await self.repository.load(name)

    async def unload(self, name: str) -> None:
        await self.repository.unload(name)
