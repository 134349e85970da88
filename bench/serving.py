"""Serving overhead, sidecar cost and batching, side by side with the model servers users would pick instead.

    python -m bench.serving [--models diabetes minilm nsfw] [--servers ...] [--concurrency 1 8 32]
                            [--seconds S] [--warmup W] [--rounds R] [--out bench/results]

For each model (the same ONNX file, one onnxruntime intra-op thread everywhere): raw onnxruntime
in-process at batch 1 and its best batch, a plain FastAPI app, Tandem called directly and through its
sidecar, KServe's ModelServer, MLServer and BentoML, batching off and on where the server has it.
Servers run on core 0, the load generator (hey) on core 1. Every server of a model starts, then gets one
request whose answer is checked against onnxruntime's; then --rounds interleaved rounds, each a warm-up and a
timed run of every server at every concurrency, so a noisy moment on a shared machine hits every server alike
(a server's batching off and on back to back, their order turned round each round); each case reports the median
of its rounds. Beside requests/s and latency, each case has the CPU time its serving
processes spent per answered request, which a busy machine disturbs far less than it disturbs wall-clock rates.
Writes serving.json and serving.md (and serving.png when the plot venv exists) to --out.

`bench/setup.sh` installs hey and the peers' virtual environments under .bench/ (git-ignored).
"""

import argparse
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import httpx
import numpy as np
import yaml
from tqdm import tqdm

from bench.report import markdown
from bench.workloads import WORKLOADS, Workload, load
from tests.integration.stack import ROOT, Process, Stack, environment, free_port, wait_until

BENCH = ROOT / "bench"
TOOLS = ROOT / ".bench"
HEY = TOOLS / "bin" / "hey"
VENVS = TOOLS / "venvs"
SERVER_CORE, LOAD_CORE = 0, 1
# The same adaptive batching knobs for every server that has them.
MAX_BATCH_SIZE, MAX_WAIT_MS = 32, 5
# Seconds of load per case: heavier models answer fewer requests, and p99 needs enough of them.
SECONDS = {"diabetes": 6.0, "minilm": 8.0, "nsfw": 12.0}
SERVICE = {"diabetes": "regression", "minilm": "nlp", "nsfw": "vision"}
RAW_BATCHES = [1, 2, 4, 8, 16, 32]
MIN_REQUESTS = 200
GATEWAY_KEY = "bench-client-key-0123456789"
FIELDS = (
    "model",
    "server",
    "batching",
    "concurrency",
    "batch",
    "requests_per_s",
    "p50_ms",
    "p99_ms",
    "requests",
    "errors",
    "cpu_us_per_request",
    "rss_mib",
    "ready_s",
    "rounds",
)


@dataclass
class Endpoint:
    """One way to reach a served model: its infer URL, the headers it needs, the processes that serve it."""

    server: str
    url: str
    headers: dict[str, str]
    processes: list[Process]
    ready_s: float


@dataclass
class Deployment:
    endpoints: list[Endpoint]
    close: Callable[[], None]


@dataclass
class Run:
    """What every starter needs: the work folder, the shared Redis, the models Tandem serves."""

    work: Path
    redis_port: int
    tandem_models: Path


@dataclass(frozen=True)
class Server:
    start: Callable[[Run, Workload, bool], Deployment]
    batching: bool  # has adaptive batching of its own
    venv: str | None = None  # its virtual environment under .bench/venvs


# ---------------------------------------------------------------- starting servers


def start_process(
    name: str, command: list[str], work: Path, ready_url: str, venv: str | None = None, **env: str
) -> tuple[Process, float]:
    """Starts a server and returns it with the seconds it took to answer 200 on `ready_url`."""
    variables = environment(**{"PYTHONPATH": str(BENCH), **env})
    if venv:
        variables["PATH"] = f"{VENVS / venv / 'bin'}{os.pathsep}{variables['PATH']}"
    started = time.perf_counter()
    process = Process.start(name, command, work, variables)
    try:
        wait_until(lambda: httpx.get(ready_url, timeout=1).status_code == 200, f"{name} ready", 180, process)
    except BaseException:
        process.stop()
        raise
    return process, time.perf_counter() - started


def single(server: str, process: Process, ready_s: float, url: str) -> Deployment:
    return Deployment([Endpoint(server, url, {}, [process], ready_s)], process.stop)


