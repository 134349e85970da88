"""Plots bench/results/edge_daprd.json (stripped size and idle heap of the full and edge daprd) or
edge_stack.json (resident memory and CPU seconds until healthy per process of the edge stack, per architecture);
run with matplotlib installed (bench/setup.sh plot).

    python bench/plot_edge.py edge_daprd.json edge_daprd.png
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def daprd(report: dict, target: str) -> None:
    names = list(report["results"])
    figure, (size, heap) = plt.subplots(1, 2, figsize=(10, 4))
    size.bar(names, [report["results"][name]["stripped_bytes"] / 1e6 for name in names])
    size.axhline(90, color="red", linestyle="--", label="goal")
    size.set_ylabel("stripped size (MB)")
    size.legend()
    heap.bar(names, [report["results"][name]["idle_heap_inuse_bytes"] / 1e6 for name in names])
    heap.axhline(10, color="red", linestyle="--", label="goal")
    heap.set_ylabel("idle heap in use (MB)")
    heap.legend()
    for axes in (size, heap):
        axes.tick_params(axis="x", labelsize=8)
    figure.suptitle(f"daprd 1.18.2, full and edge ({report['date']}, {report['machine']})")
    figure.tight_layout()
    figure.savefig(target, dpi=100)


def stack(report: dict, target: str) -> None:
    arches = list(report["results"])
    figure, (memory, start) = plt.subplots(2, 1, figsize=(10, 8))
    names = sorted({name for arch in arches for name in report["results"][arch]["rss_bytes"]})
    width = 0.8 / len(arches)
    for index, arch in enumerate(arches):
        result = report["results"][arch]
        positions = [i + index * width for i in range(len(names))]
        memory.bar(positions, [result["rss_bytes"].get(n, 0) / 2**20 for n in names], width, label=arch)
        cpu = result.get("cpu_seconds_until_healthy", {})
        start.bar(
            positions,
            [cpu.get(n, 0) for n in names],
            width,
            label=f"{arch} (healthy in {result['healthy_seconds']:.1f} s)",
        )
    for axes in (memory, start):
        axes.set_xticks([i + width * (len(arches) - 1) / 2 for i in range(len(names))], names, rotation=45, ha="right")
        axes.legend()
    memory.set_ylabel("resident memory (MiB)")
    start.set_ylabel("CPU seconds until healthy")
    figure.suptitle(f"Edge stack per process ({report['date']}, {report['machine']})")
    figure.tight_layout()
    figure.savefig(target, dpi=100)


def main(source: str, target: str) -> None:
    report = json.loads(Path(source).read_text())
    (stack if report.get("kind") == "stack" else daprd)(report, target)


if __name__ == "__main__":
    main(*sys.argv[1:])
