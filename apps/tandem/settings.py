"""Settings: every knob is an environment variable (pydantic-settings)."""

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, BeforeValidator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [name.strip() for name in value.split(",") if name.strip()]
    return value


# A comma-separated list in the environment ("diabetes,maintenance"), not JSON.
Names = Annotated[list[str], NoDecode, BeforeValidator(_split_commas)]
ModelNames = Names


class BatchingSettings(BaseModel):
    """Adaptive batching of one model; off unless max_batch_size > 1."""

    max_batch_size: int = 1
    max_wait_ms: float = 2.0


class DaprSettings(BaseSettings):
    """What Dapr tells an app, under the names Dapr gives them (no prefix)."""

    model_config = SettingsConfigDict(extra="ignore")

    dapr_http_port: int = 3500
    # The sidecar's gRPC API, which also proxies gRPC calls to other apps (`dapr-app-id` metadata).
    dapr_grpc_port: int = 50001
    # Overrides the port when the sidecar is elsewhere (DAPR_HTTP_ENDPOINT, as in the SDK).
    dapr_http_endpoint: str = ""
    # Sent to the sidecar on every call; the sidecar refuses calls without it when it is set.
    dapr_api_token: str = ""
    # Expected from the sidecar on every call that reaches the app.
    app_api_token: str = ""
    # Set by `dapr run` and the Kubernetes injector; the port the app listens on.
    app_port: int | None = None

    @property
    def sidecar_url(self) -> str:
        return self.dapr_http_endpoint or f"http://127.0.0.1:{self.dapr_http_port}"


class AppSettings(BaseSettings):
    """Knobs every Tandem app has. Subclasses set `env_prefix`, e.g. GATEWAY_."""

    model_config = SettingsConfigDict(extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    max_body_bytes: int = 4 * 1024 * 1024
    log_level: str = "info"
    # How long an idle keep-alive connection stays open. Longer than the 90 s after which the sidecar closes its
    # idle connections to the app (daprd's app channel is Go's default transport): with uvicorn's 5 s, the app
    # closed connections the sidecar was about to reuse, and such a request failed with EOF.
    keep_alive_seconds: int = 95


class ServiceSettings(AppSettings):
    """Knobs of a model service. Subclasses set `env_prefix`, e.g. REGRESSION_."""

    # The Open Inference Protocol over gRPC listens here (on `host`), beside REST on `port`; 0: no gRPC server.
    grpc_port: int = 0
    # Folder holding <name>/<version>/model.yaml (see models/build.py); the cards say which service serves what.
    model_repository: Path = Path("models")
    # Only these of the service's models, comma separated; empty: all of them.
    models: ModelNames = []
    # Most rows (or texts) in one request to the routes for people.
    max_rows: int = 1000
    # onnxruntime threads per session; one keeps a model from fighting its neighbours for cores.
    intra_op_threads: int = 1
    # Per model, as JSON: {"nsfw": {"max_batch_size": 16, "max_wait_ms": 5}}. Off for models not named.
    batching: dict[str, BatchingSettings] = {}
    # Where a load or unload through the repository extension is announced (the gateway listens);
    # an empty topic announces nothing.
    model_changes_pubsub: str = "pubsub"
    model_changes_topic: str = "model-changes"
    # The gateway's app id: the server registers with it through its sidecar, so the gateway routes to it (also a
    # server the gateway was not configured with, e.g. `tandem serve`). Empty: do not register.
    gateway_app: str = "gateway"
    register_seconds: float = 30.0
