"""The one place requests meet models: look-up, readiness, decode -> predict -> encode, load/unload.

Every inference goes through here (OIP infer and the routes for people alike), so `tandem_inference_*` counts all
of it, refused requests and unknown models included.
"""

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .card import ModelCard
from .metrics import inference_seconds, inferences
from .protocol import InferenceError, InferenceRequest, binary_outputs, decode_request, encode_response
from .repository import Model, ModelRepository

EXTENSIONS = ["binary_tensor_data", "model_repository"]


def _outcome(error: InferenceError) -> str:
    return {404: "not_found", 503: "unavailable"}.get(error.status_code, "bad_request")


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

    def card(self, name: str, version: str | None = None) -> ModelCard:
        """The card of a model a route for people is about to run (an unknown model is counted as its inference)."""
        return self._model(name, version).card

    def _model(self, name: str, version: str | None) -> Model:
        try:
            return self.repository.get(name, version)
        except InferenceError as error:
            # Names and versions no model has are counted together: a client must not be able to mint metric series.
            versions = {**self.repository.models.get(name, {}), **self.repository.failures.get(name, {})}
            known = name in self.repository.models or name in self.repository.failures
            inferences(name if known else "", version if version in versions else "", _outcome(error)).inc()
            raise

    async def infer(
        self, name: str, version: str | None, body: bytes, header_length: str | None = None
    ) -> tuple[bytes, dict[str, str]]:
        """Runs one OIP request; returns the response body and its headers (JSON or binary)."""
        decoded: list[InferenceRequest] = []

        def decode() -> tuple[dict[str, np.ndarray], list[str] | None]:
            request, inputs = decode_request(body, header_length)
            decoded.append(request)
            return inputs, [output.name for output in request.outputs] if request.outputs else None

        model, results = await self.run(name, version, decode)
        request = decoded[0]
        return encode_response(model.name, model.version, request.id, results, binary_outputs(request, list(results)))

    async def run(
        self, name: str, version: str | None, decode: Callable[[], tuple[dict[str, np.ndarray], list[str] | None]]
    ) -> tuple[Model, dict[str, np.ndarray]]:
        """Finds the model, then `decode()`s the request into its inputs and the outputs wanted (None: all) and runs
        it, counting the outcome: what every transport (REST, gRPC) does between reading a request and writing the
        answer."""
        model = self._model(name, version)
        started = time.perf_counter()
        try:
            inputs, wanted = decode()
            results = await model.predict(inputs, wanted)
        except InferenceError as error:
            inferences(model.name, model.version, _outcome(error)).inc()
            raise
        inferences(model.name, model.version, "ok").inc()
        inference_seconds(model.name, model.version).observe(time.perf_counter() - started)
        return model, results

    async def predict(
        self, name: str, inputs: dict[str, np.ndarray], outputs: list[str] | None = None, version: str | None = None
    ) -> tuple[Model, dict[str, np.ndarray]]:
        """The model version that ran and its outputs, for arrays already decoded: what the routes for people call."""
        return await self.run(name, version, lambda: (inputs, outputs))

    def index(self, ready_only: bool = False) -> list[dict[str, Any]]:
        return [entry for entry in self.repository.index() if not ready_only or entry["state"] == "READY"]

    async def load(self, name: str) -> None:
        await self.repository.load(name)

    async def unload(self, name: str) -> None:
        await self.repository.unload(name)
