"""`make bench`'s serving harness on a tiny setting: one model, the cases that need no peer venvs, a fraction of
a second per case. It checks that the result file is complete (every case, every field), not the numbers."""

import json
import subprocess
import sys
from pathlib import Path

from .stack import ROOT

CONCURRENCY = [1, 4]
# Tandem's three paths, batching off and on, and the plain FastAPI floor (no batching of its own).
SERVED = [("plain-fastapi", False)] + [
    (path, batching) for batching in (False, True) for path in ("tandem-direct", "tandem-sidecar", "tandem-gateway")
]


def test_harness_writes_every_case_with_every_field(tmp_path: Path):
    subprocess.run([str(ROOT / "bench" / "setup.sh"), "hey"], check=True, timeout=600)  # the load generator
    command = [sys.executable, "-m", "bench.serving", "--models", "diabetes", "--servers", "plain-fastapi", "tandem"]
    command += ["--concurrency", *map(str, CONCURRENCY), "--seconds", "0.5", "--warmup", "0.2"]
    command += ["--out", str(tmp_path), "--no-plot"]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    report = json.loads((tmp_path / "serving.json").read_text())
    assert report["failures"] == []
    cases = {(case["server"], case["batching"], case["concurrency"]): case for case in report["cases"]}
    expected = {("onnxruntime", False, None), ("onnxruntime", True, None)}
    expected |= {(server, batching, level) for server, batching in SERVED for level in CONCURRENCY}
    assert set(cases) == expected
    assert len(report["cases"]) == len(expected)
    for key, case in cases.items():
        assert list(case) == report["fields"], key
        measured = {name: value for name, value in case.items() if name not in ("concurrency", "batch")}
        assert None not in measured.values(), (key, case)
        assert case["model"] == "diabetes"
        assert case["requests"] > 0 and case["errors"] == 0, (key, case)
        assert case["rss_mib"] > 0 and case["ready_s"] > 0, (key, case)
    for field in ("date", "machine", "command", "settings", "wall_s", "raw_batches"):
        assert report[field], field
    assert {"nproc", "cpu", "memory_gib"} <= report["machine"].keys()

    table = (tmp_path / "serving.md").read_text()
    assert "## Summary" in table and "Kit overhead" in table and "Dapr's cost" in table
    for server, _ in SERVED:
        assert f"| {server} |" in table


def test_the_grpc_harness_writes_every_path(tmp_path: Path):
    """bench.serving_grpc on a tiny setting, for a tensor model and a text one (BYTES): raw onnxruntime, REST JSON,
    REST with binary tensors and the three gRPC paths, each answered (its answer checked against onnxruntime's
    first) without errors."""
    subprocess.run([str(ROOT / "bench" / "setup.sh"), "hey"], check=True, timeout=600)
    command = [sys.executable, "-m", "bench.serving_grpc", "--models", "diabetes", "minilm", "--rounds", "1"]
    command += ["--concurrency", "1", "--seconds", "0.5", "--warmup", "0.2", "--out", str(tmp_path), "--no-plot"]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads((tmp_path / "serving-grpc.json").read_text())
    paths = {(case["model"], case["path"]): case for case in report["cases"]}
    every_path = {
        "onnxruntime",
        "rest-json-direct",
        "rest-binary-direct",
        "grpc-direct",
        "grpc-sidecar",
        "grpc-gateway",
    }
    assert set(paths) == {(model, path) for model in ("diabetes", "minilm") for path in every_path}
    for path, case in paths.items():
        assert case["requests"] > 0 and case["errors"] == 0, (path, case)
    table = (tmp_path / "serving-grpc.md").read_text()
    assert "grpc-gateway at its best" in table
