"""`POST /predict/{model}` for people, for any model: rows of named features or texts in plain JSON in, one result
per row or text out, through the data plane like every inference."""

import json
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Body, Request
from pydantic import BaseModel, Field, model_validator

from .card import ModelCard, TensorCard
from .protocol import InferenceError
from .settings import ServiceSettings


def people_router(settings: ServiceSettings, example: dict[str, Any] | None = None) -> APIRouter:
    """The route, with at most `settings.max_rows` rows or texts a request."""

    class PredictRequest(BaseModel):
        rows: Annotated[list[dict[str, float]] | None, Field(min_length=1, max_length=settings.max_rows)] = Field(
            None, description="for tables: one {feature: value} per row, the features the model's card names"
        )
        texts: Annotated[list[str] | None, Field(min_length=1, max_length=settings.max_rows)] = Field(
            None, description="for text models (one BYTES input): one text each"
        )

        @model_validator(mode="after")
        def _one_of_them(self) -> "PredictRequest":
            if (self.rows is None) == (self.texts is None):
                raise ValueError('give either "rows" or "texts"')
            return self

    router = APIRouter(tags=["Models for people"])
    examples = [example] if example else [{"texts": ["I love this phone."]}]

    @router.post("/predict/{model}")
    async def predict(
        request: Request, model: str, body: Annotated[PredictRequest, Body(examples=examples)]
    ) -> dict[str, Any]:
        """One prediction per row or text: rows of named features (GET /v2/models/{model} and the card list them),
        or texts for a model whose one input is text."""
        dataplane = request.app.state.dataplane
        card = dataplane.card(model)
        spec = card.inputs[0]
        if body.rows is not None:
            inputs, count = {spec.name: table(card, body.rows)}, len(body.rows)
        else:
            inputs, count = {text_input(card).name: np.array(body.texts, dtype=object)}, len(body.texts or [])
        served, results = await dataplane.predict(model, inputs)
        outputs = {tensor.name: tensor for tensor in served.card.outputs}
        return {
            "model": served.name,
            "version": served.version,
            "predictions": [
                {name: plain(array[index], outputs.get(name)) for name, array in results.items()}
                for index in range(count)
            ],
        }

    return router


def table(card: ModelCard, rows: list[dict[str, float]]) -> np.ndarray:
    """Rows of named features as the model's [rows, features] FP32 input, in the card's feature order."""
    features = card.inputs[0].features
    if len(card.inputs) != 1 or features is None:
        raise InferenceError(
            f"model '{card.name}' names no features in its card: call POST /v2/models/{card.name}/infer"
        )
    for index, row in enumerate(rows):
        missing, unknown = set(features) - row.keys(), row.keys() - set(features)
        if missing or unknown:
            raise InferenceError(f"rows[{index}]: missing features {sorted(missing)}, unknown {sorted(unknown)}")
    return np.array([[row[name] for name in features] for row in rows], dtype=np.float32)


def text_input(card: ModelCard) -> TensorCard:
    if len(card.inputs) != 1 or card.inputs[0].datatype != "BYTES":
        raise InferenceError(
            f"model '{card.name}' does not take one text input: call POST /v2/models/{card.name}/infer"
        )
    return card.inputs[0]


def plain(value: np.ndarray, spec: TensorCard | None) -> Any:
    """One row of an output as JSON: a scalar when the row holds one value; text that is JSON, decoded."""
    value = np.asarray(value)
    if value.size != 1:
        return value.tolist()
    item = value.item()
    if isinstance(item, bytes):
        item = item.decode("utf-8", errors="replace")
    if isinstance(item, str) and spec is not None and spec.content.startswith("JSON"):
        return json.loads(item)
    return item
