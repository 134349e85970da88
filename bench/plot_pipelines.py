"""Plots bench/results/pipelines.json: the added latency per chain length (with its fitted line) and the chain's
throughput against its slowest step's (run with matplotlib installed).

python bench/plot_pipelines.py pipelines.json pipelines.png
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(source: str, target: str) -> None:
    report = json.loads(open(source).read())
    results = report["results"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    steps = [r["steps"] for r in results["per_step"]]
    left.plot(steps, [r["pipeline_p50_ms"] for r in results["per_step"]], "o-", label="pipeline")
    left.plot(steps, [r["calls_p50_ms"] for r in results["per_step"]], "s-", label="the calls one by one")
    left.set_xlabel("diabetes steps in the chain")
    left.set_ylabel("p50 latency (ms)")
    left.set_title(f"{results['per_step_ms']} ms per step + {results['fixed_ms']} ms")
    left.legend()
    rates = results["throughput"]["requests_per_s"]
    right.bar(list(rates), list(rates.values()))
    right.set_ylabel("requests/s")
    right.set_title(f"diabetes then sentiment: {results['throughput']['ratio']}x the slowest step alone")
    figure.suptitle(f"Pipelines ({report['date']}); durable: {results['durable']['steps_per_s']} steps/s")
    figure.tight_layout()
    figure.savefig(target, dpi=100)


if __name__ == "__main__":
    main(*sys.argv[1:])
