"""k8s/check.py: the manifests pass it, and it catches what a cluster or a sidecar would trip over."""

import copy
import importlib.util
import shutil
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
KUSTOMIZE = next(iter(sorted((ROOT / ".runtime").glob("kustomize-*/kustomize"))), None)

spec = importlib.util.spec_from_file_location("k8s_check", ROOT / "k8s" / "check.py")
check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check)

pytestmark = pytest.mark.skipif(
    KUSTOMIZE is None or shutil.which("go") is None, reason="needs kustomize and Go: run `make k8s-check` first"
)


@pytest.fixture(scope="module")
def dapr() -> Path:
    return check.dapr_source()


@pytest.fixture(scope="module")
def crds(dapr: Path) -> dict:
    return check.crd_schemas(dapr)


@pytest.fixture(scope="module")
def base() -> list[dict]:
    return check.render(str(KUSTOMIZE), ROOT / "k8s" / "base")


@pytest.fixture(scope="module")
def template() -> dict:
    return yaml.safe_load((ROOT / "dapr.yaml").read_text())


def errors(objects: list[dict], crds: dict, template: dict, dapr: Path, every_app: bool = True) -> list[str]:
    found = list(check.schema_errors(objects, crds))
    return found + list(check.manifest_errors(objects, template, check.known_annotations(dapr), crds, every_app))


def find(objects: list[dict], kind: str, name: str) -> dict:
    return next(obj for obj in objects if obj["kind"] == kind and obj["metadata"]["name"] == name)


def test_every_variant_passes(crds: dict, template: dict, dapr: Path) -> None:
    for folder in check.variants():
        objects = check.render(str(KUSTOMIZE), folder)
        assert errors(objects, crds, template, dapr, check.runs_every_app(folder)) == [], folder


def test_every_app_has_a_sidecar_service_and_budget(base: list[dict]) -> None:
    apps = check.dapr_apps(base)
    services = {"gateway", "vision", "nlp", "regression", "sensors", "features", "alerts", "pipelines"}
    assert set(apps) == services | {"vision-grpc", "nlp-grpc", "regression-grpc"}
    assert set(check.by_kind(base, "PodDisruptionBudget")) >= set(apps)
    assert set(check.by_kind(base, "HorizontalPodAutoscaler")) == {"vision", "nlp", "regression"}


def test_a_wrong_app_port_is_caught(base: list[dict], crds: dict, template: dict, dapr: Path) -> None:
    broken = copy.deepcopy(base)
    find(broken, "Deployment", "vision")["spec"]["template"]["metadata"]["annotations"]["dapr.io/app-port"] = "9001"
    found = errors(broken, crds, template, dapr)
    assert any("vision: dapr.io/app-port is '9001', dapr.yaml says '8001'" in error for error in found)
    assert any("vision: APP_PORT is not the app port 9001" in error for error in found)


def test_an_annotation_the_injector_does_not_know_is_caught(
    base: list[dict], crds: dict, template: dict, dapr: Path
) -> None:
    broken = copy.deepcopy(base)
    find(broken, "Deployment", "nlp")["spec"]["template"]["metadata"]["annotations"]["dapr.io/sidecar-cpu-limits"] = "1"
    assert "nlp: the sidecar injector knows no annotation dapr.io/sidecar-cpu-limits" in errors(
        broken, crds, template, dapr
    )


def test_a_gomemlimit_over_the_sidecar_limit_is_caught(
    base: list[dict], crds: dict, template: dict, dapr: Path
) -> None:
    broken = copy.deepcopy(base)
    find(broken, "Deployment", "nlp")["spec"]["template"]["metadata"]["annotations"]["dapr.io/env"] = "GOMEMLIMIT=1GiB"
    assert "nlp: dapr.io/env must set GOMEMLIMIT below dapr.io/sidecar-memory-limit" in errors(
        broken, crds, template, dapr
    )


def test_the_release_sidecar_image_or_none_is_caught(base: list[dict], crds: dict, template: dict, dapr: Path) -> None:
    # The release's daprd has the app-channel race that dapr/runtime/patches mends; without the annotation the
    # injector adds the release's image too.
    broken = copy.deepcopy(base)
    annotations = find(broken, "StatefulSet", "features")["spec"]["template"]["metadata"]["annotations"]
    annotations["dapr.io/sidecar-image"] = "ghcr.io/dapr/daprd:1.18.2"
    del find(broken, "Deployment", "alerts")["spec"]["template"]["metadata"]["annotations"]["dapr.io/sidecar-image"]
    found = errors(broken, crds, template, dapr)
    assert (
        "features: dapr.io/sidecar-image 'ghcr.io/dapr/daprd:1.18.2' is not a patched daprd 1.18.2-tandem.<n>[-edge]"
        in found
    )
    assert "alerts: annotation dapr.io/sidecar-image is missing" in found


