"""serving.json as markdown: the summary with the ratios that matter, then one table per model."""

import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

Case = dict[str, Any]
PEERS = ("kserve", "mlserver", "bentoml")


def find(cases: list[Case], model: str, server: str, batching: bool, concurrency: int | None) -> Case | None:
    return next(
        (
            case
            for case in cases
            if (case["model"], case["server"], case["batching"], case["concurrency"])
            == (model, server, batching, concurrency)
        ),
        None,
    )


def best(cases: list[Case], model: str, server: str) -> Case | None:
    """The case of `server` with the most requests per second, whatever its concurrency and batching."""
    own = [case for case in cases if case["model"] == model and case["server"] == server]
    return max(own, key=lambda case: case["requests_per_s"], default=None)


def down(value: float, significant: int = 3) -> str:
    """`value` to `significant` digits, cut rather than rounded: a figure written down is never rounded up. (The
    nudge keeps a binary fraction such as 2.2999999999999998 from losing its last digit.)"""
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    scale = 10 ** (significant - 1 - math.floor(math.log10(abs(value))))
    return f"{math.trunc(value * scale * (1 + 1e-12)) / scale:g}"


def ratio(a: Case | None, b: Case | None, key: str = "requests_per_s") -> str:
    if a is None or b is None or not a.get(key) or not b.get(key):
        return "n/a"
    return f"{down(a[key] / b[key])}×"


def paired_ratio(a: Case, b: Case) -> float:
    """`a` over `b` in requests/s: the median of their ratios round by round where their rounds ran side by side
    (bench.serving runs a server's batching off and on back to back), else the ratio of their medians."""
    rounds_a, rounds_b = a.get("rounds") or [], b.get("rounds") or []
    if rounds_a and len(rounds_a) == len(rounds_b) and all(run["requests_per_s"] for run in rounds_b):
        return statistics.median(
            x["requests_per_s"] / y["requests_per_s"] for x, y in zip(rounds_a, rounds_b, strict=True)
        )
    return a["requests_per_s"] / b["requests_per_s"]


def paired(a: Case | None, b: Case | None) -> str:
    """`paired_ratio` as `ratio` writes it: n/a where a case or its requests/s is missing."""
    if a is None or b is None or not a.get("requests_per_s") or not b.get("requests_per_s"):
        return "n/a"
    return f"{down(paired_ratio(a, b))}×"


