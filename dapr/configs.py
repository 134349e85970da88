"""Each app's sidecar Configuration for `make run`: dapr/config.yaml (tracing, metrics, mTLS) with the access control
of the Kubernetes Configuration the app's Deployment names in k8s/base, so that both places enforce one set of
policies.

    python dapr/configs.py      writes apps/<app>/.dapr/config.yaml for every app of dapr.yaml

`dapr run -f` prefers that file to the template's configFilePath. Local sidecars run in Dapr's default namespace,
so the policies name that one instead of the cluster's. An app that no Deployment gives access control keeps
dapr/config.yaml as it is (any app may call it), and this says so.
"""

import copy
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# The namespace daprd takes when NAMESPACE is not set, as under `make run`.
LOCAL_NAMESPACE = "default"


def kubernetes_access_control() -> dict[str, dict]:
    """app id -> the accessControl of the Configuration that its Deployment in k8s/base names."""
    paths = sorted((ROOT / "k8s" / "base").rglob("*.yaml"))
    documents = [doc for path in paths for doc in yaml.safe_load_all(path.read_text()) if isinstance(doc, dict)]
    configurations = {doc["metadata"]["name"]: doc["spec"] for doc in documents if doc.get("kind") == "Configuration"}
    deployments = [doc for doc in documents if doc.get("kind") == "Deployment"]
    found = {}
    for deployment in deployments:
        annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
        access = configurations.get(annotations.get("dapr.io/config"), {}).get("accessControl")
        if annotations.get("dapr.io/enabled") == "true" and access:
            found[annotations["dapr.io/app-id"]] = access
    return found


def local_configuration(access_control: dict | None) -> dict:
    """dapr/config.yaml with `access_control`, its policies in the local namespace."""
    configuration = yaml.safe_load((ROOT / "dapr" / "config.yaml").read_text())
    if access_control is not None:
        access = copy.deepcopy(access_control)
        for policy in access.get("policies", []):
            policy["namespace"] = LOCAL_NAMESPACE
        configuration["spec"]["accessControl"] = access
    return configuration


def policy_owner(app: dict, apps: list[dict]) -> str:
    """The app whose access control `app` takes: its own, or for a sidecar without a command of its own (a model
    service's gRPC sidecar), that of the app beside which it runs (the one with the same folder and a command)."""
    if "command" in app:
        return app["appID"]
    return next(other["appID"] for other in apps if other["appDirPath"] == app["appDirPath"] and "command" in other)


def main() -> None:
    template = yaml.safe_load((ROOT / "dapr.yaml").read_text())
    policies = kubernetes_access_control()
    for app in template["apps"]:
        app_id, owner = app["appID"], policy_owner(app, template["apps"])
        if owner not in policies:
            print(f"configs: no Kubernetes Configuration gives {owner} access control: any app may call {app_id}")
        # `dapr run -f` reads the app's configFilePath, else <appDirPath>/.dapr/config.yaml.
        target = ROOT / app["appDirPath"] / app.get("configFilePath", ".dapr/config.yaml")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(yaml.safe_dump(local_configuration(policies.get(owner)), sort_keys=False))


if __name__ == "__main__":
    main()