def start_plain(run: Run, workload: Workload, batching: bool) -> Deployment:
    port = free_port()
    command = [sys.executable, str(BENCH / "servers" / "plain_fastapi.py"), "--port", str(port)]
    base = f"http://127.0.0.1:{port}"
    process, ready_s = start_process(
        "plain-fastapi", [*command, "--model", workload.name], run.work, f"{base}/v2/health/ready"
    )
    return single("plain-fastapi", process, ready_s, f"{base}/v2/models/{workload.name}/infer")


def start_tandem(run: Run, workload: Workload, batching: bool) -> Deployment:
    """The model's Tandem service with only that model, its sidecar, and the gateway beside its own sidecar
    (tokens on, as in `make run`; the gateway's rate limit off). Its own folder and app ids: sidecars find each
    other by app id over mDNS, so the deployments of one run (and other stacks on the host) must not share one."""
    service = SERVICE[workload.name]
    prefix = service.upper()
    work = run.work / f"tandem-{workload.name}-{'batching' if batching else 'plain'}"
    work.mkdir(exist_ok=True)
    stack = Stack(work, redis_port=run.redis_port)
    app_id = stack.app_id(service)
    env = {
        f"{prefix}_MODEL_REPOSITORY": str(run.tandem_models),
        f"{prefix}_MODELS": workload.name,
        f"{prefix}_GATEWAY_APP": stack.app_id("gateway"),
    }
    if batching:
        env[f"{prefix}_BATCHING"] = json.dumps(
            {workload.name: {"max_batch_size": MAX_BATCH_SIZE, "max_wait_ms": MAX_WAIT_MS}}
        )
    try:
        app_port, sidecar_port = free_port(), free_port()
        started = time.perf_counter()
        app = stack.start_app(
            service, [sys.executable, "-m", service], app_port, DAPR_HTTP_PORT=str(sidecar_port), **env
        )
        app_ready = time.perf_counter() - started
        sidecar = stack.start_sidecar(app_id, stack.components({}), app_port, sidecar_port)
        stack.services[service] = app_id
        sidecar_ready = time.perf_counter() - started
        # The gateway routing to the service through its own sidecar; a client key in the stack's secret store.
        gateway, gateway_sidecar, gateway_port = stack.start_gateway({"bench": GATEWAY_KEY}, GATEWAY_RATE_LIMIT="0")
        gateway_ready = time.perf_counter() - started
    except BaseException:
        stack.close()
        raise
    route = f"v2/models/{workload.name}/infer"
    return Deployment(
        [
            Endpoint(
                "tandem-direct",
                f"http://127.0.0.1:{app_port}/{route}",
                {"dapr-api-token": stack.app_api_token},
                [app],
                app_ready,
            ),
            Endpoint(
                "tandem-sidecar",
                f"{sidecar.url}/v1.0/invoke/{app_id}/method/{route}",
                {"dapr-api-token": stack.dapr_api_token},
                [app, sidecar.process],
                sidecar_ready,
            ),
            Endpoint(
                "tandem-gateway",
                f"http://127.0.0.1:{gateway_port}/{route}",
                {"Authorization": f"Bearer {GATEWAY_KEY}"},
                [app, sidecar.process, gateway, gateway_sidecar.process],
                gateway_ready,
            ),
        ],
        stack.close,
    )


def start_kserve(run: Run, workload: Workload, batching: bool) -> Deployment:
    port = free_port()
    command = [
        str(VENVS / "kserve" / "bin" / "python"),
        str(BENCH / "servers" / "kserve_server.py"),
        "--model", workload.name,
        "--http_port", str(port),
        "--enable_grpc", "false",
        "--enable_latency_logging", "false",
    ]  # fmt: skip
    base = f"http://127.0.0.1:{port}/v2/models/{workload.name}"
    process, ready_s = start_process("kserve", command, run.work, f"{base}/ready", "kserve")
    return single("kserve", process, ready_s, f"{base}/infer")


