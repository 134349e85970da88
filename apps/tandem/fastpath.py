"""The OIP infer route as plain ASGI: `POST /v2/models/{model}[/versions/{version}]/infer`.

FastAPI's routing and per-request dependency machinery cost a small model's inference more than the model, the
decoding and the encoding together (bench/results/hotpath.md). The infer route needs none of it: it reads the raw
body (JSON without Content-Type, or Triton's binary tensors after a JSON header) and answers what the data plane
encodes. It sits inside the kit's middlewares, so the app token and the body limit apply as on every route;
anything else goes on to the FastAPI app, and an unexpected error reaches the app's 500 handler as from any route.
"""

import re
from typing import Any, ClassVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .dataplane import DataPlane
from .protocol import HEADER_LENGTH, InferenceError, error_body

# Path segments as FastAPI matches "{model}": anything but "/" (the path is already percent-decoded).
INFER_PATH = re.compile(r"/v2/models/(?P<model>[^/]+)(?:/versions/(?P<version>[^/]+))?/infer")
_HEADER_LENGTH = HEADER_LENGTH.encode()
JSON = "application/json"


def _operation(parameters: list[str]) -> dict[str, Any]:
    return {
        "post": {
            "tags": ["Open Inference Protocol v2"],
            "summary": "Infer",
            "description": "JSON (with or without Content-Type), or Triton's binary tensor extension: a JSON header of "
            "Inference-Header-Content-Length bytes followed by the tensors.",
            "operationId": "infer_" + "_".join(parameters),
            "parameters": [
                {"name": name, "in": "path", "required": True, "schema": {"type": "string", "title": name.title()}}
                for name in parameters
            ],
            "requestBody": {
                "required": True,
                "content": {JSON: {"schema": {"$ref": "#/components/schemas/InferenceRequest"}}},
            },
            "responses": {
                "200": {
                    "description": "The outputs",
                    "content": {JSON: {"schema": {"$ref": "#/components/schemas/InferenceResponse"}}},
                }
            },
        }
    }


class InferRoute:
    """Answers the infer paths itself; passes every other request to `app`."""

    openapi_paths: ClassVar[dict[str, Any]] = {
        "/v2/models/{model}/infer": _operation(["model"]),
        "/v2/models/{model}/versions/{version}/infer": _operation(["model", "version"]),
    }

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = INFER_PATH.fullmatch(scope["path"]) if scope["type"] == "http" else None
        if match is None:
            await self.app(scope, receive, send)
        elif scope["method"] != "POST":
            await send_answer(send, 405, error_body("Method Not Allowed"), {"content-type": JSON, "allow": "POST"})
        else:
            await _infer(scope["app"].state.dataplane, match["model"], match["version"], scope, receive, send)


async def _infer(
    dataplane: DataPlane, model: str, version: str | None, scope: Scope, receive: Receive, send: Send
) -> None:
    body = await read_body(receive)
    if body is None:
        return  # the client went away
    header_length = next((value.decode("latin-1") for name, value in scope["headers"] if name == _HEADER_LENGTH), None)
    try:
        content, headers = await dataplane.infer(model, version, body, header_length)
    except InferenceError as error:
        await send_answer(send, error.status_code, error_body(str(error)), {"content-type": JSON})
        return
    await send_answer(send, 200, content, headers)


async def read_body(receive: Receive) -> bytes | None:
    """The whole request body (BodyLimitMiddleware stops one over the limit), or None if the client disconnected."""
    chunks = []
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def send_answer(send: Send, status: int, body: bytes, headers: dict[str, str]) -> None:
    raw = [(name.encode(), value.encode()) for name, value in headers.items()]
    raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
