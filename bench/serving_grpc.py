"""The Open Inference Protocol over gRPC and REST with binary tensors, against raw onnxruntime and Tandem's own REST
JSON in the same run, for every benchmark model.

    python -m bench.serving_grpc [--models diabetes minilm nsfw] [--concurrency 1 8 32] [--seconds S] [--warmup W]
                                 [--rounds R] [--out bench/results]

For each model, Tandem's service with only that model (nsfw through its plain tensor interface, as in
bench.serving) beside its two sidecars and the gateway beside its own, then --rounds interleaved rounds of: raw
onnxruntime in-process at batch 1 (bench/raw.py), REST JSON and REST with the binary tensor extension (inputs
and outputs) directly (hey), and gRPC with raw_input_contents
(bench/grpc_load.py) directly, through the service's gRPC sidecar and through the gateway, at each concurrency.
Servers run on core 0, the load generators on core 1; each case is the median of its rounds, with the CPU time the
serving processes spent per answered request. Every path's answer is checked against onnxruntime's first.
Writes serving-grpc.json, serving-grpc.md and serving-grpc.png (with the plot venv of bench/setup.sh) to --out.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import grpc
import httpx
import numpy as np
from tqdm import tqdm

from bench.report import down
from bench.serving import (
    BENCH,
    GATEWAY_KEY,
    LOAD_CORE,
    SERVER_CORE,
    SERVICE,
    TOOLS,
    VENVS,
    Endpoint,
    cpu_seconds,
    machine,
    measure,
    median_case,
    rss_mib,
    tandem_repository,
)
from bench.workloads import WORKLOADS, Workload, load
from tandem.grpc_protocol import SERVICE as GRPC_SERVICE
from tandem.grpc_protocol import message
from tandem.protocol import tensor_bytes
from tests.integration.stack import ROOT, Process, Sidecar, Stack, environment

SECONDS = {"diabetes": 4.0, "minilm": 6.0, "nsfw": 8.0}
# The goal of issue 14: nsfw over gRPC at batch 1 at least this share of raw onnxruntime's rate.
GOAL = 0.85


@dataclass
class GrpcEndpoint:
    path: str
    target: str
    metadata: dict[str, str]
    processes: list[Process]


def grpc_request(workload: Workload) -> bytes:
    """One row as a serialized ModelInferRequest with raw_input_contents, as tritonclient sends it."""
    rows = workload.rows(1)
    request = message("ModelInferRequest")(model_name=workload.name)
    request.inputs.add(name=workload.input_name, datatype=workload.datatype, shape=rows.shape)
    request.raw_input_contents.append(tensor_bytes(rows, workload.datatype))
    return request.SerializeToString()


def rest_binary_request(workload: Workload) -> tuple[bytes, int]:
    """One row as REST with the binary tensor extension, both ways (as tritonclient.http sends it by default):
    the body, and the length of its JSON header."""
    rows = workload.rows(1)
    data = tensor_bytes(rows, workload.datatype)
    tensor = {"name": workload.input_name, "shape": list(rows.shape), "datatype": workload.datatype}
    header = {
        "inputs": [tensor | {"parameters": {"binary_data_size": len(data)}}],
        "parameters": {"binary_data_output": True},
    }
    encoded = json.dumps(header, separators=(",", ":")).encode()
    return encoded + data, len(encoded)


def check_rest_binary(endpoint: Endpoint, body: bytes, expected: np.ndarray, workload: Workload) -> None:
    response = httpx.post(endpoint.url, content=body, headers=endpoint.headers, timeout=60)
    if response.status_code != 200:
        raise RuntimeError(f"{endpoint.server} answered {response.status_code}: {response.text[:500]}")
    length = int(response.headers["inference-header-content-length"])
    answer, offset = json.loads(response.content[:length]), length
    for output in answer["outputs"]:
        size = output["parameters"]["binary_data_size"]
        if output["name"] == workload.output_name:
            got = np.frombuffer(response.content[offset : offset + size], dtype="<f4").reshape(expected.shape)
            np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5, err_msg=f"{endpoint.server} differs")
            return
        offset += size
    raise RuntimeError(f"{endpoint.server} gave no output {workload.output_name}: {answer}")


def check_grpc(endpoint: GrpcEndpoint, request: bytes, expected: np.ndarray, workload: Workload) -> None:
    with grpc.insecure_channel(endpoint.target, options=[("grpc.max_send_message_length", 64 << 20)]) as channel:
        call = channel.unary_unary(
            f"/{GRPC_SERVICE}/ModelInfer", response_deserializer=message("ModelInferResponse").FromString
        )
        response = call(request, metadata=list(endpoint.metadata.items()), timeout=60)
    index = [output.name for output in response.outputs].index(workload.output_name)
    got = np.frombuffer(response.raw_output_contents[index], dtype="<f4").reshape(expected.shape)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5, err_msg=f"{endpoint.path} answers differ")


def grpc_measure(endpoint: GrpcEndpoint, request_file: Path, concurrency: int, seconds: float, warmup: float) -> dict:
    command = ["taskset", "-c", str(LOAD_CORE), sys.executable, str(BENCH / "grpc_load.py")]
    command += [
        "--target",
        endpoint.target,
        "--request",
        str(request_file),
        "--metadata",
        json.dumps(endpoint.metadata),
    ]
    command += ["--concurrency", str(concurrency), "--seconds", str(seconds), "--warmup", str(warmup)]
    # Not core 0's affinity: the load generator gets core 1 alone.
    before = cpu_seconds(endpoint.processes)
    output = subprocess.run(command, capture_output=True, text=True, check=True, env=environment())
    measured = json.loads(output.stdout)
    # The CPU of the warm-up is counted too; the warm-up's requests are estimated at the measured rate.
    cpu = cpu_seconds(endpoint.processes) - before
    answered = measured["requests"] * (seconds + warmup) / seconds
    return {**measured, "cpu_us_per_request": cpu / max(answered, 1) * 1e6, "rss_mib": 0.0}


def raw_batch_1(workload: Workload, seconds: float) -> dict:
    command = [sys.executable, str(BENCH / "raw.py"), "--model", workload.name, "--seconds", str(seconds)]
    output = subprocess.run(
        [*command, "--batches", "1"], capture_output=True, text=True, check=True, env=environment(PYTHONPATH=str(BENCH))
    )
    return json.loads(output.stdout)["batches"]["1"]


def start(
    work: Path, workload: Workload, repository: Path, binary_header_length: int
) -> tuple[Stack, list[Endpoint], list[GrpcEndpoint]]:
    service = SERVICE[workload.name]
    work.mkdir(exist_ok=True)
    stack = Stack(work)
    try:
        stack.start_redis()
        sidecar, app_port = stack.start_service(
            service, repository, grpc=True, **{f"{service.upper()}_MODELS": workload.name}
        )
        gateway, gateway_sidecar, _ = stack.start_gateway({"bench": GATEWAY_KEY}, GATEWAY_RATE_LIMIT="0")
    except BaseException:
        stack.close()
        raise
    app = next(process for process in stack.processes if process.name == service)
    grpc_sidecar = stack.grpc_sidecars[service]
    url = f"http://127.0.0.1:{app_port}/v2/models/{workload.name}/infer"
    rest = [
        Endpoint("rest-json-direct", url, {"dapr-api-token": stack.app_api_token}, [app], 0.0),
        Endpoint(
            "rest-binary-direct",
            url,
            {"dapr-api-token": stack.app_api_token, "inference-header-content-length": str(binary_header_length)},
            [app],
            0.0,
        ),
    ]
    endpoints = [
        GrpcEndpoint(
            "grpc-direct", f"127.0.0.1:{stack.grpc_ports[service]}", {"dapr-api-token": stack.app_api_token}, [app]
        ),
        GrpcEndpoint(
            "grpc-sidecar",
            f"127.0.0.1:{grpc_sidecar.grpc_port}",
            {"dapr-api-token": stack.dapr_api_token, "dapr-app-id": grpc_sidecar.app_id},
            [app, grpc_sidecar.process],
        ),
        GrpcEndpoint(
            "grpc-gateway",
            f"127.0.0.1:{stack.gateway_grpc_port}",
            {"authorization": f"Bearer {GATEWAY_KEY}"},
            [app, grpc_sidecar.process, gateway, gateway_sidecar.process],
        ),
    ]
    return stack, rest, endpoints


def heap_inuse_mib(sidecar: Sidecar) -> float | None:
    """daprd's Go heap in use (`go_memstats_heap_inuse_bytes`), from its metrics server; None when that server
    keeps failing (daprd 1.18.2 at times answers 500 for a metric it registered twice, `dapr_resiliency_loaded`)."""
    deadline = time.monotonic() + 30
    while True:
        answer = httpx.get(f"http://127.0.0.1:{sidecar.metrics_port}/metrics", timeout=5)
        lines = [line for line in answer.text.splitlines() if line.startswith("go_memstats_heap_inuse_bytes ")]
        if lines:
            return float(lines[0].split()[1]) / 2**20
        if time.monotonic() > deadline:
            print(f"no heap in use for {sidecar.app_id}: {answer.status_code} {answer.text[:300]}", file=sys.stderr)
            return None
        time.sleep(1)


def sidecar_memory(stack: Stack, service: str) -> dict[str, dict[str, float]]:
    """What the second sidecar costs: RSS and Go heap in use of both of the service's sidecars, before any load."""
    return {
        name: {"rss_mib": rss_mib([sidecar.process]), "heap_inuse_mib": heap_inuse_mib(sidecar)}
        for name, sidecar in (("http", stack.sidecars[service]), ("grpc", stack.grpc_sidecars[service]))
    }


