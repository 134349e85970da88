"""Plots bench/results/gateway.json: p50 and p99 of each path, per concurrency (run with matplotlib installed).

python bench/plot_gateway.py gateway.json gateway.png
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(source: str, target: str) -> None:
    report = json.loads(open(source).read())
    results = report["results"]
    levels = sorted({r["concurrency"] for r in results})
    paths = list(dict.fromkeys(r["path"] for r in results))
    figure, axes = plt.subplots(1, len(levels), figsize=(5 * len(levels), 4), squeeze=False)
    for axis, level in zip(axes[0], levels, strict=True):
        at = {r["path"]: r for r in results if r["concurrency"] == level}
        x = range(len(paths))
        axis.bar([i - 0.2 for i in x], [at[p]["p50_ms"] for p in paths], 0.4, label="p50")
        axis.bar([i + 0.2 for i in x], [at[p]["p99_ms"] for p in paths], 0.4, label="p99")
        axis.set_xticks(list(x), paths, rotation=15)
        axis.set_ylabel("latency (ms)")
        axis.set_title(f"concurrency {level}")
        axis.legend()
    figure.suptitle(f"diabetes through the gateway and the sidecars ({report['date']})")
    figure.tight_layout()
    figure.savefig(target, dpi=100)


if __name__ == "__main__":
    main(*sys.argv[1:])
