"""The features service: turns each reading into a prediction of the machine's remaining useful life and failure.

Subscribed to `readings` in bulk (components/subscription-readings.yaml), or, with several replicas, each replica
to its partitions of it (tandem.partitions): a machine's readings reach one replica. An event holds a batch of
readings (`{"readings": [...]}`, as the sensors service publishes them) or one reading (as the edge agent does).
The sidecar hands over up to 50 events at a time, and the whole delivery costs a handful of sidecar calls however
many readings it holds; deliveries that arrive while one is processed are processed together, as one
(tandem.group). For a delivery, in this order, so that nothing is lost and a redelivery changes nothing:
1. read the windows of its machines from the state store in one call (with their ETags); a reading id already in
   its window is done; a reading too late for its window (features.window.LATE: redelivered after readings that
   pushed out those its window needs) cannot pass, it is not counted;
2. for each reading whose window is full now and has no prediction yet (a reading of the delivery, or a later one
   that came first and whose window it completed), compute the window's features; all of them go to each of the
   regression service's two models in one OIP infer call, one row per window;
3. publish the predictions in events of up to 200 predictions, several machines' each, a machine's oldest first
   and all in one event of those published at once (a machine with more than 200 gets an event in each of several
   rounds, one after the other); a prediction's id depends only on machine and reading, so a redelivery
   publishes the same ids again, and the alerts service counts each once;
4. save the windows in one transaction, each with the ETag read in 1 (another replica wrote one first: read again
   and redo the readings its window does not hold yet);
5. only then answer SUCCESS for every event. A reading that can never pass (not a reading, a channel missing,
   features the models refuse: 400 or 422, too late) is dropped to the dead-letter topic: an event of its own
   directly, one of a batch by publishing it again alone (`entry_status`). When anything else fails the delivery's
   events are answered RETRY and the sidecar retries them with the resiliency policy's backoff.
"""

import asyncio
import logging
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import numpy as np
from fastapi import APIRouter, Request
from prometheus_client import Counter
from pydantic import BaseModel, Field, model_validator
from pydantic_settings import SettingsConfigDict

from tandem import bulk, partitions
from tandem.bulk import DROP, RETRY, SUCCESS
from tandem.fleet import CHANNELS, windows_features
from tandem.group import GroupCommit
from tandem.protocol import HEADER_LENGTH, decode_response, encode_request
from tandem.server import make_base_app
from tandem.settings import AppSettings
from tandem.sidecar import OPAQUE_JSON, Sidecar, SidecarError

from .window import ADDED, KEPT, LATE, Window

log = logging.getLogger("features")

# Prediction ids are uuid5(this, "<machine>/<reading id>"): the same reading always gives the same id.
PREDICTIONS = uuid.UUID("5b0f3f6e-8d0c-4c1e-9a53-3f1f5d2a7c11")
# The maintenance models' input tensor (their cards: FP32 [-1, len(tandem.fleet.FEATURES)]).
MODEL_INPUT = "input"


class FeaturesSettings(AppSettings):
    model_config = SettingsConfigDict(env_prefix="FEATURES_", extra="ignore")

    port: int = 8005
    pubsub: str = "pubsub"
    predictions_topic: str = "predictions"
    # Predictions per event at most (of one machine or several). Alerts takes up to 15 events per delivery
    # (components/subscription-predictions.yaml), and a delivery must stay within its body limit (4 MiB): 15
    # events of 200 predictions (about 1 KB each) are 3.2 MB. A run of busy deliveries holds hundreds per machine.
    event_predictions: int = Field(200, ge=1)
    state_store: str = "statestore"
    regression_app: str = "regression"
    rul_model: str = "maintenance-rul"
    failure_model: str = "maintenance-failure"
    # Writers that lose an ETag race read again and recompute; after this many losses the delivery is retried later.
    etag_attempts: int = 5
    # Readings partitioned by machine (tandem.partitions; the sensors service's SENSORS_PARTITIONS): this replica
    # (0 to replicas - 1, e.g. a StatefulSet's pod index) subscribes to its share of `<readings_topic>.<k>`. With one
    # partition, the readings topic is subscribed declaratively (components/subscription-readings.yaml).
    partitions: int = Field(1, ge=1)
    replica: int = Field(0, ge=0)
    replicas: int = Field(1, ge=1)
    readings_topic: str = "readings"
    dead_letter_topic: str = "readings-dead"

    @model_validator(mode="after")
    def _replica_reads_partitions(self) -> "FeaturesSettings":
        partitions.owned(self.replica, self.replicas, self.partitions)  # raises when they do not fit
        return self


