"""Plots bench/results/pipeline.json: readings/s at saturation and latencies when paced, per publish mode (run with
matplotlib installed: bench/setup.sh plot).

    python bench/plot_pipeline.py pipeline.json pipeline.png
"""

import json
import sys
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(source: str, target: str) -> None:
    report = json.loads(Path(source).read_text())
    modes = list(report["results"])
    figure, (rates, latency) = plt.subplots(1, 2, figsize=(10, 4))
    x = np.arange(len(modes))
    for offset, key, name in (
        (-0.2, "ingest_readings_per_s", "ingest"),
        (0.2, "end_to_end_readings_per_s", "end to end"),
    ):
        rates.bar(x + offset, [report["results"][mode]["saturation"][key] for mode in modes], 0.4, label=name)
    rates.set_xticks(x, modes)
    rates.set_ylabel("readings/s")
    rates.legend()
    for offset, key in ((-0.2, "reading_to_prediction"), (0.2, "reading_to_alert")):
        paced = [report["results"][mode]["paced"] for mode in modes]
        latency.bar(x + offset, [phase[f"{key}_p50_s"] or 0 for phase in paced], 0.4, label=f"{key} p50")
        latency.scatter(
            x + offset, [phase[f"{key}_p99_s"] or 0 for phase in paced], marker="_", s=400, label=f"{key} p99"
        )
    latency.set_xticks(x, modes)
    latency.set_ylabel("seconds")
    latency.legend(fontsize=7)
    figure.suptitle(f"Maintenance pipeline ({report['date']}, {report['machine']})")
    figure.tight_layout()
    figure.savefig(target, dpi=100)


if __name__ == "__main__":
    main(*sys.argv[1:])
