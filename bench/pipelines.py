"""The pipelines' own cost, measured against the same models called one after another.

    python -m bench.pipelines [--requests 300] [--seconds 10] [--runs 40]

Starts Redis, placement, the scheduler, the model services and the pipelines app, each beside its sidecar, the
servers on core 0 and this client on core 1. Three measures:
  per step    chains of 1, 2, 4 and 8 diabetes steps (each waits for the one before: its condition reads it),
              sent one at a time to the pipelines app through its sidecar, against the same number of diabetes
              calls made one after another through that same sidecar. The executor's cost per step is the slope
              of (pipeline - calls) over the chain's length; the intercept is the one hop into the pipelines app.
  throughput  a two-step chain, diabetes then the sentiment of a review, at concurrency 4, against the sentiment
              model alone (its slowest step) through the same sidecar, in two layouts: every server sharing
              core 0 (the chain's other work takes CPU from its slowest step: the total cost), and the slowest
              step's service on core 1 of its own with the rest and the client on core 0 (as deployed, where each
              service has its own CPU: how close the chain comes to the pace of its slowest step).
  durable     runs of the 8-step chain started at once on the durable executor (Dapr Workflow): steps per second
              until the last run completes.
Writes bench/results/pipelines.{json,md,png}.
"""

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import aiohttp
import numpy as np
import yaml
from tqdm import tqdm

from bench.serving import LOAD_CORE, SERVER_CORE, VENVS, machine
from tests.integration.stack import ROOT, Stack, free_port, wait_until

BENCH = ROOT / "bench"
ROW = [0.038, 0.051, 0.062, 0.022, -0.044, -0.035, -0.043, -0.003, 0.020, -0.018]
DIABETES = {"inputs": [{"name": "input", "shape": [1, 10], "datatype": "FP32", "data": ROW}]}
LENGTHS = [1, 2, 4, 8]
CONCURRENCY = 4


def chain(length: int) -> dict:
    steps = []
    for k in range(1, length + 1):
        step = {"name": f"s{k}", "model": "diabetes", "inputs": {"input": "$input.input"}}
        if k > 1:
            step["when"] = f"all(s{k - 1}.variable == s{k - 1}.variable)"
        steps.append(step)
    return {
        "apiVersion": "tandem.dev/v1",
        "kind": "Pipeline",
        "metadata": {"name": f"chain-{length}"},
        "spec": {
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 10]}],
            "steps": steps,
            "outputs": {"last": f"s{length}.variable"},
        },
    }


# A chain of a fast step and a slow one: the sentiment step waits for the regression step (its condition reads it).
SCORE_THEN_FEEL = {
    "apiVersion": "tandem.dev/v1",
    "kind": "Pipeline",
    "metadata": {"name": "score-then-feel"},
    "spec": {
        "inputs": [
            {"name": "input", "datatype": "FP32", "shape": [-1, 10]},
            {"name": "text", "datatype": "BYTES", "shape": [-1]},
        ],
        "steps": [
            {"name": "ridge", "model": "diabetes", "inputs": {"input": "$input.input"}},
            {
                "name": "sentiment",
                "model": "sentiment",
                "inputs": {"text": "$input.text"},
                "when": "all(ridge.variable == ridge.variable)",
            },
        ],
        "outputs": {"label": "sentiment.label", "score": "ridge.variable"},
    },
}
TEXT = "The parcel arrived two weeks late, the box was crushed and nobody answered my emails about a refund."


