"""The alerts service: turns predictions into alerts, one per machine per degradation episode.

Subscribed to `predictions`, and to the dead-letter topics of `readings` and `predictions` (components/
subscription-*.yaml). Everything lives in the state store: per machine its episode state and the prediction ids it
has applied (a redelivered prediction changes nothing), and one document each for the alerts and the dead letters.
`GET /alerts` lists alerts, `GET /alerts/stream` streams them as server-sent events as they open and close,
`GET /dead-letters` shows the events that could not be processed.
"""

import asyncio
import json
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import suppress
from datetime import datetime
from typing import Any, Literal

import httpx
from fastapi import APIRouter, Body, Request
from fastapi.responses import StreamingResponse
from prometheus_client import Counter, Histogram
from pydantic import BaseModel, model_validator
from pydantic_settings import SettingsConfigDict

from tandem import bulk
from tandem.bulk import RETRY, SUCCESS
from tandem.group import GroupCommit
from tandem.server import make_base_app
from tandem.settings import AppSettings
from tandem.sidecar import Sidecar, SidecarError

from .episodes import Change, MachineState, Thresholds

log = logging.getLogger("alerts")


class AlertsSettings(AppSettings):
    model_config = SettingsConfigDict(env_prefix="ALERTS_", extra="ignore")

    port: int = 8006
    state_store: str = "statestore"
    # An episode opens at this probability of failure within the model's horizon...
    open_probability: float = 0.7
    # ...and closes after `close_after` predictions in a row at or below this one.
    close_probability: float = 0.3
    close_after: int = 5
    # The newest dead letters kept for inspection.
    max_dead_letters: int = 1000
    # Closed alerts kept, those closed last; open alerts are always kept. Every delivery that opens or closes an
    # alert reads and writes the alerts document whole, so without a bound it would grow, and slow, for ever.
    max_closed_alerts: int = 1000
    # A comment line this often keeps idle event streams open through proxies.
    stream_keepalive_seconds: float = 15.0
    etag_attempts: int = 10


settings = AlertsSettings()
THRESHOLDS = Thresholds(settings.open_probability, settings.close_probability, settings.close_after)
ALERTS_KEY, DEAD_LETTERS_KEY = "alerts", "dead-letters"
PREDICTIONS = Counter("tandem_alerts_predictions", "Predictions taken from the topic, by outcome", ["outcome"])
# The whole pipeline's latency for every reading: from sensors accepting it to its prediction applied here.
READING_TO_PREDICTION_SECONDS = Histogram(
    "tandem_alerts_reading_to_prediction_seconds",
    "Time from the sensors service accepting a reading to its prediction applied by alerts",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0),
)
router = APIRouter(tags=["Alerts"])


class Prediction(BaseModel):
    """A prediction as the features service publishes it."""

    id: str
    machine: str
    reading: str
    timestamp: datetime
    received_at: float
    rul: float
    failure_probability: float


class PredictionsEvent(BaseModel):
    """An event of the predictions topic: predictions of one machine or several, each machine's oldest first, as the
    features service publishes them. `machine`, when given (as in events of one machine each, which features
    published before), names the machine every prediction must be of."""

    machine: str | None = None
    predictions: list[Prediction]

    @model_validator(mode="after")
    def all_of_the_machine(self) -> "PredictionsEvent":
        if self.machine is not None and any(prediction.machine != self.machine for prediction in self.predictions):
            raise ValueError(f"every prediction must be of machine {self.machine}")
        return self


@router.post("/events/predictions", include_in_schema=False)
async def on_predictions(request: Request) -> Any:
    """A bulk delivery (components/subscription-predictions.yaml): `{"entries": [{"entryId", "event"}, ...]}`, each
    event predictions of one or more machines. Each machine's are applied oldest first, in one read and one write
    of its state: a machine is judged by its newest prediction, and events published one after another may be
    delivered side by side."""
    try:
        events, statuses = bulk.parse(await bulk.read(request), PredictionsEvent, log)
    except ValueError as error:
        return bulk.refused(error)
    by_machine: defaultdict[str, list[Prediction]] = defaultdict(list)
    for _, event in events:
        for prediction in event.predictions:
            by_machine[prediction.machine].append(prediction)
    entry_ids = [entry_id for entry_id, _ in events]
    try:
        if by_machine:
            await deliveries.submit((request.app.state.sidecar, by_machine))
        statuses |= dict.fromkeys(entry_ids, SUCCESS)
    except (SidecarError, httpx.TransportError) as error:
        log.warning("retrying the predictions of %d machines: %s", len(by_machine), error)
        statuses |= dict.fromkeys(entry_ids, RETRY)
    return bulk.answer(statuses)


