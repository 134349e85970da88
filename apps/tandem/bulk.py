"""Bulk subscriptions (a Subscription with `bulkSubscribe`): the events of a delivery, checked against a model, and
the answer the sidecar expects, one status per entry. An entry whose event is not what the model says can never be
processed: it is dropped (to the subscription's dead-letter topic), the rest of the delivery goes on."""

import logging
from typing import Any, TypeVar

import orjson
from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from .sidecar import OPAQUE_JSON

M = TypeVar("M", bound=BaseModel)
SUCCESS, RETRY, DROP = "SUCCESS", "RETRY", "DROP"


async def read(request: Request) -> Any:
    """The body of a delivery, decoded with orjson: a delivery holds hundreds of events, and the standard library's
    decoder (FastAPI's for a Body parameter) was the largest part of reading one. Raises ValueError when the body
    is not JSON."""
    try:
        return orjson.loads(await request.body())
    except orjson.JSONDecodeError as error:
        raise ValueError(f"the body is not JSON: {error}") from None


def parse(delivery: Any, model: type[M], log: logging.Logger) -> tuple[list[tuple[str, M]], dict[str, str]]:
    """The delivery's events that are `model`s, with their entry ids, and DROP for each entry whose event is not.
    Raises ValueError when the body is no bulk delivery at all."""
    entries = delivery.get("entries") if isinstance(delivery, dict) else None
    if not isinstance(entries, list):
        raise ValueError("expected a bulk delivery: an object with a list of entries")
    events, statuses = [], {}
    for entry in entries:
        entry_id = str(entry.get("entryId"))
        event = entry.get("event")
        try:
            events.append((entry_id, model.model_validate(event_data(event))))
        except (ValidationError, ValueError) as error:  # not the model, or opaque JSON that is not JSON
            log.error("dead-lettering entry %s: %s", entry_id, error)
            statuses[entry_id] = DROP
    return events, statuses


def event_data(event: Any) -> Any:
    """A delivered CloudEvent's data: as the sidecar hands it over, or decoded when it is JSON the sidecar carried as
    a string (tandem.sidecar.OPAQUE_JSON). Raises ValueError when such data is not JSON."""
    if not isinstance(event, dict):
        return event
    data = event.get("data")
    if isinstance(data, str) and event.get("datacontenttype") == OPAQUE_JSON:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as error:
            raise ValueError(f"the event's data ({OPAQUE_JSON}) is not JSON: {error}") from None
    return data


def answer(statuses: dict[str, str]) -> dict[str, Any]:
    return {"statuses": [{"entryId": entry_id, "status": status} for entry_id, status in statuses.items()]}


def refused(error: ValueError) -> JSONResponse:
    return JSONResponse({"error": str(error)}, 400)