def run_model(workload: Workload, args: argparse.Namespace, work: Path, repository: Path, memory: dict) -> list[dict]:
    seconds = args.seconds or SECONDS[workload.name]
    request_file, body_file = work / f"{workload.name}.grpc", work / f"{workload.name}.json"
    binary_file = work / f"{workload.name}.bin"
    request_file.write_bytes(grpc_request(workload))
    body_file.write_bytes(workload.request())
    binary_body, header_length = rest_binary_request(workload)
    binary_file.write_bytes(binary_body)
    bodies = {"rest-json-direct": body_file, "rest-binary-direct": binary_file}
    expected = load(workload, ROOT / "models")(workload.rows(1))
    stack, rest, endpoints = start(work / workload.name, workload, repository, header_length)
    runs: dict[tuple[str, int | None], list[dict]] = {}
    try:
        for endpoint in endpoints:
            check_grpc(endpoint, request_file.read_bytes(), expected, workload)
        check_rest_binary(rest[1], binary_body, expected, workload)
        memory[workload.name] = sidecar_memory(stack, SERVICE[workload.name])
        plan = [
            (path, concurrency)
            for _ in range(args.rounds)
            for path in (
                "onnxruntime",
                *(endpoint.server for endpoint in rest),
                *(endpoint.path for endpoint in endpoints),
            )
            for concurrency in ([None] if path == "onnxruntime" else args.concurrency)
        ]
        for path, concurrency in tqdm(plan, desc=workload.name, unit="run"):
            if path == "onnxruntime":
                measured = raw_batch_1(workload, seconds)
                measured |= {"errors": 0, "rss_mib": 0.0}
            elif path in bodies:
                endpoint = next(endpoint for endpoint in rest if endpoint.server == path)
                measured = measure(endpoint, bodies[path], concurrency, seconds, args.warmup)
            else:
                endpoint = next(endpoint for endpoint in endpoints if endpoint.path == path)
                measured = grpc_measure(endpoint, request_file, concurrency, seconds, args.warmup)
            runs.setdefault((path, concurrency), []).append(measured)
            tqdm.write(
                f"  {workload.name:8} {path:16} c={concurrency!s:<4} {measured['requests_per_s']:8.1f} req/s  "
                f"p50 {measured['p50_ms']} ms  CPU {measured['cpu_us_per_request']:.0f} µs/request  "
                f"errors {measured['errors']}"
            )
    finally:
        stack.close()
    return [
        {"model": workload.name, "path": path, "concurrency": concurrency, **median_case(samples)}
        for (path, concurrency), samples in runs.items()
    ]


