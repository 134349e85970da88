"""The rendered base manifests, run locally: each model service and its daprd started with the app id, app port,
Configuration, tokens, body limit, health check and environment their Deployment gives them, then one app calls
another through its sidecar.

What differs from a cluster, and why: ports are free ones (the manifests' 8001-8003 are those of `make run`, which
may be running); /models is the local model repository; components are the local ones (Redis of this test); app ids get this stack's suffix (sidecars of other stacks on the host
would answer the manifests' own over mDNS);
accessControl is left out of the Configuration, because it matches callers by their mTLS identity and a sidecar
without the control plane's Sentry has none (every call would meet the default action, deny).
"""

import importlib.util
import re
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from .stack import DAPRD, ROOT, Process, Sidecar, Stack, environment, free_port, wait_until

KUSTOMIZE = next(iter(sorted((ROOT / ".runtime").glob("kustomize-*/kustomize"))), None)
MODELS = ROOT / "models"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(KUSTOMIZE is None, reason="needs kustomize: run `make k8s-check` first"),
]


def _check_module():
    spec = importlib.util.spec_from_file_location("k8s_check", ROOT / "k8s" / "check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def model_services(objects: list[dict]) -> dict[str, dict]:
    """app id -> Deployment, for the apps that serve models (they run alone: no other app needed to be ready)."""
    check = _check_module()
    return {
        app: deployment
        for app, deployment in check.dapr_apps(objects).items()
        if (ROOT / "apps" / app).is_dir()
        and any(item["name"].endswith("_MODEL_REPOSITORY") for item in env_of(deployment))
    }


def env_of(deployment: dict) -> list[dict]:
    return deployment["spec"]["template"]["spec"]["containers"][0]["env"]


def app_environment(deployment: dict, port: int, stack: Stack, sidecar_port: int) -> dict[str, str]:
    """The container's environment as the manifest gives it, secrets read from the Secrets the annotations name."""
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    secrets = {annotations["dapr.io/api-token-secret"]: stack.dapr_api_token}
    secrets[annotations["dapr.io/app-token-secret"]] = stack.app_api_token
    env = {}
    for item in env_of(deployment):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            env[item["name"]] = secrets[item["valueFrom"]["secretKeyRef"]["name"]]
    assert env["APP_PORT"] == annotations["dapr.io/app-port"]
    env["APP_PORT"] = str(port)
    for name, value in env.items():
        if value == "/models":
            env[name] = str(MODELS)
    # Set in the pod by the injector.
    env["DAPR_HTTP_PORT"] = str(sidecar_port)
    return env


def sidecar_command(
    deployment: dict, app_id: str, app_port: int, http_port: int, config: Path, resources: Path
) -> list[str]:
    """daprd as the injector would start it from the pod's annotations, with the app id `app_id`."""
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    command = [
        str(DAPRD),
        "--app-id", app_id,
        "--app-port", str(app_port),
        "--config", str(config),
        "--dapr-http-port", str(http_port),
        "--dapr-grpc-port", str(free_port()),
        "--dapr-internal-grpc-port", str(free_port()),
        "--metrics-port", str(free_port()),
        "--resources-path", str(resources),
    ]  # fmt: skip
    if annotations.get("dapr.io/log-as-json") == "true":
        command.append("--log-as-json")
    if annotations.get("dapr.io/enable-app-health-check") == "true":
        command += [
            "--enable-app-health-check",
            "--app-health-check-path",
            annotations["dapr.io/app-health-check-path"],
        ]
    if "dapr.io/max-body-size" in annotations:
        command += ["--max-body-size", annotations["dapr.io/max-body-size"]]
    return command


def local_configuration(objects: list[dict], name: str, folder: Path) -> Path:
    """The rendered Configuration as a file for daprd, without accessControl (see the module's docstring)."""
    config = next(obj for obj in objects if obj["kind"] == "Configuration" and obj["metadata"]["name"] == name)
    spec = {key: value for key, value in config["spec"].items() if key != "accessControl"}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**config, "spec": spec}))
    return path


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    return _check_module().render(str(KUSTOMIZE), ROOT / "k8s" / "base")


@pytest.fixture(scope="module")
def running(stack: Stack, rendered: list[dict]) -> dict[str, Sidecar]:
    resources = stack.components({})
    sidecars = {}
    for app, deployment in model_services(rendered).items():
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        app_port, http_port = free_port(), free_port()
        env = app_environment(deployment, app_port, stack, http_port)
        command = [sys.executable, *_container_command(app)]
        process = Process.start(app, command, stack.work, environment(**env))
        stack.processes.append(process)
        wait_until(
            lambda port=app_port: httpx.get(f"http://127.0.0.1:{port}/v2/health/ready").status_code == 200,
            f"{app} ready",
            timeout=120,
            process=process,
        )
        config = local_configuration(rendered, annotations["dapr.io/config"], stack.work)
        sidecar_env = environment(
            DAPR_API_TOKEN=stack.dapr_api_token,
            APP_API_TOKEN=stack.app_api_token,
            **dict(re.findall(r"(\w+)=([^,]+)", annotations.get("dapr.io/env", ""))),
        )
        app_id = stack.app_id(annotations["dapr.io/app-id"])
        command = sidecar_command(deployment, app_id, app_port, http_port, config, resources)
        daprd = Process.start(f"daprd-{app}", command, stack.work, sidecar_env)
        stack.processes.append(daprd)
        sidecar = Sidecar(app_id, http_port, daprd)
        wait_until(
            lambda s=sidecar: httpx.get(f"{s.url}/v1.0/healthz").status_code == 204,
            f"daprd {app} healthy",
            process=daprd,
        )
        sidecars[app] = sidecar
    return sidecars


def _container_command(app: str) -> list[str]:
    """The Dockerfile's CMD (`python -m <app>`), less the interpreter."""
    check = _check_module()
    steps = check.instructions(ROOT / "apps" / app / "Dockerfile")
    command = yaml.safe_load([args for step, args in steps if step == "CMD"][-1])
    assert command[0] == "python"
    return command[1:]


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