settings = FeaturesSettings()
router = APIRouter(tags=["Features"])


class Reading(BaseModel):
    """A reading as the sensors service publishes it."""

    machine: str
    id: str
    timestamp: datetime
    values: dict[str, float]
    received_at: float


class ReadingsEvent(BaseModel):
    """An event of the readings topic: `{"readings": [...]}`, a batch as the sensors service publishes it (one
    event per batch and partition), or one reading on its own (as the edge agent publishes them)."""

    readings: list[Reading] = Field(min_length=1)
    alone: bool = False  # a reading on its own, not a batch

    @model_validator(mode="before")
    @classmethod
    def _one_reading(cls, data: Any) -> Any:
        return {"readings": [data], "alone": True} if isinstance(data, dict) and "readings" not in data else data


class Unprocessable(Exception):
    """This event can never be processed, however often it is tried: it belongs in the dead-letter topic."""


READINGS = Counter(
    "tandem_features_readings",
    "Readings taken from the readings topic, by outcome: predicted (its own window completed), windowing (not), "
    "duplicate, late (too late for its window: dead-lettered), conflict (another replica saved the window first: "
    "read again)",
    ["outcome"],
)
# A reading of a delivery: (its entry id, its place in the entry's event).
Place = tuple[str, int]
# A reading of the deliveries processed together: (the delivery's place among them, its place in the delivery).
Entry = tuple[int, str, int]


@dataclass
class Due:
    """A window that is full and has no prediction yet."""

    machine: str
    reading: str
    timestamp: float
    received_at: float  # when the reading that completed its window was received
    covered: list[str]
    values: np.ndarray  # the window's readings, float64 [channels, WINDOW]


@router.get("/dapr/subscribe", include_in_schema=False)
async def subscribe() -> list[dict[str, Any]]:
    """This replica's partitions of the readings topic, delivered in bulk as the declarative subscription of the
    unpartitioned topic is (components/subscription-readings.yaml)."""
    if settings.partitions == 1:
        return []
    return [
        {
            "pubsubname": settings.pubsub,
            "topic": partitions.topic(settings.readings_topic, settings.partitions, index),
            "routes": {"default": "/events/readings"},
            "deadLetterTopic": settings.dead_letter_topic,
            "bulkSubscribe": {"enabled": True, "maxMessagesCount": 50, "maxAwaitDurationMs": 20},
        }
        for index in partitions.owned(settings.replica, settings.replicas, settings.partitions)
    ]


@router.post("/events/readings", include_in_schema=False)
async def on_readings(request: Request) -> Any:
    """A bulk delivery: `{"entries": [{"entryId", "event": CloudEvent}, ...]}`; every entry gets its status."""
    try:
        delivery = await bulk.read(request)
        events, statuses = bulk.parse(delivery, ReadingsEvent, log)
    except ValueError as error:
        return bulk.refused(error)
    sidecar = request.app.state.sidecar
    topic = delivery.get("topic") or settings.readings_topic  # the topic (or partition) delivered from
    batch: dict[str, dict[Place, Reading]] = defaultdict(dict)  # machine -> place -> reading
    outcomes: dict[Place, str] = {}
    for entry_id, event in events:
        for index, reading in enumerate(event.readings):
            if missing := [channel for channel in CHANNELS if channel not in reading.values]:
                log.error("dead-lettering reading %s: no value for channels %s", reading.id, missing)
                outcomes[entry_id, index] = DROP
            else:
                batch[reading.machine][entry_id, index] = reading
    if batch:
        outcomes |= await deliveries.submit((sidecar, batch))
    for entry_id, event in events:
        statuses[entry_id] = await entry_status(
            sidecar, topic, event, [outcomes[entry_id, i] for i in range(len(event.readings))]
        )
    return bulk.answer(statuses)


async def entry_status(sidecar: Sidecar, topic: str, event: ReadingsEvent, outcomes: list[str]) -> str:
    """An entry's status from its readings' outcomes. A reading of a batch event that can never pass is split off:
    published again as an event of its own, to the topic it came from, where it meets the same fate alone and is
    dropped to the dead-letter topic as a reading on its own is (so a dead letter is always one reading); the rest
    of the batch is done."""
    if RETRY in outcomes:
        return RETRY
    if DROP not in outcomes:
        return SUCCESS
    if event.alone:
        return DROP
    try:
        for reading, outcome in zip(event.readings, outcomes, strict=True):
            if outcome == DROP:
                await sidecar.publish(settings.pubsub, topic, reading.model_dump(mode="json"))
    except (SidecarError, httpx.TransportError) as error:
        log.warning("retrying a batch of %d readings: splitting off one failed: %s", len(outcomes), error)
        return RETRY
    return SUCCESS