def summary(cases: list[dict]) -> list[str]:
    lines = []
    for model in dict.fromkeys(case["model"] for case in cases):
        own = [case for case in cases if case["model"] == model]
        raw = next(case for case in own if case["path"] == "onnxruntime")
        min_concurrency = min(case["concurrency"] for case in own if case["concurrency"] is not None)
        for path in ("grpc-direct", "grpc-sidecar", "grpc-gateway", "rest-binary-direct", "rest-json-direct"):
            best = max((case for case in own if case["path"] == path), key=lambda case: case["requests_per_s"])
            share = best["requests_per_s"] / raw["requests_per_s"]
            goal = ""
            if model == "nsfw" and path.startswith("grpc"):
                goal = f" (goal ≥ {GOAL}×: {'met' if share >= GOAL else 'NOT met'})"
            # CPU per answered request, which other work on the machine disturbs far less than rates: raw
            # onnxruntime's over the path's at concurrency 1 (the serving processes' CPU, sidecars included).
            single = next(case for case in own if case["path"] == path and case["concurrency"] == min_concurrency)
            efficiency = raw["cpu_us_per_request"] / single["cpu_us_per_request"]
            lines.append(
                f"- {model}, {path} at its best (concurrency {best['concurrency']}): {down(best['requests_per_s'])} "
                f"requests/s against raw onnxruntime's {down(raw['requests_per_s'])} rows/s at batch 1: "
                f"**{down(share)}×**{goal}; CPU per request at concurrency {min_concurrency}: "
                f"{down(single['cpu_us_per_request'])} µs against raw's {down(raw['cpu_us_per_request'])} µs: "
                f"**{down(efficiency)}×**"
            )
    return lines


