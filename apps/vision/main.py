"""The vision service: digits, faces, OCR and the open_nsfw CNN over the Open Inference Protocol v2
(images as BYTES tensors), and an image file in, JSON out, for people."""

import json
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from pydantic_settings import SettingsConfigDict

from tandem.card import ModelCard
from tandem.server import make_app
from tandem.settings import ServiceSettings


class VisionSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="VISION_", extra="ignore")

    port: int = 8001
    max_body_bytes: int = 16 * 1024 * 1024


settings = VisionSettings()
router = APIRouter(tags=["Images for people"])
IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "content": {"image/*": {"schema": {"type": "string", "format": "binary"}}},
        "description": "a PNG, JPEG, WebP or BMP file: curl --data-binary @photo.jpg",
    }
}


async def predict_image(request: Request, model: str) -> tuple[ModelCard, dict[str, np.ndarray]]:
    """The model's card and its outputs for the one image in the request body."""
    body = await request.body()  # within settings.max_body_bytes: the kit refuses larger ones with 413
    image = np.empty(1, dtype=object)
    image[0] = body
    served, results = await request.app.state.dataplane.predict(model, {"image": image})
    return served.card, results


def _probabilities(labels: list[str], row: np.ndarray) -> dict[str, float]:
    return {str(label): round(float(p), 6) for label, p in zip(labels, row, strict=True)}


@router.post("/digits", openapi_extra=IMAGE_BODY)
async def digits(request: Request) -> dict[str, Any]:
    """The digit in the image (0-9) and the probability of each."""
    card, results = await predict_image(request, "digits")
    return {
        "label": int(results["label"][0]),
        "probabilities": _probabilities(card.labels or [], results["probabilities"][0]),
    }


@router.post("/faces", openapi_extra=IMAGE_BODY)
async def faces(request: Request) -> dict[str, Any]:
    """The frontal faces in the image, as boxes in pixels."""
    _, results = await predict_image(request, "faces")
    return {"count": int(results["count"][0]), "faces": json.loads(results["boxes"][0])}


@router.post("/ocr", openapi_extra=IMAGE_BODY)
async def ocr(request: Request) -> dict[str, Any]:
    """The text in the image, and each line with its box and confidence."""
    _, results = await predict_image(request, "ocr")
    return {"text": results["text"][0], "lines": json.loads(results["lines"][0])}


@router.post("/nsfw", openapi_extra=IMAGE_BODY)
async def nsfw(request: Request) -> dict[str, Any]:
    """Whether the image is safe for work, by the open_nsfw CNN."""
    card, results = await predict_image(request, "nsfw")
    probabilities = _probabilities(card.labels or [], results["probabilities"][0])
    return {"label": max(probabilities, key=lambda label: probabilities[label]), "probabilities": probabilities}


app = make_app("vision", settings, routers=(router,))
