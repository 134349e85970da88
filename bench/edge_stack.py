"""The edge stack (dapr/edge/stack.py) measured: time until every process is healthy, resident memory, the
sidecars' heap in use, and the edge agent's outbox throughput, natively (amd64) and under qemu-aarch64 (arm64).

    python bench/edge_stack.py [--arch amd64 arm64] [--readings 3000]

Per architecture: the stack starts from an empty data folder (the time until the last process answers its health
check is kept, and per process the time until it was healthy and the CPU seconds it had used by then: all start
at once after the two brokers, so on 2 cores the start-up under qemu is bound by their sum); after 10 s of idling, the resident memory of every process (with what it started) and
`go_memstats_heap_inuse_bytes` of every sidecar are read. Then the outbox: with the agent's sidecar stopped,
`--readings` readings are published at QoS 1 by one MQTT client as fast as the broker acknowledges them, and the
time until the agent committed them all is the intake rate (MQTT -> SQLite outbox); the sidecar is started again and
the time until the outbox is empty is the drain rate (bulk publish through the sidecar into Redis). The agent
publishes to a topic no service subscribes to, so the pipeline's own work does not slow the measurement. Goals: at
most 1 GB resident on amd64, at most 15 s until healthy under qemu. Writes bench/results/edge_stack.{json,md}, and
with the plot venv of bench/setup.sh, edge_stack.png.
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import date
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "apps"))
sys.path.insert(0, str(ROOT / "dapr" / "edge"))
from stack import EdgeStack  # noqa: E402

from sensors.simulate import MqttSensors  # noqa: E402
from tandem.fleet import CHANNELS  # noqa: E402

RESULTS = ROOT / "bench" / "results"
VENVS = ROOT / ".bench" / "venvs"


# One client for the polls: httpx.get makes one per call, about 30 ms of CPU taken from what is measured.
HTTP = httpx.Client(timeout=10)


def metric(port: int, name: str) -> float:
    text = HTTP.get(f"http://127.0.0.1:{port}/metrics").text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)


def wait(check, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"not {what} after {timeout:g} s")
        time.sleep(0.05)


def measure(arch: str, readings: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="tandem-edge-bench-"))
    work.chmod(0o755)  # Mosquitto drops to its own user, which must reach its data
    stack = EdgeStack(work, arch=arch, suffix=f"-{uuid.uuid4().hex[:6]}", agent_env={"EDGE_AGENT_TOPIC": "bench"})
    try:
        healthy_s = stack.start()
        print(f"{arch}: healthy in {healthy_s:.1f} s")
        time.sleep(10)
        rss = stack.rss_bytes()
        heap = {name: metric(stack.ports[name].metrics, "go_memstats_heap_inuse_bytes") for name in stack.ports}
        agent = stack.ports["edge-agent"].app

        stack.stop("daprd-edge-agent")
        sensors = MqttSensors(f"127.0.0.1:{stack.mqtt_port}", f"bench-{uuid.uuid4().hex[:6]}")
        reading = {"machine": "bench", "timestamp": time.time(), "values": dict.fromkeys(CHANNELS, 1.0)}
        started = time.monotonic()
        for chunk in tqdm(range(0, readings, 100), desc=f"{arch}: publishing", unit="x100"):
            batch = [{**reading, "id": f"r{n}"} for n in range(chunk, min(chunk + 100, readings))]
            sensors.post(batch)
        wait(lambda: metric(agent, "edge_agent_messages_received_total") >= readings, "all committed", 600)
        intake_s = time.monotonic() - started
        sensors.close()

        stack.processes["daprd-edge-agent"].start()
        stack.processes["daprd-edge-agent"].wait_healthy()
        started = time.monotonic()
        wait(lambda: metric(agent, "edge_agent_events_forwarded_total") >= readings, "all forwarded", 600)
        drain_s = time.monotonic() - started
        print(f"{arch}: intake {readings / intake_s:.0f}/s, drain {readings / drain_s:.0f}/s")
        return {
            "healthy_seconds": healthy_s,
            "healthy_after_seconds": dict(stack.healthy_after),
            "cpu_seconds_until_healthy": dict(stack.cpu_until_healthy),
            "rss_bytes": rss,
            "rss_total_bytes": sum(rss.values()),
            "sidecar_heap_inuse_bytes": heap,
            "readings": readings,
            "intake_per_second": readings / intake_s,
            "drain_per_second": readings / drain_s,
        }
    finally:
        stack.close()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", nargs="+", default=["amd64", "arm64"], choices=("amd64", "arm64"))
    parser.add_argument("--readings", type=int, default=3000)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    results = {arch: measure(arch, args.readings) for arch in args.arch}
    report = {
        "kind": "stack",
        "date": date.today().isoformat(),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, load average {load:.1f} at the start",
        "results": results,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "edge_stack.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "edge_stack.md").write_text(markdown(report))
    plot()


def markdown(report: dict) -> str:
    lines = [
        f"# The edge stack ({report['date']}, {report['machine']})",
        "",
        "`python bench/edge_stack.py`: see its docstring for what is measured. arm64 runs every process under "
        "qemu-aarch64 on the same x86_64 machine: its times and memory are an emulator's, not a board's.",
        "",
        "| | " + " | ".join(report["results"]) + " |",
        "|---|" + "---|" * len(report["results"]),
    ]
    rows = {
        "every process healthy (s)": lambda r: f"{r['healthy_seconds']:.1f}",
        "resident memory, whole stack (MiB)": lambda r: f"{r['rss_total_bytes'] / 2**20:.0f}",
        "outbox intake, MQTT -> SQLite (readings/s)": lambda r: f"{r['intake_per_second']:.0f}",
        "outbox drain, bulk publish -> Redis (readings/s)": lambda r: f"{r['drain_per_second']:.0f}",
    }
    for label, cell in rows.items():
        lines.append(f"| {label} | " + " | ".join(cell(r) for r in report["results"].values()) + " |")
    names = list(next(iter(report["results"].values()))["rss_bytes"])
    for name in names:
        cells = []
        for result in report["results"].values():
            after, cpu = result["healthy_after_seconds"].get(name), result["cpu_seconds_until_healthy"].get(name)
            cells.append("" if after is None else f"{after:.1f} ({cpu:.1f} s CPU)")
        lines.append(f"| {name} healthy after (s) | " + " | ".join(cells) + " |")
    cpu_total = {arch: sum(r["cpu_seconds_until_healthy"].values()) for arch, r in report["results"].items()}
    lines.append("| CPU used by all until healthy (s) | " + " | ".join(f"{c:.1f}" for c in cpu_total.values()) + " |")
    for name in names:
        cells = []
        for result in report["results"].values():
            heap = result["sidecar_heap_inuse_bytes"].get(name.removeprefix("daprd-"))
            extra = f" (heap {heap / 1e6:.1f} MB)" if name.startswith("daprd-") and heap else ""
            cells.append(f"{result['rss_bytes'].get(name, 0) / 2**20:.0f}{extra}")
        lines.append(f"| {name} resident (MiB) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot() -> None:
    python = VENVS / "plot" / "bin" / "python"
    if not python.exists():
        print(f"no plot: {python} is missing (bench/setup.sh plot makes it)")
        return
    script = Path(__file__).with_name("plot_edge.py")
    subprocess.run(
        [str(python), str(script), str(RESULTS / "edge_stack.json"), str(RESULTS / "edge_stack.png")], check=True
    )


if __name__ == "__main__":
    main()
