"""A durable run with the pipelines' and regression's sidecars, placement and the scheduler on mTLS (certificates
from Sentry), as `make run` starts them; its own module, so its app ids are its stack's alone."""

from pathlib import Path

import pytest

from .durable import DurableDeployment, pipelines_folder
from .stack import Stack, wait_until

pytestmark = pytest.mark.integration


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
