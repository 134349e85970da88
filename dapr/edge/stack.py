"""The edge device's stack, as `make edge` runs it: Mosquitto, Redis, the edge agent and the services of the
predictive-maintenance pipeline, each beside the trimmed edge daprd, on explicit loopback addresses.

    python dapr/edge/stack.py [--arch amd64|arm64] [--data .data/edge] [--machines 10 --rate 20]

On arm64 every process runs inside the arm64 root file system of dapr/edge/rootfs.sh, under qemu-aarch64 (binfmt),
with the repository and the data folder bind-mounted at the same paths. Tests import `EdgeStack` to start the same
processes on free ports with app ids of their own, and stop, kill and restart them one by one.
"""

import argparse
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from tandem.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
EDGE = ROOT / "dapr" / "edge"
ROOTFS = ROOT / ".edge" / "rootfs-arm64"
# The services an edge device runs: the pipeline from readings to alerts, and the models it needs. regression
# starts first, since features calls it. No gateway, vision or nlp: a device has no clients of its own to serve.
SERVICES = ("regression", "features", "alerts", "sensors")
ENV = {
    "regression": {"REGRESSION_MODELS": "maintenance-rul,maintenance-failure", "REGRESSION_INTRA_OP_THREADS": "1"},
}
# Fixed ports of `make edge` (tests take free ones): MQTT, Redis, then app, sidecar HTTP, gRPC, internal gRPC and
# metrics ports per process, the agent first.
MQTT_PORT, REDIS_PORT = 18830, 16380
FIXED_PORTS = {
    name: (8010 + i, 3510 + i, 3610 + i, 3710 + i, 9110 + i) for i, name in enumerate(("edge-agent", *SERVICES))
}


@dataclass
class Ports:
    app: int
    http: int
    grpc: int
    internal: int
    metrics: int


