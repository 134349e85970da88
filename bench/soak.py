"""Soak: the whole stack for half an hour, diabetes inferences through the gateway at half of its measured capacity
while the simulator feeds the maintenance pipeline: memory of every process, errors, dead letters.

    python -m bench.soak [--minutes 30] [--warmup-minutes 5] [--load 0.5] [--settle-minutes 2]

Starts every app of `make run` beside its sidecar as `make run` has them (Redis and its stream trimmer, mTLS with
Sentry, placement and the scheduler, each sidecar's access control from Kubernetes), on free ports and app ids of its own
(tests.integration.full_stack; the gateway's rate limit off, since one client sends everything), and the simulator as
`make run` starts it. Once the pipeline has run for `settle-minutes` (so the capacity is measured beside the load the
pipeline puts on the machine all through the soak), it measures capacity: 8 clients back to back for 30 s. Then it
sends `load` x that rate, evenly spaced (open loop), for `minutes`, and every 10 s samples the RSS of every process,
the Go heap in use of every sidecar (daprd's RSS swings with the Go runtime's returns of memory to the system; its heap
does not), and the CPU time of the stack, of this load generator and of the whole machine (what else ran on it).
Growth is the median of the last 2 minutes against the median of the 2 minutes after warm-up. Errors are answers
other than 200 and failed requests; dead letters are the alerts service's, of which the simulator's valid readings
should make none. Writes bench/results/soak.{json,md} and, with the plot venv of bench/setup.sh, soak.png.
"""

import argparse
import asyncio
import json
import os
import platform
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import httpx
import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.integration.full_stack import FullStack, start_full_stack  # noqa: E402
from tests.integration.processes import rss_bytes  # noqa: E402
from tests.integration.stack import Process, Stack, environment, redis_command  # noqa: E402

RESULTS = ROOT / "bench" / "results"
VENVS = ROOT / ".bench" / "venvs"
# What `make run` starts the simulator with (dapr/run.sh).
SIMULATOR = ["--machines", "10", "--rate", "50", "--seed", "0", "--replace"]
# Per-request logs of the pipeline's apps would be most of the soak's disk writes.
QUIET = {f"{app.upper()}_LOG_LEVEL": "warning" for app in ("sensors", "features", "alerts")}
ROW = [0.038, 0.051, 0.062, 0.022, -0.044, -0.035, -0.043, -0.003, 0.020, -0.018]
BODY = json.dumps({"inputs": [{"name": "input", "shape": [1, 10], "datatype": "FP32", "data": ROW}]})
SAMPLE_SECONDS = 10
MAX_IN_FLIGHT = 16  # twice the clients that measure capacity
WINDOW_SECONDS = 120
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def start(work: Path, tokens: dict[str, str], key: str) -> tuple[Stack, FullStack, Process]:
    stack = Stack(work, dapr_api_token=tokens["DAPR_API_TOKEN"], app_api_token=tokens["APP_API_TOKEN"])
    try:
        stack.start_redis()
        stack.start_stream_trimmer()  # as `make run`: a pass a minute
        full = start_full_stack(stack, ROOT / "models", {"local": key}, GATEWAY_RATE_LIMIT="0", **QUIET)
        url = full.url("sensors", "readings")
        simulate = [sys.executable, "-m", "sensors.simulate", *SIMULATOR, "--url", url]
        simulator = Process.start("simulator", simulate, work, environment(DAPR_API_TOKEN=tokens["DAPR_API_TOKEN"]))
        stack.processes.append(simulator)
    except BaseException:
        stack.close()
        raise
    return stack, full, simulator


async def capacity(client: httpx.AsyncClient, gateway: str, seconds: float = 30, clients: int = 8) -> float:
    """Requests per second through the gateway with `clients` sending back to back."""
    done, deadline = 0, time.monotonic() + seconds

    async def one_client() -> None:
        nonlocal done
        while time.monotonic() < deadline:
            response = await client.post(f"{gateway}/v2/models/diabetes/infer", content=BODY)
            response.raise_for_status()
            done += 1

    started = time.monotonic()
    await asyncio.gather(*(one_client() for _ in range(clients)))
    return done / (time.monotonic() - started)


