"""The maintenance pipeline end to end: sustained readings per second, for each way sensors publishes a batch, and
the latency from a reading to its prediction and to the alert it opens.

    python bench/pipeline.py [--machines 30] [--lives 3] [--pace 0.6] [--senders 4] [--events batch bulk single]

For each mode of SENSORS_EVENTS (by default batch: one event per batch, then bulk: one event per reading in one
bulk publish; single: one publish per reading) it starts a fresh stack on free ports (Redis, regression, features, alerts,
sensors, each app beside its daprd, as `make run` does) and runs two phases on fresh machines of the seeded fleet:
- saturation: one batch per tick (a reading of every machine) posted through the sensors sidecar as fast as it is
  accepted, `--senders` (4) batches at once;
  ingest is readings accepted per second, end to end is readings per second until alerts applied the last prediction;
- paced: the same at a fraction of the end-to-end rate just measured, so no backlog grows; latency is from sensors
  accepting a reading to alerts applying its prediction (every reading, from the alerts service's histogram) and to
  the alert it opens (every alert, exact).
Each phase also gives the CPU every process of the stack (and the benchmark's own) used per reading.
Writes bench/results/pipeline.{json,md} and, with the plot venv of bench/setup.sh, pipeline.png.
"""

import argparse
import collections
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import date
from pathlib import Path

import httpx
import numpy as np
import yaml
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.serving import cpu_seconds  # noqa: E402
from sensors.simulate import FIRST_UNSEEN, post, ticks  # noqa: E402
from tandem import fleet  # noqa: E402
from tests.integration.stack import Stack, wait_until  # noqa: E402

SEED = 0
RESULTS = ROOT / "bench" / "results"
VENVS = ROOT / ".bench" / "venvs"
# SENSORS_EVENTS, and how the report names it.
MODES = {"batch": "one event per batch", "bulk": "bulk publish", "single": "one publish per reading"}


def start_pipeline(work: Path, events: str) -> tuple[Stack, dict[str, str], dict[str, int]]:
    stack = Stack(work)
    stack.start_redis()
    resources = work / "pipeline-components"
    shutil.copytree(stack.components({}), resources)
    # Sidecars find apps by name (mDNS) on the whole host: an id of its own keeps features on this stack's service.
    regression_id = f"regression-{uuid.uuid4().hex[:8]}"
    resiliency = yaml.safe_load((resources / "resiliency.yaml").read_text())
    resiliency["spec"]["targets"]["apps"][regression_id] = resiliency["spec"]["targets"]["apps"]["regression"]
    (resources / "resiliency.yaml").write_text(yaml.safe_dump(resiliency))
    sidecars, ports = {}, {}
    sidecars["regression"], ports["regression"] = stack.start_app_beside_sidecar(
        "regression", resources, app_id=regression_id, REGRESSION_MODEL_REPOSITORY=str(ROOT / "models")
    )
    env = {"FEATURES_REGRESSION_APP": regression_id, "SENSORS_EVENTS": events}
    for app in ("alerts", "features", "sensors"):
        env[f"{app.upper()}_LOG_LEVEL"] = "warning"
    for app in ("alerts", "features", "sensors"):
        sidecars[app], ports[app] = stack.start_app_beside_sidecar(app, resources, **env)
    # Each app's invoke URL through its own sidecar (app ids are this stack's own).
    return (
        stack,
        {app: f"{sidecar.url}/v1.0/invoke/{sidecar.app_id}/method" for app, sidecar in sidecars.items()},
        ports,
    )


