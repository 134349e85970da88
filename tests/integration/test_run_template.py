"""`dapr run -f .` on the committed template, with the built runtime: what `make run` does."""

import os
import signal
import socket
import time

import httpx
import pytest
import yaml

from gateway.newkey import ensure_key

from .stack import ROOT, Process, Stack, environment, wait_until

pytestmark = pytest.mark.integration

TEMPLATE = yaml.safe_load((ROOT / "dapr.yaml").read_text())
APPS = {app["appID"]: app for app in TEMPLATE["apps"]}
REGRESSION, NLP, GATEWAY, PIPELINES = APPS["regression"], APPS["nlp"], APPS["gateway"], APPS["pipelines"]
# Where the committed secret store reads the gateway's API keys; `make run` creates it the same way.
SECRETS = ROOT / ".data" / "secrets.json"
REDIS_PORT = 16379  # the port components/*.yaml point at
ROW = [0.038, 0.051, 0.062, 0.022, -0.044, -0.035, -0.043, -0.003, 0.020, -0.018]


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_dapr_run_f_starts_the_template_and_stops_it_cleanly(tmp_path, model_repository):
    ports = [REDIS_PORT] + [app[key] for app in APPS.values() for key in ("appPort", "daprHTTPPort", "daprGRPCPort")]
    busy = [port for port in ports if port_in_use(port)]
    if busy:
        pytest.fail(f"ports {busy} are taken (is `make run` running?): the template needs them")

    stack = Stack(tmp_path)
    stack.start_redis(REDIS_PORT)
    # As dapr/run.sh: placement and the scheduler where the pipelines' sidecar looks for them.
    stack.start_placement(int(PIPELINES["placementHostAddress"].rpartition(":")[2]))
    stack.start_scheduler(int(PIPELINES["schedulerHostAddress"].rpartition(":")[2]))
    api_key = ensure_key(SECRETS, "local")
    runtime = ROOT / ".runtime"
    env = environment(
        DAPR_RUNTIME_PATH=str(runtime),
        DAPR_API_TOKEN=stack.dapr_api_token,
        APP_API_TOKEN=stack.app_api_token,
    )
    env["PATH"] = f"{runtime / '.dapr' / 'bin'}{os.pathsep}{env['PATH']}"
    dapr = Process.start("dapr-run", ["dapr", "run", "-f", "."], tmp_path, env)
    try:
        sidecar = f"http://127.0.0.1:{REGRESSION['daprHTTPPort']}"
        headers = {"dapr-api-token": stack.dapr_api_token}
        wait_until(
            lambda: (
                httpx.get(f"{sidecar}/v1.0/invoke/regression/method/v2/health/ready", headers=headers).status_code
                == 200
            ),
            "regression ready through its sidecar",
            timeout=60,
            process=dapr,
        )
        response = httpx.post(
            f"{sidecar}/v1.0/invoke/regression/method/v2/models/diabetes/infer",
            json={"inputs": [{"name": "input", "shape": [1, 10], "datatype": "FP32", "data": ROW}]},
            headers=headers,
        )
        assert response.status_code == 200, response.text
        assert response.json()["outputs"][0]["shape"] == [1, 1]
        metadata = httpx.get(f"{sidecar}/v1.0/metadata", headers=headers).json()
        built = (ROOT / ".runtime" / ".dapr" / "bin" / "daprd.version").read_text().split()  # version, platform
        assert metadata["runtimeVersion"] == built[0]
        assert {component["name"] for component in metadata["components"]} == {"pubsub"}
        nlp = f"http://127.0.0.1:{NLP['daprHTTPPort']}"
        # nlp loads three text models before it is ready: later than regression.
        wait_until(
            lambda: httpx.get(f"{nlp}/v1.0/invoke/nlp/method/v2/health/ready", headers=headers).status_code == 200,
            "nlp ready through its sidecar",
            timeout=120,
            process=dapr,
        )
        sentiment = httpx.post(
            f"{nlp}/v1.0/invoke/nlp/method/sentiment", json={"texts": ["I love it"]}, headers=headers
        )
        assert sentiment.json()["results"][0]["label"] == "positive"
        nlp_components = httpx.get(f"{nlp}/v1.0/metadata", headers=headers).json()["components"]
        assert {component["name"] for component in nlp_components} == {"pubsub", "statestore"}

        gateway = f"http://127.0.0.1:{GATEWAY['appPort']}"
        wait_until(
            lambda: httpx.get(f"{gateway}/v2/health/ready").status_code == 200,
            "gateway ready",
            timeout=60,
            process=dapr,
        )
        through_gateway = httpx.post(
            f"{gateway}/v2/models/diabetes/infer",
            json={"inputs": [{"name": "input", "shape": [1, 10], "datatype": "FP32", "data": ROW}]},
            headers={"Authorization": f"Bearer {api_key}"},
        )
        assert through_gateway.json() == response.json()
        # The gateway is ready on its own; the pipelines app compiles its pipelines once the models answer.
        wait_until(
            lambda: (
                httpx.get(
                    f"{gateway}/v2/models/ensemble/ready", headers={"Authorization": f"Bearer {api_key}"}
                ).status_code
                == 200
            ),
            "the ensemble pipeline ready through the gateway",
            timeout=120,
            process=dapr,
        )
        ensemble = httpx.post(
            f"{gateway}/v2/models/ensemble/infer",
            json={"inputs": [{"name": "input", "shape": [1, 10], "datatype": "FP32", "data": ROW}]},
            headers={"Authorization": f"Bearer {api_key}"},
        )
        assert ensemble.status_code == 200, ensemble.text
        assert ensemble.json()["parameters"]["steps_ran"] == "ridge,trees"

        # Ctrl-C: the CLI alone gets the signal and must take its sidecar and app down with it.
        dapr.popen.send_signal(signal.SIGINT)
        dapr.popen.wait(timeout=30)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _group_alive(dapr.popen.pid):
            time.sleep(0.1)
        assert not _group_alive(dapr.popen.pid), "dapr run left processes behind"
        assert not any(port_in_use(app[key]) for app in APPS.values() for key in ("appPort", "daprHTTPPort"))
    finally:
        dapr.stop(signal.SIGKILL)
        stack.close()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