def start_mlserver(run: Run, workload: Workload, batching: bool) -> Deployment:
    folder = run.work / f"mlserver-{workload.name}-{'batching' if batching else 'plain'}"
    folder.mkdir(exist_ok=True)
    port = free_port()
    settings = {"http_port": port, "grpc_port": free_port(), "metrics_port": free_port(), "debug": False}
    model = {"name": workload.name, "implementation": "mlserver_runtime.BenchModel"}
    if batching:
        model |= {"max_batch_size": MAX_BATCH_SIZE, "max_batch_time": MAX_WAIT_MS / 1000}
    (folder / "settings.json").write_text(json.dumps(settings))
    (folder / "model-settings.json").write_text(json.dumps(model))
    base = f"http://127.0.0.1:{port}/v2/models/{workload.name}"
    process, ready_s = start_process(
        "mlserver",
        [str(VENVS / "mlserver" / "bin" / "mlserver"), "start", str(folder)],
        run.work,
        f"{base}/ready",
        "mlserver",
        PYTHONPATH=f"{BENCH}{os.pathsep}{BENCH / 'servers'}",
    )
    return single("mlserver", process, ready_s, f"{base}/infer")


def start_bentoml(run: Run, workload: Workload, batching: bool) -> Deployment:
    port = free_port()
    command = [
        str(VENVS / "bentoml" / "bin" / "bentoml"),
        "serve", "bentoml_service:BenchService",
        "--working-dir", str(BENCH / "servers"),
        "--host", "127.0.0.1",
        "--port", str(port),
    ]  # fmt: skip
    process, ready_s = start_process(
        "bentoml",
        command,
        run.work,
        f"http://127.0.0.1:{port}/readyz",
        "bentoml",
        BENCH_MODEL=workload.name,
        BENCH_MAX_BATCH_SIZE=str(MAX_BATCH_SIZE if batching else 0),
        BENTOML_HOME=str(run.work / "bentoml"),
        BENTOML_DO_NOT_TRACK="true",
    )
    return single("bentoml", process, ready_s, f"http://127.0.0.1:{port}/v2/models/{workload.name}/infer")


SERVERS = {
    "plain-fastapi": Server(start_plain, batching=False),
    "tandem": Server(start_tandem, batching=True),
    "kserve": Server(start_kserve, batching=False, venv="kserve"),  # batching is a separate agent, not the server
    "mlserver": Server(start_mlserver, batching=True, venv="mlserver"),
    "bentoml": Server(start_bentoml, batching=True, venv="bentoml"),
}


def tandem_repository(work: Path) -> Path:
    """A model repository for Tandem with the built models, nsfw served through its plain tensor interface."""
    root = work / "models"
    for name in ("diabetes", "minilm"):
        (root / name).mkdir(parents=True, exist_ok=True)
        link = root / name / "1"
        if not link.exists():
            link.symlink_to(ROOT / "models" / name / "1")
    folder = root / "nsfw" / "1"
    folder.mkdir(parents=True, exist_ok=True)
    card = yaml.safe_load((ROOT / "models" / "nsfw" / "1" / "model.yaml").read_text())
    interface = card["parameters"].pop("tensor_interface")
    card = {key: value for key, value in card.items() if key != "runtime"} | interface
    (folder / "model.yaml").write_text(yaml.safe_dump(card, sort_keys=False))
    if not (folder / "model.onnx").exists():
        (folder / "model.onnx").symlink_to(ROOT / "models" / "nsfw" / "1" / "model.onnx")
    return root


# ---------------------------------------------------------------- measuring


def process_tree(pid: int) -> list[int]:
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            pids += process_tree(int(child))
    return pids


def rss_mib(processes: list[Process]) -> float:
    """Resident memory of the serving processes and everything they started (workers)."""
    total = 0
    for process in processes:
        for pid in process_tree(process.popen.pid):
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            total += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return total / 1024


def cpu_seconds(processes: list[Process]) -> float:
    """User and system CPU time of the serving processes and everything they started, so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for process in processes:
        for pid in process_tree(process.popen.pid):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


@contextmanager
def peak_rss(processes: list[Process], interval: float = 0.2) -> Iterator[Callable[[], float]]:
    """Samples the processes' RSS while the block runs; yields a function that returns the peak."""
    peak = rss_mib(processes)
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(interval):
            peak = max(peak, rss_mib(processes))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield lambda: peak
    finally:
        done.set()
        sampler.join()


