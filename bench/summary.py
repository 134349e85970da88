"""Every goal the benchmarks measure, its figure beside it and whether it is met, from bench/results/*.json.

    python -m bench.summary [--results bench/results]

Reads what the benchmarks last wrote (`make bench` runs them, then this): for each benchmark the newest of its
results files, in bench/results or a folder below it (a run with `--out`); a goal whose results are missing says
so. Writes bench/results/summary.md and prints it.
"""

import argparse
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.report import down, find, paired_ratio

RESULTS = Path(__file__).resolve().parent / "results"
# A goal: (issue, what is asked, figure, met) — met None when the figure says nothing either way.
Goal = tuple[str, str, str, bool | None]


def serving(report: dict[str, Any]) -> Iterator[Goal]:
    cases = report["cases"]
    for c in report["settings"]["concurrency"]:
        direct, plain = (
            find(cases, "diabetes", "tandem-direct", False, c),
            find(cases, "diabetes", "plain-fastapi", False, c),
        )
        if direct and plain:
            ratio = direct["requests_per_s"] / plain["requests_per_s"]
            yield (
                "speed",
                f"diabetes, Tandem direct at least 1.0x plain FastAPI in requests/s, p50 no higher (c={c})",
                f"{down(ratio)}x, p50 {direct['p50_ms']} vs {plain['p50_ms']} ms",
                ratio >= 1.0 and direct["p50_ms"] <= plain["p50_ms"],
            )
        for server in ("tandem-direct", "tandem-sidecar"):
            on, off = find(cases, "diabetes", server, True, c), find(cases, "diabetes", server, False, c)
            if on and off:
                ratio = paired_ratio(on, off)
                yield (
                    "speed",
                    f"diabetes, {server}, batching on at least 0.95x off, round by round (c={c})",
                    f"{down(ratio)}x",
                    ratio >= 0.95,
                )
    top = max(report["settings"]["concurrency"])
    gateway, sidecar = (
        find(cases, "diabetes", "tandem-gateway", False, top),
        find(cases, "diabetes", "tandem-sidecar", False, top),
    )
    if gateway and sidecar:
        ratio = gateway["requests_per_s"] / sidecar["requests_per_s"]
        yield (
            "speed",
            f"diabetes, the gateway path at least 0.6x the sidecar path (c={top})",
            f"{down(ratio)}x",
            ratio >= 0.6,
        )


def gateway(report: dict[str, Any]) -> Iterator[Goal]:
    by_path = {(row["path"], row["concurrency"]): row for row in report["results"]}
    through, without = by_path.get(("gateway", 1)), by_path.get(("two sidecars", 1))
    if through and without:
        added = through["p50_ms"] - without["p50_ms"]
        yield "speed", "the gateway's own added p50 at most 0.3 ms (c=1)", f"{down(added)} ms", added <= 0.3


def pipeline(report: dict[str, Any]) -> Iterator[Goal]:
    best = max((phase["saturation"]["end_to_end_readings_per_s"], mode) for mode, phase in report["results"].items())
    yield (
        "speed",
        "maintenance pipeline at least 2,000 readings/s end to end",
        f"{best[0]:g} ({best[1]})",
        best[0] >= 2000,
    )
    for mode, phase in report["results"].items():
        paced = phase.get("paced", {})
        if "reading_to_alert_p99_s" in paced:
            p99 = paced["reading_to_alert_p99_s"] * 1000
            yield (
                "speed",
                f"reading to alert p99 at most 250 ms when paced ({mode}, {paced.get('offered_readings_per_s', '?')}/s)",
                f"{down(p99)} ms",
                p99 <= 250,
            )


def pipelines(report: dict[str, Any]) -> Iterator[Goal]:
    results = report["results"]
    yield (
        "pipelines",
        "the in-request executor's own cost at most 0.5 ms p50 per step",
        f"{results['per_step_ms']} ms",
        (results["per_step_ms"] <= 0.5),
    )
    throughput = results["throughput"]
    layouts = throughput.items() if "ratio" not in throughput else [("shared core", throughput)]
    for layout, figures in layouts:
        yield (
            "pipelines",
            f"a chain at least 0.9x its slowest step alone in requests/s ({layout})",
            f"{figures['ratio']}x",
            figures["ratio"] >= 0.9,
        )
    yield "pipelines", "durable steps per second (measured)", f"{results['durable']['steps_per_s']}", None


def edge_daprd(report: dict[str, Any]) -> Iterator[Goal]:
    for name, figures in report["results"].items():
        if name.startswith("edge"):
            size, heap = figures["stripped_bytes"] / 1e6, figures["idle_heap_inuse_bytes"] / 1e6
            yield "edge", f"{name} daprd at most 90 MB stripped", f"{down(size)} MB", size <= 90
            yield "edge", f"{name} daprd at most 10 MB heap in use when idle", f"{down(heap)} MB", heap <= 10