def test_an_unknown_field_in_a_dapr_resource_is_refused(base: list[dict], crds: dict) -> None:
    broken = copy.deepcopy(base)
    find(broken, "Resiliency", "resiliency")["spec"]["policies"]["retries"]["inference"]["initialInterval"] = "1s"
    find(broken, "Component", "statestore")["spec"]["metdata"] = []
    found = list(check.schema_errors(broken, crds))
    assert any("Resiliency/resiliency" in error and "'initialInterval' was unexpected" in error for error in found)
    assert any("Component/statestore" in error and "'metdata' was unexpected" in error for error in found)


def test_an_unknown_field_in_a_kubernetes_object_is_refused(base: list[dict], crds: dict) -> None:
    broken = copy.deepcopy(base)
    find(broken, "Deployment", "regression")["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    assert any("Deployment/regression" in error for error in check.schema_errors(broken, crds))


def test_scopes_and_access_policies_are_compared(base: list[dict], crds: dict, template: dict, dapr: Path) -> None:
    broken = copy.deepcopy(base)
    find(broken, "Component", "statestore")["scopes"].append("vision")
    find(broken, "Configuration", "tandem-regression")["spec"]["accessControl"]["policies"][0]["namespace"] = "other"
    found = errors(broken, crds, template, dapr)
    assert any(error.startswith("Component statestore: scopes") for error in found)
    assert "Configuration tandem-regression: the policy for gateway names namespace other" in found


@pytest.fixture(scope="module")
def own_models() -> list[dict]:
    return check.render(str(KUSTOMIZE), ROOT / "k8s" / "overlays" / "own-models")


def test_dockerfiles_run_what_dapr_yaml_runs(base: list[dict], own_models: list[dict], template: dict) -> None:
    # The edge agent runs on the edge alone, the generic model server in the own-models overlay.
    edge = check.render(str(KUSTOMIZE), ROOT / "k8s" / "overlays" / "edge")
    rendered = {
        ROOT / "k8s" / "base": base,
        ROOT / "k8s" / "overlays" / "own-models": own_models,
        ROOT / "k8s" / "overlays" / "edge": edge,
    }
    for dockerfile in sorted(ROOT.glob("apps/*/Dockerfile")):
        app, objects = check.running_app(dockerfile, rendered)
        assert list(check.dockerfile_errors(app, dockerfile, template, objects)) == [], dockerfile


def test_a_dockerfile_not_building_its_services_models_is_caught(
    base: list[dict], template: dict, tmp_path: Path
) -> None:
    text = (ROOT / "apps/vision/Dockerfile").read_text().replace("--service vision", "--service nlp")
    copied = tmp_path / "vision" / "Dockerfile"
    copied.parent.mkdir()
    copied.write_text(text)
    found = list(check.dockerfile_errors("vision", copied, template, base))
    assert found == ["apps/vision/Dockerfile: must build its models with `python models/build.py --service vision`"]


def test_the_generic_image_serves_the_volume_an_init_container_fills(
    base: list[dict], own_models: list[dict], template: dict
) -> None:
    dockerfile = ROOT / "apps/tandem/Dockerfile"
    rendered = {ROOT / "k8s" / "base": base, ROOT / "k8s" / "overlays" / "own-models": own_models}
    app, objects = check.running_app(dockerfile, rendered)
    assert app == "my-models" and objects is own_models
    command = [args for step, args in check.instructions(dockerfile) if step == "CMD"]
    assert yaml.safe_load(command[-1]) == ["tandem", "serve", "/models"]
    pod = find(own_models, "Deployment", "my-models")["spec"]["template"]
    (server,) = pod["spec"]["containers"]
    (fetch,) = pod["spec"]["initContainers"]
    env = {item["name"]: item for item in server["env"]}
    assert env["TANDEM_MODEL_REPOSITORY"]["value"] == "/models"
    # The injector sets no APP_ID; the server's name (what the gateway routes to) is the pod's app id.
    assert env["APP_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.annotations['dapr.io/app-id']"
    served = next(m for m in server["volumeMounts"] if m["mountPath"] == "/models")
    filled = next(m for m in fetch["volumeMounts"] if m["mountPath"] == "/models")
    assert served["name"] == filled["name"] and served["readOnly"] and not filled.get("readOnly")
    assert "emptyDir" in next(v for v in pod["spec"]["volumes"] if v["name"] == served["name"])
    assert fetch["command"] == ["rclone"] and fetch["args"][:3] == ["copy", ":s3:my-models-bucket/my-models", "/models"]
    assert list(check.dockerfile_errors(app, dockerfile, template, own_models)) == []


def test_a_persistent_volume_claim_needs_no_init_container(own_models: list[dict], crds: dict, template: dict) -> None:
    # The README's alternative to object storage.
    changed = copy.deepcopy(own_models)
    pod = find(changed, "Deployment", "my-models")["spec"]["template"]["spec"]
    del pod["initContainers"]
    volume = next(v for v in pod["volumes"] if v["name"] == "models")
    del volume["emptyDir"]
    volume["persistentVolumeClaim"] = {"claimName": "my-models", "readOnly": True}
    assert list(check.schema_errors([find(changed, "Deployment", "my-models")], crds)) == []
    assert list(check.dockerfile_errors("my-models", ROOT / "apps/tandem/Dockerfile", template, changed)) == []


def test_a_generic_server_without_its_volume_or_what_fills_it_is_caught(own_models: list[dict], template: dict) -> None:
    dockerfile = ROOT / "apps/tandem/Dockerfile"
    broken = copy.deepcopy(own_models)
    pod = find(broken, "Deployment", "my-models")["spec"]["template"]["spec"]
    del pod["initContainers"]
    assert list(check.dockerfile_errors("my-models", dockerfile, template, broken)) == [
        "apps/tandem/Dockerfile: /models is an empty volume in my-models and no init container writes it"
    ]
    pod["containers"][0]["volumeMounts"] = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] != "models"]
    next(item for item in pod["containers"][0]["env"] if item["name"] == "TANDEM_MODEL_REPOSITORY")["value"] = "/data"
    pod["containers"][0]["args"] = ["tandem", "serve", "/data"]
    assert list(check.dockerfile_errors("my-models", dockerfile, template, broken)) == [
        "apps/tandem/Dockerfile: the Deployment my-models runs another command than the image's CMD",
        "apps/tandem/Dockerfile: serves /models, TANDEM_MODEL_REPOSITORY names /data",
        "apps/tandem/Dockerfile: serves /models, where the Deployment my-models mounts no volume",
    ]


