"""The durable executor: one generic Dapr workflow that interprets any compiled graph, each step an activity.

The workflow decides (which step may start, what a failure means under its onError) and keeps only small things
in its history: every tensor goes by reference, saved in the state store under the run's id by the activity that
made it (a workflow payload near the sidecar's body limit would stall the workflow). Retries are the workflow's
(each step's `retry` as an activity retry policy), so a run survives the death of this process or of its sidecar:
completed steps are in the workflow's history and are not run again.

The workflow worker runs its own event loop in a thread; activities hand their work to the app's loop, where the
pooled clients live.
"""

import asyncio
import base64
import json
import logging
import time
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any

import numpy as np
from dapr.ext.workflow import (
    DaprWorkflowContext,
    RetryPolicy,
    TaskFailedError,
    WorkflowActivityContext,
    WorkflowRuntime,
    when_any,
)
from dapr.ext.workflow._durabletask.task import NonRetryableError

from tandem.protocol import HEADER_LENGTH, InferenceError, decode_request, encode_request, encode_response
from tandem.protocol import InferenceResponse as Response
from tandem.sidecar import Sidecar

from .executor import STEP_SECONDS, StepSkipped, gather_inputs, gather_outputs, pipeline_outputs
from .expressions import ExpressionError
from .graph import CompiledStep, Graph
from .models import ModelCatalog, StepCallError
from .runs import describe

log = logging.getLogger(__name__)
WORKFLOW = "pipeline"
FINISHED = {"ok", "skipped", "failed", "default"}
# The Jobs API job that purges a run's workflow once it has been kept long enough: `purge--<run id>`.
PURGE_PREFIX = "purge--"
TERMINAL = {"COMPLETED", "FAILED", "TERMINATED"}


def encode_tensors(arrays: dict[str, np.ndarray]) -> str:
    """Tensors as one state-store value: Triton's binary layout (BYTES stay bytes), base64 in JSON."""
    body, headers = encode_request(arrays)
    return json.dumps({"header": int(headers[HEADER_LENGTH]), "body": base64.b64encode(body).decode()})


def decode_tensors(value: Any) -> dict[str, np.ndarray]:
    stored = json.loads(value) if isinstance(value, str) else value
    _, arrays = decode_request(base64.b64decode(stored["body"]), str(stored["header"]))
    return arrays


