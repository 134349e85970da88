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
    layouts = results["throughput"]
    width = 0.38
    for offset, case in ((-width / 2, "chain"), (width / 2, "slowest step alone")):
        positions = [index + offset for index in range(len(layouts))]
        right.bar(positions, [layout["requests_per_s"][case] for layout in layouts.values()], width, label=case)
    right.set_xticks(range(len(layouts)), [f"{name}\n{layout['ratio']}x" for name, layout in layouts.items()])
    right.set_ylabel("requests/s")
    right.set_title("diabetes then sentiment against sentiment alone")
    right.legend()
    figure.suptitle(f"Pipelines ({report['date']}); durable: {results['durable']['steps_per_s']} steps/s")
    figure.tight_layout()
    figure.savefig(target, dpi=100)


if __name__ == "__main__":
    main(*sys.argv[1:])
