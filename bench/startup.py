"""Time to ready and idle memory of each service, and of a sidecar beside it.

    python bench/startup.py [--runs 3] [service ...]

Each run starts `python -m <service>` on a free port with the built model repository, measures the
time from process start until /v2/health/ready answers 200 (every model loaded and warmed up), waits
until the process is idle, and reads its resident set size from /proc. A daprd started beside it is
measured the same way (until /v1.0/healthz answers 204). Writes bench/results/startup.{json,md}.
"""

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import httpx
from tqdm import tqdm

from tandem.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
DAPRD = ROOT / ".runtime" / ".dapr" / "bin" / "daprd"
SERVICES = ["regression", "nlp", "vision"]
IDLE_SECONDS = 3


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def wait_for(url: str, status: int, process: subprocess.Popen, timeout: float = 120) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == status:
                return time.perf_counter()
        except httpx.TransportError:
            pass
        time.sleep(0.01)
    raise TimeoutError(url)


def start(command: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(command, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    process.wait(30)


def measure(service: str) -> dict[str, float]:
    app_port, sidecar_port = free_port(), free_port()
    env = {f"{service.upper()}_MODEL_REPOSITORY": str(ROOT / "models"), "APP_PORT": str(app_port)}
    started = time.perf_counter()
    app = start([sys.executable, "-m", service], env)
    try:
        app_ready = wait_for(f"http://127.0.0.1:{app_port}/v2/health/ready", 200, app) - started
        sidecar_started = time.perf_counter()
        sidecar = start(
            [
                str(DAPRD),
                "--app-id",
                service,
                "--app-port",
                str(app_port),
                "--dapr-http-port",
                str(sidecar_port),
                "--dapr-grpc-port",
                str(free_port()),
                "--metrics-port",
                str(free_port()),
                "--dapr-internal-grpc-port",
                str(free_port()),
                "--config",
                str(ROOT / "dapr" / "config.yaml"),
            ],  # fmt: skip
            {},
        )
        try:
            sidecar_ready = wait_for(f"http://127.0.0.1:{sidecar_port}/v1.0/healthz", 204, sidecar) - sidecar_started
            time.sleep(IDLE_SECONDS)
            return {
                "app_ready_s": app_ready,
                "app_idle_rss_mib": rss_mib(app.pid),
                "sidecar_ready_s": sidecar_ready,
                "sidecar_idle_rss_mib": rss_mib(sidecar.pid),
            }
        finally:
            stop(sidecar)
    finally:
        stop(app)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("services", nargs="*", default=SERVICES)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    runs: dict[str, list[dict[str, float]]] = {service: [] for service in args.services}
    for service, _ in tqdm([(s, n) for s in args.services for n in range(args.runs)], desc="startup", unit="run"):
        runs[service].append(measure(service))
    medians = {
        service: {key: round(statistics.median(run[key] for run in results), 2) for key in results[0]}
        for service, results in runs.items()
    }
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    report = {"date": date.today().isoformat(), "machine": machine, "runs": args.runs, "median": medians, "all": runs}
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "startup.json").write_text(json.dumps(report, indent=2))
    lines = [
        f"# Time to ready and idle RSS ({report['date']}, {machine}, median of {args.runs} runs)",
        "",
        "Command: `python bench/startup.py` (models built by `make models`; no batching; daprd 1.18.2 beside the app).",
        "",
        "| service | app ready (s) | app idle RSS (MiB) | sidecar ready (s) | sidecar idle RSS (MiB) |",
        "|---|---|---|---|---|",
    ]
    for service, values in medians.items():
        lines.append(
            f"| {service} | {values['app_ready_s']} | {values['app_idle_rss_mib']} | "
            f"{values['sidecar_ready_s']} | {values['sidecar_idle_rss_mib']} |"
        )
    (out / "startup.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
