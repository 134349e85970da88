"""The sensors service: `POST /readings` validates a batch of readings and publishes them, one event per batch and
partition (`{"readings": [...]}`) unless told to publish one per reading.

It answers 202 only once the sidecar has accepted every event of the batch, so a reading that got a 2xx is in the
broker; a 5xx means "send the batch again" (downstream handlers are idempotent by reading id).
"""

import asyncio
import math
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import SettingsConfigDict

from tandem import partitions
from tandem.fleet import CHANNELS
from tandem.protocol import InferenceError
from tandem.server import OrjsonBodyRoute, make_base_app
from tandem.settings import AppSettings
from tandem.sidecar import OPAQUE_JSON, Sidecar


class SensorsSettings(AppSettings):
    model_config = SettingsConfigDict(env_prefix="SENSORS_", extra="ignore")

    port: int = 8004
    pubsub: str = "pubsub"
    topic: str = "readings"
    # Above 1, each machine's readings go to `<topic>.<k>` (tandem.partitions), so that several features replicas
    # each read whole machines; features must be given the same number.
    partitions: int = Field(1, ge=1)
    # batch: one event per batch and partition holding its readings, so the sidecars and the broker handle one
    # message where they would handle a reading each; bulk: one event per reading, in one bulk publish per partition;
    # single: one publish per reading (the benchmark compares them).
    events: Literal["batch", "bulk", "single"] = "batch"
    # Readings per batch event at most: features takes 50 events per delivery, which must stay within its body
    # limit (a reading is about 700 bytes of JSON).
    event_readings: int = Field(50, ge=1)
    max_readings: int = 1000
    # Clocks drift, but a reading stamped further ahead than this is a broken clock or a broken sender.
    max_future_seconds: float = 300.0


settings = SensorsSettings()

# Machine and reading ids become state keys downstream: no separators, nothing unbounded.
Name = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")]
CHANNEL_SET = frozenset(CHANNELS)


class Reading(BaseModel):
    model_config = ConfigDict(extra="forbid")

    machine: Name
    id: Name
    timestamp: AwareDatetime = Field(description="ISO 8601 with a time zone, or seconds since the epoch")
    values: dict[str, float] = Field(description="every channel of tandem.fleet.CHANNELS, nothing else")

    @field_validator("timestamp", mode="before")
    @classmethod
    def _epoch_is_utc(cls, value: Any) -> Any:
        return datetime.fromtimestamp(value, UTC) if isinstance(value, int | float) else value

    @field_validator("values")
    @classmethod
    def _every_channel_finite(cls, values: dict[str, float]) -> dict[str, float]:
        # The usual reading passes with one comparison and one pass (this ran for every reading of every batch).
        if values.keys() != CHANNEL_SET:
            missing = [channel for channel in CHANNELS if channel not in values]
            unknown = sorted(values.keys() - CHANNEL_SET)
            raise ValueError(f"missing channels {missing}, unknown channels {unknown}")
        if not all(map(math.isfinite, values.values())):
            not_finite = sorted(channel for channel, value in values.items() if not math.isfinite(value))
            raise ValueError(f"channels {not_finite} are not finite numbers")
        return values


class Batch(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "readings": [
                        {
                            "machine": "machine-0",
                            "id": "machine-0:1",
                            "timestamp": "2025-01-01T00:00:00Z",
                            "values": dict.fromkeys(CHANNELS, 1.0),
                        }
                    ]
                }
            ]
        },
    )

    readings: Annotated[list[Reading], Field(min_length=1, max_length=settings.max_readings)]


router = APIRouter(tags=["Sensor readings"], route_class=OrjsonBodyRoute)


@router.post("/readings", status_code=202)
async def post_readings(request: Request, batch: Batch) -> JSONResponse:
    """Validates a batch of readings and publishes them to the `readings` topic (or each to its machine's
    partition of it); 202 once all are accepted."""
    _refuse_duplicates_and_future(batch.readings)
    received_at = time.time()
    events = [{**reading.model_dump(mode="json"), "received_at": received_at} for reading in batch.readings]
    sidecar = request.app.state.sidecar
    by_topic: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        index = partitions.partition(event["machine"], settings.partitions)
        by_topic[partitions.topic(settings.topic, settings.partitions, index)].append(event)
    if settings.events == "batch":
        await asyncio.gather(*(_publish_in_batches(sidecar, topic, group) for topic, group in by_topic.items()))
    elif settings.events == "bulk":
        await asyncio.gather(
            *(sidecar.publish_bulk(settings.pubsub, topic, group) for topic, group in by_topic.items())
        )
    else:
        await asyncio.gather(
            *(sidecar.publish(settings.pubsub, topic, event) for topic, group in by_topic.items() for event in group)
        )
    return JSONResponse({"accepted": len(events)}, status_code=202)


async def _publish_in_batches(sidecar: Sidecar, topic: str, events: list[dict[str, Any]]) -> None:
    """`events` as batch events of at most `event_readings` readings, one after the other: events published at once
    are stored in any order, and a machine's readings must not overtake each other by more than features' window
    keeps (features.window.SLACK)."""
    for start in range(0, len(events), settings.event_readings):
        batch = {"readings": events[start : start + settings.event_readings]}
        await sidecar.publish(settings.pubsub, topic, batch, content_type=OPAQUE_JSON)


def _refuse_duplicates_and_future(readings: list[Reading]) -> None:
    latest = datetime.now(UTC) + timedelta(seconds=settings.max_future_seconds)
    seen: set[tuple[str, str]] = set()
    for index, reading in enumerate(readings):
        if reading.timestamp > latest:
            raise InferenceError(
                f"readings[{index}]: timestamp {reading.timestamp.isoformat()} is more than "
                f"{settings.max_future_seconds:g} s in the future"
            )
        key = (reading.machine, reading.id)
        if key in seen:
            raise InferenceError(f"readings[{index}]: reading id {reading.id!r} of {reading.machine!r} appears twice")
        seen.add(key)


app = make_base_app("sensors", settings, routers=(router,))
