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
    assert set(apps) == {"gateway", "vision", "nlp", "regression", "sensors", "features", "alerts"}
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
    annotations = find(broken, "Deployment", "features")["spec"]["template"]["metadata"]["annotations"]
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


def test_dockerfiles_run_what_dapr_yaml_runs(base: list[dict], template: dict) -> None:
    edge = check.render(str(KUSTOMIZE), ROOT / "k8s" / "overlays" / "edge")
    for dockerfile in sorted(ROOT.glob("apps/*/Dockerfile")):
        app = dockerfile.parent.name
        objects = base if app in check.dapr_apps(base) else edge  # the edge agent runs on the edge alone
        assert list(check.dockerfile_errors(app, dockerfile, template, objects)) == []


def test_a_dockerfile_missing_a_model_is_caught(base: list[dict], template: dict, tmp_path: Path) -> None:
    text = (ROOT / "apps/vision/Dockerfile").read_text().replace("digits faces ocr nsfw", "digits faces ocr")
    copied = tmp_path / "Dockerfile"
    copied.write_text(text)
    found = list(check.dockerfile_errors("vision", copied, template, base))
    assert found == [
        "apps/vision/Dockerfile: builds models ['digits', 'faces', 'ocr'], "
        "vision's recipes are ['digits', 'faces', 'nsfw', 'ocr']"
    ]