class Deployment:
    def __init__(self, stack: Stack, folder: Path):
        models = ROOT / "models"
        placement, scheduler = stack.start_placement(), stack.start_scheduler()
        # App ids of this run's own: another stack's sidecars on the host could answer a common one (mDNS).
        ids = {service: stack.app_id(service) for service in ("regression", "nlp", "pipelines")}
        for service, wanted in (("regression", "diabetes"), ("nlp", "sentiment")):
            stack.start_app_beside_sidecar(
                service,
                stack.components({}),
                ids[service],
                **{f"{service.upper()}_MODEL_REPOSITORY": str(models), f"{service.upper()}_MODELS": wanted},
            )
        app_port, http_port, grpc_port = free_port(), free_port(), free_port()
        stack.start_app(
            "pipelines",
            [sys.executable, "-m", "pipelines"],
            app_port,
            DAPR_HTTP_PORT=str(http_port),
            DAPR_GRPC_PORT=str(grpc_port),
            PIPELINES_FOLDER=str(folder),
            PIPELINES_SERVICES=f"{ids['regression']},{ids['nlp']}",
        )
        resources = stack.components({})  # the committed scopes name "pipelines": the stack adds its id
        self.sidecar = stack.start_sidecar(
            ids["pipelines"],
            resources,
            app_port,
            http_port,
            grpc_port=grpc_port,
            placement=placement,
            scheduler=scheduler,
        )
        self.headers = {"dapr-api-token": stack.dapr_api_token}
        self.slowest_service = next(process.popen.pid for process in stack.processes if process.name == "nlp")
        invoke = f"{self.sidecar.url}/v1.0/invoke"
        self.pipeline = lambda name: f"{invoke}/{ids['pipelines']}/method/v2/models/{name}/infer"
        self.model = lambda service, name: f"{invoke}/{ids[service]}/method/v2/models/{name}/infer"
        self.runs = f"{invoke}/{ids['pipelines']}/method/v2/pipelines"
        for name in [*(f"chain-{n}" for n in LENGTHS), "score-then-feel"]:
            url = f"{invoke}/{ids['pipelines']}/method/v2/models/{name}/ready"
            wait_until(lambda url=url: _status(url, self.headers) == 200, f"{name} ready", 120)


def _status(url: str, headers: dict) -> int:
    import httpx

    return httpx.get(url, headers=headers).status_code


async def post(session: aiohttp.ClientSession, url: str, body: bytes) -> None:
    async with session.post(url, data=body, headers={"content-type": "application/json"}) as answer:
        content = await answer.read()
        if answer.status != 200:
            raise RuntimeError(f"{url}: {answer.status}: {content[:300]!r}")


async def one_by_one(session, urls: list[str], body: bytes) -> float:
    """Milliseconds for the calls, one after another."""
    started = time.perf_counter()
    for url in urls:
        await post(session, url, body)
    return (time.perf_counter() - started) * 1000


async def per_step(deployment: Deployment, session, requests: int) -> list[dict]:
    body = json.dumps(DIABETES).encode()
    diabetes = deployment.model("regression", "diabetes")
    samples: dict[tuple[str, int], list[float]] = {}
    cases = [(kind, n) for n in LENGTHS for kind in ("pipeline", "calls")]
    for kind, n in cases:  # warm-up: connections open, code paths hot
        urls = [deployment.pipeline(f"chain-{n}")] if kind == "pipeline" else [diabetes] * n
        for _ in range(20):
            await one_by_one(session, urls, body)
    for _ in tqdm(range(requests), desc="per step", unit="round"):
        for kind, n in cases:  # interleaved, so that a noisy moment hits every case alike
            urls = [deployment.pipeline(f"chain-{n}")] if kind == "pipeline" else [diabetes] * n
            samples.setdefault((kind, n), []).append(await one_by_one(session, urls, body))
    results = []
    for n in LENGTHS:
        pipeline, calls = (statistics.median(samples[(kind, n)]) for kind in ("pipeline", "calls"))
        results.append({"steps": n, "pipeline_p50_ms": round(pipeline, 3), "calls_p50_ms": round(calls, 3),
                        "added_ms": round(pipeline - calls, 3)})  # fmt: skip
    slope, intercept = np.polyfit([r["steps"] for r in results], [r["added_ms"] for r in results], 1)
    return results, round(float(slope), 3), round(float(intercept), 3)


async def rate(session, url: str, body: bytes, concurrency: int, seconds: float) -> float:
    """Requests per second at `concurrency` for `seconds`."""
    done, deadline = 0, time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await post(session, url, body)
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.perf_counter() - started)


