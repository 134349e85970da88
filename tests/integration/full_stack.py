"""Every app of `make run` beside its sidecar, on a Stack: free ports, the stack's own app ids (`Stack.app_id`), mTLS
with a Sentry of its own, placement and the scheduler for the pipelines' workflows and jobs (over mTLS too), and
each sidecar's access control from its Kubernetes Configuration as dapr/configs.py makes it for `make run`, the app
ids renamed. For tests and benchmarks that need the whole stack, not make run's
fixed ports and names (another stack on the host may hold them)."""

import importlib.util
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from .stack import ROOT, Process, Sentry, Sidecar, Stack, free_port, wait_until

spec = importlib.util.spec_from_file_location("dapr_configs", ROOT / "dapr" / "configs.py")
configs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(configs)

SERVICES = ("vision", "nlp", "regression")
# The gateway last: it is ready once it has read the others' model indexes.
APPS = (*SERVICES, "sensors", "features", "alerts", "pipelines", "gateway")


@dataclass
class FullStack:
    ids: dict[str, str]  # app -> its app id on this stack
    sidecars: dict[str, Sidecar]
    ports: dict[str, int]  # app -> the port its app listens on
    apps: dict[str, Process]
    sentry: Sentry

    def url(self, app: str, path: str) -> str:
        """`path` of `app`, through its own sidecar."""
        return f"{self.sidecars[app].url}/v1.0/invoke/{self.ids[app]}/method/{path.lstrip('/')}"


def start_full_stack(stack: Stack, models: Path, keys: dict[str, str], **env: str) -> FullStack:
    """All apps (the gateway's clients' `keys` in the stack's secret store; `env` for every app), once the gateway is
    ready."""
    ids = {app: stack.app_id(app) for app in APPS}
    sentry = stack.start_sentry()
    placement, scheduler = stack.start_placement(sentry=sentry), stack.start_scheduler(sentry=sentry)
    resources = stack.components({})
    stack.secrets_file.write_text(json.dumps({"gateway-api-keys": keys}))
    access = configs.kubernetes_access_control()
    app_env = {
        **{f"{service.upper()}_MODEL_REPOSITORY": str(models) for service in SERVICES},
        **{f"{service.upper()}_GATEWAY_APP": ids["gateway"] for service in SERVICES},
        "FEATURES_REGRESSION_APP": ids["regression"],
        "GATEWAY_SERVICES": ",".join(ids[service] for service in (*SERVICES, "pipelines")),
        "PIPELINES_SERVICES": ",".join(ids[service] for service in SERVICES),
        "PIPELINES_FOLDER": str(ROOT / "pipelines"),
        **env,
    }
    sidecars, ports, apps = {}, {}, {}
    for app in APPS:
        ports[app], sidecar_port, grpc_port = free_port(), free_port(), free_port()
        command = [sys.executable, "-m", app]
        sidecar_env = {"DAPR_HTTP_PORT": str(sidecar_port), "DAPR_GRPC_PORT": str(grpc_port)}  # gRPC: the workflows
        apps[app] = stack.start_app(app, command, ports[app], **sidecar_env, **app_env)
        config = stack.work / f"config-{ids[app]}.yaml"
        config.write_text(yaml.safe_dump(configs.local_configuration(_renamed(access.get(app), ids))))
        # As in dapr.yaml: the gateway's sidecar watches liveness, its readiness follows the model services.
        health = "/v2/health/live" if app == "gateway" else "/v2/health/ready"
        # As in dapr.yaml: only the pipelines' sidecar knows placement and the scheduler.
        control_plane = {"placement": placement, "scheduler": scheduler} if app == "pipelines" else {}
        sidecars[app] = stack.start_sidecar(
            ids[app], resources, ports[app], sidecar_port, health, config=config, sentry=sentry, grpc_port=grpc_port,
            **control_plane,
        )  # fmt: skip
    wait_until(
        lambda: httpx.get(f"http://127.0.0.1:{ports['gateway']}/v2/health/ready").status_code == 200,
        "gateway ready",
        timeout=60,
        process=apps["gateway"],
    )
    return FullStack(ids, sidecars, ports, apps, sentry)


def _renamed(access_control: dict | None, ids: dict[str, str]) -> dict | None:
    """The policies of `access_control` for the apps' ids on this stack."""
    if access_control is None or "policies" not in access_control:
        return access_control
    policies = [{**policy, "appId": ids.get(policy["appId"], policy["appId"])} for policy in access_control["policies"]]
    return {**access_control, "policies": policies}