def hey(endpoint: Endpoint, body: Path, concurrency: int, load: list[str]) -> dict[str, float | int | None]:
    """One run of hey on the load core (`load`: ["-z", "5s"] or ["-n", "600"]), its summary parsed."""
    command = [str(HEY), *load, "-c", str(concurrency), "-m", "POST", "-T", "application/json"]
    for name, value in endpoint.headers.items():
        command += ["-H", f"{name}: {value}"]
    command += ["-D", str(body), endpoint.url]
    if (os.cpu_count() or 1) > 1:
        command = ["taskset", "-c", str(LOAD_CORE), *command]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return parse_hey(output)


def measured_load(warmup: dict[str, float | int | None], concurrency: int, seconds: float) -> list[str]:
    """A request count that lasts about `seconds` at the warm-up's rate, and never fewer than
    MIN_REQUESTS (hey gives no p99 below 100 requests), in whole rounds of `concurrency`."""
    wanted = max(MIN_REQUESTS, warmup["requests_per_s"] * seconds)
    return ["-n", str(math.ceil(wanted / concurrency) * concurrency)]


def parse_hey(output: str) -> dict[str, float | int | None]:
    total_s = float(re.search(r"Total:\s+([\d.]+) secs", output)[1])
    statuses = {int(code): int(count) for code, count in re.findall(r"\[(\d+)\]\s+(\d+) responses", output)}
    failed = output.partition("Error distribution:")[2]
    transport_errors = sum(int(count) for count in re.findall(r"^\s*\[(\d+)\]\s", failed, re.MULTILINE))
    # hey prints seconds with four decimals: latencies are known to 0.1 ms.
    percentiles = {int(p): round(float(s) * 1000, 1) for p, s in re.findall(r"(\d+)%+ in ([\d.]+) secs", output)}
    ok = sum(count for code, count in statuses.items() if 200 <= code < 300)
    return {
        "requests_per_s": ok / total_s,
        "p50_ms": percentiles.get(50),
        "p99_ms": percentiles.get(99),
        "requests": ok,
        "errors": sum(statuses.values()) - ok + transport_errors,
    }


def check_answer(endpoint: Endpoint, body: bytes, expected: np.ndarray) -> None:
    """The server computes what onnxruntime computes: a benchmark of a wrong answer is worth nothing."""
    response = httpx.post(endpoint.url, content=body, headers={**endpoint.headers, "content-type": "application/json"})
    if response.status_code != 200:
        raise RuntimeError(f"{endpoint.server} answered {response.status_code}: {response.text[:500]}")
    answer = response.json()
    outputs = answer["outputs"] if isinstance(answer, dict) else answer  # BentoML answers the outputs alone
    got = np.asarray(outputs[0]["data"], dtype=np.float32).ravel()
    if got.shape != expected.ravel().shape or not np.allclose(got, expected.ravel(), rtol=1e-4, atol=1e-4):
        raise RuntimeError(f"{endpoint.server} answered {got[:5]}..., onnxruntime computes {expected.ravel()[:5]}...")


# ---------------------------------------------------------------- the run


@dataclass
class Results:
    started: float = field(default_factory=time.perf_counter)
    cases: list[dict] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)
    raw_batches: dict[str, dict] = field(default_factory=dict)


def run_raw(workload: Workload, seconds: float, results: Results) -> None:
    command = [sys.executable, str(BENCH / "raw.py"), "--model", workload.name, "--seconds", str(seconds)]
    command += ["--batches", *map(str, RAW_BATCHES), "--started", str(time.time())]
    output = subprocess.run(command, capture_output=True, text=True, check=True, env=environment(PYTHONPATH=str(BENCH)))
    raw = json.loads(output.stdout)
    batches = {int(batch): values for batch, values in raw["batches"].items()}
    results.raw_batches[workload.name] = batches
    best = max(batches, key=lambda batch: batches[batch]["requests_per_s"])
    for batch, batching in ((1, False), (best, True)):
        case = {
            "model": workload.name,
            "server": "onnxruntime",
            "batching": batching,
            "concurrency": None,
            "batch": batch,
            **batches[batch],
            "errors": 0,
            "rss_mib": raw["rss_mib"],
            "ready_s": raw["ready_s"],
            "rounds": [{key: batches[batch][key] for key in ("requests_per_s", "p50_ms", "cpu_us_per_request")}],
        }
        results.cases.append({name: case[name] for name in FIELDS})