async def apply_deliveries(batches: list[tuple[Sidecar, dict[str, list[Prediction]]]]) -> list[None]:
    """The deliveries that waited, applied as one."""
    merged: defaultdict[str, list[Prediction]] = defaultdict(list)
    for _, by_machine in batches:
        for machine, predictions in by_machine.items():
            merged[machine] += predictions
    await apply(batches[0][0], merged)
    return [None] * len(batches)


# One run at a time in this process, each taking every delivery that waited (ETags keep replicas apart).
deliveries = GroupCommit(apply_deliveries)


async def apply(sidecar: Sidecar, batch: dict[str, list[Prediction]]) -> list[Change]:
    """Applies each machine's predictions, oldest first, reading and writing the machines' states in one call
    each; the alerts they open or close are stored first, all in one write of the alerts document, so a crash in
    between repeats the same changes (same alert ids) on redelivery instead of losing them."""
    keys = {machine: f"machine-{machine}" for machine in batch}
    Applied = tuple[list[Prediction], list[Change], list[dict[str, Any]]]  # new to their machine, changes, alerts

    async def apply_to(stored: dict[str, Any]) -> tuple[dict[str, Any], Applied]:
        saves: dict[str, Any] = {}
        new: list[Prediction] = []
        changes: list[tuple[Change, Prediction]] = []
        for machine, predictions in batch.items():
            state = MachineState.from_state(stored[keys[machine]])
            for prediction in sorted(predictions, key=lambda prediction: prediction.timestamp):
                if prediction.id in state.seen:
                    continue
                new.append(prediction)
                summary = prediction.model_dump(mode="json", exclude={"machine"})
                change = state.apply(machine, prediction.id, prediction.timestamp.timestamp(), summary, THRESHOLDS)
                saves[keys[machine]] = state
                if change is not None:
                    changes.append((change, prediction))
        alerts = await record_changes(sidecar, changes) if changes else []
        return {key: state.to_state() for key, state in saves.items()}, (new, [change for change, _ in changes], alerts)

    new, changes, alerts = await sidecar.update_bulk_state(
        settings.state_store, list(keys.values()), apply_to, attempts=settings.etag_attempts
    )
    PREDICTIONS.labels("duplicate").inc(sum(len(predictions) for predictions in batch.values()) - len(new))
    PREDICTIONS.labels("applied").inc(len(new))
    now = time.time()
    for prediction in new:
        READING_TO_PREDICTION_SECONDS.observe(now - prediction.received_at)
    for alert in alerts:
        broadcast(alert)
    return changes


async def record_changes(sidecar: Sidecar, changes: list[tuple[Change, Prediction]]) -> list[dict[str, Any]]:
    """Opens and closes alerts in one read-modify-write of the alerts document, in the order given; returns each
    change's alert as it now is. One write for all of a delivery's changes: each write moves the whole document
    through the sidecar, and a delivery often holds several."""

    def mutate(alerts: dict[str, Any]) -> list[dict[str, Any]]:
        now = time.time()
        changed = []
        for change, prediction in changes:
            alert = alerts.get(change.alert_id)
            if alert is None and change.kind == "closed":
                continue  # a redelivered close of an alert closed long enough ago to be dropped
            if alert is None:  # opened (the first time this change is applied)
                alert = alerts[change.alert_id] = {
                    "id": change.alert_id,
                    "machine": prediction.machine,
                    "state": "open",
                    "opened_at": now,
                    "opened_by": prediction.reading,
                    "reading_timestamp": prediction.timestamp.isoformat(),
                    "rul": prediction.rul,
                    "failure_probability": prediction.failure_probability,
                    # From the moment the sensors service accepted the reading to this alert.
                    "latency_seconds": now - prediction.received_at,
                    "closed_at": None,
                    "closed_by": None,
                }
            elif change.kind == "closed" and alert["state"] == "open":
                alert.update(state="closed", closed_at=now, closed_by=prediction.reading)
            changed.append(dict(alert))
        closed = sorted(
            (alert for alert in alerts.values() if alert["state"] == "closed"), key=lambda alert: alert["closed_at"]
        )
        for alert in closed[: max(len(closed) - settings.max_closed_alerts, 0)]:
            del alerts[alert["id"]]
        return changed

    return await update_document(sidecar, ALERTS_KEY, dict, mutate)