async def process_deliveries(batches: list[tuple[Sidecar, dict[str, dict[Place, Reading]]]]) -> list[dict[Place, str]]:
    """The deliveries that waited, processed as one: outcomes by reading, per delivery."""
    merged: dict[str, dict[Entry, Reading]] = defaultdict(dict)
    for index, (_, batch) in enumerate(batches):
        for machine, readings in batch.items():
            for (entry_id, place), reading in readings.items():
                merged[machine][index, entry_id, place] = reading
    outcomes: list[dict[Place, str]] = [{} for _ in batches]
    for (index, entry_id, place), outcome in (await process_or_split(batches[0][0], merged)).items():
        outcomes[index][entry_id, place] = outcome
    return outcomes


# One run at a time in this process, each taking every delivery that waited (ETags keep replicas apart).
deliveries = GroupCommit(process_deliveries)


async def process_or_split(sidecar: Sidecar, batch: dict[str, dict[Entry, Reading]]) -> dict[Entry, str]:
    """Statuses by entry. When the models refuse a batch's features, each reading is tried alone, so that only
    the one they refuse is dropped."""
    entries = {
        entry: (machine, reading.id) for machine, readings in batch.items() for entry, reading in readings.items()
    }
    try:
        late = await process(sidecar, {machine: list(readings.values()) for machine, readings in batch.items()})
        return {entry: DROP if reading in late else SUCCESS for entry, reading in entries.items()}
    except Unprocessable as error:
        if len(entries) == 1:
            ((entry, (_, reading_id)),) = entries.items()
            log.error("dead-lettering reading %s: %s", reading_id, error)
            return {entry: DROP}
    except (SidecarError, httpx.TransportError) as error:
        log.warning("retrying %d readings: %s", len(entries), error)
        return dict.fromkeys(entries, RETRY)
    statuses: dict[Entry, str] = {}
    for machine, readings in batch.items():  # in order within a machine: its window advances one reading at a time
        for entry, reading in readings.items():
            statuses |= await process_or_split(sidecar, {machine: {entry: reading}})
    return statuses


async def process(sidecar: Sidecar, batch: dict[str, list[Reading]]) -> set[tuple[str, str]]:
    """Adds the readings (by machine) to their windows, publishes the predictions they make due, saves the windows.
    Returns the (machine, reading id) of the readings too late for their windows, which belong in the dead letters."""
    keys = {machine: f"window-{machine}" for machine in batch}
    attempts = 0

    async def add_readings(stored: dict[str, Any]) -> tuple[dict[str, Any], tuple[list[str], set[tuple[str, str]]]]:
        nonlocal attempts
        windows: dict[str, Window] = {}
        due: list[Due] = []
        outcomes: list[str] = []
        late: set[tuple[str, str]] = set()
        for machine, readings in batch.items():
            window = Window.from_state(stored[keys[machine]])
            # Oldest first, one at a time, as if they had come one by one in order: a window keeps only
            # WINDOW + SLACK readings, so adding many at once could push out what an earlier one's window needs.
            for reading in sorted(readings, key=lambda reading: reading.timestamp):
                added = window.add(reading.id, reading.timestamp.timestamp(), reading.values)
                if added != ADDED:
                    outcomes.append(added)
                    if added == LATE:
                        late.add((machine, reading.id))
                    continue
                windows[machine] = window
                made_due = due_predictions(machine, window, reading)
                outcomes.append("predicted" if any(item.reading == reading.id for item in made_due) else "windowing")
                due += made_due
        if attempts:  # another replica saved a window first
            READINGS.labels("conflict").inc(len(outcomes))
        attempts += 1
        if due:
            due.sort(key=lambda item: item.timestamp)
            await publish_in_order(sidecar, await predict(sidecar, due))
        return {keys[machine]: window.to_state() for machine, window in windows.items()}, (outcomes, late)

    outcomes, late = await sidecar.update_bulk_state(
        settings.state_store, list(keys.values()), add_readings, attempts=settings.etag_attempts
    )
    for outcome in outcomes:
        READINGS.labels(outcome).inc()
    for machine, reading in sorted(late):
        log.error(
            "dead-lettering reading %s of %s: too late for its window (readings newer than it came first and pushed "
            "out the older ones its window needs; a window keeps the last %d)",
            reading,
            machine,
            KEPT,
        )
    return late