def pin(pid: int, cores: set[int]) -> None:
    """Every thread of process `pid` (onnxruntime's too) onto `cores`."""
    for thread in os.listdir(f"/proc/{pid}/task"):
        os.sched_setaffinity(int(thread), cores)


# Layout -> (cores of the slowest step's service, cores of this client); every other server stays on core 0.
LAYOUTS = {
    "shared core": ({SERVER_CORE}, {LOAD_CORE}),
    "slowest step on a core of its own": ({LOAD_CORE}, {SERVER_CORE}),
}


async def throughput(deployment: Deployment, session, seconds: float, rounds: int) -> dict:
    results = {}
    for layout, (service_cores, client_cores) in LAYOUTS.items():
        if (os.cpu_count() or 1) > 1:
            pin(deployment.slowest_service, service_cores)
            pin(os.getpid(), client_cores)
        results[layout] = await throughput_in_layout(deployment, session, seconds, rounds, layout)
    return results


async def throughput_in_layout(deployment: Deployment, session, seconds: float, rounds: int, layout: str) -> dict:
    text = {"name": "text", "shape": [1], "datatype": "BYTES", "data": [TEXT]}
    bodies = {
        "chain": json.dumps({"inputs": [DIABETES["inputs"][0], text]}).encode(),
        "slowest step alone": json.dumps({"inputs": [text]}).encode(),
    }
    cases = {
        "chain": deployment.pipeline("score-then-feel"),
        "slowest step alone": deployment.model("nlp", "sentiment"),
    }
    for name, url in cases.items():
        await rate(session, url, bodies[name], CONCURRENCY, 2.0)
    measured: dict[str, list[float]] = {name: [] for name in cases}
    for _ in tqdm(range(rounds), desc=f"throughput, {layout}", unit="round"):
        for name, url in cases.items():
            measured[name].append(await rate(session, url, bodies[name], CONCURRENCY, seconds))
    result = {name: round(statistics.median(values), 2) for name, values in measured.items()}
    return {"requests_per_s": result, "ratio": round(result["chain"] / result["slowest step alone"], 3)}


async def durable(deployment: Deployment, session, runs: int) -> dict:
    body = json.dumps(DIABETES).encode()
    started = time.perf_counter()
    ids = []
    for _ in range(runs):
        async with session.post(f"{deployment.runs}/chain-8/runs", data=body) as answer:
            ids.append((await answer.json())["id"])
    pending = set(ids)
    with tqdm(total=runs, desc="durable runs", unit="run") as progress:
        while pending:
            for run_id in list(pending):
                async with session.get(f"{deployment.runs}/chain-8/runs/{run_id}") as answer:
                    status = (await answer.json()).get("status")
                if status in ("ok", "failed"):
                    if status == "failed":
                        raise RuntimeError(f"durable run {run_id} failed")
                    pending.discard(run_id)
                    progress.update()
            await asyncio.sleep(0.05)
    seconds = time.perf_counter() - started
    return {"runs": runs, "steps": runs * 8, "seconds": round(seconds, 2), "steps_per_s": round(runs * 8 / seconds, 1)}


async def measure(deployment: Deployment, args: argparse.Namespace) -> dict:
    async with aiohttp.ClientSession(headers=deployment.headers) as session:
        steps, slope, intercept = await per_step(deployment, session, args.requests)
        chain_rate = await throughput(deployment, session, args.seconds, args.rounds)
        workflow = await durable(deployment, session, args.runs)
    return {
        "per_step": steps,
        "per_step_ms": slope,
        "fixed_ms": intercept,
        "throughput": chain_rate,
        "durable": workflow,
    }


