"""Runs apps as the rendered Kubernetes manifests configure them: the container's environment and command, the
sidecar the injector would start from the pod's annotations, the Configuration it loads."""

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import yaml

from .stack import DAPRD, ROOT, Stack, environment, free_port

KUSTOMIZE = next(iter(sorted((ROOT / ".runtime").glob("kustomize-*/kustomize"))), None)


def check_module() -> ModuleType:
    """k8s/check.py, which renders the manifests and knows how to read them."""
    spec = importlib.util.spec_from_file_location("k8s_check", ROOT / "k8s" / "check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def render(folder: Path) -> list[dict]:
    return check_module().render(str(KUSTOMIZE), folder)


def app_container(deployment: dict) -> dict:
    return deployment["spec"]["template"]["spec"]["containers"][0]


def container_environment(
    deployment: dict, container: dict, secrets: dict[str, dict[str, str]], app_id: str
) -> dict[str, str]:
    """A container's environment as the manifest gives it: values, Secrets' keys from `secrets` (Secret -> key ->
    value), and fields of the pod's annotations, whose dapr.io/app-id is `app_id` here."""
    annotations = deployment["spec"]["template"]["metadata"]["annotations"] | {"dapr.io/app-id": app_id}
    env = {}
    for item in container.get("env", []):
        source = item.get("valueFrom", {})
        if "value" in item:
            env[item["name"]] = item["value"]
        elif "secretKeyRef" in source:
            env[item["name"]] = secrets[source["secretKeyRef"]["name"]][source["secretKeyRef"]["key"]]
        else:
            field = re.fullmatch(r"metadata\.annotations\['([^']+)'\]", source["fieldRef"]["fieldPath"])
            env[item["name"]] = annotations[field[1]]
    return env


def app_environment(
    deployment: dict, port: int, stack: Stack, sidecar_port: int, repository: Path, app_id: str
) -> dict[str, str]:
    """The app container's environment as the manifest gives it, the tokens read from the Secrets the annotations
    name, the app port `port` and /models the local `repository`."""
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    secrets = {annotations["dapr.io/api-token-secret"]: {"token": stack.dapr_api_token}}
    secrets[annotations["dapr.io/app-token-secret"]] = {"token": stack.app_api_token}
    env = container_environment(deployment, app_container(deployment), secrets, app_id)
    assert env["APP_PORT"] == annotations["dapr.io/app-port"]
    env["APP_PORT"] = str(port)
    for name, value in env.items():
        if value == "/models":
            env[name] = str(repository)
    # Set in the pod by the injector.
    env["DAPR_HTTP_PORT"] = str(sidecar_port)
    # The gRPC servers' fixed ports could be taken on this host: free ones, as for the app port.
    for name in env:
        if name.endswith("_GRPC_PORT"):
            env[name] = str(free_port())
    return env


def sidecar_environment(deployment: dict, stack: Stack) -> dict[str, str]:
    """daprd's environment as the injector gives it: the tokens and the pod's dapr.io/env."""
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    return environment(
        DAPR_API_TOKEN=stack.dapr_api_token,
        APP_API_TOKEN=stack.app_api_token,
        **dict(re.findall(r"(\w+)=([^,]+)", annotations.get("dapr.io/env", ""))),
    )


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
    """The rendered Configuration as a file for daprd, without accessControl: it matches callers by their mTLS
    identity, and a sidecar without the control plane's Sentry has none (every call would meet the default action,
    deny)."""
    config = next(obj for obj in objects if obj["kind"] == "Configuration" and obj["metadata"]["name"] == name)
    spec = {key: value for key, value in config["spec"].items() if key != "accessControl"}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**config, "spec": spec}))
    return path


def image_command(dockerfile: Path) -> list[str]:
    """The image's CMD; `environment()` puts this venv's `python` and `tandem` first on PATH."""
    steps = check_module().instructions(dockerfile)
    return yaml.safe_load([args for step, args in steps if step == "CMD"][-1])