def heap(found: dict) -> str:
    return "unknown" if found["heap_inuse_mib"] is None else f"{down(found['heap_inuse_mib'])} MiB"


def markdown(report: dict) -> str:
    rows = [
        f"| {case['model']} | {case['path']} | {case['concurrency'] or ''} | {down(case['requests_per_s'])} | "
        f"{down(case['p50_ms']) if case['p50_ms'] is not None else ''} | "
        f"{down(case['p99_ms']) if case['p99_ms'] is not None else ''} | {down(case['cpu_us_per_request'])} | "
        f"{case['errors']} |"
        for case in report["cases"]
    ]
    return "\n".join(
        [
            "# The Open Inference Protocol over gRPC",
            "",
            f"{report['date']}; {report['machine']['nproc']} cores ({report['machine']['cpu']}), Python "
            f"{report['machine']['python']}. Command: `{report['command']}`. Servers on core {SERVER_CORE}, load "
            f"generators on core {LOAD_CORE} (hey for REST, bench/grpc_load.py for gRPC: one grpc.aio channel, the "
            "same serialized request with raw_input_contents); one row per request; the median of "
            f"{report['rounds']} interleaved rounds. onnxruntime: in-process, batch 1, one thread.",
            "",
            *summary(report["cases"]),
            "",
            "What the second sidecar (the gRPC one) costs, before any load: "
            + "; ".join(
                f"{model}: RSS {down(found['grpc']['rss_mib'])} MiB, Go heap in use {heap(found['grpc'])} "
                f"(its HTTP sidecar: {down(found['http']['rss_mib'])} MiB, {heap(found['http'])})"
                for model, found in report["sidecar_memory"].items()
            )
            + ".",
            "",
            "| model | path | concurrency | requests/s | p50 ms | p99 ms | CPU µs/request | errors |",
            "|---|---|---|---|---|---|---|---|",
            *rows,
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=sorted(SECONDS), default=list(SECONDS))
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=None, help="per case; default per model")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=BENCH / "results")
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args()
    if (os.cpu_count() or 1) > LOAD_CORE:
        os.sched_setaffinity(0, {SERVER_CORE})  # every server started from here inherits core 0
    TOOLS.mkdir(exist_ok=True)
    cases: list[dict] = []
    memory: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="serving-grpc-", dir=TOOLS) as folder:
        work = Path(folder)
        repository = tandem_repository(work)
        for name in args.models:
            cases += run_model(WORKLOADS[name], args, work, repository, memory)
    report = {
        "date": date.today().isoformat(),
        "command": " ".join(["python -m bench.serving_grpc", *sys.argv[1:]]),
        "machine": machine(),
        "rounds": args.rounds,
        "cases": cases,
        "sidecar_memory": memory,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "serving-grpc.json").write_text(json.dumps(report, indent=1))
    (args.out / "serving-grpc.md").write_text(markdown(report))
    print(markdown(report))
    python = VENVS / "plot" / "bin" / "python"
    if args.no_plot:
        return
    if python.exists():
        subprocess.run(
            [
                str(python),
                str(BENCH / "plot_grpc.py"),
                str(args.out / "serving-grpc.json"),
                str(args.out / "serving-grpc.png"),
            ],
            check=True,
        )
    else:
        print(f"no plot: {python} is missing (bench/setup.sh plot makes it)")


if __name__ == "__main__":
    main()
