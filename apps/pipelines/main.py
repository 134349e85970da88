"""The pipelines service: model graphs declared in YAML (`pipelines/*.yaml`), each served as an OIP model.

HTTP requests run in-request (executor.py); events and schedules run durably on Dapr Workflow (durable.py).
"""

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from fastapi import APIRouter, FastAPI, Request, Response
from pydantic_settings import SettingsConfigDict

from tandem.protocol import (
    HEADER_LENGTH,
    InferenceError,
    InferenceResponse,
    ModelNotFound,
    binary_outputs,
    decode_request,
    encode_response,
    index_ready_only,
)
from tandem.server import make_base_app
from tandem.settings import AppSettings, DaprSettings, Names

from . import triggers
from .durable import DurableExecutor
from .executor import StepFailed, execute, response_parameters
from .graph import Graph
from .models import ModelCatalog, StepCallError
from .repository import PipelineRepository
from .runs import Run, RunStore, StepRecord

log = logging.getLogger(__name__)
# What steps pass on to the models they call, so that every step's span joins the caller's trace.
TRACE_HEADERS = ("traceparent", "tracestate")


class PipelinesSettings(AppSettings):
    model_config = SettingsConfigDict(env_prefix="PIPELINES_", extra="ignore")

    port: int = 8007
    # The folder of Pipeline files (*.yaml).
    folder: Path = Path("pipelines")
    # The app ids of the services whose models steps may call.
    services: Names = ["vision", "nlp", "regression"]
    # Images pass through (vision's limit is 16 MiB).
    max_body_bytes: int = 16 * 1024 * 1024
    # In-request runs kept for GET /v2/pipelines/<p>/runs/<id>: at most this many, for at most this long.
    runs_kept: int = 1000
    runs_seconds: float = 3600.0
    # How often pipelines whose models could not be read yet are compiled again.
    retry_seconds: float = 2.0
    # The durable executor (events, schedules, POST /v2/pipelines/<p>/runs) on Dapr Workflow: its sidecar needs
    # placement and the scheduler. Tensors of durable runs live in this state store, kept runs_seconds.
    durable: bool = True
    state_store: str = "workflowstore"
    pubsub: str = "pubsub"


settings = PipelinesSettings()
dapr = DaprSettings()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    catalog = ModelCatalog(dapr.sidecar_url, dapr.dapr_api_token, settings.services)
    app.state.catalog = catalog
    app.state.pipelines = PipelineRepository(settings.folder, catalog)
    app.state.runs = RunStore(settings.runs_kept, settings.runs_seconds)
    app.state.loaded = asyncio.Event()
    app.state.durable = DurableExecutor(
        lambda: app.state.pipelines.graphs,
        catalog,
        app.state.sidecar,
        settings.state_store,
        settings.pubsub,
        settings.runs_seconds,
    )
    tasks = [asyncio.create_task(keep_compiled(app))]
    if settings.durable:
        tasks.append(asyncio.create_task(app.state.durable.supervise(app.state.loaded)))
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
        await asyncio.to_thread(app.state.durable.shutdown)
        await catalog.aclose()


async def keep_compiled(app: FastAPI) -> None:
    """Compiles every pipeline once, then again those whose models could not be read (under `dapr run` the
    model services start beside this one)."""
    repository: PipelineRepository = app.state.pipelines
    await repository.load_all()
    app.state.loaded.set()
    jobs_wanted = triggers.jobs(repository) if settings.durable else {}
    while True:
        if jobs_wanted:
            try:
                await triggers.register_jobs(app.state.sidecar, jobs_wanted)
                jobs_wanted = {}
            except (StepCallError, httpx.TransportError) as error:
                log.warning("schedules not registered yet: %s", error)
        await asyncio.sleep(settings.retry_seconds)
        if repository.transient:
            try:
                await repository.catalog.refresh()
                await repository.retry_transient()
            except Exception:  # a bug here must not stop the retries for good
                log.exception("compiling pipelines again failed")


async def ready(request: Request) -> tuple[bool, str]:
    """Ready once the folder has been read and every pipeline compiled once (ready or refused)."""
    if not request.app.state.loaded.is_set():
        return False, "the pipelines folder has not been read yet"
    return True, ""


async def run_pipeline(app: FastAPI, graph: Graph, inputs: dict[str, np.ndarray], headers: dict[str, str]) -> Run:
    """Runs `graph` in this request; the run (kept for GET .../runs/<id>) holds outputs or the failure."""
    catalog: ModelCatalog = app.state.catalog
    run = Run(graph.name, graph.pipeline.version, {name: StepRecord(s.spec.model) for name, s in graph.steps.items()})
    app.state.runs.add(run)

    async def call(model: str, version: str | None, arrays: dict[str, np.ndarray], timeout: float):
        return await catalog.infer(model, version, arrays, timeout, headers)

    started = time.perf_counter()
    try:
        run.outputs = await execute(graph, inputs, call, run)
        run.status = "ok"
    except StepFailed as error:
        run.status, run.error = "failed", str(error)
        raise InferenceError(f"pipeline '{graph.name}' run {run.id}: {error}", error.status) from None
    except InferenceError as error:
        run.status, run.error = "failed", str(error)
        raise InferenceError(f"pipeline '{graph.name}' run {run.id}: {error}", error.status_code) from None
    finally:
        run.seconds = time.perf_counter() - started
    return run