def test_registration_and_routing_get_through_access_control_and_network_policies(own_models: list[dict]) -> None:
    assert list(check.registration_errors(own_models, "tandem")) == []
    # With the base's Configuration the gateway lets nobody register.
    broken = copy.deepcopy(own_models)
    annotations = find(broken, "Deployment", "gateway")["spec"]["template"]["metadata"]["annotations"]
    annotations["dapr.io/config"] = "tandem"
    assert list(check.registration_errors(broken, "tandem")) == [
        "gateway: its Configuration does not let my-models invoke POST services/register"
    ]
    # Registration only: another operation or verb stays denied.
    gateway = find(own_models, "Configuration", "tandem-gateway")
    my_models = find(own_models, "Configuration", "tandem-my-models")
    assert not check.acl_allows(gateway, "my-models", my_models, "tandem", "POST", "v2/models/iris/infer")
    assert not check.acl_allows(gateway, "my-models", my_models, "tandem", "GET", "services/register")
    assert not check.acl_allows(gateway, "my-models", my_models, "other", "POST", "services/register")
    broken = [obj for obj in copy.deepcopy(own_models) if obj["metadata"]["name"] != "gateway-invoked-by"]
    find(broken, "Configuration", "tandem-my-models")["spec"]["accessControl"]["policies"][0]["appId"] = "features"
    assert list(check.registration_errors(broken, "tandem")) == [
        "gateway: no NetworkPolicy lets my-models's sidecar reach it on port 50002",
        "my-models: its Configuration does not let gateway invoke POST v2/models/any/infer",
    ]


def test_a_grpc_app_must_probe_and_serve_its_grpc_port(
    base: list[dict], crds: dict, template: dict, dapr: Path
) -> None:
    broken = copy.deepcopy(base)
    container = find(broken, "Deployment", "nlp-grpc")["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbe"] = {"httpGet": {"path": "/v2/health/ready", "port": 8002}}
    next(item for item in container["env"] if item["name"] == "NLP_GRPC_PORT")["value"] = "8202"
    found = errors(broken, crds, template, dapr)
    assert "nlp-grpc: readinessProbe must ask the app's own gRPC health on its port" in found
    assert "nlp-grpc: no <SERVICE>_GRPC_PORT is the app port 8102" in found


def test_features_replicas_that_do_not_match_the_partitions_are_caught(crds: dict, template: dict, dapr: Path) -> None:
    cloud = check.render(str(KUSTOMIZE), ROOT / "k8s" / "overlays" / "cloud")
    assert check.dapr_apps(cloud)["features"]["spec"]["replicas"] == 2, "the cloud overlay scales features"
    broken = copy.deepcopy(cloud)
    find(broken, "StatefulSet", "features")["spec"]["replicas"] = 3
    sensors = find(broken, "Deployment", "sensors")["spec"]["template"]["spec"]["containers"][0]
    next(item for item in sensors["env"] if item["name"] == "SENSORS_PARTITIONS")["value"] = "2"
    found = errors(broken, crds, template, dapr)
    assert "features: FEATURES_REPLICAS is not spec.replicas (3)" in found
    assert "sensors: SENSORS_PARTITIONS is not FEATURES_PARTITIONS (4)" in found

    as_deployment = copy.deepcopy(cloud)
    find(as_deployment, "StatefulSet", "features")["kind"] = "Deployment"
    assert any(
        "FEATURES_REPLICA must be a StatefulSet's pod index" in error
        for error in errors(as_deployment, crds, template, dapr)
    )
