"""Plots bench/results/edge_daprd.json (stripped size and idle heap of the full and edge daprd) or
edge_stack.json (resident memory per process of the edge stack, per architecture); run with matplotlib installed
(bench/setup.sh plot).

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
    figure, axes = plt.subplots(figsize=(10, 4))
    names = sorted({name for arch in arches for name in report["results"][arch]["rss_bytes"]})
    width = 0.8 / len(arches)
    for index, arch in enumerate(arches):
        rss = report["results"][arch]["rss_bytes"]
        axes.bar(
            [i + index * width for i in range(len(names))], [rss.get(n, 0) / 2**20 for n in names], width, label=arch
        )
    axes.set_xticks([i + width * (len(arches) - 1) / 2 for i in range(len(names))], names, rotation=45, ha="right")
    axes.set_ylabel("resident memory (MiB)")
    axes.legend()
    figure.suptitle(f"Edge stack, resident memory per process ({report['date']}, {report['machine']})")
    figure.tight_layout()
    figure.savefig(target, dpi=100)


def main(source: str, target: str) -> None:
    report = json.loads(Path(source).read_text())
    (stack if report.get("kind") == "stack" else daprd)(report, target)


if __name__ == "__main__":
    main(*sys.argv[1:])
