"""The rendered base manifests, run locally: each model service and its daprd started with the app id, app port,
Configuration, tokens, body limit, health check and environment their Deployment gives them, then one app calls
another through its sidecar.

What differs from a cluster, and why: ports are free ones (the manifests' 8001-8003 are those of `make run`, which
may be running); /models is the local model repository; components are the local ones (Redis of this test); app ids get this stack's suffix (sidecars of other stacks on the host
would answer the manifests' own over mDNS);
accessControl is left out of the Configuration, because it matches callers by their mTLS identity and a sidecar
without the control plane's Sentry has none (every call would meet the default action, deny).
"""

import httpx
import pytest

from .manifests import (
    KUSTOMIZE,
    app_container,
    app_environment,
    check_module,
    image_command,
    local_configuration,
    render,
    sidecar_command,
    sidecar_environment,
)
from .stack import ROOT, Process, Sidecar, Stack, environment, free_port, wait_until

MODELS = ROOT / "models"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(KUSTOMIZE is None, reason="needs kustomize: run `make k8s-check` first"),
]


def model_services(objects: list[dict]) -> dict[str, dict]:
    """app id -> Deployment, for the apps that serve models (they run alone: no other app needed to be ready)."""
    return {
        app: deployment
        for app, deployment in check_module().dapr_apps(objects).items()
        if (ROOT / "apps" / app).is_dir()
        and any(item["name"].endswith("_MODEL_REPOSITORY") for item in app_container(deployment)["env"])
    }


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    return render(ROOT / "k8s" / "base")


@pytest.fixture(scope="module")
def running(stack: Stack, rendered: list[dict]) -> dict[str, Sidecar]:
    resources = stack.components({})
    sidecars = {}
    for app, deployment in model_services(rendered).items():
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        app_port, http_port = free_port(), free_port()
        app_id = stack.app_id(annotations["dapr.io/app-id"])
        env = app_environment(deployment, app_port, stack, http_port, MODELS, app_id)
        command = image_command(ROOT / "apps" / app / "Dockerfile")
        process = Process.start(app, command, stack.work, environment(**env))
        stack.processes.append(process)
        wait_until(
            lambda port=app_port: httpx.get(f"http://127.0.0.1:{port}/v2/health/ready").status_code == 200,
            f"{app} ready",
            timeout=120,
            process=process,
        )
        config = local_configuration(rendered, annotations["dapr.io/config"], stack.work)
        command = sidecar_command(deployment, app_id, app_port, http_port, config, resources)
        daprd = Process.start(f"daprd-{app}", command, stack.work, sidecar_environment(deployment, stack))
        stack.processes.append(daprd)
        sidecar = Sidecar(app_id, http_port, daprd)
        wait_until(
            lambda s=sidecar: httpx.get(f"{s.url}/v1.0/healthz").status_code == 204,
            f"daprd {app} healthy",
            process=daprd,
        )
        sidecars[app] = sidecar
    return sidecars


def test_model_services_come_up_healthy(running: dict[str, Sidecar]) -> None:
    assert set(running) == {"vision", "nlp", "regression"}


def test_one_app_invokes_another_through_its_sidecar(running: dict[str, Sidecar], stack: Stack) -> None:
    headers = {"dapr-api-token": stack.dapr_api_token}
    body = {"rows": [{"age": 0.04, "sex": 0.05, "bmi": 0.06, "bp": 0.02, "s1": -0.04, "s2": -0.03}]}
    body["rows"][0] |= {"s3": -0.04, "s4": 0.0, "s5": 0.02, "s6": -0.02}
    for caller in ("vision", "nlp"):
        answer = httpx.post(
            f"{running[caller].url}/v1.0/invoke/{running['regression'].app_id}/method/predict/diabetes",
            json=body,
            headers=headers,
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["model"] == "diabetes"
        assert isinstance(answer.json()["predictions"][0]["variable"], float)
    answer = httpx.post(
        f"{running['regression'].url}/v1.0/invoke/{running['nlp'].app_id}/method/sentiment",
        json={"texts": ["I love it"]},
        headers=headers,
    )
    assert answer.status_code == 200, answer.text


def test_the_sidecar_refuses_callers_without_the_api_token(running: dict[str, Sidecar]) -> None:
    answer = httpx.post(
        f"{running['vision'].url}/v1.0/invoke/{running['regression'].app_id}/method/predict/diabetes", json={}
    )
    assert answer.status_code == 401
