"""A scheduled pipeline (Dapr's Jobs API) with two replicas of the pipelines app, on real sidecars, placement,
scheduler, Redis and models: a schedule of three ticks gives three runs, not six. And a durable run with the
sidecar, placement and the scheduler on mTLS (certificates from Sentry), as `make run` runs them."""

import time
from pathlib import Path

import httpx
import pytest

from .durable import DurableDeployment, pipelines_folder
from .stack import Stack, wait_until

pytestmark = pytest.mark.integration
TICKS, EVERY = 3, 2.0  # tick.yaml: "@every 2s", repeats 3


def test_a_scheduled_pipeline_fires_once_per_tick_with_two_replicas(
    stack: Stack, model_repository: Path, tmp_path_factory: pytest.TempPathFactory
):
    folder = pipelines_folder(tmp_path_factory.mktemp("pipelines"), "tick")
    deployment = DurableDeployment(stack, model_repository, folder)
    before = deployment.model_calls()
    # Both register the same job at start; the scheduler keeps one. The second starts once the job exists (two
    # replicas starting at the same instant can both create it, which restarts a job's count of repeats).
    deployment.start_replica()
    job_url = f"{deployment.replicas[0].sidecar.url}/v1.0-alpha1/jobs/pipeline--tick--0"
    wait_until(lambda: httpx.get(job_url, headers=deployment.headers).status_code == 200, "the job registered")
    deployment.start_replica()
    wait_until(lambda: deployment.model_calls() - before >= TICKS, f"{TICKS} ticks run", timeout=120)
    # Long enough for the ticks a second replica would add, had both fired each tick.
    time.sleep(3 * EVERY)
    assert deployment.model_calls() - before == TICKS
    # The job is done with its ticks: the scheduler has let it go.
    job = httpx.get(
        f"{deployment.replicas[1].sidecar.url}/v1.0-alpha1/jobs/pipeline--tick--0", headers=deployment.headers
    )
    assert "job not found" in job.text


def test_a_durable_run_with_mtls_to_placement_and_the_scheduler(
    stack: Stack, model_repository: Path, tmp_path_factory: pytest.TempPathFactory
):
    folder = pipelines_folder(tmp_path_factory.mktemp("pipelines"), "ensemble")
    deployment = DurableDeployment(stack, model_repository, folder, sentry=stack.start_sentry())
    deployment.start_replica()
    deployment.wait_ready("ensemble")
    request = {"inputs": [{"name": "input", "shape": [1, 10], "datatype": "FP32", "data": [0.0] * 10}]}
    answer = deployment.call("POST", "v2/pipelines/ensemble/runs", json=request)
    assert answer.status_code == 202, answer.text
    run_id = answer.json()["id"]
    wait_until(lambda: deployment.run("ensemble", run_id).get("status") == "ok", "the durable run done", timeout=60)