@dataclass
class Process:
    """One process of the stack, in a process group of its own; `start()` again after `stop()` restarts it."""

    name: str
    command: list[str]
    env: dict[str, str]
    log_file: Path
    ready: Callable[[], bool]
    # Under qemu every process starts several times slower.
    start_timeout: float = 60.0
    popen: subprocess.Popen | None = None
    started_at: float = 0.0

    def start(self) -> None:
        assert self.popen is None or self.popen.poll() is not None, f"{self.name} is running"
        self.started_at = time.monotonic()
        with self.log_file.open("ab") as log:
            self.popen = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=ROOT, start_new_session=True
            )

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def healthy(self) -> bool:
        try:
            return self.running() and self.ready()
        except (httpx.TransportError, OSError):
            return False

    def wait_healthy(self) -> None:
        while not self.healthy():
            self.check_starting()
            time.sleep(0.05)

    def check_starting(self) -> None:
        """Raises if the process exited, or is still not healthy `start_timeout` after it was started."""
        if not self.running():
            raise RuntimeError(f"{self.name} exited with {self.popen and self.popen.returncode}:\n{self.log()}")
        if time.monotonic() > self.started_at + self.start_timeout:
            raise TimeoutError(f"{self.name} not healthy after {self.start_timeout:g} s:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        if not self.running():
            return
        os.killpg(self.popen.pid, sig)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")[-4000:]


@dataclass
class EdgeStack:
    """The processes of one edge device. `suffix` makes every app id unique (tests); `fixed_ports` gives the ports
    of `make edge` instead of free ones."""

    data: Path
    arch: str = "amd64"
    suffix: str = ""
    fixed_ports: bool = False
    models: Path = ROOT / "models"
    agent_env: dict[str, str] = field(default_factory=dict)  # EDGE_AGENT_* settings of its own
    dapr_api_token: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    app_api_token: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    processes: dict[str, Process] = field(default_factory=dict)
    mounts: list[Path] = field(default_factory=list)
    # Of the last start_all: per process, the seconds until it was healthy, and the CPU seconds it had used then.
    healthy_after: dict[str, float] = field(default_factory=dict)
    cpu_until_healthy: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.data = self.data.resolve()
        self.data.mkdir(parents=True, exist_ok=True)
        self.mqtt_port = MQTT_PORT if self.fixed_ports else free_port()
        self.redis_port = REDIS_PORT if self.fixed_ports else free_port()
        names = ("edge-agent", *SERVICES)
        self.ports = {
            name: Ports(*(FIXED_PORTS[name] if self.fixed_ports else (free_port() for _ in range(5)))) for name in names
        }
        self.bin = ROOT / ".runtime" / "edge" / self.arch / "bin"

    def app_id(self, name: str) -> str:
        return f"{name}{self.suffix}"

    def sidecar_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name].http}"

    # --- what runs ------------------------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Writes the broker's configuration and the sidecars' resources; on arm64, mounts what the root file
        system needs."""
        if self.arch == "arm64":
            self._mount_rootfs()
        (self.data / "mosquitto").mkdir(exist_ok=True)
        conf = (EDGE / "mosquitto.conf").read_text().replace("PORT", str(self.mqtt_port))
        conf = conf.replace("DATA/", f"{self.data / 'mosquitto'}/")
        (self.data / "mosquitto.conf").write_text(conf)
        # Mosquitto started as root drops to its own user: that user owns its data.
        self._run(["chown", "-R", "mosquitto", str(self.data / "mosquitto")])
        # The SQLite files the sidecars share are in WAL mode before any sidecar opens them: sidecars that start
        # together each switch a new file to WAL, and one of them may get SQLITE_BUSY without waiting (busyTimeout
        # does not apply to that lock) and exit; seen under qemu.
        for shared in ("state.sqlite", "names.sqlite"):
            with closing(sqlite3.connect(self.data / shared)) as database:
                database.execute("PRAGMA journal_mode=WAL")
        config = (EDGE / "config.yaml").read_text().replace("NAMES", str(self.data / "names.sqlite"))
        (self.data / "config.yaml").write_text(config)
        self.resources = self.data / "components"
        self.resources.mkdir(exist_ok=True)
        sources = [*(EDGE / "components").glob("*.yaml"), ROOT / "components" / "resiliency.yaml"]
        sources += (ROOT / "components").glob("subscription-*.yaml")
        for source in sources:
            resource = yaml.safe_load(source.read_text())
            if "scopes" in resource:
                resource["scopes"] = [self.app_id(name) for name in resource["scopes"]]
            if resource["metadata"]["name"] == "pubsub":
                _set_metadata(resource, "redisHost", f"127.0.0.1:{self.redis_port}")
            if resource["metadata"]["name"] == "statestore":
                _set_metadata(resource, "connectionString", str(self.data / "state.sqlite"))
            (self.resources / source.name).write_text(yaml.safe_dump(resource))

    def define(self) -> None:
        """The processes, in start order; nothing is started."""
        arm = self.arch == "arm64"
        redis_env = {"REDIS_SERVER": "/usr/bin/redis-server"} if arm else {}
        self._add(
            "redis",
            ["bash", str(ROOT / "dapr" / "redis.sh"), str(self.redis_port), str(self.data / "redis")],
            lambda: _redis_ping(self.redis_port),
            **redis_env,
        )
        self._add(
            "mosquitto", ["/usr/sbin/mosquitto", "-c", str(self.data / "mosquitto.conf")], lambda: _open(self.mqtt_port)
        )
        python = "/usr/bin/python3" if arm else sys.executable
        for name in SERVICES:
            ports = self.ports[name]
            env = {
                "APP_PORT": str(ports.app),
                "DAPR_HTTP_PORT": str(ports.http),
                f"{name.upper()}_MODEL_REPOSITORY": str(self.models),
                "FEATURES_REGRESSION_APP": self.app_id("regression"),
                **ENV.get(name, {}),
            }
            self._add(name, [python, "-m", name], _get(f"http://127.0.0.1:{ports.app}/v2/health/ready", 200), **env)
            self._add_sidecar(name, app_port=ports.app)
        self._add_sidecar("edge-agent", app_port=None)
        agent = self.ports["edge-agent"]
        self._add(
            "edge-agent",
            [str(self.bin / "edge-agent")],
            _get(f"http://127.0.0.1:{agent.app}/healthz", 200),
            EDGE_AGENT_LISTEN=f"127.0.0.1:{agent.app}",
            EDGE_AGENT_BROKER=f"tcp://127.0.0.1:{self.mqtt_port}",
            EDGE_AGENT_CLIENT_ID=self.app_id("edge-agent"),
            EDGE_AGENT_OUTBOX=str(self.data / "outbox.sqlite"),
            DAPR_HTTP_PORT=str(agent.http),
            **self.agent_env,
        )

    def start(self) -> float:
        """Starts every process and waits until each is healthy; returns the seconds that took."""
        self.prepare()
        self.define()
        return self.start_all()

    def start_all(self) -> float:
        """Starts every process that is not running, the brokers first (a sidecar whose Redis does not answer
        exits), then the rest at once, each retrying what it needs from the others; returns the seconds until
        every one is healthy."""
        started = time.monotonic()
        self.healthy_after.clear()
        self.cpu_until_healthy.clear()
        for group in (("redis", "mosquitto"), [name for name in self.processes if name not in ("redis", "mosquitto")]):
            for name in group:
                if not self.processes[name].running():
                    self.processes[name].start()
            pending = list(group)
            while pending:
                for name in list(pending):
                    process, app = self.processes[name], name.removeprefix("daprd-")
                    # A service's sidecar is healthy only once its app listens: not polled before (under qemu
                    # every poll daprd answers costs emulated CPU that the processes starting need).
                    if name != app and app in SERVICES and app in pending:
                        process.check_starting()
                    elif process.healthy():
                        self.healthy_after[name] = time.monotonic() - started
                        self.cpu_until_healthy[name] = _group_cpu_seconds(process.popen.pid)
                        pending.remove(name)
                    else:
                        process.check_starting()
                time.sleep(0.05)
        return time.monotonic() - started

    def stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        self.processes[name].stop(sig)

    def restart(self, name: str) -> None:
        self.processes[name].stop()
        self.processes[name].start()
        self.processes[name].wait_healthy()

    def close(self) -> None:
        for process in reversed(self.processes.values()):
            process.stop()
        for mount in reversed(self.mounts):
            subprocess.run(["umount", "--lazy", str(mount)], check=False)
        self.mounts.clear()

    def rss_bytes(self) -> dict[str, int]:
        """Resident memory of each process and everything it started (a process group), in bytes."""
        rss: dict[str, int] = {}
        for name, process in self.processes.items():
            if process.running():
                rss[name] = _group_rss(process.popen.pid)
        return rss

    # --- helpers --------------------------------------------------------------------------------------------------

    def _add(self, name: str, command: list[str], ready: Callable[[], bool], **env: str) -> None:
        environment = {
            "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
            "HOME": str(self.data),
            "LANG": "C.UTF-8",
            "DAPR_API_TOKEN": self.dapr_api_token,
            "APP_API_TOKEN": self.app_api_token,
            # Sidecars register this address for name resolution: no interface discovery, no mDNS.
            "DAPR_HOST_IP": "127.0.0.1",
            **env,
        }
        if self.arch == "arm64":
            environment["PATH"] = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
            environment["PYTHONPATH"] = f"/opt/tandem/site:{ROOT / 'apps'}"
            command = ["chroot", str(ROOTFS), *command]
        else:
            environment["PYTHONPATH"] = str(ROOT / "apps")
        timeout = 60.0 if self.arch == "amd64" else 300.0
        self.processes[name] = Process(name, command, environment, self.data / f"{name}.log", ready, timeout)

    def _add_sidecar(self, name: str, app_port: int | None) -> None:
        ports = self.ports[name]
        command = [
            str(self.bin / "daprd"),
            "--app-id", self.app_id(name),
            "--dapr-http-port", str(ports.http),
            "--dapr-grpc-port", str(ports.grpc),
            "--dapr-internal-grpc-port", str(ports.internal),
            "--metrics-port", str(ports.metrics),
            "--dapr-listen-addresses", "127.0.0.1",
            "--dapr-internal-grpc-listen-address", "127.0.0.1",
            "--metrics-listen-address", "127.0.0.1",
            "--resources-path", str(self.resources),
            "--config", str(self.data / "config.yaml"),
            "--log-level", "warn",
        ]  # fmt: skip
        if app_port is not None:
            command += ["--app-port", str(app_port), "--enable-app-health-check"]
            command += ["--app-health-check-path", "/v2/health/ready"]
        self._add(f"daprd-{name}", command, _get(f"http://127.0.0.1:{ports.http}/v1.0/healthz", 204))

    def _run(self, command: list[str]) -> None:
        prefix = ["chroot", str(ROOTFS)] if self.arch == "arm64" else []
        subprocess.run([*prefix, *command], check=True)

    def _mount_rootfs(self) -> None:
        """The repository and the data folder at the same paths inside the root file system, and /proc (not /sys
        as well: with both, onnxruntime reads the host's x86 CPU description through qemu and crashes)."""
        for source in (ROOT, self.data):
            target = ROOTFS / str(source).lstrip("/")
            if target in self.mounts or _mounted(target):
                continue
            target.mkdir(parents=True, exist_ok=True)
            subprocess.run(["mount", "--bind", str(source), str(target)], check=True)
            self.mounts.append(target)
        proc = ROOTFS / "proc"
        if not _mounted(proc):
            subprocess.run(["mount", "-t", "proc", "proc", str(proc)], check=True)
            self.mounts.append(proc)


def _set_metadata(component: dict, name: str, value: str) -> None:
    items = [item for item in component["spec"]["metadata"] if item["name"] != name]
    component["spec"]["metadata"] = [*items, {"name": name, "value": value}]


# One client for every health check: httpx.get makes a client per call, about 30 ms of CPU (its TLS context), and
# polling a dozen processes that way took most of a core from the processes starting.
_HEALTH = httpx.Client(timeout=2)


def _get(url: str, status: int) -> Callable[[], bool]:
    return lambda: _HEALTH.get(url).status_code == status


def _open(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


def _redis_ping(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(16).startswith(b"+PONG")


def _mounted(path: Path) -> bool:
    return any(line.split()[1] == str(path) for line in Path("/proc/mounts").read_text().splitlines())


def _group_stats(pgid: int) -> list[list[str]]:
    """/proc/<pid>/stat of every process of the group, the fields after the command (state, ppid, pgrp, ...)."""
    stats = []
    for status in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = status.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            stats.append(fields)
    return stats


def _group_rss(pgid: int) -> int:
    return sum(int(fields[21]) for fields in _group_stats(pgid)) * os.sysconf("SC_PAGE_SIZE")  # rss, in pages


def _group_cpu_seconds(pgid: int) -> float:
    ticks = sum(int(fields[11]) + int(fields[12]) for fields in _group_stats(pgid))  # utime + stime
    return ticks / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", choices=("amd64", "arm64"), default="amd64")
    parser.add_argument("--data", type=Path, default=ROOT / ".data" / "edge")
    parser.add_argument("--machines", type=int, default=10, help="simulated MQTT sensors (0: none)")
    parser.add_argument("--rate", type=float, default=20.0, help="readings per second, all sensors together")
    args = parser.parse_args()

    stack = EdgeStack(args.data / args.arch, arch=args.arch, fixed_ports=True)
    # Set both explicitly: a shell that starts this in the background would leave SIGINT ignored.
    stop = lambda *_: sys.exit(0)  # noqa: E731
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    simulator = None
    try:
        seconds = stack.start()
        total = sum(stack.rss_bytes().values())
        print(
            f"edge stack ({args.arch}) healthy in {seconds:.1f} s, {total / 2**20:.0f} MiB resident; data and logs "
            f"in {stack.data}"
        )
        print(f"  MQTT broker  tcp://127.0.0.1:{stack.mqtt_port} (topic tandem/readings/<machine>, QoS 1)")
        for name in ("edge-agent", *SERVICES):
            ports = stack.ports[name]
            print(f"  {name:<11}  app 127.0.0.1:{ports.app}  sidecar 127.0.0.1:{ports.http}  metrics :{ports.metrics}")
        token = f"dapr-api-token: {stack.dapr_api_token}"
        print(f"  curl -s -H '{token}' {stack.sidecar_url('alerts')}/v1.0/invoke/alerts/method/alerts")
        print(f"  curl -s 127.0.0.1:{stack.ports['edge-agent'].app}/metrics | grep ^edge_agent")
        if args.machines:
            command = [sys.executable, "-m", "sensors.simulate", "--mqtt", f"127.0.0.1:{stack.mqtt_port}"]
            command += ["--machines", str(args.machines), "--rate", str(args.rate), "--replace"]
            log = (stack.data / "simulator.log").open("ab")
            env = {**os.environ, "PYTHONPATH": str(ROOT / "apps")}
            simulator = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
            print(f"  simulator: {args.machines} MQTT sensors, {args.rate:g} readings/s (log: simulator.log)")
        print("Ctrl-C stops everything.", flush=True)
        while True:
            time.sleep(3600)
    finally:
        # Stopping takes a few seconds: a second Ctrl-C must not leave processes behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if simulator is not None:
            simulator.terminate()
        stack.close()


if __name__ == "__main__":
    main()
