"""The limit: one model called in-process with onnxruntime, no HTTP, at several batch sizes.

    python bench/raw.py --model diabetes --seconds 1 --batches 1 2 4 8 16 32 --started <unix time>

Prints one JSON object: time from `--started` (when the caller spawned this process) to a warm model,
the process's peak RSS, and per batch size the rows per second, the latency of one call and the CPU time per row.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
from workloads import WORKLOADS, load

ROOT = Path(__file__).resolve().parent.parent


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def measure(predict, rows: np.ndarray, seconds: float) -> dict[str, float]:
    latencies = []
    cpu_started = time.process_time()
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        call = time.perf_counter()
        predict(rows)
        latencies.append(time.perf_counter() - call)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    return {
        "requests_per_s": len(latencies) * len(rows) / elapsed,
        "p50_ms": float(np.percentile(latencies, 50)) * 1000,
        "p99_ms": float(np.percentile(latencies, 99)) * 1000,
        "requests": len(latencies) * len(rows),
        "cpu_us_per_request": cpu / (len(latencies) * len(rows)) * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(WORKLOADS), required=True)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--started", type=float, default=None, help="unix time the caller started this process")
    args = parser.parse_args()
    workload = WORKLOADS[args.model]
    predict = load(workload, ROOT / "models")
    ready_s = time.time() - args.started if args.started else None
    batches = {batch: measure(predict, workload.rows(batch), args.seconds) for batch in args.batches}
    print(json.dumps({"ready_s": ready_s, "rss_mib": peak_rss_mib(), "batches": batches}))


if __name__ == "__main__":
    main()
