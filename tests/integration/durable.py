"""Starting the pipelines app for durable runs: placement, the scheduler, a sidecar that knows both, the
regression service to call; shared by the durable and the schedule tests."""

import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx

from .stack import Process, Sentry, Sidecar, Stack, free_port, wait_until

HERE = Path(__file__).resolve().parent


@dataclass
class Replica:
    app: Process
    sidecar: Sidecar
    app_port: int


class DurableDeployment:
    def __init__(
        self,
        stack: Stack,
        model_repository: Path,
        folder: Path,
        sentry: Sentry | None = None,
        others: tuple[str, ...] = (),
    ):
        """With `sentry`, the pipelines' sidecars, placement and the scheduler talk over mTLS, as under make run.
        Steps may call regression and the `others` services (without mTLS)."""
        self.stack = stack
        self.sentry = sentry
        self.regression_id = stack.app_id("regression")
        self.pipelines_id = stack.app_id("pipelines")
        self.services = [self.regression_id, *map(stack.app_id, others)]
        self.placement = stack.start_placement(sentry=sentry)
        self.scheduler = stack.start_scheduler(sentry=sentry)
        self.ports = {service: stack.start_service(service, model_repository)[1] for service in others}
        if sentry is None:
            _, self.regression_port = stack.start_service("regression", model_repository)
        else:  # the model service on mTLS too: sidecars with and without it cannot call each other
            self.regression_port, http_port = free_port(), free_port()
            command = [sys.executable, "-m", "regression"]
            env = {"REGRESSION_MODEL_REPOSITORY": str(model_repository), "DAPR_HTTP_PORT": str(http_port)}
            stack.start_app("regression", command, self.regression_port, **env)
            resources = stack.components({})
            stack.start_sidecar(self.regression_id, resources, self.regression_port, http_port, sentry=sentry)
        self.folder = folder
        # The committed scopes name "pipelines" (pub/sub, workflowstore): the stack adds its id for it.
        self.resources = stack.components({})
        self.replicas: list[Replica] = []

    def start_replica(self, **env: str) -> Replica:
        app_port, http_port, grpc_port = free_port(), free_port(), free_port()
        name = f"pipelines-{len(self.replicas)}"
        app = self.stack.start_app(
            name,
            [sys.executable, "-m", "pipelines"],
            app_port,
            DAPR_HTTP_PORT=str(http_port),
            DAPR_GRPC_PORT=str(grpc_port),
            PIPELINES_FOLDER=str(self.folder),
            PIPELINES_SERVICES=",".join(self.services),
            PIPELINES_RETRY_SECONDS="0.5",
            **env,
        )
        sidecar = self.stack.start_sidecar(
            self.pipelines_id,
            self.resources,
            app_port,
            http_port,
            grpc_port=grpc_port,
            placement=self.placement,
            scheduler=self.scheduler,
            sentry=self.sentry,
        )
        replica = Replica(app, sidecar, app_port)
        self.replicas.append(replica)
        return replica

    @property
    def headers(self) -> dict[str, str]:
        return {"dapr-api-token": self.stack.dapr_api_token}

    def call(self, method: str, path: str, replica: int = 0, **kwargs) -> httpx.Response:
        sidecar = self.replicas[replica].sidecar
        url = f"{sidecar.url}/v1.0/invoke/{self.pipelines_id}/method/{path}"
        return httpx.request(method, url, headers=self.headers, timeout=30, **kwargs)

    def run(self, pipeline: str, run_id: str) -> dict:
        answer = self.call("GET", f"v2/pipelines/{pipeline}/runs/{run_id}")
        return answer.json() if answer.status_code == 200 else {}

    def publish_event(self, topic: str, event_id: str, data: dict) -> None:
        """A CloudEvent with our own id, as a producer that sends the same event twice would."""
        event = {"specversion": "1.0", "id": event_id, "source": "tests", "type": "request",
                 "datacontenttype": "application/json", "data": data}  # fmt: skip
        answer = httpx.post(
            f"{self.replicas[0].sidecar.url}/v1.0/publish/pubsub/{topic}",
            json=event,
            headers={**self.headers, "content-type": "application/cloudevents+json"},
        )
        assert answer.status_code == 204, answer.text

    def model_calls(self, model: str = "diabetes", service: str = "regression") -> int:
        """How many requests `service` served for `model` (its own counter)."""
        port = self.regression_port if service == "regression" else self.ports[service]
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        pattern = rf'tandem_inference_requests_total\{{[^}}]*model="{model}"[^}}]*outcome="ok"[^}}]*\}} ([0-9.e+]+)'
        return sum(int(float(value)) for value in re.findall(pattern, metrics))

    def wait_ready(self, pipeline: str) -> None:
        wait_until(lambda: self.call("GET", f"v2/models/{pipeline}/ready").status_code == 200, f"{pipeline} ready", 60)


def pipelines_folder(tmp: Path, *names: str) -> Path:
    for name in names:
        source = HERE / "pipelines-durable" / f"{name}.yaml"
        shutil.copy(source if source.exists() else HERE.parents[1] / "pipelines" / f"{name}.yaml", tmp)
    return tmp