def edge_stack(report: dict[str, Any]) -> Iterator[Goal]:
    for arch, figures in report["results"].items():
        rss = figures["rss_total_bytes"] / 2**30
        yield (
            "edge",
            f"{arch} edge stack RSS (goal at most 1 GiB on amd64)",
            f"{down(rss)} GiB",
            rss <= 1 if arch == "amd64" else None,
        )
        healthy = figures["healthy_seconds"]
        yield (
            "edge",
            f"{arch} every process healthy (goal at most 15 s under qemu)",
            f"{down(healthy)} s",
            healthy <= 15 if arch == "arm64" else None,
        )


def soak(report: dict[str, Any]) -> Iterator[Goal]:
    worst = max(report["rss"].items(), key=lambda item: item[1]["growth_percent"])
    yield (
        "trust",
        "soak: RSS growth of every process under 5 % after warm-up",
        f"largest {worst[0]} {worst[1]['growth_percent']} %",
        (worst[1]["growth_percent"] < 5),
    )
    yield (
        "trust",
        "soak: 0 errors",
        f"{report['traffic']['errors']} of {report['traffic']['sent']}",
        report["traffic"]["errors"] == 0,
    )


def fuzz(report: dict[str, Any]) -> Iterator[Goal]:
    for app, figures in sorted(report["results"].items()):
        server_errors = figures["failures"].get("ST101 Server error", 0)
        other = sum(count for name, count in figures["failures"].items() if not name.startswith("ST101"))
        yield (
            "trust",
            f"fuzzing {app}: at least 1,000 cases, 0 5xx, answers as the schema says",
            f"{figures['cases']} cases, {server_errors} 5xx, {other} other failures",
            figures["cases"] >= 1000 and server_errors == 0 and other == 0,
        )


# The serving benchmark's models (bench/workloads.py): each is to have gRPC and REST-binary rows.
BENCHMARK_MODELS = ("diabetes", "minilm", "nsfw")


def serving_grpc(report: dict[str, Any]) -> Iterator[Goal]:
    paths = {model: {case["path"] for case in report["cases"] if case["model"] == model} for model in BENCHMARK_MODELS}
    missing = [
        f"{model} {path}" for model in BENCHMARK_MODELS for path in ("grpc-direct", "rest-binary-direct")
        if path not in paths[model]
    ]  # fmt: skip
    yield (
        "speed",
        "gRPC and REST-binary rows for every benchmark model (" + ", ".join(BENCHMARK_MODELS) + ")",
        "missing: " + ", ".join(missing) if missing else "all there",
        not missing,
    )
    for model in dict.fromkeys(case["model"] for case in report["cases"]):
        own = [case for case in report["cases"] if case["model"] == model]
        raw = next((case for case in own if case["path"] == "onnxruntime"), None)
        served = [case for case in own if case["path"].startswith("grpc-")]
        if raw is None or not served:
            continue
        # Served directly over gRPC, at every concurrency measured: the path the goal names, its worst case counting.
        for case in (case for case in served if case["path"] == "grpc-direct"):
            ratio = case["requests_per_s"] / raw["requests_per_s"]
            yield (
                "speed",
                f"{model} over gRPC {'at least 0.85x' if model == 'nsfw' else 'against'} raw onnxruntime at batch 1 in "
                f"requests/s ({case['path']}, c={case['concurrency']})",
                f"{down(ratio)}x",
                ratio >= 0.85 if model == "nsfw" else None,
            )
        direct = min((case for case in own if case["path"] == "grpc-direct"), key=lambda case: case["concurrency"])
        efficiency = raw["cpu_us_per_request"] / direct["cpu_us_per_request"]
        yield (
            "speed",
            f"{model} over gRPC directly: raw onnxruntime's CPU per request over Tandem's (c={direct['concurrency']})",
            f"{down(efficiency)}x",
            None,
        )


SOURCES: dict[str, Callable[[dict[str, Any]], Iterator[Goal]]] = {
    "serving": serving,
    "serving-grpc": serving_grpc,
    "gateway": gateway,
    "pipeline": pipeline,
    "pipelines": pipelines,
    "edge_daprd": edge_daprd,
    "edge_stack": edge_stack,
    "soak": soak,
    "fuzz": fuzz,
}


def markdown(results: Path) -> str:
    lines = ["# Goals and figures", "", "| area | goal | figure | met | from |", "|---|---|---|---|---|"]
    for name, goals in SOURCES.items():
        found = [(json.loads(path.read_text()), path) for path in results.glob(f"**/{name}.json")]
        if not found:
            lines.append(f"| | {name} | not measured: no {name}.json | | |")
            continue
        report, source = max(found, key=lambda item: (item[0].get("date", ""), item[1].stat().st_mtime))
        where = source.relative_to(results)
        for area, goal, figure, met in goals(report):
            verdict = "measured" if met is None else "met" if met else "**not met**"
            lines.append(f"| {area} | {goal} | {figure} | {verdict} | {where}, {report.get('date', '?')} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    text = markdown(args.results)
    (args.results / "summary.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