def scrape(port: int) -> dict[str, float]:
    """The alerts app's Prometheus samples (its /metrics is open to scrapers)."""
    samples = {}
    for line in httpx.get(f"http://127.0.0.1:{port}/metrics").text.splitlines():
        if line.startswith("tandem_alerts_"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def applied(port: int) -> int:
    return int(scrape(port).get('tandem_alerts_predictions_total{outcome="applied"}', 0))


def histogram_quantile(before: dict[str, float], after: dict[str, float], quantile: float) -> float:
    """A quantile of the reading-to-prediction histogram over one phase, interpolated within its bucket."""
    prefix = "tandem_alerts_reading_to_prediction_seconds_bucket"
    buckets = []
    for name, count in after.items():
        if name.startswith(prefix):
            bound = name.split('le="')[1].rstrip('"}')
            buckets.append((float(bound), count - before.get(name, 0)))
    buckets.sort()
    total = buckets[-1][1]
    target, lower, below = quantile * total, 0.0, 0.0
    for bound, cumulative in buckets:
        if cumulative >= target:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * (target - below) / max(cumulative - below, 1e-9)
        lower, below = bound, cumulative
    return lower


def cpu_by_process(stack: Stack) -> dict[str, float]:
    """CPU seconds (user and system) each of the stack's processes has used so far, its descendants included, and
    this process's own: it posts the readings."""
    # A sidecar's process is named daprd-<app id>-<suffix of this stack>: keep what says whose it is.
    used = {
        re.sub(r"^daprd-([a-z]+)-.*", r"daprd \1", process.name): cpu_seconds([process]) for process in stack.processes
    }
    return {"bench client": time.process_time()} | used


def run_phase(
    stack, urls, ports, machines: int, lives: int, senders: int, prefix: str, rate: float | None, label: str
) -> dict:
    """Feeds `machines` slots, each `lives` machines to failure one after the other (all as fast as accepted, or
    `rate` readings/s), from `senders` clients at once; waits for the end."""
    # A slot's machines follow each other under one name, so its window stays full from one to the next.
    per_slot = [
        sum(fleet.make_machine(SEED, FIRST_UNSEEN + slot + life * machines).lifetime for life in range(lives))
        for slot in range(machines)
    ]
    expected, total = sum(readings - fleet.WINDOW + 1 for readings in per_slot), sum(per_slot)
    baseline, before = applied(ports["alerts"]), scrape(ports["alerts"])
    cpu_before = cpu_by_process(stack)
    url = f"{urls['sensors']}/readings"
    headers = {"dapr-api-token": os.environ["DAPR_API_TOKEN"]}
    sent = 0
    # `senders` batches in flight at once, as many gateways of a fleet would post; each thread its own client.
    clients = threading.local()

    def send(batch: list[dict]) -> None:
        if not hasattr(clients, "http"):
            clients.http = httpx.Client(headers=headers, timeout=60)
        post(clients.http, url, batch)

    in_flight: collections.deque[Future] = collections.deque()
    started = time.time()
    with ThreadPoolExecutor(senders) as pool, tqdm(total=total, desc=label, unit="reading") as bar:
        for batch in ticks(machines, SEED, replace=False, prefix=prefix, lives=lives):
            if rate:
                time.sleep(max(0.0, started + sent / rate - time.time()))
            for reading in batch:
                reading["timestamp"] = time.time()
            if len(in_flight) == senders:
                in_flight.popleft().result()
            in_flight.append(pool.submit(send, batch))
            sent += len(batch)
            bar.update(len(batch))
        for future in in_flight:
            future.result()
        ingested = time.time()
        wait_until(lambda: applied(ports["alerts"]) - baseline >= expected, "every prediction applied", 1800)
    finished = time.time()
    cpu_after = cpu_by_process(stack)
    after = scrape(ports["alerts"])
    alerts = httpx.get(f"{urls['alerts']}/alerts", headers=headers).json()
    latencies = [alert["latency_seconds"] for alert in alerts if alert["machine"].startswith(prefix)]
    return {
        "readings": sent,
        "predictions": expected,
        "ingest_readings_per_s": round(sent / (ingested - started), 1),
        "end_to_end_readings_per_s": round(sent / (finished - started), 1),
        "reading_to_prediction_p50_s": round(histogram_quantile(before, after, 0.5), 3),
        "reading_to_prediction_p99_s": round(histogram_quantile(before, after, 0.99), 3),
        "alerts": len(latencies),
        "reading_to_alert_p50_s": round(float(np.percentile(latencies, 50)), 3) if latencies else None,
        "reading_to_alert_p99_s": round(float(np.percentile(latencies, 99)), 3) if latencies else None,
        # Where the machine's CPU went: milliseconds of CPU per reading, by process.
        "cpu_ms_per_reading": {
            name: round(1000 * (cpu_after[name] - cpu_before.get(name, 0.0)) / sent, 3) for name in cpu_after
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--machines", type=int, default=30, help="machines per phase, each run until it fails")
    parser.add_argument("--pace", type=float, default=0.6, help="paced rate as a fraction of the saturated rate")
    parser.add_argument("--lives", type=int, default=3, help="machines per slot, one after the other")
    parser.add_argument("--senders", type=int, default=4, help="batches posted at once")
    parser.add_argument(
        "--events", nargs="+", choices=list(MODES), default=["batch", "bulk"], help="SENSORS_EVENTS modes to run"
    )
    args = parser.parse_args()
    results = {}
    for events in args.events:
        mode = MODES[events]
        with tempfile.TemporaryDirectory(prefix="tandem-bench-pipeline-") as work:
            stack, urls, ports = start_pipeline(Path(work), events)
            os.environ["DAPR_API_TOKEN"] = stack.dapr_api_token
            try:
                saturated = run_phase(
                    stack, urls, ports, args.machines, args.lives, args.senders, "sat-", None, f"{mode}: saturation"
                )
                rate = saturated["end_to_end_readings_per_s"] * args.pace
                paced = run_phase(
                    stack,
                    urls,
                    ports,
                    args.machines,
                    args.lives,
                    args.senders,
                    "paced-",
                    rate,
                    f"{mode}: paced at {rate:.0f}/s",
                )
                paced["offered_readings_per_s"] = round(rate, 1)
            finally:
                stack.close()
        results[mode] = {"saturation": saturated, "paced": paced}
        print(mode, json.dumps(results[mode], indent=2))
    report = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "machines_per_phase": args.machines,
        "lives": args.lives,
        "senders": args.senders,
        "results": results,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "pipeline.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "pipeline.md").write_text(markdown(report))
    plot()


def markdown(report: dict) -> str:
    lines = [
        "# Maintenance pipeline, end to end",
        "",
        f"{report['date']}, {report['machine']}; `python bench/pipeline.py`. Each phase runs "
        f"{report['machines_per_phase']} slots of the seeded fleet, each {report['lives']} machines in a row until "
        f"they fail, posted by "
        f"{report['senders']} senders at once; every app beside its daprd, "
        "Redis Streams and the Redis state store between them. Compare the modes rather than absolute figures "
        "across machines.",
        "",
        "| sensors publish | ingest (readings/s) | end to end (readings/s) | paced at (readings/s) "
        "| reading → prediction p50 / p99 (s) | reading → alert p50 / p99 (s) | alerts |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode, phases in report["results"].items():
        saturated, paced = phases["saturation"], phases["paced"]
        lines.append(
            f"| {mode} | {saturated['ingest_readings_per_s']} | {saturated['end_to_end_readings_per_s']} "
            f"| {paced['offered_readings_per_s']} "
            f"| {paced['reading_to_prediction_p50_s']} / {paced['reading_to_prediction_p99_s']} "
            f"| {paced['reading_to_alert_p50_s']} / {paced['reading_to_alert_p99_s']} | {paced['alerts']} |"
        )
    lines += [
        "",
        "Ingest: readings the sensors service accepted per second, batches of one reading per machine, as many at "
        "once as there are senders. End to end: readings per second until the alerts service applied the last prediction (features takes "
        "up to 50 events (a batch of readings each, or one reading) and alerts up to 15 events (of up to 200 predictions each) per delivery; features calls each maintenance model once per "
        "delivery). "
        "Latencies from the paced phase: from "
        "sensors accepting a reading to alerts applying its prediction (every reading; interpolated in the alerts "
        "service's histogram buckets), and to the alert it opens (one per machine, exact).",
        "",
        "CPU per reading by process (milliseconds, saturation phase; two cores give 1,000 ms/s each):",
        "",
    ]
    for mode, phases in report["results"].items():
        cpu = phases["saturation"]["cpu_ms_per_reading"]
        names = sorted(cpu, key=lambda name: -cpu[name])
        lines += [
            f"| {mode} | " + " | ".join(names) + " | all |",
            "|---|" + "---|" * (len(names) + 1),
            "| ms per reading | " + " | ".join(f"{cpu[name]:.3f}" for name in names) + f" | {sum(cpu.values()):.3f} |",
            "",
        ]
    lines.append(
        "Paced, the stack needs more CPU per reading (smaller deliveries share each delivery's fixed cost among fewer "
        "readings): "
        + "; ".join(
            f"{mode} {sum(phases['paced']['cpu_ms_per_reading'].values()):.3f} ms, so "
            f"{sum(phases['paced']['cpu_ms_per_reading'].values()) * phases['paced']['end_to_end_readings_per_s'] / 1000:.2f} "
            "cores in use"
            for mode, phases in report["results"].items()
        )
        + "."
    )
    return "\n".join(lines)


def plot() -> None:
    python = VENVS / "plot" / "bin" / "python"
    if not python.exists():
        print(f"no plot: {python} is missing (bench/setup.sh plot makes it)")
        return
    script = Path(__file__).with_name("plot_pipeline.py")
    subprocess.run(
        [str(python), str(script), str(RESULTS / "pipeline.json"), str(RESULTS / "pipeline.png")], check=True
    )


if __name__ == "__main__":
    main()