async def soak(
    client: httpx.AsyncClient, gateway: str, rate: float, seconds: float, processes: dict, metrics: dict
) -> dict:
    """`rate` requests/s for `seconds`, at most MAX_IN_FLIGHT at a time (when the stack falls behind, the rate sent
    drops instead of a backlog growing in the client; it catches up once the stack does); samples memory and CPU
    every SAMPLE_SECONDS into `metrics`, and the answers of every SAMPLE_SECONDS into `metrics["traffic"]`."""
    answers: dict[str, int] = {}
    latencies: list[float] = []
    finished: list[float] = []  # when each request was answered, in seconds from the start
    in_flight: set[asyncio.Task] = set()
    slots = asyncio.Semaphore(MAX_IN_FLIGHT)

    async def one_request() -> None:
        started = time.monotonic()
        try:
            response = await client.post(f"{gateway}/v2/models/diabetes/infer", content=BODY)
            key = str(response.status_code)
        except httpx.HTTPError as error:
            key = type(error).__name__
        answers[key] = answers.get(key, 0) + 1
        latencies.append(time.monotonic() - started)
        finished.append(time.monotonic() - soak_started)

    soak_started = started = time.monotonic()
    next_sample, sent = started, 0
    with tqdm(total=int(seconds), desc=f"soak at {rate:.0f} requests/s", unit="s") as bar:
        while (now := time.monotonic()) < started + seconds:
            if now >= next_sample:
                await asyncio.to_thread(sample, processes, now - started, metrics)
                next_sample += SAMPLE_SECONDS
                bar.update(int(now - started) - bar.n)
            due = started + sent / rate
            if due > now:
                await asyncio.sleep(due - now)
                continue
            await slots.acquire()
            task = asyncio.create_task(one_request())
            in_flight.add(task)
            task.add_done_callback(lambda task: (in_flight.discard(task), slots.release()))
            sent += 1
    await asyncio.gather(*in_flight)
    metrics["traffic"] = windows(finished, latencies)
    return {
        "sent": sent,
        "rate_sent_per_s": round(sent / seconds, 1),
        "answers": answers,
        "errors": sum(count for key, count in answers.items() if key != "200"),
        "latency_p50_ms": round(float(np.percentile(latencies, 50)) * 1000, 2),
        "latency_p99_ms": round(float(np.percentile(latencies, 99)) * 1000, 2),
    }


