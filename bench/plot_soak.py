"""Plots bench/results/soak.json: RSS of every process of the stack, and each sidecar's Go heap in use, over the soak
(run with matplotlib installed: bench/setup.sh plot).

    python bench/plot_soak.py soak.json soak.png
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(source: str, target: str) -> None:
    report = json.loads(Path(source).read_text())
    samples = report["samples"]
    minutes = [point["t"] / 60 for point in samples]
    figure, (rss, heap, rate) = plt.subplots(1, 3, figsize=(19, 5))
    for axes, kind, title in ((rss, "rss", "RSS (MiB, log scale)"), (heap, "heap", "sidecars' Go heap in use (MiB)")):
        for name in sorted(samples[-1][kind]):
            values = [point[kind].get(name, float("nan")) / 2**20 for point in samples]
            axes.plot(minutes, values, label=name, linewidth=1)
        axes.axvline(report["warmup_minutes"], color="grey", linestyle="--", linewidth=0.8)
        axes.set_xlabel("minutes (dashed: end of warm-up)")
        axes.set_title(title)
    windows = report["traffic_windows"]
    aimed = report["load"] * report["capacity_requests_per_s"]
    rate.plot([w["t"] / 60 for w in windows], [w["answered_per_s"] for w in windows], label="answered", linewidth=1)
    rate.axhline(aimed, color="grey", linestyle="--", linewidth=0.8, label=f"aimed at ({aimed:.1f})")
    latency = rate.twinx()
    latency.plot([w["t"] / 60 for w in windows], [w["latency_p50_ms"] for w in windows], color="tab:red", linewidth=0.8)
    latency.set_ylabel("p50 latency (ms)", color="tab:red")
    rate.set_ylim(bottom=0)
    rate.set_xlabel("minutes")
    rate.set_title("requests/s through the gateway, per 10 s")
    rate.legend(fontsize=7, loc="lower left")
    rss.set_yscale("log")
    rss.legend(fontsize=7, ncol=2)
    heap.legend(fontsize=7)
    traffic = report["traffic"]
    figure.suptitle(
        f"soak: {traffic['rate_sent_per_s']} requests/s sent through the gateway (aimed at {report['load']:.0%} of "
        f"{report['capacity_requests_per_s']}) with the pipeline's simulator; errors {traffic['errors']}, "
        f"dead letters {report['dead_letters']}"
    )
    figure.tight_layout()
    figure.savefig(target, dpi=120)


if __name__ == "__main__":
    main(*sys.argv[1:])
