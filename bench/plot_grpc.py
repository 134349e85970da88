"""Plots bench/results/serving-grpc.json: requests/s of each path per concurrency beside raw onnxruntime at batch 1
(run with matplotlib installed).

python bench/plot_grpc.py serving-grpc.json serving-grpc.png
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(source: str, target: str) -> None:
    report = json.loads(open(source).read())
    cases = report["cases"]
    models = list(dict.fromkeys(case["model"] for case in cases))
    figure, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4), squeeze=False)
    for axis, model in zip(axes[0], models, strict=True):
        own = [case for case in cases if case["model"] == model]
        raw = next(case for case in own if case["path"] == "onnxruntime")
        paths = list(dict.fromkeys(case["path"] for case in own if case["path"] != "onnxruntime"))
        levels = sorted({case["concurrency"] for case in own if case["concurrency"] is not None})
        width = 0.8 / len(levels)
        for index, level in enumerate(levels):
            at = {case["path"]: case["requests_per_s"] for case in own if case["concurrency"] == level}
            axis.bar([i + index * width for i in range(len(paths))], [at[p] for p in paths], width, label=f"c={level}")
        axis.axhline(raw["requests_per_s"], color="black", linestyle="--", label="onnxruntime, batch 1")
        axis.set_xticks([i + 0.4 - width / 2 for i in range(len(paths))], paths, rotation=15)
        axis.set_ylabel("requests/s")
        axis.set_title(model)
        axis.legend(fontsize="small")
    figure.suptitle(f"Tandem over gRPC and REST JSON against raw onnxruntime ({report['date']})")
    figure.tight_layout()
    figure.savefig(target, dpi=100)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
