"""The models steps call: which service owns each (the services' repository indexes, read through the sidecar),
their OIP metadata, and inference through the sidecar's invocation API.

The calls go through `tandem.upstream` rather than the kit's httpx client: a pipeline makes one per step, and that
client costs a fraction of the CPU (its module says how much).
"""

import asyncio
import json
import time
from typing import Any

import numpy as np

from tandem.protocol import HEADER_LENGTH, InferenceError, decode_response, encode_request
from tandem.upstream import Upstream, UpstreamError

# An unknown model makes the indexes be read again, at most this often.
UNKNOWN_MODEL_REFRESH_SECONDS = 1.0


class StepCallError(Exception):
    """A model call failed. `retryable`: it may pass if tried again (unavailable, timeout, 429, 5xx)."""

    def __init__(self, message: str, status: int, retryable: bool):
        super().__init__(message)
        self.status = status
        self.retryable = retryable


class ModelCatalog:
    def __init__(self, sidecar_url: str, api_token: str, services: list[str], max_connections: int = 100):
        self.services = services
        self.upstream = Upstream.invoke_api(sidecar_url, api_token, max_connections)
        self.owners: dict[str, str] = {}
        self.index_errors: dict[str, str] = {service: "index not read yet" for service in services}
        self.refreshed_at = -float("inf")
        self.reading: asyncio.Future[None] | None = None

    async def aclose(self) -> None:
        await self.upstream.aclose()

    async def refresh(self) -> None:
        """Reads every service's repository index again (callers arriving meanwhile join the read under way)."""
        if self.reading is None or self.reading.done():
            self.refreshed_at = time.monotonic()
            self.reading = asyncio.ensure_future(self._read_indexes())
        await asyncio.shield(self.reading)

    async def _read_indexes(self) -> None:
        indexes = await asyncio.gather(*(self._read_index(service) for service in self.services))
        owners: dict[str, str] = {}
        for service, entries in zip(self.services, indexes, strict=True):
            for entry in entries or []:
                owners.setdefault(entry["name"], service)
        # A service that could not be read keeps the models it had: they answer "unavailable", not "unknown".
        for model, service in self.owners.items():
            if self.index_errors.get(service):
                owners.setdefault(model, service)
        self.owners = owners

    async def _read_index(self, service: str) -> list[dict[str, Any]] | None:
        try:
            answer = await self.upstream.request(
                "POST", f"/{service}/method/v2/repository/index", {"content-type": "application/json"}, b"{}", 5
            )
            status, body = answer.status, answer.body
        except (UpstreamError, TimeoutError) as error:
            self.index_errors[service] = f"not reachable through the sidecar ({error or type(error).__name__})"
            return None
        if status != 200:
            self.index_errors[service] = f"repository index answered {status}: {body[:200].decode(errors='replace')}"
            return None
        self.index_errors[service] = ""
        return json.loads(body)

    async def owner(self, model: str) -> str:
        if model not in self.owners and time.monotonic() - self.refreshed_at > UNKNOWN_MODEL_REFRESH_SECONDS:
            await self.refresh()
        elif self.reading is not None and not self.reading.done():
            await asyncio.shield(self.reading)
        service = self.owners.get(model)
        if service is None:
            problems = "; ".join(f"{name}: {why}" for name, why in self.index_errors.items() if why)
            raise StepCallError(
                f"model '{model}' is served by none of {self.services}" + (f" ({problems})" if problems else ""),
                503,
                retryable=bool(problems),
            )
        return service

    @staticmethod
    def _path(model: str, version: str | None) -> str:
        return f"v2/models/{model}" + (f"/versions/{version}" if version else "")

    async def metadata(self, model: str, version: str | None = None) -> dict[str, Any]:
        """The model's OIP metadata, from the service that owns it."""
        service = await self.owner(model)
        status, body, _ = await self._request("GET", service, self._path(model, version), None, {}, 5.0)
        if status != 200:
            raise StepCallError(
                f"metadata of model '{model}' from {service}: {status}: {body[:300].decode(errors='replace')}",
                status,
                retryable=status in (404, 429) or status >= 500,  # 404: not loaded yet
            )
        return json.loads(body)

    async def infer(
        self,
        model: str,
        version: str | None,
        inputs: dict[str, np.ndarray],
        timeout: float,
        headers: dict[str, str] | None = None,
    ) -> dict[str, np.ndarray]:
        """The model's outputs for `inputs` (binary tensors both ways), or StepCallError."""
        service = await self.owner(model)
        body, body_headers = encode_request(inputs)
        status, answer, answer_headers = await self._request(
            "POST", service, f"{self._path(model, version)}/infer", body, {**(headers or {}), **body_headers}, timeout
        )
        if status != 200:
            text = answer[:500].decode(errors="replace")
            try:
                text = json.loads(answer).get("error") or json.loads(answer).get("message") or text
            except (ValueError, AttributeError):
                pass
            # The model refused what it was given (the client's data, passed on): the caller's 4xx; not found or
            # unavailable: the service's trouble.
            retryable = status == 429 or status >= 500
            status = 400 if status in (400, 413, 422) else 503 if status == 404 else status
            raise StepCallError(f"{service} answered: {text}", status, retryable)
        try:
            _, outputs = decode_response(answer, answer_headers.get(HEADER_LENGTH))
        except InferenceError as error:
            raise StepCallError(f"{service} answered what is not an inference response: {error}", 502, False) from None
        return outputs

    async def _request(
        self, method: str, service: str, path: str, body: bytes | None, headers: dict[str, str], timeout: float
    ) -> tuple[int, bytes, dict[str, str]]:
        try:
            answer = await self.upstream.request(method, f"/{service}/method/{path}", headers, body or b"", timeout)
        except TimeoutError:
            raise StepCallError(f"no answer from {service} within {timeout:g} s", 504, retryable=True) from None
        except UpstreamError as error:
            raise StepCallError(f"the pipelines sidecar could not be reached: {error}", 503, retryable=True) from None
        return answer.status, answer.body, answer.headers