class DurableExecutor:
    def __init__(
        self,
        graphs: Callable[[], dict[str, Graph]],
        catalog: ModelCatalog,
        sidecar: Sidecar,
        store: str,
        pubsub: str,
        keep_seconds: float,
    ):
        self.graphs = graphs
        self.catalog = catalog
        self.sidecar = sidecar
        self.store = store
        self.pubsub = pubsub
        self.keep_seconds = keep_seconds
        self.loop: asyncio.AbstractEventLoop | None = None
        self.runtime: WorkflowRuntime | None = None

    # The worker: started with the app, watched, started again if it stops (its stream can end on a CANCELLED).

    def _new_runtime(self) -> WorkflowRuntime:
        # Fresh functions for each runtime: registering marks the function object itself.
        def workflow(ctx: DaprWorkflowContext, run: dict[str, Any]):
            return (yield from self.workflow(ctx, run))

        async def run_step(ctx: WorkflowActivityContext, data: dict[str, Any]) -> dict[str, Any]:
            return await self._on_app_loop(self._run_step(data))

        async def finish_run(ctx: WorkflowActivityContext, data: dict[str, Any]) -> list[str]:
            return await self._on_app_loop(self._finish_run(data))

        runtime = WorkflowRuntime()  # the sidecar's gRPC API: DAPR_GRPC_PORT, as Dapr sets it
        runtime.register_workflow(workflow, name=WORKFLOW)
        runtime.register_activity(run_step, name="run_step")
        runtime.register_activity(finish_run, name="finish_run")
        return runtime

    async def supervise(self, compiled: asyncio.Event) -> None:
        """Keeps a connected workflow worker; every few seconds, a stopped one is replaced. The first starts once
        the pipelines are compiled: runs resumed after a restart need their graphs."""
        self.loop = asyncio.get_running_loop()
        await compiled.wait()
        while True:
            ready = self.runtime is not None and await asyncio.to_thread(self.runtime.wait_for_worker_ready, 0.2)
            if not ready:
                if self.runtime is not None:
                    await asyncio.to_thread(self._stop, self.runtime)
                self.runtime = self._new_runtime()
                try:
                    await asyncio.to_thread(self.runtime.start)
                    log.info("workflow worker connected to its sidecar")
                except Exception as error:  # the sidecar is not up yet, or has no placement: try again
                    log.warning("workflow worker could not start: %s", error)
            await asyncio.sleep(5.0 if ready else 1.0)

    @staticmethod
    def _stop(runtime: WorkflowRuntime) -> None:
        try:
            runtime.shutdown()
        except Exception as error:
            log.warning("stopping the workflow worker: %s", error)

    def shutdown(self) -> None:
        if self.runtime is not None:
            self._stop(self.runtime)

    async def _on_app_loop(self, coroutine: Coroutine) -> Any:
        assert self.loop is not None, "the supervisor sets the app's loop before any activity can run"
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coroutine, self.loop))

    # Starting runs and reading them back.

    async def start(self, graph: Graph, run_id: str, inputs: dict[str, np.ndarray], results: str | None) -> bool:
        """Starts run `run_id` of `graph` unless a run of that id exists; returns whether it started one."""
        if await self.status(run_id) is not None:
            return False
        await self._save(f"{run_id}:input", encode_tensors(inputs))
        run = {"id": run_id, "pipeline": graph.name, "version": graph.pipeline.version, "results": results}
        response = await self.sidecar.http.post(
            f"/v1.0/workflows/dapr/{WORKFLOW}/start", params={"instanceID": run_id}, json=run
        )
        if response.status_code >= 300:
            if await self.status(run_id) is not None:  # another delivery of the same event started it meanwhile
                return False
            raise InferenceError(f"the sidecar did not start the run: {response.status_code}: {response.text}", 503)
        await self.schedule_purge(run_id)
        return True

    async def schedule_purge(self, run_id: str) -> None:
        """Asks the scheduler to purge the run's workflow (its history in the actor state store) after the time runs
        are kept: a job, so that it happens once, at one replica, even if this one is gone by then. Until then the
        run's id also keeps a redelivered event from running again."""
        job = {"dueTime": f"{int(self.keep_seconds)}s", "data": {"run": run_id}}
        response = await self.sidecar.http.post(f"/v1.0-alpha1/jobs/{PURGE_PREFIX}{run_id}", json=job)
        if response.status_code >= 300:
            log.warning("run %s will not be purged: %s %s", run_id, response.status_code, response.text[:300])

    async def purge(self, run_id: str) -> None:
        """Purges a finished run's workflow; one still running is looked at again after the same time."""
        state = await self.status(run_id)
        if state is None:
            return
        if state.get("runtimeStatus") not in TERMINAL:
            await self.schedule_purge(run_id)
            return
        response = await self.sidecar.http.post(f"/v1.0/workflows/dapr/{run_id}/purge")
        if response.status_code >= 300:
            raise InferenceError(f"purging run {run_id}: {response.status_code}: {response.text[:300]}", 503)

    async def status(self, run_id: str) -> dict[str, Any] | None:
        response = await self.sidecar.http.get(f"/v1.0/workflows/dapr/{run_id}")
        if response.status_code != 200:
            return None
        return response.json()

    async def record(self, run_id: str, pipeline: str) -> dict[str, Any] | None:
        """The run as GET /v2/pipelines/<p>/runs/<id> shows it: status, and each step's status, time, outputs."""
        state = await self.status(run_id)
        if state is None:
            return None
        properties = state.get("properties", {})
        run = json.loads(properties.get("dapr.workflow.input") or "{}")
        if run.get("pipeline") != pipeline:
            return None
        steps = json.loads(properties.get("dapr.workflow.custom_status") or "{}")
        output = json.loads(properties.get("dapr.workflow.output") or "{}")
        for name, step in steps.items():
            if step["status"] == "ok":
                stored, _ = await self.sidecar.get_state(self.store, f"{run_id}:{name}")
                if stored is not None:
                    step["outputs"] = {key: describe(array) for key, array in decode_tensors(stored).items()}
        runtime_status = state.get("runtimeStatus", "")
        status = {"COMPLETED": output.get("status", "ok"), "FAILED": "failed", "TERMINATED": "failed"}
        return {
            "id": run_id,
            "pipeline": pipeline,
            "version": run.get("version"),
            "executor": "durable",
            "status": status.get(runtime_status, "running"),
            "workflow_status": runtime_status,
            "error": output.get("error", ""),
            "started": state.get("createdAt"),
            "updated": state.get("lastUpdatedAt"),
            "steps": steps,
        }

    async def _save(self, key: str, value: str) -> None:
        item = {"key": key, "value": value, "metadata": {"ttlInSeconds": str(int(self.keep_seconds))}}
        response = await self.sidecar.http.post(f"/v1.0/state/{self.store}", content=json.dumps([item]))
        if response.status_code >= 300:
            raise StepCallError(f"saving {key} in {self.store}: {response.status_code}: {response.text}", 503, True)

    # The workflow: deterministic, small; it runs in the worker's thread and replays from its history.

    def workflow(self, ctx: DaprWorkflowContext, run: dict[str, Any]):
        graph = self.graphs().get(run["pipeline"])
        if graph is None or graph.pipeline.version != run["version"]:
            return {"status": "failed", "error": f"pipeline {run['pipeline']} version {run['version']} is not served"}
        steps: dict[str, dict[str, Any]] = {}
        waiting = list(graph.steps)
        running: dict[Any, str] = {}
        failure = ""
        while running or (waiting and not failure):
            for name in [] if failure else list(waiting):
                step = graph.steps[name]
                if step.depends <= steps.keys():
                    waiting.remove(name)
                    made = sorted(dep for dep in step.depends if steps[dep]["status"] in ("ok", "default"))
                    task: Any = ctx.call_activity(
                        "run_step",
                        input={"run": run["id"], "pipeline": graph.name, "step": name, "made": made},
                        retry_policy=_retry_policy(step),
                    )
                    running[task] = name
            finished = yield when_any(list(running))
            name = running.pop(finished)
            try:
                steps[name] = finished.get_result()
            except TaskFailedError as error:
                steps[name] = _failed(graph.steps[name], error)
                if steps[name]["status"] == "failed" and graph.steps[name].spec.on_error == "fail":
                    failure = f"step '{name}' (model {graph.steps[name].spec.model}) failed: {steps[name]['reason']}"
            ctx.set_custom_status(json.dumps(steps))
        for name in waiting:
            steps[name] = {"status": "skipped", "reason": "the run failed before it started"}
        ctx.set_custom_status(json.dumps(steps))
        if failure:
            return {"status": "failed", "error": failure}
        produced = {name: step["status"] for name, step in steps.items() if step["status"] in ("ok", "default")}
        outputs = yield ctx.call_activity(
            "finish_run",
            input={"run": run["id"], "pipeline": graph.name, "made": produced, "results": run.get("results")},
            retry_policy=RetryPolicy(first_retry_interval=timedelta(seconds=1), max_number_of_attempts=5),
        )
        return {"status": "ok", "outputs": outputs}

    # Activities: the app's loop does the work.

    async def _tensors(self, graph: Graph, run_id: str, made: dict[str, str] | list[str], wanted: set[str]):
        """The tensors named in `wanted` that exist: the run's inputs and the outputs of the steps that made any."""
        tensors: dict[str, np.ndarray] = {}
        if any(ref.startswith("$input.") for ref in wanted):
            stored = await self._stored(f"{run_id}:input")
            tensors.update({f"$input.{name}": array for name, array in decode_tensors(stored).items()})
        statuses = made if isinstance(made, dict) else dict.fromkeys(made, "ok")
        for name, status in statuses.items():
            if not any(ref.startswith(f"{name}.") for ref in wanted):
                continue
            step = graph.steps[name]
            if status == "default":
                arrays = dict(step.defaults or {})
            else:
                arrays = decode_tensors(await self._stored(f"{run_id}:{name}"))
            tensors.update({f"{name}.{output}": array for output, array in arrays.items()})
        return tensors

    async def _stored(self, key: str) -> Any:
        """A run's stored tensors. They expire with the run (PIPELINES_RUNS_SECONDS): a run resumed later than that,
        e.g. one in flight when the stack stopped and started again much later, cannot go on, and fails at once."""
        stored, _ = await self.sidecar.get_state(self.store, key)
        if stored is None:
            raise NonRetryableError(
                f"{key} is no longer stored: a run's data is kept for {self.keep_seconds:g} s, and this run "
                "resumed later than that"
            )
        return stored

    async def _run_step(self, data: dict[str, Any]) -> dict[str, Any]:
        graph = self.graphs()[data["pipeline"]]
        step = graph.steps[data["step"]]
        started = time.perf_counter()
        outcome = "failed"
        try:
            wanted = set(step.spec.inputs.values()) | (step.when.references if step.when else set())
            if step.spec.for_each is not None:
                wanted.add(step.spec.for_each.over)
            tensors = await self._tensors(graph, data["run"], data["made"], wanted)
            try:
                calls = gather_inputs(step, tensors)
            except StepSkipped as why:
                outcome = "skipped"
                return {"status": "skipped", "reason": str(why), "seconds": time.perf_counter() - started}
            results = await asyncio.gather(*(self._call(step, inputs) for inputs in calls))
            await self._save(f"{data['run']}:{step.name}", encode_tensors(gather_outputs(step, list(results))))
            outcome = "ok"
            return {"status": "ok", "reason": "", "seconds": time.perf_counter() - started, "calls": len(calls)}
        except (InferenceError, ExpressionError) as error:
            raise NonRetryableError(str(error)) from None
        finally:
            STEP_SECONDS.labels(graph.name, step.name, outcome).observe(time.perf_counter() - started)

    async def _call(self, step: CompiledStep, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            async with asyncio.timeout(step.spec.timeout):
                return await self.catalog.infer(step.spec.model, step.spec.version, inputs, step.spec.timeout)
        except TimeoutError:
            raise RuntimeError(f"no answer within {step.spec.timeout:g} s (the step's timeout)") from None
        except StepCallError as error:
            if error.retryable:
                raise RuntimeError(str(error)) from None  # the workflow's retry policy tries it again
            raise NonRetryableError(str(error)) from None

    async def _finish_run(self, data: dict[str, Any]) -> list[str]:
        """Computes the pipeline's outputs, publishes them when the run's trigger names a topic; returns their
        names."""
        graph = self.graphs()[data["pipeline"]]
        wanted = set().union(*(expression.references for expression, _ in graph.outputs.values()))
        outputs = pipeline_outputs(graph, await self._tensors(graph, data["run"], data["made"], wanted))
        await self._save(f"{data['run']}:outputs", encode_tensors(outputs))
        if data.get("results"):
            response = Response(model_name=graph.name, model_version=graph.pipeline.version, id=data["run"], outputs=[])
            body, _ = encode_response(response.model_name, response.model_version, response.id, outputs, set())
            await self.sidecar.publish(self.pubsub, data["results"], {"run": data["run"], **json.loads(body)})
        return sorted(outputs)


def _retry_policy(step: CompiledStep) -> RetryPolicy:
    return RetryPolicy(
        first_retry_interval=timedelta(seconds=max(step.spec.retry.backoff, 0.001)),
        max_number_of_attempts=step.spec.retry.attempts,
        backoff_coefficient=2.0,
    )


def _failed(step: CompiledStep, error: TaskFailedError) -> dict[str, Any]:
    reason = error.details.message or str(error)
    if step.defaults is not None:
        return {"status": "default", "reason": reason}
    if step.spec.on_error == "skip":
        return {"status": "failed", "reason": f"{reason} (onError: skip)"}
    return {"status": "failed", "reason": reason}