@dataclass
class Target:
    """One model under test: the request every server gets (also as a file, for hey) and the right answer."""

    workload: Workload
    body_file: Path
    expected: np.ndarray

    @classmethod
    def prepare(cls, workload: Workload, work: Path) -> "Target":
        body_file = work / f"{workload.name}.json"
        body_file.write_bytes(workload.request())
        return cls(workload, body_file, load(workload, ROOT / "models")(workload.rows(1)))


def start_all(run: Run, target: Target, servers: list[str], results: Results) -> list[tuple[bool, Deployment]]:
    """Every server of the model, batching off and (where it has it) on; a server that fails to start is reported."""
    deployments = []
    for name in servers:
        for batching in (False, True) if SERVERS[name].batching else (False,):
            try:
                deployments.append((batching, SERVERS[name].start(run, target.workload, batching)))
            except Exception as error:  # a peer that fails to start must not end a long run: it is reported
                failure = {"model": target.workload.name, "server": name, "batching": batching, "error": str(error)}
                results.failures.append(failure)
                tqdm.write(f"  {name} batching {'on' if batching else 'off'}: failed to start: {error}")
    return deployments


def answering(
    deployments: list[tuple[bool, Deployment]], target: Target, results: Results
) -> list[tuple[bool, Endpoint]]:
    """The endpoints whose answer is right; the others are reported."""
    endpoints = []
    for batching, deployment in deployments:
        for endpoint in deployment.endpoints:
            try:
                check_answer(endpoint, target.body_file.read_bytes(), target.expected)
            except Exception as error:
                failure = {"model": target.workload.name, "server": endpoint.server, "batching": batching}
                results.failures.append({**failure, "error": str(error)})
                tqdm.write(f"  {endpoint.server} batching {'on' if batching else 'off'}: {error}")
                continue
            endpoints.append((batching, endpoint))
    return endpoints


def measure(endpoint: Endpoint, body_file: Path, concurrency: int, seconds: float, warmup: float) -> dict:
    """One warm-up and one timed run of hey; the timed run's figures, peak RSS and CPU per answered request."""
    warm = hey(endpoint, body_file, concurrency, ["-z", f"{warmup}s"])
    cpu_before = cpu_seconds(endpoint.processes)
    with peak_rss(endpoint.processes) as peak:
        measured = hey(endpoint, body_file, concurrency, measured_load(warm, concurrency, seconds))
    cpu = cpu_seconds(endpoint.processes) - cpu_before
    return {**measured, "cpu_us_per_request": cpu / max(measured["requests"], 1) * 1e6, "rss_mib": peak()}


def median_case(runs: list[dict]) -> dict:
    """Each figure's median over the rounds (errors and requests summed, RSS at its peak)."""
    case = {key: float(np.median([run[key] for run in runs])) for key in ("requests_per_s", "cpu_us_per_request")}
    for key in ("p50_ms", "p99_ms"):
        values = [run[key] for run in runs if run[key] is not None]
        case[key] = round(float(np.median(values)), 2) if values else None
    case["requests"] = sum(run["requests"] for run in runs)
    case["errors"] = sum(run["errors"] for run in runs)
    case["rss_mib"] = max(run["rss_mib"] for run in runs)
    case["rounds"] = [{key: run[key] for key in ("requests_per_s", "p50_ms", "cpu_us_per_request")} for run in runs]
    return case


def run_model(run: Run, target: Target, args: argparse.Namespace, results: Results) -> None:
    workload = target.workload
    seconds = args.seconds or SECONDS[workload.name]
    deployments = start_all(run, target, args.servers, results)
    try:
        endpoints = answering(deployments, target, results)
        runs: dict[tuple[str, bool, int], list[dict]] = {}
        # A server's batching off and on run back to back, in turn first and second: the machine's speed drifts
        # over seconds, and a ratio of neighbours sees less of it (bench.summary takes the ratio round by round).
        paired = sorted(endpoints, key=lambda case: (case[1].server, case[0]))
        plan = [
            (c, batching, endpoint)
            for round_ in range(args.rounds)
            for c in args.concurrency
            for batching, endpoint in (paired if round_ % 2 == 0 else paired[::-1])
        ]
        for concurrency, batching, endpoint in tqdm(plan, desc=workload.name, unit="run"):
            measured = measure(endpoint, target.body_file, concurrency, seconds, args.warmup)
            runs.setdefault((endpoint.server, batching, concurrency), []).append(measured)
            tqdm.write(
                f"  {workload.name:8} {endpoint.server:14} batching {'on ' if batching else 'off'} "
                f"c={concurrency:<3} {measured['requests_per_s']:8.1f} req/s  p50 {measured['p50_ms']} ms  "
                f"p99 {measured['p99_ms']} ms  CPU {measured['cpu_us_per_request']:.0f} µs/request  "
                f"errors {measured['errors']}  RSS {measured['rss_mib']:.0f} MiB"
            )
        ready = {(endpoint.server, batching): endpoint.ready_s for batching, endpoint in endpoints}
        for (server, batching, concurrency), samples in runs.items():
            case = {
                "model": workload.name,
                "server": server,
                "batching": batching,
                "concurrency": concurrency,
                "batch": None,
                **median_case(samples),
                "ready_s": ready[server, batching],
            }
            results.cases.append({name: case[name] for name in FIELDS})
    finally:
        for _, deployment in deployments:
            deployment.close()


