"""The trimmed edge daprd against the full one: stripped size, and heap in use at idle.

    python bench/edge_daprd.py [--samples 5]

Both binaries are the same patched release (dapr/runtime/build.sh); the edge one registers only the components of
dapr/runtime/edge-components.txt. Each daprd starts with the same SQLite state store (the edge sidecars' state) and
no app; once healthy it idles 10 s, then `go_memstats_heap_inuse_bytes` is read from its metrics port once a second
(RSS swings too much to compare, dapr#9808), and the median is kept. The arm64 binary (static) runs under
qemu-aarch64-static (Debian's qemu-user-static). Writes bench/results/edge_daprd.{json,md}, and with the plot
venv of bench/setup.sh, edge_daprd.png.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from datetime import date
from pathlib import Path

import httpx

from tandem.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
VENVS = ROOT / ".bench" / "venvs"
BINARIES = {
    "full (stablecomponents)": ROOT / ".runtime" / ".dapr" / "bin" / "daprd",
    "edge amd64": ROOT / ".runtime" / "edge" / "amd64" / "bin" / "daprd",
    "edge arm64": ROOT / ".runtime" / "edge" / "arm64" / "bin" / "daprd",
}
STATE_STORE = """apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: statestore
spec:
  type: state.sqlite
  version: v1
  metadata:
    - name: connectionString
      value: {path}
"""


def idle_heap(daprd: Path, config: Path, work: Path, samples: int, emulator: list[str]) -> list[float]:
    """Heap in use (bytes) of an idle daprd, `samples` readings one second apart after 10 s of idling."""
    resources = work / "resources"
    resources.mkdir()
    (resources / "statestore.yaml").write_text(STATE_STORE.format(path=work / "state.sqlite"))
    http, metrics = free_port(), free_port()
    command = [
        *emulator, str(daprd), "--app-id", f"bench-{os.getpid()}", "--dapr-http-port", str(http),
        "--dapr-grpc-port", str(free_port()), "--dapr-internal-grpc-port", str(free_port()),
        "--metrics-port", str(metrics), "--resources-path", str(resources), "--config", str(config),
    ]  # fmt: skip
    env = {**os.environ, "DAPR_HOST_IP": "127.0.0.1"}
    with (work / "daprd.log").open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{http}/v1.0/healthz").status_code == 204:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit(f"{daprd} did not get healthy:\n{(work / 'daprd.log').read_text()[-3000:]}")
            time.sleep(0.1)
        time.sleep(10)
        found = []
        for _ in range(samples):
            text = httpx.get(f"http://127.0.0.1:{metrics}/metrics").text
            line = next(line for line in text.splitlines() if line.startswith("go_memstats_heap_inuse_bytes "))
            found.append(float(line.split()[1]))
            time.sleep(1)
        return found
    finally:
        process.terminate()
        process.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=5)
    args = parser.parse_args()
    configs = {
        # The full daprd lacks the SQLite name resolver (allcomponents only): it idles with mDNS, as in `make run`.
        "full (stablecomponents)": ROOT / "dapr" / "config.yaml",
        "edge amd64": None,
        "edge arm64": None,
    }
    results: dict[str, dict] = {}
    for name, binary in BINARIES.items():
        if not binary.exists():
            raise SystemExit(f"{binary} is missing: make runtime and make edge-runtime EDGE_ARCH=amd64|arm64")
        results[name] = {"stripped_bytes": binary.stat().st_size}
    for name, config in configs.items():
        with tempfile.TemporaryDirectory() as folder:
            work = Path(folder)
            if config is None:  # the edge sidecars' configuration: SQLite name resolution
                config = work / "config.yaml"
                text = (ROOT / "dapr" / "edge" / "config.yaml").read_text()
                config.write_text(text.replace("NAMES", str(work / "names.sqlite")))
            emulator = ["qemu-aarch64-static"] if "arm64" in name else []
            heap = idle_heap(BINARIES[name], config, work, args.samples, emulator)
        results[name]["idle_heap_inuse_bytes"] = statistics.median(heap)
        results[name]["idle_heap_samples"] = heap
        print(
            f"{name}: {results[name]['stripped_bytes'] / 1e6:.1f} MB, idle heap {statistics.median(heap) / 1e6:.2f} MB"
        )
    report = {
        "date": date.today().isoformat(),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}",
        "results": results,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "edge_daprd.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "edge_daprd.md").write_text(markdown(report))
    plot()


def markdown(report: dict) -> str:
    full = report["results"]["full (stablecomponents)"]
    lines = [
        f"# The edge daprd ({report['date']}, {report['machine']})",
        "",
        "`python bench/edge_daprd.py`: daprd 1.18.2 with the patches of dapr/runtime/patches, stripped (`-s -w`); "
        "heap in use is the median of `go_memstats_heap_inuse_bytes` read once a second after 10 s of idling with a "
        "SQLite state store. Goals: at most 90 MB stripped, at most 10 MB heap in use.",
        "",
        "| daprd | stripped size (MB) | vs full | idle heap in use (MB) | vs full |",
        "|---|---|---|---|---|",
    ]
    for name, result in report["results"].items():
        heap = result["idle_heap_inuse_bytes"]
        lines.append(
            f"| {name} | {result['stripped_bytes'] / 1e6:.1f} | {result['stripped_bytes'] / full['stripped_bytes']:.2f}× "
            f"| {heap / 1e6:.2f} | {heap / full['idle_heap_inuse_bytes']:.2f}× |"
        )
    return "\n".join(lines) + "\n"


def plot() -> None:
    python = VENVS / "plot" / "bin" / "python"
    if not python.exists():
        print(f"no plot: {python} is missing (bench/setup.sh plot makes it)")
        return
    script = Path(__file__).with_name("plot_edge.py")
    subprocess.run(
        [str(python), str(script), str(RESULTS / "edge_daprd.json"), str(RESULTS / "edge_daprd.png")], check=True
    )


if __name__ == "__main__":
    main()