def number(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{math.trunc(value * 10**digits * (1 + 1e-12)) / 10**digits:.{digits}f}"


def latency(value: float | None) -> str:
    """Milliseconds to three significant digits: raw onnxruntime calls take microseconds, HTTP ones milliseconds."""
    return "n/a" if value is None else down(value)


def verdict(met: bool | None) -> str:
    return "n/a" if met is None else "met" if met else "NOT met"


def _at_least(a: Case | None, b: Case | None, goal: float) -> bool | None:
    if a is None or b is None or not b["requests_per_s"]:
        return None
    return a["requests_per_s"] / b["requests_per_s"] >= goal


def goals(report: dict[str, Any], model: str) -> list[str]:
    """Each goal's ratio beside the goal, per concurrency, with whether it is met."""
    cases, concurrencies = report["cases"], report["settings"]["concurrency"]
    lines = []
    kit = []
    for c in concurrencies:
        direct, plain = find(cases, model, "tandem-direct", False, c), find(cases, model, "plain-fastapi", False, c)
        p50_ok = None if direct is None or plain is None else direct["p50_ms"] <= plain["p50_ms"]
        met = _at_least(direct, plain, 1.0)
        kit.append(
            f"c={c} {ratio(direct, plain)} ({verdict(met)}), p50 {latency(_get(direct, 'p50_ms'))} vs "
            f"{latency(_get(plain, 'p50_ms'))} ms ({verdict(p50_ok)}), CPU {number(_get(direct, 'cpu_us_per_request'), 0)}"
            f" vs {number(_get(plain, 'cpu_us_per_request'), 0)} µs/request"
        )
    if any(find(cases, model, "plain-fastapi", False, c) for c in concurrencies):
        lines.append(
            "- Goal: Tandem direct at least 1.0× plain FastAPI in requests/s, p50 no higher: " + "; ".join(kit) + "."
        )
    batching = []
    for server in ("tandem-direct", "tandem-sidecar"):
        for c in concurrencies:
            on, off = find(cases, model, server, True, c), find(cases, model, server, False, c)
            if on is not None and off is not None:
                met = None if paired(on, off) == "n/a" else paired_ratio(on, off) >= 0.95
                batching.append(f"{server} c={c} {paired(on, off)} ({verdict(met)})")
    if batching:
        lines.append(
            "- Goal: batching on at least 0.95× batching off in requests/s (the median of the rounds' ratios): "
            + "; ".join(batching)
            + "."
        )
    top = max(concurrencies)
    gateway, sidecar = (
        find(cases, model, "tandem-gateway", False, top),
        find(cases, model, "tandem-sidecar", False, top),
    )
    if gateway is not None and sidecar is not None:
        lines.append(
            f"- Goal: the gateway path at least 0.6× the sidecar path in requests/s at concurrency {top}: "
            f"{ratio(gateway, sidecar)} ({verdict(_at_least(gateway, sidecar, 0.6))})."
        )
    return lines


def summary(report: dict[str, Any]) -> list[str]:
    cases = report["cases"]
    top = max(report["settings"]["concurrency"])
    low = min(report["settings"]["concurrency"])
    models = report["settings"]["models"]
    rounds = report["settings"].get("rounds", 1)
    lines = [
        f"Throughput ratios at concurrency {top} (batching off unless said); latency at concurrency {low}; "
        f"each figure the median of {rounds} interleaved round{'s' if rounds != 1 else ''}.",
        "",
    ]
    for model in models:
        direct = find(cases, model, "tandem-direct", False, top)
        sidecar = find(cases, model, "tandem-sidecar", False, top)
        plain = find(cases, model, "plain-fastapi", False, top)
        direct_low = find(cases, model, "tandem-direct", False, low)
        sidecar_low = find(cases, model, "tandem-sidecar", False, low)
        plain_low = find(cases, model, "plain-fastapi", False, low)
        raw_one = find(cases, model, "onnxruntime", False, None)
        raw_best = find(cases, model, "onnxruntime", True, None)
        served_best = best(cases, model, "tandem-direct")
        lines.append(f"**{model}**")
        lines += goals(report, model)
        lines.append(
            f"- Kit overhead, Tandem direct vs plain FastAPI: {ratio(direct, plain)} the requests/s; "
            f"p50 {latency(_get(direct_low, 'p50_ms'))} vs {latency(_get(plain_low, 'p50_ms'))} ms."
        )
        lines.append(
            f"- Dapr's cost, through the sidecar vs direct: {ratio(sidecar, direct)} the requests/s; "
            f"p50 {latency(_get(sidecar_low, 'p50_ms'))} vs {latency(_get(direct_low, 'p50_ms'))} ms; "
            f"RSS {number(_get(sidecar, 'rss_mib'), 0)} vs {number(_get(direct, 'rss_mib'), 0)} MiB."
        )
        gateway = find(cases, model, "tandem-gateway", False, top)
        gateway_low = find(cases, model, "tandem-gateway", False, low)
        lines.append(
            f"- Through the gateway and two sidecars vs direct: {ratio(gateway, direct)} the requests/s; "
            f"p50 {latency(_get(gateway_low, 'p50_ms'))} vs {latency(_get(direct_low, 'p50_ms'))} ms; "
            f"RSS {number(_get(gateway, 'rss_mib'), 0)} MiB for app, gateway and their sidecars."
        )
        batched = find(cases, model, "tandem-direct", True, top)
        lines.append(
            f"- Batching on vs off, Tandem direct: {paired(batched, direct)} the requests/s (the median of the rounds' "
            "ratios)."
        )
        for peer in PEERS:
            peer_case = find(cases, model, peer, False, top)
            if peer_case is None:
                continue
            peer_best = best(cases, model, peer)
            lines.append(
                f"- Tandem direct vs {peer}: {ratio(direct, peer_case)} the requests/s "
                f"(best of each: {ratio(served_best, peer_best)}); "
                f"RSS {number(_get(direct, 'rss_mib'), 0)} vs {number(_get(peer_case, 'rss_mib'), 0)} MiB; "
                f"ready in {number(_get(direct, 'ready_s'), 2)} vs {number(_get(peer_case, 'ready_s'), 2)} s."
            )
        lines.append(
            f"- Served vs raw onnxruntime: Tandem's best ({_describe(served_best)}) reaches "
            f"{ratio(served_best, raw_one)} of batch 1 in-process and {ratio(served_best, raw_best)} of the best batch "
            f"(batch {_get(raw_best, 'batch')})."
        )
        lines.append("")
    heavy = "nsfw" if "nsfw" in models else models[-1]
    lines.append(f"Batching on vs off at concurrency {top} for {heavy}:")
    for server in ("tandem-direct", "tandem-sidecar", *PEERS):
        on, off = find(cases, heavy, server, True, top), find(cases, heavy, server, False, top)
        if on is not None and off is not None:
            lines.append(
                f"- {server}: {paired(on, off)} round by round ({number(off['requests_per_s'])} → "
                f"{number(on['requests_per_s'])} req/s, medians)"
            )
    return lines


def _get(case: Case | None, key: str) -> Any:
    return None if case is None else case.get(key)


def _describe(case: Case | None) -> str:
    if case is None:
        return "n/a"
    return f"{number(case['requests_per_s'])} req/s at concurrency {case['concurrency']}, batching " + (
        "on" if case["batching"] else "off"
    )


def table(cases: list[Case], model: str) -> list[str]:
    lines = [
        "| server | batching | concurrency / batch | req/s | p50 ms | p99 ms | CPU µs/request | errors | RSS MiB | ready s |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for case in cases:
        if case["model"] != model:
            continue
        load = f"batch {case['batch']}" if case["concurrency"] is None else str(case["concurrency"])
        lines.append(
            f"| {case['server']} | {'on' if case['batching'] else 'off'} | {load} | "
            f"{number(case['requests_per_s'])} | {latency(case['p50_ms'])} | {latency(case['p99_ms'])} | "
            f"{number(case.get('cpu_us_per_request'), 0)} | {case['errors']} | {number(case['rss_mib'], 0)} | {number(case['ready_s'], 2)} |"
        )
    return lines


def markdown(report: dict[str, Any]) -> str:
    settings, host = report["settings"], report["machine"]
    lines = [
        "# Serving benchmark",
        "",
        f"{report['date']}; {host['nproc']} cores ({host['cpu']}), {host['memory_gib']} GiB memory, "
        f"Python {host['python']}. Command: `{report['command']}` ({report['wall_s']} s).",
        "",
        f"Servers on core {settings['cores']['servers']}, hey on core {settings['cores']['load_generator']}; "
        f"onnxruntime with one intra-op thread everywhere; warm-up {settings['warmup_s']} s, then "
        + ", ".join(f"{model} {seconds} s" for model, seconds in settings["seconds"].items())
        + f" per case. Batching: at most {settings['batching']['max_batch_size']} rows, "
        f"{settings['batching']['max_wait_ms']} ms wait. RSS: peak of the serving processes (app, sidecar, "
        "workers) during the case; ready: from start until the first 200 on the readiness route. "
        "Peers: " + "; ".join(settings["peers"].values()) + ".",
        "",
        "## Summary",
        "",
        *summary(report),
        "",
    ]
    if report["failures"]:
        lines += ["## Not measured", ""]
        lines += [f"- {f['model']} {f['server']} (batching {f['batching']}): {f['error']}" for f in report["failures"]]
        lines.append("")
    for model in settings["models"]:
        lines += [f"## {model}", "", *table(report["cases"], model), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    # Renders the markdown again from a results file: python -m bench.report bench/results/serving.json
    source = Path(sys.argv[1])
    source.with_suffix(".md").write_text(markdown(json.loads(source.read_text())))