router = APIRouter(tags=["Pipelines (Open Inference Protocol v2)"])


def repository(request: Request) -> PipelineRepository:
    return request.app.state.pipelines


@router.get("/v2")
async def server_metadata() -> dict[str, Any]:
    return {"name": "tandem-pipelines", "version": package_version("tandem"), "extensions": ["model_repository"]}


@router.get("/v2/models/{pipeline}")
@router.get("/v2/models/{pipeline}/versions/{version}")
async def pipeline_metadata(request: Request, pipeline: str, version: str | None = None) -> dict[str, Any]:
    return repository(request).graph(pipeline, version).metadata()


@router.get("/v2/models/{pipeline}/ready", response_class=Response)
@router.get("/v2/models/{pipeline}/versions/{version}/ready", response_class=Response)
async def pipeline_ready(request: Request, pipeline: str, version: str | None = None) -> Response:
    repository(request).graph(pipeline, version)
    return Response(status_code=200)


@router.post("/v2/models/{pipeline}/infer", response_model=InferenceResponse)
@router.post("/v2/models/{pipeline}/versions/{version}/infer", response_model=InferenceResponse)
async def infer(request: Request, pipeline: str, version: str | None = None) -> Response:
    """Runs the pipeline on an OIP request (JSON or binary tensors); the response's parameters name its run and
    which steps ran, were skipped or failed."""
    graph = repository(request).graph(pipeline, version)
    body_request, inputs = decode_request(await request.body(), request.headers.get(HEADER_LENGTH))
    graph.check_inputs(inputs)
    wanted = [output.name for output in body_request.outputs or []]
    unknown = sorted(set(wanted) - graph.outputs.keys())
    if unknown:
        raise InferenceError(f"pipeline '{pipeline}' has no outputs {unknown}; its outputs: {sorted(graph.outputs)}")
    headers = {name: value for name in TRACE_HEADERS if (value := request.headers.get(name))}
    run = await run_pipeline(request.app, graph, inputs, headers)
    outputs = {name: array for name, array in run.outputs.items() if not wanted or name in wanted}
    response = InferenceResponse(
        model_name=graph.name,
        model_version=graph.pipeline.version,
        id=body_request.id,
        parameters=response_parameters(run),
        outputs=[],
    )
    content, response_headers = encode_response(
        response.model_name,
        response.model_version,
        response.id,
        outputs,
        binary_outputs(body_request, list(outputs)),
        response.parameters,
    )
    return Response(content, headers=response_headers)


@router.post("/v2/repository/index")
async def repository_index(request: Request) -> list[dict[str, Any]]:
    ready_only = index_ready_only(await request.body())
    return [entry for entry in repository(request).index() if not ready_only or entry["state"] == "READY"]


@router.post("/v2/repository/models/{pipeline}/load", response_class=Response)
async def load_pipeline(request: Request, pipeline: str) -> Response:
    """Reads the pipeline's file again and compiles it: 400 naming step and tensor when it cannot work."""
    await repository(request).load(pipeline)
    return Response(status_code=200)


@router.post("/v2/repository/models/{pipeline}/unload", response_class=Response)
async def unload_pipeline(request: Request, pipeline: str) -> Response:
    repository(request).unload(pipeline)
    return Response(status_code=200)


@router.post("/v2/pipelines/{pipeline}/runs", status_code=202)
async def start_durable_run(request: Request, pipeline: str) -> dict[str, Any]:
    """Starts a durable run (Dapr Workflow) on an OIP request; GET .../runs/<id> follows it."""
    graph = repository(request).graph(pipeline)
    _, inputs = decode_request(await request.body(), request.headers.get(HEADER_LENGTH))
    graph.check_inputs(inputs)
    run_id = f"{pipeline}-{uuid.uuid4().hex}"
    await request.app.state.durable.start(graph, run_id, inputs, None)
    return {"id": run_id, "pipeline": pipeline}


@router.get("/v2/pipelines/{pipeline}/runs/{run_id}")
async def get_run(request: Request, pipeline: str, run_id: str) -> dict[str, Any]:
    """A run: each step's status, time and outputs (and inputs, for in-request runs of this replica)."""
    run = request.app.state.runs.get(run_id)
    if run is not None and run.pipeline == pipeline:
        return run.json()
    record = await request.app.state.durable.record(run_id, pipeline) if settings.durable else None
    if record is None:
        raise ModelNotFound(
            f"no run '{run_id}' of pipeline '{pipeline}' here (runs are kept {settings.runs_seconds:g} s, "
            f"at most {settings.runs_kept})"
        )
    return record


def make() -> FastAPI:
    app = make_base_app("pipelines", settings, dapr, routers=(router,), lifespan=lifespan, ready=ready)
    # Triggers are read from the app's state at request time: the routes exist before the folder is read.
    app.include_router(triggers.router(app))
    return app


app = make()