def machine() -> dict[str, str | int | float]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    memory_kib = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())[1])
    return {
        "nproc": os.cpu_count() or 0,
        "cpu": model[1].strip() if model else platform.processor(),
        "memory_gib": round(memory_kib / 1024**2, 1),
        "python": platform.python_version(),
    }


def versions() -> dict[str, str]:
    """What each peer's venv was built with (bench/setup.sh writes it)."""
    found = {}
    for venv in sorted({server.venv for server in SERVERS.values() if server.venv}):
        marker = VENVS / venv / ".installed"
        found[venv] = marker.read_text().strip() if marker.exists() else "not installed"
    return found


def write(results: Results, args: argparse.Namespace) -> dict:
    report = {
        "date": date.today().isoformat(),
        "machine": machine(),
        "command": " ".join(["python -m bench.serving", *sys.argv[1:]]),
        "settings": {
            "models": args.models,
            "servers": args.servers,
            "concurrency": args.concurrency,
            "seconds": {model: args.seconds or SECONDS[model] for model in args.models},
            "warmup_s": args.warmup,
            "rounds": args.rounds,
            "batching": {"max_batch_size": MAX_BATCH_SIZE, "max_wait_ms": MAX_WAIT_MS},
            "onnxruntime_threads": {"intra_op": 1, "inter_op": 1},
            "cores": {"servers": SERVER_CORE, "load_generator": LOAD_CORE},
            "peers": versions(),
        },
        "wall_s": round(time.perf_counter() - results.started, 1),
        "fields": list(FIELDS),
        "cases": results.cases,
        "raw_batches": results.raw_batches,
        "failures": results.failures,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "serving.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "serving.md").write_text(markdown(report))
    return report


def plot(out: Path) -> None:
    python = VENVS / "plot" / "bin" / "python"
    if not python.exists():
        print(f"no plot: {python} is missing (bench/setup.sh plot makes it)")
        return
    subprocess.run(
        [str(python), str(BENCH / "plot.py"), str(out / "serving.json"), str(out / "serving.png")], check=True
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=sorted(WORKLOADS), default=list(WORKLOADS))
    parser.add_argument("--servers", nargs="+", choices=list(SERVERS), default=list(SERVERS))
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=None, help="load per case (default: per model)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load before each measured run")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds per case; the median counts")
    parser.add_argument("--out", type=Path, default=BENCH / "results")
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args()
    if not HEY.exists():
        sys.exit(f"{HEY} is missing: run bench/setup.sh hey")
    for name in args.servers:
        venv = SERVERS[name].venv
        if venv and not (VENVS / venv / ".installed").exists():
            sys.exit(f"{VENVS / venv} is missing: run bench/setup.sh {venv}")
    if (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {SERVER_CORE})  # every server started from here inherits core 0
    results = Results()
    TOOLS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="serving-", dir=TOOLS) as folder:
        work = Path(folder)
        redis = Stack(work)
        try:
            run = Run(work, redis.start_redis(), tandem_repository(work))
            for model in args.models:
                workload = WORKLOADS[model]
                print(f"{model} ({workload.size})", flush=True)
                run_raw(workload, min(2.0, args.seconds or 2.0), results)
                target = Target.prepare(workload, work)
                run_model(run, target, args, results)
                write(results, args)
            write(results, args)
        finally:
            redis.close()
    if not args.no_plot:
        plot(args.out)
    print((args.out / "serving.md").read_text())


if __name__ == "__main__":
    main()
