"""The regression service: tabular models over the Open Inference Protocol v2, and rows of named
features in plain JSON for people."""

from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Body, Request
from pydantic import BaseModel, Field
from pydantic_settings import SettingsConfigDict

from tandem.protocol import InferenceError
from tandem.server import make_app
from tandem.settings import ServiceSettings


class RegressionSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="REGRESSION_", extra="ignore")

    port: int = 8003
    max_rows: int = 1000


settings = RegressionSettings()


class Rows(BaseModel):
    rows: Annotated[list[dict[str, float]], Field(min_length=1, max_length=settings.max_rows)]


router = APIRouter(tags=["Tabular models for people"])
EXAMPLE = {
    "rows": [
        {
            "age": 0.04,
            "sex": 0.05,
            "bmi": 0.06,
            "bp": 0.02,
            "s1": -0.04,
            "s2": -0.03,
            "s3": -0.04,
            "s4": 0.0,
            "s5": 0.02,
            "s6": -0.02,
        }
    ]
}


@router.post("/predict/{model}")
async def predict(request: Request, model: str, body: Annotated[Rows, Body(examples=[EXAMPLE])]) -> dict[str, Any]:
    """Predictions for rows of named features (the model card lists them: GET /v2/models/{model})."""
    dataplane = request.app.state.dataplane
    spec = dataplane.card(model).inputs[0]
    features = spec.features
    if features is None:
        raise InferenceError(f"model '{model}' names no features in its card: call POST /v2/models/{model}/infer")
    for index, row in enumerate(body.rows):
        missing, unknown = set(features) - row.keys(), row.keys() - set(features)
        if missing or unknown:
            raise InferenceError(f"rows[{index}]: missing features {sorted(missing)}, unknown {sorted(unknown)}")
    table = np.array([[row[name] for name in features] for row in body.rows], dtype=np.float32)
    served, results = await dataplane.predict(model, {spec.name: table})
    return {
        "model": served.name,
        "version": served.version,
        "predictions": [
            {name: _plain(array[index]) for name, array in results.items()} for index in range(len(body.rows))
        ],
    }


def _plain(value: np.ndarray) -> Any:
    """One row of an output as JSON: a scalar when the row holds one value."""
    value = np.asarray(value)
    return value.item() if value.size == 1 else value.tolist()


app = make_app("regression", settings, routers=(router,))