def windows(finished: list[float], latencies: list[float]) -> list[dict]:
    """Requests answered per second and their median latency, per SAMPLE_SECONDS after the start."""
    by_window: dict[int, list[float]] = {}
    for at, latency in zip(finished, latencies, strict=True):
        by_window.setdefault(int(at // SAMPLE_SECONDS), []).append(latency)
    return [
        {
            "t": window * SAMPLE_SECONDS,
            "answered_per_s": len(values) / SAMPLE_SECONDS,
            "latency_p50_ms": round(float(np.median(values)) * 1000, 1),
        }
        for window, values in sorted(by_window.items())
    ]


def cpu_seconds(pid: int) -> float:
    """CPU time of a process and of its children it has waited for (the trimmer's redis-cli), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(value) for value in fields[11:15]) / CLOCK_TICKS  # utime, stime, cutime, cstime


def machine_busy_seconds() -> float:
    """CPU time the whole machine spent on anything but idling, all cores together."""
    values = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(values) - values[3] - values[4]) / CLOCK_TICKS  # minus idle and iowait


def stream_groups(port: int) -> dict[str, dict]:
    """Per stream of the Redis on `port`: its length, and per consumer group its pending entries and whether it has
    read to the end (what keeps a stream long: a group behind, or an old pending entry)."""
    cursor, streams = "0", []
    while True:
        cursor, *found = redis_command(port, "SCAN", cursor, "COUNT", "1000", "TYPE", "stream")
        streams += found
        if cursor == "0":
            break
    result = {}
    for stream in sorted(streams):
        last = redis_command(port, "XREVRANGE", stream, "+", "-", "COUNT", "1")
        groups = {}
        lines = [line for line in redis_command(port, "XINFO", "GROUPS", stream) if line]  # no group: one empty line
        # --raw prints each group as name, value, name, value ... (name, consumers, pending, last-delivered-id)
        for i in range(0, len(lines), 8):
            fields = dict(zip(lines[i : i + 8 : 2], lines[i + 1 : i + 8 : 2], strict=True))
            oldest = redis_command(port, "XPENDING", stream, fields["name"])[1] if fields["pending"] != "0" else ""
            groups[fields["name"]] = {
                "pending": int(fields["pending"]),
                "oldest_pending": oldest,
                "read_to_end": bool(last) and fields["last-delivered-id"] == last[0],
            }
        result[stream] = {"length": int(redis_command(port, "XLEN", stream)[0]), "groups": groups}
    return result


def sample(processes: dict[str, tuple[Process, int]], elapsed: float, metrics: dict) -> None:
    """RSS and CPU time of every process (name -> (process, metrics port or 0)), each sidecar's Go heap in use, the
    CPU time of this process and of the machine, and the Redis streams (every minute)."""
    point = {"t": round(elapsed, 1), "rss": {}, "heap": {}}
    if int(elapsed) % 60 < SAMPLE_SECONDS:
        point["streams"] = stream_groups(metrics["redis_port"])
    point["cpu_s"] = {
        "stack": sum(cpu_seconds(process.popen.pid) for process, _ in processes.values()),
        "generator": cpu_seconds(os.getpid()),
        "machine": machine_busy_seconds(),
    }
    for name, (process, metrics_port) in processes.items():
        point["rss"][name] = rss_bytes(process.popen.pid)
        if metrics_port:
            text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
            heap = next(line for line in text.splitlines() if line.startswith("go_memstats_heap_inuse_bytes"))
            point["heap"][name] = float(heap.split()[-1])
    metrics["samples"].append(point)


def growth(samples: list[dict], kind: str, warmup: float) -> dict[str, dict]:
    """Per process: median after warm-up, median at the end (WINDOW_SECONDS each), and the growth between them."""
    end = samples[-1]["t"]
    result = {}
    for name in samples[-1][kind]:
        first = [p[kind][name] for p in samples if warmup <= p["t"] < warmup + WINDOW_SECONDS and name in p[kind]]
        last = [p[kind][name] for p in samples if p["t"] > end - WINDOW_SECONDS and name in p[kind]]
        if first and last:
            before, after = float(np.median(first)), float(np.median(last))
            result[name] = {
                "after_warmup_mib": round(before / 2**20, 1),
                "at_end_mib": round(after / 2**20, 1),
                "growth_percent": round(100 * (after - before) / before, 2),
            }
    return result


def cpu_use(samples: list[dict]) -> dict[str, float]:
    """Cores busy on average over the samples: the stack, the load generator, everything else on the machine."""
    first, last = samples[0], samples[-1]
    seconds = last["t"] - first["t"]
    used = {kind: (last["cpu_s"][kind] - first["cpu_s"][kind]) / seconds for kind in first["cpu_s"]}
    return {
        "stack_cores": round(used["stack"], 2),
        "generator_cores": round(used["generator"], 2),
        "other_work_cores": round(used["machine"] - used["stack"] - used["generator"], 2),
        "machine_cores": os.cpu_count() or 1,
    }


def trimmer_passes(stack: Stack) -> dict[str, int]:
    """What the stream trimmer's log says: passes made, passes that failed, entries removed."""
    log = next(process for process in stack.processes if process.name == "trim-streams").log_file.read_text()
    removed = [int(line.split(" removed ")[1].split()[0]) for line in log.splitlines() if " removed " in line]
    return {"passes": len(removed), "failed": log.count(" failed: "), "entries_removed": sum(removed)}


def stream_lengths(port: int) -> dict[str, int]:
    """Entries in every stream (pub/sub topic) of the Redis on `port`."""
    cursor, streams = "0", []
    while True:
        cursor, *found = redis_command(port, "SCAN", cursor, "COUNT", "1000", "TYPE", "stream")
        streams += found
        if cursor == "0":
            return {stream: int(redis_command(port, "XLEN", stream)[0]) for stream in sorted(streams)}


async def run(args: argparse.Namespace, work: Path) -> dict:
    tokens = {"DAPR_API_TOKEN": secrets.token_urlsafe(16), "APP_API_TOKEN": secrets.token_urlsafe(16)}
    key = secrets.token_urlsafe(24)
    stack, full, simulator = start(work, tokens, key)
    metrics: dict = {"samples": [], "redis_port": stack.redis_port}
    try:
        processes = {name: (full.apps[name], 0) for name in full.apps}
        processes |= {
            f"daprd {name}": (sidecar.process, sidecar.metrics_port) for name, sidecar in full.sidecars.items()
        }
        processes |= {"sentry": (full.sentry.process, 0), "redis": (stack.processes[0], 0), "simulator": (simulator, 0)}
        processes |= {p.name: (p, 0) for p in stack.processes if p.name in ("trim-streams", "placement", "scheduler")}
        gateway = f"http://127.0.0.1:{full.ports['gateway']}"
        headers = {"Authorization": f"Bearer {key}"}
        # Idle connections are dropped before uvicorn's 5 s keep-alive ends them: reusing one it is closing fails.
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64, keepalive_expiry=2)
        async with httpx.AsyncClient(headers=headers, limits=limits, timeout=60) as client:
            for _ in tqdm(range(int(args.settle_minutes * 60)), desc="pipeline settling", unit="s"):
                await asyncio.sleep(1)
            measured = await capacity(client, gateway)
            rate = args.load * measured
            print(f"capacity {measured:.0f} requests/s; soaking at {rate:.0f} requests/s for {args.minutes} min")
            traffic = await soak(client, gateway, rate, args.minutes * 60, processes, metrics)
        letters = httpx.get(full.url("alerts", "dead-letters"), headers={"dapr-api-token": stack.dapr_api_token})
        simulator_errors = simulator.log().count("Traceback")
        trimming = trimmer_passes(stack)
        redis_streams = stream_lengths(stack.redis_port)
    finally:
        stack.close()
    warmup = args.warmup_minutes * 60
    return {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "minutes": args.minutes,
        "warmup_minutes": args.warmup_minutes,
        "capacity_requests_per_s": round(measured, 1),
        "load": args.load,
        "settle_minutes": args.settle_minutes,
        "traffic": traffic,
        "cpu": cpu_use(metrics["samples"]),
        "trimming": trimming,
        "stream_lengths_at_end": redis_streams,
        "dead_letters": len(letters.json()),
        "simulator_tracebacks": simulator_errors,
        "rss": growth(metrics["samples"], "rss", warmup),
        "sidecar_heap": growth(metrics["samples"], "heap", warmup),
        "samples": metrics["samples"],
        "traffic_windows": metrics["traffic"],
    }


def markdown(report: dict) -> str:
    traffic, cpu, trimming = report["traffic"], report["cpu"], report["trimming"]
    lines = [
        f"# Soak ({report['date']}, {report['machine']})",
        "",
        f"`python -m bench.soak`: the whole stack for {report['minutes']} min with the simulator feeding the "
        f"pipeline; diabetes through the gateway at {report['load']:.0%} of the capacity measured first "
        f"({report['capacity_requests_per_s']} requests/s, 8 clients back to back), that is "
        f"{report['load'] * report['capacity_requests_per_s']:.1f} requests/s, at most {MAX_IN_FLIGHT} at a time: "
        f"{traffic['sent']} requests sent, {traffic['rate_sent_per_s']} requests/s, "
        f"p50 {traffic['latency_p50_ms']} ms, p99 {traffic['latency_p99_ms']} "
        f"ms; answers {traffic['answers']}, errors {traffic['errors']}; dead letters {report['dead_letters']}; "
        f"tracebacks in the simulator's log {report['simulator_tracebacks']}.",
        "",
        f"Capacity measured after {report['settle_minutes']} min of the pipeline alone. CPU over the soak (cores busy "
        f"on average, of {cpu['machine_cores']}): the stack {cpu['stack_cores']}, this load generator "
        f"{cpu['generator_cores']}, other work on the machine {cpu['other_work_cores']}.",
        "",
        f"Stream trimmer (k8s/base/trim-streams.sh, a pass a minute): {trimming['passes']} passes, {trimming['failed']} "
        f"failed, {trimming['entries_removed']} entries removed; entries left in each stream at the end: "
        + ", ".join(f"{stream} {length}" for stream, length in report["stream_lengths_at_end"].items())
        + ".",
        "",
        f"Memory: median of the last {WINDOW_SECONDS // 60} minutes against the median of the {WINDOW_SECONDS // 60} "
        f"minutes after {report['warmup_minutes']} min of warm-up.",
        "",
        "| process | RSS after warm-up (MiB) | RSS at the end (MiB) | growth |",
        "|---|---|---|---|",
    ]
    for name, row in sorted(report["rss"].items()):
        lines.append(f"| {name} | {row['after_warmup_mib']} | {row['at_end_mib']} | {row['growth_percent']:+.2f} % |")
    lines += ["", "| sidecar | Go heap in use after warm-up (MiB) | at the end (MiB) | growth |", "|---|---|---|---|"]
    for name, row in sorted(report["sidecar_heap"].items()):
        lines.append(f"| {name} | {row['after_warmup_mib']} | {row['at_end_mib']} | {row['growth_percent']:+.2f} % |")
    return "\n".join(lines) + "\n"


def plot() -> None:
    python = VENVS / "plot" / "bin" / "python"
    if not python.exists():
        print(f"no plot: {python} is missing (bench/setup.sh plot makes it)")
        return
    script = Path(__file__).with_name("plot_soak.py")
    subprocess.run([str(python), str(script), str(RESULTS / "soak.json"), str(RESULTS / "soak.png")], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--warmup-minutes", type=float, default=5)
    parser.add_argument("--load", type=float, default=0.5, help="the share of the measured capacity to send")
    parser.add_argument("--settle-minutes", type=float, default=2, help="the pipeline alone before capacity")
    args = parser.parse_args()
    # Stopped with SIGTERM, it still stops the stack it started (its processes are in sessions of their own).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory() as work:
        report = asyncio.run(run(args, Path(work)))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "soak.json").write_text(json.dumps(report, indent=1))
    (RESULTS / "soak.md").write_text(markdown(report))
    print(markdown(report))
    plot()


if __name__ == "__main__":
    main()