def due_predictions(machine: str, window: Window, added: Reading) -> list[Due]:
    """The windows that `added`, just added to `window`, made full (its own, or a later reading's that came first);
    marked predicted in `window`, which is saved only once their predictions are published."""
    timestamps = {id_: timestamp for timestamp, id_ in window.readings}
    made_due = []
    for reading_id, values, covered in window.due_windows():
        made_due.append(Due(machine, reading_id, timestamps[reading_id], added.received_at, covered, values))
        window.predicted.append(reading_id)
    return made_due


async def publish_in_order(sidecar: Sidecar, predictions: list[dict[str, Any]]) -> None:
    """Publishes the predictions, each machine's in the order given, as events `{"predictions": [...]}` of at most
    `event_predictions`, several machines packed in each: the events published first, all at once, hold each
    machine's first ones, all of a machine's in one event; the next ones each machine's next ones, and so on.
    Alerts judges a machine by its newest prediction, so a machine's must reach it in order, and events published
    at once are stored in any order; one publish per prediction would keep the order but wait for each write to
    reach the disk (Redis's appendfsync always) one after another. Few events rather than one per machine: each
    costs both sidecars, Redis and alerts the same fixed work whatever it holds."""
    by_machine: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
    for prediction in predictions:
        by_machine[prediction["machine"]].append(prediction)
    size = settings.event_predictions
    for start in range(0, max(len(ordered) for ordered in by_machine.values()), size):
        events: list[dict[str, Any]] = []
        packed: list[dict[str, Any]] = []
        for ordered in by_machine.values():
            part = ordered[start : start + size]
            if packed and len(packed) + len(part) > size:
                events.append({"predictions": packed})
                packed = []
            packed += part
        events.append({"predictions": packed})
        # Publishes of their own rather than one bulk publish, whose events travel inside its JSON body, which the
        # sidecar parses: events of OPAQUE_JSON published one by one cost it least.
        published = await asyncio.gather(
            *(
                sidecar.publish(settings.pubsub, settings.predictions_topic, event, content_type=OPAQUE_JSON)
                for event in events
            ),
            return_exceptions=True,
        )
        if failed := next((outcome for outcome in published if isinstance(outcome, BaseException)), None):
            raise failed


async def predict(sidecar: Sidecar, due: list[Due]) -> list[dict[str, Any]]:
    """The predictions of the due windows: their features in one pass, one row per window in one call to each
    model."""
    rows = windows_features(np.stack([item.values for item in due]))
    (rul, rul_model), (failure, failure_model) = await asyncio.gather(
        infer(sidecar, settings.rul_model, rows), infer(sidecar, settings.failure_model, rows)
    )
    return [
        {
            "id": str(uuid.uuid5(PREDICTIONS, f"{item.machine}/{item.reading}")),
            "machine": item.machine,
            "reading": item.reading,
            "readings": item.covered,
            "timestamp": datetime.fromtimestamp(item.timestamp, UTC).isoformat(),
            "received_at": item.received_at,
            "rul": float(rul["rul"][row, 0]),
            "failure_probability": float(failure["probabilities"][row, 1]),
            "models": {"rul": rul_model, "failure": failure_model},
        }
        for row, item in enumerate(due)
    ]


async def infer(sidecar: Sidecar, model: str, rows: np.ndarray) -> tuple[dict[str, np.ndarray], str]:
    """The model's outputs by name for `rows` (an OIP infer call through the sidecar), and "<model>/<version>".
    Tensors travel as binary data both ways (the protocol's binary extension): a delivery's rows as JSON floats
    cost features, both sidecars and the model service far more to write and read."""
    body, headers = encode_request({MODEL_INPUT: rows})
    response = await sidecar.invoke(settings.regression_app, f"v2/models/{model}/infer", content=body, headers=headers)
    # Only the model's verdict on the data means the readings can never pass; a 401 or 403 (a rotated token, a
    # policy), a 404 (the model unloaded for a moment) or a 429 may pass later: retried, not dead-lettered.
    if response.status_code in (400, 422):
        raise Unprocessable(f"{model} refused the features: {response.status_code} {response.text}")
    if response.status_code >= 300:
        raise SidecarError(response.status_code, response.text, f"invoke {settings.regression_app} {model}")
    answer, outputs = decode_response(response.content, response.headers.get(HEADER_LENGTH))
    return outputs, f"{answer.model_name}/{answer.model_version}"


@router.get("/machines/{machine}")
async def machine_window(request: Request, machine: str) -> dict[str, Any]:
    """How many distinct readings of the machine were processed, and the ids in its current window."""
    state, _ = await request.app.state.sidecar.get_state(settings.state_store, f"window-{machine}")
    window = Window.from_state(state)
    return {"machine": machine, "readings": window.count, "window": [id_ for _, id_ in window.readings]}


app = make_base_app("features", settings, routers=(router,))
