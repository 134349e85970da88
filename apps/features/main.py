"""The features service: turns each reading into a prediction of the machine's remaining useful life and failure.

Subscribed to `readings` (components/subscription-readings.yaml). For each reading, in this order, so that
nothing is lost and a redelivery changes nothing:
1. read the machine's window from the state store (with its ETag); a reading id already in it is done: ack;
2. for each reading whose window is full now and has no prediction yet (the reading itself, or a later one that
   came first and whose window it completed), compute the window's features and call the regression service's
   models through the sidecar;
3. publish the prediction, whose id depends only on machine and reading: a redelivery publishes the same id again,
   and the alerts service counts it once;
4. save the window with the ETag read in 1 (another replica wrote first: start again from 1);
5. only then ack. A reading that can never be processed (not a reading; features the models refuse: 400 or 422)
   is dropped to the dead-letter topic; anything else that fails is retried by the sidecar with the resiliency
   policy's backoff.
"""

import asyncio
import logging
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import httpx
from fastapi import APIRouter, Body, Request
from prometheus_client import Counter
from pydantic import BaseModel, ValidationError
from pydantic_settings import SettingsConfigDict

from tandem.fleet import FEATURES
from tandem.server import make_base_app
from tandem.settings import AppSettings
from tandem.sidecar import KEEP, Sidecar, SidecarError

from .window import Window

log = logging.getLogger("features")

# Prediction ids are uuid5(this, "<machine>/<reading id>"): the same reading always gives the same id.
PREDICTIONS = uuid.UUID("5b0f3f6e-8d0c-4c1e-9a53-3f1f5d2a7c11")


class FeaturesSettings(AppSettings):
    model_config = SettingsConfigDict(env_prefix="FEATURES_", extra="ignore")

    port: int = 8005
    pubsub: str = "pubsub"
    predictions_topic: str = "predictions"
    state_store: str = "statestore"
    regression_app: str = "regression"
    rul_model: str = "maintenance-rul"
    failure_model: str = "maintenance-failure"
    # Writers that lose an ETag race read again and recompute; after this many losses the event is retried later.
    etag_attempts: int = 5


settings = FeaturesSettings()
router = APIRouter(tags=["Features"])


class Reading(BaseModel):
    """A reading as the sensors service publishes it."""

    machine: str
    id: str
    timestamp: datetime
    values: dict[str, float]
    received_at: float


class Unprocessable(Exception):
    """This event can never be processed, however often it is tried: it belongs in the dead-letter topic."""


READINGS = Counter(
    "tandem_features_readings",
    "Readings taken from the readings topic, by outcome: predicted (a window completed), windowing (none), duplicate, "
    "conflict (another replica saved the window first: read again)",
    ["outcome"],
)
SUCCESS, RETRY, DROP = ({"status": status} for status in ("SUCCESS", "RETRY", "DROP"))
# One reading per machine at a time in this process; ETags keep replicas from overwriting each other.
machine_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)


@router.post("/events/readings", include_in_schema=False)
async def on_reading(request: Request, event: dict[str, Any] = Body()) -> dict[str, str]:
    try:
        reading = Reading.model_validate(event.get("data"))
        async with machine_locks[reading.machine]:
            return await process(request.app.state.sidecar, reading)
    except (ValidationError, Unprocessable) as error:
        log.error("dead-lettering event %s: %s", event.get("id"), error)
        return DROP
    except (SidecarError, httpx.TransportError) as error:
        log.warning("retrying event %s: %s", event.get("id"), error)
        return RETRY


async def process(sidecar: Sidecar, reading: Reading) -> dict[str, str]:
    calls = 0

    async def add_reading(state: Any) -> tuple[Any, str]:
        nonlocal calls
        calls += 1
        if calls > 1:  # another replica saved the window first
            READINGS.labels("conflict").inc()
        window = Window.from_state(state)
        try:
            added = window.add(reading.id, reading.timestamp.timestamp(), reading.values)
        except KeyError as missing:
            raise Unprocessable(f"reading {reading.id} has no value for channel {missing}") from None
        if not added:
            return KEEP, "duplicate"
        due = window.due()
        if not due:
            return window.to_state(), "windowing"
        timestamps = {id_: timestamp for timestamp, id_, _ in window.readings}
        for reading_id in due:
            computed = window.features(reading_id)
            assert computed is not None, "a due reading has its full window"
            prediction = await predict(sidecar, reading, reading_id, timestamps[reading_id], *computed)
            await sidecar.publish(settings.pubsub, settings.predictions_topic, prediction)
            window.predicted.append(reading_id)
        return window.to_state(), "predicted"

    # Spent attempts raise ETagMismatch, a SidecarError: the event is retried later.
    outcome = await sidecar.update_state(
        settings.state_store, f"window-{reading.machine}", add_reading, attempts=settings.etag_attempts
    )
    READINGS.labels(outcome).inc()
    return SUCCESS


async def predict(
    sidecar: Sidecar, received: Reading, reading_id: str, timestamp: float, features: Any, covered: list[str]
) -> dict[str, Any]:
    """The prediction for reading `reading_id` (stamped `timestamp`) of the machine of `received`, the reading
    just taken: that one, or a later one whose window it completed (then `received_at` is when the last reading
    its window needed was received)."""
    rows = {"rows": [dict(zip(FEATURES, features.tolist(), strict=True))]}
    rul, failure = await asyncio.gather(
        invoke_model(sidecar, settings.rul_model, rows), invoke_model(sidecar, settings.failure_model, rows)
    )
    return {
        "id": str(uuid.uuid5(PREDICTIONS, f"{received.machine}/{reading_id}")),
        "machine": received.machine,
        "reading": reading_id,
        "readings": covered,
        "timestamp": datetime.fromtimestamp(timestamp, UTC).isoformat(),
        "received_at": received.received_at,
        "rul": rul["predictions"][0]["rul"],
        "failure_probability": failure["predictions"][0]["probabilities"][1],
        "models": {"rul": f"{rul['model']}/{rul['version']}", "failure": f"{failure['model']}/{failure['version']}"},
    }


async def invoke_model(sidecar: Sidecar, model: str, rows: dict[str, Any]) -> dict[str, Any]:
    response = await sidecar.invoke(settings.regression_app, f"predict/{model}", json_body=rows)
    # Only the model's verdict on the data means the reading can never pass; a 401 or 403 (a rotated token, a
    # policy), a 404 (the model unloaded for a moment) or a 429 may pass later: retried, not dead-lettered.
    if response.status_code in (400, 422):
        raise Unprocessable(f"{model} refused the features: {response.status_code} {response.text}")
    if response.status_code >= 300:
        raise SidecarError(response.status_code, response.text, f"invoke {settings.regression_app} {model}")
    return response.json()


@router.get("/machines/{machine}")
async def machine_window(request: Request, machine: str) -> dict[str, Any]:
    """How many distinct readings of the machine were processed, and the ids in its current window."""
    state, _ = await request.app.state.sidecar.get_state(settings.state_store, f"window-{machine}")
    window = Window.from_state(state)
    return {"machine": machine, "readings": window.count, "window": [id_ for _, id_, _ in window.readings]}


app = make_base_app("features", settings, routers=(router,))