def markdown(report: dict) -> str:
    r = report["results"]
    longest = max(r["per_step"], key=lambda s: s["steps"])
    lines = [
        f"# Pipelines ({report['date']}, {report['machine']['cpu']}, {report['machine']['nproc']} cores)",
        "",
        f"Command: `{report['command']}`. Servers on core 0, the client on core 1; medians of interleaved rounds;",
        f"load average {report.get('load_average', '?')} when it started (other work on the machine).",
        "",
        "## The executor's own cost per step",
        "",
        "A chain of diabetes steps sent to the pipelines app through its sidecar, against the same number of",
        "diabetes calls made one after another through the same sidecar (one request at a time).",
        "",
        "| steps | pipeline p50 (ms) | calls one by one p50 (ms) | added (ms) |",
        "|---|---|---|---|",
        *(f"| {s['steps']} | {s['pipeline_p50_ms']} | {s['calls_p50_ms']} | {s['added_ms']} |" for s in r["per_step"]),
        "",
        f"Per step (the slope of added over steps): **{r['per_step_ms']} ms** (goal: at most 0.5 ms); the one hop into",
        f"the pipelines app (the intercept): {r['fixed_ms']} ms. The longest chain bounds the cost from above, the hop",
        f"included: {longest['added_ms']} ms over {longest['steps']} steps, **{longest['added_ms'] / longest['steps']:.3f}"
        " ms per step**"
        + (
            " (a negative slope: the executor's own calls cost less than the client's)."
            if r["per_step_ms"] < 0
            else "."
        ),
        "",
        "## A chain's throughput against its slowest step alone",
        "",
        f"diabetes then the sentiment of a review, at concurrency {CONCURRENCY}, {report['seconds']:g} s per run,",
        "against the sentiment model alone through the same sidecar. Shared core: every server on core 0, the",
        "client on core 1. Slowest step on a core of its own: the nlp app on core 1, every other server and the",
        "client on core 0.",
        "",
        "| layout | chain (requests/s) | slowest step alone (requests/s) | ratio (goal: at least 0.9x) |",
        "|---|---|---|---|",
        *(
            f"| {layout} | {t['requests_per_s']['chain']} | {t['requests_per_s']['slowest step alone']} |"
            f" **{t['ratio']}x** |"
            for layout, t in r["throughput"].items()
        ),
        "",
        "## Durable steps per second",
        "",
        f"{r['durable']['runs']} runs of the 8-step chain started at once on Dapr Workflow: {r['durable']['steps']}"
        f" steps in {r['durable']['seconds']} s, **{r['durable']['steps_per_s']} steps/s**.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the stack's processes are stopped on the way out
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300, help="rounds of the per-step measure")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per throughput run")
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds")
    parser.add_argument("--runs", type=int, default=40, help="durable runs")
    parser.add_argument("--out", type=Path, default=BENCH / "results")
    args = parser.parse_args()
    load_average = round(os.getloadavg()[0], 1)
    two_cores = (os.cpu_count() or 1) > 1
    if two_cores:
        os.sched_setaffinity(0, {SERVER_CORE})  # every process started from here inherits core 0
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work) / "pipelines"
        folder.mkdir()
        for document in [*(chain(n) for n in LENGTHS), SCORE_THEN_FEEL]:
            (folder / f"{document['metadata']['name']}.yaml").write_text(yaml.safe_dump(document))
        stack = Stack(Path(work))
        try:
            stack.start_redis()
            deployment = Deployment(stack, folder)
            if two_cores:
                os.sched_setaffinity(0, {LOAD_CORE})
            results = asyncio.run(measure(deployment, args))
        finally:
            stack.close()
    report = {
        "load_average": load_average,
        "date": date.today().isoformat(),
        "machine": machine(),
        "command": "python -m bench.pipelines " + " ".join(sys.argv[1:]),
        "seconds": args.seconds,
        "results": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "pipelines.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "pipelines.md").write_text(markdown(report))
    print(markdown(report))
    python = VENVS / "plot" / "bin" / "python"
    if python.exists():
        plot = [str(python), str(BENCH / "plot_pipelines.py"), str(args.out / "pipelines.json")]
        subprocess.run([*plot, str(args.out / "pipelines.png")], check=True)
    else:
        print(f"no plot: {python} is missing (bench/setup.sh plot makes it)")


if __name__ == "__main__":
    main()