async def update_document(sidecar: Sidecar, key: str, empty: Callable[[], Any], mutate: Callable[[Any], Any]) -> Any:
    """Read-modify-write of one state document; `mutate` changes it in place and returns the result."""

    async def change(document: Any) -> tuple[Any, Any]:
        document = empty() if document is None else document
        return document, mutate(document)

    return await sidecar.update_state(settings.state_store, key, change, attempts=settings.etag_attempts)


@router.post("/events/dead-letters", include_in_schema=False)
async def on_dead_letter(request: Request, event: dict[str, Any] = Body()) -> dict[str, str]:
    letter = {
        "id": event.get("id"),
        "topic": event.get("topic"),
        "source": event.get("source"),
        "received_at": time.time(),
        "data": event.get("data", event.get("data_base64")),
    }
    if "data" in event:
        with suppress(ValueError):  # JSON the sidecars carried as a string, decoded; kept as it came if it is not
            letter["data"] = bulk.event_data(event)

    def mutate(letters: list[dict[str, Any]]) -> None:
        if all(kept["id"] != letter["id"] for kept in letters):
            letters.append(letter)
            del letters[: -settings.max_dead_letters]

    try:
        await update_document(request.app.state.sidecar, DEAD_LETTERS_KEY, list, mutate)
    except (SidecarError, httpx.TransportError) as error:
        log.warning("retrying dead letter %s: %s", letter["id"], error)
        return {"status": RETRY}
    log.error("dead letter on %s: %s", letter["topic"], json.dumps(letter["data"])[:500])
    return {"status": SUCCESS}


@router.get("/alerts")
async def list_alerts(
    request: Request, state: Literal["open", "closed"] | None = None, machine: str | None = None
) -> list[dict[str, Any]]:
    """Alerts, oldest first; `state` and `machine` filter them."""
    alerts, _ = await request.app.state.sidecar.get_state(settings.state_store, ALERTS_KEY)
    chosen = [
        alert
        for alert in (alerts or {}).values()
        if (state is None or alert["state"] == state) and (machine is None or alert["machine"] == machine)
    ]
    return sorted(chosen, key=lambda alert: alert["opened_at"])


@router.get("/alerts/stream", response_class=StreamingResponse)
async def stream_alerts(request: Request) -> StreamingResponse:
    """Server-sent events: one `alert` event each time this replica opens or closes an alert."""
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=1000)
    listeners.add(queue)

    async def events() -> AsyncIterator[str]:
        try:
            yield ": streaming alerts\n\n"  # sends the headers now, before the first alert
            while True:
                try:
                    alert = await asyncio.wait_for(queue.get(), settings.stream_keepalive_seconds)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                yield f"id: {alert['id']}:{alert['state']}\nevent: alert\ndata: {json.dumps(alert)}\n\n"
        finally:
            listeners.discard(queue)

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


listeners: set[asyncio.Queue[dict[str, Any]]] = set()


def broadcast(alert: dict[str, Any]) -> None:
    for queue in listeners:
        if queue.full():
            log.warning("an alert stream is not reading; dropping its oldest alert")
            queue.get_nowait()
        queue.put_nowait(dict(alert))


@router.get("/machines/{machine}")
async def machine_state(request: Request, machine: str) -> dict[str, Any]:
    """How many distinct predictions of the machine were applied, its newest one, and its open alert."""
    state, _ = await request.app.state.sidecar.get_state(settings.state_store, f"machine-{machine}")
    summary = MachineState.from_state(state).to_state()
    summary.pop("seen")
    return {"machine": machine, **summary}


@router.get("/dead-letters")
async def list_dead_letters(request: Request) -> list[dict[str, Any]]:
    """Events that could not be processed (after retries, or refused as unprocessable), oldest first."""
    letters, _ = await request.app.state.sidecar.get_state(settings.state_store, DEAD_LETTERS_KEY)
    return letters or []


app = make_base_app("alerts", settings, routers=(router,))
