"""The gateway's own added latency: the same request through the gateway and through the same two sidecars
without it.

    python -m bench.gateway [--seconds 5] [--rounds 3] [--concurrency 1 8]

Starts Redis, the regression service beside its sidecar and the gateway beside its own (tokens on, rate limit
off), all on core 0; hey runs on core 1. Paths, each sending diabetes one row:
  direct         client -> regression app
  one sidecar    client -> regression's sidecar -> app
  two sidecars   client -> gateway's sidecar -> regression's sidecar -> app (what the gateway does, minus it)
  gateway        client -> gateway -> gateway's sidecar -> regression's sidecar -> app
The gateway's cost is "gateway" minus "two sidecars", in latency and in CPU time per request (of the processes
each path runs through), which a busy machine disturbs far less; and the CPU of the gateway process alone. Paths
take turns for --rounds rounds and the median round counts, so a noisy moment hits every path alike. Writes
bench/results/gateway.{json,md,png}.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

from tqdm import tqdm

from bench.report import number
from bench.serving import HEY, LOAD_CORE, SERVER_CORE, VENVS, Endpoint, cpu_seconds, hey, machine
from tests.integration.stack import ROOT, Stack

BENCH = ROOT / "bench"
KEY = "bench-key-0123456789"
ROW = [0.038, 0.051, 0.062, 0.022, -0.044, -0.035, -0.043, -0.003, 0.020, -0.018]
PATHS = ["direct", "one sidecar", "two sidecars", "gateway"]


def start(stack: Stack) -> dict[str, Endpoint]:
    models = ROOT / "models"
    regression, app_port = stack.start_service("regression", models, REGRESSION_MODELS="diabetes")
    # The stack's own app ids (over mDNS a fixed "regression" could be another stack's); the gateway routes to them.
    gateway, gateway_sidecar, gateway_port = stack.start_gateway({"bench": KEY}, GATEWAY_RATE_LIMIT="0")
    service = stack.app_id("regression")
    app = next(process for process in stack.processes if process.name == "regression")
    one = [app, regression.process]
    two = [*one, gateway_sidecar.process]
    infer = "v2/models/diabetes/infer"
    dapr = {"dapr-api-token": stack.dapr_api_token}
    return {
        "direct": Endpoint(
            "direct", f"http://127.0.0.1:{app_port}/{infer}", {"dapr-api-token": stack.app_api_token}, [app], 0
        ),
        "one sidecar": Endpoint("one sidecar", f"{regression.url}/v1.0/invoke/{service}/method/{infer}", dapr, one, 0),
        "two sidecars": Endpoint(
            "two sidecars", f"{gateway_sidecar.url}/v1.0/invoke/{service}/method/{infer}", dapr, two, 0
        ),
        "gateway": Endpoint(
            "gateway",
            f"http://127.0.0.1:{gateway_port}/{infer}",
            {"Authorization": f"Bearer {KEY}"},
            [*two, gateway],
            0,
        ),
    }


def measure(endpoints: dict[str, Endpoint], body: Path, concurrency: list[int], seconds: float, rounds: int) -> list:
    runs: dict[tuple[str, int], list[dict]] = {}
    cases = [(path, c) for _ in range(rounds) for c in concurrency for path in PATHS]
    for path, c in tqdm(cases, desc="gateway bench", unit="run"):
        hey(endpoints[path], body, c, ["-z", "1s"])  # warm-up: pooled connections open, caches hot
        processes = endpoints[path].processes
        cpu_before, own_before = cpu_seconds(processes), cpu_seconds(processes[-1:])
        run = hey(endpoints[path], body, c, ["-z", f"{seconds:g}s"])
        cpu, own = cpu_seconds(processes) - cpu_before, cpu_seconds(processes[-1:]) - own_before
        requests = max(run["requests"], 1)
        runs.setdefault((path, c), []).append(
            {**run, "cpu_us_per_request": cpu / requests * 1e6, "own_cpu_us_per_request": own / requests * 1e6}
        )
    results = []
    for (path, c), samples in runs.items():
        median = sorted(samples, key=lambda run: run["p50_ms"])[len(samples) // 2]
        cpu = sorted(run["cpu_us_per_request"] for run in samples)[len(samples) // 2]
        own = sorted(run["own_cpu_us_per_request"] for run in samples)[len(samples) // 2]
        results.append(
            {
                "path": path,
                "concurrency": c,
                **median,
                "cpu_us_per_request": cpu,
                "own_cpu_us_per_request": own,
                "rounds": len(samples),
            }
        )
    for c in concurrency:
        at = {r["path"]: r for r in results if r["concurrency"] == c}
        for stat in ("p50_ms", "p99_ms", "cpu_us_per_request"):
            at["gateway"][f"added_{stat}"] = round(at["gateway"][stat] - at["two sidecars"][stat], 2)
            at["one sidecar"][f"added_{stat}"] = round(at["one sidecar"][stat] - at["direct"][stat], 2)
            at["two sidecars"][f"added_{stat}"] = round(at["two sidecars"][stat] - at["one sidecar"][stat], 2)
    return results


def _whole(value: float | None) -> str:
    return "" if value is None else number(value, 0)


def markdown(report: dict) -> str:
    lines = [
        f"# Gateway overhead ({report['date']}, {report['machine']['cpu']}, {report['machine']['nproc']} cores)",
        "",
        f"Command: `{report['command']}`. diabetes, one row; servers on core 0, hey on core 1; {report['seconds']:g} s"
        f" per run after 1 s of warm-up; the median of {report['rounds']} interleaved rounds.",
        "",
        "| path | concurrency | requests/s | p50 (ms) | p99 (ms) | CPU µs/request | added p50 (ms) | added p99 (ms) "
        "| added CPU µs/request | own CPU µs/request | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        lines.append(
            f"| {r['path']} | {r['concurrency']} | {number(r['requests_per_s'], 0)} | {r['p50_ms']} | {r['p99_ms']} | "
            f"{number(r['cpu_us_per_request'], 0)} | {r.get('added_p50_ms', '')} | {r.get('added_p99_ms', '')} | "
            f"{_whole(r.get('added_cpu_us_per_request'))} | {_whole(r.get('own_cpu_us_per_request'))} | {r['errors']} |"
        )
    lines += [
        "",
        "Added: gateway over two sidecars (the gateway app alone), two sidecars over one (the caller's sidecar),",
        "one sidecar over direct (the callee's sidecar). Own CPU: that of the process the path adds to the one before",
        "it (the app, the callee's sidecar, the caller's sidecar, the gateway app) alone; the added CPU also holds",
        "what the other processes spend more per request when fewer requests share their wake-ups.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--out", type=Path, default=BENCH / "results")
    args = parser.parse_args()
    if not HEY.exists():
        sys.exit(f"{HEY} is missing: run bench/setup.sh hey")
    if (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {SERVER_CORE})  # every process started from here inherits core 0
    with tempfile.TemporaryDirectory() as work:
        stack = Stack(Path(work))
        try:
            stack.start_redis()
            endpoints = start(stack)
            body = Path(work) / "body.json"
            body.write_text(
                json.dumps({"inputs": [{"name": "input", "shape": [1, 10], "datatype": "FP32", "data": ROW}]})
            )
            results = measure(endpoints, body, args.concurrency, args.seconds, args.rounds)
        finally:
            stack.close()
    report = {
        "date": date.today().isoformat(),
        "machine": machine(),
        "command": "python -m bench.gateway " + " ".join(sys.argv[1:]),
        "seconds": args.seconds,
        "rounds": args.rounds,
        "load_core": LOAD_CORE,
        "results": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gateway.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "gateway.md").write_text(markdown(report))
    print(markdown(report))
    python = VENVS / "plot" / "bin" / "python"
    if python.exists():
        subprocess.run(
            [
                str(python),
                str(BENCH / "plot_gateway.py"),
                str(args.out / "gateway.json"),
                str(args.out / "gateway.png"),
            ],
            check=True,
        )
    else:
        print(f"no plot: {python} is missing (bench/setup.sh plot makes it)")


if __name__ == "__main__":
    main()
