"""serving.json as a picture: per model, requests/s of each server at each concurrency, batching off and on,
with raw onnxruntime (batch 1) as the line served throughput is measured against.

    python bench/plot.py bench/results/serving.json bench/results/serving.png   (needs matplotlib)
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend is chosen first)


def main(source: Path, target: Path) -> None:
    report = json.loads(source.read_text())
    cases = report["cases"]
    models = report["settings"]["models"]
    levels = report["settings"]["concurrency"]
    figure, axes = plt.subplots(len(models), 1, figsize=(15, 3.6 * len(models)), squeeze=False)
    for axis, model in zip(axes[:, 0], models, strict=True):
        served = [case for case in cases if case["model"] == model and case["concurrency"] is not None]
        groups = list(dict.fromkeys((case["server"], case["batching"]) for case in served))
        width = 0.8 / len(levels)
        for index, level in enumerate(levels):
            heights = [
                next(
                    (
                        case["requests_per_s"]
                        for case in served
                        if (case["server"], case["batching"], case["concurrency"]) == (*group, level)
                    ),
                    0,
                )
                for group in groups
            ]
            axis.bar(
                [g + (index - (len(levels) - 1) / 2) * width for g in range(len(groups))],
                heights,
                width,
                label=f"concurrency {level}",
            )
        raw = next((c for c in cases if c["model"] == model and c["server"] == "onnxruntime" and c["batch"] == 1), None)
        if raw is not None:
            axis.axhline(raw["requests_per_s"], color="grey", linestyle="--", label="onnxruntime in-process, batch 1")
            axis.set_yscale("log")
        axis.set_xticks(range(len(groups)))
        axis.set_xticklabels(
            [f"{server}\nbatching {'on' if batching else 'off'}" for server, batching in groups], fontsize=8
        )
        axis.set_ylabel("requests/s (log)")
        axis.set_title(f"{model}")
        axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    host = report["machine"]
    figure.suptitle(f"Serving throughput, {report['date']}, {host['nproc']} cores ({host['cpu']}); server on one core")
    figure.tight_layout()
    figure.savefig(target, dpi=110)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
