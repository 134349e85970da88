"""Durable runs started by something other than a request: pub/sub events (each event one run, its id making the
run id, so a redelivered event runs once) and schedules (Dapr's Jobs API: the scheduler fires each tick at one
replica, however many run)."""

import json
import logging
import re
import uuid
from typing import Any

import httpx
from fastapi import APIRouter, Request

from tandem.protocol import InferenceError, decode_request
from tandem.sidecar import Sidecar

from .durable import PURGE_PREFIX, DurableExecutor
from .models import StepCallError
from .repository import PipelineRepository

log = logging.getLogger(__name__)
JOB_PREFIX = "pipeline--"


def subscriptions(repository: PipelineRepository) -> list[dict[str, Any]]:
    return [
        {"pubsubname": trigger.pubsub, "topic": trigger.topic, "route": f"/events/{name}/{index}"}
        for name, pipeline in sorted(repository.specs.items())
        for index, trigger in enumerate(pipeline.spec.triggers.pubsub)
    ]


def jobs(repository: PipelineRepository) -> dict[str, dict[str, Any]]:
    """The Jobs API job of every schedule trigger, by job name."""
    found = {}
    for name, pipeline in sorted(repository.specs.items()):
        for index, trigger in enumerate(pipeline.spec.triggers.schedule):
            job: dict[str, Any] = {"schedule": trigger.schedule, "data": {"pipeline": name, "trigger": index}}
            if trigger.repeats is not None:
                job["repeats"] = trigger.repeats
            found[f"{JOB_PREFIX}{name}--{index}"] = job
    return found


async def register_jobs(sidecar: Sidecar, wanted: dict[str, dict[str, Any]]) -> None:
    """Schedules every job with the scheduler unless it is there already as wanted (every replica does this at
    start; the scheduler keeps one job per name, so a second replica changes nothing)."""
    for name, job in wanted.items():
        existing = await sidecar.http.get(f"/v1.0-alpha1/jobs/{name}")
        if existing.status_code == 200 and _same_job(existing.json(), job):
            continue
        body = {**job, "overwrite": existing.status_code == 200}
        answer = await sidecar.http.post(f"/v1.0-alpha1/jobs/{name}", json=body)
        if answer.status_code >= 300 and "already exists" not in answer.text:
            raise StepCallError(f"scheduling job {name}: {answer.status_code}: {answer.text}", 503, True)
        log.info("scheduled job %s: %s", name, job["schedule"])


def _same_job(existing: dict[str, Any], job: dict[str, Any]) -> bool:
    data = existing.get("data")
    data = json.loads(data) if isinstance(data, str) else data
    if isinstance(data, dict) and "@type" in data:  # the sidecar answers with the protobuf Value it keeps
        data = data.get("value")
    return (
        existing.get("schedule") == job["schedule"]
        and data == job["data"]
        and existing.get("repeats") == job.get("repeats")
    )


def router(app: Any) -> APIRouter:
    events = APIRouter(include_in_schema=False)

    @events.get("/dapr/subscribe")
    async def subscribe() -> list[dict[str, Any]]:
        await app.state.loaded.wait()
        return subscriptions(app.state.pipelines)

    @events.post("/events/{pipeline}/{index}")
    async def on_event(request: Request, pipeline: str, index: int) -> dict[str, str]:
        """One event, one durable run, its id the event's: a redelivered or duplicated event starts nothing new.
        An event that is no valid request for the pipeline is dropped (to the dead-letter topic, if any)."""
        repository: PipelineRepository = app.state.pipelines
        durable: DurableExecutor = app.state.durable
        event = await request.json()
        spec = repository.specs.get(pipeline)
        if spec is None or index >= len(spec.spec.triggers.pubsub):
            return {"status": "DROP"}
        graph = repository.graphs.get(pipeline)
        if graph is None:
            return {"status": "RETRY" if pipeline in repository.transient else "DROP"}
        trigger = spec.spec.triggers.pubsub[index]
        try:
            _, inputs = decode_request(json.dumps(event.get("data")).encode())
            graph.check_inputs(inputs)
        except InferenceError as error:
            log.warning("event %s is no request for pipeline %s: %s", event.get("id"), pipeline, error)
            return {"status": "DROP"}
        run_id = f"{pipeline}-{_safe(str(event.get('id') or uuid.uuid4().hex))}"
        try:
            await durable.start(graph, run_id, inputs, trigger.results)
        except (InferenceError, StepCallError, httpx.TransportError) as error:
            log.warning("could not start run %s: %s", run_id, error)
            return {"status": "RETRY"}
        return {"status": "SUCCESS"}

    @events.post("/job/{name}")
    async def on_job(name: str) -> dict[str, str]:
        """A tick of a schedule: one durable run; or a run kept long enough: its workflow purged."""
        repository: PipelineRepository = app.state.pipelines
        durable: DurableExecutor = app.state.durable
        if name.startswith(PURGE_PREFIX):
            await durable.purge(name.removeprefix(PURGE_PREFIX))
            return {"purged": name.removeprefix(PURGE_PREFIX)}
        _, _, rest = name.partition(JOB_PREFIX)
        pipeline, _, index = rest.rpartition("--")
        spec, graph = repository.specs.get(pipeline), repository.graphs.get(pipeline)
        if spec is None or graph is None or not index.isdigit() or int(index) >= len(spec.spec.triggers.schedule):
            raise InferenceError(f"job {name!r} belongs to no ready pipeline's schedule", 503)
        trigger = spec.spec.triggers.schedule[int(index)]
        _, inputs = decode_request(json.dumps(trigger.request).encode())
        run_id = f"{pipeline}-{uuid.uuid4().hex}"
        await durable.start(graph, run_id, inputs, trigger.results)
        return {"run": run_id}

    return events


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)[:100]
