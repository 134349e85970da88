"""What a diabetes inference costs inside the app, layer by layer: the ASGI apps driven in-process, no HTTP.

    python -m bench.hotpath [--requests 3000] [--rounds 3] [--out bench/results]

Calls the plain FastAPI app of bench/servers/plain_fastapi.py and the regression service (app token on) with the
same one-row request, as uvicorn would call them, and reports CPU time per request (process time, so the worker
threads count and a busy machine's waiting does not); the median of --rounds interleaved rounds. Then profiles
Tandem's path with cProfile and sums its own time by layer. What uvicorn and the kernel add is the same for both
apps and is not here: bench/serving.py measures it over HTTP. Writes hotpath.json and hotpath.md to --out.
"""

import argparse
import cProfile
import json
import os
import pstats
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import uvloop

from bench.report import down, number
from bench.serving import machine
from tests.integration.stack import ROOT

BODY = json.dumps(
    {
        "inputs": [
            {
                "name": "input",
                "shape": [1, 10],
                "datatype": "FP32",
                "data": [0.04, 0.05, 0.06, 0.02, -0.04, -0.03, -0.04, 0.0, 0.02, -0.02],
            }
        ]
    },
    separators=(",", ":"),
).encode()
TOKEN = "bench-token"
HEADERS = [
    (b"host", b"127.0.0.1"),
    (b"content-type", b"application/json"),
    (b"content-length", str(len(BODY)).encode()),
    (b"dapr-api-token", TOKEN.encode()),
]
# Where each function's own time goes, by the file it lives in (first match wins).
LAYERS = [
    ("FastAPI and Starlette (routing, dependencies, request, response)", ("fastapi/", "starlette/")),
    ("the kit's middlewares and infer route", ("tandem/server.py", "tandem/auth.py", "tandem/fastpath.py")),
    ("decoding and encoding (protocol, pydantic, JSON)", ("tandem/protocol.py", "pydantic", "json", "orjson")),
    ("checks and data plane (card checks, look-up, batching)", ("tandem/",)),
    ("metrics", ("prometheus_client",)),
    ("thread hop (to_thread, futures, queues)", ("asyncio/", "concurrent/", "threading", "queue")),
    ("numpy", ("numpy",)),
    ("onnxruntime", ("onnxruntime",)),
]

App = Callable[[dict, Callable, Callable], Awaitable[None]]


def scope() -> dict[str, Any]:
    path = "/v2/models/diabetes/infer"
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": HEADERS,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


async def call(app: App) -> int:
    """One request as uvicorn hands it over; the status answered."""
    status = 0

    async def receive() -> dict:
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(message: dict) -> None:
        nonlocal status
        status = message.get("status", status)

    await app(scope(), receive, send)
    return status


async def cpu_per_request(app: App, requests: int) -> float:
    if await call(app) != 200:
        raise RuntimeError("the app did not answer 200")
    started = time.process_time()
    for _ in range(requests):
        await call(app)
    return (time.process_time() - started) / requests * 1e6


def layer(filename: str, function: str) -> str:
    where = filename.replace(os.sep, "/") + " " + function
    for name, parts in LAYERS:
        if any(part in where for part in parts):
            return name
    if "run' of 'onnxruntime" in where or "InferenceSession" in where:
        return "onnxruntime"
    return "other (Python built-ins, the event loop)"


def by_layer(profile: cProfile.Profile) -> dict[str, float]:
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    totals: dict[str, float] = {}
    for (filename, _, function), (_, _, own, _, _) in stats.items():
        name = layer(filename, function)
        totals[name] = totals.get(name, 0.0) + own
    return totals


async def measure(requests: int, rounds: int) -> dict[str, Any]:
    sys.path[:0] = [str(ROOT / "bench"), str(ROOT / "bench" / "servers")]
    import plain_fastapi

    from regression.main import RegressionSettings
    from tandem.server import make_app
    from tandem.settings import DaprSettings

    plain = plain_fastapi.make_app("diabetes", ROOT / "models")
    settings = RegressionSettings(model_repository=ROOT / "models", models=["diabetes"], gateway_app="")
    tandem = make_app("regression", settings, DaprSettings(app_api_token=TOKEN))
    figures: dict[str, list[float]] = {"plain-fastapi": [], "tandem": []}
    async with tandem.router.lifespan_context(tandem):
        for _ in range(rounds):
            figures["plain-fastapi"].append(await cpu_per_request(plain, requests))
            figures["tandem"].append(await cpu_per_request(tandem, requests))
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(requests):
            await call(tandem)
        profile.disable()
    layers = by_layer(profile)
    total = sum(layers.values())
    return {
        "cpu_us_per_request": {name: float(np.median(values)) for name, values in figures.items()},
        "rounds": figures,
        "profiled_share": {name: seconds / total for name, seconds in sorted(layers.items(), key=lambda x: -x[1])},
    }


def markdown(report: dict[str, Any]) -> str:
    host, cpu = report["machine"], report["cpu_us_per_request"]
    lines = [
        "# The hot path in-process",
        "",
        f"{report['date']}; {host['nproc']} cores ({host['cpu']}), Python {host['python']}. Command: "
        f"`{report['command']}`. diabetes, one row, both apps driven as uvicorn drives them (no HTTP), pinned to "
        f"core 0; CPU time per request, the median of {report['rounds']} interleaved rounds of {report['requests']}.",
        "",
        "| app | CPU µs/request | rounds |",
        "|---|---:|---|",
    ]
    for name, value in cpu.items():
        lines.append(f"| {name} | {number(value)} | {', '.join(number(v) for v in report['rounds_us'][name])} |")
    lines += [
        "",
        f"Tandem vs plain FastAPI: {down(cpu['tandem'] / cpu['plain-fastapi'])}× the CPU per request.",
        "",
        "Tandem's own time under cProfile, by layer (cProfile's own overhead inflates the small functions):",
        "",
        "| share | layer |",
        "|---:|---|",
        *(f"| {number(share * 100)}% | {name} |" for name, share in report["profiled_share"].items()),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    if (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {0})  # as the servers of bench/serving.py
    result = uvloop.run(measure(args.requests, args.rounds))
    report = {
        "date": date.today().isoformat(),
        "machine": machine(),
        "command": " ".join(["python -m bench.hotpath", *sys.argv[1:]]),
        "requests": args.requests,
        "rounds": args.rounds,
        "cpu_us_per_request": result["cpu_us_per_request"],
        "rounds_us": result["rounds"],
        "profiled_share": result["profiled_share"],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "hotpath.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "hotpath.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
